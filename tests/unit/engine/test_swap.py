"""Tests of the self-hosted face-swap engine on the shared demo photos (run with -s to see the distances)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from faceswap_engine import (
    SAME_PERSON_THRESHOLD,
    FaceIndexOutOfRange,
    FaceSwapError,
    InvalidImage,
    NoFaceDetected,
    decode_image,
    detect_faces,
    face_descriptor,
    face_distance,
    swap_faces,
    swap_image_bytes,
)

FACES_DIR = Path(os.environ.get("FACES_DIR") or Path(__file__).resolve().parents[3].parent / "shared" / "faces")
PORTRAITS = ("obama.jpg", "biden.jpg")
SIDE_BY_SIDE = "obama_and_biden_side_by_side.jpg"

# name -> (target file, swap file, target face index, who the swap face is, who the replaced face was)
PAIRS = {
    "obama_onto_biden": ("biden.jpg", "obama.jpg", 0, "obama", "biden"),
    "biden_onto_obama": ("obama.jpg", "biden.jpg", 0, "biden", "obama"),
    "obama_onto_side_by_side_face1": (SIDE_BY_SIDE, "obama.jpg", 1, "obama", "biden"),
}


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    if not FACES_DIR.is_dir():
        pytest.fail(f"demo photos not found in {FACES_DIR} (set FACES_DIR)")
    out = {}
    for name in (*PORTRAITS, SIDE_BY_SIDE):
        img = cv2.imread(str(FACES_DIR / name))
        assert img is not None, f"cannot read {FACES_DIR / name}"
        out[name] = img
    return out


@pytest.fixture(scope="module")
def descriptors(images: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Reference identities from the single portraits."""
    return {"obama": face_descriptor(images["obama.jpg"]), "biden": face_descriptor(images["biden.jpg"])}


@pytest.fixture(scope="module")
def results(images: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {
        name: swap_faces(images[target], images[swap], target_face_indices=[idx])
        for name, (target, swap, idx, _, _) in PAIRS.items()
    }


@pytest.mark.parametrize(("name", "count"), [("obama.jpg", 1), ("biden.jpg", 1), (SIDE_BY_SIDE, 2)])
def test_detection_counts(images: dict[str, np.ndarray], name: str, count: int) -> None:
    faces = detect_faces(images[name])
    assert len(faces) == count
    for face in faces:
        assert face.landmarks.shape == (68, 2)
        assert np.issubdtype(face.landmarks.dtype, np.integer)


def test_side_by_side_faces_are_numbered_left_to_right(
    images: dict[str, np.ndarray], descriptors: dict[str, np.ndarray]
) -> None:
    img = images[SIDE_BY_SIDE]
    faces = detect_faces(img)
    assert faces[0].center_x < faces[1].center_x
    for index, who, other in ((0, "obama", "biden"), (1, "biden", "obama")):
        d = face_descriptor(img, index)
        near, far = face_distance(d, descriptors[who]), face_distance(d, descriptors[other])
        print(f"side-by-side face {index}: to {who} {near:.3f}, to {other} {far:.3f}")
        assert near < SAME_PERSON_THRESHOLD < far, (index, near, far)


@pytest.mark.parametrize("name", list(PAIRS))
def test_swap_transfers_identity(results: dict[str, np.ndarray], descriptors: dict[str, np.ndarray], name: str) -> None:
    _, _, idx, swap_who, target_who = PAIRS[name]
    d = face_descriptor(results[name], idx)
    to_swap = face_distance(d, descriptors[swap_who])
    to_target = face_distance(d, descriptors[target_who])
    msg = f"{name}: distance to swap face ({swap_who}) {to_swap:.3f}, to original face ({target_who}) {to_target:.3f}"
    print(msg)
    assert to_swap < to_target, msg
    assert to_swap < SAME_PERSON_THRESHOLD, msg


@pytest.mark.parametrize("name", list(PAIRS))
def test_output_is_local_and_keeps_size(
    images: dict[str, np.ndarray], results: dict[str, np.ndarray], name: str
) -> None:
    target_name, _, idx, _, _ = PAIRS[name]
    target, out = images[target_name], results[name]
    assert out.shape == target.shape
    assert out.dtype == np.uint8

    left, top, right, bottom = detect_faces(target)[idx].box
    diff = np.abs(out.astype(np.int16) - target.astype(np.int16)).max(axis=2)
    assert diff[top:bottom, left:right].mean() > 5, "face region unchanged"

    # Nothing changes outside the face box grown by half its size on every side (corners included).
    w, h = right - left, bottom - top
    outside = np.ones(diff.shape, dtype=bool)
    outside[max(0, top - h // 2) : bottom + h // 2, max(0, left - w // 2) : right + w // 2] = False
    assert outside[0, 0] and outside[-1, -1]
    assert diff[outside].max() == 0


def test_default_target_is_largest_face(images: dict[str, np.ndarray], results: dict[str, np.ndarray]) -> None:
    target = images[SIDE_BY_SIDE]
    faces = detect_faces(target)
    largest = max(range(len(faces)), key=lambda i: faces[i].area)
    assert largest == 1
    default = swap_faces(target, images["obama.jpg"])
    assert np.array_equal(default, results["obama_onto_side_by_side_face1"])


def _gradient(h: int = 240, w: int = 320) -> np.ndarray:
    ramp = np.linspace(0, 255, w, dtype=np.float32)[None, :].repeat(h, axis=0)
    return np.dstack([ramp, ramp[::-1], np.full((h, w), 128, np.float32)]).astype(np.uint8)


def test_no_face_detected(images: dict[str, np.ndarray]) -> None:
    blank = _gradient()
    assert detect_faces(blank) == []
    with pytest.raises(NoFaceDetected) as exc:
        swap_faces(blank, images["obama.jpg"])
    assert exc.value.code == "no_face_detected"
    assert str(exc.value) == "no face detected in the target image"
    with pytest.raises(NoFaceDetected, match="no face detected in the swap image") as exc:
        swap_faces(images["obama.jpg"], blank)
    assert exc.value.image == "swap"


@pytest.mark.parametrize(
    ("target", "kwargs", "image"),
    [
        ("obama.jpg", {"swap_face_index": 1}, "swap"),
        ("obama.jpg", {"swap_face_index": -1}, "swap"),
        (SIDE_BY_SIDE, {"target_face_indices": [0, 2]}, "target"),
    ],
)
def test_face_index_out_of_range(images: dict[str, np.ndarray], target: str, kwargs: dict, image: str) -> None:
    with pytest.raises(FaceIndexOutOfRange) as exc:
        swap_faces(images[target], images["biden.jpg"], **kwargs)
    assert exc.value.code == "face_index_out_of_range"
    assert exc.value.image == image


@pytest.mark.parametrize("data", [b"", b"definitely not an image", b"\xff\xd8\xff\xe0" + b"\0" * 64])
def test_invalid_bytes(data: bytes) -> None:
    with pytest.raises(InvalidImage) as exc:
        swap_image_bytes(data, data)
    assert exc.value.code == "invalid_image"
    assert exc.value.image == "target"


def test_errors_share_a_base_class() -> None:
    for cls in (NoFaceDetected, FaceIndexOutOfRange, InvalidImage):
        assert issubclass(cls, FaceSwapError)


def test_decode_applies_exif_orientation(images: dict[str, np.ndarray]) -> None:
    upright = images["obama.jpg"]
    # Store the pixels rotated 90 degrees counter-clockwise and tag them "rotate 90 CW to display" (6).
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(upright[:, :, ::-1])))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    stored.save(buf, format="JPEG", exif=exif)
    decoded = decode_image(buf.getvalue())
    assert decoded.shape == upright.shape
    assert np.abs(decoded.astype(np.int16) - upright.astype(np.int16)).mean() < 4


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_swap_image_bytes_round_trip(images: dict[str, np.ndarray], fmt: str) -> None:
    def encode(name: str) -> bytes:
        ok, buf = cv2.imencode(".jpg", images[name])
        assert ok
        return buf.tobytes()

    out = swap_image_bytes(encode("biden.jpg"), encode("obama.jpg"), format=fmt)
    with Image.open(io.BytesIO(out)) as img:
        assert img.format == fmt
        assert img.size == (images["biden.jpg"].shape[1], images["biden.jpg"].shape[0])
