"""The domain service: submit a job, collect its result, check it later, and take its callback.

Webhook and polling converge on :meth:`Pipeline.collect`: the provider's own task status is the truth, the
result is streamed into the results bucket, and only then is the job marked SUCCEEDED. Every state change
is a conditional write (:class:`faceswap.ports.JobStore`), so repeated events, callbacks and checks are
harmless. "Job Succeeded"/"Job Failed" events are published from the jobs table's stream when a job
reaches a terminal state (:func:`terminal_event`), so exactly one state change produces them.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from faceswap.errors import (
    CopyOutOfTime,
    ImageTooLarge,
    InputError,
    InputNotFound,
    InvalidCallback,
    InvalidImage,
    InvalidRequest,
    JobTimedOut,
    PipelineError,
    ProcessingFailed,
    ProviderTaskFailed,
    ProviderUnavailable,
    RateLimited,
    ResultError,
    ResultMissing,
    SubmitOutcomeUnknown,
    UnsupportedCallbackType,
    WebhookRejected,
)
from faceswap.ids import verify_webhook_secret, webhook_secret
from faceswap.images import PreparedImage, prepare_image
from faceswap.model import (
    ImageRef,
    Job,
    JobRequest,
    JobState,
    TaskSnapshot,
    TaskStatus,
    after,
    isoformat,
    parse_time,
    utcnow,
)
from faceswap.ports import (
    CheckScheduler,
    InputStore,
    JobStore,
    ObjectStore,
    Provider,
    RateLimiter,
    RequestQueue,
    TaskInput,
    Webhook,
)

if TYPE_CHECKING:  # the fetcher (and httpx) is wired in; the publisher, which imports this module, never loads it
    from faceswap.fetch import ResultFetcher

logger = logging.getLogger(__name__)

MAX_CHECK_DELAY_SECONDS = 900
"""SQS's largest message delay."""

PREPARED_URL_SECONDS = 2 * 3600
"""Lifetime of presigned URLs of prepared inputs given to URL-only providers (CRUN: detect_id lasts 1 h)."""


@dataclass(frozen=True)
class Settings:
    """What the domain needs to know about its deployment.

    Attributes
    ----------
    results_bucket
        Bucket where results are kept.
    callback_base_url
        Base URL of the HTTP API; callbacks go to ``{base}/callbacks/{provider}/{job_id}``.
    job_deadline_seconds
        Seconds from creation after which an unfinished job ends TIMED_OUT.
    max_input_bytes
        Largest input image read, in bytes.
    max_submit_attempts
        Deliveries of a submit message after which a provider that stays unavailable fails the job.
    poll_delays
        Per-provider ``(first, factor, maximum)`` check delays in seconds, overriding the provider's own.
    input_bucket
        Where prepared inputs are stored for URL-only providers.
    rate_limits
        Per-provider ``(per_second, per_hour)`` ceilings of calls (0 = none), enforced with the rate limiter.
    max_throttle_wait_seconds
        Longest a function waits in all for a call under the ceilings before handing the work back.
    max_receive_count
        The consuming queue's ``maxReceiveCount``: a job whose message fails on that delivery is ended FAILED
        (see :meth:`Pipeline.failed_delivery`). 0: never.
    """

    results_bucket: str
    callback_base_url: str
    job_deadline_seconds: int = 900
    max_input_bytes: int = 20 * 1024 * 1024
    max_submit_attempts: int = 3
    poll_delays: Mapping[str, tuple[float, float, float]] = field(default_factory=dict)
    input_bucket: str = ""
    rate_limits: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    max_throttle_wait_seconds: float = 3.0
    max_receive_count: int = 0


class Pipeline:
    """The pipeline's operations over its ports.

    Parameters
    ----------
    store, objects, scheduler
        The jobs table, the buckets and the check queue.
    providers
        Provider adapters by name.
    fetcher
        Safe downloader for results.
    input_fetcher
        Safe downloader for input images given as URLs (the input byte cap; any image type Pillow then reads);
        default ``fetcher``.
    signing_key
        The webhook signing key (bytes); each job's secret is derived from it.
    settings
        Deployment settings.
    clock
        Returns the current UTC time (injected by tests).
    """

    def __init__(
        self,
        *,
        store: JobStore,
        objects: ObjectStore,
        scheduler: CheckScheduler,
        providers: Mapping[str, Provider],
        fetcher: ResultFetcher,
        signing_key: bytes | Callable[[], bytes],
        settings: Settings,
        clock: Callable[[], Any] = utcnow,
        inputs: InputStore | None = None,
        limiter: RateLimiter | None = None,
        sleep: Callable[[float], None] = time.sleep,
        requeue: RequestQueue | None = None,
        input_fetcher: ResultFetcher | None = None,
    ) -> None:
        self.store = store
        self.objects = objects
        self.scheduler = scheduler
        self.providers = providers
        self.fetcher = fetcher
        self._signing_key = signing_key
        self.settings = settings
        self.clock = clock
        self.inputs = inputs
        self.limiter = limiter
        self.sleep = sleep
        self.requeue = requeue
        self.input_fetcher = input_fetcher or fetcher

    # ----------------------------------------------------------------------------------------------- submit

    def submit(self, request: JobRequest) -> Job:
        """Create the job's row and its provider task, once.

        Parameters
        ----------
        request
            The job to run; its ``job_id`` is deterministic, so a repeated event finds the existing row.

        Returns
        -------
        Job
            The job as stored: SUBMITTED, FAILED (bad input, provider refusal) or, for a repeat, as found.

        Raises
        ------
        ProviderUnavailable
            The provider could not take the task and this was not the last of ``max_submit_attempts`` creates
            (counted on the job row): no task was created; deliver the request again later.
        RateLimited
            The pipeline's ceiling of calls to the provider is reached: nothing was sent and the job stays
            RECEIVED; deliver the request again after ``retry_after`` seconds (this is not an attempt).
        """
        job = self.store.get(request.job_id)
        if job is not None and not _awaiting_create(job):
            if job.state is JobState.RECEIVED:
                # A previous attempt claimed the create and stopped without recording its outcome.
                return self._outcome_unknown(
                    job,
                    SubmitOutcomeUnknown(
                        "An earlier submit stopped before recording whether the provider took the task."
                    ),
                )
            logger.info("duplicate request for an existing job", extra={**log_keys(job), "state": job.state})
            return job

        now = self.clock()
        stored = job is not None
        if job is None:
            job = self._new_job(request, now)
        provider = self.providers.get(request.provider)
        try:
            if request.invalid is not None:
                raise request.invalid
            if provider is None:
                raise InvalidRequest(
                    f"Unknown provider {request.provider!r}; configured: {', '.join(sorted(self.providers))}."
                )
            target = self._prepare(request.target_image, provider, "target image")
            # same-image-swap: the swap faces are the target's own, so the one prepared image serves both
            swap = (
                target
                if request.swap_image == request.target_image
                else self._prepare(request.swap_image, provider, "swap image")
            )
        except InputError as e:
            return self._fail_new(job, e, stored=stored)

        attempt = job.submit_attempts + 1
        claimed = self._claim_submit(job, attempt, stored=stored)
        if claimed is None:
            return self.store.get(request.job_id) or job
        job = claimed
        webhook = None
        if provider.uses_webhook:
            webhook = Webhook(
                url=f"{self.settings.callback_base_url.rstrip('/')}/callbacks/{provider.name}/{job.job_id}",
                secret=webhook_secret(self._key(), job.job_id),
            )
        task_input = TaskInput(
            job_id=job.job_id,
            task=job.task,
            target_image=target,
            swap_image=swap,
            options=job.options,
            image_urls=self._image_urls(job.job_id, target, swap),
        )
        try:
            with self._call_turn(provider.name):
                task_id = provider.create_task(task_input, webhook)
        except RateLimited:
            released = {"submit_started_at": None, "submit_attempts": attempt - 1}
            self.store.update(job.job_id, in_states=[job.state], changes=released)
            raise
        except SubmitOutcomeUnknown as e:
            return self._outcome_unknown(job, e)
        except (ProviderUnavailable, ProviderTaskFailed) as e:
            if e.retryable and job.fallback_providers:
                return self._fail_over(job, e, in_submit=True)
            if not isinstance(e, ProviderUnavailable):
                return self._finish(job, JobState.FAILED, error=e)
            if attempt < self.settings.max_submit_attempts:
                self.store.update(job.job_id, in_states=[job.state], changes={"submit_started_at": None})
                raise
            return self._finish(job, JobState.FAILED, error=e)
        except PipelineError as e:
            return self._finish(job, JobState.FAILED, error=e)

        stamp = isoformat(self.clock())
        attempts = [*job.attempts, {"provider": provider.name, "at": stamp, "provider_task_id": task_id}]
        changes: dict[str, Any] = {
            "provider_task_id": task_id,
            "submitted_at": stamp,
            "updated_at": stamp,
            "attempts": attempts,
        }
        if job.state is JobState.RECEIVED:
            submitted = self.store.transition(
                job.job_id, from_states=[JobState.RECEIVED], to_state=JobState.SUBMITTED, changes=changes
            )
        else:
            submitted = self.store.update(job.job_id, in_states=[JobState.SUBMITTED], changes=changes)
        job = submitted or self.store.get(job.job_id) or job
        self._schedule_check(job, check=0)
        return job

    @contextmanager
    def _call_turn(self, provider: str, *, max_wait: float | None = None) -> Iterator[None]:
        """Hold a turn under the provider's ceilings for one call: the block makes the call.

        Short waits for a turn are slept through here. The turn is given back when the block ends (the call was
        answered or failed), and the limiter counts the ceiling from then, so network delays cannot bunch calls
        up where the provider counts them.

        Raises ``RateLimited`` (with ``retry_after``), before the block runs, when the wait would be longer than
        ``max_wait`` seconds in all (default ``max_throttle_wait_seconds``): the caller hands the work back to its
        queue rather than hold a function for it.
        """
        per_second, per_hour = self.settings.rate_limits.get(provider, (0, 0))
        limiter = self.limiter
        if limiter is None or not (per_second or per_hour):
            yield
            return
        limit = self.settings.max_throttle_wait_seconds if max_wait is None else max_wait
        waited = 0.0
        while True:
            turn = limiter.acquire(provider, per_second=per_second, per_hour=per_hour)
            if turn.wait <= 0:
                break
            if waited + turn.wait > limit:
                raise RateLimited(
                    f"The ceiling of calls to {provider} is reached; retry in {turn.wait:.1f} s.",
                    retry_after=turn.wait,
                )
            self.sleep(turn.wait)
            waited += turn.wait
        try:
            yield
        finally:
            limiter.release(turn)

    def _image_urls(
        self, job_id: str, target: PreparedImage, swap: PreparedImage
    ) -> Callable[[], tuple[str, str]] | None:
        """For URL-only providers: store the prepared images under ``prepared/<job_id>/`` and presign them."""
        inputs, bucket = self.inputs, self.settings.input_bucket
        if inputs is None or not bucket:
            return None

        def urls() -> tuple[str, str]:
            signed = []
            for name, image in (("target", target), ("swap", swap)):
                key = f"prepared/{job_id}/{name}.{image.extension}"
                inputs.put_input(bucket, key, image.data, content_type=image.content_type)
                signed.append(inputs.presign_get(bucket, key, version_id=None, expires_seconds=PREPARED_URL_SECONDS))
            return signed[0], signed[1]

        return urls

    def _fail_over(self, job: Job, error: PipelineError, *, in_submit: bool = False) -> Job:
        """Record the failed attempt, move the job to its next provider and submit it there at once.

        Only retryable provider errors fail over (unavailable, maintenance, a failed generation); an input
        error (no face, bad image) or a refusal ends the job, since another provider would refuse it too.
        ``in_submit``: called by :meth:`submit` (the submit function), which creates the next task itself;
        otherwise (a callback, a check) the request goes back to the submit function, whose permissions and
        ceiling the create needs, through the submit queue.
        """
        stamp = isoformat(self.clock())
        failed: dict[str, Any] = {"provider": job.provider, "at": stamp, "error": error.as_dict()}
        changes: dict[str, Any] = {
            "provider": job.fallback_providers[0],
            "fallback_providers": job.fallback_providers[1:] or None,
            "attempts": [*job.attempts, failed],
            "submit_started_at": None,
            "submit_attempts": 0,
            "provider_task_id": None,
            "error": None,
            "updated_at": stamp,
        }
        if job.state is JobState.SUBMITTED:
            failed["provider_task_id"] = job.provider_task_id
            changes["deadline_at"] = after(self.clock(), self.settings.job_deadline_seconds)
        moved = self.store.update(
            job.job_id, in_states=[job.state], changes=changes, expected={"provider": job.provider}
        )
        if moved is None:
            return self.store.get(job.job_id) or job
        logger.info(
            "job failed over", extra={**log_keys(moved), "from_provider": job.provider, "error_code": error.code}
        )
        request = moved.request()
        if in_submit or self.requeue is None:
            return self.submit(request)
        # From a callback or a check: the submit function creates the next task (its permissions, its ceiling).
        self.requeue.send(request)
        return moved

    def receive(self, request: JobRequest) -> tuple[Job, bool]:
        """Record a job from the API or an event as RECEIVED, before it is queued for submission.

        Returns
        -------
        tuple
            ``(job, created)``: the job as stored, and whether this call created it (``False`` for a repeat).
        """
        job = self._new_job(request, self.clock())
        if self.store.create(job):
            return job, True
        return self.store.get(request.job_id) or job, False

    def _new_job(self, request: JobRequest, now: Any) -> Job:
        created = isoformat(now)
        return Job(
            job_id=request.job_id,
            state=JobState.RECEIVED,
            provider=request.provider,
            task=request.task,
            target_image=request.target_image,
            swap_image=request.swap_image,
            result_key=request.result_key,
            source=request.source,
            retry_of=request.retry_of,
            fallback_providers=list(request.fallback_providers),
            options=dict(request.options),
            created_at=created,
            updated_at=created,
            deadline_at=after(now, self.settings.job_deadline_seconds),
        )

    def _claim_submit(self, job: Job, attempt: int, *, stored: bool) -> Job | None:
        """Record the intent to create the provider task before sending it (the row is the guard)."""
        stamp = isoformat(self.clock())
        if not stored:
            claimed = replace(job, submit_started_at=stamp, submit_attempts=attempt)
            return claimed if self.store.create(claimed) else None
        return self.store.update(
            job.job_id,
            in_states=[job.state],
            changes={"submit_started_at": stamp, "submit_attempts": attempt, "updated_at": stamp},
            require_absent="submit_started_at",
        )

    def _fail_new(self, job: Job, error: PipelineError, *, stored: bool) -> Job:
        if stored:
            return self._finish(job, JobState.FAILED, error=error)
        now = isoformat(self.clock())
        failed = replace(job, state=JobState.FAILED, error=error.as_dict(), finished_at=now, updated_at=now)
        return failed if self.store.create(failed) else (self.store.get(job.job_id) or failed)

    def _outcome_unknown(self, job: Job, error: PipelineError) -> Job:
        """The create may have reached the provider: never re-send it; wait for its callback or the deadline."""
        now = isoformat(self.clock())
        moved = self.store.transition(
            job.job_id,
            from_states=[JobState.RECEIVED],
            to_state=JobState.SUBMITTED,
            changes={"submitted_at": now, "updated_at": now, "error": error.as_dict()},
        )
        job = moved or self.store.get(job.job_id) or job
        if moved is not None:
            self._schedule_check(job, check=0)
        return job

    def _prepare(self, ref: ImageRef, provider: Provider, name: str) -> PreparedImage:
        return prepare_image(self._read_image(ref, name), provider.image_limits, name=name)

    def _read_image(self, ref: ImageRef, name: str) -> bytes:
        limit = self.settings.max_input_bytes
        if ref.url:
            try:
                with self.input_fetcher.open(ref.url, allowed_hosts=("*",)) as stream:
                    return b"".join(stream.chunks())
            except ResultError as e:
                error = {"result_too_large": ImageTooLarge, "invalid_result": InvalidImage}.get(e.code, InputNotFound)
                raise error(f"The {name} URL could not be used: {e.message}") from e
            except ProviderUnavailable as e:
                raise InputNotFound(f"The {name} URL could not be downloaded: {e.message}", retryable=True) from e
        if not ref.bucket or not ref.key:
            raise InvalidRequest(f"The {name} names no object.")
        return self.objects.read(ref.bucket, ref.key, version_id=ref.version_id, max_bytes=limit)

    # ---------------------------------------------------------------------------------------------- collect

    def collect(
        self,
        job: Job,
        snapshot: TaskSnapshot | None = None,
        *,
        max_wait: float | None = None,
        deadline: float | None = None,
    ) -> Job:
        """Bring a submitted job up to date with its provider task, keeping the result when it is done.

        Parameters
        ----------
        job
            The job as last read.
        snapshot
            The task's status if the caller already has it; otherwise it is read from the provider.
        max_wait
            Longest wait, in seconds, for a call under the provider's ceiling (default
            ``max_throttle_wait_seconds``); longer raises ``RateLimited``.
        deadline
            ``time.monotonic()`` by which the result copy must have ended (the callback's share of the HTTP API's
            time); ``None``: no limit but the function's own timeout.

        Returns
        -------
        Job
            SUCCEEDED with its result recorded, FAILED, or unchanged while the task runs.

        Raises
        ------
        CopyOutOfTime
            The result copy did not end by ``deadline``; nothing was kept and the job is unchanged.
        ProviderUnavailable
            The provider or the result host is temporarily failing, or (``RateLimited``) no call is free under
            the provider's ceiling within ``max_wait``; the job is unchanged. Try again later.
        """
        if job.terminal or job.provider_task_id is None:
            return job
        provider = self.providers[job.provider]
        if snapshot is None:
            with self._call_turn(provider.name, max_wait=max_wait):
                snapshot = provider.get_task(job.provider_task_id)
        if snapshot.status in (TaskStatus.QUEUED, TaskStatus.RUNNING):
            return job
        if snapshot.status is TaskStatus.FAILED:
            error = snapshot.error if isinstance(snapshot.error, PipelineError) else None
            error = error or ResultMissing("The provider failed the task.")
            if error.retryable and not isinstance(error, InputError) and job.fallback_providers:
                return self._fail_over(job, error)
            return self._finish(job, JobState.FAILED, error=error)
        if not snapshot.result_url:
            return self._finish(
                job, JobState.FAILED, error=ResultMissing("The provider reported success without a result URL.")
            )
        try:
            with self.fetcher.open(
                snapshot.result_url, allowed_hosts=provider.result_hosts, deadline=deadline
            ) as stream:
                stored = self.objects.store_result(
                    self.settings.results_bucket,
                    job.result_key,
                    stream.chunks(),
                    content_type=stream.content_type,
                    job_id=job.job_id,
                )
        except ProviderUnavailable:
            raise
        except ResultError as e:
            return self._finish(job, JobState.FAILED, error=e)
        return self._finish(
            job,
            JobState.SUCCEEDED,
            result=stored.as_dict(),
            extra={"result_url_expires_at": snapshot.result_url_expires_at},
        )

    def _finish(
        self,
        job: Job,
        state: JobState,
        *,
        error: PipelineError | None = None,
        result: dict[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Job:
        now = isoformat(self.clock())
        changes: dict[str, Any] = {"finished_at": now, "updated_at": now, **(extra or {})}
        if error is not None:
            changes["error"] = error.as_dict()
        if result is not None:
            changes["result"] = result
            changes["error"] = None
        moved = self.store.transition(
            job.job_id, from_states=[JobState.RECEIVED, JobState.SUBMITTED], to_state=state, changes=changes
        )
        if moved is None:
            logger.info("job already moved on; nothing changed", extra=log_keys(job))
            return self.store.get(job.job_id) or job
        logger.info(
            "job finished", extra={**log_keys(moved), "state": state, "error_code": (error.code if error else None)}
        )
        return moved

    # ------------------------------------------------------------------------------------------------ check

    def check(self, job_id: str, *, check: int) -> Job | None:
        """The poller's step: time out a job past its deadline, else collect, else look again later.

        Parameters
        ----------
        job_id
            The job to check.
        check
            How many checks came before this one (sets the backoff).

        Returns
        -------
        Job or None
            The job after the check, or ``None`` if there is no such job.
        """
        job = self.store.get(job_id)
        if job is None or job.terminal:
            return job
        now = self.clock()
        if now >= parse_time(job.deadline_at):
            reason = (
                "the provider never confirmed the task"
                if job.provider_task_id is None
                else "the provider did not finish in time"
            )
            timed_out = JobTimedOut(f"The job passed its deadline {job.deadline_at}: {reason}.")
            if job.fallback_providers:
                return self._fail_over(job, timed_out)
            return self._finish(job, JobState.TIMED_OUT, error=timed_out)
        retry_after: float | None = None
        try:
            job = self.collect(job)
        except ProviderUnavailable as e:
            logger.warning("provider unavailable during check", extra={**log_keys(job), "error_code": e.code})
            retry_after = e.retry_after
        if not job.terminal:
            self._schedule_check(job, check=check + 1, at_least=retry_after)
        return job

    def _schedule_check(self, job: Job, *, check: int, at_least: float | None = None) -> None:
        first, factor, maximum = (
            self.settings.poll_delays.get(job.provider) or self.providers[job.provider].poll_delays()
        )
        delay = min(first * factor**check, maximum)
        # A provider that counts reads against a quota (AIPhotoCraft) may ask to wait for its reset.
        for floor in (at_least, self.providers[job.provider].quota_delay()):
            if floor:
                delay = max(delay, floor)
        to_deadline = (parse_time(job.deadline_at) - self.clock()).total_seconds()
        delay = max(0.0, min(delay, to_deadline + 1, MAX_CHECK_DELAY_SECONDS))
        self.scheduler.schedule(job.job_id, delay_seconds=round(delay), check=check)

    def failed_delivery(self, job_id: str, cause: BaseException, *, deliveries: int) -> Job | None:
        """Called when processing a queue message about ``job_id`` raised; on the message's last allowed delivery
        (``deliveries`` reached ``max_receive_count``: the dead-letter queue is next) the job is ended.

        So that nothing is lost silently, a poison message's job ends FAILED and visible, with ``cause`` when it
        is a pipeline error (e.g. ``rate_limited`` after a ceiling held it back every time), else
        ``processing_failed`` naming only the exception's type (its text may hold data that does not belong in a
        job row or an event). Both are retryable (``POST /jobs/{job_id}/retry``) once the cause is fixed; the
        message stays in the dead-letter queue for inspection.

        Parameters
        ----------
        job_id
            The job the message is about.
        cause
            What the last delivery raised.
        deliveries
            How many times the message was delivered (its ``ApproximateReceiveCount``).

        Returns
        -------
        Job or None
            The job, FAILED on the last delivery (unchanged if it had already ended); ``None`` before the last
            delivery (the message will be delivered again) or if no such job exists.
        """
        if not self.settings.max_receive_count or deliveries < self.settings.max_receive_count:
            return None
        job = self.store.get(job_id)
        if job is None or job.terminal:
            return job
        error = cause if isinstance(cause, PipelineError) else None
        error = error or ProcessingFailed(
            f"Processing the job failed on all {deliveries} deliveries of its message ({type(cause).__name__}); "
            "the message is in the dead-letter queue."
        )
        logger.error("job given up after its last delivery", extra={**log_keys(job), "error_code": error.code})
        return self._finish(job, JobState.FAILED, error=error)

    # --------------------------------------------------------------------------------------------- callback

    def callback(
        self,
        provider_name: str,
        job_id: str,
        *,
        headers: Mapping[str, str],
        query: Mapping[str, str],
        body: bytes,
        deadline: float | None = None,
    ) -> Job:
        """Take a provider's callback: verify it, then collect from the provider's own status.

        Parameters
        ----------
        provider_name, job_id
            From the callback route ``/callbacks/{provider}/{job_id}``.
        headers, query
            The request's headers (lower-case names) and query parameters; the provider says which one carries
            the per-job secret (PiAPI: the ``x-webhook-secret`` header; CRUN: the ``token`` query parameter).
        body
            The raw body; used only to learn a task id the job row lacks, never as the task's status.
        deadline
            ``time.monotonic()`` by which the result copy must end so the callback is answered in time (the HTTP
            API waits 30 s); a copy that would not end by then is stopped and handed to a check at once.

        Returns
        -------
        Job
            The job after collecting (a repeat for a finished job changes nothing).

        Raises
        ------
        WebhookRejected
            The secret is missing or wrong, or the job is unknown or belongs to another provider. Checked first,
            on the raw request: an unauthenticated caller learns nothing else.
        UnsupportedCallbackType, InvalidCallback
            For a provider with ``json_callbacks``: the content type is not ``application/json`` (or
            ``application/*+json``), or the body is not a JSON object. Nothing is changed.
        ProviderUnavailable
            The provider could not be asked for the task's status; the caller answers 5xx so it retries.
        """
        provider = self.providers.get(provider_name)
        presented = provider.presented_secret(headers, query) if provider is not None else None
        if not verify_webhook_secret(self._key(), job_id, presented):
            raise WebhookRejected("The callback's secret is missing or wrong.")
        if provider is not None and provider.json_callbacks:
            _check_json_callback(provider_name, headers, body)
        job = self.store.get(job_id)
        if job is None or job.provider != provider_name or provider is None:
            raise WebhookRejected("The callback names no job of this provider.")
        if job.terminal:
            return job
        if job.provider_task_id is None:
            task_id = provider.task_id_from_callback(body)
            if task_id is None:
                return job
            job = (
                self.store.update(
                    job.job_id,
                    in_states=[JobState.RECEIVED, JobState.SUBMITTED],
                    changes={"provider_task_id": task_id, "updated_at": isoformat(self.clock())},
                    require_absent="provider_task_id",
                )
                or self.store.get(job_id)
                or job
            )
        try:
            return self.collect(job, max_wait=0, deadline=deadline)
        except RateLimited as e:
            # The provider's ceiling has no call free now: answer the callback at once and let a check collect
            # once a call is free, rather than hold the provider's request (and this function) for a slot.
            logger.info("callback deferred to a check: call ceiling reached", extra=log_keys(job))
            delay = math.ceil(e.retry_after or 1)
            self.scheduler.schedule(job.job_id, delay_seconds=min(delay, MAX_CHECK_DELAY_SECONDS), check=0)
            return job
        except CopyOutOfTime:
            # The copy would not end in the callback's time: a check (with the poller's own time) collects it now.
            logger.info("callback deferred to a check: the result copy did not fit its time", extra=log_keys(job))
            self.scheduler.schedule(job.job_id, delay_seconds=0, check=0)
            return job

    def _key(self) -> bytes:
        key = self._signing_key
        return key() if callable(key) else key


def _check_json_callback(provider_name: str, headers: Mapping[str, str], body: bytes) -> None:
    """Refuse a callback that is not a JSON object sent as ``application/json`` (or ``application/*+json``)."""
    media_type = (headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if not (
        media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))
    ):
        raise UnsupportedCallbackType(f"Callbacks from {provider_name} must be application/json.")
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        parsed = None
    if not isinstance(parsed, dict):
        raise InvalidCallback("The callback body is not a JSON object.")


def _awaiting_create(job: Job) -> bool:
    """Whether a job still needs its provider task created: new (RECEIVED), or moved to its next provider
    (SUBMITTED with no task), and no create under way (``submit_started_at`` unset)."""
    if job.submit_started_at:
        return False
    return job.state is JobState.RECEIVED or (
        job.state is JobState.SUBMITTED and job.provider_task_id is None and not job.error
    )


def log_keys(job: Job) -> dict[str, Any]:
    """The keys every log line about ``job`` carries: ``job_id``, ``provider`` and ``provider_task_id`` once known.

    The domain passes them as ``extra`` on its own lines, so a line is correlated however the handler that
    called it set up its logger (the Powertools formatter leaves out ``None`` values).
    """
    return {"job_id": job.job_id, "provider": job.provider, "provider_task_id": job.provider_task_id}


def terminal_event(old: Job | None, new: Job) -> tuple[str, dict[str, Any]] | None:
    """The event to publish for a job row change, if the change ended the job.

    Parameters
    ----------
    old, new
        The row before (``None`` for an insert) and after the change (from the jobs table's stream).

    Returns
    -------
    tuple or None
        ``("Job Succeeded" | "Job Failed", detail)`` when ``new`` is terminal and ``old`` was not, else ``None``.
        The detail: ``job_id``, ``state``, ``provider``, ``task``, ``provider_task_id``, ``target_image``,
        ``swap_image``, ``created_at``, ``finished_at`` and ``result`` (bucket, key, size, sha256,
        content_type) or ``error`` (code, message, retryable).
    """
    if not new.terminal or (old is not None and old.terminal):
        return None
    detail: dict[str, Any] = {
        "job_id": new.job_id,
        "state": str(new.state),
        "provider": new.provider,
        "task": new.task,
        "provider_task_id": new.provider_task_id,
        "target_image": new.target_image.as_dict(),
        "swap_image": new.swap_image.as_dict(),
        "created_at": new.created_at,
        "finished_at": new.finished_at,
    }
    if new.state is JobState.SUCCEEDED:
        detail["result"] = new.result
        return "Job Succeeded", detail
    detail["error"] = new.error
    return "Job Failed", detail
