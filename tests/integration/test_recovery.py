"""Recovery on the local stack: a crash in the middle of copying a result, and a poison message.

- Crash mid-copy: the result download breaks off after the first multipart part has been written, and an
  earlier attempt that was killed mid-copy (so none of its code ran to clean up) has left a multipart upload
  open on the same key. The retry completes the job; only the whole result is ever visible (one version, the
  served bytes) and no multipart upload is left open.
- Poison message: a check message that fails on every delivery (the job row holds a deadline this version
  cannot read) ends in the check dead-letter queue after the queue's ``maxReceiveCount`` deliveries, with the
  job FAILED ``processing_failed`` and visible, while another job goes through meanwhile.

- A chain that died: jobs still running past their deadline with no message left anywhere to move them (a submit
  function killed after writing the job SUBMITTED and before sending its first check; a submit message gone to
  the dead-letter queue) are ended by the scheduled sweep.

- A callback whose result copy would not fit the HTTP API's 30 s: the callback answers in time and hands the job to
  a check, which keeps the whole result.
- A check killed at its timeout in the middle of a result copy: its message comes back after the queue's visibility
  timeout (the handler never got to set a backoff), and the retry aborts the upload the killed copy left open and
  keeps the whole result.

The crash test's stack is its own (a result cap above one 8 MiB part). The poison and slow-result tests' stack runs
at a time scale of 0.1: every duration of the stack (functions' timeouts, the HTTP API's integration timeout,
visibility timeouts, the backoff a handler sets) is 10 times shorter, so five deliveries that take about 7 minutes
on AWS take about 40 s here, and the HTTP API waits 3 s for the callback (whose timeout is 2.5 s).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from conftest import FACES, wait_for
from fakes import job_row
from werkzeug.wrappers import Response

from faceswap.aws.dynamodb import job_from_item, job_to_item
from faceswap.lifecycle import JobState, Phase
from faceswap.model import ImageRef, parse_time
from faceswap_local.app import LocalStack
from faceswap_local.emulators.piapi import Faults
from faceswap_local.environments import Invocation, Observer
from faceswap_local.loopback import LoopbackServer

MIB = 1024 * 1024
RESULT = b"\x89PNG\r\n\x1a\n" + os.urandom(12 * MIB)
"""A 12 MiB result (PNG magic bytes, then noise): two multipart parts of 8 MiB and 4 MiB."""
BROKEN_OFF_AT = 9 * MIB
"""The first download breaks off here: after the first 8 MiB part was uploaded."""


class ResultHost(LoopbackServer):
    """A result host on loopback serving :data:`RESULT`; the first ``breaks`` downloads break off midway; each MiB
    takes ``seconds_per_mib`` (in the first ``slow_downloads`` downloads only, if given)."""

    def __init__(self, *, breaks: int, seconds_per_mib: float = 0.0, slow_downloads: int | None = None) -> None:
        self.breaks = breaks
        self.seconds_per_mib = seconds_per_mib
        self.slow_downloads = slow_downloads
        self.downloads = 0
        super().__init__(self._app, name="result-host")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/result.png"

    def __enter__(self) -> ResultHost:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        self.downloads += 1
        breaks = self.downloads <= self.breaks
        slow = self.slow_downloads is None or self.downloads <= self.slow_downloads
        pause = self.seconds_per_mib if slow else 0.0

        def body() -> Iterator[bytes]:
            for start in range(0, len(RESULT), MIB):
                if breaks and start >= BROKEN_OFF_AT:
                    raise ConnectionAbortedError("the result host dropped the connection")  # werkzeug closes it
                time.sleep(pause)
                yield RESULT[start : start + MIB]

        response = Response(body(), content_type="image/png", headers={"Content-Length": str(len(RESULT))})
        return response(environ, start_response)


@pytest.fixture(scope="module")
def local() -> Iterator[LocalStack]:
    stack = LocalStack(
        parameters={"DefaultProvider": "piapi", "ResultMaxBytes": str(32 * MIB)},
        config={"POLL_DELAYS": json.dumps({"piapi": [1, 1.5, 2], "selfhosted": [1, 1.5, 2]})},
    ).start()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def scaled() -> Iterator[LocalStack]:
    stack = LocalStack(
        parameters={"DefaultProvider": "piapi"},
        config={"POLL_DELAYS": json.dumps({"piapi": [1, 1.5, 2], "selfhosted": [1, 1.5, 2]})},
        time_scale=0.1,
    ).start()
    try:
        yield stack
    finally:
        stack.stop()


def start_job(local: LocalStack, name: str, **manifest: Any) -> str:
    """Upload a target (Biden), the face (Obama) and a manifest for them; returns the target key."""
    s3, bucket = local.client("s3"), local.info()["input_bucket"]
    target_key = f"photos/recovery/{name}.jpg"
    s3.put_object(Bucket=bucket, Key=target_key, Body=(FACES / "biden.jpg").read_bytes())
    s3.put_object(Bucket=bucket, Key="faces/obama.jpg", Body=(FACES / "obama.jpg").read_bytes())
    body = {"target_image": {"s3_key": target_key}, "swap_image": {"s3_key": "faces/obama.jpg"}, **manifest}
    s3.put_object(Bucket=bucket, Key=f"jobs/{name}.json", Body=json.dumps(body).encode())
    return target_key


def test_crash_mid_copy_is_recovered_with_no_partial_object_and_no_open_upload(local: LocalStack) -> None:
    s3, results = local.client("s3"), local.info()["results_bucket"]
    result_key = "results/recovery/crash.png"
    # What an attempt killed after its first part leaves: an open upload holding one part, on the same key.
    upload_id = s3.create_multipart_upload(Bucket=results, Key=result_key)["UploadId"]
    s3.upload_part(Bucket=results, Key=result_key, UploadId=upload_id, PartNumber=1, Body=RESULT[: 8 * MIB])
    assert local.piapi is not None

    with ResultHost(breaks=1) as host:
        local.piapi.faults = Faults(result_url=host.url)
        try:
            target_key = start_job(local, "crash", result_key=result_key)
            job = wait_for(local, target_key, lambda j: j.terminal)
        finally:
            local.piapi.faults = Faults()

    assert job.state is JobState.SUCCEEDED, job.error
    assert host.downloads >= 2, "the first download broke off; a retry downloaded it again"
    assert job.result is not None and job.result["sha256"] == hashlib.sha256(RESULT).hexdigest()
    versions = s3.list_object_versions(Bucket=results, Prefix=result_key).get("Versions", [])
    assert [v["Size"] for v in versions] == [len(RESULT)], "only the whole result was ever visible"
    stored = s3.get_object(Bucket=results, Key=result_key)["Body"].read()
    assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(RESULT).hexdigest()
    assert s3.list_multipart_uploads(Bucket=results).get("Uploads", []) == [], "no multipart upload left open"


def test_poison_message_ends_in_the_dlq_with_the_job_failed_and_others_go_through(scaled: LocalStack) -> None:
    local = scaled
    info, ddb, sqs = local.info(), local.client("dynamodb"), local.client("sqs")
    attributes = sqs.get_queue_attributes(QueueUrl=info["check_queue_url"], AttributeNames=["RedrivePolicy"])
    max_deliveries = int(json.loads(attributes["Attributes"]["RedrivePolicy"])["maxReceiveCount"])
    assert local.piapi is not None
    local.piapi.faults = Faults(webhook="none", processing_seconds=1.0)  # checks, not webhooks, drive both jobs
    try:
        poisoned_key = start_job(local, "poison")
        poisoned = wait_for(local, poisoned_key, lambda j: j.state is JobState.SUBMITTED)
        # The row now holds a deadline this version cannot read: every check of it raises.
        ddb.update_item(
            TableName=info["jobs_table"],
            Key={"job_id": {"S": poisoned.job_id}},
            UpdateExpression="SET deadline_at = :bad",
            ExpressionAttributeValues={":bad": {"S": "next tuesday"}},
        )
        other_key = start_job(local, "healthy")

        other = wait_for(local, other_key, lambda j: j.terminal)
        failed = wait_for(local, poisoned_key, lambda j: j.terminal, timeout=90)
    finally:
        local.piapi.faults = Faults()

    assert other.state is JobState.SUCCEEDED, "the poison message did not hold back another job"
    assert failed.state is JobState.FAILED and failed.error is not None
    assert failed.error["code"] == "processing_failed" and failed.error["retryable"] is True
    assert f"all {max_deliveries} deliveries" in failed.error["message"], "ended on the last allowed delivery"
    deadline, dead = time.monotonic() + 30, []
    while time.monotonic() < deadline and not dead:
        dead = sqs.receive_message(
            QueueUrl=info["check_dead_letter_queue_url"], MaxNumberOfMessages=10, AttributeNames=["All"]
        ).get("Messages", [])
        time.sleep(0.5)
    assert [json.loads(m["Body"])["job_id"] for m in dead] == [poisoned.job_id]


def test_the_sweep_ends_jobs_whose_chain_died(local: LocalStack) -> None:
    info, ddb = local.info(), local.client("dynamodb")
    assert local.runtime is not None
    schedule = local.runtime.schedules["SweeperFunction.Sweep"]
    assert schedule.period == 300  # rate(5 minutes) from the template
    overdue = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - 300))
    base = job_row(
        target_image=ImageRef(bucket=info["input_bucket"], key="photos/recovery/orphan.jpg"),
        swap_image=ImageRef(bucket=info["input_bucket"], key="faces/obama.jpg"),
        result_key="results/recovery/orphan.jpg",
        source="manifest",
        phase=Phase.RUNNING,
        created_at=overdue,
        updated_at=overdue,
        deadline_at=overdue,
    )
    # A submit function killed after the job became SUBMITTED and before it sent the first check; and a job whose
    # submit message went to the dead-letter queue while it was RECEIVED. Nothing will ever look at either.
    orphans = {
        "a" * 32: job_to_item(replace(base, provider_task_id="lost", submit_attempts=1)),
        "b" * 32: job_to_item(replace(base, job_id="b" * 32, state=JobState.RECEIVED, phase=Phase.AWAITING_CREATE)),
    }
    for item in orphans.values():
        ddb.put_item(TableName=info["jobs_table"], Item=item)

    outcome = schedule.fire()  # as EventBridge Scheduler would, at its next run

    assert not outcome.failed, outcome.error
    assert outcome.payload == {"swept": 2}
    deadline, jobs = time.monotonic() + 30, []
    while time.monotonic() < deadline:
        jobs = [
            job_from_item(
                ddb.get_item(TableName=info["jobs_table"], Key={"job_id": {"S": j}}, ConsistentRead=True)["Item"]
            )
            for j in orphans
        ]
        if all(job.terminal for job in jobs):
            break
        time.sleep(0.2)
    assert [job.state for job in jobs] == [JobState.TIMED_OUT, JobState.TIMED_OUT], jobs
    assert all(job.error is not None and job.error["code"] == "timed_out" for job in jobs), jobs
    assert schedule.fire().payload == {"swept": 0}  # ended jobs are not swept again


def test_a_callback_whose_copy_would_not_fit_the_http_apis_time_answers_and_a_check_keeps_the_result(
    scaled: LocalStack,
) -> None:
    local = scaled
    assert local.piapi is not None and local.runtime is not None
    local.runtime.functions["CallbackFunction"].provision(1)  # the answer's time is the invocation's, not a cold start
    with ResultHost(breaks=0, seconds_per_mib=0.3) as host:  # 12 MiB in 3.6 s: over the callback's 2 s for copying
        local.piapi.faults = Faults(result_url=host.url, processing_seconds=0.2)
        try:
            target_key = start_job(local, "slow-result", result_key="results/recovery/slow.png")
            job = wait_for(local, target_key, lambda j: j.terminal, timeout=60)
        finally:
            local.piapi.faults = Faults()

    (task,) = local.piapi.tasks_for_job(job.job_id)
    assert task.webhook_answers == [200], "answered by the callback, not 503 at the HTTP API's integration timeout"
    assert job.state is JobState.SUCCEEDED, job.error
    assert job.result is not None and job.result["sha256"] == hashlib.sha256(RESULT).hexdigest()
    assert host.downloads >= 2, "the callback's copy was stopped; a check's kept the result"
    s3, results = local.client("s3"), local.info()["results_bucket"]
    versions = s3.list_object_versions(Bucket=results, Prefix=job.result_key).get("Versions", [])
    assert len(versions) == 1


def test_a_check_killed_at_its_timeout_mid_copy_comes_back_after_the_visibility_timeout_and_keeps_the_result(
    scaled: LocalStack,
) -> None:
    local = scaled
    assert local.piapi is not None and local.runtime is not None
    killed: list[Invocation] = []

    class Timeouts(Observer):
        def invocation(self, invocation: Invocation) -> None:
            if invocation.outcome.timed_out:
                killed.append(invocation)

    observer = Timeouts()
    local.runtime.observers.append(observer)
    # 12 MiB at 0.5 s a MiB: the first 8 MiB part is uploaded at 4 s, and the poller's 6 s timeout (60 s at time
    # scale 0.1) ends the copy in the middle of the second; the next download is fast.
    with ResultHost(breaks=0, seconds_per_mib=0.5, slow_downloads=1) as host:
        local.piapi.faults = Faults(result_url=host.url, webhook="none", processing_seconds=0.2)
        try:
            target_key = start_job(local, "killed-mid-copy", result_key="results/recovery/killed.png")
            job = wait_for(local, target_key, lambda j: j.terminal, timeout=120)
        finally:
            local.piapi.faults = Faults()
            local.runtime.observers.remove(observer)

    assert [i.function for i in killed] == ["PollerFunction"], "the first check was killed at its timeout"
    assert job.state is JobState.SUCCEEDED, job.error
    assert job.result is not None and job.result["sha256"] == hashlib.sha256(RESULT).hexdigest()
    assert host.downloads == 2
    s3, results = local.client("s3"), local.info()["results_bucket"]
    assert s3.list_multipart_uploads(Bucket=results).get("Uploads", []) == [], "the killed copy's upload was aborted"
    versions = s3.list_object_versions(Bucket=results, Prefix=job.result_key).get("Versions", [])
    assert len(versions) == 1
    redelivered = killed[0].started + 36  # received then, and invisible for the queue's 360 s (at time scale 0.1)
    assert parse_time(job.finished_at or "").timestamp() >= redelivered - 1, "not retried before the visibility ended"
