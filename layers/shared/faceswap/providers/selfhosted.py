"""The self-hosted engine (``engine/``), as a provider named ``selfhosted``: no account, no per-swap cost.

Contract: ``engine/faceswap_engine/server.py`` (module docstring), summarised:

- Create: ``POST {base}/v1/tasks`` JSON ``{task, target_image, swap_image (base64), swap_face_index,
  target_face_indices, webhook: {url, secret}}`` → ``202 {task_id, status}``; optional ``Authorization: Bearer``.
- Read: ``GET {base}/v1/tasks/{task_id}`` → ``{task_id, status: queued|running|succeeded|failed, result_url,
  error: {code, message}}``.
- Webhook: ``POST`` with ``x-webhook-secret`` and ``{task_id, status}`` when a task ends.
- Images: any size the engine can decode; inputs are capped at 4096 px and 20 MB like the other providers.
- Options for ``multi-face-swap``: ``swap_faces_index`` (one index) and ``target_faces_index`` (``"1"`` or
  ``"0,1"``), as in manifests; faces are numbered left to right from 0, as PiAPI numbers them.
- A face map's chosen faces go natively as ``faces: [{box, swap_image}]`` (boxes in pixels of the target sent).
- A target video goes as ``target_video_url`` (a presigned URL of the fitted MP4) instead of ``target_image``, with
  the face indices as for images (task ``face-swap``; the target's counted in the first frame, each followed); the
  result is an MP4 with the video's audio.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from faceswap.errors import (
    InvalidImage,
    NoFaceDetected,
    PoseMismatch,
    ProviderRejected,
    ProviderTaskFailed,
    ProviderUnavailable,
    SubmitOutcomeUnknown,
)
from faceswap.images import ImageLimits
from faceswap.model import TaskSnapshot, TaskStatus
from faceswap.ports import TaskInput, Webhook
from faceswap.providers.http import as_base64, post_create, retry_after

_STATUS = {
    "queued": TaskStatus.QUEUED,
    "running": TaskStatus.RUNNING,
    "succeeded": TaskStatus.SUCCEEDED,
    "failed": TaskStatus.FAILED,
}


class SelfhostedProvider:
    """Adapter for the self-hosted engine.

    Parameters
    ----------
    client
        ``httpx.Client`` with explicit timeouts.
    base_url
        Where the engine listens (its ``/v1`` API).
    result_hosts
        Hosts its result URLs may come from (the engine's own host).
    token
        Returns the bearer token, if the engine requires one.
    """

    name = "selfhosted"
    uses_webhook = True
    json_callbacks = True  # the engine's server posts application/json
    image_limits = ImageLimits(max_side=4096, max_bytes=20 * 1024 * 1024, formats=("JPEG", "PNG", "WEBP"))

    def __init__(
        self,
        client: httpx.Client,
        *,
        base_url: str,
        result_hosts: tuple[str, ...],
        token: Callable[[], str] | None = None,
    ) -> None:
        self._client = client
        self._base_url = base_url.rstrip("/")
        self.result_hosts = result_hosts
        self._token = token

    def create_task(self, task: TaskInput, webhook: Webhook | None) -> str:
        """Create an engine task; see :meth:`faceswap.ports.Provider.create_task` for the errors raised."""
        if task.target_video is not None:
            return self._create(self._video_body(task, webhook))
        body: dict[str, Any] = {
            "task": task.task,
            "target_image": as_base64(task.image().data),
            "swap_image": as_base64(task.swap_image.data),
            **_face_indices(task.options),
            "webhook": {"url": webhook.url, "secret": webhook.secret} if webhook else None,
        }
        if task.faces:  # a face map: the engine takes the chosen faces' boxes natively
            body["faces"] = [
                {"box": list(face.box), "swap_image": as_base64(face.swap_image.data)} for face in task.faces
            ]
        return self._create(body)

    def _video_body(self, task: TaskInput, webhook: Webhook | None) -> dict[str, Any]:
        """A video task's body: the fitted video by URL (stored now), the swap face inline."""
        if task.video_urls is None:
            raise ProviderRejected("The self-hosted engine takes a target video by URL, and this deployment has none.")
        video_url, _ = task.video_urls()
        body: dict[str, Any] = {
            "task": "face-swap",
            "target_video_url": video_url,
            "swap_image": as_base64(task.swap_image.data),
            **_face_indices(task.options),
            "webhook": {"url": webhook.url, "secret": webhook.secret} if webhook else None,
        }
        if task.faces:  # a face map: the chosen faces' boxes in the first frame, each followed through the video
            body["faces"] = [
                {"box": list(face.box), "swap_image": as_base64(face.swap_image.data)} for face in task.faces
            ]
        return body

    def _create(self, body: dict[str, Any]) -> str:
        response = post_create(
            self._client,
            f"{self._base_url}/v1/tasks",
            label="The self-hosted engine",
            json=body,
            headers=self._headers(),
        )
        self._raise_for_status(response)
        try:
            task_id = response.json()["task_id"]
        except (ValueError, KeyError, TypeError) as e:
            raise SubmitOutcomeUnknown("The self-hosted engine answered without a task_id.") from e
        return str(task_id)

    def get_task(self, task_id: str) -> TaskSnapshot:
        """Read a task's status; see :meth:`faceswap.ports.Provider.get_task`."""
        try:
            response = self._client.get(f"{self._base_url}/v1/tasks/{task_id}", headers=self._headers())
        except httpx.HTTPError as e:
            raise ProviderUnavailable(f"The self-hosted engine failed to answer: {type(e).__name__}.") from e
        self._raise_for_status(response)
        try:
            data = response.json()
        except ValueError as e:
            raise ProviderUnavailable("The self-hosted engine answered with an unreadable body.") from e
        status = _STATUS.get(str(data.get("status", "")).lower(), TaskStatus.RUNNING)
        if status is TaskStatus.FAILED:
            return TaskSnapshot(task_id, status, error=_task_error(data.get("error") or {}))
        return TaskSnapshot(
            task_id, status, result_url=data.get("result_url") if status is TaskStatus.SUCCEEDED else None
        )

    def presented_secret(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        """The engine sends the webhook secret back in the ``x-webhook-secret`` header."""
        return headers.get("x-webhook-secret")

    def task_id_from_callback(self, body: bytes) -> str | None:
        """``task_id`` of a webhook body, or ``None``."""
        try:
            task_id = json.loads(body)["task_id"]
        except (ValueError, KeyError, TypeError):
            return None
        return task_id if isinstance(task_id, str) and task_id else None

    def quota_delay(self) -> float | None:
        """The engine has no call quota."""
        return None

    def _headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self._token()}"} if self._token else {}

    def _raise_for_status(self, response: httpx.Response) -> None:
        if response.status_code == 429 or response.status_code >= 500:
            raise ProviderUnavailable(
                f"The self-hosted engine answered {response.status_code}.", retry_after=retry_after(response)
            )
        if response.status_code >= 400:
            raise ProviderRejected(f"The self-hosted engine rejected the request ({response.status_code}).")


def _face_indices(options: Mapping[str, Any]) -> dict[str, Any]:
    """The request's face index options as the engine's ``swap_face_index`` (the first one) and
    ``target_face_indices`` (``None``: the engine's default face)."""
    return {
        "swap_face_index": int(str(options.get("swap_faces_index", "0")).split(",")[0]),
        "target_face_indices": _indices(options.get("target_faces_index")),
    }


def _indices(value: Any) -> list[int] | None:
    # Unlike http.face_indices: no default list, and a malformed index raises ValueError, not ProviderRejected.
    if value is None or value == "":
        return None
    return [int(part) for part in str(value).split(",")]


def _task_error(error: dict[str, Any]) -> Exception:
    code, message = str(error.get("code", "")), str(error.get("message") or "no reason given")[:300]
    if code == "no_face_detected":
        return NoFaceDetected(f"The engine found no face: {message}.")
    if code == "invalid_image":
        return InvalidImage(f"The engine could not read an image: {message}.")
    if code == "face_index_out_of_range":
        return ProviderTaskFailed(f"The engine could not use the face indices: {message}.", retryable=False)
    if code == "pose_mismatch":
        # Another provider (a model, not a classical warp) may manage it: retryable, so a face map's failover applies.
        return PoseMismatch(f"The self-hosted engine cannot swap these faces: {message}.")
    if code == "chosen_face_not_found":
        return ProviderTaskFailed(
            f"The engine found no face where the face matcher chose one: {message}.", retryable=False
        )
    return ProviderTaskFailed(f"The engine failed the task: {message}.")
