"""The check policy: when the poller looks at a job again.

A check is a delayed message on the check queue. Its delay backs off per provider (``first * factor**check``
seconds, at most ``maximum``: the provider registry's cadence, or ``POLL_DELAYS``), never less than what the provider
or the caller asks for (a quota reset, a ``Retry-After``), and never past the job's deadline plus a second, so the
check at the deadline ends the job on time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from faceswap.model import VIDEO, Job, parse_time
from faceswap.ports import CheckScheduler, Provider

DEFAULT_POLL_DELAYS = (30.0, 1.5, 120.0)
"""The cadence of a provider the deployment gives none for (every registered provider has its own)."""

DEFAULT_VIDEO_POLL_DELAYS = (30.0, 1.5, 120.0)
"""The same for video tasks: the first check after 30 s, every 2 minutes at most."""

MAX_CHECK_DELAY_SECONDS = 900
"""SQS's largest message delay (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SendMessage.html)."""


@dataclass(kw_only=True)
class CheckPolicy:
    """Schedules checks of jobs.

    Attributes
    ----------
    scheduler
        The check queue.
    providers
        Provider adapters by name (their quota delay).
    poll_delays
        ``{provider: (first, factor, maximum)}`` seconds: the registry's cadence or ``POLL_DELAYS``.
    clock
        Returns the current UTC time.
    video_poll_delays
        The same for video jobs (default: :data:`DEFAULT_VIDEO_POLL_DELAYS`).
    """

    scheduler: CheckScheduler
    providers: Mapping[str, Provider]
    poll_delays: Mapping[str, tuple[float, float, float]]
    clock: Callable[[], datetime]
    video_poll_delays: Mapping[str, tuple[float, float, float]] = field(default_factory=dict)

    def next(self, job: Job, *, check: int, at_least: float | None = None) -> None:
        """Schedule the job's ``check``-th check (0 = the first), at least ``at_least`` seconds away."""
        provider = self.providers[job.provider]
        first, factor, maximum = (
            self.video_poll_delays.get(job.provider, DEFAULT_VIDEO_POLL_DELAYS)
            if job.media_type == VIDEO
            else self.poll_delays.get(job.provider, DEFAULT_POLL_DELAYS)
        )
        delay = min(first * factor**check, maximum)
        # A provider that counts reads against a quota (AIPhotoCraft) may ask to wait for its reset.
        for floor in (at_least, provider.quota_delay()):
            if floor:
                delay = max(delay, floor)
        to_deadline = (parse_time(job.deadline_at) - self.clock()).total_seconds()
        delay = max(0.0, min(delay, to_deadline + 1, MAX_CHECK_DELAY_SECONDS))
        self.scheduler.schedule(
            job.job_id,
            delay_seconds=round(delay),
            check=check,
            task_id=job.provider_task_id,
            video=job.media_type == VIDEO,
        )

    def soon(self, job: Job, *, after: float = 0.0) -> None:
        """Schedule a first check ``after`` seconds from now (rounded up; at most 900): a callback hands its
        collect over to the poller."""
        delay = min(math.ceil(after), MAX_CHECK_DELAY_SECONDS)
        self.scheduler.schedule(
            job.job_id, delay_seconds=delay, check=0, task_id=job.provider_task_id, video=job.media_type == VIDEO
        )
