"""AILabAPI (AILabTools) "AI Face Swap": multipart file upload, asynchronous task, polling only.

Contract: ``providers.md`` §2 (https://www.ailabtools.com/docs/ai-portrait/editing/ai-face-swap/api,
https://www.ailabtools.com/docs/ai-common/async-task-results/api, https://ailabtools.com/doc/response-description).

- Create: ``POST {base}/api/portrait/editing/ai-face-swap`` with header ``ailabapi-api-key``; multipart files
  ``image_target`` (the image whose face is replaced) and ``image_template`` (supplies the new face). Files only:
  no URL or base64 parameter exists. Answer ``{request_id, log_id, error_code, error_code_str, error_msg,
  error_detail: {status_code, code, code_message, message}, task_type: "async", task_id}``.
- Read: ``GET {base}/api/common/query-async-task-result?task_id=``; ``task_status`` 0 queued, 1 processing,
  2 succeeded. There is no "failed" value: a failed task answers a non-zero ``error_code`` (equal to the HTTP
  status, e.g. 422 ``ERROR_NO_FACE_IN_FILE``). The result URL is ``data.image``, valid for 24 hours.
- Success is HTTP 200 **and** ``error_code == 0``. Errors are classified by ``error_detail.code``
  (``error_code_str`` is "gradually deprecated" and only a fallback). Out of credit is a **429**
  (``ERROR_NOT_ENOUGH_CREDITS``), not a 402; any other 429 is a rate limit.
- Images: JPEG/PNG only, at most 5 MB and under 4096x4096 pixels each (the prepare step fits them).
- No webhook; AILab recommends querying every 5 seconds. Multi-face swap is not offered.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from faceswap.errors import (
    InvalidImage,
    NoFaceDetected,
    PipelineError,
    ProviderOutOfCredit,
    ProviderRejected,
    ProviderUnavailable,
    SubmitOutcomeUnknown,
)
from faceswap.images import ImageLimits
from faceswap.model import TaskSnapshot, TaskStatus, after, utcnow
from faceswap.ports import TaskInput, Webhook
from faceswap.providers.http import (
    KeyedHttpProvider,
    as_int,
    json_object,
    message_suffix,
    multipart_file,
    post_create,
    retry_after,
)
from faceswap.providers.registry import PROVIDERS

TASKS = PROVIDERS["ailabapi"].tasks
RESULT_RETENTION_SECONDS = 24 * 3600
CREATE_PATH = "/api/portrait/editing/ai-face-swap"
QUERY_PATH = "/api/common/query-async-task-result"

_STATUS = {0: TaskStatus.QUEUED, 1: TaskStatus.RUNNING, 2: TaskStatus.SUCCEEDED}

#: ``error_detail.code`` values that say the input image itself is unusable (DOC response-description).
_INVALID_IMAGE_CODES = frozenset(
    {"FILE_DECODING_FAILURE", "UNSUPPORTED_FILE_TYPES", "FILE_SIZE_EXCEEDS_LIMIT", "FILE_RESOLUTION_EXCEEDS_LIMITS"}
)
_OUT_OF_CREDIT = "ERROR_NOT_ENOUGH_CREDITS"
_NO_FACE = "ERROR_NO_FACE_IN_FILE"


class AILabAPIProvider(KeyedHttpProvider):
    """Adapter for AILabAPI's AI Face Swap (see the module docstring for the contract).

    Parameters
    ----------
    client
        ``httpx.Client`` with explicit timeouts; this adapter adds the ``ailabapi-api-key`` header per request.
    api_key
        Returns the AILabAPI key (read from Secrets Manager, cached; never logged).
    base_url
        ``https://www.ailabapi.com`` on AWS; the emulator's URL locally.
    result_hosts
        Hosts AILabAPI serves results from (``*.example.com`` for subdomains).
    """

    name = "ailabapi"
    uses_webhook = False
    json_callbacks = False
    image_limits = ImageLimits(max_side=4095, max_bytes=5 * 1024 * 1024, formats=("JPEG", "PNG"))
    api_key_header = "ailabapi-api-key"

    def create_task(self, task: TaskInput, webhook: Webhook | None) -> str:
        """Upload both images and return AILabAPI's ``task_id``.

        Parameters
        ----------
        task
            ``task.task`` must be ``face-swap``; the target image goes in ``image_target``, the swap face in
            ``image_template``. Options are ignored (the endpoint has none).
        webhook
            Ignored: AILabAPI has no callbacks (``uses_webhook`` is ``False``).

        Raises
        ------
        ProviderRejected
            Multi-face swap or another task; 400/401/403/4xx answers AILabAPI will keep giving.
        InvalidImage
            413/415/422 about the file itself (size, resolution, type, decoding).
        NoFaceDetected
            422 ``ERROR_NO_FACE_IN_FILE``.
        ProviderOutOfCredit
            429 ``ERROR_NOT_ENOUGH_CREDITS``.
        ProviderUnavailable
            Connection failed before sending, another 429 (``retry_after`` from ``Retry-After``) or 5xx.
        SubmitOutcomeUnknown
            The upload may have reached AILabAPI (read timeout, dropped connection, no ``task_id``).
        """
        if task.task == "multi-face-swap":
            raise ProviderRejected("AILabAPI does not offer multi-face-swap.")
        if task.task not in TASKS:
            raise ProviderRejected(f"AILabAPI does not offer the task {task.task!r}; use face-swap.")
        files = {
            "image_target": multipart_file("target", task.image()),
            "image_template": multipart_file("swap", task.swap_image),
        }
        response = post_create(
            self._client, f"{self._base_url}{CREATE_PATH}", label="AILabAPI", files=files, headers=self._headers()
        )
        body = json_object(response)
        error = self._error(response, body)
        if error is not None:
            raise error
        task_id = body.get("task_id") if body is not None else None
        if not isinstance(task_id, str) or not task_id:
            raise SubmitOutcomeUnknown("AILabAPI answered the create without a task_id.")
        return task_id

    def get_task(self, task_id: str) -> TaskSnapshot:
        """Read a task: ``GET /api/common/query-async-task-result?task_id=``.

        Returns
        -------
        TaskSnapshot
            ``task_status`` 0 → QUEUED, 1 → RUNNING, 2 → SUCCEEDED with ``result_url`` from ``data.image`` and
            an expiry 24 h from now; anything else → RUNNING. A task-level failure (non-zero ``error_code``
            such as 422 ``ERROR_NO_FACE_IN_FILE``, 413/415, or 429 ``ERROR_NOT_ENOUGH_CREDITS``) → FAILED with
            the classified error.

        Raises
        ------
        ProviderUnavailable
            Network error, 429 rate limit or 5xx (a task that failed with a 5xx therefore ends as a timeout).
        ProviderRejected
            401/403 (the key), 400 or 404 (e.g. an unknown ``task_id``).
        """
        try:
            response = self._client.get(
                f"{self._base_url}{QUERY_PATH}", params={"task_id": task_id}, headers=self._headers()
            )
        except httpx.HTTPError as e:
            raise ProviderUnavailable(f"AILabAPI task query failed: {type(e).__name__}.") from e
        body = json_object(response)
        error = self._error(response, body)
        if error is not None:
            if isinstance(error, ProviderUnavailable) or response.status_code in (400, 401, 403, 404):
                raise error
            return TaskSnapshot(task_id, TaskStatus.FAILED, error=error)
        if body is None:
            raise ProviderUnavailable("AILabAPI answered the task query with an unreadable body.")
        task_status = as_int(body.get("task_status"))
        status = _STATUS.get(task_status, TaskStatus.RUNNING) if task_status is not None else TaskStatus.RUNNING
        if status is TaskStatus.SUCCEEDED:
            data = body.get("data")
            image = data.get("image") if isinstance(data, dict) else None
            return TaskSnapshot(
                task_id,
                status,
                result_url=image if isinstance(image, str) and image else None,
                result_url_expires_at=after(utcnow(), RESULT_RETENTION_SECONDS),
            )
        return TaskSnapshot(task_id, status)

    def presented_secret(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        """Always ``None``: AILabAPI never calls back, so no callback can carry a secret."""
        return None

    def task_id_from_callback(self, body: bytes) -> str | None:
        """Always ``None``: AILabAPI has no callbacks."""
        return None

    def _error(self, response: httpx.Response, body: dict[str, Any] | None) -> PipelineError | None:
        """The classified error of an answer, or ``None`` for HTTP 200 with ``error_code`` 0 (or none)."""
        status = response.status_code
        error_code = as_int(body.get("error_code")) if body is not None else None
        if 200 <= status < 300 and error_code in (0, None):
            return None
        if 200 <= status < 300:
            status = error_code if error_code is not None and error_code >= 400 else 500
        detail = body.get("error_detail") if body is not None else None
        detail = detail if isinstance(detail, dict) else {}
        code = str(detail.get("code") or (body or {}).get("error_code_str") or "").strip().upper()
        message = _message(body, detail, redact=self._api_key())
        label = f"{status} {code}".strip()
        return _classify(status, code, label, message, retry_after=retry_after(response))


def _classify(status: int, code: str, label: str, message: str, *, retry_after: float | None) -> PipelineError:
    if status == 429:
        if code == _OUT_OF_CREDIT:
            return ProviderOutOfCredit(f"AILabAPI says the account is out of credit ({label}){message}.")
        return ProviderUnavailable(f"AILabAPI is limiting requests ({label}){message}.", retry_after=retry_after)
    if status >= 500:
        return ProviderUnavailable(f"AILabAPI answered {label}{message}.", retry_after=retry_after)
    if status in (401, 403):
        return ProviderRejected(f"AILabAPI refused the API key or account ({label}){message}.")
    if code == _NO_FACE:
        return NoFaceDetected(f"AILabAPI found no face to swap ({label}){message}.")
    if code in _INVALID_IMAGE_CODES or (status in (413, 415) and not code):
        return InvalidImage(f"AILabAPI could not use an input image ({label}){message}.")
    # 400 ERROR_PARAMETERS, 404, 422 ERROR_FACE_COUNT_INVALID / ERROR_CONTENT_NON_COMPLIANCE, …: refusals.
    return ProviderRejected(f"AILabAPI rejected the request ({label}){message}.")


def _message(body: dict[str, Any] | None, detail: dict[str, Any], *, redact: str) -> str:
    message = detail.get("message") or (body or {}).get("error_msg") or detail.get("code_message")
    return message_suffix(message, secret=redact)
