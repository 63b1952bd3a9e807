"""The pipeline: the domain's parts put together over its ports, with one facade for the handlers.

Where each concern lives:

=======================  =====================================================================================
:mod:`faceswap.lifecycle`   job states, phases and the table of transitions; the only writer of job rows
:mod:`faceswap.submission`  record a job, create its provider task once, fail over to the next provider
:mod:`faceswap.inputs`      read and prepare the target image and swap face for the provider
:mod:`faceswap.gate`        wait for a turn under a provider's call ceilings
:mod:`faceswap.collection`  collect a result, check a job later, end it at its deadline or its last delivery
:mod:`faceswap.checks`      when the next check comes
:mod:`faceswap.webhooks`    webhook URLs and secrets; verify and take a callback
:mod:`faceswap.events`      the "Job Succeeded" / "Job Failed" events, from the jobs table's stream
=======================  =====================================================================================

:class:`Pipeline` builds them from :class:`Ports` and :class:`Settings`; the handlers call its few methods.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from faceswap.checks import CheckPolicy
from faceswap.collection import Collector
from faceswap.faces import DEFAULT_MARGIN, DEFAULT_THRESHOLD, FaceChooser
from faceswap.gate import CallGate
from faceswap.inputs import InputPreparer
from faceswap.lifecycle import Lifecycle
from faceswap.model import Job, JobRequest, utcnow
from faceswap.parts import Composer
from faceswap.ports import (
    CheckScheduler,
    FaceMatcher,
    InputStore,
    JobStore,
    ObjectStore,
    Provider,
    RateLimiter,
    RequestQueue,
)
from faceswap.submission import Submitter
from faceswap.webhooks import Callbacks, WebhookSigner

if TYPE_CHECKING:  # the fetcher (and httpx) is wired in; the publisher never loads it
    from faceswap.fetch import ResultFetcher


@dataclass(frozen=True)
class Settings:
    """What the domain needs to know about its deployment (made from :class:`faceswap.config.Config`, which holds
    the defaults: no second copy of them here).

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
        The consuming queue's ``maxReceiveCount``: a job whose message fails on that delivery is ended FAILED.
        0: never.
    face_match_threshold, face_match_margin
        A face map's least similarity and least lead over the runner-up (:class:`faceswap.faces.FaceChooser`).
    video_deadline_seconds
        ``job_deadline_seconds`` for video jobs.
    max_video_bytes, max_video_result_bytes
        Largest target video read, and largest video result kept, in bytes.
    video_poll_delays
        ``poll_delays`` for video tasks (the registry's ``video_poll_delays``: video tasks run for minutes).
    hand_over_videos
        This function does not run video jobs: it hands their requests to the media queue (:meth:`Pipeline.hand_over`).
    """

    results_bucket: str
    callback_base_url: str
    job_deadline_seconds: int
    max_input_bytes: int
    max_submit_attempts: int
    poll_delays: Mapping[str, tuple[float, float, float]] = field(default_factory=dict)
    input_bucket: str = ""
    rate_limits: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    max_throttle_wait_seconds: float = 3.0
    max_receive_count: int = 0
    face_match_threshold: float = DEFAULT_THRESHOLD
    face_match_margin: float = DEFAULT_MARGIN
    video_deadline_seconds: int = 1800
    max_video_bytes: int = 500 * 1024 * 1024
    max_video_result_bytes: int = 1024 * 1024 * 1024
    hand_over_videos: bool = False
    video_poll_delays: Mapping[str, tuple[float, float, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Ports:
    """The adapters the domain runs over (AWS and HTTP in the functions, fakes in unit tests).

    Attributes
    ----------
    store
        The jobs table.
    objects
        The inputs and results buckets.
    scheduler
        The check queue.
    providers
        Provider adapters by name.
    fetcher
        Safe downloader of results.
    signing_key
        The webhook signing key, or a function returning it.
    input_fetcher
        Safe downloader of input images given as URLs (the input byte cap); default ``fetcher``.
    inputs
        Stores prepared inputs for URL-only providers (and inline API images).
    limiter
        The shared call ceilings; ``None``: none.
    requeue
        The submit queue (moves to the next provider decided outside the submit function).
    matcher
        The face matcher for face maps (the submit function); ``None``: a job with a face map fails
        ``configuration_error``.
    """

    store: JobStore
    objects: ObjectStore
    scheduler: CheckScheduler
    providers: Mapping[str, Provider]
    fetcher: ResultFetcher
    signing_key: bytes | Callable[[], bytes]
    input_fetcher: ResultFetcher | None = None
    inputs: InputStore | None = None
    limiter: RateLimiter | None = None
    requeue: RequestQueue | None = None
    matcher: FaceMatcher | None = None


class Pipeline:
    """The pipeline's parts put together, for the handlers: ``lifecycle``, ``submission``, ``collection`` (checks,
    poison endings) and ``callbacks``, with the few operations the queue handlers call directly.

    Parameters
    ----------
    ports
        The adapters.
    settings
        Deployment settings.
    clock
        Returns the current UTC time (injected by tests).
    sleep
        Sleeps through short waits for a call turn (injected by tests).
    """

    def __init__(
        self,
        ports: Ports,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.ports = ports
        self.settings = settings
        self.lifecycle = Lifecycle(
            ports.store,
            deadline_seconds=settings.job_deadline_seconds,
            video_deadline_seconds=settings.video_deadline_seconds,
            clock=clock,
        )
        self.gate = gate = CallGate(
            limiter=ports.limiter,
            ceilings=settings.rate_limits,
            max_wait=settings.max_throttle_wait_seconds,
            sleep=sleep,
        )
        checks = CheckPolicy(
            scheduler=ports.scheduler,
            providers=ports.providers,
            poll_delays=settings.poll_delays,
            video_poll_delays=settings.video_poll_delays,
            clock=clock,
        )
        webhooks = WebhookSigner(settings.callback_base_url, ports.signing_key)
        composer = (
            Composer(objects=ports.objects, writer=ports.inputs, bucket=settings.results_bucket)
            if ports.inputs is not None
            else None
        )
        self.submission = Submitter(
            lifecycle=self.lifecycle,
            providers=ports.providers,
            gate=gate,
            inputs=InputPreparer(
                objects=ports.objects,
                fetcher=ports.input_fetcher or ports.fetcher,
                max_bytes=settings.max_input_bytes,
                max_video_bytes=settings.max_video_bytes,
                inputs=ports.inputs,
                input_bucket=settings.input_bucket,
            ),
            webhooks=webhooks,
            checks=checks,
            max_attempts=settings.max_submit_attempts,
            requeue=ports.requeue,
            faces=(
                FaceChooser(
                    matcher=ports.matcher, threshold=settings.face_match_threshold, margin=settings.face_match_margin
                )
                if ports.matcher is not None
                else None
            ),
            composer=composer,
        )
        self.collection = Collector(
            lifecycle=self.lifecycle,
            providers=ports.providers,
            gate=gate,
            fetcher=ports.fetcher,
            objects=ports.objects,
            results_bucket=settings.results_bucket,
            checks=checks,
            fail_over=self.submission.fail_over,
            max_receive_count=settings.max_receive_count,
            clock=clock,
            composer=composer,
            input_bucket=settings.input_bucket,
            max_video_result_bytes=settings.max_video_result_bytes,
            hand_over_videos=settings.hand_over_videos,
            next_part=self.submission.next_part,
        )
        self.callbacks = Callbacks(
            lifecycle=self.lifecycle,
            providers=ports.providers,
            webhooks=webhooks,
            collector=self.collection,
            checks=checks,
        )

    def receive(self, request: JobRequest) -> tuple[Job, bool]:
        """See :meth:`faceswap.submission.Submitter.receive`."""
        return self.submission.receive(request)

    def submit(self, request: JobRequest) -> Job:
        """See :meth:`faceswap.submission.Submitter.submit`."""
        return self.submission.submit(request)

    def hand_over(self, request: JobRequest) -> bool:
        """Send a video job's request to the media function (through the media queue) when this function does not run
        video jobs (``Settings.hand_over_videos``); ``True`` if it was sent, and the caller does nothing more."""
        if (
            not self.settings.hand_over_videos
            or request.target_video is None
            or request.invalid is not None  # refused where it is, with its error: nothing of it needs PyAV
            or self.ports.requeue is None
        ):
            return False
        self.ports.requeue.send(request)
        return True

    def check(self, job_id: str, *, check: int, task_id: str | None = None) -> Job | None:
        """See :meth:`faceswap.collection.Collector.check`."""
        return self.collection.check(job_id, check=check, task_id=task_id)

    def failed_delivery(self, job_id: str, cause: BaseException, *, deliveries: int) -> Job | None:
        """See :meth:`faceswap.collection.Collector.failed_delivery`."""
        return self.collection.failed_delivery(job_id, cause, deliveries=deliveries)

    def invocation(self, remaining_seconds: float) -> AbstractContextManager[None]:
        """Wrap a handler's invocation, which Lambda stops after ``remaining_seconds`` (the context's
        ``get_remaining_time_in_millis() / 1000``): provider calls are bounded by it, and the call ceilings' shares
        this container holds go to containers that wait for them when it ends
        (:meth:`faceswap.gate.CallGate.invocation`)."""
        return self.gate.invocation(remaining_seconds)
