"""Races Lambda can run: the same work in two execution environments at the same moment.

Each test makes two invocations start together (a barrier, or the PiAPI emulator sending two webhooks at once),
checks from the runtime's own record that they did overlap in time, and then that the job ended once: one provider
task, one result version, one "Job Succeeded" event. Every AWS request made is checked against the functions' IAM
policies (``conftest.py``). The stack is this module's own, with checks scheduled late (10 minutes), so that no
check of the job's own chain runs during a test unless the test runs it.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from conftest import FACES, wait_for

from faceswap.ids import webhook_secret
from faceswap.lifecycle import JobState
from faceswap.model import Job
from faceswap_local.app import LocalStack
from faceswap_local.emulators.piapi import Faults
from faceswap_local.environments import Invocation, Observer


class Invocations(Observer):
    """Every ended invocation, by function."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ended: list[Invocation] = []

    def invocation(self, invocation: Invocation) -> None:
        with self._lock:
            self.ended.append(invocation)

    def of(self, function: str, since: float) -> list[Invocation]:
        with self._lock:
            return [i for i in self.ended if i.function == function and i.started >= since]


@pytest.fixture(scope="module")
def local() -> Iterator[LocalStack]:
    stack = LocalStack(
        parameters={"DefaultProvider": "piapi"},
        config={"POLL_DELAYS": json.dumps({"piapi": [600, 1, 600]})},
    ).start()
    try:
        s3 = stack.client("s3")
        s3.put_object(
            Bucket=stack.info()["input_bucket"], Key="faces/obama.jpg", Body=(FACES / "obama.jpg").read_bytes()
        )
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def seen(local: LocalStack) -> Iterator[Invocations]:
    assert local.runtime is not None
    observer = Invocations()
    local.runtime.observers.append(observer)
    yield observer
    local.runtime.observers.remove(observer)
    assert local.piapi is not None
    local.piapi.faults = Faults()


def at_once(*calls: Callable[[], Any]) -> list[Any]:
    """Run ``calls`` on threads released at the same moment; their results in order."""
    start = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int, call: Callable[[], Any]) -> None:
        start.wait()
        results[i] = call()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def sqs_delivery(body: dict[str, Any], message_id: str) -> dict[str, Any]:
    """An SQS event of one message, as the event source sends it (not from a queue: nothing to delete)."""
    return {
        "Records": [
            {
                "messageId": message_id,
                "receiptHandle": message_id,
                "body": json.dumps(body),
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:queue",
                "awsRegion": "us-east-1",
            }
        ]
    }


def warm(local: LocalStack, *functions: str, environments: int = 2) -> None:
    """Warm execution environments (two by default) of each of ``functions``, and every PiAPI call answered 0.6 s
    late: the invocations a test starts together then run together (neither waits for a cold start, each lasts
    longer than the threads' start takes)."""
    assert local.runtime is not None and local.piapi is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(pool.busy for pool in local.runtime.functions.values()):
        time.sleep(0.05)  # the stack is quiet: nothing else takes the environments provisioned now
    for function in functions:
        local.runtime.functions[function].provision(environments)
    local.piapi.faults.slow_rate, local.piapi.faults.slow_range_seconds = 1.0, (0.6, 0.6)


def overlapped(invocations: list[Invocation]) -> bool:
    """Whether at least two of ``invocations`` ran at the same time."""
    spans = sorted((i.started, i.ended) for i in invocations)
    return any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))


def assert_ended_once(local: LocalStack, job: Job) -> None:
    """One provider task, one result version, the job SUCCEEDED."""
    assert local.piapi is not None
    assert job.state is JobState.SUCCEEDED, job.error
    assert len(local.piapi.tasks_for_job(job.job_id)) == 1
    s3, bucket = local.client("s3"), local.info()["results_bucket"]
    versions = s3.list_object_versions(Bucket=bucket, Prefix=job.result_key).get("Versions", [])
    assert len([v for v in versions if v["Key"] == job.result_key]) == 1


def test_the_same_s3_event_in_two_environments_at_once_creates_one_task(local: LocalStack, seen: Invocations) -> None:
    info, s3 = local.info(), local.client("s3")
    key = "incoming/obama/race-s3-event.jpg"
    warm(local, "SubmitFunction", environments=3)  # S3's own delivery, and the two of the test
    since = time.time()
    put = s3.put_object(Bucket=info["input_bucket"], Key=key, Body=(FACES / "biden.jpg").read_bytes())
    # The notification S3 sent (moto's carries the ETag, no version id), delivered twice more at the same moment.
    body = {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": "2026-12-03T00:00:00.000Z",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "bucket": {"name": info["input_bucket"], "arn": f"arn:aws:s3:::{info['input_bucket']}"},
                    "object": {"key": key.replace("/", "%2F"), "size": 1, "eTag": put["ETag"].strip('"')},
                },
            }
        ]
    }

    assert local.runtime is not None
    submit = local.runtime.functions["SubmitFunction"]
    outcomes = at_once(
        lambda: submit.invoke(sqs_delivery(body, "race-1")), lambda: submit.invoke(sqs_delivery(body, "race-2"))
    )

    assert all(not o.failed for o in outcomes), [o.error for o in outcomes]
    races = [i for i in seen.of("SubmitFunction", since) if i.event["Records"][0]["messageId"].startswith("race-")]
    assert len(races) == 2 and overlapped(races)
    job = wait_for(local, key, lambda j: j.terminal)
    assert_ended_once(local, job)


def test_two_callbacks_for_one_job_at_once_keep_one_result(local: LocalStack, seen: Invocations) -> None:
    assert local.piapi is not None
    local.piapi.faults = Faults(webhook="concurrent", webhook_copies=2, processing_seconds=0.5)
    warm(local, "CallbackFunction")
    key = "incoming/obama/race-two-callbacks.jpg"
    since = time.time()
    local.client("s3").put_object(Bucket=local.info()["input_bucket"], Key=key, Body=(FACES / "biden.jpg").read_bytes())

    job = wait_for(local, key, lambda j: j.terminal)
    (task,) = local.piapi.tasks_for_job(job.job_id)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (len(seen.of("CallbackFunction", since)) < 2 or task.webhook_deliveries < 2):
        time.sleep(0.1)

    assert task.webhook_deliveries == 2
    assert overlapped(seen.of("CallbackFunction", since))
    assert_ended_once(local, job)


def test_a_callback_and_a_check_for_one_job_at_once_keep_one_result(local: LocalStack, seen: Invocations) -> None:
    assert local.piapi is not None and local.runtime is not None and local.stack is not None
    local.piapi.faults = Faults(webhook="none", processing_seconds=0.2)
    key = "incoming/obama/race-callback-and-check.jpg"
    local.client("s3").put_object(Bucket=local.info()["input_bucket"], Key=key, Body=(FACES / "biden.jpg").read_bytes())
    job = wait_for(local, key, lambda j: j.state is JobState.SUBMITTED)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and local.piapi.tasks[job.provider_task_id].status != "completed":
        time.sleep(0.1)
    task = local.piapi.tasks[job.provider_task_id]
    signing_key = local.stack.secret_values["WebhookSigningKeySecret"].encode("utf-8")
    callback = f"{local.runtime.api_url}/callbacks/piapi/{job.job_id}"
    headers = {"x-webhook-secret": webhook_secret(signing_key, job.job_id)}
    webhook = {"timestamp": int(time.time()), "data": local.piapi._task_data(task)}
    check = sqs_delivery({"job_id": job.job_id, "check": 1}, "race-check")
    warm(local, "CallbackFunction", "PollerFunction")
    since = time.time()

    answer, outcome = at_once(
        lambda: httpx.post(callback, json=webhook, headers=headers, timeout=60),
        lambda: local.runtime.functions["PollerFunction"].invoke(check),  # type: ignore[union-attr]
    )

    assert answer.status_code == 200, answer.text
    assert not outcome.failed, outcome.error
    assert overlapped(seen.of("CallbackFunction", since) + seen.of("PollerFunction", since))
    assert_ended_once(local, wait_for(local, key, lambda j: j.terminal))
