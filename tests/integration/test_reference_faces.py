"""Choosing the face to replace by a reference photo, through the whole local stack: the submit function's boto3
Rekognition client reaches the local Rekognition (CompareFaces computed with dlib embeddings) at the endpoint it is
pointed to, and the provider receives the chosen faces."""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import numpy as np
import pytest
from conftest import FACES, Stack
from PIL import Image, ImageEnhance, ImageOps

from faceswap.lifecycle import JobState
from faceswap.model import Job
from faceswap_engine import SAME_PERSON_THRESHOLD, decode_image, detect_faces, face_descriptor, face_distance

PAIR = "obama_and_biden_side_by_side.jpg"


def jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=90)
    return out.getvalue()


def variants() -> dict[str, Callable[[Image.Image], Image.Image]]:
    """References that differ from the target's pixels."""
    return {
        "as-is": lambda im: im,
        "flipped": ImageOps.mirror,
        "rescaled": lambda im: im.resize((im.width // 2, im.height // 2)),
        "recoloured": lambda im: ImageEnhance.Color(im).enhance(0.3),
        "cropped": lambda im: im.crop((im.width // 6, im.height // 10, im.width * 5 // 6, im.height * 3 // 4)),
    }


def run(stack: Stack, name: str, manifest: dict[str, object], images: dict[str, bytes]) -> Job:
    for key, data in images.items():
        stack.upload(key, data)
    stack.upload(f"jobs/{name}.json", json.dumps(manifest).encode())
    target = manifest["target_image"]
    assert isinstance(target, dict)
    return stack.wait_for(str(target["s3_key"]), timeout=60)


def identities(stack: Stack, job: Job) -> list[dict[str, float]]:
    """For each face of the result, left to right: its dlib distance to obama.jpg and to biden.jpg."""
    assert job.result is not None
    result = decode_image(stack.s3.get_object(Bucket=job.result["bucket"], Key=job.result["key"])["Body"].read())
    people = {name: face_descriptor(decode_image((FACES / f"{name}.jpg").read_bytes())) for name in ("obama", "biden")}
    return [
        {name: face_distance(face_descriptor(result, i), desc) for name, desc in people.items()}
        for i in range(len(detect_faces(result)))
    ]


@pytest.mark.parametrize("variant", list(variants()))
def test_the_person_in_the_reference_gets_the_swap_face_and_the_other_keeps_their_own(
    stack: Stack, variant: str
) -> None:
    reference = jpeg(variants()[variant](Image.open(FACES / "obama.jpg")))
    job = run(
        stack,
        f"reference-{variant}",
        {
            "target_image": {"s3_key": f"photos/reference/{variant}.jpg"},
            "swap_image": {"s3_key": "faces/biden.jpg"},
            "reference": {"s3_key": f"references/obama-{variant}.jpg"},
            "provider": "selfhosted",
        },
        {
            f"photos/reference/{variant}.jpg": (FACES / PAIR).read_bytes(),
            "faces/biden.jpg": (FACES / "biden.jpg").read_bytes(),
            f"references/obama-{variant}.jpg": reference,
        },
    )
    assert job.state is JobState.SUCCEEDED, job.error
    (chosen,) = job.chosen_faces
    assert chosen["method"] == "native" and chosen["similarity"] >= 80 and chosen["runner_up"] < 20
    assert chosen["box"][2] < 1126 / 2  # Obama is the left face of the pair
    left, right = identities(stack, job)
    assert left["biden"] < SAME_PERSON_THRESHOLD, left  # Obama's place now carries Biden's face
    assert right["biden"] < SAME_PERSON_THRESHOLD, right  # Biden keeps his own
    assert left["biden"] < left["obama"]  # and is nearer Biden than the Obama it was


def test_a_face_map_of_two_pairs_swaps_each_chosen_face(stack: Stack) -> None:
    job = run(
        stack,
        "face-map-two",
        {
            "target_image": {"s3_key": "photos/reference/two.jpg"},
            "face_map": [
                {"reference": {"s3_key": "faces/obama.jpg"}, "swap_image": {"s3_key": "faces/biden.jpg"}},
                {"reference": {"s3_key": "faces/biden.jpg"}, "swap_image": {"s3_key": "faces/obama.jpg"}},
            ],
            "provider": "selfhosted",
        },
        {
            "photos/reference/two.jpg": (FACES / PAIR).read_bytes(),
            "faces/biden.jpg": (FACES / "biden.jpg").read_bytes(),
            "faces/obama.jpg": (FACES / "obama.jpg").read_bytes(),
        },
    )
    assert job.state is JobState.SUCCEEDED, job.error
    assert [face["pair"] for face in job.chosen_faces] == [0, 1]
    left, right = identities(stack, job)
    assert left["biden"] < left["obama"] and right["obama"] < right["biden"], (left, right)


def test_a_reference_of_someone_absent_fails_before_any_provider_task(stack: Stack) -> None:
    engine_tasks = len(stack.local.engine.app.tasks) if stack.local.engine else 0
    job = run(
        stack,
        "reference-absent",
        {
            "target_image": {"s3_key": "photos/reference/absent.jpg"},
            "swap_image": {"s3_key": "faces/obama.jpg"},
            "reference": {"s3_key": "faces/obama.jpg"},
            "provider": "selfhosted",
        },
        {
            "photos/reference/absent.jpg": (FACES / "biden.jpg").read_bytes(),
            "faces/obama.jpg": (FACES / "obama.jpg").read_bytes(),
        },
    )
    assert job.state is JobState.FAILED and job.error is not None
    assert job.error["code"] == "reference_face_not_found", job.error
    assert job.provider_task_id is None and job.attempts == []
    assert stack.local.engine is not None and len(stack.local.engine.app.tasks) == engine_tasks


def test_two_near_identical_faces_are_ambiguous(stack: Stack) -> None:
    obama = Image.open(FACES / "obama.jpg").convert("RGB")
    twins = Image.new("RGB", (obama.width * 2, obama.height))
    twins.paste(obama, (0, 0))
    twins.paste(ImageOps.mirror(obama), (obama.width, 0))
    job = run(
        stack,
        "reference-twins",
        {
            "target_image": {"s3_key": "photos/reference/twins.jpg"},
            "swap_image": {"s3_key": "faces/biden.jpg"},
            "reference": {"s3_key": "faces/obama.jpg"},
            "provider": "selfhosted",
        },
        {
            "photos/reference/twins.jpg": jpeg(twins),
            "faces/biden.jpg": (FACES / "biden.jpg").read_bytes(),
            "faces/obama.jpg": (FACES / "obama.jpg").read_bytes(),
        },
    )
    assert job.state is JobState.FAILED and job.error is not None
    assert job.error["code"] == "reference_face_ambiguous", job.error
    assert job.provider_task_id is None


def test_a_reference_with_no_face_is_invalid_image_naming_it(stack: Stack) -> None:
    blank = jpeg(Image.fromarray(np.tile(np.linspace(0, 255, 300, dtype=np.uint8), (200, 1))))
    job = run(
        stack,
        "reference-blank",
        {
            "target_image": {"s3_key": "photos/reference/blank.jpg"},
            "swap_image": {"s3_key": "faces/obama.jpg"},
            "reference": {"s3_key": "references/blank.jpg"},
            "provider": "selfhosted",
        },
        {
            "photos/reference/blank.jpg": (FACES / PAIR).read_bytes(),
            "faces/obama.jpg": (FACES / "obama.jpg").read_bytes(),
            "references/blank.jpg": blank,
        },
    )
    assert job.state is JobState.FAILED and job.error is not None
    assert job.error["code"] == "invalid_image" and "reference of face_map[0]" in job.error["message"], job.error


@pytest.mark.parametrize("provider", ["piapi", "ailabapi", "aiphotocraft"])
def test_isolate_and_composite_swaps_the_chosen_face_only_at_providers_without_face_ids(
    stack: Stack, provider: str
) -> None:
    job = run(
        stack,
        f"reference-{provider}",
        {
            "target_image": {"s3_key": f"photos/reference/{provider}.jpg"},
            "swap_image": {"s3_key": "faces/biden.jpg"},
            "reference": {"s3_key": "references/obama-flipped.jpg"},
            "provider": provider,
        },
        {
            f"photos/reference/{provider}.jpg": (FACES / PAIR).read_bytes(),
            "faces/biden.jpg": (FACES / "biden.jpg").read_bytes(),
            "references/obama-flipped.jpg": jpeg(ImageOps.mirror(Image.open(FACES / "obama.jpg"))),
        },
    )
    assert job.state is JobState.SUCCEEDED, job.error
    (chosen,) = job.chosen_faces
    assert chosen["method"] == "isolate-composite" and chosen["box"][2] < 1126 / 2
    assert [attempt.get("part") for attempt in job.attempts] == [0]
    assert job.result is not None and job.result["content_type"] == "image/png"
    left, right = identities(stack, job)
    assert left["biden"] < SAME_PERSON_THRESHOLD and left["biden"] < left["obama"], left
    assert right["biden"] < SAME_PERSON_THRESHOLD, right
    result = Image.open(
        io.BytesIO(stack.s3.get_object(Bucket=job.result["bucket"], Key=job.result["key"])["Body"].read())
    )
    target = Image.open(FACES / PAIR).convert("RGB")
    right_half = (700, 0, 1126, 661)  # Biden's side, far from the chosen face's crop
    assert result.convert("RGB").crop(right_half).tobytes() == target.crop(right_half).tobytes()
    kept = stack.s3.list_objects_v2(Bucket=job.result["bucket"], Prefix=f"intermediate/{job.job_id}/")
    assert {o["Key"].rsplit("/", 1)[1] for o in kept.get("Contents", [])} == {"base", f"part-0-{job.provider_task_id}"}


def test_a_face_map_of_two_pairs_by_isolate_and_composite_is_two_tasks_of_one_job(stack: Stack) -> None:
    job = run(
        stack,
        "face-map-two-piapi",
        {
            "target_image": {"s3_key": "photos/reference/two-piapi.jpg"},
            "face_map": [
                {"reference": {"s3_key": "faces/obama.jpg"}, "swap_image": {"s3_key": "faces/biden.jpg"}},
                {"reference": {"s3_key": "faces/biden.jpg"}, "swap_image": {"s3_key": "faces/obama.jpg"}},
            ],
            "provider": "piapi",
        },
        {
            "photos/reference/two-piapi.jpg": (FACES / PAIR).read_bytes(),
            "faces/biden.jpg": (FACES / "biden.jpg").read_bytes(),
            "faces/obama.jpg": (FACES / "obama.jpg").read_bytes(),
        },
    )
    assert job.state is JobState.SUCCEEDED, job.error
    assert [attempt.get("part") for attempt in job.attempts] == [0, 1]
    assert len({attempt["provider_task_id"] for attempt in job.attempts}) == 2
    left, right = identities(stack, job)
    assert left["biden"] < left["obama"] and right["obama"] < right["biden"], (left, right)


def test_crun_is_given_the_face_id_whose_detected_crop_is_the_person(stack: Stack) -> None:
    job = run(
        stack,
        "reference-crun",
        {
            "target_image": {"s3_key": "photos/reference/crun.jpg"},
            "face_map": [
                {"reference": {"s3_key": "references/obama-rescaled.jpg"}, "swap_image": {"s3_key": "faces/biden.jpg"}},
            ],
            "provider": "crun",
        },
        {
            "photos/reference/crun.jpg": (FACES / PAIR).read_bytes(),
            "faces/biden.jpg": (FACES / "biden.jpg").read_bytes(),
            "references/obama-rescaled.jpg": jpeg(variants()["rescaled"](Image.open(FACES / "obama.jpg"))),
        },
    )
    assert job.state is JobState.SUCCEEDED, job.error
    (chosen,) = job.chosen_faces
    assert chosen["method"] == "detect-crop" and chosen["box"][2] < 1126 / 2
    emulator = stack.local.emulators["crun"]
    (task,) = [t for t in emulator.tasks.values() if t.task_id == job.provider_task_id]
    assert task.model == "image-face-swap-multi" and [f["face_id"] for f in task.input["faces"]] == [0]
    left, right = identities(stack, job)
    assert left["biden"] < SAME_PERSON_THRESHOLD and left["biden"] < left["obama"], left
    assert right["biden"] < SAME_PERSON_THRESHOLD, right


def test_a_face_library_reference_chooses_the_face_in_every_upload(stack: Stack) -> None:
    stack.upload("people/obama-mirrored.jpg", jpeg(ImageOps.mirror(Image.open(FACES / "obama.jpg"))))
    stack.s3.put_object(
        Bucket=stack.input_bucket,
        Key="faces/lib-biden.jpg",
        Body=(FACES / "biden.jpg").read_bytes(),
        Metadata={"reference": "people/obama-mirrored.jpg"},
    )
    stack.upload("incoming/lib-biden/pair.jpg", (FACES / PAIR).read_bytes())
    job = stack.wait_for("incoming/lib-biden/pair.jpg", timeout=60)
    assert job.state is JobState.SUCCEEDED, job.error
    assert [pair.reference.key for pair in job.face_map] == ["people/obama-mirrored.jpg"]
    (chosen,) = job.chosen_faces
    assert chosen["box"][2] < 1126 / 2  # the person in the reference (Obama, on the left), not the largest face
    left, right = identities(stack, job)
    assert left["biden"] < left["obama"] and right["biden"] < SAME_PERSON_THRESHOLD, (left, right)
