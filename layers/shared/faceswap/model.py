"""Plain data of the pipeline: job requests, jobs and provider task snapshots (states: :mod:`faceswap.lifecycle`)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from faceswap.lifecycle import JobState, Phase


IMAGE = "image"
VIDEO = "video"
"""A job's ``media_type``: what its target is."""


class TaskStatus(enum.StrEnum):
    """A provider task's status, normalised from each provider's own vocabulary."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


@dataclass(frozen=True)
class ImageRef:
    """Where an input image comes from: exactly one of an S3 object or an https URL.

    ``version_id`` pins an S3 object version when known.
    """

    bucket: str | None = None
    key: str | None = None
    version_id: str | None = None
    url: str | None = None

    def as_dict(self) -> dict[str, str]:
        """The reference as stored on the job row (only the fields that are set)."""
        return {
            k: v
            for k, v in {"bucket": self.bucket, "key": self.key, "version_id": self.version_id, "url": self.url}.items()
            if v
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageRef:
        """Inverse of :meth:`as_dict`."""
        return cls(
            bucket=data.get("bucket"), key=data.get("key"), version_id=data.get("version_id"), url=data.get("url")
        )

    def describe(self) -> str:
        """A short human description, e.g. ``s3://bucket/key`` or the URL without its query string."""
        if self.url:
            return self.url.split("?", 1)[0]
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class FacePair:
    """One pair of a face map: the face of the target that is the person in ``reference`` gets ``swap_image``'s face
    (see :mod:`faceswap.faces`)."""

    reference: ImageRef
    swap_image: ImageRef

    def as_dict(self) -> dict[str, dict[str, str]]:
        """The pair as stored on the job row and in queue messages: ``{"reference": {…}, "swap_image": {…}}``."""
        return {"reference": self.reference.as_dict(), "swap_image": self.swap_image.as_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FacePair:
        """Inverse of :meth:`as_dict`."""
        return cls(ImageRef.from_dict(data.get("reference") or {}), ImageRef.from_dict(data.get("swap_image") or {}))


@dataclass(frozen=True)
class JobRequest:
    """What defines a job's work, before any row exists.

    Attributes
    ----------
    job_id
        Deterministic id (see :mod:`faceswap.ids`): the same source event always gives the same id.
    target_image, swap_image
        The image whose face is replaced, and the image that supplies the new face.
    provider, task
        Provider name (``piapi``) and task (``face-swap``).
    result_key
        Key in the results bucket where the result is kept.
    source
        What created the request: ``s3`` (face library), ``manifest``, ``api`` or ``event``.
    options
        Provider/task options, e.g. face indices for ``multi-face-swap``.
    invalid
        Set when the request itself is unusable (bad manifest, missing swap face).
    retry_of
        The failed job this one re-runs (``POST /jobs/{job_id}/retry``).
    fallback_providers
        Providers to fail over to, in order, when ``provider`` fails with a retryable error.
    face_map
        One to four pairs choosing the faces to replace by reference photos (empty: the provider's default face or
        the face indices); ``swap_image`` is then the first pair's.
    target_video
        The video whose face is replaced, for a video job (``target_image`` is then empty): see :attr:`media_type`.
    """

    job_id: str
    target_image: ImageRef
    swap_image: ImageRef
    provider: str
    task: str
    result_key: str
    source: str
    options: dict[str, Any] = field(default_factory=dict)
    invalid: Exception | None = None
    retry_of: str | None = None
    fallback_providers: tuple[str, ...] = ()
    face_map: tuple[FacePair, ...] = ()
    target_video: ImageRef | None = None

    @property
    def media_type(self) -> str:
        """``video`` when the target is a video (``target_video``), else ``image``."""
        return VIDEO if self.target_video is not None else IMAGE

    @property
    def target(self) -> ImageRef:
        """The target, image or video."""
        return self.target_video if self.target_video is not None else self.target_image


@dataclass(frozen=True)
class Job:
    """A job row as stored in the jobs table (see :class:`faceswap.ports.JobStore`); written only by
    :class:`faceswap.lifecycle.Lifecycle`."""

    job_id: str
    state: JobState
    phase: Phase
    provider: str
    task: str
    target_image: ImageRef
    swap_image: ImageRef
    result_key: str
    source: str
    created_at: str
    updated_at: str
    deadline_at: str
    options: dict[str, Any] = field(default_factory=dict)
    provider_task_id: str | None = None
    submitted_at: str | None = None
    finished_at: str | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    submit_started_at: str | None = None
    submit_attempts: int = 0
    result_url_expires_at: str | None = None
    retry_of: str | None = None
    fallback_providers: list[str] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    """Each provider attempt: ``{"provider", "at", "provider_task_id"}`` when a task was created, or
    ``{"provider", "at", "error"}`` when the provider failed and the job moved to the next provider."""
    face_map: list[FacePair] = field(default_factory=list)
    chosen_faces: list[dict[str, Any]] = field(default_factory=list)
    """The face chosen for each pair of ``face_map`` at the job's provider (:meth:`faceswap.faces.ChosenFace.as_dict`),
    set when its create is claimed."""
    part: int = 0
    """The face map pair whose task is being made or run, for providers that take one face per task (isolate and
    composite: one task per pair, in order)."""
    target_video: ImageRef | None = None
    """A video job's target (``target_image`` is then empty)."""
    finished_by: str | None = None
    """What ended a job at its provider's answer: ``webhook`` (the provider's callback) or ``check`` (a status check
    by the poller); ``None`` for a job still running or ended otherwise (rejected at submission, its deadline, its
    message's last delivery)."""
    media: dict[str, Any] | None = None
    """A video job's video as sent (``sent``) and as given (``source``): :meth:`faceswap.media.VideoInfo.as_dict`,
    with ``trimmed_to`` (seconds) when the request asked to trim and it was cut; set when its create is claimed."""

    @property
    def media_type(self) -> str:
        """``video`` when the target is a video (``target_video``), else ``image``."""
        return VIDEO if self.target_video is not None else IMAGE

    @property
    def target(self) -> ImageRef:
        """The target, image or video."""
        return self.target_video if self.target_video is not None else self.target_image

    @property
    def terminal(self) -> bool:
        """Whether the job has ended."""
        return self.state.terminal

    def request(self, **changes: Any) -> JobRequest:
        """The job's work as a request (same inputs, provider, task, options and result key), with ``changes``
        (e.g. another ``job_id`` and ``retry_of`` for a retry)."""
        fields: dict[str, Any] = {
            "job_id": self.job_id,
            "target_image": self.target_image,
            "swap_image": self.swap_image,
            "provider": self.provider,
            "task": self.task,
            "result_key": self.result_key,
            "source": self.source,
            "options": self.options,
            "face_map": tuple(self.face_map),
            "target_video": self.target_video,
        }
        return JobRequest(**{**fields, **changes})


@dataclass(frozen=True)
class TaskSnapshot:
    """A provider task's status as the provider reports it.

    Attributes
    ----------
    task_id
        The provider's task id.
    status
        Normalised status.
    result_url
        Where the result can be downloaded, once ``SUCCEEDED``.
    result_url_expires_at
        ISO-8601 UTC time after which the result URL is expected to be gone (the provider's documented
        retention), or ``None`` if unknown.
    error
        The provider's failure as a pipeline error, when ``FAILED``.
    """

    task_id: str
    status: TaskStatus
    result_url: str | None = None
    result_url_expires_at: str | None = None
    error: Exception | None = None


@dataclass(frozen=True)
class StoredResult:
    """A result object kept in the results bucket: ``bucket``, ``key``, ``size`` (bytes), ``sha256`` (hex)."""

    bucket: str
    key: str
    size: int
    sha256: str
    content_type: str
    version_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The result as stored on the job row and published in "Job Succeeded"."""
        data: dict[str, Any] = {
            "bucket": self.bucket,
            "key": self.key,
            "size": self.size,
            "sha256": self.sha256,
            "content_type": self.content_type,
        }
        if self.version_id:
            data["version_id"] = self.version_id
        return data


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def isoformat(moment: datetime) -> str:
    """``moment`` as ISO-8601 UTC with milliseconds, e.g. ``2026-11-25T13:36:27.123Z`` (sorts as text)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_time(text: str) -> datetime:
    """Inverse of :func:`isoformat`."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def after(moment: datetime, seconds: float) -> str:
    """ISO-8601 time ``seconds`` after ``moment``."""
    return isoformat(moment + timedelta(seconds=seconds))
