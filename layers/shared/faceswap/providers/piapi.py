"""PiAPI's unified task API, model ``Qubico/image-toolkit``, task types ``face-swap`` and ``multi-face-swap``.

Contract: ``providers.md`` §1 (https://piapi.ai/docs/faceswap-api/faceswap,
https://piapi.ai/docs/unified-webhook, https://piapi.ai/docs/dream-machine/get-task).

- Create: ``POST {base}/api/v1/task`` with ``x-api-key``; JSON ``{model, task_type, input, config}``, where
  ``config.webhook_config = {endpoint, secret}``; the secret comes back in the ``x-webhook-secret`` header.
- Read: ``GET {base}/api/v1/task/{task_id}``; ``data.status`` in Completed/Processing/Pending/Failed/Staged,
  compared case-insensitively; the result URL is ``data.output.image_url``; failures in ``data.error``.
- Images: each under 2048x2048, as a URL or base64. Base64 is used: it is documented, needs no public URL
  of our bucket, and avoids the unknown of whether PiAPI accepts presigned URLs that end in a query string.
- Results are kept about 3 days (Qubico's output-storage doc), so the expiry recorded is 3 days.
- Video (``providers.md`` §7, https://piapi.ai/docs/faceswap-api/video-faceswap): model ``Qubico/video-toolkit``,
  task type ``face-swap``, ``input: {swap_image, target_video, swap_faces_index?, target_faces_index?}`` with the
  video by URL (a presigned URL of the MP4 fitted to 600 frames, 720p and 10 MB) and the face indices as for images;
  the result is ``data.output.video_url``. Whether PiAPI keeps the audio is
  not documented: the collector restores it when it is missing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

from faceswap.errors import (
    NoFaceDetected,
    ProviderOutOfCredit,
    ProviderRejected,
    ProviderTaskFailed,
    ProviderUnavailable,
    SubmitOutcomeUnknown,
)
from faceswap.images import ImageLimits
from faceswap.model import TaskSnapshot, TaskStatus, after, utcnow
from faceswap.ports import TaskInput, Webhook
from faceswap.providers.http import KeyedHttpProvider, as_base64, message_suffix, post_create, redact, retry_after
from faceswap.providers.registry import PROVIDERS

MODEL = "Qubico/image-toolkit"
VIDEO_MODEL = "Qubico/video-toolkit"
TASKS = PROVIDERS["piapi"].tasks
RESULT_RETENTION_SECONDS = 3 * 24 * 3600

_STATUS = {
    "pending": TaskStatus.QUEUED,
    "staged": TaskStatus.QUEUED,
    "processing": TaskStatus.RUNNING,
    "completed": TaskStatus.SUCCEEDED,
    "failed": TaskStatus.FAILED,
}

_NO_FACE_HINTS = ("no face", "face not found", "failed to detect face", "no_face", "out of range")
"""Failure texts meaning the image has no (such) face: a face index past the faces found is no face there."""


class PiAPIProvider(KeyedHttpProvider):
    """Adapter for PiAPI (see the module docstring for the contract).

    Parameters
    ----------
    client
        ``httpx.Client`` with explicit timeouts; this adapter adds the ``x-api-key`` header per request.
    api_key
        Returns the PiAPI API key (read from Secrets Manager, cached; never logged).
    base_url
        ``https://api.piapi.ai`` on AWS; the emulator's URL locally.
    result_hosts
        Hosts PiAPI serves results from (``*.example.com`` for subdomains).
    """

    name = "piapi"
    uses_webhook = True
    json_callbacks = True  # a JSON POST (providers.md §1.2); the header's value is inferred from that
    image_limits = ImageLimits(max_side=2048, max_bytes=10 * 1024 * 1024, formats=("JPEG", "PNG", "WEBP"))
    api_key_header = "x-api-key"

    def create_task(self, task: TaskInput, webhook: Webhook | None) -> str:
        """Create a face-swap task and return PiAPI's ``task_id``.

        Parameters
        ----------
        task
            ``task.task`` is ``face-swap`` or ``multi-face-swap``; for the latter ``task.options`` may hold
            ``swap_faces_index`` / ``target_faces_index`` (strings such as ``"0"`` or ``"1,0"``).
        webhook
            Callback URL and per-job secret, sent as ``config.webhook_config``.

        Raises
        ------
        ProviderRejected
            A 4xx answer, or a body whose ``code`` is not 200.
        ProviderUnavailable
            Connection refused/failed before sending, 429 or 5xx: no task was created.
        SubmitOutcomeUnknown
            The request may have reached PiAPI (read timeout, dropped connection, unreadable answer).
        """
        if task.task not in TASKS:
            raise ProviderRejected(f"PiAPI does not offer the task {task.task!r}; use one of {', '.join(TASKS)}.")
        body: dict[str, Any]
        if task.target_video is not None:
            if task.video_urls is None:
                raise ProviderRejected("PiAPI takes a target video by URL, and this deployment has none to give.")
            video_url, _ = task.video_urls()
            body = {
                "model": VIDEO_MODEL,
                "task_type": "face-swap",
                "input": {"swap_image": as_base64(task.swap_image.data), "target_video": video_url},
                "config": {"service_mode": "public"},
            }
        else:
            body = {
                "model": MODEL,
                "task_type": task.task,
                "input": {
                    "target_image": as_base64(task.image().data),
                    "swap_image": as_base64(task.swap_image.data),
                },
                "config": {"service_mode": "public"},
            }
        if task.task == "multi-face-swap" or task.target_video is not None:  # the video task takes them on face-swap
            for option in ("swap_faces_index", "target_faces_index"):
                if option in task.options:
                    body["input"][option] = str(task.options[option])
        if webhook is not None:
            body["config"]["webhook_config"] = {"endpoint": webhook.url, "secret": webhook.secret}
        response = post_create(
            self._client, f"{self._base_url}/api/v1/task", label="PiAPI", json=body, headers=self._headers()
        )
        self._raise_for_status(response, creating=True)
        try:
            task_id = response.json()["data"]["task_id"]
        except (ValueError, KeyError, TypeError) as e:
            raise SubmitOutcomeUnknown("PiAPI answered the create without a task_id.") from e
        if not isinstance(task_id, str) or not task_id:
            raise SubmitOutcomeUnknown("PiAPI answered the create without a task_id.")
        return task_id

    def get_task(self, task_id: str) -> TaskSnapshot:
        """Read a task: ``GET /api/v1/task/{task_id}``.

        Returns
        -------
        TaskSnapshot
            Status mapped case-insensitively (pending/staged → QUEUED, processing → RUNNING, completed →
            SUCCEEDED, failed → FAILED; unknown values → RUNNING, so the poller keeps looking until the
            deadline). ``result_url`` from ``data.output.image_url`` (``video_url`` for a video; also
            ``url``/``output_url``).

        Raises
        ------
        ProviderUnavailable
            Network error, 429 or 5xx.
        ProviderRejected
            Other 4xx (e.g. the task does not exist).
        """
        try:
            response = self._client.get(f"{self._base_url}/api/v1/task/{task_id}", headers=self._headers())
        except httpx.HTTPError as e:
            raise ProviderUnavailable(f"PiAPI get-task failed: {type(e).__name__}.") from e
        self._raise_for_status(response, creating=False)
        try:
            data = response.json()["data"]
        except (ValueError, KeyError, TypeError) as e:
            raise ProviderUnavailable("PiAPI answered get-task with an unreadable body.") from e
        return self.snapshot(task_id, data)

    def snapshot(self, task_id: str, data: dict[str, Any]) -> TaskSnapshot:
        """Turn PiAPI's task object (``data`` of get-task, or of a webhook body) into a :class:`TaskSnapshot`."""
        status = _STATUS.get(str(data.get("status", "")).strip().lower(), TaskStatus.RUNNING)
        if status is TaskStatus.SUCCEEDED:
            output = data.get("output") or {}
            url = next(
                (output[k] for k in ("image_url", "video_url", "url", "output_url") if isinstance(output.get(k), str)),
                None,
            )
            return TaskSnapshot(
                task_id, status, result_url=url, result_url_expires_at=after(utcnow(), RESULT_RETENTION_SECONDS)
            )
        if status is TaskStatus.FAILED:
            return TaskSnapshot(task_id, status, error=_task_error(data.get("error") or {}, secret=self._api_key()))
        return TaskSnapshot(task_id, status)

    def presented_secret(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        """PiAPI sends the secret given in ``webhook_config.secret`` back in the ``x-webhook-secret`` header."""
        return headers.get("x-webhook-secret")

    def task_id_from_callback(self, body: bytes) -> str | None:
        """``data.task_id`` of a webhook body ``{timestamp, data}``, or ``None`` if absent or unreadable."""
        try:
            task_id = json.loads(body)["data"]["task_id"]
        except (ValueError, KeyError, TypeError):
            return None
        return task_id if isinstance(task_id, str) and task_id else None

    def _raise_for_status(self, response: httpx.Response, *, creating: bool) -> None:
        status = response.status_code
        # PiAPI's message is repeated in the error; never let it carry our key back out (e.g. "invalid key …").
        message = _envelope_message(response, redact=self._api_key())
        if status == 429 or status >= 500:
            raise ProviderUnavailable(f"PiAPI answered {status}{message}.", retry_after=retry_after(response))
        if status in (401, 403):
            raise ProviderRejected(f"PiAPI refused the API key ({status}){message}.")
        if status == 402:
            raise ProviderOutOfCredit(f"PiAPI says the account is out of credit{message}.")
        if status >= 400:
            raise ProviderRejected(f"PiAPI rejected the request ({status}){message}.")
        if creating:
            try:
                code = response.json().get("code", 200)
            except (ValueError, AttributeError):
                return
            if code not in (200, "200", None):
                raise ProviderRejected(f"PiAPI rejected the request (code {code}){message}.")


def _envelope_message(response: httpx.Response, *, redact: str) -> str:
    try:
        message = response.json().get("message")
    except (ValueError, AttributeError):
        return ""
    return message_suffix(message, secret=redact)


def _task_error(error: dict[str, Any], *, secret: str) -> Exception:
    """A failed task's error, its text redacted of the API key (PiAPI may echo a request back) before it is cut."""
    parts = dict.fromkeys(str(error.get(k) or "").strip() for k in ("message", "raw_message"))  # once each
    text = redact(" ".join(p for p in parts if p), secret)
    summary = text[:300] or "no reason given"
    if any(hint in text.lower() for hint in _NO_FACE_HINTS):
        return NoFaceDetected(f"PiAPI found no face to swap: {summary}.")
    if "valid image" in text.lower():
        return ProviderTaskFailed(f"PiAPI could not use an input image: {summary}.", retryable=False)
    return ProviderTaskFailed(f"PiAPI failed the task: {summary}.")
