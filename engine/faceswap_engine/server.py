"""The self-hosted engine as an HTTP service with an async task API and webhooks (provider ``selfhosted``).

Contract (the pipeline's ``faceswap.providers.selfhosted`` adapter follows it):

- ``POST /v1/tasks`` with JSON ``{"task": "face-swap" | "multi-face-swap", "target_image": <base64>,
  "swap_image": <base64>, "swap_face_index": int (default 0), "target_face_indices": [int, ...] | null,
  "webhook": {"url": str, "secret": str} | null, "faces": [{"box": [left, top, right, bottom],
  "swap_image": <base64>}, ...] | null}`` → ``202 {"task_id": str, "status": "queued"}``. With ``faces`` (1 to 4, task
  ``face-swap``), each entry's swap face goes onto the target's face at its box (pixels of the target, e.g. from a face
  matcher) and every other face is left as it was; ``swap_image`` and the indices are then ignored.
  A malformed request → ``400 {"error": {"code": "invalid_request", "message": str}}``.
- ``GET /v1/tasks/{task_id}`` → ``200 {"task_id", "status": "queued" | "running" | "succeeded" | "failed",
  "result_url": str | null, "error": {"code", "message"} | null}``; unknown id → ``404``.
- Video: ``POST /v1/tasks`` with ``{"task": "face-swap", "target_video_url": str, "swap_image": <base64>,
  "swap_face_index": int, "target_face_indices": [int] | null, "webhook": …}`` instead of ``target_image`` (the
  indices count the first frame's faces left to right; each face named is followed): the engine downloads the video
  (at most :data:`MAX_VIDEO_BYTES`), swaps every frame (:func:`faceswap_engine.video.swap_video_file`: landmarks
  smoothed over time, frames without a face passed through, the audio copied) and serves an MP4. ``faces`` works as
  for images, its boxes in the first frame's pixels: each chosen face is followed through the video.
- ``GET /v1/results/{task_id}.jpg`` (``.mp4`` for a video) → the result (``image/jpeg``, ``video/mp4``); ``404`` once
  evicted.
- Webhook: when a task ends, ``POST`` to ``webhook.url`` with header ``x-webhook-secret: <secret>`` and JSON
  ``{"task_id", "status"}``. It is a trigger only; the pipeline reads the task for the truth.
- Bearer token: if the server has a ``token``, every ``/v1/tasks`` call needs ``Authorization: Bearer <token>``.

Failure codes in ``error.code``: ``no_face_detected``, ``face_index_out_of_range``, ``chosen_face_not_found``,
``pose_mismatch`` (the faces are turned too differently for a classical swap), ``invalid_image``.
Tasks and image results are kept in memory, video results as files in ``results_dir`` (streamed from there, never
read into memory whole), for the newest ``max_tasks`` tasks; run it behind a WSGI server for production.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from .errors import FaceSwapError, InvalidImage
from .swap import swap_chosen_faces_bytes, swap_image_bytes

logger = logging.getLogger(__name__)

TASKS = ("face-swap", "multi-face-swap")
MAX_REQUEST_BYTES = 64 * 1024 * 1024
MAX_FACES = 4
MAX_VIDEO_BYTES = 1024 * 1024 * 1024


@dataclass
class EngineTask:
    """One task as the server keeps it."""

    task_id: str
    task: str
    webhook_url: str | None
    webhook_secret: str | None
    status: str = "queued"
    result: bytes | None = None
    result_path: str | None = None
    error: dict[str, str] | None = None
    created: float = field(default_factory=time.time)
    webhook_deliveries: int = 0
    video: bool = False

    @property
    def done(self) -> bool:
        """Whether it has a result to serve."""
        return self.result is not None or self.result_path is not None


class EngineServer:
    """A WSGI application serving the contract above.

    Parameters
    ----------
    base_url
        The URL clients reach the server at; result URLs are built from it.
    workers
        Swaps run at once (each takes about 0.1-0.2 s on one core for 1-2 Mpx images).
    token
        Optional bearer token required on ``/v1/tasks`` calls.
    max_tasks
        Tasks (and results) kept; the oldest are evicted first, their result files removed.
    results_dir
        Where video results are kept as files (default: a new temporary directory, removed by :meth:`close`).
    """

    def __init__(
        self,
        *,
        base_url: str,
        workers: int = 2,
        token: str | None = None,
        max_tasks: int = 1000,
        results_dir: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.max_tasks = max_tasks
        self._own_results_dir = results_dir is None
        self.results_dir = results_dir or tempfile.mkdtemp(prefix="engine-results-")
        self.tasks: OrderedDict[str, EngineTask] = OrderedDict()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="engine")
        self._http = httpx.Client(timeout=httpx.Timeout(10.0, connect=3.0))

    def close(self) -> None:
        """Stop taking work and release the webhook client."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()
        if self._own_results_dir:
            shutil.rmtree(self.results_dir, ignore_errors=True)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        if path.startswith("/v1/results/"):
            task_id = path.removeprefix("/v1/results/").removesuffix(".jpg").removesuffix(".mp4")
            status, headers, body = self._result(task_id)
        elif not self._authorised(environ):
            status, headers, body = _json(401, {"error": {"code": "unauthorized", "message": "bad bearer token"}})
        elif method == "POST" and path == "/v1/tasks":
            status, headers, body = self._create(environ)
        elif method == "GET" and path.startswith("/v1/tasks/"):
            status, headers, body = self._get(path.removeprefix("/v1/tasks/"))
        else:
            status, headers, body = _json(404, {"error": {"code": "not_found", "message": "no such route"}})
        start_response(status, headers)
        return [body] if isinstance(body, bytes) else body

    def _authorised(self, environ: dict[str, Any]) -> bool:
        if not self.token:
            return True
        presented = environ.get("HTTP_AUTHORIZATION", "").removeprefix("Bearer ")
        return hmac.compare_digest(presented.encode(), self.token.encode())

    def _create(self, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            if length > MAX_REQUEST_BYTES:
                return _invalid(f"request body over {MAX_REQUEST_BYTES} bytes")
            body = json.loads(environ["wsgi.input"].read(length))
            task = body.get("task", "face-swap")
            video_url = body.get("target_video_url")
            if video_url is not None and not isinstance(video_url, str):
                raise TypeError("target_video_url")
            target = b"" if video_url else base64.b64decode(body["target_image"], validate=True)
            swap = base64.b64decode(body["swap_image"], validate=True)
            swap_index = int(body.get("swap_face_index") or 0)
            target_indices = body.get("target_face_indices")
            if target_indices is not None:
                target_indices = [int(i) for i in target_indices]
            webhook = body.get("webhook") or {}
            faces = [
                (_box(face["box"]), base64.b64decode(face["swap_image"], validate=True))
                for face in body.get("faces") or ()
            ]
            if len(faces) > MAX_FACES:
                return _invalid(f"at most {MAX_FACES} faces")
        except (ValueError, KeyError, TypeError, binascii.Error) as e:
            return _invalid(f"malformed request: {type(e).__name__}")
        if task not in TASKS:
            return _invalid(f"task must be one of {', '.join(TASKS)}")
        if video_url and task != "face-swap":
            return _invalid("a target video takes task face-swap")
        record = EngineTask(
            task_id=str(uuid.uuid4()),
            task=task,
            webhook_url=webhook.get("url"),
            webhook_secret=webhook.get("secret"),
            video=bool(video_url),
        )
        with self._lock:
            self.tasks[record.task_id] = record
            while len(self.tasks) > self.max_tasks:
                _, evicted = self.tasks.popitem(last=False)
                if evicted.result_path:
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(evicted.result_path)
        if video_url:
            self._pool.submit(self._run_video, record, video_url, swap, swap_index, target_indices, faces)
        else:
            self._pool.submit(self._run, record, target, swap, swap_index, target_indices, faces)
        return _json(202, {"task_id": record.task_id, "status": record.status})

    def _get(self, task_id: str) -> tuple[str, list[tuple[str, str]], bytes]:
        record = self.tasks.get(task_id)
        if record is None:
            return _json(404, {"error": {"code": "not_found", "message": "no such task"}})
        return _json(200, self.describe(record))

    def _result(self, task_id: str) -> tuple[str, list[tuple[str, str]], bytes | Iterable[bytes]]:
        record = self.tasks.get(task_id)
        if record is None or not record.done:
            return "404 Not Found", [("Content-Type", "text/plain")], b"not found"
        if record.result_path is not None:
            try:
                f = open(record.result_path, "rb")  # noqa: SIM115 (closed by the stream, or below)
            except FileNotFoundError:  # evicted meanwhile
                return "404 Not Found", [("Content-Type", "text/plain")], b"not found"
            size = os.fstat(f.fileno()).st_size
            return "200 OK", [("Content-Type", "video/mp4"), ("Content-Length", str(size))], _chunks(f)
        assert record.result is not None
        content_type = "video/mp4" if record.video else "image/jpeg"
        return "200 OK", [("Content-Type", content_type), ("Content-Length", str(len(record.result)))], record.result

    def describe(self, record: EngineTask) -> dict[str, Any]:
        """A task as ``GET /v1/tasks/{id}`` returns it."""
        suffix = "mp4" if record.video else "jpg"
        result_url = f"{self.base_url}/v1/results/{record.task_id}.{suffix}" if record.done else None
        return {"task_id": record.task_id, "status": record.status, "result_url": result_url, "error": record.error}

    def _run(
        self,
        record: EngineTask,
        target: bytes,
        swap: bytes,
        swap_index: int,
        target_indices: list[int] | None,
        faces: list[tuple[tuple[int, int, int, int], bytes]],
    ) -> None:

        def work() -> None:
            record.result = (
                swap_chosen_faces_bytes(target, faces, format="JPEG")
                if faces
                else swap_image_bytes(
                    target, swap, swap_face_index=swap_index, target_face_indices=target_indices, format="JPEG"
                )
            )

        self._complete(record, work)

    def _run_video(
        self,
        record: EngineTask,
        url: str,
        swap: bytes,
        swap_index: int,
        target_indices: list[int] | None,
        faces: list[tuple[tuple[int, int, int, int], bytes]],
    ) -> None:
        from .video import swap_video_file  # PyAV: loaded with the first video task

        def work() -> None:
            with tempfile.TemporaryDirectory(prefix="engine-video-") as workdir:
                source, out = os.path.join(workdir, "target"), os.path.join(workdir, "result.mp4")
                self._download(url, source)
                swap_video_file(
                    source,
                    swap,
                    out,
                    swap_face_index=swap_index,
                    target_face_indices=target_indices,
                    faces=faces or None,
                )
                kept = os.path.join(self.results_dir, f"{record.task_id}.mp4")
                shutil.move(out, kept)
                record.result_path = kept

        self._complete(record, work)

    def _complete(self, record: EngineTask, work: Callable[[], None]) -> None:
        """Run a task's ``work`` (which sets its result): the task ends succeeded, or failed with the engine's code
        (``engine_error`` for an unexpected exception: an engine bug must still end the task, visibly); then its
        webhook is sent."""
        record.status = "running"
        try:
            work()
            record.status = "succeeded"
        except FaceSwapError as e:
            record.error = {"code": e.code, "message": str(e)}
            record.status = "failed"
        except Exception:
            logger.exception("swap failed")
            record.error = {"code": "engine_error", "message": "the engine failed unexpectedly"}
            record.status = "failed"
        self._notify(record)

    def _download(self, url: str, path: str) -> None:
        """Stream the target video at ``url`` into ``path`` (at most :data:`MAX_VIDEO_BYTES`); ``InvalidImage`` when
        it is over that or cannot be downloaded."""
        size = 0
        try:
            with (
                self._http.stream("GET", url, timeout=httpx.Timeout(60.0, connect=5.0)) as response,
                open(path, "wb") as f,
            ):
                response.raise_for_status()
                for chunk in response.iter_bytes(1024 * 1024):
                    size += len(chunk)
                    if size > MAX_VIDEO_BYTES:
                        raise InvalidImage(f"the target video is over {MAX_VIDEO_BYTES} bytes", image="target")
                    f.write(chunk)
        except httpx.HTTPError as e:
            raise InvalidImage(f"the target video could not be downloaded: {e}", image="target") from e

    def _notify(self, record: EngineTask) -> None:
        if not record.webhook_url:
            return
        headers = {"x-webhook-secret": record.webhook_secret} if record.webhook_secret else {}
        try:
            self._http.post(
                record.webhook_url, json={"task_id": record.task_id, "status": record.status}, headers=headers
            )
            record.webhook_deliveries += 1
        except httpx.HTTPError:
            logger.warning("webhook delivery failed for task %s", record.task_id)


def _chunks(f: Any, size: int = 1024 * 1024) -> Iterator[bytes]:
    """The contents of the open file ``f`` in chunks of ``size`` bytes; closes it."""
    with f:
        while chunk := f.read(size):
            yield chunk


def _json(code: int, body: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    reasons = {200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}
    data = json.dumps(body).encode()
    return f"{code} {reasons[code]}", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))], data


def _box(value: Any) -> tuple[int, int, int, int]:
    """A ``[left, top, right, bottom]`` list of whole pixels as a tuple (``ValueError`` otherwise)."""
    left, top, right, bottom = (int(v) for v in value)
    if right <= left or bottom <= top:
        raise ValueError("empty box")
    return left, top, right, bottom


def _invalid(message: str) -> tuple[str, list[tuple[str, str]], bytes]:
    return _json(400, {"error": {"code": "invalid_request", "message": message}})
