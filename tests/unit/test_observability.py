"""Observability: provider calls timed, EMF metrics with their own dimensions, job keys on every log line,
X-Ray patching, and the template's alarms, topic, log groups and dashboard."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from fakes import FakeProvider, job_request, job_row, jpeg, make_world
from lambda_handlers import NAMESPACE, ROOT, Context, load_handler, sample_event

from faceswap.aws.dynamodb import job_to_item
from faceswap.errors import ProviderUnavailable
from faceswap.images import PreparedImage
from faceswap.lifecycle import JobState
from faceswap.model import Job
from faceswap.observability import ObservedProvider, Telemetry
from faceswap.ports import TaskInput
from faceswap_local.template import load_template

JOB_ID = "0123456789abcdef0123456789abcdef"


def emf_records(text: str) -> list[dict[str, Any]]:
    """The EMF records (JSON objects with ``_aws``) among printed lines."""
    records = []
    for line in text.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            records.append(json.loads(line))
    return records


def dimension_sets(record: dict[str, Any]) -> list[set[str]]:
    return [set(dims) for dims in record["_aws"]["CloudWatchMetrics"][0]["Dimensions"]]


def metric_names(record: dict[str, Any]) -> set[str]:
    return {m["Name"] for m in record["_aws"]["CloudWatchMetrics"][0]["Metrics"]}


class RecordingObserver:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float, str | None, str | None]] = []

    def provider_call(
        self, provider: str, operation: str, *, milliseconds: float, task_id: str | None, error_code: str | None
    ) -> None:
        self.calls.append((provider, operation, milliseconds, task_id, error_code))


class Ticks:
    """A clock advancing 0.25 s per reading."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.25
        return self.now


def task_input() -> TaskInput:
    image = PreparedImage(data=jpeg(), content_type="image/jpeg", width=64, height=48)
    return TaskInput(job_id=JOB_ID, task="face-swap", target_image=image, swap_image=image, options={})


def job(**changes: Any) -> Job:
    fields: dict[str, Any] = {
        "job_id": JOB_ID,
        "state": JobState.SUCCEEDED,
        "created_at": "2026-11-25T13:51:43.200Z",
        "updated_at": "2026-11-25T13:51:46.700Z",
        "deadline_at": "2026-11-25T14:06:43.200Z",
        "provider_task_id": "task-1",
        "finished_at": "2026-11-25T13:51:46.700Z",
        "result": {"bucket": "results", "key": "results/obama/biden.jpg", "size": 1523341, "sha256": "0" * 64},
    }
    return job_row(**{**fields, **changes})


QUIET_LOGGER = Logger(service="observability-test", logger_handler=logging.NullHandler())
"""One per service name: a second Powertools Logger given its own handler would not format with it."""


@pytest.fixture
def telemetry() -> Telemetry:
    return Telemetry(QUIET_LOGGER, namespace=NAMESPACE)


# ---------------------------------------------------------------------------------------------- provider calls


def test_observed_provider_times_each_call_and_reports_its_outcome() -> None:
    observer = RecordingObserver()
    fake = FakeProvider(name="piapi", get_errors=[ProviderUnavailable("PiAPI answered 503.")])
    provider = ObservedProvider(fake, observer, clock=Ticks())

    task_id = provider.create_task(task_input(), None)
    with pytest.raises(ProviderUnavailable):
        provider.get_task(task_id)
    provider.get_task(task_id)

    assert observer.calls == [
        ("piapi", "create_task", 250.0, "task-1", None),
        ("piapi", "get_task", 250.0, "task-1", "provider_unavailable"),
        ("piapi", "get_task", 250.0, "task-1", None),
    ]
    assert (provider.name, provider.uses_webhook, provider.result_hosts) == ("piapi", True, fake.result_hosts)


def test_a_created_task_is_a_job_submitted_and_every_call_records_latency(
    telemetry: Telemetry, capsys: pytest.CaptureFixture[str]
) -> None:
    telemetry.provider_call("piapi", "create_task", milliseconds=412.5, task_id="task-1", error_code=None)

    latency, submitted = emf_records(capsys.readouterr().out)
    assert latency["_aws"]["CloudWatchMetrics"][0]["Namespace"] == NAMESPACE
    assert metric_names(latency) == {"ProviderLatency", "ProviderCalls", "ProviderErrors"}
    assert dimension_sets(latency) == [{"service", "provider"}, {"service", "provider", "operation"}]
    assert latency["_aws"]["CloudWatchMetrics"][0]["Metrics"][0] == {"Name": "ProviderLatency", "Unit": "Milliseconds"}
    assert (latency["ProviderLatency"], latency["ProviderErrors"], latency["operation"]) == (
        [412.5],
        [0.0],
        "create_task",
    )
    assert metric_names(submitted) == {"JobsSubmitted"}
    assert dimension_sets(submitted) == [{"service"}, {"service", "provider"}]
    assert submitted["provider"] == "piapi" and submitted["JobsSubmitted"] == [1.0]


def test_a_failed_provider_call_counts_an_error_by_code_and_submits_nothing(
    telemetry: Telemetry, capsys: pytest.CaptureFixture[str]
) -> None:
    telemetry.provider_call("piapi", "create_task", milliseconds=20.0, task_id=None, error_code="provider_unavailable")

    latency, by_code = emf_records(capsys.readouterr().out)
    assert latency["ProviderErrors"] == [1.0]
    assert metric_names(by_code) == {"ProviderErrors"}
    assert dimension_sets(by_code) == [{"service", "provider", "error_code"}]
    assert by_code["error_code"] == "provider_unavailable"


def test_job_ends_are_counted_by_error_code_without_dimensions_leaking_into_the_next_record(
    telemetry: Telemetry, capsys: pytest.CaptureFixture[str]
) -> None:
    telemetry.job_ended(
        job(state=JobState.FAILED, result=None, error={"code": "no_face_detected", "message": "…", "retryable": False})
    )
    telemetry.job_ended(job(state=JobState.TIMED_OUT, result=None, error=None))
    telemetry.job_ended(job())

    failed, timed_out, succeeded = emf_records(capsys.readouterr().out)
    assert dimension_sets(failed) == [{"service"}, {"service", "provider"}, {"service", "error_code"}]
    assert (failed["JobsFailed"], failed["error_code"]) == ([1.0], "no_face_detected")
    assert timed_out["error_code"] == "timed_out"
    assert metric_names(succeeded) == {"JobsSucceeded", "ResultBytes", "TimeToResult"}
    assert dimension_sets(succeeded) == [{"service"}, {"service", "provider"}]
    assert "error_code" not in succeeded
    assert succeeded["ResultBytes"] == [1523341.0]
    assert succeeded["TimeToResult"] == [3.5]


def test_unfinished_jobs_record_nothing(telemetry: Telemetry, capsys: pytest.CaptureFixture[str]) -> None:
    telemetry.job_ended(job(state=JobState.SUBMITTED, finished_at=None, result=None))

    assert emf_records(capsys.readouterr().out) == []


# ------------------------------------------------------------------------------------------------------ logs


def test_domain_log_lines_carry_the_job_keys(caplog: pytest.LogCaptureFixture) -> None:
    world = make_world()
    request = job_request()
    world.pipeline.submit(request)
    world.clock.advance(601)

    with caplog.at_level(logging.INFO, logger="faceswap"):
        world.pipeline.submit(request)  # a repeat
        world.pipeline.check("a" * 32, check=0)  # past the deadline: TIMED_OUT

    lines = [r for r in caplog.records if r.name.startswith("faceswap.")]
    assert [r.getMessage() for r in lines] == ["duplicate request for an existing job", "job finished"]
    for record in lines:
        assert (record.job_id, record.provider, record.provider_task_id) == ("a" * 32, "fake", "task-1")  # type: ignore[attr-defined]


def test_job_keys_replace_the_previous_jobs_and_stay_in_their_thread() -> None:
    stream = io.StringIO()
    logger = Logger(service="observability-keys-test", logger_handler=logging.StreamHandler(stream))
    telemetry = Telemetry(logger, namespace=NAMESPACE)

    telemetry.job("a" * 32, provider="piapi", provider_task_id="task-a")
    logger.info("first job")
    telemetry.job("b" * 32, provider="selfhosted")
    logger.info("second job, before its task exists")
    thread = threading.Thread(target=lambda: logger.info("another thread"))
    thread.start()
    thread.join()
    telemetry.add_job_keys(provider_task_id="task-b")
    logger.info("second job, task created")
    telemetry.job(None)
    logger.info("no job")

    lines = {line["message"]: line for line in map(json.loads, stream.getvalue().splitlines())}
    assert lines["first job"]["provider_task_id"] == "task-a"
    assert lines["second job, before its task exists"]["job_id"] == "b" * 32
    assert "provider_task_id" not in lines["second job, before its task exists"]
    assert "job_id" not in lines["another thread"]
    assert lines["second job, task created"]["provider_task_id"] == "task-b"
    assert not {"job_id", "provider", "provider_task_id"} & set(lines["no job"])


# ------------------------------------------------------------------------------------- handlers (mock_aws)


def json_lines(module: ModuleType, run: Any) -> list[dict[str, Any]]:
    """Run ``run()`` and return the JSON lines the handler module's Powertools logger wrote meanwhile."""
    stream = io.StringIO()
    handler = module.logger.registered_handler
    previous = handler.setStream(stream)
    try:
        run()
    finally:
        handler.setStream(previous)
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


def test_poller_logs_json_with_the_job_keys_on_its_lines_and_the_domains(aws: dict[str, Any]) -> None:
    late = job(
        state=JobState.SUBMITTED,
        finished_at=None,
        result=None,
        deadline_at="2026-01-01T00:00:00.000Z",
        provider_task_id="task-7",
    )
    aws["ddb"].put_item(TableName="jobs", Item=job_to_item(late))
    poller = load_handler("poller", prefix="observability_under_test")
    sample = sample_event("sqs_check.json")

    lines = json_lines(poller, lambda: poller.lambda_handler(sample, Context()))

    by_message = {line["message"]: line for line in lines}
    finished, checked = by_message["job finished"], by_message["job checked"]  # the domain's, the handler's
    for line in (finished, checked):
        assert (line["job_id"], line["provider"], line["provider_task_id"]) == (JOB_ID, "piapi", "task-7")
        assert line["service"] == "faceswap" and line["level"] == "INFO"
    assert finished["state"] == "TIMED_OUT" and finished["error_code"] == "timed_out"


def test_a_failed_record_is_logged_with_its_job_id_and_traceback(aws: dict[str, Any]) -> None:
    orphan = job(
        state=JobState.SUBMITTED,
        finished_at=None,
        result=None,
        provider="retired-provider",
        deadline_at="2099-01-01T00:00:00.000Z",
    )
    aws["ddb"].put_item(TableName="jobs", Item=job_to_item(orphan))
    poller = load_handler("poller", prefix="observability_under_test")
    sample = sample_event("sqs_check.json")

    def run() -> None:
        with pytest.raises(BatchProcessingError):  # the whole batch failed: Lambda delivers it again
            poller.lambda_handler(sample, Context())

    lines = json_lines(poller, run)

    (failed,) = [line for line in lines if line["level"] == "WARNING" and "exception" in line]
    assert failed["job_id"] == JOB_ID
    assert "KeyError" in failed["exception"] and "retired-provider" in failed["exception"]


def test_publisher_counts_the_job_it_publishes(aws: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    publisher = load_handler("publisher", prefix="observability_under_test")
    capsys.readouterr()

    publisher.lambda_handler(sample_event("ddb_stream_job_succeeded.json"), Context())

    (succeeded,) = [r for r in emf_records(capsys.readouterr().out) if "JobsSucceeded" in r]
    assert succeeded["_aws"]["CloudWatchMetrics"][0]["Namespace"] == NAMESPACE
    assert succeeded["provider"] == "piapi"
    assert (succeeded["ResultBytes"], succeeded["TimeToResult"]) == ([1523341.0], [0.887])


def test_callback_counts_webhook_rejections(aws: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    callback = load_handler("callback", prefix="observability_under_test")
    capsys.readouterr()

    callback.lambda_handler(sample_event("http_webhook_bad_secret.json"), Context())

    assert any(r.get("WebhookRejections") == [1.0] for r in emf_records(capsys.readouterr().out))


def test_tracing_patches_aws_and_provider_calls_before_the_pipeline_makes_its_clients(tmp_path: Path) -> None:
    """With tracing on (as on Lambda), botocore and httpx are patched and the provider client is instrumented."""
    script = f"""
import importlib.util, sys
from aws_xray_sdk.core import patcher
spec = importlib.util.spec_from_file_location("submit_app", {str(ROOT / "functions" / "submit" / "app.py")!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
provider = module.pipeline.ports.providers["piapi"]
print(sorted(patcher._PATCHED_MODULES))
print(type(provider.provider._client._transport).__name__)
print(type(module.pipeline.ports.fetcher._client._transport).__name__)
"""
    env = {
        **os.environ,
        "LAMBDA_TASK_ROOT": str(tmp_path),
        "POWERTOOLS_TRACE_DISABLED": "false",
        "AWS_XRAY_CONTEXT_MISSING": "IGNORE_ERROR",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "JOBS_TABLE_NAME": "jobs",
        "INPUT_BUCKET_NAME": "inputs",
        "RESULTS_BUCKET_NAME": "results",
        "CHECK_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/checks",
        "EVENT_BUS_NAME": "bus",
        "WEBHOOK_SIGNING_KEY_SECRET_NAME": "signing-key",
        "PROVIDER_SECRETS_PREFIX": "stack/providers/",
    }
    run = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False
    )

    assert run.returncode == 0, run.stderr
    patched, provider_transport, fetch_transport = run.stdout.splitlines()[-3:]
    assert patched == "['botocore', 'httpx']"
    assert provider_transport == fetch_transport == "SyncInstrumentedTransport"


# ------------------------------------------------------------------------------------------------- template


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(ROOT / "template.yaml")


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def test_every_dead_letter_queue_has_an_alarm_for_any_message(template: dict[str, Any]) -> None:
    queues = resources(template, "AWS::SQS::Queue")
    dead_letter = {
        q["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
        for q in queues.values()
        if "RedrivePolicy" in q.get("Properties", {})
    } | {"PublisherDeadLetterQueue"}
    watched = {
        a["Properties"]["Dimensions"][0]["Value"]["Fn::GetAtt"][0]
        for a in resources(template, "AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("MetricName") == "ApproximateNumberOfMessagesVisible"
        and a["Properties"]["Threshold"] == 0
        and a["Properties"]["ComparisonOperator"] == "GreaterThanThreshold"
    }
    assert dead_letter == {
        "SubmitDeadLetterQueue",
        "CheckDeadLetterQueue",
        "MediaDeadLetterQueue",
        "PublisherDeadLetterQueue",
    }
    assert watched == dead_letter


def test_every_alarm_notifies_the_encrypted_topic(template: dict[str, Any]) -> None:
    alarms = resources(template, "AWS::CloudWatch::Alarm")
    assert len(alarms) >= 8
    for name, alarm in alarms.items():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": "AlarmTopic"}], name
        assert alarm["Properties"]["TreatMissingData"] == "notBreaching", name
    topic = template["Resources"]["AlarmTopic"]["Properties"]
    assert topic["KmsMasterKeyId"] == {"Ref": "AlarmTopicKey"}, "CloudWatch cannot publish with aws/sns"
    key_policy = template["Resources"]["AlarmTopicKey"]["Properties"]["KeyPolicy"]["Statement"]
    assert any(s["Principal"].get("Service") == "cloudwatch.amazonaws.com" for s in key_policy)
    assert template["Resources"]["AlarmEmailSubscription"]["Condition"] == "HasAlarmEmail"


def test_every_function_has_a_log_group_with_the_retention_parameter(template: dict[str, Any]) -> None:
    functions = set(resources(template, "AWS::Serverless::Function"))
    groups = resources(template, "AWS::Logs::LogGroup")
    named = {
        re.fullmatch(r"/aws/lambda/\$\{(\w+)\}", g["Properties"]["LogGroupName"]["Fn::Sub"]).group(1)  # type: ignore[union-attr]
        for g in groups.values()
        if g["Properties"]["LogGroupName"]["Fn::Sub"].startswith("/aws/lambda/")
    }
    assert named == functions
    assert all(g["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"} for g in groups.values())
    access = template["Resources"]["HttpApi"]["Properties"]["AccessLogSettings"]
    assert access["DestinationArn"] == {"Fn::GetAtt": ["HttpApiAccessLogGroup", "Arn"]}
    assert "$context.path" not in access["Format"], "a callback URL may carry a token"


def test_input_retention_expires_only_replaced_versions(template: dict[str, Any]) -> None:
    rules = template["Resources"]["InputBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    (conditional,) = [r for r in rules if "Fn::If" in r]
    condition, rule, otherwise = conditional["Fn::If"]
    assert condition == "HasInputRetention" and otherwise == {"Ref": "AWS::NoValue"}
    assert rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": {"Ref": "InputRetentionDays"}}
    assert not {"ExpirationInDays", "ExpirationDate", "Prefix", "Transitions"} & set(rule)


def dashboard(template: dict[str, Any]) -> dict[str, Any]:
    body, variables = template["Resources"]["OperationsDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    numbers = {name for name, p in template["Parameters"].items() if p["Type"] == "Number"}

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in numbers:
            return "10"
        return NAMESPACE if name in variables else f"<{name}>"

    return json.loads(re.sub(r"\$\{([^}!]+)\}", value, body))


def test_dashboard_is_valid_json_and_shows_every_alarm_and_metric(template: dict[str, Any]) -> None:
    body = dashboard(template)

    (alarm_widget,) = [w for w in body["widgets"] if w["type"] == "alarm"]
    alarms = list(resources(template, "AWS::CloudWatch::Alarm"))
    assert alarm_widget["properties"]["alarms"] == [f"<{name}.Arn>" for name in alarms]
    text = json.dumps(body)
    for metric in (
        "JobsSubmitted",
        "JobsSucceeded",
        "JobsFailed",
        "ProviderLatency",
        "ProviderErrors",
        "ResultBytes",
        "TimeToResult",
        "WebhookRejections",
        "ApproximateAgeOfOldestMessage",
        "4xx",
        "5xx",
    ):
        assert metric in text, metric
    for widget in body["widgets"]:
        assert widget["x"] + widget["width"] <= 24


def test_metrics_named_by_alarms_and_dashboard_are_emitted_by_the_code(template: dict[str, Any]) -> None:
    code = "\n".join(
        p.read_text()
        for p in [ROOT / "layers/shared/faceswap/observability.py", *sorted((ROOT / "functions").glob("*/app.py"))]
    )
    ours = {
        m["MetricStat"]["Metric"]["MetricName"]
        for a in resources(template, "AWS::CloudWatch::Alarm").values()
        for m in a["Properties"].get("Metrics", [])
        if "MetricStat" in m
    }
    body = dashboard(template)
    ours |= set(re.findall(r"MetricName=\\\"(\w+)", json.dumps(body)))  # SEARCH expressions
    for widget in body["widgets"]:
        namespace = name = None
        for row in widget["properties"].get("metrics", []):
            if isinstance(row[0], dict):
                continue
            if row[0] != "...":
                namespace = namespace if row[0] == "." else row[0]
                name = name if row[1] == "." else row[1]
            if namespace == NAMESPACE:
                ours.add(name)
    assert {"JobsSubmitted", "JobsSucceeded", "TimeToResult", "WebhookRejections"} <= ours
    for metric in ours:
        assert f'"{metric}"' in code, metric


def test_samconfig_environments_set_template_parameters_to_allowed_values(template: dict[str, Any]) -> None:
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    for environment in ("dev", "prod"):
        overrides = config[environment]["deploy"]["parameters"]["parameter_overrides"]
        items = shlex.split(overrides) if isinstance(overrides, str) else overrides
        values = {name: value.strip('"') for name, value in (item.split("=", 1) for item in items)}
        assert {"DefaultProvider", "SubmitMaximumConcurrency", "ResultMaxBytes", "InputRetentionDays"} <= set(values)
        assert "AlarmEmail" in values, environment
        for name, value in values.items():
            spec = template["Parameters"][name]
            if "AllowedValues" in spec:
                assert value in [str(v) for v in spec["AllowedValues"]], (environment, name)
            if spec["Type"] == "Number":
                assert spec.get("MinValue", -1e18) <= float(value) <= spec.get("MaxValue", 1e18), (environment, name)
            if "AllowedPattern" in spec:
                assert re.fullmatch(spec["AllowedPattern"], value), (environment, name)


def test_a_create_claim_lasts_as_long_as_the_function_that_makes_it(template: dict[str, Any]) -> None:
    from faceswap.lifecycle import CREATE_CLAIM_SECONDS, VIDEO_CREATE_CLAIM_SECONDS

    functions = resources(template, "AWS::Serverless::Function")
    default = template["Globals"]["Function"]["Timeout"]
    assert functions["SubmitFunction"]["Properties"].get("Timeout", default) == CREATE_CLAIM_SECONDS
    assert functions["MediaFunction"]["Properties"]["Timeout"] == VIDEO_CREATE_CLAIM_SECONDS
    # A claimer that died leaves its message to come back after the queue's visibility timeout: after its claim lapsed.
    queues = resources(template, "AWS::SQS::Queue")
    assert queues["SubmitQueue"]["Properties"]["VisibilityTimeout"] > CREATE_CLAIM_SECONDS
    assert queues["MediaQueue"]["Properties"]["VisibilityTimeout"] > VIDEO_CREATE_CLAIM_SECONDS
