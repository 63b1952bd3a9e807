"""CRUN (crun.ai) job API, models ``image-face-swap`` and ``image-face-swap-multi``: image URLs in, callback out.

Contract: ``providers.md`` §3 (https://docs.crun.ai/ai-tools/face-swap/image-face-swap,
https://docs.crun.ai/ai-tools/face-swap/image-face-swap-multi, https://docs.crun.ai/ai-tools/face-swap/detect-face-image,
https://docs.crun.ai/ai-tools/face-swap/detect-face-result, https://docs.crun.ai/models/common/get-task-info).

- Create: ``POST {base}/api/v1/client/job/CreateTask`` with ``x-api-key``; JSON ``{model, callback_url, input}``.
  Single face: ``input = {image_url, new_face, disable_safety_checker}``. Answer ``{"code": 200, "message":
  "success", "data": {"task_id"}}``. CRUN reports failures in the HTTP status and/or the body ``code``; both
  are checked. CreateTask is never retried here: a retry can create a second charged task.
- Multi face: first ``POST /api/v1/client/job/detect-face-image {image_url}`` → ``data.detect_task_id``, then
  ``GET /api/v1/client/job/detect-face-result?detect_task_id=`` until ``data.status`` is ``succeeded`` (bounded
  inside ``create_task``); ``data.result.id`` is the ``detect_id`` (valid 1 h) and ``data.result.faces`` lists
  ``{id, link}``. Then ``model: image-face-swap-multi`` with ``input = {detect_id, image_url (the same URL as
  detection), faces: [{face_id, target}], disable_safety_checker}``.
- Read: ``GET {base}/api/v1/client/job/TaskInfo?task_id=``; ``data.status`` pending/running/success/failed
  (case-insensitive); the result URL is ``data.result.media_urls[0]``; failures in ``data.result.code`` /
  ``data.result.message``. The result lifetime is UNKNOWN (signed, probably short), so no expiry is recorded.
- Callback: ``callback_url`` per task. CRUN documents **no secret or signature**, so the per-job secret travels
  as the ``token`` query parameter of the callback URL (a capability URL, providers.md §6.4); the callback body
  is UNKNOWN and only used to find a task id. Note that TaskInfo echoes ``param.callback_url`` (with the token).
- Face maps (``detect-crop``): the multi-face flow, with each chosen ``face_id`` found by scoring the detection's
  face crops (``faces[].link``, read from CRUN's result hosts) against the references.
- Images: URLs only (no base64), so ``TaskInput.image_urls`` must supply presigned GET URLs. Size and format
  limits are UNKNOWN: inputs are held to 4096 px and 10 MB, JPEG/PNG/WebP.
- Video (``providers.md`` §7, https://docs.crun.ai/ai-tools/face-swap/video-face-swap): model ``video-face-swap``
  "replaces the primary face in a video", no detection first, ``input = {video_url, new_face,
  disable_safety_checker}``: the key names are ASSUMED to follow the image model's (``image_url`` → ``video_url``),
  as the stored docs do not show them; the result comes as for images (``data.result.media_urls[0]``).
- Codes: 401 unauthorized, 402 insufficient credits, 404 not found, 422 validation, 429 rate-limited, 455
  maintenance, 500 server error, 501 generation failed, 505 feature disabled.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

import httpx

from faceswap.errors import (
    NoFaceDetected,
    PipelineError,
    ProviderOutOfCredit,
    ProviderRejected,
    ProviderTaskFailed,
    ProviderUnavailable,
    SubmitOutcomeUnknown,
)
from faceswap.fetch import host_allowed
from faceswap.images import ImageLimits
from faceswap.model import TaskSnapshot, TaskStatus
from faceswap.ports import TaskInput, Webhook
from faceswap.providers.http import (
    KeyedHttpProvider,
    as_int,
    face_indices,
    json_object,
    message_suffix,
    post_create,
    redact,
    retry_after,
)
from faceswap.providers.registry import PROVIDERS

JOB_API = "/api/v1/client/job"
MAX_CROP_BYTES = 5 * 1024 * 1024
"""Largest face crop read from a detection's ``faces[].link``."""
SINGLE_MODEL = "image-face-swap"
VIDEO_MODEL = "video-face-swap"
MULTI_MODEL = "image-face-swap-multi"
TASKS = PROVIDERS["crun"].tasks

_STATUS = {
    "pending": TaskStatus.QUEUED,
    "queued": TaskStatus.QUEUED,
    "starting": TaskStatus.QUEUED,
    "running": TaskStatus.RUNNING,
    "processing": TaskStatus.RUNNING,
    "success": TaskStatus.SUCCEEDED,
    "succeeded": TaskStatus.SUCCEEDED,
    "completed": TaskStatus.SUCCEEDED,
    "failed": TaskStatus.FAILED,
    "error": TaskStatus.FAILED,
}

_NO_FACE_HINTS = ("no face", "face not found", "no_face", "failed to detect face", "no faces")


class CRUNProvider(KeyedHttpProvider):
    """Adapter for CRUN's face-swap models (see the module docstring for the contract).

    Parameters
    ----------
    client
        ``httpx.Client`` with explicit timeouts; this adapter adds the ``x-api-key`` header per request.
    api_key
        Returns the CRUN API key (read from Secrets Manager, cached; never logged).
    base_url
        ``https://api.crun.ai`` on AWS; the emulator's URL locally.
    result_hosts
        Hosts CRUN serves results from (``*.example.com`` for subdomains).
    detect_attempts, detect_interval
        How often ``create_task`` reads a face detection's result before giving up (multi-face swap only), and
        the seconds it waits after each answer before its next request: 10 x 1.05 s by default. At least a
        second apart, the requests of one multi-face create count as one call under the create's single turn
        of the call ceiling (:class:`faceswap.aws.ratelimit.DynamoRateLimiter` lets the next call through a share
        start 1.05 s after the last answer).
    sleep
        Waits between the requests of a multi-face create (injected by tests).
    """

    name = "crun"
    uses_webhook = True
    json_callbacks = False  # the callback's body and content type are UNKNOWN (providers.md §3.2): a trigger only
    image_limits = ImageLimits(max_side=4096, max_bytes=10 * 1024 * 1024, formats=("JPEG", "PNG", "WEBP"))
    api_key_header = "x-api-key"

    def __init__(
        self,
        client: httpx.Client,
        *,
        api_key: Callable[[], str],
        base_url: str,
        result_hosts: tuple[str, ...],
        detect_attempts: int = 10,
        detect_interval: float = 1.05,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(client, api_key=api_key, base_url=base_url, result_hosts=result_hosts)
        self._detect_attempts = detect_attempts
        self._detect_interval = detect_interval
        self._sleep = sleep

    def create_task(self, task: TaskInput, webhook: Webhook | None) -> str:
        """Create a face-swap task from presigned image URLs and return CRUN's ``task_id``.

        Parameters
        ----------
        task
            ``task.image_urls()`` gives the (target, swap) URLs. For ``multi-face-swap``, ``task.options``
            may hold ``target_faces_index`` (``"1"`` or ``"0,1"``; default ``"0"``): the swap face goes onto
            each of those faces, numbered in the order CRUN's detection lists them. ``swap_faces_index`` may
            only be ``0``: CRUN takes one face image per target face and cannot pick a face inside it.
        webhook
            Sent as ``callback_url``: ``webhook.url`` with ``?token=<webhook.secret>`` appended.

        Raises
        ------
        ProviderRejected
            No image URLs, an unknown task or face index; 401/404/422/505 (or the same body ``code``).
        ProviderOutOfCredit
            402.
        NoFaceDetected
            Multi-face: detection found no face in the target image.
        ProviderTaskFailed
            501 (generation failed; retryable once), or the detection failed.
        ProviderUnavailable
            Connection failed, 429 (``retry_after`` from ``Retry-After``), 455 maintenance, 5xx; for multi-face
            also a detection that could not be started or read, or did not finish within the bound (no swap
            task exists yet, so trying again later is safe).
        SubmitOutcomeUnknown
            The CreateTask request may have reached CRUN (read timeout, dropped connection, no ``task_id``).
        """
        if task.task not in TASKS:
            raise ProviderRejected(f"CRUN does not offer the task {task.task!r}; use one of {', '.join(TASKS)}.")
        if task.target_video is not None:
            return self._create(self._video_body(task), webhook)
        if task.image_urls is None:
            raise ProviderRejected("CRUN takes image URLs only, and no image URLs were given for this task.")
        target_url, swap_url = task.image_urls()
        body: dict[str, Any]
        if task.faces:
            body = self._face_map_body(task, target_url)
        elif task.task == "multi-face-swap":
            target_indices = face_indices(task.options.get("target_faces_index"), default=[0], non_negative=True)
            swap_indices = face_indices(task.options.get("swap_faces_index"), default=[0], non_negative=True)
            if any(index != 0 for index in swap_indices):
                raise ProviderRejected("CRUN takes one face per swap image; swap_faces_index must be 0.")
            detect_id, faces = self._detect(target_url)
            face_ids = [_face_id(faces, index) for index in target_indices]
            self._sleep(self._detect_interval)
            body = {
                "model": MULTI_MODEL,
                "input": {
                    "detect_id": detect_id,
                    "image_url": target_url,
                    "faces": [{"face_id": face_id, "target": swap_url} for face_id in face_ids],
                    "disable_safety_checker": False,
                },
            }
        else:
            body = {
                "model": SINGLE_MODEL,
                "input": {"image_url": target_url, "new_face": swap_url, "disable_safety_checker": False},
            }
        return self._create(body, webhook)

    def _video_body(self, task: TaskInput) -> dict[str, Any]:
        """``video-face-swap``: the fitted video and the swap face, both by presigned URL (stored now)."""
        if task.video_urls is None:
            raise ProviderRejected("CRUN takes a target video by URL, and no video URL was given for this task.")
        video_url, swap_url = task.video_urls()
        return {
            "model": VIDEO_MODEL,
            "input": {"video_url": video_url, "new_face": swap_url, "disable_safety_checker": False},
        }

    def _create(self, body: dict[str, Any], webhook: Webhook | None) -> str:
        """Send CreateTask with ``body`` (and the callback URL) once; CRUN's ``task_id``."""
        if webhook is not None:
            body["callback_url"] = _callback_url(webhook)
        response = post_create(
            self._client, f"{self._base_url}{JOB_API}/CreateTask", label="CRUN", json=body, headers=self._headers()
        )
        data = self._data(response, what="create")
        task_id = data.get("task_id") if isinstance(data, dict) else None
        if not isinstance(task_id, str) or not task_id:
            raise SubmitOutcomeUnknown("CRUN answered the create without a task_id.")
        return task_id

    def get_task(self, task_id: str) -> TaskSnapshot:
        """Read a task: ``GET /api/v1/client/job/TaskInfo?task_id=``.

        Returns
        -------
        TaskSnapshot
            Status mapped case-insensitively (pending → QUEUED, running → RUNNING, success/succeeded/completed
            → SUCCEEDED, failed → FAILED; unknown values → RUNNING). ``result_url`` from
            ``data.result.media_urls[0]``; no expiry (CRUN's result lifetime is unknown).

        Raises
        ------
        ProviderUnavailable
            Network error, 429, 455 or 5xx.
        ProviderRejected
            401, 404 (unknown task), 422, 505; ``ProviderOutOfCredit`` on 402. A 501 (generation failed)
            is the task's failure and comes back as a FAILED snapshot instead.
        """
        try:
            response = self._client.get(
                f"{self._base_url}{JOB_API}/TaskInfo", params={"task_id": task_id}, headers=self._headers()
            )
        except httpx.HTTPError as e:
            raise ProviderUnavailable(f"CRUN TaskInfo failed: {type(e).__name__}.") from e
        try:
            data = self._data(response, what="TaskInfo", reading=True)
        except ProviderTaskFailed as e:  # 501 "generation failed" names the task's outcome, not the read's
            return TaskSnapshot(task_id, TaskStatus.FAILED, error=e)
        if not isinstance(data, dict):
            raise ProviderUnavailable("CRUN answered TaskInfo without a task object.")
        return self.snapshot(task_id, data)

    def snapshot(self, task_id: str, data: Mapping[str, Any]) -> TaskSnapshot:
        """Turn CRUN's task object (``data`` of TaskInfo) into a :class:`TaskSnapshot`."""
        status = _STATUS.get(str(data.get("status", "")).strip().lower(), TaskStatus.RUNNING)
        result = data.get("result")
        result = result if isinstance(result, dict) else {}
        if status is TaskStatus.SUCCEEDED:
            return TaskSnapshot(task_id, status, result_url=_result_url(result))
        if status is TaskStatus.FAILED:
            return TaskSnapshot(task_id, status, error=self._task_error(result, data))
        return TaskSnapshot(task_id, status)

    def presented_secret(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        """The ``token`` query parameter of the callback URL: CRUN has no secret mechanism of its own."""
        return query.get("token")

    def task_id_from_callback(self, body: bytes) -> str | None:
        """The callback body is UNKNOWN: ``data.task_id`` (a TaskInfo mirror), else a top-level ``task_id``."""
        try:
            parsed = json.loads(body)
        except ValueError:
            return None
        if not isinstance(parsed, dict):
            return None
        data = parsed.get("data")
        for candidate in (data.get("task_id") if isinstance(data, dict) else None, parsed.get("task_id")):
            if isinstance(candidate, str) and candidate:
                return candidate
        return None

    # ------------------------------------------------------------------------------------------ detection

    def _face_map_body(self, task: TaskInput, target_url: str) -> dict[str, Any]:
        """The multi-face create for a face map (``detect-crop``): CRUN's detection crops each face of the target,
        each crop is scored against the references (``task.match_crops``), and each chosen ``face_id`` gets its
        pair's swap image; faces no pair chose are not listed, so CRUN leaves them as they are. The create follows
        the detection at once, with the very URL it detected on (a ``detect_id`` lives one hour and names the
        bytes of that URL)."""
        if task.match_crops is None or task.face_urls is None:
            raise ProviderRejected("CRUN needs its face crops matched and the swap images' URLs for a face map.")
        detect_id, faces = self._detect(target_url)
        crops = [self._crop(face.get("link")) for face in faces]
        chosen = task.match_crops(crops)
        swap_urls = task.face_urls()
        self._sleep(self._detect_interval)
        return {
            "model": MULTI_MODEL,
            "input": {
                "detect_id": detect_id,
                "image_url": target_url,
                "faces": [
                    {"face_id": _face_id(faces, index), "target": url}
                    for index, url in zip(chosen, swap_urls, strict=True)
                ],
                "disable_safety_checker": False,
            },
        }

    def _crop(self, link: Any) -> bytes:
        """The bytes of a detected face's crop, from one of CRUN's result hosts (at most :data:`MAX_CROP_BYTES`)."""
        url = httpx.URL(link) if isinstance(link, str) else None
        if url is None or url.scheme not in ("https", "http") or not host_allowed(url.host, self.result_hosts):
            raise ProviderUnavailable("CRUN's face detection gave a face crop link outside its result hosts.")
        try:
            with self._client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise ProviderUnavailable(f"CRUN's face crop answered {response.status_code}.")
                data = b""
                for chunk in response.iter_bytes():
                    data += chunk
                    if len(data) > MAX_CROP_BYTES:
                        raise ProviderUnavailable("CRUN's face crop is larger than a face crop can be.")
        except httpx.HTTPError as e:
            raise ProviderUnavailable(f"CRUN's face crop could not be read: {type(e).__name__}.") from e
        return data

    def _detect(self, image_url: str) -> tuple[str, list[dict[str, Any]]]:
        """Run face detection on ``image_url``; returns ``(detect_id, faces)``. Nothing paid exists yet."""
        try:
            response = self._client.post(
                f"{self._base_url}{JOB_API}/detect-face-image", json={"image_url": image_url}, headers=self._headers()
            )
        except httpx.HTTPError as e:
            raise ProviderUnavailable(f"CRUN face detection could not be started: {type(e).__name__}.") from e
        data = self._data(response, what="detect-face-image", reading=True)
        detect_task_id = data.get("detect_task_id") if isinstance(data, dict) else None
        if not isinstance(detect_task_id, str) or not detect_task_id:
            raise ProviderUnavailable("CRUN answered detect-face-image without a detect_task_id.")
        for _ in range(self._detect_attempts):
            self._sleep(self._detect_interval)
            try:
                response = self._client.get(
                    f"{self._base_url}{JOB_API}/detect-face-result",
                    params={"detect_task_id": detect_task_id},
                    headers=self._headers(),
                )
            except httpx.HTTPError as e:
                raise ProviderUnavailable(f"CRUN detect-face-result failed: {type(e).__name__}.") from e
            data = self._data(response, what="detect-face-result", reading=True)
            if not isinstance(data, dict):
                raise ProviderUnavailable("CRUN answered detect-face-result without a result object.")
            status = _STATUS.get(str(data.get("status", "")).strip().lower(), TaskStatus.RUNNING)
            result = data.get("result")
            result = result if isinstance(result, dict) else {}
            if status is TaskStatus.FAILED:
                raise self._task_error(result, data, detecting=True)
            if status is TaskStatus.SUCCEEDED:
                detect_id = result.get("id")
                faces = [f for f in result.get("faces") or [] if isinstance(f, dict)]
                if not faces:
                    raise NoFaceDetected("CRUN found no face in the target image.")
                if not isinstance(detect_id, str | int) or isinstance(detect_id, bool) or detect_id == "":
                    raise ProviderUnavailable("CRUN finished face detection without a detect_id.")
                return str(detect_id), faces
        waited = self._detect_interval * self._detect_attempts
        raise ProviderUnavailable(f"CRUN face detection did not finish within {waited:g} s.")

    # ------------------------------------------------------------------------------------------ answers

    def _data(self, response: httpx.Response, *, what: str, reading: bool = False) -> Any:
        """``data`` of a successful answer; raises the classified error for a failed one."""
        body = json_object(response)
        status = response.status_code
        code = as_int(body.get("code")) if body is not None else None
        if 200 <= status < 300 and code in (200, None):
            if body is None:
                if reading:
                    raise ProviderUnavailable(f"CRUN answered {what} with an unreadable body.")
                raise SubmitOutcomeUnknown(f"CRUN answered {what} with an unreadable body.")
            return body.get("data")
        if 200 <= status < 300 and code is not None:
            status = code
        message = message_suffix(body.get("message") if body is not None else None, secret=self._api_key())
        raise _classify(status, f"CRUN {what}", message, retry_after=retry_after(response))

    def _task_error(
        self, result: Mapping[str, Any], data: Mapping[str, Any], *, detecting: bool = False
    ) -> PipelineError:
        code = as_int(result.get("code"))
        error = data.get("error")
        text = str(
            result.get("message")
            or (error.get("message") if isinstance(error, dict) else error)
            or data.get("message")
            or ""
        )
        text = redact(text, self._api_key())[:300]
        summary = text or "no reason given"
        what = "face detection" if detecting else "the task"
        if any(hint in text.lower() for hint in _NO_FACE_HINTS):
            return NoFaceDetected(f"CRUN found no face to swap: {summary}.")
        if code in (401, 404, 422, 505):
            return ProviderTaskFailed(f"CRUN refused {what} ({code}): {summary}.", retryable=False)
        if code == 402:
            return ProviderOutOfCredit(f"CRUN failed {what}: the account is out of credit: {summary}.")
        return ProviderTaskFailed(f"CRUN failed {what}{f' ({code})' if code else ''}: {summary}.")


def _classify(status: int, what: str, message: str, *, retry_after: float | None) -> PipelineError:
    if status == 402:
        return ProviderOutOfCredit(f"{what}: the account is out of credit (402){message}.")
    if status == 429:
        return ProviderUnavailable(f"{what} was rate-limited (429){message}.", retry_after=retry_after)
    if status == 455:
        return ProviderUnavailable(f"{what}: CRUN is under maintenance (455){message}.", retry_after=retry_after)
    if status == 501:
        return ProviderTaskFailed(f"{what}: generation failed (501){message}.")
    if status == 505:
        return ProviderRejected(f"{what}: the feature is disabled (505){message}.")
    if status >= 500:
        return ProviderUnavailable(f"{what} answered {status}{message}.", retry_after=retry_after)
    if status == 401 or status == 403:
        return ProviderRejected(f"{what}: CRUN refused the API key ({status}){message}.")
    return ProviderRejected(f"{what} was rejected ({status}){message}.")


def _callback_url(webhook: Webhook) -> str:
    separator = "&" if "?" in webhook.url else "?"
    return f"{webhook.url}{separator}{urlencode({'token': webhook.secret})}"


def _face_id(faces: Sequence[Mapping[str, Any]], index: int) -> Any:
    if index >= len(faces):
        raise ProviderRejected(
            f"Face index {index} is out of range: CRUN found {len(faces)} face(s) in the target image."
        )
    face_id = faces[index].get("id")
    return index if face_id is None else face_id


def _result_url(result: Mapping[str, Any]) -> str | None:
    urls = result.get("media_urls")
    if isinstance(urls, list) and urls and isinstance(urls[0], str) and urls[0]:
        return urls[0]
    for key in ("media_url", "image_url", "url"):
        value = result.get(key)
        if isinstance(value, str) and value:
            return value
    return None
