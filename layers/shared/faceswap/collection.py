"""Collection: bring a job up to date with its provider task, keep the result, check again later, or end it.

Webhook and polling converge on :meth:`Collector.collect`: the provider's own task status is the truth, the
result is streamed into the results bucket, and only then does the job end SUCCEEDED. The poller's
:meth:`Collector.check` also ends a job at its deadline (or moves it to its next provider), and
:meth:`Collector.failed_delivery` ends a job whose message failed every delivery.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from faceswap import media
from faceswap.checks import CheckPolicy
from faceswap.errors import (
    CopyOutOfTime,
    CreateInFlight,
    InputError,
    JobTimedOut,
    PipelineError,
    ProcessingFailed,
    ProviderUnavailable,
    ResultError,
    ResultMissing,
)
from faceswap.faces import ISOLATE_COMPOSITE, ChosenFace
from faceswap.gate import CallGate
from faceswap.lifecycle import Lifecycle, log_keys
from faceswap.model import VIDEO, Job, TaskSnapshot, TaskStatus, parse_time
from faceswap.parts import RESULT_CONTENT_TYPE, Composer, check_part, part_key
from faceswap.ports import ObjectStore, Provider

if TYPE_CHECKING:  # the fetcher (and httpx) is wired in; the publisher never loads it
    from datetime import datetime

    from faceswap.fetch import ResultFetcher

logger = logging.getLogger(__name__)


@dataclass(kw_only=True)
class Collector:
    """Collects results and checks jobs.

    Attributes
    ----------
    lifecycle
        The jobs table's transitions.
    providers
        Provider adapters by name.
    gate
        Turns under the providers' call ceilings.
    fetcher
        Safe downloader of results (allowed hosts, byte cap, content sniffing).
    objects, results_bucket
        Where results are kept.
    checks
        Schedules the next check.
    fail_over
        Moves a job to its next provider after a retryable failure (``Submitter.fail_over``).
    max_receive_count
        The consuming queue's ``maxReceiveCount``: a job whose message fails on that delivery is ended FAILED
        (see :meth:`failed_delivery`). 0: never.
    clock
        Returns the current UTC time.
    composer, next_part
        For face maps done by isolate and composite (:mod:`faceswap.parts`): puts the parts together, and moves a
        job to its next part (``Submitter.next_part``).
    input_bucket
        Where a video job's prepared video is (``prepared/<job_id>/target.mp4``), to restore a result's lost audio.
    max_video_result_bytes
        Largest video result kept, in bytes.
    """

    lifecycle: Lifecycle
    providers: Mapping[str, Provider]
    gate: CallGate
    fetcher: ResultFetcher
    objects: ObjectStore
    results_bucket: str
    checks: CheckPolicy
    fail_over: Callable[[Job, PipelineError], Job]
    max_receive_count: int = 0
    clock: Callable[[], datetime]
    composer: Composer | None = None
    next_part: Callable[[Job], Job] | None = None
    input_bucket: str = ""
    max_video_result_bytes: int = 1024 * 1024 * 1024
    hand_over_videos: bool = False
    """This function does not run video jobs: a check of one that reaches it (sent before the deployment had a media
    queue) is scheduled again for the media function instead."""

    def collect(
        self,
        job: Job,
        snapshot: TaskSnapshot | None = None,
        *,
        max_wait: float | None = None,
        deadline: float | None = None,
        by: str = "check",
    ) -> Job:
        """Bring a submitted job up to date with its provider task, keeping the result when it is done.

        Parameters
        ----------
        job
            The job as last read.
        snapshot
            The task's status if the caller already has it; otherwise it is read from the provider.
        max_wait
            Longest wait, in seconds, for a call under the provider's ceiling (default: the gate's); longer raises
            ``RateLimited``.
        deadline
            ``time.monotonic()`` by which the result copy must have ended (the callback's share of the HTTP API's
            time); ``None``: no limit but the function's own timeout.
        by
            What brought the provider's answer, recorded as the ended job's ``finished_by``: ``webhook`` or
            ``check``.

        Returns
        -------
        Job
            SUCCEEDED with its result recorded, FAILED, moved to its next provider, or unchanged while the task
            runs.

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
            with self.gate.turn(provider.name, max_wait=max_wait):
                snapshot = provider.get_task(job.provider_task_id)
        if snapshot.status in (TaskStatus.QUEUED, TaskStatus.RUNNING):
            return job
        if snapshot.status is TaskStatus.FAILED:
            error = snapshot.error if isinstance(snapshot.error, PipelineError) else None
            error = error or ResultMissing("The provider failed the task.")
            if error.retryable and not isinstance(error, InputError) and job.fallback_providers:
                return self.fail_over(job, error)
            return self._fail(job, error, by)
        if not snapshot.result_url:
            return self._fail(job, ResultMissing("The provider reported success without a result URL."), by)
        if job.chosen_faces and job.chosen_faces[0].get("method") == ISOLATE_COMPOSITE:
            return self._collect_part(job, snapshot, provider, deadline, by)
        if job.media_type == VIDEO:
            return self._collect_video(job, snapshot, provider, deadline, by)
        try:
            with self.fetcher.open(
                snapshot.result_url, allowed_hosts=provider.result_hosts, deadline=deadline
            ) as stream:
                stored = self.objects.store_result(
                    self.results_bucket,
                    job.result_key,
                    stream.chunks(),
                    content_type=stream.content_type,
                    job_id=job.job_id,
                )
        except ProviderUnavailable:
            raise
        except ResultError as e:
            return self._fail(job, e, by)
        succeeded = self.lifecycle.succeed(job, stored, result_url_expires_at=snapshot.result_url_expires_at, by=by)
        return succeeded or self.lifecycle.reread(job)

    def _collect_part(
        self, job: Job, snapshot: TaskSnapshot, provider: Provider, deadline: float | None, by: str
    ) -> Job:
        """Keep a face map part's swapped crop (never at the result key), then move to the next part, or, after the
        last, keep the composite of every part at the result key and end the job SUCCEEDED. A callback (``deadline``
        given) keeps the last part and raises ``CopyOutOfTime``: the callback hands the composite to a check."""
        assert snapshot.result_url and self.composer is not None and self.next_part is not None
        try:
            faces = [ChosenFace.from_dict(face) for face in job.chosen_faces]
            with self.fetcher.open(
                snapshot.result_url, allowed_hosts=provider.result_hosts, deadline=deadline
            ) as stream:
                output = b"".join(stream.chunks())  # a crop: small, and checked before it is kept
                content_type = stream.content_type
            check_part(output, faces[job.part], provider.image_limits)
            self.objects.store_result(
                self.results_bucket,
                part_key(job.job_id, job.provider, job.part, job.provider_task_id or ""),
                iter([output]),
                content_type=content_type,
                job_id=job.job_id,
            )
            if job.part + 1 < len(faces):
                return self.next_part(job)
            if deadline is not None:
                # A callback: the last part is kept; compositing (and keeping a PNG of the whole image) is left to a
                # check, in the poller's own time, so the callback still answers within the HTTP API's 30 s.
                raise CopyOutOfTime("the composite is made by a check")
            data = self.composer.assemble(job, faces, provider.image_limits)
            stored = self.objects.store_result(
                self.results_bucket, job.result_key, iter([data]), content_type=RESULT_CONTENT_TYPE, job_id=job.job_id
            )
        except ProviderUnavailable:
            raise
        except (ResultError, InputError) as e:
            return self._fail(job, e, by)
        succeeded = self.lifecycle.succeed(job, stored, result_url_expires_at=snapshot.result_url_expires_at, by=by)
        return succeeded or self.lifecycle.reread(job)

    def _collect_video(
        self, job: Job, snapshot: TaskSnapshot, provider: Provider, deadline: float | None, by: str
    ) -> Job:
        """Keep a video result: download it into ``/tmp``, check it against the video sent (a video, its duration
        within 10 %: :func:`faceswap.media.check_result`), put the sent video's audio back when the result lost it
        (stream copy), then store it with several parts in flight. A callback (``deadline`` given) raises
        ``CopyOutOfTime`` before downloading: a check, with the poller's time and media layer, keeps it."""
        assert snapshot.result_url
        if deadline is not None:
            raise CopyOutOfTime("a video result is kept by a check")
        sent = media.VideoInfo(**(job.media or {})["sent"])
        try:
            with tempfile.TemporaryDirectory(prefix=media.WORKDIR_PREFIX + "result-") as workdir:
                path = os.path.join(workdir, "result")
                digest = hashlib.sha256()  # as the bytes arrive, so keeping them is the upload alone
                with (
                    self.fetcher.open(
                        snapshot.result_url,
                        allowed_hosts=provider.result_hosts,
                        video=True,
                        max_bytes=self.max_video_result_bytes,
                    ) as stream,
                    open(path, "wb") as out,
                ):
                    for chunk in stream.chunks():
                        out.write(chunk)
                        digest.update(chunk)
                sha256: str | None = digest.hexdigest()
                result = media.check_result(path, sent)
                if sent.has_audio and not result.has_audio:
                    path, sha256 = self._with_audio(job, path, workdir), None  # a new file, hashed as it is kept
                stored = self.objects.store_result_file(
                    self.results_bucket,
                    job.result_key,
                    path,
                    content_type=media.CONTENT_TYPES[result.container],
                    job_id=job.job_id,
                    sha256=sha256,
                )
        except ProviderUnavailable:
            raise
        except ResultError as e:
            return self._fail(job, e, by)
        succeeded = self.lifecycle.succeed(job, stored, result_url_expires_at=snapshot.result_url_expires_at, by=by)
        return succeeded or self.lifecycle.reread(job)

    def _with_audio(self, job: Job, result: str, workdir: str) -> str:
        """The result with the audio of the video sent (``prepared/<job_id>/target.mp4``) copied onto it."""
        sent = os.path.join(workdir, "sent.mp4")
        try:
            self.objects.download(
                self.input_bucket, f"prepared/{job.job_id}/target.mp4", sent, max_bytes=self.max_video_result_bytes
            )
        except InputError as e:
            raise ResultMissing(
                f"The result has no audio, and the video sent is gone to restore it: {e.message}"
            ) from e
        restored = os.path.join(workdir, "restored.mp4")
        media.restore_audio(result, sent, restored)
        logger.info("the result had lost its audio: restored from the video sent", extra=log_keys(job))
        return restored

    def check(self, job_id: str, *, check: int, task_id: str | None = None) -> Job | None:
        """The poller's step: end (or move on) a job past its deadline, else collect, else look again later.

        Parameters
        ----------
        job_id
            The job to check.
        check
            How many checks came before this one (sets the backoff).
        task_id
            The provider task the checks were scheduled for, if known. When the job has since moved to another task
            (a face map's next part, the next provider), this chain ends: that task's submit started its own.

        Returns
        -------
        Job or None
            The job after the check, or ``None`` if there is no such job.
        """
        job = self.lifecycle.get(job_id)
        if job is None or job.terminal:
            return job
        if task_id and job.provider_task_id and job.provider_task_id != task_id:
            return job
        if self.hand_over_videos and job.media_type == VIDEO:
            self.checks.next(job, check=check)  # to the media queue (faceswap.aws.sqs routes by media type)
            return job
        if self.clock() >= parse_time(job.deadline_at):
            reason = (
                "the provider never confirmed the task"
                if job.provider_task_id is None
                else "the provider did not finish in time"
            )
            timed_out = JobTimedOut(f"The job passed its deadline {job.deadline_at}: {reason}.")
            if job.fallback_providers:
                return self.fail_over(job, timed_out)
            return self.lifecycle.time_out(job, timed_out) or self.lifecycle.reread(job)
        retry_after: float | None = None
        try:
            job = self.collect(job)
        except ProviderUnavailable as e:
            logger.warning("provider unavailable during check", extra={**log_keys(job), "error_code": e.code})
            retry_after = e.retry_after
        if not job.terminal:
            self.checks.next(job, check=check + 1, at_least=retry_after)
        return job

    def failed_delivery(self, job_id: str, cause: BaseException, *, deliveries: int) -> Job | None:
        """Called when processing a queue message about ``job_id`` raised; on the message's last allowed delivery
        (``deliveries`` reached ``max_receive_count``: the dead-letter queue is next) the job is ended.

        So that nothing is lost silently, a poison message's job ends FAILED and visible (``give-up``), with
        ``cause`` when it is a pipeline error (e.g. ``rate_limited`` after a ceiling held it back every time), else
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
        if not self.max_receive_count or deliveries < self.max_receive_count:
            return None
        job = self.lifecycle.get(job_id)
        if job is None or job.terminal or isinstance(cause, CreateInFlight):  # CreateInFlight: the claimer's job
            return job
        error = cause if isinstance(cause, PipelineError) else None
        error = error or ProcessingFailed(
            f"Processing the job failed on all {deliveries} deliveries of its message ({type(cause).__name__}); "
            "the message is in the dead-letter queue."
        )
        logger.error("job given up after its last delivery", extra={**log_keys(job), "error_code": error.code})
        return self.lifecycle.give_up(job, error) or self.lifecycle.reread(job)

    def _fail(self, job: Job, error: PipelineError, by: str | None = None) -> Job:
        return self.lifecycle.fail(job, error, by=by) or self.lifecycle.reread(job)
