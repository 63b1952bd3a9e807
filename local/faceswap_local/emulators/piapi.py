"""PiAPI emulator: the unified task API of ``providers.md`` §1, on loopback, with fault injection.

- ``POST /api/v1/task`` (``x-api-key``): ``{model, task_type, input: {target_image, swap_image, …}, config:
  {webhook_config: {endpoint, secret}}}`` → ``{"code": 200, "data": {"task_id", "status": "pending", …},
  "message": "success"}``. Images are base64 or URLs; each must be under 2048x2048 (else 400).
- ``GET /api/v1/task/{task_id}`` → ``{"code": 200, "data": {…, "status": "completed", "output": {"image_url"}}}``.
- Webhook: ``POST`` to the endpoint with ``x-webhook-secret`` and ``{"timestamp", "data"}`` when the task ends.
- ``GET /results/{task_id}.png``: the result image (the "short-lived" URL).
- Video (``providers.md`` §7): model ``Qubico/video-toolkit``, ``input: {swap_image, target_video (URL),
  swap_faces_index?, target_faces_index?}`` (the target's faces counted in the first frame); the video
  must be an MP4 of at most 600 frames, 720p and 10 MB (else 400), is swapped frame by frame with the engine
  (:func:`faceswap_engine.video.swap_video_file`) and served at ``GET /results/{task_id}.mp4``
  (``output.video_url``). :attr:`Faults.video_without_audio` serves it without its audio track.

The swap itself is done by ``swap_fn`` (the self-hosted engine when available). :class:`Faults` injects
failures, either by count (the next N calls) or at random rates drawn from a seeded RNG (``make stress``).
:attr:`PiAPIEmulator.tasks` records every task created (with the sha256 of every result it served), and
:attr:`PiAPIEmulator.injected` every fault that fired, for tests and the stress run to count.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import random
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from PIL import Image
from werkzeug.wrappers import Request, Response

from faceswap_local.emulators.server import EmulatorServer

logger = logging.getLogger("faceswap_local.piapi")

SwapFn = Callable[[bytes, bytes, dict[str, Any]], bytes]


@dataclass
class Faults:
    """Failures to inject. Counters count down as they fire; rates are drawn per call or per task.

    Counters and fixed modes (``create_errors``, ``webhook``, ``result_expired``…) apply first; the rates apply
    on top, each decision drawn from :attr:`rng` (seeded with ``seed``, so a run's faults are reproducible as far
    as the order of concurrent calls allows). Every fault that fires is recorded in
    :attr:`PiAPIEmulator.injected`.

    Attributes
    ----------
    create_errors
        Next N creates answer 500 (no task created).
    get_errors
        Next N get-task calls answer 500.
    webhook
        ``"normal"`` (one delivery), ``"none"`` (lost), ``"duplicate"`` (``webhook_copies`` deliveries, one after
        another) or ``"concurrent"`` (``webhook_copies`` deliveries sent at the same moment).
    result_url
        Serve this result URL instead of the emulator's own (e.g. a private address).
    result_bytes
        Serve this many bytes of PNG-looking data as the result instead of the swap (size-cap tests).
    result_expired
        The result URL answers 404.
    fail_task
        Tasks end ``failed`` with this message.
    processing_seconds
        Time a task spends processing before it completes.
    create_error_rate
        Fraction (0-1) of creates that answer 500 (no task created).
    webhook_lost_rate
        Fraction of tasks whose webhook is never sent (drawn when the task is created).
    webhook_duplicate_rate
        Fraction of tasks whose webhook is sent twice.
    result_expired_rate
        Fraction of tasks whose result URL answers 404 or 410 (at random) whenever it is fetched.
    slow_rate
        Fraction of API calls (create, get-task; not result downloads) answered after a delay.
    slow_range_seconds
        ``(shortest, longest)`` delay of a slow call, in seconds (uniform).
    video_without_audio
        Video results are served without their audio track (PiAPI does not document keeping it).
    video_padding_bytes
        Video results are served this much bigger: a ``free`` box of zeros after the movie (still a valid MP4, which
        players skip), streamed, for tests of large results.
    seed
        Seeds :attr:`rng` (``None``: from the OS).
    """

    create_errors: int = 0
    get_errors: int = 0
    webhook: str = "normal"
    webhook_copies: int = 1
    result_url: str | None = None
    result_bytes: int | None = None
    result_expired: bool = False
    fail_task: str | None = None
    processing_seconds: float = 0.2
    create_error_rate: float = 0.0
    webhook_lost_rate: float = 0.0
    webhook_duplicate_rate: float = 0.0
    result_expired_rate: float = 0.0
    slow_rate: float = 0.0
    slow_range_seconds: tuple[float, float] = (0.2, 1.0)
    video_without_audio: bool = False
    video_padding_bytes: int = 0
    seed: int | None = None
    rng: random.Random = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def draw(self, rate: float) -> bool:
        """Whether a fault with probability ``rate`` fires this time (no draw is made for a zero rate)."""
        return rate > 0 and self.rng.random() < rate


@dataclass(frozen=True)
class Injected:
    """One fault that fired: ``kind`` (``create_error``, ``get_error``, ``slow_response``, ``webhook_lost``,
    ``webhook_duplicate``, ``result_expired``), the task and job it hit when known, and when (epoch seconds)."""

    kind: str
    task_id: str | None
    job_id: str | None
    at: float


@dataclass
class Task:
    """One emulated task, as recorded."""

    task_id: str
    task_type: str
    webhook_endpoint: str | None
    webhook_secret: str | None
    image_sizes: dict[str, tuple[int, int]]
    status: str = "pending"
    result: bytes | None = None
    error: dict[str, Any] = field(default_factory=lambda: {"code": 0, "raw_message": "", "message": "", "detail": None})
    webhook_deliveries: int = 0
    webhook_answers: list[int] = field(default_factory=list)
    gets: int = 0
    webhook_fate: str = "normal"
    result_expired: bool = False
    result_sha256: str | None = None
    served_sha256: list[str] = field(default_factory=list)
    expired_answers: int = 0
    webhook_failures: int = 0
    video: dict[str, Any] | None = None
    """A video task's input as received: ``bytes``, ``frames``, ``width``, ``height``, ``audio``."""

    @property
    def job_id(self) -> str | None:
        """The job the task belongs to: the last segment of its webhook endpoint's path (``None`` without one)."""
        return job_id_of(self.webhook_endpoint)


def job_id_of(endpoint: str | None) -> str | None:
    """The job id a webhook endpoint ``…/callbacks/<provider>/<job_id>`` names, or ``None``."""
    if not endpoint:
        return None
    return endpoint.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or None


def placeholder_swap(target: bytes, swap: bytes, options: dict[str, Any]) -> bytes:
    """A stand-in result: the target with the swap image pasted over its centre third, as PNG."""
    base = Image.open(io.BytesIO(target)).convert("RGB")
    face = Image.open(io.BytesIO(swap)).convert("RGB")
    face.thumbnail((max(1, base.width // 3), max(1, base.height // 3)))
    base.paste(face, ((base.width - face.width) // 2, (base.height - face.height) // 2))
    out = io.BytesIO()
    base.save(out, format="PNG")
    return out.getvalue()


class PiAPIEmulator(EmulatorServer):
    """The emulator server, standing in for ``https://api.piapi.ai``.

    ``api_key`` is the key it accepts; ``swap_fn`` makes results.
    """

    MAX_SIDE = 2048

    def __init__(self, *, api_key: str, swap_fn: SwapFn = placeholder_swap, port: int | None = None) -> None:
        super().__init__(name="piapi", port=port)
        self.api_key = api_key
        self.swap_fn = swap_fn
        self.faults = Faults()
        self.tasks: dict[str, Task] = {}
        self.create_calls = 0
        #: arrival times (epoch seconds) of every API request (result downloads excluded)
        self.request_times: list[float] = []
        #: every fault that fired, in order
        self.injected: list[Injected] = []
        self._http = httpx.Client(timeout=httpx.Timeout(10.0))

    def stop(self) -> None:
        """Stop serving (and close the client that fetches images and sends webhooks)."""
        super().stop()
        self._http.close()

    def tasks_for_job(self, job_id: str) -> list[Task]:
        """Tasks whose webhook endpoint names ``job_id``."""
        return [t for t in self.tasks.values() if t.webhook_endpoint and t.webhook_endpoint.endswith("/" + job_id)]

    def _record(self, kind: str, *, task_id: str | None = None, job_id: str | None = None) -> None:
        with self._lock:
            self.injected.append(Injected(kind, task_id, job_id, time.time()))

    # ---------------------------------------------------------------------------------------------- HTTP

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        path = request.path
        if path.startswith("/results/"):
            response = self._result(path[len("/results/") :].removesuffix(".png").removesuffix(".mp4"))
            return response(environ, start_response)
        self.request_times.append(time.time())
        if self.faults.draw(self.faults.slow_rate):
            self._record("slow_response")
            time.sleep(self.faults.rng.uniform(*self.faults.slow_range_seconds))
        if request.headers.get("x-api-key") != self.api_key:
            response = _json(401, {"code": 401, "data": None, "message": "Invalid API key"})
        elif request.method == "POST" and path == "/api/v1/task":
            response = self._create(request)
        elif request.method == "GET" and path.startswith("/api/v1/task/"):
            response = self._get(path[len("/api/v1/task/") :])
        else:
            response = _json(404, {"code": 404, "data": None, "message": "not found"})
        return response(environ, start_response)

    def _create(self, request: Request) -> Response:
        with self._lock:
            self.create_calls += 1
            counted_error = self.faults.create_errors > 0
            if counted_error:
                self.faults.create_errors -= 1
        if counted_error:
            self._record("create_error")
            return _json(500, {"code": 500, "data": None, "message": "internal error"})
        try:
            body = json.loads(request.get_data())
            task_type = body["task_type"]
            inputs = body["input"]
            webhook = (body.get("config") or {}).get("webhook_config") or {}
            if self.faults.draw(self.faults.create_error_rate):
                self._record("create_error", job_id=job_id_of(webhook.get("endpoint")))
                return _json(500, {"code": 500, "data": None, "message": "internal error"})
            if body.get("model") == "Qubico/video-toolkit":
                return self._create_video(task_type, inputs, webhook)
            target, swap = self._image(inputs["target_image"]), self._image(inputs["swap_image"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return _json(400, {"code": 400, "data": None, "message": "invalid request body"})
        if body.get("model") != "Qubico/image-toolkit" or task_type not in ("face-swap", "multi-face-swap"):
            return _json(400, {"code": 400, "data": None, "message": "unsupported model or task_type"})
        sizes: dict[str, tuple[int, int]] = {}
        for name, data in (("target_image", target), ("swap_image", swap)):
            try:
                sizes[name] = Image.open(io.BytesIO(data)).size
            except OSError:
                return _json(400, {"code": 400, "data": None, "message": f"failed to get valid image ({name})"})
            if max(sizes[name]) > self.MAX_SIDE:
                return _json(400, {"code": 400, "data": None, "message": f"{name} exceeds 2048x2048"})
        lost, duplicate = self.faults.webhook_lost_rate, self.faults.webhook_duplicate_rate
        roll = self.faults.rng.random() if lost + duplicate > 0 else 1.0
        fate = "lost" if roll < lost else "duplicate" if roll < lost + duplicate else "normal"
        task = Task(
            task_id=str(uuid.uuid4()),
            task_type=task_type,
            webhook_endpoint=webhook.get("endpoint"),
            webhook_secret=webhook.get("secret"),
            image_sizes=sizes,
            webhook_fate=fate,
            result_expired=self.faults.draw(self.faults.result_expired_rate),
        )
        with self._lock:
            self.tasks[task.task_id] = task
        options = {k: inputs[k] for k in ("swap_faces_index", "target_faces_index") if k in inputs}
        threading.Thread(target=self._process, args=(task, target, swap, options), daemon=True).start()
        return _json(200, {"code": 200, "data": self._task_data(task), "message": "success"})

    def _create_video(self, task_type: str, inputs: dict[str, Any], webhook: dict[str, Any]) -> Response:
        """A video face swap: the video by URL, checked against PiAPI's limits, swapped in the background."""
        import av  # the local stack's environment has PyAV

        if task_type != "face-swap" or not str(inputs.get("target_video", "")).startswith(("http://", "https://")):
            return _json(400, {"code": 400, "data": None, "message": "target_video must be a URL (task face-swap)"})
        swap = self._image(inputs["swap_image"])
        workdir = tempfile.mkdtemp(prefix="piapi-video-")
        source = os.path.join(workdir, "target.mp4")
        with open(source, "wb") as f:
            f.write(self._http.get(inputs["target_video"]).raise_for_status().content)
        size = os.path.getsize(source)
        try:
            with open(source, "rb") as f:
                if f.read(8)[4:8] != b"ftyp":
                    raise ValueError("not an MP4")
            with av.open(source) as container:
                stream = container.streams.video[0]
                frames = sum(1 for packet in container.demux(stream) if packet.size)
                width, height = stream.codec_context.width, stream.codec_context.height
                audio = bool(container.streams.audio)
        except (ValueError, IndexError, av.FFmpegError):
            return _json(400, {"code": 400, "data": None, "message": "failed to read target_video: standard MP4 only"})
        if frames > 600 or min(width, height) > 720 or max(width, height) > 1280 or size > 10 * 1024 * 1024:
            message = f"target_video over the limits (600 frames, 720p, 10MB): {frames} frames, {width}x{height}"
            return _json(400, {"code": 400, "data": None, "message": message})
        task = Task(
            task_id=str(uuid.uuid4()),
            task_type=task_type,
            webhook_endpoint=webhook.get("endpoint"),
            webhook_secret=webhook.get("secret"),
            image_sizes={"swap_image": Image.open(io.BytesIO(swap)).size},
            result_expired=self.faults.result_expired,
            video={"bytes": size, "frames": frames, "width": width, "height": height, "audio": audio},
        )
        with self._lock:
            self.tasks[task.task_id] = task
        options = {k: inputs[k] for k in ("swap_faces_index", "target_faces_index") if k in inputs}
        threading.Thread(target=self._process_video, args=(task, source, swap, workdir, options), daemon=True).start()
        return _json(200, {"code": 200, "data": self._task_data(task), "message": "success"})

    def _process_video(self, task: Task, source: str, swap: bytes, workdir: str, options: dict[str, Any]) -> None:
        from faceswap_engine.errors import FaceSwapError
        from faceswap_engine.video import swap_video_file
        from faceswap_local.engine_service import face_indices

        task.status = "processing"
        time.sleep(self.faults.processing_seconds)
        out = os.path.join(workdir, "result.mp4")
        try:
            swap_video_file(source, swap, out, **face_indices(options))
            if self.faults.video_without_audio:
                out = _without_audio(out, os.path.join(workdir, "silent.mp4"))
            with open(out, "rb") as f:
                task.result = f.read()
            task.result_sha256 = hashlib.sha256(task.result).hexdigest()
            task.status = "completed"
        except FaceSwapError as e:
            task.error = {"code": 10000, "raw_message": str(e), "message": str(e), "detail": None}
            task.status = "failed"
        finally:
            for name in os.listdir(workdir):
                os.remove(os.path.join(workdir, name))
            os.rmdir(workdir)
        self._send_webhooks(task)

    def _get(self, task_id: str) -> Response:
        with self._lock:
            counted_error = self.faults.get_errors > 0
            if counted_error:
                self.faults.get_errors -= 1
            task = self.tasks.get(task_id)
            if task is not None and not counted_error:
                task.gets += 1
        if counted_error:
            self._record("get_error", task_id=task_id, job_id=task.job_id if task else None)
            return _json(500, {"code": 500, "data": None, "message": "internal error"})
        if task is None:
            return _json(404, {"code": 404, "data": None, "message": "task not found"})
        return _json(200, {"code": 200, "data": self._task_data(task), "message": "success"})

    def _result(self, task_id: str) -> Response:
        task = self.tasks.get(task_id)
        if task is None or task.result is None or self.faults.result_expired:
            return Response(b"not found", status=404, content_type="text/plain")
        if task.result_expired:
            with self._lock:
                task.expired_answers += 1
                first = task.expired_answers == 1
            if first:
                self._record("result_expired", task_id=task.task_id, job_id=task.job_id)
            status = self.faults.rng.choice((404, 410))
            return Response(b"not found" if status == 404 else b"gone", status=status, content_type="text/plain")
        if self.faults.result_bytes is not None:
            body = b"\x89PNG\r\n\x1a\n" + b"\0" * (self.faults.result_bytes - 8)
            digest = hashlib.sha256(body).hexdigest()
        else:
            body, digest = task.result, task.result_sha256 or hashlib.sha256(task.result).hexdigest()
        with self._lock:
            task.served_sha256.append(digest)
        padding = self.faults.video_padding_bytes if task.video else 0
        if padding:
            response = Response(_padded(body, padding), content_type="video/mp4", direct_passthrough=True)
            response.headers["Content-Length"] = str(len(body) + padding)
            return response
        return Response(body, content_type="video/mp4" if task.video else "image/png")

    # ------------------------------------------------------------------------------------------ processing

    def _image(self, value: str) -> bytes:
        if value.startswith(("http://", "https://")):
            return self._http.get(value).raise_for_status().content
        return base64.b64decode(value, validate=True)

    def _process(self, task: Task, target: bytes, swap: bytes, options: dict[str, Any]) -> None:
        task.status = "processing"
        time.sleep(self.faults.processing_seconds)
        if self.faults.fail_task:
            task.error = {
                "code": 10000,
                "raw_message": self.faults.fail_task,
                "message": self.faults.fail_task,
                "detail": None,
            }
            task.status = "failed"
        else:
            try:
                result = self.swap_fn(target, swap, options)
                task.result_sha256 = hashlib.sha256(result).hexdigest()
                task.result = result
                task.status = "completed"
            except Exception as e:  # the engine's error becomes the task's failure, as PiAPI reports it
                message = getattr(e, "message", None) or str(e)
                task.error = {"code": 10000, "raw_message": message, "message": message, "detail": None}
                task.status = "failed"
        self._send_webhooks(task)

    def _send_webhooks(self, task: Task) -> None:
        if not task.webhook_endpoint or self.faults.webhook == "none":
            return
        if task.webhook_fate == "lost":
            self._record("webhook_lost", task_id=task.task_id, job_id=task.job_id)
            return
        copies = 1
        if self.faults.webhook in ("duplicate", "concurrent"):
            copies = self.faults.webhook_copies
        elif task.webhook_fate == "duplicate":
            copies = 2
            self._record("webhook_duplicate", task_id=task.task_id, job_id=task.job_id)
        headers = {"x-webhook-secret": task.webhook_secret} if task.webhook_secret else {}
        body = {"timestamp": int(time.time()), "data": self._task_data(task)}
        endpoint = task.webhook_endpoint

        def deliver(start: threading.Barrier | None = None) -> None:
            if start is not None:
                start.wait()
            try:
                answer = self._http.post(endpoint, json=body, headers=headers)
                with self._lock:
                    task.webhook_deliveries += 1
                    task.webhook_answers.append(answer.status_code)
            except httpx.HTTPError as e:
                with self._lock:
                    task.webhook_failures += 1
                logger.warning("webhook delivery failed for task %s: %s", task.task_id, type(e).__name__)

        if self.faults.webhook == "concurrent":
            start = threading.Barrier(copies)
            senders = [threading.Thread(target=deliver, args=(start,), daemon=True) for _ in range(copies)]
            for sender in senders:
                sender.start()
            for sender in senders:
                sender.join()
            return
        for _ in range(copies):
            deliver()

    def _task_data(self, task: Task) -> dict[str, Any]:
        output = None
        if task.status == "completed" and task.video:
            output = {"video_url": self.faults.result_url or f"{self.url}/results/{task.task_id}.mp4"}
        elif task.status == "completed":
            output = {"image_url": self.faults.result_url or f"{self.url}/results/{task.task_id}.png"}
        return {
            "task_id": task.task_id,
            "model": "Qubico/video-toolkit" if task.video else "Qubico/image-toolkit",
            "task_type": task.task_type,
            "status": task.status,
            "config": {
                "service_mode": "public",
                "webhook_config": {"endpoint": task.webhook_endpoint or "", "secret": task.webhook_secret or ""},
            },
            "input": {},
            "output": output,
            "meta": {},
            "detail": None,
            "logs": [],
            "error": task.error,
        }


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


def _without_audio(path: str, out_path: str) -> str:
    """A copy of the MP4 at ``path`` with only its video stream (stream copy), at ``out_path``."""
    import av

    with av.open(path) as source, av.open(out_path, "w", format="mp4") as out:
        video_in = source.streams.video[0]
        video = out.add_stream_from_template(video_in)
        for packet in source.demux(video_in):
            if packet.size:
                packet.stream = video
                out.mux(packet)
    return out_path


def _padded(body: bytes, padding: int, chunk: int = 1024 * 1024) -> Iterator[bytes]:
    """``body`` then a ``free`` box of ``padding`` bytes (header included, at least 8), in chunks."""
    yield body
    yield padding.to_bytes(4, "big") + b"free"
    left = padding - 8
    zeros = bytes(chunk)
    while left > 0:
        yield zeros[: min(chunk, left)]
        left -= chunk
