"""Video jobs through the whole local stack: target videos made by the test (faceswap_local.clips), fitted in the
submit function (its media layer), swapped by the PiAPI emulator and the self-hosted engine frame by frame, checked
and given back their audio in the poller, and kept as MP4."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import httpx
import pytest
from botocore.credentials import Credentials
from conftest import FACES, Stack

from faceswap import media
from faceswap.aws.ratelimit import DynamoRateLimiter
from faceswap.lifecycle import JobState
from faceswap.model import Job
from faceswap_cli.sigv4 import SigV4
from faceswap_engine import SAME_PERSON_THRESHOLD, detect_faces, face_descriptor, face_distance
from faceswap_local.clips import make_clip
from faceswap_local.environments import Invocation, Observer
from faceswap_local.stack import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY

OBAMA = (FACES / "obama.jpg").read_bytes()
BIDEN = (FACES / "biden.jpg").read_bytes()


def clip(**kwargs: object) -> bytes:
    """A clip of Biden's photo (480x360, 8 frames at 8 fps, with a tone) unless ``kwargs`` say otherwise."""
    options: dict[str, object] = {"photo": BIDEN, "width": 480, "height": 360, "fps": 8, "seconds": 1.0, **kwargs}
    with tempfile.TemporaryDirectory() as folder:
        name = f"clip.{options.pop('extension', 'mp4')}"
        return make_clip(Path(folder) / name, **options).read_bytes()  # type: ignore[arg-type]


VIDEO_JOB_SECONDS = 120 + DynamoRateLimiter.LEASE_SECONDS
"""How long a video job may take here: its work, plus a wait for a share of PiAPI's call ceiling, which an execution
environment of an earlier test can hold, idle, until its lease ends (seen: 60 s in 2 of 4 full runs;
faceswap.aws.ratelimit, "What it costs in time")."""


def run(stack: Stack, name: str, video: bytes, *, timeout: float = VIDEO_JOB_SECONDS, **fields: object) -> Job:
    """Upload ``video`` and a manifest naming it as ``target_video`` (swap face: Obama) and wait for the job."""
    key = f"videos/{name}.mp4"
    stack.upload(key, video)
    stack.upload("faces/obama.jpg", OBAMA)
    manifest = {"target_video": {"s3_key": key}, "swap_image": {"s3_key": "faces/obama.jpg"}, **fields}
    stack.upload(f"jobs/{name}.json", json.dumps(manifest).encode())
    return stack.wait_for(key, timeout=timeout)


def post_job(stack: Stack, video_key: str, **fields: object) -> httpx.Response:
    """``POST /jobs`` (signed) with the stored ``video_key`` as ``target_video``, Obama as the swap face, and
    ``fields``."""
    body = {"target_video": {"s3_key": video_key}, "swap_image": "faces/obama.jpg", **fields}
    return httpx.post(
        f"{stack.api_url}/jobs",
        json=body,
        auth=SigV4(Credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY), REGION),
        timeout=30,
    )


def kept(stack: Stack, job: Job, folder: Path) -> tuple[Path, media.VideoInfo]:
    """The job's result, downloaded, and what it is."""
    assert job.result is not None, job.error
    path = folder / "result.mp4"
    path.write_bytes(stack.s3.get_object(Bucket=job.result["bucket"], Key=job.result["key"])["Body"].read())
    return path, media.probe(str(path), name="result")


def sides(path: Path) -> Iterator[tuple[dict[str, float], dict[str, float]]]:
    """For every frame of the two-person video at ``path``: the dlib distances of its left and of its right face to
    Obama and to Biden (``{"obama": d, "biden": d}`` each)."""
    people = {name: face_descriptor(cv2.imread(str(FACES / f"{name}.jpg"))) for name in ("obama", "biden")}
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            image = frame.to_ndarray(format="bgr24")
            left, right = (face_descriptor(image, i) for i in range(2))
            yield (
                {name: face_distance(left, known) for name, known in people.items()},
                {name: face_distance(right, known) for name, known in people.items()},
            )


def identity(path: Path) -> list[float]:
    """The dlib distance to Obama (the swap face) of the face in every other frame of the video at ``path``."""
    obama = face_descriptor(cv2.imread(str(FACES / "obama.jpg")))
    distances = []
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % 2 == 0:
                image = frame.to_ndarray(format="bgr24")
                if detect_faces(image):
                    distances.append(face_distance(face_descriptor(image), obama))
    return distances


@pytest.mark.parametrize(
    ("provider", "audio"),
    [("piapi", True), ("piapi", False), ("crun", True), ("crun", False), ("selfhosted", True)],
)
def test_a_clip_is_swapped_and_keeps_its_audio(stack: Stack, tmp_path: Path, provider: str, audio: bool) -> None:
    source = clip(audio=audio)
    job = run(stack, f"swap-{provider}-{audio}", source, provider=provider)
    assert job.state is JobState.SUCCEEDED, job.error
    assert job.media_type == "video" and job.result_key.endswith(".mp4")
    assert job.result is not None and job.result["content_type"] == "video/mp4"
    path, result = kept(stack, job, tmp_path)
    assert result.has_audio is audio
    assert result.duration == pytest.approx(1.0, abs=0.1)
    with av.open(str(path)) as kept_video, tempfile.NamedTemporaryFile(suffix=".mp4") as sent:
        sent.write(source)
        sent.flush()
        with av.open(sent.name) as original:
            assert len(kept_video.streams) == len(original.streams)
    assert (
        job.media is not None
        and job.media["sent"]["frames"] == 8
        and job.media["source"]["audio_codec"] == ("aac" if audio else None)
    )
    distances = identity(path)
    print(f"{provider}: dlib distance to the swap face in sampled frames {[round(d, 3) for d in distances]}")
    assert distances and max(distances) < SAME_PERSON_THRESHOLD, distances


def test_a_result_that_lost_its_audio_gets_it_back(stack: Stack, tmp_path: Path) -> None:
    stack.piapi.faults.video_without_audio = True
    source = clip()
    job = run(stack, "audio-lost", source, provider="piapi")
    assert job.state is JobState.SUCCEEDED, job.error
    (task,) = [t for t in stack.piapi.tasks.values() if t.job_id == job.job_id]
    assert task.video is not None and task.video["audio"]  # the provider was sent the audio …
    served = tmp_path / "served.mp4"
    served.write_bytes(task.result or b"")
    assert not media.probe(str(served)).has_audio  # … and lost it
    path, result = kept(stack, job, tmp_path)
    assert result.has_audio and result.audio_codec == "aac"
    assert result.frames == media.probe(str(served)).frames
    with av.open(str(path)) as restored, tempfile.NamedTemporaryFile(suffix=".mp4") as sent:
        sent.write(source)
        sent.flush()
        with av.open(sent.name) as original:
            copied = [bytes(p) for p in restored.demux(restored.streams.audio[0]) if p.size]
            originals = [bytes(p) for p in original.demux(original.streams.audio[0]) if p.size]
    assert copied == originals  # a stream copy of the very audio sent


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("4k", {"width": 3840, "height": 2160, "fps": 4, "seconds": 0.5}, (1280, 720, 2)),
        (
            "60fps",
            {"width": 320, "height": 240, "fps": 60, "seconds": 2.0, "photo": None},
            (320, 240, 60),  # 60 fps sent at 30
        ),
    ],
)
def test_a_video_over_piapis_limits_is_fitted_to_them(
    stack: Stack, name: str, kwargs: dict[str, object], expected: tuple[int, int, int]
) -> None:
    job = run(stack, f"fit-{name}", clip(**kwargs), provider="piapi")
    (task,) = [t for t in stack.piapi.tasks.values() if t.job_id == job.job_id]
    assert task.video is not None
    assert (task.video["width"], task.video["height"], task.video["frames"]) == expected
    assert task.video["frames"] <= 600 and task.video["bytes"] <= 10 * 1024 * 1024
    assert job.media is not None and job.media["source"]["width"] == kwargs["width"]


def test_a_clip_too_long_fails_naming_the_limit_and_no_task_is_made(stack: Stack) -> None:
    tasks = len(stack.piapi.tasks)
    job = run(stack, "too-long", clip(photo=None, width=160, height=120, fps=24, seconds=26), provider="piapi")
    assert job.state is JobState.FAILED
    assert job.error is not None and job.error["code"] == "video_too_long"
    assert "600 frames" in job.error["message"] and "trim" in job.error["message"]
    assert len(stack.piapi.tasks) == tasks


@pytest.mark.parametrize("kind", ["text", "truncated", "audio-only"])
def test_what_is_not_a_usable_video_fails_invalid_video(stack: Stack, kind: str) -> None:
    tasks = len(stack.piapi.tasks)
    if kind == "text":
        data = b"this is a text file named .mp4\n" * 20
    elif kind == "truncated":
        whole = clip()
        data = whole[: len(whole) // 2]
    else:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "audio.mp4"
            with av.open(str(path), "w") as out:
                stream = out.add_stream("aac", rate=48000)
                for start in range(0, 48000, 960):
                    frame = av.AudioFrame(format="fltp", layout="mono", samples=960)
                    for plane in frame.planes:
                        plane.update(bytes(plane.buffer_size))
                    frame.sample_rate, frame.pts = 48000, start
                    out.mux(stream.encode(frame))
                out.mux(stream.encode(None))
            data = path.read_bytes()
    job = run(stack, f"invalid-{kind}", data, provider="piapi")
    assert job.state is JobState.FAILED
    assert job.error is not None and job.error["code"] == "invalid_video", job.error
    assert len(stack.piapi.tasks) == tasks


def test_a_video_job_to_a_provider_without_video_is_refused_before_any_call(stack: Stack) -> None:
    ailabapi = stack.local.emulators["ailabapi"]
    calls = ailabapi.create_calls
    job = run(stack, "no-video-provider", clip(), provider="ailabapi")
    assert job.state is JobState.FAILED
    assert job.error is not None and job.error["code"] == "provider_rejected"
    assert "has no video task" in job.error["message"] and "piapi" in job.error["message"]
    assert ailabapi.create_calls == calls
    answer = post_job(stack, "videos/no-video-provider.mp4", provider="aiphotocraft")
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == "provider_rejected" and "has no video task" in answer.json()["message"]


def test_the_cli_submits_a_local_video_and_shows_what_was_sent(stack: Stack, tmp_path: Path) -> None:
    target = tmp_path / "holiday.mov"  # the name says MOV; the content (MP4) decides
    target.write_bytes(clip(width=640, height=360))
    state = tmp_path / "stack.json"
    state.write_text(json.dumps(stack.local.info()))
    out = tmp_path / "out"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "faceswap_cli.main",
            "--local-state",
            str(state),
            "submit",
            "--target",
            str(target),
            "--swap",
            str(FACES / "biden.jpg"),
            "--provider",
            "selfhosted",
            "--wait",
            "--download",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr
    assert "video sent: 8 frames, 640x360, 1.0 s, with audio" in run.stderr
    assert "SUCCEEDED" in run.stderr
    (saved,) = out.iterdir()
    assert saved.suffix == ".mp4" and media.probe(str(saved)).has_audio


class MediaInvocations(Observer):
    """The media function's invocations, as they end."""

    def __init__(self) -> None:
        self.seen: list[Invocation] = []

    def invocation(self, invocation: Invocation) -> None:
        if invocation.function == "MediaFunction":
            self.seen.append(invocation)


def test_a_300_mb_result_is_kept_with_memory_flat(stack: Stack) -> None:
    assert stack.local.runtime is not None
    watcher = MediaInvocations()
    stack.local.runtime.observers.append(watcher)
    try:
        small = run(stack, "result-small", clip(), provider="piapi")
        assert small.state is JobState.SUCCEEDED, small.error
        before = max(i.max_rss_mb for i in watcher.seen)
        stack.piapi.faults.video_padding_bytes = 300 * 1024 * 1024
        big = run(stack, "result-300mb", clip(), provider="piapi")
    finally:
        stack.local.runtime.observers.remove(watcher)
    assert big.state is JobState.SUCCEEDED, big.error
    assert big.result is not None and big.result["size"] > 300 * 1024 * 1024
    head = stack.s3.head_object(Bucket=big.result["bucket"], Key=big.result["key"])
    assert head["ContentLength"] == big.result["size"]
    handled = [i for i in watcher.seen if big.job_id in json.dumps(i.event)]
    peak = max(i.max_rss_mb for i in handled)
    print(f"media function peak RSS: {before:.0f} MB after a small result, {peak:.0f} MB after the 300 MB one")
    # Six 8 MiB parts in flight and one being read: the 300 MB never sits in memory.
    assert peak < before + 80, (before, peak)
    assert stack.s3.list_multipart_uploads(Bucket=big.result["bucket"]).get("Uploads", []) == []


def test_a_face_map_on_a_video_swaps_the_person_in_the_reference_in_every_frame(stack: Stack, tmp_path: Path) -> None:
    pair = (FACES / "obama_and_biden_side_by_side.jpg").read_bytes()
    stack.upload("references/biden.jpg", BIDEN)
    stack.upload("faces/obama.jpg", OBAMA)
    key = "videos/face-map.mp4"
    stack.upload(key, clip(photo=pair, width=640, height=360))
    manifest = {
        "target_video": {"s3_key": key},
        "swap_image": {"s3_key": "faces/obama.jpg"},
        "reference": {"s3_key": "references/biden.jpg"},
        "provider": "selfhosted",
    }
    stack.upload("jobs/face-map-video.json", json.dumps(manifest).encode())
    job = stack.wait_for(key, timeout=VIDEO_JOB_SECONDS)
    assert job.state is JobState.SUCCEEDED, job.error
    (chosen,) = job.chosen_faces
    assert chosen["method"] == "native" and chosen["box"][0] > 320  # Biden, on the right of the first frame
    path, _ = kept(stack, job, tmp_path)
    for left, right in sides(path):
        assert right["obama"] < right["biden"]  # swapped
        assert left["obama"] < SAME_PERSON_THRESHOLD  # left as it was


def test_face_indices_choose_the_face_in_a_piapi_video_and_are_refused_where_the_video_task_takes_none(
    stack: Stack, tmp_path: Path
) -> None:
    pair = clip(photo=(FACES / "obama_and_biden_side_by_side.jpg").read_bytes(), width=640, height=360, audio=False)
    job = run(stack, "indices", pair, provider="piapi", options={"target_faces_index": "1"})  # Biden, on the right
    assert job.state is JobState.SUCCEEDED, job.error
    path, _ = kept(stack, job, tmp_path)
    for left, right in sides(path):
        assert right["obama"] < right["biden"]  # swapped
        assert left["obama"] < SAME_PERSON_THRESHOLD  # left as it was

    crun = stack.local.emulators["crun"]
    calls = len(crun.tasks)
    answer = post_job(stack, "videos/indices.mp4", provider="crun", options={"target_faces_index": "1"})
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == "provider_rejected" and "takes no option target_faces_index" in answer.text
    assert len(crun.tasks) == calls
