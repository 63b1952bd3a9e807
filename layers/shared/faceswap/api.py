"""The jobs API's operations: submit, upload URLs, read, list and retry jobs (``functions/api`` is the wiring).

Requests from the API and "Job Requested" events are validated by the same
:func:`faceswap.intake.parse_request_fields` as manifests, get their job id from
:func:`faceswap.intake.request_job_id`, and reach the submit function through the submit queue, so every way
in leads to the same submit path and job states.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from faceswap import media
from faceswap.errors import InvalidRequest, JobNotFound, JobNotRetryable, PayloadTooLarge, ProviderRejected
from faceswap.ids import is_job_id, job_id_for
from faceswap.images import sniff_image_type
from faceswap.intake import MAX_INLINE_IMAGE_BYTES, default_result_key, parse_request_fields, request_job_id
from faceswap.lifecycle import JobState, Lifecycle, Phase
from faceswap.model import ImageRef, Job, JobRequest
from faceswap.ports import InputStore, JobIndex, RequestQueue
from faceswap.providers.registry import face_map_refusal, video_refusal

UPLOAD_PREFIX = "uploads/"
"""Where API inputs live in the inputs bucket (no S3 notification: the API queues its jobs itself)."""

URL_EXPIRY_SECONDS = 900
"""Lifetime of presigned upload and download URLs (15 minutes)."""

UPLOAD_EXTENSIONS = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/webp": "webp",
    "video/mp4": "mp4",
    "video/quicktime": "mov",
    "video/webm": "webm",
}
"""The content types ``POST /uploads`` grants, with the extension each upload's key gets."""

MAX_PAGE = 100


@dataclass(kw_only=True)
class JobsApi:
    """The API's operations.

    Attributes
    ----------
    lifecycle
        Records jobs (``record``) and reads them.
    index
        Lists jobs.
    inputs
        Stores inline images and signs upload/download URLs.
    queue
        The submit queue.
    input_bucket
        The inputs bucket.
    default_provider
        The provider used when a request names none.
    offered
        The enabled providers and the tasks each offers (``Config.offered_tasks``): a request for another provider,
        or for a task one of its providers does not offer, is refused before it is queued.
    allow_http
        Accept ``http://`` image URLs (local stack only).
    """

    lifecycle: Lifecycle
    index: JobIndex
    inputs: InputStore
    queue: RequestQueue
    input_bucket: str
    default_provider: str
    offered: Mapping[str, Collection[str]]
    allow_http: bool = False

    def submit(self, body: Any) -> tuple[Job, bool]:
        """Validate a job request, record the job and queue it.

        Parameters
        ----------
        body
            The decoded JSON body: ``target_image`` and ``swap_image`` as ``{"url"|"base64"|"s3_key": …}``,
            optional ``provider``, ``task``, ``options``, ``result_key``, ``idempotency_key``.

        Returns
        -------
        tuple
            ``(job, created)``; a repeated request (same body or same ``idempotency_key``) returns the existing
            job with ``created`` ``False``.

        Raises
        ------
        InvalidRequest
            A bad field (named in the message) or an unconfigured provider.
        ProviderRejected
            A provider of the request does not offer its task (nothing is queued or paid).
        PayloadTooLarge
            The inline images total over ``MAX_INLINE_IMAGE_BYTES`` (the message points to ``POST /uploads``).
        """
        fields = parse_request_fields(
            body,
            bucket=self.input_bucket,
            default_provider=self.default_provider,
            allow_base64=True,
            allow_http=self.allow_http,
        )
        images = fields.images()
        inline = sum(len(image) for image in images.values() if isinstance(image, bytes))
        if inline > MAX_INLINE_IMAGE_BYTES:
            raise PayloadTooLarge(
                f"The inline images total {inline:,} bytes, over the {MAX_INLINE_IMAGE_BYTES:,} one "
                "request can carry (Lambda's 6 MB request limit, base64 included): upload each image with "
                "POST /uploads and name it by its s3_key."
            )
        for provider in (fields.provider, *fields.fallback_providers):
            if provider not in self.offered:
                raise InvalidRequest(f"Field 'provider' must name providers among {', '.join(sorted(self.offered))}.")
            if fields.task not in self.offered[provider]:
                raise ProviderRejected(
                    f"Provider {provider!r} does not offer the task {fields.task!r}; it offers "
                    f"{', '.join(self.offered[provider])}."
                )
            video = fields.target_video is not None
            among, none = self.offered, "none enabled"
            refusal = (
                video_refusal(provider, task=fields.task, options=fields.options, among=among, none=none)
                if video
                else None
            )
            if refusal is None and fields.face_map:
                refusal = face_map_refusal(provider, video=video, among=among, none=none)
            if refusal:
                raise ProviderRejected(refusal)
        job_id = request_job_id(fields)
        stored = {field: self._stored(image, field) for field, image in images.items()}
        request = fields.request(
            job_id=job_id,
            result_key=fields.result_key
            or default_result_key(job_id, fields.target, video=fields.target_video is not None),
            source="api",
            stored=stored,
        )
        return self._receive(request)

    def _receive(self, request: JobRequest) -> tuple[Job, bool]:
        job, created = self.lifecycle.record(request)
        if job.state is JobState.RECEIVED and job.phase is Phase.AWAITING_CREATE:
            # New, or recorded earlier but maybe never queued: queueing again is harmless (submit is idempotent).
            self.queue.send(request)
        return job, created

    def _stored(self, image: ImageRef | bytes, field: str) -> ImageRef:
        if isinstance(image, ImageRef):
            return image
        if field == "target_video":
            container = media.sniff(image[: media.SNIFF_BYTES])
            if container is None:
                raise InvalidRequest(f"Field {field}.base64 is not an MP4, MOV or WebM video.")
            content_type, extension = media.CONTENT_TYPES[container], container
        else:
            sniffed = sniff_image_type(image[:16])
            if sniffed is None:
                raise InvalidRequest(f"Field {field}.base64 is not a JPEG, PNG or WebP image.")
            content_type, extension = sniffed, sniffed.split("/")[1]
        key = f"{UPLOAD_PREFIX}inline/{hashlib.sha256(image).hexdigest()}.{extension}"
        self.inputs.put_input(self.input_bucket, key, image, content_type=content_type)
        return ImageRef(bucket=self.input_bucket, key=key)

    def create_upload(self, content_type: str) -> dict[str, Any]:
        """A presigned PUT URL for one input image (or target video) too large for a JSON body.

        Returns ``{"s3_key", "upload_url", "method": "PUT", "headers": {"content-type"}, "expires_in"}``; give
        ``{"s3_key": …}`` as the image in ``POST /jobs``.
        """
        extension = UPLOAD_EXTENSIONS.get(content_type)
        if extension is None:
            raise InvalidRequest(
                "Field 'content_type' must be image/jpeg, image/png, image/webp, video/mp4, video/quicktime or "
                "video/webm."
            )
        key = f"{UPLOAD_PREFIX}{uuid.uuid4()}.{extension}"
        url = self.inputs.presign_put(
            self.input_bucket, key, content_type=content_type, expires_seconds=URL_EXPIRY_SECONDS
        )
        return {
            "s3_key": key,
            "upload_url": url,
            "method": "PUT",
            "headers": {"content-type": content_type},
            "expires_in": URL_EXPIRY_SECONDS,
        }

    def get(self, job_id: str) -> dict[str, Any]:
        """A job as ``GET /jobs/{job_id}`` shows it (see :meth:`view`). Raises ``JobNotFound``."""
        job = self.lifecycle.get(job_id) if is_job_id(job_id) else None
        if job is None:
            raise JobNotFound(f"No job {job_id!r}.")
        return self.view(job)

    def view(self, job: Job, *, with_download: bool = True) -> dict[str, Any]:
        """``job_id``, ``status``, ``provider``, ``task``, ``media_type`` (``image`` or ``video``; a video job's
        ``media``: the video as sent and as given), ``source``, timestamps, ``attempts``, ``error``,
        ``retry_of``, ``options``, ``inputs`` (``target``, ``swap_image`` and each face map pair's ``reference`` and
        ``swap_image``: an S3 input's ``s3_uri`` or a URL input's ``url``, with a presigned ``download_url`` valid 15
        minutes for S3 inputs), ``history`` (the provider attempts: ``provider``, ``at`` and ``provider_task_id`` for
        a task made, or ``error`` for a provider that failed and handed the job to the next), ``finished_by``
        (``webhook`` or ``check`` when the provider's answer ended the job), with a face map ``face_map`` and
        ``chosen_faces`` (the face chosen for each pair: ``box`` and ``image_size`` in pixels of the target as sent,
        ``similarity``, ``runner_up``, ``method``), and for a succeeded job ``result`` (``s3_uri``, ``size`` bytes,
        ``sha256``, ``content_type`` and a presigned ``download_url`` valid 15 minutes).

        ``with_download=False`` (a list's jobs) leaves out every ``download_url``."""
        data: dict[str, Any] = {
            "job_id": job.job_id,
            "status": str(job.state),
            "provider": job.provider,
            "task": job.task,
            "media_type": job.media_type,
            "source": job.source,
            "created_at": job.created_at,
            "submitted_at": job.submitted_at,
            "finished_at": job.finished_at,
            "deadline_at": job.deadline_at,
            "attempts": job.submit_attempts,
            "error": job.error if job.state is not JobState.SUCCEEDED else None,
            "retry_of": job.retry_of,
            "options": job.options,
            "inputs": self._inputs(job, with_download),
            "history": job.attempts,
            "finished_by": job.finished_by,
            "result": None,
        }
        if job.media:
            data["media"] = job.media
        if job.face_map:
            data["face_map"] = [pair.as_dict() for pair in job.face_map]
            data["chosen_faces"] = job.chosen_faces
        if job.result:
            result = job.result
            data["result"] = {
                "s3_uri": f"s3://{result['bucket']}/{result['key']}",
                "size": result["size"],
                "sha256": result["sha256"],
                "content_type": result["content_type"],
            }
            if with_download:
                data["result"]["download_url"] = self.inputs.presign_get(
                    result["bucket"],
                    result["key"],
                    version_id=result.get("version_id"),
                    expires_seconds=URL_EXPIRY_SECONDS,
                )
        return data

    def _inputs(self, job: Job, with_download: bool) -> dict[str, Any]:
        """What went in: ``target``, ``swap_image`` (``None`` for a face map job) and ``face_map`` pairs.

        A presigned URL acts with the API function's own permissions (``s3:GetObject``/``GetObjectVersion`` on the
        inputs bucket in template.yaml), and ends early if the role session that signed it does:
        https://docs.aws.amazon.com/AmazonS3/latest/userguide/using-presigned-url.html
        """

        def shown(ref: ImageRef) -> dict[str, str] | None:
            if ref.url:
                return {"url": ref.url}
            if not (ref.bucket and ref.key):
                return None
            data = {"s3_uri": ref.describe()}
            if with_download:
                data["download_url"] = self.inputs.presign_get(
                    ref.bucket, ref.key, version_id=ref.version_id, expires_seconds=URL_EXPIRY_SECONDS
                )
            return data

        return {
            "target": shown(job.target),
            "swap_image": shown(job.swap_image),
            "face_map": [
                {"reference": shown(pair.reference), "swap_image": shown(pair.swap_image)} for pair in job.face_map
            ],
        }

    def list(
        self, *, status: str | None, limit: int, next_token: str | None, provider: str | None = None
    ) -> dict[str, Any]:
        """One page of jobs: ``{"jobs": [...], "next_token": str | None}`` (newest first for a ``status``).

        ``provider`` keeps only that provider's jobs; as with any DynamoDB filter, ``limit`` counts the jobs read
        before the filter, so a page may hold fewer (even none) while ``next_token`` says more remain."""
        state = None
        if status is not None:
            try:
                state = JobState(status.upper())
            except ValueError as e:
                raise InvalidRequest(f"Parameter 'status' must be one of {', '.join(JobState)}.") from e
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequest(f"Parameter 'limit' must be between 1 and {MAX_PAGE}.")
        jobs, cursor = self.index.list_jobs(state=state, limit=limit, cursor=next_token, provider=provider)
        return {"jobs": [self.view(j, with_download=False) for j in jobs], "next_token": cursor}

    def retry(self, job_id: str) -> Job:
        """Re-run a failed job whose error is retryable, as a new job linked by ``retry_of``.

        Retrying the same job again returns the same new job. Raises ``JobNotFound`` or ``JobNotRetryable``.
        """
        job = self.lifecycle.get(job_id) if is_job_id(job_id) else None
        if job is None:
            raise JobNotFound(f"No job {job_id!r}.")
        if job.state not in (JobState.FAILED, JobState.TIMED_OUT) or not (job.error or {}).get("retryable"):
            reason = (
                "it has not failed"
                if job.state not in (JobState.FAILED, JobState.TIMED_OUT)
                else (f"its error {(job.error or {}).get('code')!r} is not retryable")
            )
            raise JobNotRetryable(f"Job {job_id} cannot be retried: {reason}.")
        return self._receive(job.request(job_id=job_id_for("retry", job.job_id), retry_of=job.job_id))[0]
