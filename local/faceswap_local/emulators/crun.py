"""CRUN emulator: the job API of ``providers.md`` §3 (face swap, multi-face swap, detection), with fault injection.

- ``POST /api/v1/client/job/CreateTask`` (``x-api-key``), JSON ``{model, callback_url, input}``:
  ``image-face-swap`` takes ``input = {image_url, new_face, disable_safety_checker}``; ``image-face-swap-multi``
  takes ``{detect_id, image_url (the detection's URL), faces: [{face_id, target}], disable_safety_checker}``.
  Answer ``{"code": 200, "message": "success", "data": {"task_id"}}``. Images are URLs only; the emulator
  fetches them (http on loopback is fine).
- ``GET /api/v1/client/job/TaskInfo?task_id=`` → ``{"code": 200, "message": "success", "data": {task_id,
  provider, model_version, status, param: {model, callback_url, input}, create_at, result, duration_s,
  complete_at, source: "api", credits}}``; ``status`` pending → running → success | failed; ``result`` is
  ``{"media_urls": [url]}`` on success and ``{"code", "message"}`` on failure.
- ``POST /api/v1/client/job/detect-face-image {image_url}`` → ``data.detect_task_id``;
  ``GET /api/v1/client/job/detect-face-result?detect_task_id=`` → ``data.status`` starting → processing →
  succeeded | failed, ``data.result = {id: detect_id, faces: [{id, link}]}``. Faces are found by ``detect_fn``
  (the engine's detector by default), numbered left to right; a ``detect_id`` expires after 1 hour.
- Callback: ``POST`` to ``callback_url`` (the URL as given, its query string included) when a task ends, with
  the TaskInfo ``data`` object as the body. The body and retries are UNKNOWN at CRUN; this is the inference.
- Errors: the HTTP status and the body ``code`` agree (or, with ``Faults.errors_in_body``, HTTP 200 and the code
  only in the body): 401, 402 (credits), 404, 422, 429, 455, 500, 501, 505.
- ``GET /results/{task_id}.png``: the result image; ``GET /faces/{detect_id}/{n}.png``: a detected face.
- ``video-face-swap`` takes ``input = {video_url, new_face}`` (key names ASSUMED, providers.md §7): the video is
  swapped frame by frame with the engine and served at ``GET /results/{task_id}.mp4``.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from PIL import Image, ImageOps
from werkzeug.wrappers import Request, Response

from faceswap_local.emulators.piapi import SwapFn, placeholder_swap
from faceswap_local.emulators.server import RecordingEmulatorServer

logger = logging.getLogger("faceswap_local.crun")

API_KEY_HEADER = "x-api-key"
JOB_API = "/api/v1/client/job"
DETECT_TTL_SECONDS = 3600.0

DetectFn = Callable[[bytes], list[tuple[int, int, int, int]]]
"""Face boxes ``(left, top, right, bottom)`` in pixels, left to right, found in an encoded image."""

_MESSAGES = {
    401: "unauthorized",
    402: "insufficient credits",
    404: "not found",
    422: "validation error",
    429: "rate limited",
    455: "service under maintenance",
    500: "server error",
    501: "generation failed",
    505: "feature disabled",
}


def engine_detect(image: bytes) -> list[tuple[int, int, int, int]]:
    """Faces found by the self-hosted engine (imported on first use: it loads dlib models)."""
    from faceswap_engine import decode_image, detect_faces

    return [face.box for face in detect_faces(decode_image(image, name="target"))]


@dataclass
class Faults:
    """Failures to inject. Counters count down as they fire.

    Attributes
    ----------
    create_errors
        Next N CreateTask calls answer ``create_error_status`` (no task created): e.g. 500, 455, 429 (with
        ``Retry-After: retry_after`` if set).
    get_errors
        Next N TaskInfo calls answer ``get_error_status``.
    errors_in_body
        Injected errors answer HTTP 200 with the code only in the body's ``code``.
    slow_seconds
        Delay before answering any API call (for client timeouts).
    processing_seconds, detect_seconds
        Time a task (a detection) spends running before it ends.
    webhook
        ``"normal"`` (one delivery), ``"none"`` (lost) or ``"duplicate"`` (``webhook_copies`` deliveries).
    result_expired
        The result URL answers 404.
    fail_task
        Tasks end ``failed`` with this message and ``result.code`` ``fail_code``.
    out_of_credit
        CreateTask and detection answer 402.
    """

    create_errors: int = 0
    create_error_status: int = 500
    get_errors: int = 0
    get_error_status: int = 500
    retry_after: float | None = None
    errors_in_body: bool = False
    slow_seconds: float = 0.0
    processing_seconds: float = 0.2
    detect_seconds: float = 0.1
    webhook: str = "normal"
    webhook_copies: int = 2
    result_expired: bool = False
    fail_task: str | None = None
    fail_code: int = 501
    out_of_credit: bool = False


@dataclass
class Received:
    """One API request as it arrived: headers without the key's value (``key_presented`` says if it was right)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    key_presented: bool
    json: Any = None
    at: float = field(default_factory=time.time)
    """When it arrived (epoch seconds)."""


@dataclass
class Task:
    """One emulated task, as recorded."""

    task_id: str
    model: str
    callback_url: str | None
    input: dict[str, Any]
    request: Received
    created_at: float = field(default_factory=time.time)
    status: str = "pending"
    result: dict[str, Any] | None = None
    image: bytes | None = None
    completed_at: float | None = None
    webhook_deliveries: int = 0
    queries: int = 0


@dataclass
class Detection:
    """One face detection: its task, and once done its ``detect_id``, faces and expiry."""

    detect_task_id: str
    image_url: str
    request: Received
    status: str = "starting"
    detect_id: str | None = None
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    image: bytes | None = None
    finished_at: float | None = None
    error: str | None = None


class CRUNEmulator(RecordingEmulatorServer[Received]):
    """The emulator server, standing in for ``https://api.crun.ai``.

    ``api_key`` is the key it accepts; ``swap_fn`` makes results, ``detect_fn`` finds faces.
    """

    def __init__(
        self,
        *,
        api_key: str,
        swap_fn: SwapFn = placeholder_swap,
        port: int | None = None,
        detect_fn: DetectFn = engine_detect,
    ) -> None:
        super().__init__(name="crun", port=port)
        self.api_key = api_key
        self.swap_fn = swap_fn
        self.detect_fn = detect_fn
        self.faults = Faults()
        self.tasks: dict[str, Task] = {}
        self.detections: dict[str, Detection] = {}
        self.create_calls = 0
        #: seconds a ``detect_id`` stays valid (CRUN: 1 hour)
        self.detect_ttl_seconds = DETECT_TTL_SECONDS
        self._http = httpx.Client(timeout=httpx.Timeout(10.0))

    def stop(self) -> None:
        """Stop serving (and close the client that fetches images and sends webhooks)."""
        super().stop()
        self._http.close()

    # ---------------------------------------------------------------------------------------------- HTTP

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        path = request.path
        if path.startswith("/results/"):
            task_id = path[len("/results/") :].removesuffix(".png").removesuffix(".mp4")
            return self._result(task_id)(environ, start_response)
        if path.startswith("/faces/"):
            return self._face(path[len("/faces/") :].removesuffix(".png"))(environ, start_response)
        received = self._record(request)
        if self.faults.slow_seconds:
            time.sleep(self.faults.slow_seconds)
        route = (request.method, path.removeprefix(JOB_API))
        if not received.key_presented:
            response = self._fail(401, injected=False)
        elif not path.startswith(JOB_API + "/"):
            response = self._fail(404, injected=False)
        elif route == ("POST", "/CreateTask"):
            response = self._create(received)
        elif route == ("GET", "/TaskInfo"):
            response = self._task_info(request.args.get("task_id", ""))
        elif route == ("POST", "/detect-face-image"):
            response = self._detect(received)
        elif route == ("GET", "/detect-face-result"):
            response = self._detect_result(request.args.get("detect_task_id", ""))
        else:
            response = self._fail(404, injected=False)
        return response(environ, start_response)

    def _record(self, request: Request) -> Received:
        received = Received(
            method=request.method,
            path=request.path,
            query=dict(request.args.items()),
            headers={k.lower(): v for k, v in request.headers.items() if k.lower() != API_KEY_HEADER},
            key_presented=request.headers.get(API_KEY_HEADER) == self.api_key,
            json=request.get_json(silent=True),
        )
        return self._keep(received)

    def _create(self, received: Received) -> Response:
        with self._lock:
            self.create_calls += 1
            if self.faults.out_of_credit:
                return self._fail(402)
            if self.faults.create_errors > 0:
                self.faults.create_errors -= 1
                return self._fail(self.faults.create_error_status)
        body = received.json
        if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
            return self._fail(422, "body must be JSON with model and input")
        model, inputs, callback_url = body.get("model"), body["input"], body.get("callback_url")
        if callback_url is not None and not isinstance(callback_url, str):
            return self._fail(422, "callback_url must be a string")
        if model == "image-face-swap":
            problem = _missing_urls(inputs, ("image_url", "new_face"))
        elif model == "image-face-swap-multi":
            problem = self._check_multi(inputs)
        elif model == "video-face-swap":
            problem = _missing_urls(inputs, ("video_url", "new_face"))
        else:
            problem = f"unsupported model {model!r}"
        if problem:
            return self._fail(422, problem)
        task = Task(
            task_id=f"task_{uuid.uuid4().hex[:16]}",
            model=str(model),
            callback_url=callback_url,
            input=inputs,
            request=received,
        )
        with self._lock:
            self.tasks[task.task_id] = task
        threading.Thread(target=self._process, args=(task,), daemon=True).start()
        return _json(200, {"code": 200, "message": "success", "data": {"task_id": task.task_id}})

    def _check_multi(self, inputs: dict[str, Any]) -> str | None:
        detection = next((d for d in self.detections.values() if d.detect_id == inputs.get("detect_id")), None)
        if detection is None or detection.finished_at is None:
            return "detect_id not found"
        if time.time() - detection.finished_at > self.detect_ttl_seconds:
            return "detect_id has expired"
        if inputs.get("image_url") != detection.image_url:
            return "image_url must be the URL used for face detection"
        faces = inputs.get("faces")
        if not isinstance(faces, list) or not faces:
            return "faces must be a non-empty list"
        for face in faces:
            if not isinstance(face, dict) or not isinstance(face.get("target"), str):
                return "each face needs face_id and target"
            face_id = face.get("face_id")
            if not isinstance(face_id, int) or isinstance(face_id, bool) or not 0 <= face_id < len(detection.boxes):
                return f"face_id {face_id!r} is not a detected face"
        return None

    def _task_info(self, task_id: str) -> Response:
        with self._lock:
            if self.faults.get_errors > 0:
                self.faults.get_errors -= 1
                return self._fail(self.faults.get_error_status)
            task = self.tasks.get(task_id)
            if task is not None:
                task.queries += 1
        if task is None:
            return self._fail(404, "task not found", injected=False)
        return _json(200, {"code": 200, "message": "success", "data": self._task_data(task)})

    def _detect(self, received: Received) -> Response:
        if self.faults.out_of_credit:
            return self._fail(402)
        body = received.json
        image_url = body.get("image_url") if isinstance(body, dict) else None
        if not isinstance(image_url, str) or not image_url.startswith(("http://", "https://")):
            return self._fail(422, "image_url must be an http(s) URL", injected=False)
        detection = Detection(detect_task_id=f"dt_{uuid.uuid4().hex[:16]}", image_url=image_url, request=received)
        with self._lock:
            self.detections[detection.detect_task_id] = detection
        threading.Thread(target=self._run_detection, args=(detection,), daemon=True).start()
        return _json(200, {"code": 200, "message": "success", "data": {"detect_task_id": detection.detect_task_id}})

    def _detect_result(self, detect_task_id: str) -> Response:
        detection = self.detections.get(detect_task_id)
        if detection is None:
            return self._fail(404, "detect task not found", injected=False)
        data: dict[str, Any] = {"detect_task_id": detection.detect_task_id, "status": detection.status, "result": None}
        if detection.status == "succeeded":
            data["result"] = {
                "id": detection.detect_id,
                "faces": [
                    {"id": n, "link": f"{self.url}/faces/{detection.detect_id}/{n}.png"}
                    for n in range(len(detection.boxes))
                ],
            }
        elif detection.status == "failed":
            data["result"] = {"code": 422, "message": detection.error}
        return _json(200, {"code": 200, "message": "success", "data": data})

    def _result(self, task_id: str) -> Response:
        task = self.tasks.get(task_id)
        if task is None or task.image is None or self.faults.result_expired:
            return Response(b"not found", status=404, content_type="text/plain")
        return Response(task.image, content_type="video/mp4" if task.model == "video-face-swap" else "image/png")

    def _face(self, name: str) -> Response:
        detect_id, _, number = name.partition("/")
        detection = next((d for d in self.detections.values() if d.detect_id == detect_id), None)
        if detection is None or detection.image is None or not number.isdigit() or int(number) >= len(detection.boxes):
            return Response(b"not found", status=404, content_type="text/plain")
        with Image.open(io.BytesIO(detection.image)) as image:
            upright = ImageOps.exif_transpose(image).convert("RGB")
            left, top, right, bottom = detection.boxes[int(number)]
            grow_x, grow_y = (right - left) // 4, (bottom - top) // 4  # a face thumbnail, with some of the head
            crop = upright.crop(
                (
                    max(0, left - grow_x),
                    max(0, top - grow_y),
                    min(upright.width, right + grow_x),
                    min(upright.height, bottom + grow_y),
                )
            )
        out = io.BytesIO()
        crop.save(out, format="PNG")
        return Response(out.getvalue(), content_type="image/png")

    def _fail(self, status: int, message: str | None = None, *, injected: bool = True) -> Response:
        body = {"code": status, "message": message or _MESSAGES.get(status, "error"), "data": None}
        http_status = 200 if injected and self.faults.errors_in_body else status
        response = _json(http_status, body)
        if injected and self.faults.retry_after is not None and status in (429, 455, 503):
            response.headers["Retry-After"] = f"{self.faults.retry_after:g}"
        return response

    # ------------------------------------------------------------------------------------------ processing

    def _run_detection(self, detection: Detection) -> None:
        time.sleep(self.faults.detect_seconds / 2)
        detection.status = "processing"
        time.sleep(self.faults.detect_seconds / 2)
        try:
            image = self._http.get(detection.image_url).raise_for_status().content
            boxes = self.detect_fn(image)
        except httpx.HTTPError:
            detection.error, detection.status = "failed to download image_url", "failed"
            return
        except Exception as e:  # the detector's error (an unreadable image) is the detection's failure
            detection.error, detection.status = f"face detection failed: {getattr(e, 'message', None) or e}", "failed"
            return
        detection.image, detection.boxes = image, list(boxes)
        detection.detect_id = f"det_{uuid.uuid4().hex[:16]}"
        detection.finished_at = time.time()
        detection.status = "succeeded"

    def _process(self, task: Task) -> None:
        task.status = "running"
        time.sleep(self.faults.processing_seconds)
        if self.faults.fail_task:
            self._end(task, failure=(self.faults.fail_code, self.faults.fail_task))
            return
        if task.model == "video-face-swap":
            self._process_video(task)
            return
        try:
            target = self._http.get(task.input["image_url"]).raise_for_status().content
            if task.model == "image-face-swap":
                face = self._http.get(task.input["new_face"]).raise_for_status().content
                image = self.swap_fn(target, face, {})
            else:
                image = target
                for face_spec in task.input["faces"]:
                    face = self._http.get(face_spec["target"]).raise_for_status().content
                    options = {"swap_faces_index": "0", "target_faces_index": str(face_spec["face_id"])}
                    image = self.swap_fn(image, face, options)
        except httpx.HTTPError:
            self._end(task, failure=(422, "failed to download an input image"))
            return
        except Exception as e:  # the engine's error becomes the task's failure, as CRUN reports it
            message = getattr(e, "message", None) or str(e)
            code = 422 if getattr(e, "code", None) in ("no_face_detected", "invalid_image") else 501
            self._end(task, failure=(code, message))
            return
        task.image = image
        self._end(task)

    def _process_video(self, task: Task) -> None:
        """A video face swap with the engine (frame by frame, the audio copied)."""
        from faceswap_engine.errors import FaceSwapError
        from faceswap_engine.video import swap_video_file

        with tempfile.TemporaryDirectory(prefix="crun-video-") as workdir:
            source, out = os.path.join(workdir, "target"), os.path.join(workdir, "result.mp4")
            try:
                with open(source, "wb") as f:
                    f.write(self._http.get(task.input["video_url"]).raise_for_status().content)
                face = self._http.get(task.input["new_face"]).raise_for_status().content
                swap_video_file(source, face, out)
            except httpx.HTTPError:
                self._end(task, failure=(422, "failed to download an input"))
                return
            except FaceSwapError as e:
                self._end(task, failure=(422 if e.code == "no_face_detected" else 501, str(e)))
                return
            with open(out, "rb") as f:
                task.image = f.read()
        self._end(task)

    def _end(self, task: Task, *, failure: tuple[int, str] | None = None) -> None:
        if failure is None:
            suffix = "mp4" if task.model == "video-face-swap" else "png"
            task.result = {"media_urls": [f"{self.url}/results/{task.task_id}.{suffix}"]}
            task.status = "success"
        else:
            task.result = {"code": failure[0], "message": failure[1]}
            task.status = "failed"
        task.completed_at = time.time()
        self._send_callbacks(task)

    def _send_callbacks(self, task: Task) -> None:
        if not task.callback_url or self.faults.webhook == "none":
            return
        copies = self.faults.webhook_copies if self.faults.webhook == "duplicate" else 1
        for _ in range(copies):
            try:
                self._http.post(task.callback_url, json=self._task_data(task))
                task.webhook_deliveries += 1
            except httpx.HTTPError:
                logger.warning("callback delivery failed for task %s", task.task_id)

    def _task_data(self, task: Task) -> dict[str, Any]:
        return {
            "task_id": task.task_id,
            "provider": "crun",
            "model_version": task.model,
            "status": task.status,
            "param": {"model": task.model, "callback_url": task.callback_url, "input": task.input},
            "create_at": _iso(task.created_at),
            "result": task.result,
            "duration_s": round(task.completed_at - task.created_at, 3) if task.completed_at else None,
            "complete_at": _iso(task.completed_at) if task.completed_at else None,
            "source": "api",
            "credits": 1,
        }


def _missing_urls(inputs: dict[str, Any], names: tuple[str, ...]) -> str | None:
    for name in names:
        value = inputs.get(name)
        if not isinstance(value, str) or not value.startswith(("http://", "https://")):
            return f"input.{name} must be an http(s) URL"
    return None


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")
