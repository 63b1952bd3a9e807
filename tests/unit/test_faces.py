"""Choosing faces by reference photos: the chooser's rules, the Rekognition adapter, and the submit step that runs
them before any provider is paid."""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field, replace
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from fakes import SIGNING_KEY, FakeProvider, job_request, jpeg, make_world
from PIL import Image

from faceswap.aws.dynamodb import job_from_item, job_to_item
from faceswap.aws.rekognition import RekognitionFaceMatcher
from faceswap.composite import isolate
from faceswap.errors import (
    CopyOutOfTime,
    InvalidImage,
    NoFaceDetected,
    ReferenceFaceAmbiguous,
    ReferenceFaceNotFound,
    StoreUnavailable,
    SubmitOutcomeUnknown,
)
from faceswap.faces import NATIVE, ChosenFace, FaceChooser, FaceScore, ReferenceWithoutFace
from faceswap.ids import webhook_secret
from faceswap.images import PreparedImage, for_matcher, tile_crops
from faceswap.lifecycle import JobState
from faceswap.messages import request_from_message, request_to_message
from faceswap.model import FacePair, ImageRef, TaskStatus

LEFT, RIGHT = (100, 80, 220, 230), (600, 90, 720, 240)


def image(width: int = 800, height: int = 500) -> PreparedImage:
    return PreparedImage(jpeg(width, height), "image/jpeg", width, height)


@dataclass
class ScriptedMatcher:
    """A face matcher answering each reference (by its first bytes' length) from a script."""

    answers: list[list[FaceScore] | Exception]
    calls: list[tuple[PreparedImage, PreparedImage]] = field(default_factory=list)

    def compare(self, reference: PreparedImage, target: PreparedImage) -> list[FaceScore]:
        self.calls.append((reference, target))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_the_best_face_is_chosen_when_it_passes_the_threshold_with_the_margin() -> None:
    matcher = ScriptedMatcher([[FaceScore(LEFT, 12.0), FaceScore(RIGHT, 98.5)]])
    (chosen,) = FaceChooser(matcher=matcher, threshold=80, margin=10).choose(image(), [image(200, 200)], method=NATIVE)
    assert (chosen.box, chosen.similarity, chosen.runner_up, chosen.size) == (RIGHT, 98.5, 12.0, (800, 500))
    assert ChosenFace.from_dict(chosen.as_dict()) == chosen


@pytest.mark.parametrize(
    ("scores", "error", "words"),
    [
        ([FaceScore(LEFT, 79.9), FaceScore(RIGHT, 3.0)], ReferenceFaceNotFound, "79.9, under the threshold of 80"),
        ([FaceScore(LEFT, 95.0), FaceScore(RIGHT, 90.0)], ReferenceFaceAmbiguous, "95.0 and 90.0"),
        ([], NoFaceDetected, "target image has no face"),
    ],
)
def test_no_guess_is_made(scores: list[FaceScore], error: type[Exception], words: str) -> None:
    chooser = FaceChooser(matcher=ScriptedMatcher([scores]), threshold=80, margin=10)
    with pytest.raises(error, match=words):
        chooser.choose(image(), [image(200, 200)], method=NATIVE)


def test_a_single_face_needs_only_the_threshold() -> None:
    (chosen,) = FaceChooser(matcher=ScriptedMatcher([[FaceScore(LEFT, 81.0)]]), threshold=80, margin=50).choose(
        image(), [image(200, 200)], method=NATIVE
    )
    assert chosen.runner_up is None


def test_two_references_may_not_choose_the_same_face() -> None:
    matcher = ScriptedMatcher([[FaceScore(LEFT, 99.0), FaceScore(RIGHT, 5.0)]] * 2)
    with pytest.raises(ReferenceFaceAmbiguous, match=r"face_map\[0\] and face_map\[1\] choose the same face"):
        FaceChooser(matcher=matcher).choose(image(), [image(200, 200), image(300, 300)], method=NATIVE)


def test_a_reference_without_a_face_or_too_small_is_invalid_image_naming_it() -> None:
    with pytest.raises(InvalidImage, match=r"no face in the reference of face_map\[1\]\.$"):
        FaceChooser(matcher=ScriptedMatcher([[FaceScore(LEFT, 99.0)], ReferenceWithoutFace()])).choose(
            image(), [image(200, 200), image(200, 200)], method=NATIVE
        )
    with pytest.raises(InvalidImage, match=r"reference of face_map\[0\] is 60x60 pixels"):
        FaceChooser(matcher=ScriptedMatcher([])).choose(image(), [image(60, 60)], method=NATIVE)


def test_the_matcher_reads_the_pixels_sent_lossless_when_the_provider_got_webp() -> None:
    out = io.BytesIO()
    Image.new("RGB", (120, 90), (30, 60, 90)).save(out, format="WEBP", lossless=True)
    webp = PreparedImage(out.getvalue(), "image/webp", 120, 90)
    png = for_matcher(webp)
    assert png.content_type == "image/png"
    assert Image.open(io.BytesIO(png.data)).tobytes() == Image.open(io.BytesIO(webp.data)).convert("RGB").tobytes()
    jpg = image()
    assert for_matcher(jpg) is jpg


# ------------------------------------------------------------------------------------------- Rekognition adapter


def stubbed() -> tuple[RekognitionFaceMatcher, Stubber]:
    client = boto3.client("rekognition", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    return RekognitionFaceMatcher(lambda: client), Stubber(client)


def box(left: float, top: float, width: float, height: float) -> dict[str, float]:
    return {"Left": left, "Top": top, "Width": width, "Height": height}


def test_compare_faces_is_asked_for_every_face_and_its_boxes_become_pixels() -> None:
    matcher, stub = stubbed()
    reference, target = image(200, 200), image(1000, 500)
    stub.add_response(
        "compare_faces",
        {
            "FaceMatches": [
                {"Similarity": 99.2, "Face": {"BoundingBox": box(0.6, 0.2, 0.1, 0.3)}},
                {"Similarity": 4.5, "Face": {"BoundingBox": box(-0.01, 0.1, 0.12, 0.3)}},
            ],
            "UnmatchedFaces": [{"BoundingBox": box(0.3, 0.5, 0.05, 0.1)}],
        },
        {
            "SourceImage": {"Bytes": reference.data},
            "TargetImage": {"Bytes": target.data},
            "SimilarityThreshold": 0.0,
            "QualityFilter": "NONE",
        },
    )
    with stub:
        scores = matcher.compare(reference, target)
    assert scores == [
        FaceScore((600, 100, 700, 250), 99.2),
        FaceScore((0, 50, 110, 200), 4.5),  # a box past the image's edge is clipped to it
        FaceScore((300, 250, 350, 300), 0.0),
    ]


@pytest.mark.parametrize(
    ("code", "raised"),
    [
        ("InvalidParameterException", ReferenceWithoutFace),
        ("InvalidImageFormatException", InvalidImage),
        ("ImageTooLargeException", InvalidImage),
        ("ThrottlingException", StoreUnavailable),
        ("AccessDeniedException", StoreUnavailable),
    ],
)
def test_compare_faces_errors_become_the_ports_errors(code: str, raised: type[Exception]) -> None:
    matcher, stub = stubbed()
    stub.add_client_error("compare_faces", service_error_code=code, http_status_code=400)
    with stub, pytest.raises(raised):
        matcher.compare(image(200, 200), image())


# ------------------------------------------------------------------------------------------- submit


def face_map_world(answers: list[Any]) -> tuple[Any, ScriptedMatcher, FakeProvider]:
    world = make_world()
    provider = FakeProvider(name="selfhosted")
    matcher = ScriptedMatcher(answers)
    world.rewire(
        providers={"selfhosted": provider, "fake": world.provider},
        matcher=matcher,
        face_match_threshold=80.0,
        face_match_margin=10.0,
    )
    world.objects.objects[("inputs", "incoming/obama/target.jpg")] = jpeg(800, 500)
    world.objects.objects[("inputs", "refs/biden.jpg")] = jpeg(200, 200, color=(1, 2, 3))
    world.objects.objects[("inputs", "faces/other.jpg")] = jpeg(120, 120, color=(9, 9, 9))
    return world, matcher, provider


def face_map(*pairs: tuple[str, str]) -> tuple[FacePair, ...]:
    return tuple(FacePair(ImageRef("inputs", ref), ImageRef("inputs", swap)) for ref, swap in pairs)


def test_submit_chooses_the_faces_before_the_create_and_records_them_with_the_claim() -> None:
    world, matcher, provider = face_map_world(
        [[FaceScore(LEFT, 3.0), FaceScore(RIGHT, 97.0)], [FaceScore(LEFT, 96.0), FaceScore(RIGHT, 10.0)]]
    )
    request = job_request(
        provider="selfhosted",
        face_map=face_map(("refs/biden.jpg", "faces/obama.jpg"), ("refs/biden.jpg", "faces/other.jpg")),
    )
    job = world.pipeline.submit(request)
    assert job.state is JobState.SUBMITTED
    assert [face["box"] for face in job.chosen_faces] == [list(RIGHT), list(LEFT)]
    assert {face["method"] for face in job.chosen_faces} == {"native"}
    ((task, _),) = provider.creates
    assert [face.box for face in task.faces] == [RIGHT, LEFT]
    assert (task.faces[0].swap_image.width, task.faces[1].swap_image.width) == (64, 120)
    assert all(target.width == 800 for _, target in matcher.calls)  # the target as the provider got it
    stored = world.store.get(job.job_id)
    assert stored is not None and stored.chosen_faces == job.chosen_faces and stored.face_map == list(request.face_map)


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        ([FaceScore(LEFT, 40.0)], "reference_face_not_found"),
        ([FaceScore(LEFT, 91.0), FaceScore(RIGHT, 88.0)], "reference_face_ambiguous"),
        (ReferenceWithoutFace(), "invalid_image"),
    ],
)
def test_a_face_map_that_cannot_choose_fails_the_job_before_any_provider_call(answer: Any, code: str) -> None:
    world, _, provider = face_map_world([answer])
    job = world.pipeline.submit(
        job_request(provider="selfhosted", face_map=face_map(("refs/biden.jpg", "faces/obama.jpg")))
    )
    assert job.state is JobState.FAILED and job.error is not None and job.error["code"] == code
    assert not job.error["retryable"]
    assert provider.creates == []


def test_a_provider_that_takes_no_face_map_is_refused_before_any_call() -> None:
    world, matcher, _ = face_map_world([])
    job = world.pipeline.submit(job_request(face_map=face_map(("refs/biden.jpg", "faces/obama.jpg"))))
    assert job.error is not None and job.error["code"] == "provider_rejected"
    assert "selfhosted" in job.error["message"]
    assert world.provider.creates == [] and matcher.calls == []


def test_a_throttled_matcher_leaves_the_job_to_the_next_delivery() -> None:
    world, _, provider = face_map_world([StoreUnavailable("rekognition:CompareFaces", "ThrottlingException")])
    request = job_request(provider="selfhosted", face_map=face_map(("refs/biden.jpg", "faces/obama.jpg")))
    with pytest.raises(StoreUnavailable):
        world.pipeline.submit(request)
    assert world.store.get(request.job_id) is None and provider.creates == []


# ------------------------------------------------------------------------------------------- isolate and composite


def noisy_jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.effect_noise((width, height), 60).convert("RGB").save(out, format="JPEG", quality=95)
    return out.getvalue()


def swapped_crop_png(size: int, colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(out, format="PNG")
    return out.getvalue()


def test_isolate_and_composite_makes_one_task_per_pair_and_keeps_only_the_composite_at_the_result_key() -> None:
    world = make_world()
    provider = FakeProvider(name="piapi", status=TaskStatus.SUCCEEDED)
    matcher = ScriptedMatcher(
        [[FaceScore(LEFT, 97.0), FaceScore(RIGHT, 5.0)], [FaceScore(RIGHT, 96.0), FaceScore(LEFT, 4.0)]]
    )
    world.rewire(providers={"piapi": provider}, matcher=matcher, inputs=world.objects, face_match_threshold=80.0)
    target = noisy_jpeg(800, 500)
    world.objects.objects[("inputs", "incoming/obama/target.jpg")] = target
    world.objects.objects[("inputs", "refs/a.jpg")] = jpeg(200, 200)
    world.objects.objects[("inputs", "faces/other.jpg")] = jpeg(120, 120, color=(9, 9, 9))
    request = job_request(
        provider="piapi", face_map=face_map(("refs/a.jpg", "faces/obama.jpg"), ("refs/a.jpg", "faces/other.jpg"))
    )

    first = world.pipeline.submit(request)
    assert first.part == 0 and [f["method"] for f in first.chosen_faces] == ["isolate-composite"] * 2
    ((task, _),) = provider.creates
    assert task.faces == () and task.target_image.content_type == "image/jpeg"
    assert min(task.target_image.width, task.target_image.height) >= 512  # a crop around one face, upscaled
    assert task.swap_image.width == 64  # pair 0's swap face

    world.served["/result.png"] = swapped_crop_png(task.target_image.width, (255, 0, 0))
    moved = world.pipeline.collection.collect(first)  # part 0 kept; part 1 created (no queue: inline)
    assert moved.part == 1 and moved.state is JobState.SUBMITTED and len(provider.creates) == 2
    assert provider.creates[1][0].swap_image.width == 120  # pair 1's swap face
    assert ("results", "results/obama/target.jpg") not in world.objects.objects  # nothing at the result key yet

    world.served["/result.png"] = swapped_crop_png(provider.creates[1][0].target_image.width, (0, 0, 255))
    done = world.pipeline.collection.collect(world.store.get(request.job_id))  # type: ignore[arg-type]
    assert done.state is JobState.SUCCEEDED and done.result is not None
    assert done.result["content_type"] == "image/png" and done.result["key"] == "results/obama/target.jpg"
    assert [(a["provider_task_id"], a["part"]) for a in done.attempts] == [("task-1", 0), ("task-2", 1)]

    result = Image.open(io.BytesIO(world.objects.objects[("results", "results/obama/target.jpg")])).convert("RGB")
    base = Image.open(io.BytesIO(target)).convert("RGB")
    assert result.size == base.size
    assert result.getpixel((160, 160))[0] > 200 and result.getpixel((660, 170))[2] > 200  # each face its own swap
    for corner in ((5, 5), (795, 495), (400, 480), (400, 20)):  # far from both faces: the target's own pixels
        assert result.getpixel(corner) == base.getpixel(corner)
    intermediate = sorted(key for bucket, key in world.objects.objects if key.startswith("intermediate/"))
    assert intermediate == [
        f"intermediate/{request.job_id}/piapi/base",
        f"intermediate/{request.job_id}/piapi/part-0-task-1",
        f"intermediate/{request.job_id}/piapi/part-1-task-2",
    ]


def test_a_second_collect_of_a_part_moves_the_job_on_once() -> None:
    world = make_world()
    provider = FakeProvider(name="ailabapi", status=TaskStatus.SUCCEEDED)
    matcher = ScriptedMatcher([[FaceScore(LEFT, 97.0)], [FaceScore(RIGHT, 96.0), FaceScore(LEFT, 4.0)]])
    world.rewire(providers={"ailabapi": provider}, matcher=matcher, inputs=world.objects, face_match_threshold=80.0)
    world.objects.objects[("inputs", "incoming/obama/target.jpg")] = noisy_jpeg(800, 500)
    world.objects.objects[("inputs", "refs/a.jpg")] = jpeg(200, 200)
    request = job_request(
        provider="ailabapi", face_map=face_map(("refs/a.jpg", "faces/obama.jpg"), ("refs/a.jpg", "faces/obama.jpg"))
    )
    first = world.pipeline.submit(request)
    world.served["/result.png"] = swapped_crop_png(provider.creates[0][0].target_image.width, (255, 0, 0))
    world.pipeline.collection.collect(first)
    again = world.pipeline.collection.collect(first)  # a late callback for part 0, read before the move
    assert again.part == 1 and len(provider.creates) == 2


# ------------------------------------------------------------------------------------------- detect-crop


def crop(width: int = 50, height: int = 60) -> bytes:
    return jpeg(width, height)


def on(tile: tuple[int, int, int, int], similarity: float) -> FaceScore:
    """A face the matcher found inside ``tile`` of the crops' sheet."""
    return FaceScore((tile[0] + 10, tile[1] + 10, tile[2] - 10, tile[3] - 10), similarity)


def test_each_reference_picks_the_crop_that_is_its_person_with_one_comparison_for_all_crops() -> None:
    crops = [crop(), crop(80, 60), crop()]
    _, tiles = tile_crops(crops)
    matcher = ScriptedMatcher(
        [[on(tiles[0], 3.0), on(tiles[1], 98.0)], [on(tiles[0], 97.0), on(tiles[1], 2.0), on(tiles[2], 1.0)]]
    )
    chooser = FaceChooser(matcher=matcher, threshold=80, margin=10)
    assert chooser.choose_crops(crops, [image(200, 200), image(300, 300)]) == [1, 0]
    assert len(matcher.calls) == 2  # one per reference, whatever the number of crops
    sheet = matcher.calls[0][1]
    assert sheet.content_type == "image/jpeg" and len(sheet.data) <= 5 * 1024 * 1024


@pytest.mark.parametrize(
    ("scores", "error"),
    [
        ([50.0, 10.0], ReferenceFaceNotFound),
        ([95.0, 91.0], ReferenceFaceAmbiguous),
        ([], ReferenceFaceNotFound),
    ],
)
def test_crops_are_held_to_the_same_threshold_and_margin(scores: list[float], error: type[Exception]) -> None:
    crops = [crop(), crop()]
    _, tiles = tile_crops(crops)
    found = [on(tile, score) for tile, score in zip(tiles, scores, strict=False)]
    chooser = FaceChooser(matcher=ScriptedMatcher([found]), threshold=80, margin=10)
    with pytest.raises(error):
        chooser.choose_crops(crops, [image(200, 200)])


def test_two_references_may_not_pick_the_same_crop() -> None:
    crops = [crop(), crop()]
    _, tiles = tile_crops(crops)
    matcher = ScriptedMatcher([[on(tiles[0], 99.0), on(tiles[1], 1.0)]] * 2)
    with pytest.raises(ReferenceFaceAmbiguous, match="choose the same face"):
        FaceChooser(matcher=matcher).choose_crops(crops, [image(200, 200), image(200, 200)])


def test_a_face_map_survives_the_queue_and_the_jobs_table() -> None:
    request = job_request(face_map=face_map(("refs/a.jpg", "faces/obama.jpg"), ("refs/b.jpg", "faces/other.jpg")))
    assert request_from_message(json.loads(request_to_message(request))["job_request"]) == request
    world = make_world()
    job, _ = world.pipeline.lifecycle.record(request)
    chosen = ChosenFace(1, RIGHT, (800, 500), 97.25, 3.5, "isolate-composite", (LEFT,)).as_dict()
    stored = job_from_item(job_to_item(replace(job, chosen_faces=[chosen], part=1)))
    assert stored.face_map == list(request.face_map) and stored.chosen_faces == [chosen] and stored.part == 1


def two_part_world(provider_name: str = "piapi") -> tuple[Any, FakeProvider, Any]:
    world = make_world()
    provider = FakeProvider(name=provider_name, status=TaskStatus.SUCCEEDED)
    matcher = ScriptedMatcher(
        [[FaceScore(LEFT, 97.0), FaceScore(RIGHT, 5.0)], [FaceScore(RIGHT, 96.0), FaceScore(LEFT, 4.0)]]
    )
    world.rewire(providers={provider_name: provider}, matcher=matcher, inputs=world.objects, face_match_threshold=80.0)
    world.objects.objects[("inputs", "incoming/obama/target.jpg")] = noisy_jpeg(800, 500)
    world.objects.objects[("inputs", "refs/a.jpg")] = jpeg(200, 200)
    request = job_request(
        provider=provider_name,
        face_map=face_map(("refs/a.jpg", "faces/obama.jpg"), ("refs/a.jpg", "faces/obama.jpg")),
    )
    return world, provider, request


def test_a_late_callback_of_an_earlier_part_is_not_taken_for_the_next_parts_task() -> None:
    world, provider, request = two_part_world()
    first = world.pipeline.submit(request)
    world.served["/result.png"] = swapped_crop_png(provider.creates[0][0].target_image.width, (255, 0, 0))
    provider.create_errors.append(SubmitOutcomeUnknown("timed out"))  # part 1's create: outcome unknown
    world.pipeline.collection.collect(first)
    waiting = world.store.get(request.job_id)
    assert waiting is not None and waiting.part == 1 and waiting.provider_task_id is None

    secret = webhook_secret(SIGNING_KEY, request.job_id)
    after = world.pipeline.callbacks.callback(
        "piapi", request.job_id, headers={"x-webhook-secret": secret}, query={}, body=b"task-1"
    )
    assert after.provider_task_id is None and after.state is JobState.SUBMITTED  # part 0's task is not part 1's


def test_the_last_part_collected_by_a_callback_is_composited_by_a_check() -> None:
    world, provider, request = two_part_world()
    job = world.pipeline.submit(request)
    for part in range(2):
        world.served["/result.png"] = swapped_crop_png(provider.creates[part][0].target_image.width, (0, 255, 0))
        job = world.store.get(request.job_id)  # type: ignore[assignment]
        if part == 1:
            with pytest.raises(CopyOutOfTime):
                world.pipeline.collection.collect(job, deadline=time.monotonic() + 10)
        else:
            world.pipeline.collection.collect(job, deadline=time.monotonic() + 10)
    job = world.store.get(request.job_id)  # type: ignore[assignment]
    assert job.state is JobState.SUBMITTED and ("results", "results/obama/target.jpg") not in world.objects.objects
    assert world.pipeline.collection.collect(job).state is JobState.SUCCEEDED  # the check, in the poller's time


def test_a_base_stored_by_another_delivery_is_the_one_every_crop_is_cut_from() -> None:
    world, provider, request = two_part_world()
    other = noisy_jpeg(800, 500)
    world.objects.objects[("results", f"intermediate/{request.job_id}/piapi/base")] = other
    world.pipeline.submit(request)
    sent = Image.open(io.BytesIO(provider.creates[0][0].target_image.data)).convert("RGB")
    expected = Image.open(io.BytesIO(isolate(other, LEFT, (RIGHT,)).data)).convert("RGB")
    assert sent.tobytes() == expected.tobytes()


def test_the_checks_of_an_earlier_parts_task_end_when_the_next_part_has_its_own() -> None:
    world, provider, request = two_part_world()
    first = world.pipeline.submit(request)
    assert world.scheduler.tasks == ["task-1"]  # the first check follows part 0's task
    world.served["/result.png"] = swapped_crop_png(provider.creates[0][0].target_image.width, (255, 0, 0))
    world.pipeline.collection.collect(first)
    assert world.scheduler.tasks == ["task-1", "task-2"]  # part 1's submit starts its own chain
    gets, scheduled = provider.gets, len(world.scheduler.scheduled)

    job = world.pipeline.check(request.job_id, check=3, task_id="task-1")  # a late check of part 0's chain
    assert job is not None and job.part == 1
    assert provider.gets == gets and len(world.scheduler.scheduled) == scheduled  # no read, no next check


def test_a_swapped_crop_of_another_shape_fails_the_job_before_the_next_part_is_paid() -> None:
    world, provider, request = two_part_world()
    first = world.pipeline.submit(request)
    sent = provider.creates[0][0].target_image
    out = io.BytesIO()
    Image.new("RGB", (sent.width * 2, sent.height), (255, 0, 0)).save(out, format="PNG")
    world.served["/result.png"] = out.getvalue()
    done = world.pipeline.collection.collect(first)
    assert done.state is JobState.FAILED and done.error is not None and done.error["code"] == "invalid_result"
    assert "cannot be put back" in done.error["message"]
    assert len(provider.creates) == 1  # part 1 was never created
