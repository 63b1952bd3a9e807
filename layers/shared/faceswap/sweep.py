"""The sweep: jobs still running past their deadline, handed to the poller, so that no job is left behind.

A job's checks are a chain of check-queue messages, each one sent by the check before it; a submit message that
fails is delivered again until its job is created. Either chain can die: an execution environment killed at its
timeout between receiving a message and sending the next, a message moved to its dead-letter queue, a queue purged
by hand. The sweep (the sweeper function, on an EventBridge Scheduler schedule) finds every job still ``RECEIVED``
or ``SUBMITTED`` more than ``grace`` past its deadline in the jobs table's ``StateIndex`` and schedules a check of
it now; the check ends it as a check at its deadline would have (``TIMED_OUT``, or failed over to the job's next
provider). A job whose chain is alive gets one extra check, which finds it ended or ends it: checks are safe to
repeat (every state change is a conditional write).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from faceswap.lifecycle import JobState
from faceswap.model import VIDEO, parse_time
from faceswap.ports import CheckScheduler, JobIndex

SWEPT_STATES = (JobState.RECEIVED, JobState.SUBMITTED)
"""The states a job can be left in by a dead chain (terminal states never change)."""

GRACE_SECONDS = 60
"""How long past its deadline a job is left to its own last check (sent for its deadline) before it is swept."""


def sweep(
    index: JobIndex,
    checks: CheckScheduler,
    *,
    now: datetime,
    grace: timedelta = timedelta(seconds=GRACE_SECONDS),
    page_size: int = 100,
) -> list[str]:
    """Schedule an immediate check of every running job more than ``grace`` past its deadline.

    Parameters
    ----------
    index
        The jobs table's ``StateIndex`` (every job in a state, page by page).
    checks
        The check queue.
    now
        The current time (timezone-aware).
    grace
        Time past a job's deadline before it counts as left behind.
    page_size
        Jobs read per ``StateIndex`` query.

    Returns
    -------
    list of str
        The ids of the jobs handed to the poller.
    """
    swept: list[str] = []
    for state in SWEPT_STATES:
        cursor: str | None = None
        while True:
            jobs, cursor = index.list_jobs(state=state, limit=page_size, cursor=cursor)
            for job in jobs:
                if parse_time(job.deadline_at) + grace <= now:
                    # a video job's check goes to the media function (faceswap.aws.sqs routes it)
                    checks.schedule(job.job_id, delay_seconds=0, check=0, video=job.media_type == VIDEO)
                    swept.append(job.job_id)
            if cursor is None:
                break
    return swept
