"""The stress run's checks (``faceswap_local.stress``) on small hand-made records, and the fault machinery it uses."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from faceswap_local.emulators.piapi import Faults, job_id_of
from faceswap_local.runtime import S3EventDuplicator
from faceswap_local.stress import (
    JobRecord,
    ObjectVersion,
    Observations,
    QueueDepth,
    TaskRecord,
    check_events,
    check_failures,
    check_inputs,
    check_jobs,
    check_queues,
    check_results,
    check_tasks,
    documented_codes,
    faults_by_kind,
    find_secrets,
    run_checks,
    summarize,
)

SHA_A = "a" * 64
SHA_B = "b" * 64
SECRET = "0123456789abcdef" * 4
CODES = documented_codes()


def succeeded(job_id: str = "job1", key: str = "incoming/stress/t0000.jpg", sha: str = SHA_A) -> JobRecord:
    return JobRecord(
        job_id=job_id,
        target_key=key,
        state="SUCCEEDED",
        provider_task_id=f"task-{job_id}",
        result_key=key.replace("incoming/", "results/"),
        result_sha256=sha,
        finished_at="2026-11-25T10:00:10Z",
    )


def task(job_id: str = "job1", sha: str = SHA_A, **changes: Any) -> TaskRecord:
    return replace(TaskRecord(task_id=f"task-{job_id}", job_id=job_id, served_sha256=(sha,)), **changes)


def result(job: JobRecord, sha: str = SHA_A, version: str = "v1") -> ObjectVersion:
    assert job.result_key
    return ObjectVersion(key=job.result_key, version_id=version, etag="e", sha256=sha)


def clean() -> Observations:
    """Two jobs, one succeeded and one failed as its expired result URL explains, all records consistent."""
    ok = succeeded("job1", "incoming/stress/t0000.jpg")
    expired = JobRecord("job2", "incoming/stress/t0001.jpg", "FAILED", error_code="result_expired")
    uploads = [
        ObjectVersion("faces/stress.jpg", "f1", "ef"),
        ObjectVersion(ok.target_key, "i1", "e1"),
        ObjectVersion(expired.target_key, "i2", "e2"),
    ]
    return Observations(
        uploads=uploads,
        target_keys=[ok.target_key, expired.target_key],
        jobs=[ok, expired],
        tasks=[task("job1"), TaskRecord("task-job2", "job2", result_expired=True, webhook_fate="lost")],
        create_errors={"job1": 2},
        inputs_after=list(uploads),
        results=[result(ok)],
        queues={"submit": QueueDepth(), "check": QueueDepth()},
        dead_letters={"submit_dlq": [], "check_dlq": [], "publisher_dlq": []},
        events=[("job1", "Job Succeeded"), ("job2", "Job Failed")],
    )


def test_consistent_records_have_no_violation() -> None:
    assert run_checks(clean(), documented=CODES, log_lines=["job1 ended", SHA_A], secrets={"key": SECRET}) == []


def test_documented_codes_are_the_error_classes_codes() -> None:
    assert {"result_expired", "provider_unavailable", "timed_out", "invalid_image"} <= CODES
    assert "internal_error" not in CODES


# ---------------------------------------------------------------------------------------------- lost / jobs


def test_upload_without_job_is_lost() -> None:
    found, violations = check_jobs(["incoming/stress/a.jpg"], [])
    assert found == {}
    assert [(v.check, v.subject) for v in violations] == [("lost", "incoming/stress/a.jpg")]


def test_job_not_ended_is_lost() -> None:
    job = JobRecord("job1", "incoming/stress/a.jpg", "SUBMITTED")
    _, violations = check_jobs([job.target_key], [job])
    assert [(v.check, v.subject) for v in violations] == [("lost", "job1")]


def test_upload_with_two_jobs_is_duplicated() -> None:
    first, second = succeeded("job1"), succeeded("job2")
    _, violations = check_jobs([first.target_key], [first, second])
    assert [v.check for v in violations] == ["duplicated"]


# ------------------------------------------------------------------------------------------------- tasks


def test_job_with_two_tasks_is_duplicated() -> None:
    violations = check_tasks([succeeded()], [task(), task(task_id="task-again")])
    assert [(v.check, v.subject) for v in violations] == [("duplicated", "job1")]


def test_task_of_no_known_job_is_duplicated() -> None:
    violations = check_tasks([succeeded()], [task(), task("ghost")])
    assert [(v.check, v.subject) for v in violations] == [("duplicated", "task-ghost")]


def test_succeeded_job_must_record_its_own_task() -> None:
    violations = check_tasks([replace(succeeded(), provider_task_id="other")], [task()])
    assert [v.check for v in violations] == ["result"]


# ----------------------------------------------------------------------------------------------- results


def test_result_whose_sha_differs_from_what_was_served_is_a_violation() -> None:
    job = succeeded(sha=SHA_B)
    violations = check_results([job], [task(sha=SHA_A)], [result(job, sha=SHA_B)])
    assert [v.detail for v in violations] == [f"{job.result_key} sha256 is not what the provider served"]


def test_result_whose_sha_differs_from_the_job_row_is_a_violation() -> None:
    job = succeeded(sha=SHA_A)
    violations = check_results([job], [task(sha=SHA_B)], [result(job, sha=SHA_B)])
    assert [v.detail for v in violations] == [f"{job.result_key} sha256 differs from the job row's"]


def test_two_result_versions_are_duplicated() -> None:
    job = succeeded()
    violations = check_results([job], [task()], [result(job, version="v1"), result(job, version="v2")])
    assert [(v.check, v.subject) for v in violations] == [("duplicated", "job1")]


def test_missing_result_object_and_orphan_result_are_violations() -> None:
    job = succeeded()
    orphan = ObjectVersion("results/stress/nobody.jpg", "v1", sha256=SHA_A)
    violations = check_results([job], [task()], [orphan])
    assert [(v.check, v.subject) for v in violations] == [("result", "job1"), ("result", orphan.key)]


def test_delete_marker_on_a_result_is_a_violation() -> None:
    job = succeeded()
    marker = ObjectVersion(job.result_key or "", "v2", delete_marker=True)
    violations = check_results([job], [task()], [result(job), marker])
    assert [v.detail for v in violations] == [f"delete marker on {job.result_key}"]


# ---------------------------------------------------------------------------------------------- failures


def failed(code: str | None, state: str = "FAILED") -> JobRecord:
    return JobRecord("job1", "incoming/stress/t0000.jpg", state, error_code=code)


def test_failures_explained_by_injected_faults_pass() -> None:
    assert check_failures([failed("provider_unavailable")], [], {"job1": 3}, CODES) == []
    expired = TaskRecord("task-job1", "job1", result_expired=True)
    assert check_failures([failed("result_expired")], [expired], {}, CODES) == []


@pytest.mark.parametrize(
    ("job", "tasks", "create_errors"),
    [
        (failed("provider_unavailable"), [], {"job1": 2}),  # fewer failed creates than the pipeline's attempts
        (failed("result_expired"), [TaskRecord("task-job1", "job1")], {}),  # its result URL never expired
        (failed("provider_task_failed"), [], {}),  # no fault makes a task fail
        (failed("timed_out", state="TIMED_OUT"), [], {}),  # the deadline is above the run
        (failed("internal_error"), [], {}),  # not a documented code
        (failed(None), [], {}),  # no code at all
    ],
)
def test_unexplained_failures_are_violations(
    job: JobRecord, tasks: list[TaskRecord], create_errors: dict[str, int]
) -> None:
    assert [v.check for v in check_failures([job], tasks, create_errors, CODES)] == ["failure"]


def test_a_lost_webhook_is_no_excuse_for_a_failure() -> None:
    lost = TaskRecord("task-job1", "job1", webhook_fate="lost")
    assert [v.check for v in check_failures([failed("timed_out", "TIMED_OUT")], [lost], {}, CODES)] == ["failure"]


# ------------------------------------------------------------------------------------------------ inputs


def test_deleted_input_is_a_violation() -> None:
    put = ObjectVersion("incoming/stress/a.jpg", "v1", "e1")
    marker = ObjectVersion(put.key, "v2", delete_marker=True, is_latest=True)
    assert [v.detail for v in check_inputs([put], [])] == ["version v1 deleted"]
    assert [v.detail for v in check_inputs([put], [replace(put, is_latest=False), marker])] == [
        "no longer the latest version (overwritten)",
        "delete marker added",
    ]


def test_overwritten_or_changed_input_is_a_violation() -> None:
    put = ObjectVersion("incoming/stress/a.jpg", "v1", "e1")
    newer = ObjectVersion(put.key, "v2", "e2")
    assert [v.detail for v in check_inputs([put], [replace(put, is_latest=False), newer])] == [
        "no longer the latest version (overwritten)",
        "1 other versions written",
    ]
    assert [v.detail for v in check_inputs([put], [replace(put, etag="changed")])] == ["content changed (ETag differs)"]


# ------------------------------------------------------------------------------------------ queues, events


def test_message_left_in_a_work_queue_is_a_violation() -> None:
    violations = check_queues({"check": QueueDepth(in_flight=1)}, {}, [])
    assert [(v.check, v.subject) for v in violations] == [("queue", "check")]


def test_job_in_a_dead_letter_queue_must_be_visibly_failed() -> None:
    ok = failed("provider_unavailable")
    assert check_queues({}, {"submit_dlq": ["job1"]}, [ok]) == []
    violations = check_queues({}, {"submit_dlq": ["job1"], "publisher_dlq": [None]}, [succeeded()])
    assert [(v.check, v.subject) for v in violations] == [("dead_letter", "job1"), ("dead_letter", "publisher_dlq")]


def test_each_ended_job_publishes_exactly_one_matching_event() -> None:
    job = succeeded()
    assert check_events([job], [("job1", "Job Succeeded")]) == []
    assert len(check_events([job], [])) == 1
    assert len(check_events([job], [("job1", "Job Succeeded")] * 2)) == 1
    assert len(check_events([job], [("job1", "Job Failed")])) == 1


# ------------------------------------------------------------------------------------------------ secrets


def test_secret_in_a_log_line_is_found_and_not_repeated() -> None:
    lines = [
        "nothing here " + SHA_A,
        json.dumps({"message": "callback", "x-webhook-secret": SECRET}),
        "prefix" + SECRET.upper() + "ff trailing",  # in another case, inside a longer hex run
        "api key is s3cr3t-value!",
    ]
    violations = find_secrets(lines, {"PiapiApiKeySecret": SECRET, "other key": "s3cr3t-value"})
    assert [(v.subject, v.detail) for v in violations] == [
        ("log line 2", "contains PiapiApiKeySecret"),
        ("log line 3", "contains PiapiApiKeySecret"),
        ("log line 4", "contains other key"),
    ]
    assert all(SECRET not in v.detail and "s3cr3t" not in v.detail for v in violations)


# ----------------------------------------------------------------------------------------------- figures


def test_summary_counts_outcomes_lost_and_duplicated() -> None:
    observed = clean()
    observed.target_keys.append("incoming/stress/t0002.jpg")  # an upload that made no job
    observed.tasks.append(task("job1", task_id="task-again"))  # a second paid create for job1
    violations = run_checks(observed, documented=CODES)
    figures = summarize(observed, violations, started=0.0)
    assert figures["succeeded"] == 1 and figures["failed_by_code"] == {"result_expired": 1}
    assert figures["lost"] == 1 and figures["duplicated"] == 1
    assert figures["violations_by_check"] == {"duplicated": 1, "lost": 1}


def test_faults_by_kind_counts_the_records() -> None:
    kinds = ["create_error", "slow_response", "create_error"]
    assert faults_by_kind(kinds, s3_event_duplicates=3) == {
        "create_error": 2,
        "s3_event_duplicate": 3,
        "slow_response": 1,
    }


# ------------------------------------------------------------------------------------- fault machinery


def test_fault_rates_are_seeded_and_bounded() -> None:
    draws = [Faults(seed=7).draw(0.5) for _ in range(3)]
    assert len(set(draws)) == 1  # same seed, same first draw
    faults = Faults(seed=7)
    assert not any(faults.draw(0.0) for _ in range(100))
    assert all(faults.draw(1.0) for _ in range(100))
    seeded = Faults(seed=3)
    assert 150 < sum(seeded.draw(0.2) for _ in range(1000)) < 250


def test_task_job_id_comes_from_the_webhook_endpoint() -> None:
    assert job_id_of("http://127.0.0.1:1/callbacks/piapi/abc123") == "abc123"
    assert job_id_of("http://127.0.0.1:1/callbacks/crun/abc123?token=x") == "abc123"
    assert job_id_of(None) is None


def test_runtime_duplicates_each_s3_event_once() -> None:
    s3_event = json.dumps({"Records": [{"eventSource": "aws:s3", "s3": {"object": {"key": "incoming/a/b.jpg"}}}]})
    duplicator = S3EventDuplicator()
    assert not duplicator.copy_needed(s3_event)  # off by default
    duplicator.enabled = True
    assert duplicator.copy_needed(s3_event)
    assert not duplicator.copy_needed(s3_event)  # the copy itself (or a redelivery) is not copied again
    assert not duplicator.copy_needed(json.dumps({"job_id": "abc", "check": 0}))
    assert not duplicator.copy_needed("not json")
    assert duplicator.duplicated == 1
