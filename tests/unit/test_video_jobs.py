"""Video jobs in the domain, over fakes: the request schema and intake, submission (fit before any provider is paid,
refusals), collection (a result checked, its audio restored), the PiAPI and self-hosted adapters' video bodies, and
the S3 adapter's upload of a file with several parts in flight (moto's ``mock_aws``)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.awsrequest import AWSResponse
from fakes import FakeProvider, RecordingQueue, World, job_request, jpeg, make_world
from moto import mock_aws

from faceswap import media
from faceswap.aws.s3 import S3ObjectStore
from faceswap.aws.sqs import SqsCheckScheduler, SqsRequestQueue
from faceswap.errors import CopyOutOfTime, InvalidRequest
from faceswap.intake import parse_request_fields, request_for_upload
from faceswap.lifecycle import JobState
from faceswap.model import FacePair, ImageRef, StoredResult, TaskStatus
from faceswap.ports import FaceInput, TaskInput, Webhook
from faceswap.providers.crun import CRUNProvider
from faceswap.providers.piapi import PiAPIProvider
from faceswap.providers.selfhosted import SelfhostedProvider
from faceswap_local.clips import make_clip

VIDEO_KEY = "videos/clip.mp4"
SWAP = ImageRef(bucket="inputs", key="faces/obama.jpg")


def clip(tmp_path: Path, name: str = "clip.mp4", **kwargs: object) -> bytes:
    options: dict[str, object] = {"width": 160, "height": 120, "fps": 8, "seconds": 1.0, **kwargs}
    return make_clip(tmp_path / name, **options).read_bytes()  # type: ignore[arg-type]


def video_world(tmp_path: Path, *, provider: str = "piapi", result: bytes | None = None) -> World:
    """A world whose provider is registered as ``provider`` (so the registry's video limits apply), with an inputs
    store, a target video at ``videos/clip.mp4`` and the result host serving ``result`` at ``/result.mp4``."""
    world = make_world()
    world.provider.name = provider
    world.provider.result_url = "https://results.example.com/result.mp4"
    world.rewire(providers={provider: world.provider}, inputs=world.objects, input_bucket="inputs")
    world.objects.objects[("inputs", VIDEO_KEY)] = clip(tmp_path)
    if result is not None:
        world.served["/result.mp4"] = result
    return world


def video_job(world: World, **changes: object) -> object:
    request = job_request(
        target_image=ImageRef(),
        target_video=ImageRef(bucket="inputs", key=VIDEO_KEY),
        provider=world.provider.name,
        result_key="results/clip.mp4",
        **changes,
    )
    return world.pipeline.submission.submit(request)


# --------------------------------------------------------------------------------------------- the request


def fields(data: dict[str, object]) -> object:
    return parse_request_fields(data, bucket="inputs", default_provider="piapi", what="manifest")


def test_a_manifest_names_a_target_video_and_its_result_is_an_mp4() -> None:
    parsed = fields({"target_video": "videos/a.webm", "swap_image": "faces/b.jpg", "options": {"trim": True}})
    request = parsed.request(job_id="a" * 32, result_key="results/x.mp4", source="manifest")  # type: ignore[attr-defined]
    assert request.media_type == "video" and request.target == ImageRef(bucket="inputs", key="videos/a.webm")
    assert request.target_image == ImageRef() and request.options == {"trim": "true"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"swap_image": "f.jpg"}, "Field 'target_image' (or 'target_video') is missing"),
        ({"target_image": "a.jpg", "target_video": "a.mp4", "swap_image": "f.jpg"}, "not both"),
        ({"target_video": "a.mp4", "swap_image": "f.jpg", "task": "multi-face-swap"}, "needs task 'face-swap'"),
        ({"target_image": "a.jpg", "swap_image": "f.jpg", "options": {"trim": True}}, "needs a 'target_video'"),
        (
            {"target_video": "a.mp4", "swap_image": "f.jpg", "options": {"trim": "maybe"}},
            "'trim' must be true or false",
        ),
        (
            {
                "target_video": "a.mp4",
                "reference": "r.jpg",
                "swap_image": "f.jpg",
                "options": {"target_faces_index": 1},
            },
            "'reference' chooses the faces itself: leave out the face index options",
        ),
    ],
)
def test_bad_video_requests_are_refused_naming_the_field(data: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message.replace("(", r"\(").replace(")", r"\)")):
        fields(data)


def test_a_face_library_video_upload_is_a_video_job_kept_as_mp4() -> None:
    world = make_world()
    request = request_for_upload(
        "inputs",
        "incoming/obama/holiday/clip.MOV",
        version_id=None,
        etag="e",
        objects=world.objects,
        default_provider="piapi",
    )
    assert request is not None and request.invalid is None
    assert request.target_video == ImageRef(bucket="inputs", key="incoming/obama/holiday/clip.MOV")
    assert request.result_key == "results/obama/holiday/clip.mp4"


# ---------------------------------------------------------------------------------------------- submission


def test_a_video_takes_face_indices_on_task_face_swap() -> None:
    request = fields({"target_video": "a.mp4", "swap_image": "f.jpg", "options": {"target_faces_index": "1"}})
    assert request.options == {"target_faces_index": "1"}  # type: ignore[attr-defined]
    with pytest.raises(InvalidRequest, match="need task 'multi-face-swap'"):
        fields({"target_image": "a.jpg", "swap_image": "f.jpg", "options": {"target_faces_index": "1"}})


def test_a_video_is_fitted_and_sent_by_url_before_the_row_says_what_was_sent(tmp_path: Path) -> None:
    world = video_world(tmp_path)
    job = video_job(world)
    assert job.state is JobState.SUBMITTED  # type: ignore[attr-defined]
    ((task, _),) = world.provider.creates
    assert task.target_image is None and task.target_video is not None and task.video_urls is not None
    ((video_url, _),) = world.provider.sent_video_urls
    assert video_url.endswith("prepared/" + "a" * 32 + "/target.mp4?get")
    stored = world.objects.objects[("inputs", f"prepared/{'a' * 32}/target.mp4")]
    assert media.sniff(stored) == "mp4"
    row = world.store.get("a" * 32)
    assert row is not None and row.media_type == "video" and row.media is not None
    assert row.media["sent"]["frames"] == 8 and row.media["source"]["width"] == 160
    assert not os.path.exists(task.target_video.path)  # the scratch folder is gone once the create is answered


def test_face_indices_on_a_video_are_refused_where_the_video_task_takes_none(tmp_path: Path) -> None:
    world = video_world(tmp_path, provider="crun")
    job = video_job(world, options={"target_faces_index": "1"})
    assert job.error["code"] == "provider_rejected"  # type: ignore[attr-defined]
    assert job.error["message"] == (  # type: ignore[attr-defined]
        "Provider 'crun''s video task takes no option target_faces_index; providers whose video task takes it: "
        "piapi, selfhosted."
    )
    assert world.provider.creates == []
    piapi = video_world(tmp_path, provider="piapi")
    assert video_job(piapi, options={"target_faces_index": "1", "trim": "true"}).state is JobState.SUBMITTED  # type: ignore[attr-defined]


def test_video_jobs_get_their_own_deadline(tmp_path: Path) -> None:
    world = video_world(tmp_path)
    world.rewire(video_deadline_seconds=1800)
    video_job(world)
    row = world.store.get("a" * 32)
    assert row is not None
    from faceswap.model import parse_time

    assert (parse_time(row.deadline_at) - parse_time(row.created_at)).total_seconds() == pytest.approx(1800, abs=1)


def test_a_provider_without_video_refuses_before_any_call(tmp_path: Path) -> None:
    world = video_world(tmp_path, provider="ailabapi")
    job = video_job(world)
    assert job.state is JobState.FAILED  # type: ignore[attr-defined]
    assert job.error["code"] == "provider_rejected"  # type: ignore[attr-defined]
    assert "has no video task (it offers face-swap on images)" in job.error["message"]  # type: ignore[attr-defined]
    assert world.provider.creates == []


def test_a_text_file_named_mp4_fails_invalid_video_before_any_call(tmp_path: Path) -> None:
    world = video_world(tmp_path)
    world.objects.objects[("inputs", VIDEO_KEY)] = b"not a video, only text " * 10
    job = video_job(world)
    assert job.error["code"] == "invalid_video"  # type: ignore[attr-defined]
    assert world.provider.creates == []


def test_a_video_over_the_input_cap_fails_video_too_large(tmp_path: Path) -> None:
    world = video_world(tmp_path)
    world.rewire(max_video_bytes=1000)
    job = video_job(world)
    assert job.error["code"] == "video_too_large"  # type: ignore[attr-defined]
    assert world.provider.creates == []


# ---------------------------------------------------------------------------------------------- collection


def collect(world: World) -> object:
    world.provider.status = TaskStatus.SUCCEEDED
    job = world.store.get("a" * 32)
    assert job is not None
    return world.pipeline.collection.collect(job)


def test_a_result_that_lost_its_audio_is_kept_with_the_audio_sent(tmp_path: Path) -> None:
    world = video_world(tmp_path, result=clip(tmp_path, "silent.mp4", audio=False))
    video_job(world)
    job = collect(world)
    assert job.state is JobState.SUCCEEDED, job.error  # type: ignore[attr-defined]
    kept = tmp_path / "kept.mp4"
    kept.write_bytes(world.objects.objects[("results", "results/clip.mp4")])
    info = media.probe(str(kept))
    assert info.has_audio and info.frames == 8
    assert job.result["content_type"] == "video/mp4"  # type: ignore[attr-defined]


def test_a_result_of_another_length_fails_invalid_result(tmp_path: Path) -> None:
    world = video_world(tmp_path, result=clip(tmp_path, "short.mp4", seconds=0.5))
    video_job(world)
    job = collect(world)
    assert job.state is JobState.FAILED
    assert job.error["code"] == "invalid_result" and "10%" in job.error["message"]  # type: ignore[attr-defined]


def test_an_image_where_a_video_was_due_fails_invalid_result(tmp_path: Path) -> None:
    world = video_world(tmp_path, result=jpeg())
    video_job(world)
    job = collect(world)
    assert job.error["code"] == "invalid_result"  # type: ignore[attr-defined]


def test_a_callback_leaves_a_video_result_to_a_check(tmp_path: Path) -> None:
    world = video_world(tmp_path, result=clip(tmp_path, "r.mp4"))
    video_job(world)
    world.provider.status = TaskStatus.SUCCEEDED
    job = world.store.get("a" * 32)
    assert job is not None
    with pytest.raises(CopyOutOfTime):
        world.pipeline.collection.collect(job, deadline=1e12)
    assert ("results", "results/clip.mp4") not in world.objects.objects


# ------------------------------------------------------------------------------------------------ adapters


def prepared(tmp_path: Path) -> media.PreparedVideo:
    path = make_clip(tmp_path / "p.mp4", width=160, height=120, fps=8, seconds=1)
    info = media.probe(str(path))
    return media.PreparedVideo(path=str(path), info=info, source=info)


def video_task(tmp_path: Path) -> TaskInput:
    swap = FakeProvider().image_limits  # noqa: F841 - any provider; the swap image is prepared already
    from faceswap.images import PreparedImage

    return TaskInput(
        job_id="a" * 32,
        task="face-swap",
        target_image=None,
        swap_image=PreparedImage(jpeg(), "image/jpeg", 64, 48),
        options={},
        target_video=prepared(tmp_path),
        video_urls=lambda: ("https://inputs.example.com/v.mp4?sig", "https://inputs.example.com/s.jpg?sig"),
    )


def test_piapi_sends_a_video_to_its_video_toolkit_by_url(tmp_path: Path) -> None:
    sent: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200, json={"code": 200, "data": {"task_id": "t-1"}})

    provider = PiAPIProvider(
        httpx.Client(transport=httpx.MockTransport(handler)),
        api_key=lambda: "k",
        base_url="https://piapi.test",
        result_hosts=(),
    )
    assert provider.create_task(video_task(tmp_path), Webhook("https://cb", "s")) == "t-1"
    indexed = replace(video_task(tmp_path), options={"swap_faces_index": "0", "target_faces_index": "1,0"})
    assert provider.create_task(indexed, Webhook("https://cb", "s")) == "t-1"
    body, with_indices = sent
    assert body["model"] == "Qubico/video-toolkit" and body["task_type"] == "face-swap"
    assert body["input"] == {
        "swap_image": base64.b64encode(jpeg()).decode(),
        "target_video": "https://inputs.example.com/v.mp4?sig",
    }
    assert with_indices["input"] == {**body["input"], "swap_faces_index": "0", "target_faces_index": "1,0"}
    snapshot = provider.snapshot(
        "t-1", {"status": "completed", "output": {"video_url": "https://img.theapi.app/v.mp4"}}
    )
    assert snapshot.result_url == "https://img.theapi.app/v.mp4"


def recording_engine(task_id: str) -> tuple[SelfhostedProvider, list[dict[str, object]]]:
    """The self-hosted adapter over an engine that records each create's body and answers ``task_id``."""
    sent: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(202, json={"task_id": task_id, "status": "queued"})

    client = httpx.Client(transport=httpx.MockTransport(handler))
    return SelfhostedProvider(client, base_url="https://engine.test", result_hosts=()), sent


def test_the_engine_gets_a_video_by_url(tmp_path: Path) -> None:
    provider, sent = recording_engine("t-2")
    assert provider.create_task(video_task(tmp_path), None) == "t-2"
    assert provider.create_task(replace(video_task(tmp_path), options={"target_faces_index": "1"}), None) == "t-2"
    body, with_indices = sent
    assert body["target_video_url"] == "https://inputs.example.com/v.mp4?sig" and "target_image" not in body
    assert (body["swap_face_index"], body["target_face_indices"]) == (0, None)
    assert with_indices["target_face_indices"] == [1]


# ---------------------------------------------------------------------------------------------- S3 adapter


@pytest.mark.usefixtures("aws_credentials")
def test_a_file_is_stored_in_parts_in_flight_create_only_and_described_on_repeat(tmp_path: Path) -> None:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="results")
        store = S3ObjectStore(client, part_bytes=5 * 1024 * 1024)
        path = tmp_path / "big.mp4"
        path.write_bytes(os.urandom(23 * 1024 * 1024))
        stored = store.store_result_file("results", "r.mp4", str(path), content_type="video/mp4", job_id="j1")
        body = client.get_object(Bucket="results", Key="r.mp4")["Body"].read()
        assert body == path.read_bytes() and stored.size == len(body)
        assert stored.sha256 == hashlib.sha256(body).hexdigest()
        assert client.head_object(Bucket="results", Key="r.mp4")["ContentType"] == "video/mp4"
        again = store.store_result_file("results", "r.mp4", str(path), content_type="video/mp4", job_id="j1")
        assert again.sha256 == stored.sha256
        assert client.list_object_versions(Bucket="results").get("Versions", [{}]).__len__() == 1
        assert client.list_multipart_uploads(Bucket="results").get("Uploads", []) == []


@pytest.mark.usefixtures("aws_credentials")
def test_a_collect_that_loses_the_race_describes_the_winners_result_and_no_upload_is_left(tmp_path: Path) -> None:
    # Two collects of one job keep its video result at once: the loser's upload is aborted by the winner once the
    # winner's is complete (never before: a live upload is not a killed one's), and the loser describes the result.
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="results")
        path = tmp_path / "big.mp4"
        path.write_bytes(os.urandom(12 * 1024 * 1024))
        winner_client = boto3.client("s3", region_name="us-east-1")
        winner = S3ObjectStore(winner_client, part_bytes=5 * 1024 * 1024)
        aborted: set[str] = set()
        stored: list[StoredResult] = []
        first = threading.Lock()
        winner_client.meta.events.register(
            "before-call.s3.AbortMultipartUpload", lambda params, **_: aborted.add(params["query_string"]["uploadId"])
        )

        def race(params: dict[str, Any], **_: object) -> Any:
            with first:  # the first part of the loser's upload lets the winner finish first
                if not stored:
                    stored.append(
                        winner.store_result_file("results", "r.mp4", str(path), content_type="video/mp4", job_id="j1")
                    )
            if (
                params["query_string"].get("uploadId") in aborted
            ):  # what S3 answers for an aborted upload (moto raises KeyError)
                error = {"Code": "NoSuchUpload", "Message": "The specified multipart upload does not exist."}
                return AWSResponse("https://s3", 404, {}, None), {"Error": error, "ResponseMetadata": {}}
            return None

        for operation in ("UploadPart", "CompleteMultipartUpload", "AbortMultipartUpload"):
            client.meta.events.register(f"before-call.s3.{operation}", race)
        loser = S3ObjectStore(client, part_bytes=5 * 1024 * 1024)
        kept = loser.store_result_file("results", "r.mp4", str(path), content_type="video/mp4", job_id="j1")

        assert aborted, "the winner aborted the loser's live upload once its own was complete"
        assert stored and kept.sha256 == stored[0].sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert len(client.list_object_versions(Bucket="results")["Versions"]) == 1
        assert client.list_multipart_uploads(Bucket="results").get("Uploads", []) == []


def test_crun_sends_a_video_to_its_video_model_by_url(tmp_path: Path) -> None:
    sent: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200, json={"code": 200, "message": "success", "data": {"task_id": "t-3"}})

    provider = CRUNProvider(
        httpx.Client(transport=httpx.MockTransport(handler)),
        api_key=lambda: "k",
        base_url="https://crun.test",
        result_hosts=(),
    )
    assert provider.create_task(video_task(tmp_path), Webhook("https://cb/x", "s")) == "t-3"
    (body,) = sent
    assert body["model"] == "video-face-swap"
    assert body["input"] == {
        "video_url": "https://inputs.example.com/v.mp4?sig",
        "new_face": "https://inputs.example.com/s.jpg?sig",
        "disable_safety_checker": False,
    }
    assert body["callback_url"] == "https://cb/x?token=s"


# -------------------------------------------------------------------------------------- the media function


@pytest.mark.usefixtures("aws_credentials")
def test_video_jobs_messages_go_to_the_media_queue_and_others_to_their_own() -> None:
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        submit, check, media_queue = (sqs.create_queue(QueueName=name)["QueueUrl"] for name in ("s", "c", "m"))
        requests = SqsRequestQueue(sqs, submit, media_queue_url=media_queue)
        checks = SqsCheckScheduler(sqs, check, media_queue_url=media_queue)
        video = job_request(target_image=ImageRef(), target_video=ImageRef(bucket="inputs", key=VIDEO_KEY))
        requests.send(video)
        requests.send(job_request(job_id="b" * 32))
        checks.schedule("c" * 32, delay_seconds=0, check=0, video=True)
        checks.schedule("d" * 32, delay_seconds=0, check=0)

        def bodies(url: str) -> list[str]:
            messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
            return sorted(message["Body"] for message in messages)

        on_media = bodies(media_queue)
        assert len(on_media) == 2 and '"target_video"' in on_media[1] and '"job_id": "cccc' in on_media[0]
        assert '"bbbb' in bodies(submit)[0] and '"dddd' in bodies(check)[0]


def test_a_function_that_runs_no_video_hands_a_video_job_over_untouched(tmp_path: Path) -> None:
    world = video_world(tmp_path)
    queue = RecordingQueue()
    world.rewire(requeue=queue, hand_over_videos=True)
    video = job_request(
        target_image=ImageRef(), target_video=ImageRef(bucket="inputs", key=VIDEO_KEY), provider="piapi"
    )
    assert world.pipeline.hand_over(video)
    assert queue.sent == [video] and world.store.get(video.job_id) is None and world.provider.creates == []
    assert not world.pipeline.hand_over(job_request())  # an image job stays
    broken = replace(video, invalid=InvalidRequest("bad"))
    assert not world.pipeline.hand_over(broken)  # refused where it is: nothing of it needs PyAV
    world.rewire(hand_over_videos=False)
    assert not world.pipeline.hand_over(video)  # the media function runs it


def test_video_checks_are_scheduled_for_the_media_function(tmp_path: Path) -> None:
    world = video_world(tmp_path)
    video_job(world)
    assert world.scheduler.videos == [True]


def test_stale_scratch_folders_are_removed_and_nothing_else(tmp_path: Path) -> None:
    (tmp_path / "faceswap-video-abc").mkdir()
    (tmp_path / "faceswap-video-abc" / "source").write_bytes(b"x" * 10)
    (tmp_path / "faceswap-result-def").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "faceswap-file").write_bytes(b"a file, not a folder")
    assert media.remove_stale_workdirs(str(tmp_path)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faceswap-file", "other"]


def test_video_jobs_are_checked_at_their_own_cadence(tmp_path: Path) -> None:
    world = video_world(tmp_path)
    world.rewire(video_poll_delays={"piapi": (30.0, 1.5, 120.0)}, poll_delays={"piapi": (2.0, 1.5, 10.0)})
    video_job(world)
    ((_, first_delay, _),) = world.scheduler.scheduled
    assert first_delay == 30
    image = make_world()
    image.pipeline.submission.submit(job_request())
    assert image.scheduler.scheduled[0][1] == 10  # the fake provider's image cadence


def test_a_video_check_that_reaches_a_function_without_video_goes_to_the_media_function(tmp_path: Path) -> None:
    world = video_world(tmp_path)
    video_job(world)
    world.rewire(hand_over_videos=True)
    world.provider.status = TaskStatus.SUCCEEDED
    job = world.pipeline.check("a" * 32, check=1)
    assert job is not None and job.state is JobState.SUBMITTED and world.provider.gets == 0
    assert world.scheduler.videos == [True, True]  # scheduled again, for the media function


def test_a_face_map_on_a_video_is_refused_where_no_video_task_takes_one(tmp_path: Path) -> None:
    world = video_world(tmp_path)
    world.objects.objects[("inputs", "people/biden.jpg")] = jpeg()
    job = video_job(world, face_map=(FacePair(ImageRef(bucket="inputs", key="people/biden.jpg"), SWAP),))
    assert job.error["code"] == "provider_rejected"  # type: ignore[attr-defined]
    assert "in a video; providers that can: none configured" in job.error["message"]  # type: ignore[attr-defined]
    assert world.provider.creates == []


def test_the_engine_gets_a_video_s_chosen_faces_with_their_boxes(tmp_path: Path) -> None:
    provider, sent = recording_engine("t-4")
    task = video_task(tmp_path)
    face = FaceInput((10, 20, 90, 110), None, task.swap_image)
    provider.create_task(replace(task, faces=(face,)), None)
    (body,) = sent
    assert body["faces"] == [{"box": [10, 20, 90, 110], "swap_image": base64.b64encode(jpeg()).decode()}]


def test_the_first_frame_is_what_faces_are_chosen_in(tmp_path: Path) -> None:
    path = make_clip(tmp_path / "f.mp4", width=160, height=120, fps=8, seconds=1)
    frame = media.first_frame(str(path))
    assert (frame.content_type, frame.width, frame.height) == ("image/png", 160, 120)
