"""The domain service over in-memory fakes: submit once, collect safely, check with backoff, verify callbacks."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import pytest
from fakes import SIGNING_KEY, FakeProvider, RecordingQueue, World, job_request, jpeg, make_world

from faceswap.errors import (
    CreateInFlight,
    InvalidRequest,
    NoFaceDetected,
    PipelineError,
    ProviderRejected,
    ProviderTaskFailed,
    ProviderUnavailable,
    RateLimited,
    StoreUnavailable,
    SubmitOutcomeUnknown,
    WebhookRejected,
)
from faceswap.ids import webhook_secret
from faceswap.lifecycle import JobState, Phase
from faceswap.model import TaskStatus
from faceswap.ports import Turn


def signed(secret: str | None) -> dict[str, str]:
    """Headers of a callback presenting ``secret`` (none when ``None``)."""
    return {} if secret is None else {"x-webhook-secret": secret}


def test_submit_creates_row_then_task_and_schedules_a_check(world: World) -> None:
    job = world.pipeline.submit(job_request())

    assert job.state is JobState.SUBMITTED
    assert job.provider_task_id == "task-1"
    assert len(world.provider.creates) == 1
    task, webhook = world.provider.creates[0]
    assert webhook is not None
    assert webhook.url == f"https://api.example.com/callbacks/fake/{job.job_id}"
    assert webhook.secret == webhook_secret(SIGNING_KEY, job.job_id)
    assert task.target_image.content_type == "image/jpeg"
    assert world.scheduler.scheduled == [(job.job_id, 10, 0)]


def test_duplicate_request_submits_once(world: World) -> None:
    first = world.pipeline.submit(job_request())
    second = world.pipeline.submit(job_request())

    assert len(world.provider.creates) == 1
    assert second.state is JobState.SUBMITTED
    assert second.provider_task_id == first.provider_task_id


def test_create_with_unknown_outcome_is_never_sent_again(world: World) -> None:
    world.provider.create_errors.append(SubmitOutcomeUnknown("read timeout"))

    job = world.pipeline.submit(job_request())
    again = world.pipeline.submit(job_request())

    assert len(world.provider.creates) == 1
    assert job.state is JobState.SUBMITTED and job.provider_task_id is None
    assert job.error is not None and job.error["code"] == "submit_outcome_unknown"
    assert again.state is JobState.SUBMITTED
    assert world.scheduler.scheduled, "a check must follow so the deadline applies"


def test_interrupted_submit_is_reconciled_not_resent(world: World) -> None:
    # A previous attempt claimed the create (row RECEIVED with submit_started_at) and then died.
    world.provider.create_errors.append(RuntimeError("the function was killed mid-create"))
    with pytest.raises(RuntimeError):
        world.pipeline.submit(job_request())
    assert world.store.rows["a" * 32].state is JobState.RECEIVED

    world.clock.advance(360)  # its message comes back after the submit queue's visibility timeout
    job = world.pipeline.submit(job_request())

    assert len(world.provider.creates) == 1
    assert job.state is JobState.SUBMITTED and job.provider_task_id is None


def test_a_duplicate_while_the_create_is_in_flight_comes_back_when_the_claim_has_lapsed(world: World) -> None:
    # The same S3 event delivered twice at once: the second delivery reads the job while the first is making its
    # create, which then fails 503. The job must go back to awaiting its create (not be declared unknown), and the
    # duplicate must come back rather than be dropped.
    original = world.provider.create_task
    raised: list[CreateInFlight] = []

    def create_with_a_duplicate_arriving(task: Any, webhook: Any) -> str:
        world.clock.advance(20)
        with pytest.raises(CreateInFlight) as duplicate:
            world.pipeline.submit(job_request())
        raised.append(duplicate.value)
        raise ProviderUnavailable("503")

    world.provider.create_task = create_with_a_duplicate_arriving  # type: ignore[method-assign]
    with pytest.raises(ProviderUnavailable):
        world.pipeline.submit(job_request())
    world.provider.create_task = original  # type: ignore[method-assign]

    (duplicate,) = raised
    assert duplicate.retry_after == pytest.approx(60 - 20 + 5)  # the claim's time left, and a margin
    assert duplicate.code == "create_in_flight"
    assert world.store.rows["a" * 32].phase is Phase.AWAITING_CREATE and world.store.rows["a" * 32].error is None
    world.clock.advance(45)
    job = world.pipeline.submit(job_request())  # the duplicate, back
    assert job.state is JobState.SUBMITTED and job.provider_task_id is not None
    assert len(world.provider.creates) == 1


def test_a_claim_older_than_the_claimers_timeout_is_an_unknown_outcome(world: World) -> None:
    world.provider.create_errors.append(RuntimeError("the function was killed mid-create"))
    with pytest.raises(RuntimeError):
        world.pipeline.submit(job_request())
    world.clock.advance(59)
    with pytest.raises(CreateInFlight):
        world.pipeline.submit(job_request())  # still its claimer's
    world.rewire(max_receive_count=3)
    world.pipeline.failed_delivery("a" * 32, CreateInFlight("in flight", retry_after=1), deliveries=3)
    assert world.store.rows["a" * 32].phase is Phase.CREATING  # a last delivery does not end the claimer's job
    world.clock.advance(1)
    assert world.pipeline.submit(job_request()).phase is Phase.OUTCOME_UNKNOWN


def test_provider_unavailable_is_retried_then_fails_visibly(world: World) -> None:
    world.provider.create_errors.extend([ProviderUnavailable("503")] * 3)

    for attempt in (1, 2):
        with pytest.raises(ProviderUnavailable):
            world.pipeline.submit(job_request())
        assert world.store.rows["a" * 32].submit_started_at is None
        assert world.store.rows["a" * 32].submit_attempts == attempt
    job = world.pipeline.submit(job_request())

    assert len(world.provider.creates) == 3
    assert job.submit_attempts == 3
    assert job.state is JobState.FAILED
    assert job.error == {"code": "provider_unavailable", "message": "503", "retryable": True}


def test_provider_rejection_fails_the_job_terminally(world: World) -> None:
    world.provider.create_errors.append(ProviderRejected("PiAPI rejected the request (400)."))

    job = world.pipeline.submit(job_request())

    assert job.state is JobState.FAILED
    assert job.error is not None and job.error["code"] == "provider_rejected" and job.error["retryable"] is False


def test_invalid_image_fails_before_any_provider_call_and_keeps_the_input(world: World) -> None:
    world.objects.objects[("inputs", "incoming/obama/target.jpg")] = b"this is text, not a jpeg"

    job = world.pipeline.submit(job_request())

    assert job.state is JobState.FAILED
    assert job.error is not None and job.error["code"] == "invalid_image"
    assert world.provider.creates == []
    assert world.objects.objects[("inputs", "incoming/obama/target.jpg")] == b"this is text, not a jpeg"


def test_request_error_is_recorded_as_failed_job(world: World) -> None:
    job = world.pipeline.submit(job_request(invalid=InvalidRequest("Unknown manifest field 'colour'.")))

    assert job.state is JobState.FAILED
    assert job.error == {"code": "invalid_request", "message": "Unknown manifest field 'colour'.", "retryable": False}
    assert world.provider.creates == []


def test_unknown_provider_fails_with_invalid_request(world: World) -> None:
    job = world.pipeline.submit(job_request(provider="nobody"))

    assert job.error is not None and job.error["code"] == "invalid_request"
    assert "nobody" in job.error["message"]


def test_collect_stores_result_and_succeeds(world: World) -> None:
    job = world.pipeline.submit(job_request())
    world.provider.status = TaskStatus.SUCCEEDED

    done = world.pipeline.collection.collect(job)

    assert done.state is JobState.SUCCEEDED
    served = world.served["/result.png"]
    assert done.result == {
        "bucket": "results",
        "key": "results/obama/target.jpg",
        "size": len(served),
        "sha256": hashlib.sha256(served).hexdigest(),
        "content_type": "image/png",
    }
    assert world.objects.objects[("results", "results/obama/target.jpg")] == served


def test_collect_while_running_changes_nothing(world: World) -> None:
    job = world.pipeline.submit(job_request())
    writes = world.store.writes

    assert world.pipeline.collection.collect(job) == job
    assert world.store.writes == writes


def test_provider_failure_becomes_failed_job_with_its_code(world: World) -> None:
    job = world.pipeline.submit(job_request())
    world.provider.status = TaskStatus.FAILED
    world.provider.error = NoFaceDetected("PiAPI found no face to swap.")

    done = world.pipeline.collection.collect(job)

    assert done.state is JobState.FAILED
    assert done.error is not None and done.error["code"] == "no_face_detected"


def test_result_too_large_fails_and_stores_nothing() -> None:
    world = make_world(result=b"\x89PNG\r\n\x1a\n" + b"\0" * 4096, result_max_bytes=1024)
    job = world.pipeline.submit(job_request())
    world.provider.status = TaskStatus.SUCCEEDED

    done = world.pipeline.collection.collect(job)

    assert done.state is JobState.FAILED
    assert done.error is not None and done.error["code"] == "result_too_large"
    assert ("results", "results/obama/target.jpg") not in world.objects.objects


def test_result_url_off_the_allow_list_is_refused(world: World) -> None:
    job = world.pipeline.submit(job_request())
    world.provider.status = TaskStatus.SUCCEEDED
    world.provider.result_url = "https://169.254.169.254/latest/meta-data/"

    done = world.pipeline.collection.collect(job)

    assert done.state is JobState.FAILED
    assert done.error is not None and done.error["code"] == "result_url_refused"


def test_terminal_job_never_changes(world: World) -> None:
    job = world.pipeline.submit(job_request())
    world.provider.status = TaskStatus.SUCCEEDED
    done = world.pipeline.collection.collect(job)
    world.provider.status = TaskStatus.FAILED
    writes = world.store.writes

    again = world.pipeline.collection.collect(done)
    stale = world.pipeline.collection.collect(job)  # a collector holding the old SUBMITTED copy

    assert again.state is JobState.SUCCEEDED and stale.state is JobState.SUCCEEDED
    assert world.store.writes == writes
    assert world.objects.result_writes == 1


def test_check_backs_off_while_running(world: World) -> None:
    job = world.pipeline.submit(job_request())

    for check in (0, 1, 2):
        world.pipeline.check(job.job_id, check=check)

    # first check after 10 s, then x2 per check, capped at 60 s
    assert world.scheduler.scheduled == [
        (job.job_id, 10, 0),
        (job.job_id, 20, 1),
        (job.job_id, 40, 2),
        (job.job_id, 60, 3),
    ]


def test_check_retries_after_provider_errors_and_completes(world: World) -> None:
    job = world.pipeline.submit(job_request())
    world.provider.status = TaskStatus.SUCCEEDED
    world.provider.get_errors.extend([ProviderUnavailable("500"), ProviderUnavailable("500", retry_after=45)])

    assert world.pipeline.check(job.job_id, check=0).state is JobState.SUBMITTED  # type: ignore[union-attr]
    assert world.pipeline.check(job.job_id, check=1).state is JobState.SUBMITTED  # type: ignore[union-attr]
    assert world.scheduler.scheduled[-1][1] == 45, "Retry-After must be honoured"
    done = world.pipeline.check(job.job_id, check=2)

    assert done is not None and done.state is JobState.SUCCEEDED
    assert done.finished_by == "check"


def test_check_after_deadline_times_out(world: World) -> None:
    job = world.pipeline.submit(job_request())
    world.clock.advance(601)

    done = world.pipeline.check(job.job_id, check=3)

    assert done is not None and done.state is JobState.TIMED_OUT
    assert done.error is not None and done.error["code"] == "timed_out" and done.error["retryable"] is True
    assert world.provider.gets == 0


def test_checks_never_wait_past_the_deadline(world: World) -> None:
    job = world.pipeline.submit(job_request())
    world.clock.advance(590)

    world.pipeline.check(job.job_id, check=5)

    assert world.scheduler.scheduled[-1][1] == 11


@pytest.mark.parametrize(
    "secret",
    [None, "", "wrong", webhook_secret(SIGNING_KEY, "b" * 32)],
    ids=["missing", "empty", "wrong", "another-jobs-secret"],
)
def test_callback_with_bad_secret_is_rejected_without_state_change(world: World, secret: str | None) -> None:
    job = world.pipeline.submit(job_request())
    world.provider.status = TaskStatus.SUCCEEDED
    before = world.store.rows[job.job_id]

    with pytest.raises(WebhookRejected):
        world.pipeline.callbacks.callback("fake", job.job_id, headers=signed(secret), query={}, body=b"")

    assert world.store.rows[job.job_id] == before
    assert world.provider.gets == 0


def test_callback_for_another_provider_is_rejected(world: World) -> None:
    job = world.pipeline.submit(job_request())

    with pytest.raises(WebhookRejected):
        world.pipeline.callbacks.callback(
            "piapi", job.job_id, headers=signed(webhook_secret(SIGNING_KEY, job.job_id)), query={}, body=b""
        )


def test_verified_callback_collects_from_provider_status(world: World) -> None:
    job = world.pipeline.submit(job_request())
    world.provider.status = TaskStatus.SUCCEEDED
    secret = webhook_secret(SIGNING_KEY, job.job_id)

    results = [
        world.pipeline.callbacks.callback("fake", job.job_id, headers=signed(secret), query={}, body=b"")
        for _ in range(3)
    ]

    assert [r.state for r in results] == [JobState.SUCCEEDED] * 3
    assert [r.finished_by for r in results] == ["webhook"] * 3
    assert world.objects.result_writes == 1
    assert world.provider.gets == 1, "a repeat for a finished job does no work"


def test_callback_over_the_call_ceiling_answers_at_once_and_schedules_a_check(world: World) -> None:
    job = world.pipeline.submit(job_request())
    world.provider.status = TaskStatus.SUCCEEDED
    world.rewire(limiter=Limiter(grants=0))
    slept: list[float] = []
    world.rewire(sleep=slept.append, rate_limits={"fake": (5, 0)})
    scheduled = len(world.scheduler.scheduled)

    answered = world.pipeline.callbacks.callback(
        "fake", job.job_id, headers=signed(webhook_secret(SIGNING_KEY, job.job_id)), query={}, body=b""
    )

    assert answered.state is JobState.SUBMITTED and world.provider.gets == 0 and slept == []
    assert world.scheduler.scheduled[scheduled:] == [(job.job_id, 1, 0)], "a check once a call is free (0.4 s)"
    world.rewire(limiter=Limiter(grants=1))
    assert world.pipeline.check(job.job_id, check=0).state is JobState.SUCCEEDED


def test_callback_whose_result_copy_would_not_fit_its_time_hands_it_to_a_check_at_once(world: World) -> None:
    job = world.pipeline.submit(job_request())
    world.provider.status = TaskStatus.SUCCEEDED
    scheduled = len(world.scheduler.scheduled)

    answered = world.pipeline.callbacks.callback(
        "fake",
        job.job_id,
        headers=signed(webhook_secret(SIGNING_KEY, job.job_id)),
        query={},
        body=b"",
        deadline=time.monotonic() - 1,  # the callback's share of the HTTP API's 30 s is spent
    )

    assert answered.state is JobState.SUBMITTED and world.objects.result_writes == 0
    assert world.scheduler.scheduled[scheduled:] == [(job.job_id, 0, 0)], "a check now, with the poller's own time"
    assert world.pipeline.check(job.job_id, check=0).state is JobState.SUCCEEDED
    assert world.objects.result_writes == 1


def test_callback_supplies_task_id_when_create_outcome_was_unknown(world: World) -> None:
    world.provider.create_errors.append(SubmitOutcomeUnknown("timeout"))
    job = world.pipeline.submit(job_request())
    world.provider.status = TaskStatus.SUCCEEDED

    done = world.pipeline.callbacks.callback(
        "fake",
        job.job_id,
        headers=signed(webhook_secret(SIGNING_KEY, job.job_id)),
        query={},
        body=b"task-from-callback",
    )

    assert done.state is JobState.SUCCEEDED
    assert done.provider_task_id == "task-from-callback"


def test_happy_path_writes_the_job_row_three_times(world: World) -> None:
    job = world.pipeline.submit(job_request())
    world.provider.status = TaskStatus.SUCCEEDED
    world.pipeline.callbacks.callback(
        "fake", job.job_id, headers=signed(webhook_secret(SIGNING_KEY, job.job_id)), query={}, body=b""
    )

    assert world.store.writes == 3


def test_oversized_input_fails_with_image_too_large(world: World) -> None:
    world.objects.objects[("inputs", "incoming/obama/target.jpg")] = jpeg(3000, 3000) + b"\0" * (21 * 1024 * 1024)

    job = world.pipeline.submit(job_request())

    assert job.error is not None and job.error["code"] == "image_too_large"


class Limiter:
    """A rate limiter that grants ``grants`` turns, then asks to wait 0.4 s; it records turns given back."""

    def __init__(self, grants: int) -> None:
        self.grants = grants
        self.asked: list[tuple[str, int, int]] = []
        self.released: list[Turn] = []
        self.ended = 0

    def acquire(self, provider: str, *, per_second: int, per_hour: int) -> Turn:
        self.asked.append((provider, per_second, per_hour))
        if self.grants > 0:
            self.grants -= 1
            return Turn(provider=provider, slot=f"s{len(self.asked)}", lease=60.0)
        return Turn(wait=0.4, provider=provider)

    def release(self, turn: Turn) -> None:
        self.released.append(turn)

    def start_invocation(self, remaining_seconds: float) -> None:
        pass

    def end_invocation(self) -> None:
        self.ended += 1


def test_a_turn_is_given_back_once_its_call_is_answered_or_has_failed() -> None:
    world = make_world()
    limiter = Limiter(grants=3)
    world.rewire(limiter=limiter, rate_limits={"fake": (5, 0)})
    world.provider.create_errors.append(ProviderUnavailable("PiAPI answered 503."))

    with pytest.raises(ProviderUnavailable):
        world.pipeline.submit(job_request())
    assert [t.slot for t in limiter.released] == ["s1"], "the failed create's turn"
    job = world.pipeline.submit(job_request())
    world.provider.status = TaskStatus.SUCCEEDED
    world.pipeline.check(job.job_id, check=0)

    assert [t.slot for t in limiter.released] == ["s1", "s2", "s3"], "one per call: the create, then the read"
    assert world.provider.gets == 1 and len(world.provider.creates) == 2


def test_a_delivery_the_ceiling_sends_back_writes_nothing_once_the_job_has_a_row() -> None:
    world = make_world()
    world.rewire(limiter=Limiter(grants=0), rate_limits={"fake": (5, 0)}, sleep=lambda seconds: None)

    with pytest.raises(RateLimited):
        world.pipeline.submit(job_request())  # the first delivery makes the row (and hands its create claim back)
    writes = world.store.writes
    with pytest.raises(RateLimited):
        world.pipeline.submit(job_request())

    assert world.store.writes == writes, "the turn comes before the claim"
    job = world.store.get(job_request().job_id)
    assert job is not None and job.phase is Phase.AWAITING_CREATE and not world.provider.creates


def test_short_rate_limit_waits_are_slept_through() -> None:
    world = make_world()
    world.rewire(limiter=Limiter(grants=0))
    slept: list[float] = []
    world.rewire(
        sleep=lambda seconds: (slept.append(seconds), setattr(world.ports.limiter, "grants", 1)),
        rate_limits={"fake": (5, 0)},
    )

    job = world.pipeline.submit(job_request())

    assert slept == [0.4] and job.state is JobState.SUBMITTED


def test_rate_limited_submit_sends_nothing_changes_nothing_and_costs_no_attempt() -> None:
    world = make_world()
    world.rewire(
        limiter=Limiter(grants=0),
        sleep=lambda seconds: None,
        rate_limits={"fake": (5, 0)},
        max_throttle_wait_seconds=1.0,
    )

    with pytest.raises(RateLimited) as caught:
        world.pipeline.submit(job_request())

    assert caught.value.retry_after == 0.4 and caught.value.code == "rate_limited"
    assert world.provider.creates == []
    row = world.store.rows["a" * 32]
    assert row.state is JobState.RECEIVED and row.submit_started_at is None and row.submit_attempts == 0
    world.rewire(limiter=Limiter(grants=5))
    job = world.pipeline.submit(job_request())
    assert job.state is JobState.SUBMITTED and job.submit_attempts == 1


def test_rate_limited_check_waits_for_the_window() -> None:
    world = make_world()
    job = world.pipeline.submit(job_request())
    world.rewire(
        limiter=Limiter(grants=0),
        sleep=lambda seconds: None,
        rate_limits={"fake": (0, 100)},
        max_throttle_wait_seconds=0.0,
    )

    world.pipeline.check(job.job_id, check=0)

    assert world.provider.gets == 0
    assert world.scheduler.scheduled[-1][1] == 20, "the backoff (20 s) is longer than the 0.4 s wait"


def test_retryable_create_failure_fails_over_to_the_next_provider(world: World) -> None:
    backup = FakeProvider(name="backup")
    world.rewire(providers={"fake": world.provider, "backup": backup})
    world.provider.create_errors.append(ProviderUnavailable("PiAPI answered 503."))

    job = world.pipeline.submit(job_request(fallback_providers=("backup",)))

    assert job.state is JobState.SUBMITTED and job.provider == "backup" and job.provider_task_id == "task-1"
    assert [a["provider"] for a in job.attempts] == ["fake", "backup"]
    assert job.attempts[0]["error"]["code"] == "provider_unavailable"
    assert job.attempts[1]["provider_task_id"] == "task-1"
    assert len(world.provider.creates) == 1 and len(backup.creates) == 1
    assert job.fallback_providers == []


def test_a_refusal_does_not_fail_over(world: World) -> None:
    backup = FakeProvider(name="backup")
    world.rewire(providers={"fake": world.provider, "backup": backup})
    world.provider.create_errors.append(ProviderRejected("The provider rejected the request (422)."))

    job = world.pipeline.submit(job_request(fallback_providers=("backup",)))

    assert job.state is JobState.FAILED and job.provider == "fake"
    assert backup.creates == []


def test_retryable_task_failure_fails_over_with_a_fresh_deadline(world: World) -> None:
    backup = FakeProvider(name="backup")
    world.rewire(providers={"fake": world.provider, "backup": backup})
    job = world.pipeline.submit(job_request(fallback_providers=("backup",)))
    world.clock.advance(300)
    world.provider.status = TaskStatus.FAILED
    world.provider.error = ProviderTaskFailed("The provider failed the task: generation failed.")

    moved = world.pipeline.check(job.job_id, check=0)

    assert moved is not None and moved.state is JobState.SUBMITTED
    assert moved.provider == "backup" and moved.provider_task_id == "task-1" and len(backup.creates) == 1
    assert moved.attempts[0] == {"provider": "fake", "at": "2026-11-25T12:00:00.000Z", "provider_task_id": "task-1"}
    assert moved.attempts[1]["provider"] == "fake" and moved.attempts[1]["error"]["code"] == "provider_task_failed"
    assert moved.deadline_at == "2026-11-25T12:15:00.000Z", "the next provider gets a whole deadline"


def test_deadline_fails_over_before_timing_out(world: World) -> None:
    backup = FakeProvider(name="backup")
    world.rewire(providers={"fake": world.provider, "backup": backup})
    job = world.pipeline.submit(job_request(fallback_providers=("backup",)))
    world.clock.advance(601)

    moved = world.pipeline.check(job.job_id, check=4)
    world.clock.advance(601)
    ended = world.pipeline.check(job.job_id, check=4)

    assert moved is not None and moved.provider == "backup" and moved.state is JobState.SUBMITTED
    assert moved.attempts[1]["error"]["code"] == "timed_out"
    assert ended is not None and ended.state is JobState.TIMED_OUT


def test_no_face_from_the_provider_does_not_fail_over(world: World) -> None:
    backup = FakeProvider(name="backup")
    world.rewire(providers={"fake": world.provider, "backup": backup})
    job = world.pipeline.submit(job_request(fallback_providers=("backup",)))
    world.provider.status = TaskStatus.FAILED
    world.provider.error = NoFaceDetected("no face")

    done = world.pipeline.check(job.job_id, check=0)

    assert done is not None and done.state is JobState.FAILED and backup.creates == []


def test_a_failed_delivery_before_the_last_changes_nothing(world: World) -> None:
    job = world.pipeline.submit(job_request())
    world.rewire(max_receive_count=5)
    before = world.store.rows[job.job_id]

    assert world.pipeline.failed_delivery(job.job_id, KeyError("deadline_at"), deliveries=4) is None
    assert world.store.rows[job.job_id] == before


def test_a_failed_last_delivery_ends_the_job_processing_failed_and_retryable(world: World) -> None:
    job = world.pipeline.submit(job_request())
    world.rewire(max_receive_count=5)

    ended = world.pipeline.failed_delivery(job.job_id, KeyError("secret-looking text"), deliveries=5)

    assert ended is not None and ended.state is JobState.FAILED and ended.error is not None
    assert ended.error["code"] == "processing_failed" and ended.error["retryable"] is True
    assert "KeyError" in ended.error["message"] and "secret-looking" not in ended.error["message"]


def test_a_failed_last_delivery_keeps_a_pipeline_errors_own_code(world: World) -> None:
    job = world.pipeline.submit(job_request())
    world.rewire(max_receive_count=50)

    ended = world.pipeline.failed_delivery(job.job_id, RateLimited("ceiling", retry_after=2), deliveries=50)

    assert ended is not None and ended.state is JobState.FAILED and ended.error["code"] == "rate_limited"  # type: ignore[index]


def test_a_failed_last_delivery_leaves_an_ended_job_alone(world: World) -> None:
    world.provider.status = TaskStatus.SUCCEEDED
    job = world.pipeline.submit(job_request())
    done = world.pipeline.check(job.job_id, check=0)
    world.rewire(max_receive_count=5)

    assert done is not None and done.state is JobState.SUCCEEDED
    assert world.pipeline.failed_delivery(job.job_id, RuntimeError(), deliveries=9) == world.store.rows[job.job_id]
    assert world.store.rows[job.job_id].state is JobState.SUCCEEDED


def test_without_a_receive_limit_failed_deliveries_never_end_a_job(world: World) -> None:
    job = world.pipeline.submit(job_request())

    assert world.pipeline.failed_delivery(job.job_id, RuntimeError(), deliveries=1000) is None
    assert world.store.rows[job.job_id].state is JobState.SUBMITTED


@pytest.mark.parametrize(
    ("content_type", "body", "code"),
    [
        ("text/plain", b"{}", "unsupported_media_type"),
        (None, b"{}", "unsupported_media_type"),
        ("application/json", b"[1]", "invalid_callback"),
        ("application/json", b"{trunc", "invalid_callback"),
    ],
)
def test_verified_callback_not_in_a_json_providers_format_is_refused_without_change(
    world: World, content_type: str | None, body: bytes, code: str
) -> None:
    job = world.pipeline.submit(job_request())
    world.provider.json_callbacks = True
    world.provider.status = TaskStatus.SUCCEEDED
    headers = signed(webhook_secret(SIGNING_KEY, job.job_id))
    if content_type:
        headers["content-type"] = content_type
    before = world.store.rows[job.job_id]

    with pytest.raises(PipelineError) as refused:
        world.pipeline.callbacks.callback("fake", job.job_id, headers=headers, query={}, body=body)

    assert refused.value.code == code
    assert world.store.rows[job.job_id] == before and world.provider.gets == 0


def test_callback_of_a_provider_without_json_callbacks_is_not_held_to_json(world: World) -> None:
    job = world.pipeline.submit(job_request())
    world.provider.status = TaskStatus.SUCCEEDED
    headers = {**signed(webhook_secret(SIGNING_KEY, job.job_id)), "content-type": "text/plain"}

    done = world.pipeline.callbacks.callback("fake", job.job_id, headers=headers, query={}, body=b"not json")

    assert done.state is JobState.SUCCEEDED


def test_a_delivery_that_read_the_job_before_it_moved_on_cannot_claim_the_next_providers_create(world: World) -> None:
    queue = RecordingQueue()
    world.rewire(providers={"fake": world.provider, "backup": FakeProvider(name="backup")}, requeue=queue)
    recorded, _ = world.pipeline.receive(job_request(fallback_providers=("backup",)))
    stale = world.store.rows[recorded.job_id]  # a second delivery read the job here, awaiting its create at fake
    world.pipeline.submit(job_request(fallback_providers=("backup",)))
    world.clock.advance(601)
    moved = world.pipeline.check(recorded.job_id, check=3)  # the deadline: on to backup, through the submit queue

    assert moved is not None and (moved.provider, moved.phase) == ("backup", Phase.AWAITING_CREATE)
    assert world.pipeline.lifecycle.claim_create(stale) is None, "the stale read names the old provider"
    assert world.store.rows[recorded.job_id] == moved and len(queue.sent) == 1


def test_a_task_named_by_a_callback_during_its_create_survives_a_submit_that_stops(world: World) -> None:
    world.provider.create_errors.append(RuntimeError("the function was killed after the provider answered"))
    with pytest.raises(RuntimeError):
        world.pipeline.submit(job_request())
    creating = world.store.rows["a" * 32]
    secret = webhook_secret(SIGNING_KEY, creating.job_id)

    noted = world.pipeline.callbacks.callback("fake", creating.job_id, headers=signed(secret), query={}, body=b"t-9")
    job = world.pipeline.submit(job_request())  # the message again

    assert noted.phase is Phase.CREATING and noted.provider_task_id == "t-9"
    assert (job.state, job.phase, job.provider_task_id) == (JobState.SUBMITTED, Phase.RUNNING, "t-9")
    assert len(world.provider.creates) == 1, "never sent again"


def test_our_own_store_failing_before_the_create_hands_the_claim_back(world: World) -> None:
    world.provider.create_errors.append(StoreUnavailable("dynamodb:UpdateItem", "ThrottlingException"))

    with pytest.raises(StoreUnavailable):
        world.pipeline.submit(job_request())
    row = world.store.rows["a" * 32]
    job = world.pipeline.submit(job_request())

    assert (row.phase, row.submit_attempts) == (Phase.AWAITING_CREATE, 0)
    assert job.phase is Phase.RUNNING and job.submit_attempts == 1
