"""Operations on the local stack: correlated logs without secrets, a job's metrics, and DLQ redrive."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import FACES, Stack, eventually

from faceswap.ids import webhook_secret
from faceswap.lifecycle import JobState
from faceswap.model import Job
from faceswap_local import redrive
from faceswap_local.environments import Observer

JOB_KEYS = ("job_id", "provider", "provider_task_id")
LIFECYCLE = {
    "job submitted",
    "job checked",
    "callback handled",
    "callback rejected",
    "job finished",
    "job end published",
    "duplicate request for an existing job",
    "job already moved on; nothing changed",
    "provider unavailable during check",
}
"""Messages that are always about one job."""


class Output(Observer):
    """What the functions write to their logs (log lines and EMF records), from every execution environment."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lines: list[str] = []

    def log_line(self, function: str, line: str) -> None:
        with self._lock:
            self._lines.append(line)

    def text(self) -> str:
        with self._lock:
            return "\n".join(self._lines)

    def records(self) -> list[dict[str, Any]]:
        """Every JSON line written so far."""
        return [json.loads(line) for line in self.text().splitlines() if line.startswith("{")]

    def logs(self) -> list[dict[str, Any]]:
        return [r for r in self.records() if "_aws" not in r and "message" in r]

    def metrics(self) -> list[dict[str, Any]]:
        return [r for r in self.records() if "_aws" in r]


@contextmanager
def function_output(stack: Stack) -> Iterator[Output]:
    """Capture the lines the functions write to their logs while the block runs (CloudWatch Logs, locally)."""
    output = Output()
    runtime = stack.local.runtime
    assert runtime is not None
    runtime.observers.append(output)
    try:
        yield output
    finally:
        runtime.observers.remove(output)


def wait_for_line(output: Output, job_id: str, message: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(line.get("job_id") == job_id and line["message"] == message for line in output.logs()):
            return
        time.sleep(0.2)
    raise AssertionError(f"no {message!r} line for {job_id} in {timeout}s")


def run_job(stack: Stack, key: str, output: Output) -> Job:
    stack.upload(key, (FACES / "biden.jpg").read_bytes())
    job = stack.wait_for(key)
    assert job.state is JobState.SUCCEEDED, job.error
    wait_for_line(output, job.job_id, "job end published")
    return job


def test_every_log_line_of_a_job_carries_its_keys_and_no_secret(stack: Stack) -> None:
    stack.piapi.faults.processing_seconds = 2.5  # the poller looks (after 1 s) before the webhook comes
    stack.piapi.faults.get_errors = 1  # and its first look fails: the domain's warning line

    with function_output(stack) as output:
        job = run_job(stack, "incoming/obama/correlated.jpg", output)

    lines = output.logs()
    ours = [line for line in lines if job.job_id in json.dumps(line)]
    assert {"job submitted", "job checked", "job finished", "job end published"} <= {m["message"] for m in ours}
    for line in ours:
        assert (line.get("job_id"), line.get("provider")) == (job.job_id, "piapi"), line
        assert line.get("provider_task_id") == job.provider_task_id, line  # known from the first line on
        assert line["service"] == "faceswap" and "level" in line and "timestamp" in line
    for line in lines:
        if line["message"] in LIFECYCLE:
            assert all(line.get(key) for key in JOB_KEYS), line
    assert all(line.get("function_name") for line in ours), "Lambda context on every line"

    secrets = stack.local.stack.secret_values  # type: ignore[union-attr]
    signing_key = secrets["WebhookSigningKeySecret"]
    text = output.text()
    assert signing_key not in text
    assert secrets["providers/piapi"] not in text
    assert webhook_secret(signing_key.encode(), job.job_id) not in text
    assert "/9j/" not in text, "base64 JPEG data"
    assert re.search(r"[A-Za-z0-9+/]{200,}", text) is None, "base64 data"


def test_a_job_emits_its_metrics(stack: Stack) -> None:
    with function_output(stack) as output:
        job = run_job(stack, "incoming/obama/measured.jpg", output)

    namespace = stack.local.stack.outputs["MetricsNamespace"]  # type: ignore[union-attr]
    records = [r for r in output.metrics() if r["_aws"]["CloudWatchMetrics"][0]["Namespace"] == namespace]

    def named(name: str, **dimensions: str) -> list[dict[str, Any]]:
        return [r for r in records if name in r and all(r.get(k) == v for k, v in dimensions.items())]

    assert named("JobsSubmitted", provider="piapi"), "a created task counts as a job submitted"
    for operation in ("create_task", "get_task"):
        calls = named("ProviderLatency", provider="piapi", operation=operation)
        assert calls, operation
        assert all(0 < r["ProviderLatency"][0] < 30_000 for r in calls)
    assert job.result is not None
    (succeeded,) = [r for r in named("JobsSucceeded", provider="piapi") if r["ResultBytes"] == [job.result["size"]]]
    assert succeeded["JobsSucceeded"] == [1.0]
    assert 0 < succeeded["TimeToResult"][0] < 30
    units = {m["Name"]: m["Unit"] for m in succeeded["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert units == {"JobsSucceeded": "Count", "ResultBytes": "Bytes", "TimeToResult": "Seconds"}
    assert "error_code" not in succeeded


@contextmanager
def uploads_notify(stack: Stack, queue_arn: str) -> Iterator[None]:
    """Point the inputs bucket's notifications at another queue for a while (S3 sends real events there)."""
    original = stack.s3.get_bucket_notification_configuration(Bucket=stack.input_bucket)
    original.pop("ResponseMetadata", None)
    stack.s3.put_bucket_notification_configuration(
        Bucket=stack.input_bucket,
        NotificationConfiguration={"QueueConfigurations": [{"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"]}]},
    )
    try:
        yield
    finally:
        stack.s3.put_bucket_notification_configuration(Bucket=stack.input_bucket, NotificationConfiguration=original)


def test_redrive_moves_a_dead_lettered_upload_back_and_it_succeeds(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    info = stack.local.info()
    dead_letter_url = info["submit_dead_letter_queue_url"]
    dead_letter_arn = stack.sqs.get_queue_attributes(QueueUrl=dead_letter_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    key = "incoming/obama/dead-lettered.jpg"
    with uploads_notify(stack, dead_letter_arn):  # as if the submit function had failed it 5 times
        stack.upload(key, (FACES / "biden.jpg").read_bytes())
    eventually(
        lambda: int(
            stack.sqs.get_queue_attributes(QueueUrl=dead_letter_url, AttributeNames=["ApproximateNumberOfMessages"])[
                "Attributes"
            ]["ApproximateNumberOfMessages"]
        ),
        what="the upload's event in the dead-letter queue",
    )
    assert stack.find_job(key) is None, "the upload's event is only in the dead-letter queue"
    stack_file = tmp_path / "stack.json"
    stack_file.write_text(json.dumps(info))

    status = redrive.main(["--queue", "submit", "--stack-file", str(stack_file)])

    assert status == 0
    assert re.search(r"moved [1-9]\d* message\(s\) from the submit dead-letter queue", capsys.readouterr().out)
    job = stack.wait_for(key)
    assert job.state is JobState.SUCCEEDED, job.error
    attributes = stack.sqs.get_queue_attributes(
        QueueUrl=dead_letter_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert attributes == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}
