"""AIPhotoCraft face-swap API: multipart upload, asynchronous task, polling only, hourly rate quota.

Contract: ``providers.md`` §4 (https://aiphotocraft.com/free-face-swap-api/docs,
https://aiphotocraft.com/docs/FaceSwap/couple_swap).

- Create (``X-Api-Key``, multipart):

  - ``face-swap`` → ``POST {base}/api/faceswap/basicswap`` with ``srcimage`` (the swap face: the *source* of
    the face), ``targetimage`` (the image whose face is replaced) and ``enhance`` (``"true"``/``"false"``,
    GFPGAN). Each image must hold exactly one face.
  - ``multi-face-swap`` → ``POST {base}/api/faceswap/faceswap2`` (couple swap): both images hold two faces;
    ``swap_index`` (optional, 1-based, e.g. ``"2,1"``) says which source face goes onto target face 1 and 2;
    by default faces map by position (left to left). ``enhance`` is sent too (the couple-swap page requires it).
  - ``same-image-swap`` → ``POST {base}/api/faceswap/swapfacesameimage`` with ``srcimage`` only: the target
    image, whose two faces swap places (the job has no swap image). No ``enhance`` (not documented there).
  - ``swap1from2`` (``srcimage`` with two faces, ``targetimage1`` and ``targetimage2``) is not offered: it takes
    two target images, and nothing says whether one image or two come back or which target a single
    ``image_url`` shows, so a job could not say what its one result is.

  The answer's task id is read defensively (``task_id``, ``data.task_id``, ``id``): clients read ``task_id``,
  while the couple-swap page claims a synchronous "201 Swap successful".
- Read: ``GET {base}/api/task-status/{task_id}``. ``status`` ``completed``/``failed`` (case-insensitive) as a
  real client reads it; the pending representation is UNKNOWN, so any other value is RUNNING. The result URL
  is ``image_url`` (the doc's only example, which has no ``status`` at all: a URL alone means done) or
  ``result``; a failure's reason is ``message`` or ``error.message``. The result lifetime is UNKNOWN.
- Errors: ``{"success": false, "error": {"code", "message", "details"}}`` with codes ``invalid_parameter``,
  ``api_key_required``/``invalid_api_key`` (401), ``rate_limit_exceeded`` (429, ``details.reset_at``),
  ``no_face_detected``, ``face_count_mismatch``, ``face_index_out_of_range``, ``invalid_image_format`` (400),
  ``server_error`` (500). An out-of-credit answer is UNKNOWN (none documented).
- Rate limits: per API key across all endpoints, e.g. Free 50/hour; **status polls count**. Every answer
  carries ``X-RateLimit-Limit``/``-Remaining``/``-Reset`` (UTC epoch seconds). This adapter remembers the last
  values it saw: :meth:`AIPhotoCraftProvider.quota_delay` says how long to hold off when the quota runs low,
  and once an answer said nothing remains, calls are refused locally (``ProviderUnavailable`` with
  ``retry_after`` up to the reset) instead of spending a request on a certain 429.
- Images: limits UNKNOWN (``invalid_image_format`` exists): inputs are held to JPEG/PNG, 4096 px, 10 MB.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from faceswap.errors import (
    InvalidImage,
    NoFaceDetected,
    PipelineError,
    ProviderOutOfCredit,
    ProviderRejected,
    ProviderTaskFailed,
    ProviderUnavailable,
    SubmitOutcomeUnknown,
)
from faceswap.images import ImageLimits
from faceswap.model import TaskSnapshot, TaskStatus
from faceswap.ports import TaskInput, Webhook
from faceswap.providers.http import (
    KeyedHttpProvider,
    as_int,
    face_indices,
    json_object,
    message_suffix,
    multipart_file,
    post_create,
    redact,
    retry_after,
)

DEFAULT_BASE_URL = "https://aiapi.aiphotocraft.com"
ENDPOINTS = {
    "face-swap": "/api/faceswap/basicswap",
    "multi-face-swap": "/api/faceswap/faceswap2",
    "same-image-swap": "/api/faceswap/swapfacesameimage",
}
LOW_QUOTA_FRACTION = 0.05
"""``quota_delay`` holds off when at most this fraction of the hourly limit (and at least 1 call) remains."""

_DONE = frozenset({"completed", "complete", "succeeded", "success"})
_FAILED = frozenset({"failed", "failure", "error"})
_NO_FACE_HINTS = ("no face", "no_face", "face not found", "failed to detect face")
_TASK_ERROR_CODES = frozenset(
    {"no_face_detected", "face_count_mismatch", "face_index_out_of_range", "invalid_image_format"}
)
_SWAP_INDEX = re.compile(r"^[1-9]\d*,[1-9]\d*$")


@dataclass
class RateLimit:
    """The last ``X-RateLimit-*`` values seen: calls per hour, calls left, and the reset (UTC epoch seconds)."""

    limit: int | None = None
    remaining: int | None = None
    reset_at: float | None = None


class AIPhotoCraftProvider(KeyedHttpProvider):
    """Adapter for AIPhotoCraft's face swap (see the module docstring for the contract).

    Parameters
    ----------
    client
        ``httpx.Client`` with explicit timeouts; this adapter adds the ``X-Api-Key`` header per request.
    api_key
        Returns the AIPhotoCraft API key (read from Secrets Manager, cached; never logged).
    base_url
        ``https://aiapi.aiphotocraft.com`` (:data:`DEFAULT_BASE_URL`) on AWS; the emulator's URL locally.
    result_hosts
        Hosts AIPhotoCraft serves results from (``*.example.com`` for subdomains).
    clock
        UTC epoch seconds now (injected by tests); compared with ``X-RateLimit-Reset``.
    """

    name = "aiphotocraft"
    uses_webhook = False
    json_callbacks = False
    image_limits = ImageLimits(max_side=4096, max_bytes=10 * 1024 * 1024, formats=("JPEG", "PNG"))
    api_key_header = "X-Api-Key"

    def __init__(
        self,
        client: httpx.Client,
        *,
        api_key: Callable[[], str],
        base_url: str,
        result_hosts: tuple[str, ...],
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(client, api_key=api_key, base_url=base_url, result_hosts=result_hosts)
        self._clock = clock
        #: the quota as of the last answer
        self.rate_limit = RateLimit()

    def create_task(self, task: TaskInput, webhook: Webhook | None) -> str:
        """Upload the images to ``basicswap`` (face-swap), ``faceswap2`` (multi-face-swap) or
        ``swapfacesameimage`` (same-image-swap: the target image alone); return the task id.

        Parameters
        ----------
        task
            ``task.options`` may hold ``enhance`` (``true``/``false``, default ``false``). For
            ``multi-face-swap``: ``swap_index`` (AIPhotoCraft's own 1-based ``"2,1"``), or the manifest's
            0-based ``swap_faces_index``/``target_faces_index``, which must then name both target faces 0
            and 1 (the couple swap always replaces both): pairs are ``(swap_faces[i], target_faces[i])`` as for
            PiAPI, one swap index applies to every target face, and ``swap_index`` lists the 1-based source
            face for target face 1, then 2. E.g. ``swap_faces_index="0,1"``, ``target_faces_index="1,0"`` →
            ``swap_index="2,1"``. Without options, faces map by position.
        webhook
            Ignored: AIPhotoCraft has no callbacks.

        Raises
        ------
        ProviderRejected
            Another task, options that do not map, ``invalid_parameter``, a refused key,
            ``face_count_mismatch``/``face_index_out_of_range``, other 4xx.
        NoFaceDetected, InvalidImage
            ``no_face_detected``, ``invalid_image_format``.
        ProviderUnavailable
            Connection failed, 429 ``rate_limit_exceeded`` (``retry_after`` until the reset) or 5xx; also
            when the last answer said no calls remain before the reset (no request is made).
        SubmitOutcomeUnknown
            The upload may have reached AIPhotoCraft (read timeout, dropped connection, no task id).
        """
        endpoint = ENDPOINTS.get(task.task)
        if endpoint is None:
            raise ProviderRejected(
                f"AIPhotoCraft does not offer the task {task.task!r}; use one of {', '.join(ENDPOINTS)}."
            )
        form: dict[str, str] = {}
        if task.task == "same-image-swap":
            files = {"srcimage": multipart_file("target", task.image())}
        else:
            form["enhance"] = _enhance(task.options.get("enhance", "false"))
            files = {
                "srcimage": multipart_file("swap", task.swap_image),
                "targetimage": multipart_file("target", task.image()),
            }
        if task.task == "multi-face-swap":
            swap_index = _swap_index(task.options)
            if swap_index is not None:
                form["swap_index"] = swap_index
        self._refuse_when_exhausted()
        response = post_create(
            self._client,
            f"{self._base_url}{endpoint}",
            label="AIPhotoCraft",
            data=form,
            files=files,
            headers=self._headers(),
        )
        self._record(response)
        body = json_object(response)
        error = self._error(response, body)
        if error is not None:
            raise error
        task_id = _task_id(body or {})
        if task_id is None:
            raise SubmitOutcomeUnknown("AIPhotoCraft answered the create without a task id.")
        return task_id

    def get_task(self, task_id: str) -> TaskSnapshot:
        """Read a task: ``GET /api/task-status/{task_id}`` (this counts against the hourly quota).

        Returns
        -------
        TaskSnapshot
            ``completed`` (or a result URL with no status) → SUCCEEDED with ``result_url`` from ``image_url``
            or ``result``; ``failed`` → FAILED with the classified reason; anything else → RUNNING.

        Raises
        ------
        ProviderUnavailable
            Network error, 429 (``retry_after`` until the reset) or 5xx; or no calls remain before the reset.
        ProviderRejected
            A refused key, 404 (unknown task) or another 4xx that is not about the task's images.
        """
        self._refuse_when_exhausted()
        try:
            response = self._client.get(f"{self._base_url}/api/task-status/{task_id}", headers=self._headers())
        except httpx.HTTPError as e:
            raise ProviderUnavailable(f"AIPhotoCraft task-status failed: {type(e).__name__}.") from e
        self._record(response)
        body = json_object(response)
        error = self._error(response, body)
        if error is not None:
            if _error_code(body) in _TASK_ERROR_CODES:
                return TaskSnapshot(task_id, TaskStatus.FAILED, error=error)
            raise error
        if body is None:
            raise ProviderUnavailable("AIPhotoCraft answered task-status with an unreadable body.")
        data = body.get("data")
        fields = {**data, **body} if isinstance(data, dict) else body
        status = str(fields.get("status") or "").strip().lower()
        url = _result_url(fields)
        if status in _DONE or (not status and url):
            return TaskSnapshot(task_id, TaskStatus.SUCCEEDED, result_url=url)
        if status in _FAILED:
            return TaskSnapshot(task_id, TaskStatus.FAILED, error=self._task_error(fields))
        return TaskSnapshot(task_id, TaskStatus.RUNNING)

    def presented_secret(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        """Always ``None``: AIPhotoCraft never calls back, so no callback can carry a secret."""
        return None

    def task_id_from_callback(self, body: bytes) -> str | None:
        """Always ``None``: AIPhotoCraft has no callbacks."""
        return None

    def quota_delay(self) -> float | None:
        """Seconds to wait before the next call because the hourly quota is nearly spent, or ``None``.

        Returns
        -------
        float or None
            Seconds until ``X-RateLimit-Reset`` when the last answer's ``X-RateLimit-Remaining`` was at most
            ``max(1, 5 % of X-RateLimit-Limit)``; ``None`` when the quota is fine, unknown, or already reset.
        """
        rate = self.rate_limit
        if rate.remaining is None or rate.reset_at is None:
            return None
        low = max(1.0, LOW_QUOTA_FRACTION * rate.limit) if rate.limit else 1.0
        wait = rate.reset_at - self._clock()
        if rate.remaining > low or wait <= 0:
            return None
        return wait

    # ------------------------------------------------------------------------------------------ answers

    def _refuse_when_exhausted(self) -> None:
        rate = self.rate_limit
        if rate.remaining is not None and rate.remaining <= 0 and rate.reset_at is not None:
            wait = rate.reset_at - self._clock()
            if wait > 0:
                raise ProviderUnavailable(
                    f"AIPhotoCraft's hourly quota is spent ({rate.limit} calls); it resets in {wait:.0f} s.",
                    retry_after=wait,
                )

    def _record(self, response: httpx.Response) -> None:
        headers = response.headers
        limit = as_int(headers.get("x-ratelimit-limit"))
        remaining = as_int(headers.get("x-ratelimit-remaining"))
        reset_at = _as_float(headers.get("x-ratelimit-reset"))
        if remaining is not None:
            self.rate_limit = RateLimit(
                limit=limit if limit is not None else self.rate_limit.limit, remaining=remaining, reset_at=reset_at
            )

    def _error(self, response: httpx.Response, body: dict[str, Any] | None) -> PipelineError | None:
        """The classified error of an answer, or ``None`` for a 2xx that is not ``success: false``."""
        status = response.status_code
        if 200 <= status < 300 and not (body is not None and body.get("success") is False):
            return None
        error = body.get("error") if body is not None else None
        error = error if isinstance(error, dict) else {}
        code = _error_code(body)
        message = message_suffix(error.get("message") or (body or {}).get("message"), secret=self._api_key())
        label = f"{status} {code}".strip()
        if code == "rate_limit_exceeded" or status == 429:
            details = error.get("details")
            reset_at = _as_float(details.get("reset_at")) if isinstance(details, dict) else None
            if reset_at is None:
                reset_at = self.rate_limit.reset_at
            delay = max(1.0, reset_at - self._clock()) if reset_at is not None else retry_after(response)
            return ProviderUnavailable(f"AIPhotoCraft's rate limit is reached ({label}){message}.", retry_after=delay)
        if code == "server_error" or status >= 500:
            return ProviderUnavailable(f"AIPhotoCraft answered {label}{message}.", retry_after=retry_after(response))
        if code == "no_face_detected":
            return NoFaceDetected(f"AIPhotoCraft found no face to swap ({label}){message}.")
        if code == "invalid_image_format":
            return InvalidImage(f"AIPhotoCraft could not read an input image ({label}){message}.")
        if code in ("face_count_mismatch", "face_index_out_of_range"):
            return ProviderRejected(f"AIPhotoCraft could not match the faces ({label}){message}.")
        if code in ("invalid_api_key", "api_key_required") or status in (401, 403):
            return ProviderRejected(f"AIPhotoCraft refused the API key ({label}){message}.")
        if status == 402 or "credit" in code:
            return ProviderOutOfCredit(f"AIPhotoCraft says the account is out of credit ({label}){message}.")
        return ProviderRejected(f"AIPhotoCraft rejected the request ({label}){message}.")

    def _task_error(self, fields: Mapping[str, Any]) -> PipelineError:
        raw = fields.get("error")
        error = raw if isinstance(raw, dict) else {}
        code = str(error.get("code") or "").strip().lower()
        text = str(fields.get("message") or error.get("message") or (raw if isinstance(raw, str) else "") or "")
        text = redact(text, self._api_key())[:300]
        summary = text or "no reason given"
        if code == "no_face_detected" or any(hint in text.lower() for hint in _NO_FACE_HINTS):
            return NoFaceDetected(f"AIPhotoCraft found no face to swap: {summary}.")
        if code == "invalid_image_format":
            return InvalidImage(f"AIPhotoCraft could not read an input image: {summary}.")
        if code in ("face_count_mismatch", "face_index_out_of_range"):
            return ProviderRejected(f"AIPhotoCraft could not match the faces: {summary}.")
        return ProviderTaskFailed(f"AIPhotoCraft failed the task: {summary}.")


def _enhance(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value).strip().lower()
    if text not in ("true", "false"):
        raise ProviderRejected(f'AIPhotoCraft\'s enhance option must be "true" or "false", not {str(value)[:20]!r}.')
    return text


def _swap_index(options: Mapping[str, Any]) -> str | None:
    """AIPhotoCraft's 1-based ``swap_index`` for ``faceswap2`` (see ``create_task``), or ``None`` for by-position."""
    if options.get("swap_index") not in (None, ""):
        text = str(options["swap_index"]).replace(" ", "")
        if not _SWAP_INDEX.match(text):
            raise ProviderRejected(f'AIPhotoCraft\'s swap_index must look like "2,1", not {text[:20]!r}.')
        return text
    target_option, swap_option = options.get("target_faces_index"), options.get("swap_faces_index")
    if target_option in (None, "") and swap_option in (None, ""):
        return None
    targets = face_indices(target_option, default=[0, 1])
    swaps = face_indices(swap_option, default=[0])
    if len(swaps) == 1:
        swaps = swaps * len(targets)
    if len(swaps) != len(targets) or sorted(targets) != [0, 1] or any(s not in (0, 1) for s in swaps):
        raise ProviderRejected(
            "AIPhotoCraft's couple swap replaces both faces of a two-face target with faces 0/1 of a two-face "
            "swap image: target_faces_index must name faces 0 and 1 once each."
        )
    source_for = dict(zip(targets, swaps, strict=True))
    return f"{source_for[0] + 1},{source_for[1] + 1}"


def _task_id(body: Mapping[str, Any]) -> str | None:
    data = body.get("data")
    candidates = (body.get("task_id"), data.get("task_id") if isinstance(data, dict) else None, body.get("id"))
    for candidate in candidates:
        if isinstance(candidate, int) and not isinstance(candidate, bool):
            return str(candidate)
        if isinstance(candidate, str) and candidate:
            return candidate
    return None


def _result_url(fields: Mapping[str, Any]) -> str | None:
    for key in ("image_url", "result"):
        value = fields.get(key)
        if isinstance(value, dict):
            value = value.get("image_url") or value.get("url")
        if isinstance(value, str) and value.startswith(("https://", "http://")):
            return value
    return None


def _error_code(body: Mapping[str, Any] | None) -> str:
    error = body.get("error") if body is not None else None
    return str(error.get("code") or "").strip().lower() if isinstance(error, dict) else ""


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(str(value).strip())
    except ValueError:
        return None
