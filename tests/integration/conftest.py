"""The local stack for integration tests: moto server, resources from template.yaml, PiAPI emulator, runtime."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from iam import SAM_POLICIES, Policies, RequestLog

from faceswap.aws.dynamodb import job_from_item
from faceswap.model import Job
from faceswap_local.app import ROOT, LocalStack
from faceswap_local.emulators.piapi import Faults
from faceswap_local.environments import Invocation, Observer

FACES = Path(__file__).resolve().parents[2].parent / "shared" / "faces"
RESULT_MAX_BYTES = 8 * 1024 * 1024


def eventually(condition: Callable[[], Any], *, timeout: float = 30, what: str = "the condition") -> Any:
    """Poll ``condition`` until it returns something truthy (returned); ``AssertionError`` naming ``what`` after
    ``timeout`` seconds. Tests wait for a state, never for a fixed time."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} did not happen in {timeout} s")
        time.sleep(0.1)


class HandledMessages(Observer):
    """The ids of the SQS messages invocations handled without failing (an execution-environment observer)."""

    def __init__(self) -> None:
        self.ids: set[str] = set()

    def invocation(self, invocation: Invocation) -> None:
        if not invocation.outcome.failed:
            self.ids.update(r["messageId"] for r in invocation.event.get("Records", []) if "messageId" in r)


def job_for(local: LocalStack, target_key: str) -> Job | None:
    """The job of ``local`` whose target (image or video) is ``target_key``, if any (a consistent scan)."""
    items = local.client("dynamodb").scan(TableName=local.info()["jobs_table"], ConsistentRead=True)["Items"]
    jobs = [job for job in map(job_from_item, items) if job.target.key == target_key]
    return jobs[0] if jobs else None


def wait_for(local: LocalStack, target_key: str, done: Callable[[Job], bool], *, timeout: float = 60) -> Job:
    """Wait until the job of ``local`` for ``target_key`` satisfies ``done``; ``AssertionError`` after ``timeout``."""
    deadline, job = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        job = job_for(local, target_key)
        if job is not None and done(job):
            return job
        time.sleep(0.2)
    raise AssertionError(f"the job for {target_key} did not get there in {timeout} s: {job}")


@dataclass
class Stack:
    """What a test needs from the running local stack."""

    local: LocalStack
    s3: Any
    ddb: Any
    sqs: Any
    input_bucket: str
    results_bucket: str
    jobs_table: str
    api_url: str
    events_queue_url: str
    _seen: list[dict[str, Any]] = field(default_factory=list)

    @property
    def piapi(self) -> Any:
        assert self.local.piapi is not None
        return self.local.piapi

    def upload(self, key: str, data: bytes) -> str:
        """Put an input object; returns its version id."""
        return self.s3.put_object(Bucket=self.input_bucket, Key=key, Body=data)["VersionId"]

    def find_job(self, target_key: str) -> Job | None:
        """The job whose target image is ``target_key`` (latest created), if any."""
        jobs = [job_from_item(i) for i in self.ddb.scan(TableName=self.jobs_table, ConsistentRead=True)["Items"]]
        matching = sorted((j for j in jobs if j.target.key == target_key), key=lambda j: j.created_at)
        return matching[-1] if matching else None

    def wait_for(
        self, target_key: str, predicate: Callable[[Job], bool] = lambda j: j.terminal, timeout: float = 30
    ) -> Job:
        """Wait until the job for ``target_key`` satisfies ``predicate`` (default: ended)."""
        deadline = time.monotonic() + timeout
        job = None
        while time.monotonic() < deadline:
            job = self.find_job(target_key)
            if job is not None and predicate(job):
                return job
            time.sleep(0.2)
        raise AssertionError(f"job for {target_key} did not get there in {timeout}s: {job}")

    def deliver(self, queue_url: str, bodies: list[str], *, timeout: float = 30) -> None:
        """Send each of ``bodies`` to ``queue_url`` and wait until a function has handled every one (an invocation
        with its message ended without failing), whatever else the shared stack's queues hold."""
        assert self.local.runtime is not None
        handled = HandledMessages()
        self.local.runtime.observers.append(handled)
        try:
            ids = {self.sqs.send_message(QueueUrl=queue_url, MessageBody=body)["MessageId"] for body in bodies}
            eventually(lambda: ids <= handled.ids, timeout=timeout, what=f"handling {len(ids)} message(s)")
        finally:
            self.local.runtime.observers.remove(handled)

    def get_job(self, job_id: str) -> Job:
        item = self.ddb.get_item(TableName=self.jobs_table, Key={"job_id": {"S": job_id}}, ConsistentRead=True)
        return job_from_item(item["Item"])

    def events(self) -> list[dict[str, Any]]:
        """Drain the subscriber queue: every event published on the bus for the job rows written so far.

        Waits until the publisher has handled every stream record written before the call (the moto server
        delivers an event to its SQS target within ``PutEvents``), so a missing or repeated event shows.
        """
        assert self.local.runtime is not None
        self.local.runtime.streams_caught_up()
        received: list[dict[str, Any]] = []
        while True:
            messages = self.sqs.receive_message(
                QueueUrl=self.events_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            if not messages:
                self._seen.extend(received)
                return list(self._seen)
            for message in messages:
                received.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.events_queue_url, ReceiptHandle=message["ReceiptHandle"])


@pytest.fixture(scope="session", autouse=True)
def aws_requests() -> Iterator[RequestLog]:
    """Every AWS request the functions make, on every local stack the tests start (see ``iam.py``)."""
    with RequestLog(Policies(ROOT / "template.yaml", ROOT / SAM_POLICIES)).installed() as log:
        yield log


@pytest.fixture(autouse=True)
def requests_allowed_by_the_template(aws_requests: RequestLog) -> Iterator[None]:
    """After each test: every AWS request a function made is one its IAM policy in template.yaml allows."""
    yield
    refused = aws_requests.refused()
    assert not refused, "IAM would refuse:\n" + "\n".join(refused)


FUNCTION_LOG = ROOT / ".local" / "logs" / "integration-functions.log"
"""Where the integration stack's functions log (tests read lines through the runtime's observers)."""


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    FUNCTION_LOG.parent.mkdir(parents=True, exist_ok=True)
    log = FUNCTION_LOG.open("w", encoding="utf-8")
    local = LocalStack(
        log_stream=log,
        parameters={"ResultMaxBytes": str(RESULT_MAX_BYTES), "DefaultProvider": "piapi"},
        config={
            "POLL_DELAYS": json.dumps(
                {p: [1, 1.5, 3] for p in ("piapi", "ailabapi", "crun", "aiphotocraft", "selfhosted")}
            )
        },
    ).start()
    try:
        info = local.info()
        sqs, events = local.client("sqs"), local.client("events")
        queue_url = sqs.create_queue(QueueName="job-events-subscriber")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events.put_rule(
            Name="all-job-events",
            EventBusName=info["event_bus"],
            EventPattern=json.dumps({"source": ["faceswap.pipeline"]}),
        )
        events.put_targets(
            Rule="all-job-events", EventBusName=info["event_bus"], Targets=[{"Id": "subscriber", "Arn": queue_arn}]
        )
        stack = Stack(
            local=local,
            s3=local.client("s3"),
            ddb=local.client("dynamodb"),
            sqs=sqs,
            input_bucket=info["input_bucket"],
            results_bucket=info["results_bucket"],
            jobs_table=info["jobs_table"],
            api_url=info["api_url"],
            events_queue_url=queue_url,
        )
        stack.upload("faces/obama.jpg", (FACES / "obama.jpg").read_bytes())
        yield stack
    finally:
        local.stop()
        log.close()


@pytest.fixture(autouse=True)
def reset_faults(stack: Stack) -> Iterator[None]:
    """Every test starts with a well-behaved emulator."""
    stack.piapi.faults = Faults()
    yield
    stack.piapi.faults = Faults()
