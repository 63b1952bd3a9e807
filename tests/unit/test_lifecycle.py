"""The job lifecycle: the transition table, and its invariants under random sequences of events.

The property test drives one job through what the pipeline meets in production, in any order: the same S3 event
delivered again, creates that succeed, fail, time out or die mid-call, callbacks, checks, the deadline passing,
moves to the next provider (inline and through the submit queue) and poison messages ended on their last delivery.
Every version of the job row is kept (as the jobs table's stream would show it), and after each sequence:

- the state only moves forward and a terminal state never changes (no write after it);
- every version is a (state, phase) pair of the table, and each change is one transition of :data:`TRANSITIONS`;
- each create was sent under a claim of its own: at most one provider task per attempt;
- once every delivery and check has run to the end, the job has ended, and exactly one change ended it (exactly
  one "Job Succeeded" / "Job Failed" event).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from fakes import SIGNING_KEY, FakeProvider, RecordingQueue, World, job_request, make_world
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faceswap.errors import (
    CreateInFlight,
    NoFaceDetected,
    PipelineError,
    ProviderRejected,
    ProviderTaskFailed,
    ProviderUnavailable,
    SubmitOutcomeUnknown,
    WebhookRejected,
)
from faceswap.events import terminal_event
from faceswap.ids import webhook_secret
from faceswap.lifecycle import ACTIVE_PHASES, PHASE_STATES, TRANSITIONS, Phase, Transition, allowed
from faceswap.model import Job, TaskStatus
from faceswap.ports import TaskInput, Webhook

JOB_ID = "a" * 32
MAX_RECEIVE_COUNT = 5
PROVIDERS = ("fake", "backup", "third")


class Killed(Exception):
    """The function was killed mid-create (its timeout, an out-of-memory): nothing after the call ran."""


@dataclass
class ScriptedProvider(FakeProvider):
    """A provider that also records, at each create, the job row the create was sent under."""

    world: World | None = None
    claims: list[tuple[str, int, str | None, Phase]] = field(default_factory=list)
    maybe_created: int = 0
    """Creates that may have made a task: answered with a task id, or cut off after the request was sent."""

    def create_task(self, task: TaskInput, webhook: Webhook | None) -> str:
        assert self.world is not None
        row = self.world.store.rows[task.job_id]
        self.claims.append((row.provider, row.submit_attempts, row.submit_started_at, row.phase))
        assert row.provider == self.name, "the task is created at the job's own provider"
        try:
            task_id = super().create_task(task, webhook)
        except (ProviderUnavailable, ProviderTaskFailed, ProviderRejected):
            raise  # the provider made no task
        except BaseException:
            self.maybe_created += 1
            raise
        self.maybe_created += 1
        return task_id


CREATE_OUTCOMES: dict[str, Any] = {
    "ok": None,
    "unavailable": lambda: ProviderUnavailable("503"),
    "unknown": lambda: SubmitOutcomeUnknown("read timeout after sending"),
    "task_failed": lambda: ProviderTaskFailed("maintenance", retryable=True),
    "rejected": lambda: ProviderRejected("422"),
    "killed": lambda: Killed(),
}
STATUSES: dict[str, tuple[TaskStatus, PipelineError | None]] = {
    "running": (TaskStatus.RUNNING, None),
    "succeeded": (TaskStatus.SUCCEEDED, None),
    "failed_retryable": (TaskStatus.FAILED, ProviderTaskFailed("generation failed", retryable=True)),
    "no_face": (TaskStatus.FAILED, NoFaceDetected("no face")),
}

events = st.one_of(
    st.tuples(st.just("submit"), st.sampled_from(sorted(CREATE_OUTCOMES))),
    st.tuples(st.just("status"), st.sampled_from(PROVIDERS), st.sampled_from(sorted(STATUSES))),
    st.tuples(st.just("callback"), st.sampled_from(PROVIDERS)),
    st.tuples(st.just("check"), st.integers(0, 6)),
    st.tuples(st.just("advance"), st.sampled_from([30, 300, 601, 1000])),
    st.tuples(st.just("deliver_requeued")),
    st.tuples(st.just("poison"), st.sampled_from([1, MAX_RECEIVE_COUNT])),
)


class Run:
    """One job, its providers and the queued requests, driven by events."""

    def __init__(self, *, fallbacks: tuple[str, ...]) -> None:
        self.world = make_world()
        self.providers = {name: ScriptedProvider(name=name, world=self.world) for name in PROVIDERS}
        self.queue = RecordingQueue()
        self.world.rewire(providers=self.providers, requeue=self.queue, max_receive_count=MAX_RECEIVE_COUNT)
        self.request = job_request(JOB_ID, fallback_providers=fallbacks)

    @property
    def job(self) -> Job | None:
        return self.world.store.rows.get(JOB_ID)

    def apply(self, event: tuple[Any, ...]) -> None:
        pipeline, kind = self.world.pipeline, event[0]
        try:
            if kind == "submit":
                make = CREATE_OUTCOMES[event[1]]
                job = self.job
                if make is not None:
                    self.providers[job.provider if job else "fake"].create_errors.append(make())
                pipeline.submit(self.request)  # the S3 event, delivered (again)
            elif kind == "status":
                provider = self.providers[event[1]]
                provider.status, provider.error = STATUSES[event[2]]
            elif kind == "callback":
                provider = self.providers[event[1]]
                secret = webhook_secret(SIGNING_KEY, JOB_ID)
                pipeline.callbacks.callback(
                    provider.name,
                    JOB_ID,
                    headers={"x-webhook-secret": secret},
                    query={},
                    body=f"task-{len(provider.creates)}".encode(),
                )
            elif kind == "check":
                pipeline.check(JOB_ID, check=event[1])
            elif kind == "advance":
                self.world.clock.advance(event[1])
            elif kind == "deliver_requeued" and self.queue.sent:
                pipeline.submit(self.queue.sent.pop(0))
            elif kind == "poison":
                pipeline.failed_delivery(JOB_ID, RuntimeError("poison"), deliveries=event[1])
        except (ProviderUnavailable, Killed, WebhookRejected):
            pass  # the message is delivered again; the callback is answered 401 / 5xx
        finally:
            for provider in self.providers.values():
                provider.create_errors.clear()  # a scripted outcome applies to the create it was meant for

    def drain(self) -> None:
        """Let every delivery, requeued request and check run to its end, with healthy providers."""
        for provider in self.providers.values():
            provider.status, provider.error = TaskStatus.SUCCEEDED, None
        for _ in range(2 * len(PROVIDERS) + 4):
            job = self.job
            if job is not None and job.terminal:
                return
            try:
                while self.queue.sent:
                    self.world.pipeline.submit(self.queue.sent[0])
                    self.queue.sent.pop(0)  # handled: its message is deleted
                self.world.pipeline.submit(self.request)
            except CreateInFlight:  # a create claimed by a delivery that died: comes back, unknown after the lease
                pass
            self.world.pipeline.check(JOB_ID, check=0)
            self.world.clock.advance(1000)


def transition_between(old: Job | None, new: Job) -> Transition | None:
    """The transition of the table that turns ``old`` into ``new``, if there is one."""
    for transition in TRANSITIONS:
        if not allowed(old, transition) or new.phase is not transition.to_phase:
            continue
        expected_state = transition.to_state or (old.state if old is not None else None)
        if new.state is expected_state:
            return transition
    return None


def assert_invariants(run: Run) -> None:
    history = [job for job in run.world.store.history if job.job_id == JOB_ID]
    previous: Job | None = None
    ended_by = []
    for version in history:
        assert version.state in PHASE_STATES[version.phase], version
        assert transition_between(previous, version) is not None, (previous, version)
        if previous is not None:
            assert version.state.rank >= previous.state.rank, "states only move forward"
            assert not previous.terminal, "a terminal job is never written again"
        if terminal_event(previous, version) is not None:
            ended_by.append(version)
        previous = version
    assert len(ended_by) <= 1
    claims = [claim for provider in run.providers.values() for claim in provider.claims]
    assert all(phase is Phase.CREATING for *_, phase in claims), "every create is sent under a claim"
    keys = [(provider, attempt, started) for provider, attempt, started, _ in claims]
    assert len(keys) == len(set(keys)), "at most one provider task per claimed attempt"
    for provider in run.providers.values():
        # Each provider is tried once in a job's chain: a create that may have reached it is never sent again.
        assert provider.maybe_created <= 1, f"{provider.name} may hold {provider.maybe_created} tasks of one job"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sequence=st.lists(events, max_size=25),
    fallbacks=st.sampled_from([(), ("backup",), ("backup", "third")]),
)
def test_random_event_sequences_keep_the_lifecycles_invariants(
    sequence: list[tuple[Any, ...]], fallbacks: tuple[str, ...]
) -> None:
    run = Run(fallbacks=fallbacks)
    for event in sequence:
        run.apply(event)
        assert_invariants(run)

    run.drain()

    assert_invariants(run)
    job = run.job
    assert job is not None and job.terminal, f"the job never ended: {job}"
    history = [version for version in run.world.store.history if version.job_id == JOB_ID]
    ends = [new for old, new in zip([None, *history], history, strict=False) if terminal_event(old, new)]
    assert ends == [history[-1]], "exactly one change ended the job, and it was the last"


def test_every_transition_leads_from_active_phases_and_terminal_is_final() -> None:
    names = [transition.name for transition in TRANSITIONS]
    assert len(names) == len(set(names))
    for transition in TRANSITIONS:
        assert Phase.ENDED not in transition.from_phases, f"{transition.name} would change an ended job"
        assert transition.from_phases <= ACTIVE_PHASES
        if transition.to_phase is Phase.ENDED:
            assert transition.to_state is not None and transition.to_state.terminal
        elif transition.to_state is not None:
            assert not transition.to_state.terminal


@pytest.mark.parametrize(
    ("phase", "names"),
    [
        (None, {"record", "record-and-claim", "reject"}),
        (Phase.AWAITING_CREATE, {"claim-create", "move-to-next-provider", "fail", "time-out", "give-up"}),
        (
            Phase.CREATING,
            {
                "note-task-id",
                "release-create",
                "record-task",
                "outcome-unknown",
                "move-to-next-provider",
                "succeed",
                "fail",
                "time-out",
                "give-up",
            },
        ),
        (Phase.RUNNING, {"move-to-next-provider", "next-part", "succeed", "fail", "time-out", "give-up"}),
        (
            Phase.OUTCOME_UNKNOWN,
            {"learn-task-id", "record-task", "move-to-next-provider", "succeed", "fail", "time-out", "give-up"},
        ),
        (Phase.ENDED, set()),
    ],
)
def test_the_table_allows_exactly_these_transitions_from_each_phase(phase: Phase | None, names: set[str]) -> None:
    job = None if phase is None else make_world().pipeline.lifecycle.record(job_request(JOB_ID))[0]
    if job is not None:
        job = replace(job, phase=phase)
    assert {transition.name for transition in TRANSITIONS if allowed(job, transition)} == names
