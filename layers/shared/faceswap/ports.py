"""The interfaces the domain needs. AWS adapters live in :mod:`faceswap.aws` (one module per service); tests may pass
fakes.

Besides the domain errors each method names, an AWS adapter raises :class:`faceswap.errors.StoreUnavailable` for a
failure of the service it does not map (throttled, denied, down), never a botocore exception: the message being
handled is delivered again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from faceswap.errors import ProviderRejected
from faceswap.faces import FaceScore
from faceswap.images import ImageLimits, PreparedImage
from faceswap.lifecycle import JobState, Phase
from faceswap.media import PreparedVideo
from faceswap.model import Job, JobRequest, StoredResult, TaskSnapshot


class JobStore(Protocol):
    """The jobs table. Every write is conditional (see :mod:`faceswap.lifecycle`), so states only move forward."""

    def create(self, job: Job) -> bool:
        """Write ``job`` if no row with its id exists. Returns ``False`` (and writes nothing) if one does."""
        ...

    def get(self, job_id: str) -> Job | None:
        """Read a job (strongly consistent), or ``None`` if there is none."""
        ...

    def apply(
        self,
        job_id: str,
        *,
        from_phases: Iterable[Phase],
        changes: Mapping[str, Any],
        expected: Mapping[str, str] | None = None,
    ) -> Job | None:
        """Set ``changes`` on the job only if its ``phase`` is one of ``from_phases`` (and every attribute in
        ``expected`` has the value given): one conditional write.

        Called only by :class:`faceswap.lifecycle.Lifecycle`, which puts the transition's ``phase`` (and
        ``state``) in ``changes``. A ``None`` value removes the attribute. Returns the updated job, or ``None``
        when the condition failed (the job moved on meanwhile, or there is no such job).
        """
        ...


class ObjectStore(Protocol):
    """The inputs and results buckets."""

    def read(self, bucket: str, key: str, *, version_id: str | None = None, max_bytes: int) -> bytes:
        """Read an object of at most ``max_bytes`` bytes.

        Raises ``InputNotFound`` if it does not exist and ``ImageTooLarge`` if it is bigger.
        """
        ...

    def download(self, bucket: str, key: str, path: str, *, version_id: str | None = None, max_bytes: int) -> int:
        """Stream the object into the file ``path`` (memory stays flat) and return its size in bytes.

        Raises ``InputNotFound`` if it does not exist and ``ImageTooLarge`` if it is bigger than ``max_bytes`` (the
        file is then incomplete: the caller removes it).
        """
        ...

    def head(self, bucket: str, key: str) -> Mapping[str, str] | None:
        """The user metadata of the object ``key`` (``x-amz-meta-*``, names without the prefix), or ``None`` if it
        does not exist (a HEAD: billed as a GET, not as a LIST)."""
        ...

    def store_result(
        self, bucket: str, key: str, chunks: Iterator[bytes], *, content_type: str, job_id: str
    ) -> StoredResult:
        """Stream ``chunks`` into the object at ``key`` for ``job_id``, with bounded memory.

        Writes at most one new object version per job: if ``key`` already holds this job's result (an
        earlier collect stored it), returns that object's description instead. An interrupted upload
        leaves nothing visible and no multipart upload open.
        """
        ...

    def store_result_file(
        self, bucket: str, key: str, path: str, *, content_type: str, job_id: str, sha256: str | None = None
    ) -> StoredResult:
        """Keep the file at ``path`` (a checked video result) at ``key`` for ``job_id``, as :meth:`store_result` does a
        stream: at most one new version per job, nothing partial ever visible; several parts in flight at once.
        ``sha256``: the file's, when the caller hashed it as it wrote it."""
        ...


class JobIndex(Protocol):
    """Listing jobs (the jobs table's ``StateIndex``)."""

    def list_jobs(
        self, *, state: JobState | None, limit: int, cursor: str | None, provider: str | None = None
    ) -> tuple[list[Job], str | None]:
        """Up to ``limit`` jobs (newest first when ``state`` is given), and a cursor for the next page or ``None``.

        Raises ``InvalidRequest`` for a cursor this store did not issue.
        """
        ...


class InputStore(Protocol):
    """What the jobs API does with the inputs and results buckets besides reading."""

    def put_input(self, bucket: str, key: str, data: bytes, *, content_type: str) -> None:
        """Store an inline input image (content-addressed key, so a repeat writes the same object)."""
        ...

    def put_file(self, bucket: str, key: str, path: str, *, content_type: str) -> None:
        """Store the file at ``path`` (a prepared video: multipart, memory flat)."""
        ...

    def put_new(self, bucket: str, key: str, data: bytes, *, content_type: str) -> bool:
        """Store ``data`` at ``key`` only if nothing is there; ``False`` (nothing written) if an object is."""
        ...

    def presign_put(self, bucket: str, key: str, *, content_type: str, expires_seconds: int) -> str:
        """A presigned PUT URL for ``key``."""
        ...

    def presign_get(self, bucket: str, key: str, *, version_id: str | None, expires_seconds: int) -> str:
        """A presigned GET URL for ``key`` (at ``version_id`` when given)."""
        ...


class RequestQueue(Protocol):
    """The submit queue, for requests from the API."""

    def send(self, request: JobRequest) -> None:
        """Queue a job request for the submit function."""
        ...


@dataclass(frozen=True)
class Turn:
    """A rate limiter's answer to :meth:`RateLimiter.acquire`.

    ``wait`` > 0: no call is free; ask again in that many seconds (nothing is held). ``wait`` == 0: the call may
    go ahead, and the turn must be handed to :meth:`RateLimiter.release` once the call is answered or has failed.
    ``slot`` names the share of the per-second ceiling the call goes through ("" for none) and ``lease`` is the time
    (epoch seconds) this container's lease on it ends.
    """

    wait: float = 0.0
    provider: str = ""
    slot: str = ""
    lease: float = 0.0


class RateLimiter(Protocol):
    """Shared ceilings of provider calls, so every function together stays under a provider's ceilings."""

    def acquire(self, provider: str, *, per_second: int, per_hour: int) -> Turn:
        """Take a turn for one call to ``provider`` under ``per_second`` and ``per_hour`` (0 = no ceiling)."""
        ...

    def release(self, turn: Turn) -> None:
        """Give back a granted turn once its call is answered (or failed); never raises."""
        ...

    def start_invocation(self, remaining_seconds: float) -> None:
        """A handler's invocation starts; Lambda stops it after ``remaining_seconds``: no call outlasts that."""
        ...

    def end_invocation(self) -> None:
        """The handler's invocation ends: give back what this container holds if others wait for it; never raises."""
        ...


class CheckScheduler(Protocol):
    """The check queue: asks the poller to look at a job later."""

    def schedule(
        self, job_id: str, *, delay_seconds: int, check: int, task_id: str | None = None, video: bool = False
    ) -> None:
        """Send a check for ``job_id`` in ``delay_seconds`` (0..900); ``check`` counts checks so far; ``task_id``:
        the provider task the checks follow, if known; ``video``: the job is a video job (checked by the media
        function where the deployment has one)."""
        ...


class EventPublisher(Protocol):
    """The event bus."""

    def publish(self, detail_type: str, detail: Mapping[str, Any]) -> None:
        """Publish one event (``Job Succeeded`` / ``Job Failed``)."""
        ...


@dataclass(frozen=True)
class Webhook:
    """Where and how a provider calls back: the ``url`` and the per-job ``secret``."""

    url: str
    secret: str


@dataclass(frozen=True)
class FaceInput:
    """One face a face map chose (:mod:`faceswap.faces`): the target's face at ``box`` (pixels of the prepared target)
    gets ``swap_image``'s face; ``reference`` is the photo that chose it (for providers that match again on their own
    face crops)."""

    box: tuple[int, int, int, int]
    reference: PreparedImage | None
    swap_image: PreparedImage


@dataclass(frozen=True)
class TaskInput:
    """What a provider's create receives: prepared images (or a prepared target video), the task name and its
    options."""

    job_id: str
    task: str
    target_image: PreparedImage | None
    """The target image; ``None`` for a video job (``target_video``)."""
    swap_image: PreparedImage
    options: Mapping[str, Any]
    image_urls: Callable[[], tuple[str, str]] | None = None
    """Returns presigned GET URLs (target, swap) of the prepared images, valid at least 1 h, for providers
    that take URLs only; the images are stored on first call."""
    faces: tuple[FaceInput, ...] = ()
    """The faces a face map chose, in its order (empty without one); given only to providers whose registry entry
    takes them (``face_choice``)."""
    face_urls: Callable[[], tuple[str, ...]] | None = None
    """For URL-only providers with ``faces``: presigned GET URLs of each face's swap image, in order."""
    match_crops: Callable[[Sequence[bytes]], list[int]] | None = None
    """For providers whose own detection crops each face (``detect-crop``): given the crops' bytes, the index of
    the crop chosen for each of ``faces`` (scored against its reference with the face chooser's threshold and
    margin). Raises ``ReferenceFaceNotFound``/``ReferenceFaceAmbiguous``, or ``StoreUnavailable`` when the face
    matcher fails (nothing was created: the create is handed back)."""
    target_video: PreparedVideo | None = None
    """A video job's target, fitted to the provider's video limits (its registry entry's ``video_limits``)."""
    video_urls: Callable[[], tuple[str, str]] | None = None
    """For a video job: returns presigned GET URLs (target video, swap image), valid at least 1 h; the prepared
    files are stored on first call. Video tasks take the video by URL at every provider."""

    def image(self) -> PreparedImage:
        """The target image, for adapters of image tasks.

        Raises
        ------
        ProviderRejected
            This is a video job (never sent to a provider without a video task: the registry refuses it first).
        """
        if self.target_image is None:
            raise ProviderRejected("This provider takes no target video.")
        return self.target_image


class FaceMatcher(Protocol):
    """Scores the faces of a target image against a reference photo's face (see :mod:`faceswap.faces`)."""

    def compare(self, reference: PreparedImage, target: PreparedImage) -> list[FaceScore]:
        """Every face of ``target`` (up to its 100 largest), with its box in ``target``'s pixels and its similarity
        (0-100) to the largest face of ``reference``; empty when ``target`` has no face.

        Both images are JPEG or PNG of at most 5 MB and at least 80 pixels a side
        (:func:`faceswap.images.for_matcher`). Raises :class:`faceswap.faces.ReferenceWithoutFace` when
        ``reference`` has no face, ``InvalidImage`` for an image the service cannot read, and ``StoreUnavailable``
        when the service fails (throttled, denied, down).
        """
        ...


class Provider(Protocol):
    """One face-swap provider behind a common interface (see ``providers/``).

    Attributes
    ----------
    name
        The provider's name in job rows, manifests and callback routes (``piapi``).
    image_limits
        What its create accepts; inputs are prepared to fit.
    uses_webhook
        Whether it calls back; if not, the poller drives the job.
    json_callbacks
        Whether its callbacks are JSON objects sent as ``application/json`` by contract; such a callback in
        another form is refused (after its secret is verified).
    result_hosts
        Host names its result URLs may come from (``*.example.com`` matches subdomains).
    """

    name: str
    image_limits: ImageLimits
    uses_webhook: bool
    json_callbacks: bool
    result_hosts: tuple[str, ...]

    def create_task(self, task: TaskInput, webhook: Webhook | None) -> str:
        """Create a provider task and return its id. Never retried by the caller.

        Raises ``ProviderRejected``/``ProviderOutOfCredit`` (terminal), ``ProviderUnavailable`` (definitely
        not created: safe to try again) or ``SubmitOutcomeUnknown`` (may have been created).
        """
        ...

    def get_task(self, task_id: str) -> TaskSnapshot:
        """Read a task's authoritative status. Raises ``ProviderUnavailable`` on 429/5xx/network errors."""
        ...

    def presented_secret(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        """The per-job secret a callback presents (header or query parameter, as the provider sends it)."""
        ...

    def task_id_from_callback(self, body: bytes) -> str | None:
        """The task id a (verified) callback body names, if any; used only to find, never to trust."""
        ...

    def quota_delay(self) -> float | None:
        """Seconds the next check should wait because the provider's call quota is nearly spent (reads count
        against it, e.g. AIPhotoCraft), or ``None``."""
        ...
