"""The local runtime is no kinder than Lambda: isolated environments from the build output, concurrency, timeouts,
SQS redelivery after the visibility timeout, the HTTP API's limits, stream filters.

These run small functions of their own (written to a temporary ``CodeUri``) in real execution environments: child
processes importing the built shared layer, over real HTTP and a real (moto) queue.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Stack

from faceswap_local.build import built_layer, lambda_python
from faceswap_local.environments import FunctionImage, FunctionPool, Invocation, Observer, lambda_environment
from faceswap_local.runtime import (
    Gateway,
    Route,
    SqsEventSource,
    function_variables,
    matches_filter,
    sqs_messages_done,
)
from faceswap_local.stack import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, FunctionSpec

APP = """
import json, os, sys, time

def lambda_handler(event, context):
    action = event.get("action") if isinstance(event, dict) else None
    if action == "environment":
        return {"environment": dict(os.environ), "path": sys.path}
    if action == "sleep":
        time.sleep(event["seconds"])
        return {"slept": event["seconds"], "pid": os.getpid()}
    if action == "raise":
        raise ValueError("failed on purpose")
    if action == "allocate":
        block = bytearray(event["mb"] * 1024 * 1024)
        return {"allocated": len(block)}
    if action == "import":
        __import__(event["module"])
        return {"imported": event["module"]}
    if "Records" in event:  # SQS: fail the first delivery of each message, note every delivery
        with open(os.environ["DELIVERIES_FILE"], "a") as out:
            for record in event["Records"]:
                out.write(json.dumps({"id": record["messageId"], "at": time.time(),
                                      "count": record["attributes"]["ApproximateReceiveCount"]}) + "\\n")
        if any(record["attributes"]["ApproximateReceiveCount"] == "1" for record in event["Records"]):
            if event["Records"][0]["body"] == "time out":
                time.sleep(60)
            raise RuntimeError("first delivery fails")
        return {"batchItemFailures": []}
    if "requestContext" in event:  # an HTTP API event
        seconds = float((event.get("queryStringParameters") or {}).get("sleep", 0))
        time.sleep(seconds)
        return {"statusCode": 200, "body": json.dumps({"slept": seconds, "bytes": len(event.get("body") or "")})}
    return {"pid": os.getpid()}
"""


class Invocations(Observer):
    """Collects ended invocations."""

    def __init__(self) -> None:
        self.ended: list[Invocation] = []

    def invocation(self, invocation: Invocation) -> None:
        self.ended.append(invocation)


def _image(
    tmp_path: Path,
    *,
    timeout: float = 30,
    variables: dict[str, str] | None = None,
    app: str = APP,
    memory_mb: int = 512,
) -> FunctionImage:
    task_root = tmp_path / "function"
    task_root.mkdir(exist_ok=True)
    (task_root / "app.py").write_text(app, encoding="utf-8")
    return FunctionImage(
        name="TestFunction",
        task_root=task_root,
        layer_roots=(built_layer(),),
        handler="app.lambda_handler",
        environment=lambda_environment(
            name="TestFunction",
            variables=variables or {},
            region=REGION,
            task_root=task_root,
            credentials=(ACCESS_KEY_ID, SECRET_ACCESS_KEY),
            memory_mb=memory_mb,
            handler="app.lambda_handler",
            log_format="JSON",
            application_log_level="INFO",
        ),
        timeout_seconds=timeout,
        memory_mb=memory_mb,
        application_log_level="INFO",
        python=lambda_python(),
        function_arn="arn:aws:lambda:us-east-1:123456789012:function:TestFunction",
    )


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[FunctionPool]:
    pool = FunctionPool(_image(tmp_path, timeout=5), max_environments=2)
    yield pool
    pool.close()


def test_an_environment_has_exactly_its_functions_variables_and_imports_only_code_and_layer(
    stack: Stack, tmp_path: Path
) -> None:
    spec = stack.local.stack.functions["ApiFunction"]  # type: ignore[union-attr]
    overrides = {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:1",
        "CALLBACK_BASE_URL": "http://x",
        "PROVIDER_ENDPOINTS": "{}",
    }
    variables = function_variables(spec, overrides)
    assert "CALLBACK_BASE_URL" not in variables  # the submit function's, not the API function's
    assert "MAX_RECEIVE_COUNT" not in variables
    assert variables["PROVIDER_ENDPOINTS"] == "{}" and variables["AWS_ENDPOINT_URL"] == "http://127.0.0.1:1"
    pool = FunctionPool(_image(tmp_path, variables=variables), max_environments=1)
    try:
        outcome = pool.invoke({"action": "environment"})
        assert not outcome.failed, outcome.error
        environment, path = outcome.payload["environment"], outcome.payload["path"]
        own = set(variables) | {"AWS_LAMBDA_FUNCTION_NAME", "_HANDLER", "AWS_REGION", "TZ", "PATH"}
        assert own <= set(environment)
        assert not {name for name in os.environ if name.startswith("PYTEST")} & set(environment)
        assert "VIRTUAL_ENV" not in environment and "CALLBACK_BASE_URL" not in environment
        assert not [p for p in path if ".venv" in p or "site-packages" in p]
        assert path[:2] == [str(tmp_path / "function"), str(built_layer())]
        for module in ("yaml", "moto", "faceswap_local"):  # in the development environment, not in the layer
            missing = pool.invoke({"action": "import", "module": module})
            assert missing.failed and missing.error is not None
            assert missing.error["errorType"] == "ModuleNotFoundError", missing.error
        assert not pool.invoke({"action": "import", "module": "faceswap.jobs"}).failed
    finally:
        pool.close()


def test_a_handler_that_cannot_be_imported_fails_its_invocation(tmp_path: Path) -> None:
    pool = FunctionPool(
        _image(tmp_path, app="import yaml\n\ndef lambda_handler(e, c):\n    return 1\n"), max_environments=1
    )
    try:
        outcome = pool.invoke({})
        assert outcome.failed and outcome.error is not None
        assert outcome.error["errorType"] == "Runtime.ImportModuleError"
        assert "yaml" in outcome.error["errorMessage"]
    finally:
        pool.close()


def test_an_invocation_is_killed_at_the_timeout_with_its_environment(tmp_path: Path) -> None:
    pool = FunctionPool(_image(tmp_path, timeout=1.5), max_environments=1)
    try:
        first = pool.invoke({"action": "sleep", "seconds": 0})
        started = time.monotonic()
        outcome = pool.invoke({"action": "sleep", "seconds": 30})
        assert outcome.timed_out and outcome.failed
        assert 1.4 < time.monotonic() - started < 10
        with pytest.raises(ProcessLookupError):
            os.kill(first.payload["pid"], 0)  # the environment's process is gone
        again = pool.invoke({"action": "sleep", "seconds": 0})
        assert again.payload["pid"] != first.payload["pid"]  # a new environment (a cold start)
        assert pool.environments_started == 2
    finally:
        pool.close()


def test_an_invocation_over_the_functions_memory_fails_and_ends_its_environment(tmp_path: Path) -> None:
    pool = FunctionPool(_image(tmp_path, memory_mb=128), max_environments=1)
    try:
        assert not pool.invoke({"action": "allocate", "mb": 16}).failed
        outcome = pool.invoke({"action": "allocate", "mb": 200})
        assert outcome.failed and outcome.error is not None and outcome.error["errorType"] == "Runtime.OutOfMemory"
        assert not pool.invoke({"action": "allocate", "mb": 16}).failed
        assert pool.environments_started == 2
    finally:
        pool.close()


def test_invocations_beyond_the_concurrency_wait_for_a_warm_environment(pool: FunctionPool) -> None:
    outcomes: list[Any] = []
    threads = [
        threading.Thread(target=lambda: outcomes.append(pool.invoke({"action": "sleep", "seconds": 1})))
        for _ in range(5)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(not o.failed for o in outcomes) and len(outcomes) == 5
    assert pool.peak_concurrency == 2 and pool.environments_started == 2
    assert len({o.payload["pid"] for o in outcomes}) == 2  # the two environments were reused warm


def test_a_failed_message_comes_back_after_the_queues_visibility_timeout(stack: Stack, tmp_path: Path) -> None:
    deliveries = tmp_path / "deliveries.jsonl"
    pool = FunctionPool(_image(tmp_path, timeout=3, variables={"DELIVERIES_FILE": str(deliveries)}), max_environments=2)
    url = stack.sqs.create_queue(QueueName=f"runtime-test-{time.time_ns()}", Attributes={"VisibilityTimeout": "5"})[
        "QueueUrl"
    ]
    arn = stack.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    stop = threading.Event()
    source = SqsEventSource(stack.sqs, url, arn, pool, batch_size=1, concurrency=2, report_failures=True, stop=stop)
    for thread in source.threads:
        thread.start()
    try:
        stack.sqs.send_message(QueueUrl=url, MessageBody="raise")
        stack.sqs.send_message(QueueUrl=url, MessageBody="time out")
        deadline = time.monotonic() + 40
        lines: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            lines = [json.loads(line) for line in deliveries.read_text().splitlines()] if deliveries.exists() else []
            if len([d for d in lines if d["count"] == "2"]) == 2:
                break
            time.sleep(0.2)
        by_id: dict[str, list[float]] = {}
        for line in lines:
            by_id.setdefault(line["id"], []).append(line["at"])
        assert len(by_id) == 2 and all(len(times) == 2 for times in by_id.values()), lines
        for first, second in by_id.values():
            assert second - first >= 4.9  # not before the queue's visibility timeout (5 s)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            attributes = stack.sqs.get_queue_attributes(
                QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
            )["Attributes"]
            if attributes == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}:
                break
            time.sleep(0.2)
        assert attributes == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}
    finally:
        stop.set()
        pool.close()


def test_batch_item_failures_keep_only_the_messages_they_name() -> None:
    from faceswap_local.environments import Outcome

    ids = ["a", "b", "c"]
    assert sqs_messages_done(
        Outcome(payload={"batchItemFailures": [{"itemIdentifier": "b"}]}), ids, report_failures=True
    ) == ["a", "c"]
    assert (
        sqs_messages_done(Outcome(payload={"batchItemFailures": [{"itemIdentifier": "b"}]}), ids, report_failures=False)
        == ids
    )
    assert (
        sqs_messages_done(Outcome(payload={"batchItemFailures": [{"itemIdentifier": "zz"}]}), ids, report_failures=True)
        == []
    )
    assert (
        sqs_messages_done(Outcome(payload={"batchItemFailures": [{"itemIdentifier": ""}]}), ids, report_failures=True)
        == []
    )
    assert sqs_messages_done(Outcome(payload=None), ids, report_failures=True) == ids
    assert sqs_messages_done(Outcome(error={"errorType": "X"}), ids, report_failures=True) == []
    assert (
        sqs_messages_done(Outcome(error={"errorType": "Sandbox.Timedout"}, timed_out=True), ids, report_failures=False)
        == []
    )


def test_the_gateway_answers_503_at_the_integration_timeout_while_the_function_goes_on(tmp_path: Path) -> None:
    seen = Invocations()
    image = _image(tmp_path, timeout=10)
    image.observers.append(seen)
    pool = FunctionPool(image, max_environments=2)
    gateway = Gateway([Route("POST", "/work", pool, iam=False)], credentials=("a", "b"), integration_timeout=1.5)
    gateway.start()
    try:
        quick = httpx.post(f"{gateway.url}/work?sleep=0", content=b"x", timeout=20)
        assert quick.status_code == 200 and quick.json()["slept"] == 0
        started = time.monotonic()
        slow = httpx.post(f"{gateway.url}/work?sleep=4", content=b"x", timeout=20)
        assert slow.status_code == 503 and slow.json() == {"message": "Service Unavailable"}
        assert time.monotonic() - started < 3.5
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and len(seen.ended) < 2:
            time.sleep(0.1)
        assert len(seen.ended) == 2 and not seen.ended[1].outcome.failed  # it went on to its end
        assert seen.ended[1].outcome.payload["statusCode"] == 200
    finally:
        gateway.stop()
        pool.close()


def test_the_gateway_refuses_an_event_over_lambdas_6_mb_with_413_and_invokes_nothing(tmp_path: Path) -> None:
    seen = Invocations()
    image = _image(tmp_path)
    image.observers.append(seen)
    pool = FunctionPool(image, max_environments=1)
    gateway = Gateway([Route("POST", "/work", pool, iam=False)], credentials=("a", "b"))
    gateway.start()
    try:
        under = httpx.post(f"{gateway.url}/work", content=b"a" * (5 * 1024 * 1024), timeout=30)
        assert under.status_code == 200 and under.json()["bytes"] == 5 * 1024 * 1024
        over = httpx.post(f"{gateway.url}/work", content=b"a" * (6 * 1024 * 1024), timeout=30)
        assert over.status_code == 413
        assert len(seen.ended) == 1
    finally:
        gateway.stop()
        pool.close()


def test_stream_filters_match_as_the_templates_filter_criteria() -> None:
    pattern = {"dynamodb": {"NewImage": {"state": {"S": ["SUCCEEDED", "FAILED", "TIMED_OUT"]}}}}

    def record(state: str | None) -> dict[str, Any]:
        image = {"job_id": {"S": "j"}, **({"state": {"S": state}} if state else {})}
        return {"eventName": "MODIFY", "dynamodb": {"NewImage": image, "SequenceNumber": "1"}}

    assert matches_filter(record("SUCCEEDED"), pattern)
    assert matches_filter(record("TIMED_OUT"), pattern)
    assert not matches_filter(record("SUBMITTED"), pattern)
    assert not matches_filter(record(None), pattern)
    assert not matches_filter({"eventName": "REMOVE", "dynamodb": {"OldImage": {}}}, pattern)
    assert matches_filter({"a": "x1"}, {"a": [{"prefix": "x"}]}) and not matches_filter(
        {"a": "y"}, {"a": [{"prefix": "x"}]}
    )
    assert matches_filter({"a": 1}, {"b": [{"exists": False}]}) and not matches_filter(
        {"b": 1}, {"b": [{"exists": False}]}
    )


def test_functions_spec_carries_the_templates_logging_config(stack: Stack) -> None:
    spec: FunctionSpec = stack.local.stack.functions["PublisherFunction"]  # type: ignore[union-attr]
    assert spec.log_format == "JSON" and spec.application_log_level is None and spec.memory_mb == 512


@pytest.mark.parametrize("log_level", ["DEBUG", "INFO", "WARNING", "ERROR"])
def test_no_log_level_stops_the_metric_lines_the_alarms_read(log_level: str) -> None:
    """Lambda's log-level filter drops JSON lines below ``ApplicationLogLevel``, and an EMF line has no ``level``
    (it counts as INFO): whatever ``LogLevel`` is deployed, the metrics the alarms read must reach CloudWatch."""
    from faceswap_local.app import ROOT
    from faceswap_local.environments import _passes_level_filter
    from faceswap_local.template import Resolver, load_template

    template = load_template(ROOT / "template.yaml")
    resolver = Resolver({"LogLevel": log_level}, {}, template.get("Mappings", {}))
    emf = json.dumps({"_aws": {"Timestamp": 1, "CloudWatchMetrics": []}, "service": "faceswap", "JobsFailed": [1.0]})
    globals_config = template["Globals"]["Function"].get("LoggingConfig", {})
    for name, resource in template["Resources"].items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        config = resolver.resolve({**globals_config, **resource["Properties"].get("LoggingConfig", {})})
        level = config.get("ApplicationLogLevel") if config.get("LogFormat") == "JSON" else None
        assert _passes_level_filter(emf, level), f"{name} drops its metric lines at LogLevel {log_level}"
        powertools = resolver.resolve(
            template["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_LOG_LEVEL"]
        )
        assert powertools == log_level, "the application's own lines are filtered by Powertools at LogLevel"
