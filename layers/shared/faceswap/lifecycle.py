"""The job lifecycle: its states, its phases and every allowed transition, as a table; the only writer of jobs.

A job's ``state`` is what users see (the jobs API, events, the ``StateIndex``); its ``phase`` names where within
that state it is, so that no step has to infer it from which attributes happen to be set::

    state       phase             meaning
    RECEIVED    awaiting_create   recorded; no create of a provider task is under way
    RECEIVED    creating          a create is claimed and may be in flight (at most one per claim)
    SUBMITTED   running           the provider task exists (its id is known, or arrives with the callback)
    SUBMITTED   outcome_unknown   the create may have reached the provider: it is never sent again
    SUBMITTED   awaiting_create   moved to the next provider after an attempt, or to the next part of a face map
                                  done by isolate and composite (one task per pair); its create comes next
    SUBMITTED   creating          the next provider's create is claimed and may be in flight
    SUCCEEDED   ended             the result is kept in the results bucket
    FAILED      ended             with an ``error`` (code, message, retryable)
    TIMED_OUT   ended             the deadline passed

States only move forward (RECEIVED → SUBMITTED → one terminal state) and a terminal state never changes.
Phases may go back to ``awaiting_create`` (a create handed back untried, a move to the next provider, or to the next
part of a face map).

:data:`TRANSITIONS` is the table: each named transition, the phases it may start from and the phase and state it
leads to. :class:`Lifecycle` applies them, each as one conditional write on the job's phase (``JobStore.apply``
or, for a new row, ``JobStore.create``), so a repeated event, a racing callback or a late check changes nothing
when the job has moved on. Nothing else in the pipeline writes a job.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from faceswap.model import VIDEO, Job, after, isoformat, parse_time

if TYPE_CHECKING:
    from faceswap.errors import PipelineError
    from faceswap.model import JobRequest, StoredResult
    from faceswap.ports import JobStore

logger = logging.getLogger(__name__)


class JobState(enum.StrEnum):
    """Where a job is, as users see it. Moves only forward: RECEIVED → SUBMITTED → SUCCEEDED | FAILED | TIMED_OUT."""

    RECEIVED = "RECEIVED"
    SUBMITTED = "SUBMITTED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"

    @property
    def terminal(self) -> bool:
        """Whether the state is final (no transition leaves it)."""
        return self in TERMINAL_STATES

    @property
    def rank(self) -> int:
        """0 for RECEIVED, 1 for SUBMITTED, 2 for a terminal state: a transition never lowers it."""
        return {JobState.RECEIVED: 0, JobState.SUBMITTED: 1}.get(self, 2)


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.TIMED_OUT})

CREATE_CLAIM_SECONDS = 60
"""How long after ``claim-create`` an image job's create may still be in flight: the submit function's ``Timeout``
(``template.yaml`` Globals), past which the invocation that claimed it has ended, one way or another
(https://docs.aws.amazon.com/lambda/latest/dg/configuration-timeout.html)."""
VIDEO_CREATE_CLAIM_SECONDS = 900
"""The same for video jobs, whose creates the media function makes (its ``Timeout``)."""


class Phase(enum.StrEnum):
    """Where a job is within its state (see the module's table)."""

    AWAITING_CREATE = "awaiting_create"
    CREATING = "creating"
    RUNNING = "running"
    OUTCOME_UNKNOWN = "outcome_unknown"
    ENDED = "ended"


ACTIVE_PHASES = frozenset(set(Phase) - {Phase.ENDED})
"""Every phase of a job that has not ended."""


@dataclass(frozen=True)
class Transition:
    """One allowed move of a job.

    Attributes
    ----------
    name
        The transition's name in logs and tests (``claim-create``).
    from_phases
        The phases it may start from; empty for a transition that writes a new row (the row must not exist).
    to_phase
        The phase it leads to.
    to_state
        The state it leads to, or ``None`` to keep the state.
    """

    name: str
    from_phases: frozenset[Phase]
    to_phase: Phase
    to_state: JobState | None = None


def _t(name: str, from_phases: Iterable[Phase], to_phase: Phase, to_state: JobState | None = None) -> Transition:
    return Transition(name, frozenset(from_phases), to_phase, to_state)


_P = Phase
RECORD = _t("record", set(), _P.AWAITING_CREATE, JobState.RECEIVED)
"""A job from the API, an event or a retry is recorded before it is queued for the submit function."""
RECORD_AND_CLAIM = _t("record-and-claim", set(), _P.CREATING, JobState.RECEIVED)
"""A job from an upload is recorded by the submit function, which claims its create in the same write."""
REJECT = _t("reject", set(), _P.ENDED, JobState.FAILED)
"""A request too broken to run (bad manifest, missing swap face) is recorded FAILED at once."""
CLAIM_CREATE = _t("claim-create", {_P.AWAITING_CREATE}, _P.CREATING)
"""The intent to create the provider task is recorded before the create is sent (the row is the guard)."""
RELEASE_CREATE = _t("release-create", {_P.CREATING}, _P.AWAITING_CREATE)
"""The create was definitely not made (our ceiling, or the provider unavailable): another delivery may try."""
RECORD_TASK = _t("record-task", {_P.CREATING, _P.OUTCOME_UNKNOWN}, _P.RUNNING, JobState.SUBMITTED)
"""The provider took the task and gave its id (also after another delivery, taking the create for dead, recorded its
outcome as unknown)."""
OUTCOME_UNKNOWN = _t("outcome-unknown", {_P.CREATING}, _P.OUTCOME_UNKNOWN, JobState.SUBMITTED)
"""The create may have reached the provider (a timeout after sending, or a submit that stopped mid-create): it is
never sent again; the callback or the deadline settles the job."""
LEARN_TASK_ID = _t("learn-task-id", {_P.OUTCOME_UNKNOWN}, _P.RUNNING)
"""A verified callback named the task a create of unknown outcome made."""
NOTE_TASK_ID = _t("note-task-id", {_P.CREATING}, _P.CREATING)
"""A verified callback named the task while its create was still being answered: kept at once, so that the task is
known even if the submit that made it stops before recording it."""
MOVE_TO_NEXT_PROVIDER = _t("move-to-next-provider", ACTIVE_PHASES, _P.AWAITING_CREATE)
"""A retryable provider failure (or the deadline) with fallback providers left: the attempt is recorded and the job
moves to the next provider, whose create comes next."""
SUCCEED = _t("succeed", {_P.CREATING, _P.RUNNING, _P.OUTCOME_UNKNOWN}, _P.ENDED, JobState.SUCCEEDED)
"""The result is kept: only after the copy into the results bucket has ended."""
FAIL = _t("fail", ACTIVE_PHASES, _P.ENDED, JobState.FAILED)
"""The input, the provider or the result failed in a way another try would not mend (or no provider is left)."""
TIME_OUT = _t("time-out", ACTIVE_PHASES, _P.ENDED, JobState.TIMED_OUT)
"""The deadline passed with no provider left to move to."""
NEXT_PART = _t("next-part", {_P.RUNNING}, _P.AWAITING_CREATE)
"""A face map done by isolate and composite: one pair's task is done and its output kept; the next pair's create
comes next, at the same provider (one task per pair, each listed in ``attempts``)."""
GIVE_UP = _t("give-up", ACTIVE_PHASES, _P.ENDED, JobState.FAILED)
"""The pipeline's own step failed on every delivery of the job's message (it goes to the dead-letter queue)."""

TRANSITIONS: tuple[Transition, ...] = (
    RECORD,
    RECORD_AND_CLAIM,
    REJECT,
    CLAIM_CREATE,
    RELEASE_CREATE,
    RECORD_TASK,
    OUTCOME_UNKNOWN,
    LEARN_TASK_ID,
    NOTE_TASK_ID,
    MOVE_TO_NEXT_PROVIDER,
    NEXT_PART,
    SUCCEED,
    FAIL,
    TIME_OUT,
    GIVE_UP,
)
"""Every allowed transition of a job; :class:`Lifecycle` applies nothing else."""


PHASE_STATES: dict[Phase, frozenset[JobState]] = {
    Phase.AWAITING_CREATE: frozenset({JobState.RECEIVED, JobState.SUBMITTED}),
    Phase.CREATING: frozenset({JobState.RECEIVED, JobState.SUBMITTED}),
    Phase.RUNNING: frozenset({JobState.SUBMITTED}),
    Phase.OUTCOME_UNKNOWN: frozenset({JobState.SUBMITTED}),
    Phase.ENDED: TERMINAL_STATES,
}
"""The states a job in each phase can be in (the module's table)."""


def legacy_phase(job_state: JobState, *, create_started: bool, task_id: bool, error: bool) -> Phase:
    """The phase of a row written before rows had one, from what the code then used to tell (``submit_started_at``,
    ``provider_task_id``, ``error``), so that jobs in flight across the upgrade are read and moved on as before."""
    if job_state.terminal:
        return Phase.ENDED
    if job_state is JobState.SUBMITTED and task_id:
        return Phase.RUNNING
    if create_started:
        return Phase.CREATING
    if job_state is JobState.SUBMITTED and error:
        return Phase.OUTCOME_UNKNOWN
    return Phase.AWAITING_CREATE


def allowed(job: Job | None, transition: Transition) -> bool:
    """Whether ``transition`` may be applied to ``job`` as stored (``None``: no row yet)."""
    if job is None:
        return not transition.from_phases
    return job.phase in transition.from_phases


class Lifecycle:
    """Applies the transitions of :data:`TRANSITIONS` to the jobs table, one conditional write each.

    Every method returns the job as written, or ``None`` when the condition failed because the job had moved on
    (a racing event, callback or check got there first); the caller then reads the job again if it needs it.

    Parameters
    ----------
    store
        The jobs table.
    deadline_seconds
        Seconds from a job's creation (and from a move to its next provider) to its deadline.
    clock
        Returns the current UTC time (timezone-aware).
    video_deadline_seconds
        The same for video jobs (default: ``deadline_seconds``).
    """

    def __init__(
        self,
        store: JobStore,
        *,
        deadline_seconds: int,
        clock: Callable[[], datetime],
        video_deadline_seconds: int | None = None,
    ) -> None:
        self.store = store
        self.deadline_seconds = deadline_seconds
        self.video_deadline_seconds = video_deadline_seconds or deadline_seconds
        self.clock = clock

    def create_claim_left(self, job: Job) -> float:
        """Seconds until the claim on ``job``'s create lapses: while it holds (phase ``creating``, claimed less than
        :data:`CREATE_CLAIM_SECONDS` ago, :data:`VIDEO_CREATE_CLAIM_SECONDS` for a video job), the invocation making
        the create may still be running, and another delivery of the same request must leave the outcome to it
        rather than declare it unknown. 0 when there is no live claim (a row without a claim time has none)."""
        if job.phase is not Phase.CREATING or not job.submit_started_at:
            return 0.0
        lease = VIDEO_CREATE_CLAIM_SECONDS if job.media_type == VIDEO else CREATE_CLAIM_SECONDS
        return max(0.0, lease - (self.clock() - parse_time(job.submit_started_at)).total_seconds())

    def _deadline(self, job: Job | JobRequest) -> str:
        """A new deadline for ``job``: from now, by its media type."""
        seconds = self.video_deadline_seconds if job.media_type == VIDEO else self.deadline_seconds
        return after(self.clock(), seconds)

    def get(self, job_id: str) -> Job | None:
        """The job as stored (strongly consistent), or ``None``."""
        return self.store.get(job_id)

    def reread(self, job: Job) -> Job:
        """The job as stored now (``job`` itself if its row has gone, which never happens in the pipeline)."""
        return self.store.get(job.job_id) or job

    # ------------------------------------------------------------------------------------------ new rows

    def record(self, request: JobRequest) -> tuple[Job, bool]:
        """``record``: the job RECEIVED and awaiting its create. Returns ``(job, created)``; a repeat returns the
        stored job and ``False``."""
        job = self._new(request, RECORD)
        if self.store.create(job):
            return job, True
        return self.store.get(job.job_id) or job, False

    def record_and_claim(
        self,
        request: JobRequest,
        *,
        chosen_faces: Sequence[Mapping[str, Any]] = (),
        media: Mapping[str, Any] | None = None,
    ) -> Job | None:
        """``record-and-claim``: the job RECEIVED with its first create claimed (``None`` if a row exists), with the
        faces its face map chose at this provider, or a video job's ``media`` (the video as sent and as given)."""
        stamp = self._stamp()
        job = replace(
            self._new(request, RECORD_AND_CLAIM),
            submit_started_at=stamp,
            submit_attempts=1,
            chosen_faces=[dict(face) for face in chosen_faces],
            media=dict(media) if media else None,
        )
        return job if self.store.create(job) else None

    def reject(self, request: JobRequest, error: PipelineError, *, job: Job | None) -> Job:
        """``reject`` (``job`` is ``None``: no row yet) or ``fail`` (``job``: the row as the caller read it): the
        request is unusable; the job ends FAILED."""
        if job is not None:
            return self.fail(job, error) or self.reread(job)
        stamp = self._stamp()
        failed = replace(self._new(request, REJECT), error=error.as_dict(), finished_at=stamp)
        if self.store.create(failed):
            self._ended(failed, error)
            return failed
        return self.store.get(request.job_id) or failed

    def _new(self, request: JobRequest, transition: Transition) -> Job:
        now = self.clock()
        created = isoformat(now)
        return Job(
            job_id=request.job_id,
            state=transition.to_state or JobState.RECEIVED,
            phase=transition.to_phase,
            provider=request.provider,
            task=request.task,
            target_image=request.target_image,
            swap_image=request.swap_image,
            result_key=request.result_key,
            source=request.source,
            retry_of=request.retry_of,
            fallback_providers=list(request.fallback_providers),
            options=dict(request.options),
            face_map=list(request.face_map),
            target_video=request.target_video,
            created_at=created,
            updated_at=created,
            deadline_at=self._deadline(request),
        )

    # ------------------------------------------------------------------------------------------- creates

    def claim_create(
        self, job: Job, *, chosen_faces: Sequence[Mapping[str, Any]] = (), media: Mapping[str, Any] | None = None
    ) -> Job | None:
        """``claim-create``: count the attempt and hold the create before it is sent; ``chosen_faces``: the faces the
        job's face map chose at this provider (replacing those chosen at an earlier one); ``media``: a video job's
        video as prepared for this provider.

        Like every create-side transition, conditional on the job's provider too: a delivery that read the job before
        it moved to its next provider can neither claim nor record anything for the provider it moved to.
        """
        stamp = self._stamp()
        changes: dict[str, Any] = {"submit_started_at": stamp, "submit_attempts": job.submit_attempts + 1}
        if chosen_faces:
            changes["chosen_faces"] = [dict(face) for face in chosen_faces]
        if media:
            changes["media"] = dict(media)
        return self._apply(CLAIM_CREATE, job, changes, stamp, expected=_same_provider(job))

    def release_create(self, job: Job, *, attempted: bool) -> Job | None:
        """``release-create``: the create was not made; ``attempted`` keeps the attempt counted (the provider was
        tried and was unavailable) or, ``False``, gives it back (our own ceiling held it back before any call)."""
        changes: dict[str, Any] = {"submit_started_at": None}
        if not attempted:
            changes["submit_attempts"] = max(0, job.submit_attempts - 1)
        return self._apply(RELEASE_CREATE, job, changes, expected=_same_provider(job))

    def record_task(self, job: Job, task_id: str) -> Job | None:
        """``record-task``: the provider took the task; the attempt is added to ``attempts``."""
        stamp = self._stamp()
        attempt: dict[str, Any] = {"provider": job.provider, "at": stamp, "provider_task_id": task_id}
        if job.part or any(face.get("method") == "isolate-composite" for face in job.chosen_faces):
            attempt["part"] = job.part
        changes = {
            "provider_task_id": task_id,
            "submitted_at": stamp,
            "attempts": [*job.attempts, attempt],
            "error": None,
        }
        return self._apply(RECORD_TASK, job, changes, stamp, expected=_same_provider(job))

    def outcome_unknown(self, job: Job, error: PipelineError) -> Job | None:
        """``outcome-unknown``: the create may have reached the provider; ``error`` says why it is unknown."""
        stamp = self._stamp()
        changes = {"submitted_at": stamp, "error": error.as_dict()}
        return self._apply(OUTCOME_UNKNOWN, job, changes, stamp, expected=_same_provider(job))

    def learn_task_id(self, job: Job, task_id: str) -> Job | None:
        """``learn-task-id``: a verified callback named the task of a create whose outcome was unknown."""
        return self._apply(
            LEARN_TASK_ID, job, {"provider_task_id": task_id, "error": None}, expected=_same_provider(job)
        )

    def note_task_id(self, job: Job, task_id: str) -> Job | None:
        """``note-task-id``: a verified callback named the task while its create is still being answered."""
        return self._apply(NOTE_TASK_ID, job, {"provider_task_id": task_id}, expected=_same_provider(job))

    def move_to_next_provider(self, job: Job, error: PipelineError) -> Job | None:
        """``move-to-next-provider``: record the failed attempt (with its task id, if it had one) and make the first
        fallback provider the job's provider, with a fresh count of creates; a job that had reached its provider
        gets a new deadline. Conditional on the job's provider too, so two failures of one attempt move it once."""
        stamp = self._stamp()
        failed: dict[str, Any] = {"provider": job.provider, "at": stamp, "error": error.as_dict()}
        changes: dict[str, Any] = {
            "provider": job.fallback_providers[0],
            "fallback_providers": job.fallback_providers[1:] or None,
            "submit_started_at": None,
            "submit_attempts": 0,
            "provider_task_id": None,
            "error": None,
            "part": None,
            "chosen_faces": None,
        }
        if job.state is JobState.SUBMITTED:
            failed["provider_task_id"] = job.provider_task_id
            changes["deadline_at"] = self._deadline(job)
        changes["attempts"] = [*job.attempts, failed]
        moved = self._apply(MOVE_TO_NEXT_PROVIDER, job, changes, stamp, expected={"provider": job.provider})
        if moved is not None:
            logger.info(
                "job moved to its next provider",
                extra={**log_keys(moved), "from_provider": job.provider, "error_code": error.code},
            )
        return moved

    def next_part(self, job: Job) -> Job | None:
        """``next-part``: the task of face map pair ``job.part`` is done and its output kept; the next pair's create
        is awaited at the same provider, with a new deadline (as after a move to the next provider). Conditional on
        the task too, so two collects of one part move it once."""
        stamp = self._stamp()
        changes: dict[str, Any] = {
            "part": job.part + 1,
            "provider_task_id": None,
            "submit_started_at": None,
            "submit_attempts": 0,
            "deadline_at": self._deadline(job),  # each part has the whole deadline
        }
        if not any(attempt.get("provider_task_id") == job.provider_task_id for attempt in job.attempts):
            # a task learned from its callback (its create's outcome was unknown) is listed too
            attempt = {
                "provider": job.provider,
                "at": stamp,
                "provider_task_id": job.provider_task_id,
                "part": job.part,
            }
            changes["attempts"] = [*job.attempts, attempt]
        expected = {"provider": job.provider, "provider_task_id": job.provider_task_id or ""}
        return self._apply(NEXT_PART, job, changes, stamp, expected=expected)

    # ------------------------------------------------------------------------------------------------ ends

    def succeed(
        self, job: Job, result: StoredResult, *, result_url_expires_at: str | None, by: str | None = None
    ) -> Job | None:
        """``succeed``: the result at ``result`` is kept; the job ends SUCCEEDED (``finished_by`` ``by``: ``webhook``
        or ``check``)."""
        changes = {"result": result.as_dict(), "error": None, "result_url_expires_at": result_url_expires_at}
        return self._end(SUCCEED, job, changes, None, by=by)

    def fail(self, job: Job, error: PipelineError, *, by: str | None = None) -> Job | None:
        """``fail``: the job ends FAILED with ``error`` (``finished_by`` ``by`` when the provider's answer ended it)."""
        return self._end(FAIL, job, {"error": error.as_dict()}, error, by=by)

    def time_out(self, job: Job, error: PipelineError) -> Job | None:
        """``time-out``: the job ends TIMED_OUT with ``error``."""
        return self._end(TIME_OUT, job, {"error": error.as_dict()}, error)

    def give_up(self, job: Job, error: PipelineError) -> Job | None:
        """``give-up``: the job's message failed every delivery; the job ends FAILED with ``error``."""
        return self._end(GIVE_UP, job, {"error": error.as_dict()}, error)

    def _end(
        self,
        transition: Transition,
        job: Job,
        changes: dict[str, Any],
        error: PipelineError | None,
        *,
        by: str | None = None,
    ) -> Job | None:
        stamp = self._stamp()
        changes["finished_at"] = stamp
        if by is not None:
            changes["finished_by"] = by
        if job.provider_task_id:
            changes["provider_task_id"] = job.provider_task_id  # learned from a callback while the create ran
        ended = self._apply(transition, job, changes, stamp)
        if ended is None:
            logger.info("job already moved on; nothing changed", extra=log_keys(job))
        else:
            self._ended(ended, error)
        return ended

    @staticmethod
    def _ended(job: Job, error: PipelineError | None) -> None:
        logger.info(
            "job finished", extra={**log_keys(job), "state": job.state, "error_code": error.code if error else None}
        )

    # ---------------------------------------------------------------------------------------------- writes

    def _apply(
        self,
        transition: Transition,
        job: Job,
        changes: Mapping[str, Any],
        stamp: str | None = None,
        *,
        expected: Mapping[str, str] | None = None,
    ) -> Job | None:
        written: dict[str, Any] = {**changes, "phase": transition.to_phase, "updated_at": stamp or self._stamp()}
        if transition.to_state is not None:
            written["state"] = transition.to_state
        return self.store.apply(job.job_id, from_phases=transition.from_phases, changes=written, expected=expected)

    def _stamp(self) -> str:
        return isoformat(self.clock())


def _same_provider(job: Job) -> dict[str, str]:
    return {"provider": job.provider}


def log_keys(job: Job) -> dict[str, Any]:
    """The keys every log line about ``job`` carries: ``job_id``, ``provider`` and ``provider_task_id`` once known.

    The domain passes them as ``extra`` on its own lines, so a line is correlated however the handler that
    called it set up its logger (the Powertools formatter leaves out ``None`` values).
    """
    return {"job_id": job.job_id, "provider": job.provider, "provider_task_id": job.provider_task_id}
