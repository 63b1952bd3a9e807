"""The self-hosted engine's provider adapter (MockTransport) and its HTTP service (WSGI, in process)."""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from faceswap.errors import (
    InvalidImage,
    NoFaceDetected,
    PoseMismatch,
    ProviderRejected,
    ProviderUnavailable,
    SubmitOutcomeUnknown,
)
from faceswap.images import PreparedImage
from faceswap.model import TaskStatus
from faceswap.ports import TaskInput, Webhook
from faceswap.providers.selfhosted import SelfhostedProvider
from faceswap_engine.server import EngineServer
from faceswap_local.clips import make_clip

FACES = Path(__file__).resolve().parents[2].parent / "shared" / "faces"


def task(**options: str) -> TaskInput:
    image = PreparedImage(b"\xff\xd8\xffjpeg", "image/jpeg", 10, 10)
    return TaskInput(
        job_id="a" * 32,
        task="multi-face-swap" if options else "face-swap",
        target_image=image,
        swap_image=image,
        options=options,
    )


def provider(handler: Any) -> SelfhostedProvider:
    return SelfhostedProvider(
        httpx.Client(transport=httpx.MockTransport(handler)),
        base_url="https://engine.local",
        result_hosts=("engine.local",),
    )


def test_create_sends_the_contract_body_and_returns_the_task_id() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json={"task_id": "t-1", "status": "queued"})

    task_id = provider(handler).create_task(
        task(swap_faces_index="0", target_faces_index="1,0"), Webhook("https://api/callbacks/selfhosted/x", "s3cret")
    )

    body = json.loads(seen[0].content)
    assert task_id == "t-1"
    assert seen[0].url == "https://engine.local/v1/tasks"
    assert body["task"] == "multi-face-swap"
    assert base64.b64decode(body["target_image"]) == b"\xff\xd8\xffjpeg"
    assert body["swap_face_index"] == 0 and body["target_face_indices"] == [1, 0]
    assert body["webhook"] == {"url": "https://api/callbacks/selfhosted/x", "secret": "s3cret"}


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (httpx.Response(503), ProviderUnavailable),
        (httpx.Response(400), ProviderRejected),
        (httpx.Response(202, json={}), SubmitOutcomeUnknown),
    ],
)
def test_create_classifies_answers(answer: httpx.Response, error: type[Exception]) -> None:
    with pytest.raises(error):
        provider(lambda request: answer).create_task(task(), None)


def test_create_that_times_out_has_an_unknown_outcome() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(SubmitOutcomeUnknown):
        provider(handler).create_task(task(), None)


@pytest.mark.parametrize(
    ("error", "expected"),
    [("no_face_detected", NoFaceDetected), ("invalid_image", InvalidImage), ("pose_mismatch", PoseMismatch)],
)
def test_failed_task_maps_engine_codes(error: str, expected: type[Exception]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "task_id": "t",
                "status": "failed",
                "result_url": None,
                "error": {"code": error, "message": "no face detected in the target image"},
            },
        )

    snapshot = provider(handler).get_task("t")
    assert snapshot.status is TaskStatus.FAILED and isinstance(snapshot.error, expected)
    if expected is PoseMismatch:  # another provider may manage it: a job with fallback providers fails over
        assert snapshot.error.code == "pose_mismatch" and snapshot.error.retryable


def test_succeeded_task_gives_its_result_url() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "task_id": "t",
                "status": "SUCCEEDED",
                "result_url": "https://engine.local/v1/results/t.jpg",
                "error": None,
            },
        )

    snapshot = provider(handler).get_task("t")
    assert snapshot.status is TaskStatus.SUCCEEDED and snapshot.result_url == "https://engine.local/v1/results/t.jpg"


def _call(app: EngineServer, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    status: list[str] = []
    chunks = app(environ, lambda s, headers: status.append(s))
    return int(status[0].split()[0]), b"".join(chunks)


def _ended(app: EngineServer, task_id: str, *, seconds: float) -> dict[str, Any]:
    """The task as ``GET /v1/tasks/{id}`` describes it once it has ended (or after ``seconds``)."""
    deadline = time.monotonic() + seconds
    while True:
        state: dict[str, Any] = json.loads(_call(app, "GET", f"/v1/tasks/{task_id}")[1])
        if state["status"] in ("succeeded", "failed") or time.monotonic() > deadline:
            return state
        time.sleep(0.1)


def test_engine_server_runs_a_task_to_a_result() -> None:
    app = EngineServer(base_url="http://engine.test", workers=1)
    try:
        face = base64.b64encode((FACES / "obama.jpg").read_bytes()).decode()
        target = base64.b64encode((FACES / "biden.jpg").read_bytes()).decode()
        status, body = _call(
            app, "POST", "/v1/tasks", json.dumps({"target_image": target, "swap_image": face}).encode()
        )
        assert status == 202
        task_id = json.loads(body)["task_id"]
        state = _ended(app, task_id, seconds=10)
        assert state["status"] == "succeeded", state
        assert state["result_url"] == f"http://engine.test/v1/results/{task_id}.jpg"
        status, image = _call(app, "GET", f"/v1/results/{task_id}.jpg")
        assert status == 200 and Image.open(io.BytesIO(image)).size == (970, 2204)
    finally:
        app.close()


def test_engine_server_keeps_a_video_result_as_a_file_and_removes_it_when_evicted(tmp_path: Path) -> None:
    clip = make_clip(
        tmp_path / "clip.mp4",
        photo=(FACES / "biden.jpg").read_bytes(),
        width=160,
        height=208,
        fps=10,
        seconds=0.3,
        audio=False,
    ).read_bytes()
    results = tmp_path / "results"
    results.mkdir()
    app = EngineServer(base_url="http://engine.test", workers=1, max_tasks=1, results_dir=str(results))
    app._http = httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(200, content=clip)))
    try:
        face = base64.b64encode((FACES / "obama.jpg").read_bytes()).decode()
        request = {"target_video_url": "http://videos.test/clip.mp4", "swap_image": face}
        task_id = json.loads(_call(app, "POST", "/v1/tasks", json.dumps(request).encode())[1])["task_id"]
        state = _ended(app, task_id, seconds=30)
        assert state["status"] == "succeeded", state
        assert state["result_url"] == f"http://engine.test/v1/results/{task_id}.mp4"
        kept = results / f"{task_id}.mp4"
        assert app.tasks[task_id].result is None  # not held in memory
        status, video = _call(app, "GET", f"/v1/results/{task_id}.mp4")
        assert status == 200 and video == kept.read_bytes() and video[4:8] == b"ftyp"

        _call(app, "POST", "/v1/tasks", json.dumps(request).encode())  # max_tasks=1: the first task is evicted

        assert not kept.exists()
        assert _call(app, "GET", f"/v1/results/{task_id}.mp4")[0] == 404
    finally:
        app.close()


def test_engine_server_refuses_malformed_requests() -> None:
    app = EngineServer(base_url="http://engine.test", workers=1)
    try:
        status, body = _call(app, "POST", "/v1/tasks", b'{"target_image": "not base64!!"}')
        assert status == 400 and json.loads(body)["error"]["code"] == "invalid_request"
        assert _call(app, "GET", "/v1/tasks/nope")[0] == 404
    finally:
        app.close()


def test_engine_server_requires_its_token_when_set() -> None:
    app = EngineServer(base_url="http://engine.test", workers=1, token="t0ken")
    try:
        assert _call(app, "GET", "/v1/tasks/x")[0] == 401
    finally:
        app.close()
