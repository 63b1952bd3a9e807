"""AILabAPI emulator: "AI Face Swap" of ``providers.md`` §2, on loopback, with fault injection.

- ``POST /api/portrait/editing/ai-face-swap`` (``ailabapi-api-key``), multipart files ``image_target`` and
  ``image_template``. Each file must be JPEG/PNG (else 415 ``UNSUPPORTED_FILE_TYPES``), at most 5 MB and under
  4096x4096 (else 413 ``FILE_SIZE_EXCEEDS_LIMIT`` / ``FILE_RESOLUTION_EXCEEDS_LIMITS``) and decodable (else 422
  ``FILE_DECODING_FAILURE``). Answer ``{request_id, log_id, error_code: 0, error_code_str, error_msg,
  error_detail: {status_code, code, code_message, message}, task_type: "async", task_id}``.
- ``GET /api/common/query-async-task-result?task_id=`` → ``task_status`` 0 (queued), 1 (processing), 2 (done,
  with ``data.image``). A failed task answers its error: the HTTP status equals ``error_code`` (e.g. 422 with
  ``error_detail.code`` ``ERROR_NO_FACE_IN_FILE``); there is no "failed" status value.
- Errors use the same envelope; out of credit is 429 ``ERROR_NOT_ENOUGH_CREDITS``; a wrong key 401.
- ``GET /results/{task_id}.png``: the result image (AILab's 24-hour "temporary address").

The swap is done by ``swap_fn``; an error it raises with a ``code`` (the engine's ``no_face_detected``,
``invalid_image``, ``face_index_out_of_range``) becomes the matching AILab failure. :class:`Faults` injects
failures; :attr:`AILabAPIEmulator.tasks` and :attr:`AILabAPIEmulator.requests` record what arrived.
"""

from __future__ import annotations

import io
import json
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

API_KEY_HEADER = "ailabapi-api-key"
CREATE_PATH = "/api/portrait/editing/ai-face-swap"
QUERY_PATH = "/api/common/query-async-task-result"

#: engine error code → (HTTP status, AILab ``error_detail.code``)
_ENGINE_ERRORS = {
    "no_face_detected": (422, "ERROR_NO_FACE_IN_FILE"),
    "invalid_image": (422, "FILE_DECODING_FAILURE"),
    "face_index_out_of_range": (422, "ERROR_FACE_COUNT_INVALID"),
}


@dataclass
class Faults:
    """Failures to inject. Counters count down as they fire.

    Attributes
    ----------
    create_errors
        Next N creates answer ``create_error_status`` (no task created): 500 ``PROCESSING_FAILURE``, 503
        ``AI_SERVICE_FLOW_RESTRICTION`` or 429 ``EXCEEDING_LIMITS``, with ``Retry-After: retry_after`` if set.
    get_errors
        Next N task queries answer ``get_error_status`` the same way.
    slow_seconds
        Delay before answering any API call (for client timeouts).
    processing_seconds
        Time a task spends processing (``task_status`` 1) before it completes.
    result_expired
        The result URL answers 404.
    fail_task
        Tasks fail with this message, as 422 ``fail_code``.
    out_of_credit
        Creates answer 429 ``ERROR_NOT_ENOUGH_CREDITS``.
    """

    create_errors: int = 0
    create_error_status: int = 500
    get_errors: int = 0
    get_error_status: int = 500
    retry_after: float | None = None
    slow_seconds: float = 0.0
    processing_seconds: float = 0.2
    result_expired: bool = False
    fail_task: str | None = None
    fail_code: str = "ERROR_CONTENT_NON_COMPLIANCE"
    out_of_credit: bool = False


@dataclass
class Received:
    """One API request as it arrived: headers without the key's value (``key_presented`` says if it was right)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    key_presented: bool
    parts: tuple[str, ...] = ()
    form: dict[str, str] = field(default_factory=dict)
    file_types: dict[str, str] = field(default_factory=dict)
    at: float = field(default_factory=time.time)
    """When it arrived (epoch seconds)."""


@dataclass
class Task:
    """One emulated task, as recorded."""

    task_id: str
    request: Received
    image_sizes: dict[str, tuple[int, int]]
    task_status: int = 0
    result: bytes | None = None
    error: tuple[int, str, str] | None = None
    queries: int = 0


_CODE_STATUS = {
    429: "EXCEEDING_LIMITS",
    500: "PROCESSING_FAILURE",
    502: "AI_SERVICE_ERROR",
    503: "AI_SERVICE_FLOW_RESTRICTION",
    504: "AI_SERVICE_TIMEOUT",
}


class AILabAPIEmulator(RecordingEmulatorServer[Received]):
    """The emulator server, standing in for ``https://www.ailabapi.com``.

    ``api_key`` is the key it accepts; ``swap_fn`` makes results.
    """

    MAX_BYTES = 5 * 1024 * 1024
    MAX_SIDE = 4095
    FORMATS = ("JPEG", "PNG")

    def __init__(self, *, api_key: str, swap_fn: SwapFn = placeholder_swap, port: int | None = None) -> None:
        super().__init__(name="ailabapi", port=port)
        self.api_key = api_key
        self.swap_fn = swap_fn
        self.faults = Faults()
        self.tasks: dict[str, Task] = {}
        self.create_calls = 0

    # ---------------------------------------------------------------------------------------------- HTTP

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        path = request.path
        if path.startswith("/results/"):
            return self._result(path[len("/results/") :].removesuffix(".png"))(environ, start_response)
        received = self._record(request)
        if self.faults.slow_seconds:
            time.sleep(self.faults.slow_seconds)
        if not received.key_presented:
            response = _error(401, "ERROR_APPLICATIONS_NOT_EXISTS", "The API key does not exist.")
        elif request.method == "POST" and path == CREATE_PATH:
            response = self._create(request, received)
        elif request.method == "GET" and path == QUERY_PATH:
            response = self._query(request.args.get("task_id", ""))
        else:
            response = _error(404, "ERROR_NOT_FOUND", "Not found.")
        return response(environ, start_response)

    def _record(self, request: Request) -> Received:
        files = list(request.files.keys())
        form = {k: v for k, v in request.form.items()}
        received = Received(
            method=request.method,
            path=request.path,
            query=dict(request.args.items()),
            headers={k.lower(): v for k, v in request.headers.items() if k.lower() != API_KEY_HEADER},
            key_presented=request.headers.get(API_KEY_HEADER) == self.api_key,
            parts=(*files, *form),
            form=form,
            file_types={name: request.files[name].mimetype for name in files},
        )
        return self._keep(received)

    def _create(self, request: Request, received: Received) -> Response:
        with self._lock:
            self.create_calls += 1
            if self.faults.out_of_credit:
                return _error(429, "ERROR_NOT_ENOUGH_CREDITS", "Not enough credits.")
            if self.faults.create_errors > 0:
                self.faults.create_errors -= 1
                return self._injected(self.faults.create_error_status)
        images: dict[str, bytes] = {}
        sizes: dict[str, tuple[int, int]] = {}
        for name in ("image_target", "image_template"):
            upload = request.files.get(name)
            if upload is None:
                return _error(400, "ERROR_PARAMETERS", f"Missing file parameter {name}.")
            data = upload.read()
            if len(data) > self.MAX_BYTES:
                return _error(413, "FILE_SIZE_EXCEEDS_LIMIT", f"{name} is larger than 5 MB.")
            try:
                with Image.open(io.BytesIO(data)) as image:
                    image_format, size = image.format, image.size
                    image.load()
            except (OSError, ValueError, SyntaxError):
                return _error(422, "FILE_DECODING_FAILURE", f"{name} could not be decoded.")
            if image_format not in self.FORMATS:
                return _error(415, "UNSUPPORTED_FILE_TYPES", f"{name} must be JPEG or PNG.")
            if max(size) > self.MAX_SIDE:
                return _error(413, "FILE_RESOLUTION_EXCEEDS_LIMITS", f"{name} must be under 4096x4096.")
            images[name], sizes[name] = data, size
        task = Task(task_id=uuid.uuid4().hex.upper(), request=received, image_sizes=sizes)
        with self._lock:
            self.tasks[task.task_id] = task
        threading.Thread(
            target=self._process, args=(task, images["image_target"], images["image_template"]), daemon=True
        ).start()
        return _json(200, {**_envelope(200), "task_type": "async", "task_id": task.task_id})

    def _query(self, task_id: str) -> Response:
        with self._lock:
            if self.faults.get_errors > 0:
                self.faults.get_errors -= 1
                return self._injected(self.faults.get_error_status)
            task = self.tasks.get(task_id)
            if task is not None:
                task.queries += 1
        if task is None:
            return _error(400, "ERROR_PARAMETERS", "The task_id does not exist or has expired.")
        if task.error is not None:
            status, code, message = task.error
            return _error(status, code, message)
        body: dict[str, Any] = {**_envelope(200), "task_status": task.task_status}
        if task.task_status == 2:
            body["data"] = {"image": f"{self.url}/results/{task.task_id}.png"}
        return _json(200, body)

    def _result(self, task_id: str) -> Response:
        task = self.tasks.get(task_id)
        if task is None or task.result is None or self.faults.result_expired:
            return Response(b"not found", status=404, content_type="text/plain")
        return Response(task.result, content_type="image/png")

    def _injected(self, status: int) -> Response:
        code = _CODE_STATUS.get(status, "UNKNOWN_ERROR")
        response = _error(status, code, "Injected failure.")
        if self.faults.retry_after is not None:
            response.headers["Retry-After"] = f"{self.faults.retry_after:g}"
        return response

    # ------------------------------------------------------------------------------------------ processing

    def _process(self, task: Task, target: bytes, template: bytes) -> None:
        task.task_status = 1
        time.sleep(self.faults.processing_seconds)
        if self.faults.fail_task:
            task.error = (422, self.faults.fail_code, self.faults.fail_task)
            return
        try:
            task.result = self.swap_fn(target, template, {})
        except Exception as e:  # the engine's error becomes the task's failure, as AILab reports it
            message = getattr(e, "message", None) or str(e)
            task.error = (*_ENGINE_ERRORS.get(str(getattr(e, "code", "")), (500, "PROCESSING_FAILURE")), message)
            return
        task.task_status = 2


def _envelope(status: int, code: str = "", message: str = "") -> dict[str, Any]:
    return {
        "request_id": uuid.uuid4().hex,
        "log_id": uuid.uuid4().hex[:16].upper(),
        "error_code": 0 if status == 200 else status,
        "error_code_str": code,
        "error_msg": message,
        "error_detail": {"status_code": status, "code": code, "code_message": message, "message": message},
    }


def _error(status: int, code: str, message: str) -> Response:
    return _json(status, _envelope(status, code, message))


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")
