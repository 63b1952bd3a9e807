"""The Rekognition emulator over real HTTP on loopback, called by a real boto3 client (run with -s to see scores).

Every image is made once per module and every CompareFaces answer the tests share is asked once (each costs
~0.4 s of dlib detection and descriptors). In ``obama_and_biden_side_by_side.jpg`` Obama is the left face (index 0
of ``detect_faces``) and Biden the right one: measured, the left face is 0.33 from obama.jpg's descriptor and 0.85
from biden.jpg's (see ``test_swap.py``).
"""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import numpy as np
import pytest
from botocore.exceptions import ClientError
from PIL import Image, ImageEnhance, ImageOps

from faceswap_engine import Face, decode_image, detect_faces
from faceswap_local.emulators.rekognition import MAX_IMAGE_BYTES, RekognitionEmulator

FACES_DIR = Path(os.environ.get("FACES_DIR") or Path(__file__).resolve().parents[3].parent / "shared" / "faces")
PAIR = "obama_and_biden_side_by_side.jpg"
OBAMA_IN_PAIR, BIDEN_IN_PAIR = 0, 1
OBAMA_VARIANTS = ("obama flipped", "obama 0.5x", "obama warm desaturated", "obama cropped")

Compare = Callable[..., dict[str, Any]]


def _jpeg(image: Image.Image, **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90, **options)
    return out.getvalue()


def _encoded(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def _warm_desaturated(image: Image.Image) -> Image.Image:
    pixels = np.asarray(ImageEnhance.Color(image).enhance(0.5)).astype(np.float32)
    pixels[..., 0] *= 1.15
    pixels[..., 2] *= 0.85
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def images() -> dict[str, bytes]:
    """Every image the tests send, encoded once: the shared photos, the reference's variants and broken images."""
    if not FACES_DIR.is_dir():
        pytest.fail(f"demo photos not found in {FACES_DIR} (set FACES_DIR)")
    out = {name: (FACES_DIR / name).read_bytes() for name in ("obama.jpg", "biden.jpg", PAIR)}
    obama = Image.open(io.BytesIO(out["obama.jpg"])).convert("RGB")
    left, top, right, bottom = detect_faces(decode_image(out["obama.jpg"]))[0].box
    grow_x, grow_y = (right - left) // 4, (bottom - top) // 4
    half = obama.resize((obama.width // 2, obama.height // 2), Image.Resampling.LANCZOS)
    out["obama flipped"] = _jpeg(ImageOps.mirror(obama))
    out["obama 0.5x"] = _jpeg(half)
    out["obama warm desaturated"] = _jpeg(_warm_desaturated(obama))
    out["obama cropped"] = _jpeg(obama.crop((left - grow_x, top - grow_y, right + grow_x, bottom + grow_y)))
    # Stored turned a quarter turn anticlockwise; EXIF Orientation 6 says "turn it clockwise to view".
    sideways = half.rotate(90, expand=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    out["obama 0.5x sideways, EXIF 6"] = _jpeg(sideways, exif=exif)
    out["obama 0.5x sideways, PNG"] = _encoded(sideways, "PNG")
    ramp = np.tile(np.linspace(0, 255, 300, dtype=np.uint8), (200, 1))
    out["gradient"] = _encoded(Image.fromarray(np.dstack([ramp, ramp[:, ::-1], ramp])), "PNG")
    noise = np.random.default_rng(0).integers(0, 256, (1300, 1400, 3), dtype=np.uint8)
    out["noise over 5 MB"] = _encoded(Image.fromarray(noise), "PNG")
    small = Image.new("RGB", (100, 100), (120, 90, 60))
    out["gif"], out["webp"] = _encoded(small, "GIF"), _encoded(small, "WEBP")
    out["60x60"] = _jpeg(Image.new("RGB", (60, 60), (120, 90, 60)))
    out["200x79"] = _jpeg(Image.new("RGB", (200, 79), (120, 90, 60)))
    return out


@pytest.fixture(scope="module")
def pair_faces(images: dict[str, bytes]) -> list[Face]:
    """The engine's faces of the pair, left to right."""
    faces = detect_faces(decode_image(images[PAIR]))
    assert len(faces) == 2
    return faces


@pytest.fixture(scope="module")
def emulator() -> Iterator[RekognitionEmulator]:
    server = RekognitionEmulator()
    server.start()
    yield server
    server.stop()


def _client(endpoint_url: str | None) -> Any:
    return boto3.client(
        "rekognition",
        region_name="us-east-1",
        endpoint_url=endpoint_url,
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )


@pytest.fixture(scope="module")
def client(emulator: RekognitionEmulator) -> Any:
    return _client(emulator.url)


@pytest.fixture(scope="module")
def compare(client: Any, images: dict[str, bytes]) -> Compare:
    """``compare(source, target, **params)``: CompareFaces on two of :func:`images`, each answer asked once."""
    answers: dict[tuple[Any, ...], dict[str, Any]] = {}

    def ask(source: str, target: str, **params: Any) -> dict[str, Any]:
        key = (source, target, *sorted(params.items()))
        if key not in answers:
            answers[key] = client.compare_faces(
                SourceImage={"Bytes": images[source]}, TargetImage={"Bytes": images[target]}, **params
            )
        return answers[key]

    return ask


def _face_under(box: dict[str, float], image: bytes | tuple[int, int], faces: list[Face]) -> int | None:
    """Index of the face in ``faces`` whose pixel box holds the centre of the ratio ``box`` (``None``: no face)."""
    width, height = Image.open(io.BytesIO(image)).size if isinstance(image, bytes) else image
    x = (box["Left"] + box["Width"] / 2) * width
    y = (box["Top"] + box["Height"] / 2) * height
    inside = [i for i, face in enumerate(faces) if face.box[0] <= x <= face.box[2] and face.box[1] <= y <= face.box[3]]
    return inside[0] if len(inside) == 1 else None


def _error_code(call: Callable[[], Any]) -> str:
    with pytest.raises(ClientError) as caught:
        call()
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    return str(caught.value.response["Error"]["Code"])


def _scores(answer: dict[str, Any], images: dict[str, bytes], faces: list[Face]) -> dict[int | None, float]:
    return {_face_under(m["Face"]["BoundingBox"], images[PAIR], faces): m["Similarity"] for m in answer["FaceMatches"]}


# ------------------------------------------------------------------------------------------------ matching


def test_reference_scores_its_person_high_and_the_other_low(
    compare: Compare, images: dict[str, bytes], pair_faces: list[Face]
) -> None:
    answer = compare("obama.jpg", PAIR, SimilarityThreshold=0)
    matches = answer["FaceMatches"]
    assert [_face_under(m["Face"]["BoundingBox"], images[PAIR], pair_faces) for m in matches] == [
        OBAMA_IN_PAIR,
        BIDEN_IN_PAIR,
    ]
    print(f"obama.jpg: Obama {matches[0]['Similarity']:.2f}, Biden {matches[1]['Similarity']:.2f}")
    assert matches[0]["Similarity"] >= 90
    assert matches[1]["Similarity"] <= 20
    assert answer["UnmatchedFaces"] == []


def test_default_threshold_leaves_the_other_person_unmatched(
    compare: Compare, images: dict[str, bytes], pair_faces: list[Face]
) -> None:
    answer = compare("obama.jpg", PAIR, QualityFilter="HIGH")  # accepted, and filters nothing
    assert [_face_under(m["Face"]["BoundingBox"], images[PAIR], pair_faces) for m in answer["FaceMatches"]] == [
        OBAMA_IN_PAIR
    ]
    (unmatched,) = answer["UnmatchedFaces"]
    assert "Similarity" not in unmatched
    assert _face_under(unmatched["BoundingBox"], images[PAIR], pair_faces) == BIDEN_IN_PAIR


@pytest.mark.parametrize("reference", OBAMA_VARIANTS)
def test_altered_reference_still_picks_its_person(
    compare: Compare, images: dict[str, bytes], pair_faces: list[Face], reference: str
) -> None:
    scores = _scores(compare(reference, PAIR, SimilarityThreshold=0), images, pair_faces)
    print(f"{reference}: Obama {scores[OBAMA_IN_PAIR]:.2f}, Biden {scores[BIDEN_IN_PAIR]:.2f}")
    assert list(scores) == [OBAMA_IN_PAIR, BIDEN_IN_PAIR]
    assert scores[OBAMA_IN_PAIR] >= 90
    assert scores[BIDEN_IN_PAIR] <= 20


def test_other_reference_picks_the_other_face(
    compare: Compare, images: dict[str, bytes], pair_faces: list[Face]
) -> None:
    scores = _scores(compare("biden.jpg", PAIR, SimilarityThreshold=0), images, pair_faces)
    print(f"biden.jpg: Biden {scores[BIDEN_IN_PAIR]:.2f}, Obama {scores[OBAMA_IN_PAIR]:.2f}")
    assert list(scores) == [BIDEN_IN_PAIR, OBAMA_IN_PAIR]
    assert scores[BIDEN_IN_PAIR] >= 90
    assert scores[OBAMA_IN_PAIR] <= 20


def test_boxes_and_landmarks_lie_on_the_faces(
    compare: Compare, images: dict[str, bytes], pair_faces: list[Face]
) -> None:
    answer = compare("obama.jpg", PAIR, SimilarityThreshold=0)
    source_faces = detect_faces(decode_image(images["obama.jpg"]))
    assert _face_under(answer["SourceImageFace"]["BoundingBox"], images["obama.jpg"], source_faces) == 0
    assert answer["SourceImageFace"]["Confidence"] > 90
    width, height = Image.open(io.BytesIO(images[PAIR])).size
    for match in answer["FaceMatches"]:
        face = match["Face"]
        index = _face_under(face["BoundingBox"], images[PAIR], pair_faces)
        assert index is not None
        box = pair_faces[index].box
        points = {mark["Type"]: (mark["X"] * width, mark["Y"] * height) for mark in face["Landmarks"]}
        assert {"eyeLeft", "eyeRight", "nose", "mouthLeft", "mouthRight"} <= set(points)
        for x, y in (points[kind] for kind in ("eyeLeft", "eyeRight", "nose", "mouthLeft", "mouthRight")):
            assert box[0] <= x <= box[2] and box[1] <= y <= box[3]
        assert points["eyeLeft"][0] < points["nose"][0] < points["eyeRight"][0]
        assert points["eyeLeft"][1] < points["nose"][1] < points["mouthLeft"][1]
        assert set(face["Pose"]) == {"Roll", "Yaw", "Pitch"} and abs(face["Pose"]["Roll"]) < 45
        assert all(0 <= value <= 100 for value in face["Quality"].values())


def test_jpeg_exif_orientation_is_applied_before_detection(
    compare: Compare, images: dict[str, bytes], pair_faces: list[Face]
) -> None:
    answer = compare("obama 0.5x sideways, EXIF 6", PAIR, SimilarityThreshold=0)
    assert _scores(answer, images, pair_faces)[OBAMA_IN_PAIR] >= 90
    upright = Image.open(io.BytesIO(images["obama 0.5x"])).size
    upright_faces = detect_faces(decode_image(images["obama 0.5x"]))
    assert _face_under(answer["SourceImageFace"]["BoundingBox"], upright, upright_faces) == 0


def test_png_is_not_rotated(client: Any, images: dict[str, bytes]) -> None:
    code = _error_code(
        lambda: client.compare_faces(
            SourceImage={"Bytes": images["obama 0.5x sideways, PNG"]}, TargetImage={"Bytes": images[PAIR]}
        )
    )
    assert code == "InvalidParameterException"  # lying on its side, the face is not found


def test_concurrent_requests_get_the_same_answers(
    client: Any, compare: Compare, images: dict[str, bytes], pair_faces: list[Face]
) -> None:
    references = ("obama cropped", "biden.jpg")
    answers: dict[str, dict[str, Any]] = {}

    def ask(reference: str) -> None:
        answers[reference] = client.compare_faces(
            SourceImage={"Bytes": images[reference]}, TargetImage={"Bytes": images[PAIR]}, SimilarityThreshold=0
        )

    threads = [threading.Thread(target=ask, args=(reference,)) for reference in references]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for reference in references:
        alone = compare(reference, PAIR, SimilarityThreshold=0)
        assert _scores(answers[reference], images, pair_faces) == _scores(alone, images, pair_faces)


# ------------------------------------------------------------------------------------------- refusals


def test_reference_without_face_is_invalid_parameter(client: Any, images: dict[str, bytes]) -> None:
    code = _error_code(
        lambda: client.compare_faces(SourceImage={"Bytes": images["gradient"]}, TargetImage={"Bytes": images[PAIR]})
    )
    assert code == "InvalidParameterException"


def test_target_without_face_answers_empty_lists_or_the_documented_error(images: dict[str, bytes]) -> None:
    server = RekognitionEmulator()
    server.start()
    try:
        client = _client(server.url)
        params = {"SourceImage": {"Bytes": images["obama 0.5x"]}, "TargetImage": {"Bytes": images["gradient"]}}
        assert _error_code(lambda: client.compare_faces(**params)) == "InvalidParameterException"
        server.faceless_target_error = False
        answer = client.compare_faces(**params)
        assert answer["FaceMatches"] == [] and answer["UnmatchedFaces"] == []
        assert "BoundingBox" in answer["SourceImageFace"]
    finally:
        server.stop()
    assert [(r.operation, r.status, r.error) for r in server.requests] == [
        ("CompareFaces", 400, "InvalidParameterException"),
        ("CompareFaces", 200, None),
    ]


@pytest.mark.parametrize("fmt", ["gif", "webp"])
def test_image_neither_jpeg_nor_png_is_invalid_format(client: Any, images: dict[str, bytes], fmt: str) -> None:
    code = _error_code(
        lambda: client.compare_faces(SourceImage={"Bytes": images[fmt]}, TargetImage={"Bytes": images[PAIR]})
    )
    assert code == "InvalidImageFormatException"


def test_image_over_5_mb_is_too_large(client: Any, images: dict[str, bytes]) -> None:
    assert len(images["noise over 5 MB"]) > MAX_IMAGE_BYTES
    code = _error_code(
        lambda: client.compare_faces(
            SourceImage={"Bytes": images["obama.jpg"]}, TargetImage={"Bytes": images["noise over 5 MB"]}
        )
    )
    assert code == "ImageTooLargeException"


@pytest.mark.parametrize("name", ["60x60", "200x79"])
def test_image_under_80_pixels_a_side_is_invalid_parameter(
    emulator: RekognitionEmulator, images: dict[str, bytes], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_REKOGNITION", emulator.url)
    client = _client(None)  # found through the environment, as the local stack's functions find it
    code = _error_code(
        lambda: client.compare_faces(SourceImage={"Bytes": images[name]}, TargetImage={"Bytes": images[PAIR]})
    )
    assert code == "InvalidParameterException"


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"SimilarityThreshold": 100.5}, id="threshold-over-100"),
        pytest.param({"QualityFilter": "BEST"}, id="unknown-quality-filter"),
        pytest.param({"TargetImage": {"S3Object": {"Bucket": "references", "Name": "k.jpg"}}}, id="s3-object"),
    ],
)
def test_bad_parameter_is_invalid_parameter(client: Any, images: dict[str, bytes], params: dict[str, Any]) -> None:
    request = {"SourceImage": {"Bytes": images["obama.jpg"]}, "TargetImage": {"Bytes": images[PAIR]}, **params}
    with pytest.raises(ClientError) as caught:
        client.compare_faces(**request)
    assert caught.value.response["Error"]["Code"] == "InvalidParameterException"
    if "S3Object" in request["TargetImage"]:
        assert "Bytes only" in caught.value.response["Error"]["Message"]


def test_other_operation_is_unknown(client: Any, images: dict[str, bytes]) -> None:
    code = _error_code(lambda: client.detect_faces(Image={"Bytes": images["obama.jpg"]}))
    assert code == "UnknownOperationException"


def test_unsigned_request_is_refused(emulator: RekognitionEmulator) -> None:
    response = httpx.post(
        emulator.url,
        headers={"X-Amz-Target": "RekognitionService.CompareFaces", "Content-Type": "application/x-amz-json-1.1"},
        content=b"{}",
        timeout=httpx.Timeout(10.0),
    )
    assert response.status_code == 400
    assert response.json()["__type"] == "MissingAuthenticationTokenException"


def test_requests_are_recorded_without_the_images(images: dict[str, bytes]) -> None:
    server = RekognitionEmulator()
    server.start()
    try:
        before = time.time()
        _error_code(
            lambda: _client(server.url).compare_faces(
                SourceImage={"Bytes": images["gradient"]}, TargetImage={"Bytes": images["obama 0.5x"]}
            )
        )
        after = time.time()
    finally:
        server.stop()
    (received,) = server.requests
    assert received.operation == "CompareFaces"
    assert (received.status, received.error) == (400, "InvalidParameterException")
    assert before <= received.at <= after
    assert received.image_bytes == {
        "SourceImage": len(images["gradient"]),
        "TargetImage": len(images["obama 0.5x"]),
    }
    assert received.image_sizes == {"SourceImage": (300, 200), "TargetImage": (455, 568)}
    assert not any(isinstance(value, bytes) for value in vars(received).values())
