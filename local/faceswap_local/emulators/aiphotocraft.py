"""AIPhotoCraft emulator: the face-swap API of ``providers.md`` §4, on loopback, with an hourly rate quota.

- ``POST /api/faceswap/basicswap`` (``X-Api-Key``), multipart ``srcimage`` (supplies the face), ``targetimage``
  (its face is replaced) and ``enhance`` (``"true"``/``"false"``, required).
- ``POST /api/faceswap/faceswap2`` (couple swap), multipart ``srcimage``, ``targetimage``, optional
  ``swap_index`` (1-based ``"2,1"``: the source face for target face 1, then 2; default ``"1,2"``) and optional
  ``enhance``. Both images must hold two faces (else the task fails ``face_count_mismatch``).
- ``POST /api/faceswap/swapfacesameimage``, multipart ``srcimage`` alone (two faces, which swap places; the
  task fails ``face_count_mismatch`` otherwise).
- Each answers ``{"success": true, "task_id", "status": "pending"}``; the task runs in the background.
- ``GET /api/task-status/{task_id}`` → ``{task_id, status}`` with ``status`` pending → processing →
  ``completed`` (plus ``image_url`` and ``result``, the same URL) or ``failed`` (plus ``message`` and
  ``error: {code, message}``). The pending representation is UNKNOWN at AIPhotoCraft; this is a guess.
- Errors: ``{"success": false, "error": {"code", "message", "details"}}``: ``invalid_parameter`` 400,
  ``api_key_required``/``invalid_api_key`` 401, ``rate_limit_exceeded`` 429 (``details.reset_at``),
  ``invalid_image_format`` 400, ``not_found`` 404, ``server_error`` 500.
- Rate limit: ``Faults.hourly_limit`` calls per fixed hour for the key, counting every API call including
  status polls; every answer to the key carries ``X-RateLimit-Limit``/``-Remaining``/``-Reset`` (epoch s).
- ``GET /results/{task_id}.png``: the result image (not counted).
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image
from werkzeug.wrappers import Request, Response

from faceswap_local.emulators.piapi import SwapFn, placeholder_swap
from faceswap_local.emulators.server import RecordingEmulatorServer

API_KEY_HEADER = "x-api-key"
WINDOW_SECONDS = 3600
CREATE_PATHS = (
    "/api/faceswap/basicswap",
    "/api/faceswap/faceswap2",
    "/api/faceswap/swapfacesameimage",
)
_SWAP_INDEX = re.compile(r"^([12]),([12])$")

#: engine error code → AIPhotoCraft error code
_ENGINE_ERRORS = {
    "no_face_detected": "no_face_detected",
    "invalid_image": "invalid_image_format",
    "face_index_out_of_range": "face_count_mismatch",
}


@dataclass
class Faults:
    """Failures to inject. Counters count down as they fire.

    Attributes
    ----------
    create_errors
        Next N creates answer ``create_error_status`` (no task created): 500 ``server_error`` or 429
        ``rate_limit_exceeded``.
    get_errors
        Next N status polls answer ``get_error_status``.
    slow_seconds
        Delay before answering any API call (for client timeouts).
    processing_seconds
        Time a task spends processing before it ends.
    result_expired
        The result URL answers 404.
    fail_task
        Tasks end ``failed`` with this message (error code ``server_error``).
    hourly_limit
        Calls per hour for the key (the Free plan's 50 by default); see :meth:`AIPhotoCraftEmulator.reset_quota`.
    """

    create_errors: int = 0
    create_error_status: int = 500
    get_errors: int = 0
    get_error_status: int = 500
    slow_seconds: float = 0.0
    processing_seconds: float = 0.2
    result_expired: bool = False
    fail_task: str | None = None
    hourly_limit: int = 50


@dataclass
class Received:
    """One API request as it arrived: headers without the key's value (``key_presented`` says if it was right)."""

    method: str
    path: str
    headers: dict[str, str]
    key_presented: bool
    parts: tuple[str, ...] = ()
    form: dict[str, str] = field(default_factory=dict)
    limited: bool = False
    at: float = field(default_factory=time.time)
    """When it arrived (epoch seconds)."""


@dataclass
class Task:
    """One emulated task, as recorded."""

    task_id: str
    endpoint: str
    request: Received
    swap_index: tuple[int, int] | None = None
    status: str = "pending"
    result: bytes | None = None
    error: dict[str, str] | None = None
    polls: int = 0


class AIPhotoCraftEmulator(RecordingEmulatorServer[Received]):
    """The emulator server, standing in for ``https://aiapi.aiphotocraft.com``.

    ``api_key`` is the key it accepts; ``swap_fn`` makes results.
    """

    def __init__(self, *, api_key: str, swap_fn: SwapFn = placeholder_swap, port: int | None = None) -> None:
        super().__init__(name="aiphotocraft", port=port)
        self.api_key = api_key
        self.swap_fn = swap_fn
        self.faults = Faults()
        self.tasks: dict[str, Task] = {}
        self.create_calls = 0
        self._window_start = 0.0
        self._window_calls = 0

    def reset_quota(self) -> None:
        """Start a fresh hour: the next call opens a new window with the full ``hourly_limit``."""
        with self._lock:
            self._window_start, self._window_calls = 0.0, 0

    # ---------------------------------------------------------------------------------------------- HTTP

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        path = request.path
        if path.startswith("/results/"):
            return self._result(path[len("/results/") :].removesuffix(".png"))(environ, start_response)
        received = self._record(request)
        if self.faults.slow_seconds:
            time.sleep(self.faults.slow_seconds)
        presented = request.headers.get(API_KEY_HEADER)
        if not presented:
            return _error(401, "api_key_required", "An API key is required.")(environ, start_response)
        if not received.key_presented:
            return _error(401, "invalid_api_key", "The API key is not valid.")(environ, start_response)
        allowed, headers, reset_at = self._count()
        if not allowed:
            received.limited = True
            response = _error(
                429,
                "rate_limit_exceeded",
                "Rate limit exceeded. Try again later.",
                details={"limit": self.faults.hourly_limit, "reset_at": reset_at},
            )
        elif request.method == "POST" and path in CREATE_PATHS:
            response = self._create(request, received, path.rsplit("/", 1)[1])
        elif request.method == "GET" and path.startswith("/api/task-status/"):
            response = self._status(path[len("/api/task-status/") :])
        else:
            response = _error(404, "not_found", "Not found.")
        response.headers.update(headers)
        return response(environ, start_response)

    def _record(self, request: Request) -> Received:
        form = {k: v for k, v in request.form.items()}
        received = Received(
            method=request.method,
            path=request.path,
            headers={k.lower(): v for k, v in request.headers.items() if k.lower() != API_KEY_HEADER},
            key_presented=request.headers.get(API_KEY_HEADER) == self.api_key,
            parts=(*request.files.keys(), *form),
            form=form,
        )
        return self._keep(received)

    def _count(self) -> tuple[bool, dict[str, str], int]:
        """Count one call against the hour; returns (allowed, the X-RateLimit-* headers, reset epoch)."""
        now = time.time()
        with self._lock:
            if now >= self._window_start + WINDOW_SECONDS:
                self._window_start, self._window_calls = now, 0
            limit = self.faults.hourly_limit
            allowed = self._window_calls < limit
            if allowed:
                self._window_calls += 1
            remaining = max(0, limit - self._window_calls)
            reset_at = int(self._window_start + WINDOW_SECONDS)
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(reset_at),
        }
        return allowed, headers, reset_at

    def _create(self, request: Request, received: Received, endpoint: str) -> Response:
        with self._lock:
            self.create_calls += 1
            if self.faults.create_errors > 0:
                self.faults.create_errors -= 1
                return _injected(self.faults.create_error_status)
        images: dict[str, bytes] = {}
        for name in ("srcimage",) if endpoint == "swapfacesameimage" else ("srcimage", "targetimage"):
            upload = request.files.get(name)
            if upload is None:
                return _error(400, "invalid_parameter", f"Missing file {name}.")
            images[name] = upload.read()
            try:
                with Image.open(io.BytesIO(images[name])) as image:
                    image.load()
            except (OSError, ValueError, SyntaxError):
                return _error(400, "invalid_image_format", f"{name} is not a supported image.")
        enhance = request.form.get("enhance")
        if enhance not in ("true", "false") and (endpoint == "basicswap" or enhance is not None):
            return _error(400, "invalid_parameter", "enhance must be 'true' or 'false'.")
        swap_index: tuple[int, int] | None = None
        if endpoint == "swapfacesameimage":
            images["targetimage"] = images["srcimage"]
            swap_index = (2, 1)  # target face 1 gets face 2 and face 2 gets face 1: the two faces swap places
        elif endpoint == "faceswap2":
            match = _SWAP_INDEX.match(request.form.get("swap_index", "1,2"))
            if match is None:
                return _error(400, "invalid_parameter", "swap_index must look like '2,1'.")
            swap_index = (int(match.group(1)), int(match.group(2)))
        task = Task(task_id=uuid.uuid4().hex, endpoint=endpoint, request=received, swap_index=swap_index)
        with self._lock:
            self.tasks[task.task_id] = task
        threading.Thread(
            target=self._process, args=(task, images["targetimage"], images["srcimage"]), daemon=True
        ).start()
        return _json(200, {"success": True, "task_id": task.task_id, "status": task.status})

    def _status(self, task_id: str) -> Response:
        with self._lock:
            if self.faults.get_errors > 0:
                self.faults.get_errors -= 1
                return _injected(self.faults.get_error_status)
            task = self.tasks.get(task_id)
            if task is not None:
                task.polls += 1
        if task is None:
            return _error(404, "not_found", "Task not found.")
        body: dict[str, Any] = {"task_id": task.task_id, "status": task.status}
        if task.status == "completed":
            body["image_url"] = body["result"] = f"{self.url}/results/{task.task_id}.png"
        elif task.status == "failed" and task.error is not None:
            body["message"] = task.error["message"]
            body["error"] = task.error
        return _json(200, body)

    def _result(self, task_id: str) -> Response:
        task = self.tasks.get(task_id)
        if task is None or task.result is None or self.faults.result_expired:
            return Response(b"not found", status=404, content_type="text/plain")
        return Response(task.result, content_type="image/png")

    # ------------------------------------------------------------------------------------------ processing

    def _process(self, task: Task, target: bytes, source: bytes) -> None:
        task.status = "processing"
        time.sleep(self.faults.processing_seconds)
        if self.faults.fail_task:
            task.error = {"code": "server_error", "message": self.faults.fail_task}
            task.status = "failed"
            return
        try:
            if task.swap_index is None:
                task.result = self.swap_fn(target, source, {})
            else:
                image = target
                for target_face, source_face in enumerate(task.swap_index):
                    options = {"swap_faces_index": str(source_face - 1), "target_faces_index": str(target_face)}
                    image = self.swap_fn(image, source, options)
                task.result = image
        except Exception as e:  # the engine's error becomes the task's failure, as AIPhotoCraft reports it
            message = getattr(e, "message", None) or str(e)
            task.error = {"code": _ENGINE_ERRORS.get(str(getattr(e, "code", "")), "server_error"), "message": message}
            task.status = "failed"
            return
        task.status = "completed"


def _injected(status: int) -> Response:
    code = {429: "rate_limit_exceeded", 400: "invalid_parameter", 401: "invalid_api_key"}.get(status, "server_error")
    return _error(status, code, "Injected failure.")


def _error(status: int, code: str, message: str, *, details: dict[str, Any] | None = None) -> Response:
    return _json(status, {"success": False, "error": {"code": code, "message": message, "details": details or {}}})


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")
