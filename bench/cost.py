"""Benchmark 5: what a million jobs cost on AWS on top of the provider, from the measured figures.

PRICES ARE CONSTANTS, NOT FETCHED. They are AWS's public on-demand prices for us-east-1 as published on the
pages below in 2025 (:data:`PRICES_AS_PUBLISHED`), written down from the author's knowledge without internet
access; free tiers are ignored. Check the pages before relying on a figure.

Three totals per million jobs of the common case (PiAPI, webhook delivered), and a fixed monthly section:

- **overhead**: everything the pipeline itself adds per job. The target is under $15 per million.
- **provider_transfer**: data transfer out of AWS to the provider. PiAPI takes images as base64 in the create
  request (``faceswap/providers/piapi.py``), so each job sends the prepared target image and swap face, a third
  larger than their bytes, from the submit function to the internet (Lambda bills it at EC2's internet rate). A
  script on AWS calling PiAPI the same way pays the same, so it is shown apart from the overhead; it follows the
  input size (:func:`provider_request_bytes`: the benchmark's photos as the submit function prepares them).
- **storage_first_month**: one month of S3 Standard for the result kept (the user's data), a result the size of the
  self-hosted engine's result of the full-size photo (``cost_assumed_result_bytes``). It recurs every month the
  result is kept.
- **fixed monthly** (US dollars a month, whatever the number of jobs): secrets and their reads, the X-Ray
  reservoir, custom metrics, alarms, the dashboard, the alarm topic's KMS key, the queues' idle polling and the
  sweeper. At 1 M jobs a month they add their total again per million.

The per-job model:

- **Lambda** (arm64, the template's ``MemorySize``): for each function, invocations per job x (mean measured
  duration rounded up to the next ms x memory in GB x the GB-second price + the request price). Invocations
  per job on AWS: submit 1 (a batch of up to 5 shares one under load, so this is the most), callback 1,
  poller 1 (the safety-net check runs even after the webhook), publisher 1 (the stream's filter criteria let
  only the record that ended the job through; the local runtime does not filter, so it sees 3). Durations are
  this machine's, against moto on loopback: a 512 MB function has about a third of a vCPU and real AWS calls
  take longer, so real durations are likely higher.
- **HTTP API**: one request (the callback). **SQS**: the messages sent by the handlers (the check), the S3
  notification into the submit queue, and per message one receive and one delete by the event source mapping (at
  low traffic; batches make it less).
- **DynamoDB** (on demand): each jobs-table write costs ceil(KB) write units of the larger of the row before and
  after it; the row stays under 1 KB until the write that ends the job (:data:`JOB_ROW_BYTES_BEFORE_THE_END`), so
  the earlier writes cost 1 unit and the last ceil(final row / 1 KB). The ``StateIndex`` (projection ALL) is written
  too: the first write puts the row in it (1 unit) and each later write changes ``state`` (RECEIVED, SUBMITTED,
  SUCCEEDED on the happy path), which DynamoDB bills as a delete of the old index entry and a put of the new one.
  Writes to other tables (the rate limiter's small items) one unit each, reads ceil(row / 4 KB) units each, as
  counted. The job row is kept (no TTL): a month of it in the table and the index, and point-in-time recovery of
  the table, is a line of its own.
- **S3**: PUT-class requests (PUT, multipart, LIST) and GET-class requests (GET, HEAD) as counted by the SDK. PiAPI's
  image jobs give the provider no presigned URL (base64), so the provider makes no S3 request; a URL-only provider
  (CRUN) or a video job would add two prepared-copy PUTs and the provider's two GETs per job.
- **EventBridge**: events put. **Secrets Manager**: nothing per job. Each function caches each secret for
  ``secrets_max_age_seconds`` (300 s) per execution environment, so reads are per warm environment per 5 minutes
  (fixed monthly, :data:`WARM_ENVIRONMENTS`); the bench's few jobs in fresh containers count about 0.7 a job.
- **CloudWatch Logs** ingestion: the functions' own lines as measured, Lambda's platform records (JSON format,
  ``SystemLogLevel: INFO``: ``platform.start`` and ``platform.report`` per invocation,
  :data:`LAMBDA_PLATFORM_LOG_BYTES`) and the HTTP API's access-log line per callback
  (:data:`HTTP_API_ACCESS_LOG_BYTES`).
- **X-Ray** (``Tracing: Active``): the default sampling rule records the first request each second (the reservoir:
  a fixed monthly line, at most one trace a second) and 5 % of the rest. Each invocation is a trace of its own: S3
  notifications and the table's stream carry no trace header, the HTTP API does not trace, and an SQS-triggered
  function's trace is linked to, not continued from, the sender's (https://docs.aws.amazon.com/xray/latest/devguide/
  xray-services-sqs.html). So 5 % of 4 invocations per job.

Not counted (each under a few cents per million jobs, or not the pipeline's):

- the provider's own price; the user's upload of the inputs and their storage in the input bucket (the user's data;
  the pipeline makes no copy of a PiAPI image job's inputs); downloads of results by users (GETs, egress);
- CloudWatch Logs storage (30 days by default, compressed: about $0.03 a GB-month) and Logs Insights queries;
- S3 server access logs of the two buckets (delivery is free; a few hundred bytes a request kept 30 days: about
  $0.06 per million jobs); S3 lifecycle transitions (none: the rules only expire objects, which is free);
- KMS requests of the AWS managed keys (DynamoDB caches its data keys; Secrets Manager decrypts per read, which is
  per warm environment, not per job); the buckets use SSE-S3 (free) and the queues SQS-managed SSE (free);
- DynamoDB stream reads (free for Lambda triggers) and event filtering; the inbound result download and callback
  (data transfer in is free); the answers of the callback and the provider's small requests headers (bytes);
- X-Ray traces retrieved or scanned (billed when someone looks); SNS alarm notifications;
- NAT gateways and VPC endpoints: the functions are not in a VPC.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from typing import Any

PRICES_AS_PUBLISHED = "2025 (as published then; recalled, not fetched on the run date)"
REGION = "us-east-1"


@dataclass(frozen=True)
class Price:
    """``usd`` per ``per`` ``unit``, from ``source``."""

    usd: float
    per: float
    unit: str
    source: str

    def cost(self, quantity: float) -> float:
        """Dollars for ``quantity`` units."""
        return self.usd * quantity / self.per


_DDB = "https://aws.amazon.com/dynamodb/pricing/on-demand/"
_CW = "https://aws.amazon.com/cloudwatch/pricing/"
PRICES: dict[str, Price] = {
    "lambda_arm64_gb_second": Price(0.0000133334, 1, "GB-second", "https://aws.amazon.com/lambda/pricing/"),
    "lambda_request": Price(0.20, 1_000_000, "requests", "https://aws.amazon.com/lambda/pricing/"),
    "http_api_request": Price(1.00, 1_000_000, "requests", "https://aws.amazon.com/api-gateway/pricing/"),
    "sqs_request": Price(0.40, 1_000_000, "requests (standard queue)", "https://aws.amazon.com/sqs/pricing/"),
    "dynamodb_write_request_unit": Price(0.625, 1_000_000, "write request units (on-demand)", _DDB),
    "dynamodb_read_request_unit": Price(0.125, 1_000_000, "read request units (on-demand)", _DDB),
    "dynamodb_storage_gb_month": Price(0.25, 1, "GB-month (Standard table class, tables and indexes)", _DDB),
    "dynamodb_pitr_gb_month": Price(0.20, 1, "GB-month of table size (point-in-time recovery)", _DDB),
    "s3_put_class_request": Price(0.005, 1_000, "PUT, COPY, POST, LIST requests", "https://aws.amazon.com/s3/pricing/"),
    "s3_get_class_request": Price(
        0.0004, 1_000, "GET, SELECT and other requests", "https://aws.amazon.com/s3/pricing/"
    ),
    "s3_storage_gb_month": Price(0.023, 1, "GB-month (S3 Standard, first 50 TB)", "https://aws.amazon.com/s3/pricing/"),
    "data_transfer_out_internet_gb": Price(
        0.09,
        1,
        "GB out to the internet (first 10 TB a month; Lambda bills it at EC2's rates)",
        "https://aws.amazon.com/ec2/pricing/on-demand/#Data_Transfer",
    ),
    "eventbridge_custom_event": Price(1.00, 1_000_000, "custom events", "https://aws.amazon.com/eventbridge/pricing/"),
    "eventbridge_scheduler_invocation": Price(
        1.00, 1_000_000, "scheduled invocations", "https://aws.amazon.com/eventbridge/pricing/"
    ),
    "secrets_manager_api_call": Price(0.05, 10_000, "API calls", "https://aws.amazon.com/secrets-manager/pricing/"),
    "secrets_manager_secret_month": Price(0.40, 1, "secret-month", "https://aws.amazon.com/secrets-manager/pricing/"),
    "cloudwatch_logs_ingested_gb": Price(0.50, 1, "GB ingested (standard logs, Lambda's first tier)", _CW),
    "cloudwatch_custom_metric_month": Price(0.30, 1, "metric-month (first 10,000 metrics)", _CW),
    "cloudwatch_alarm_metric_month": Price(0.10, 1, "standard-resolution alarm metric-month", _CW),
    "cloudwatch_dashboard_month": Price(3.00, 1, "dashboard-month", _CW),
    "kms_key_month": Price(1.00, 1, "customer managed key-month", "https://aws.amazon.com/kms/pricing/"),
    "xray_trace_recorded": Price(5.00, 1_000_000, "traces recorded", "https://aws.amazon.com/xray/pricing/"),
}

MILLION = 1_000_000
SECONDS_PER_MONTH = 30 * 24 * 3600


def _json_bytes(record: dict[str, Any]) -> int:
    """Bytes of one compact JSON log line, with its newline."""
    return len(json.dumps(record, separators=(",", ":"))) + 1


_TRACE = {
    "spanId": "54565fb41ac79632",
    "type": "X-Amzn-Trace-Id",
    "value": "Root=1-62e900b2-710d76f009d6e7785905449a;Parent=0efbd19962d95b05;Sampled=0;Lineage=1:8b7a9f5c:0",
}
_REQUEST_ID = "6d68ca91-49c9-448d-89b8-7ca3e6dc66aa"
LAMBDA_PLATFORM_RECORDS = (
    {
        "time": "2025-06-02T12:01:23.521Z",
        "type": "platform.start",
        "record": {"requestId": _REQUEST_ID, "version": "$LATEST", "tracing": _TRACE},
    },
    {
        "time": "2025-06-02T12:01:23.583Z",
        "type": "platform.report",
        "record": {
            "requestId": _REQUEST_ID,
            "metrics": {"durationMs": 61.42, "billedDurationMs": 62, "memorySizeMB": 512, "maxMemoryUsedMB": 118},
            "tracing": _TRACE,
            "status": "success",
        },
    },
)
"""What Lambda logs per invocation with ``LogFormat: JSON`` and ``SystemLogLevel: INFO`` (the template's), shaped as
the Telemetry API's schema examples (https://docs.aws.amazon.com/lambda/latest/dg/telemetry-schema-reference.html)
with ``Tracing: Active``. ``platform.runtimeDone`` is a DEBUG record and is not sent at INFO; ``platform.initStart``
(once per execution environment) is left out."""

LAMBDA_PLATFORM_LOG_BYTES = sum(_json_bytes(r) for r in LAMBDA_PLATFORM_RECORDS)
"""Bytes Lambda itself logs per invocation (:data:`LAMBDA_PLATFORM_RECORDS`): an estimate, about 720."""

HTTP_API_ACCESS_LOG_BYTES = _json_bytes(
    {
        "requestId": "Zr0HfhmUoAMEbdg=",
        "time": "08/Dec/2025:00:39:32 +0000",
        "routeKey": "POST /callbacks/{provider}/{job_id}",
        "status": "200",
        "protocol": "HTTP/1.1",
        "responseLength": "63",
        "latencyMs": "62",
        "integrationLatencyMs": "61",
        "integrationStatus": "200",
        "integrationError": "-",
        "errorMessage": "-",
        "sourceIp": "203.0.113.10",
        "userAgent": "python-requests/2.31.0",
        "caller": "-",
    }
)
"""One line of the HTTP API's access log (the template's ``AccessLogSettings.Format`` with typical values)."""

XRAY_SAMPLED_FRACTION = 0.05
"""X-Ray's default sampling rule beyond its reservoir: 5 % of requests."""

XRAY_RESERVOIR_PER_SECOND = 1
"""The default rule's reservoir: the first request each second is traced. X-Ray shares a rule's reservoir among the
services that use it (``GetSamplingTargets``), so at most one trace a second for the account: a fixed monthly line."""

INVOCATIONS_PER_JOB_ON_AWS = {
    "SubmitFunction": 1.0,
    "CallbackFunction": 1.0,
    "PollerFunction": 1.0,
    "PublisherFunction": 1.0,
}
"""See the module docstring for why."""

SQS_MESSAGES_PER_JOB = 2
"""The S3 notification into the submit queue and the check message."""

JOB_ROW_BYTES_BEFORE_THE_END = {"RECEIVED": 493, "SUBMITTED": 690}
"""The job row's size after its first two writes (a PiAPI webhook job on the local stack, read from the table's
stream): both under 1 KB, so those writes and their index entries cost one unit each."""

DYNAMODB_ITEM_OVERHEAD_BYTES = 100
"""What DynamoDB adds to each item's size for storage, in the table and again in each index."""

PROVIDER_REQUEST_OVERHEAD_BYTES = 2000
"""Bytes sent to the provider per job besides the images: the create's JSON and headers, the get-task and the
result download requests, TLS client messages (an estimate)."""

SECRETS_PER_ENVIRONMENT = 2
"""Secrets a provider-calling function reads: the webhook signing key (``WebhookSigningKeySecret``, the one secret the
template creates) and the API key of each enabled provider that needs one (``EnabledProviders`` default: piapi)."""

SECRETS_CACHE_SECONDS = 300
"""``Config.secrets_max_age_seconds``: each environment reads a secret again once its copy is this old."""

WARM_ENVIRONMENTS = {"SubmitFunction": 5, "PollerFunction": 5, "CallbackFunction": 5}
"""Execution environments assumed warm all month, per function that reads secrets: the submit and poller functions'
``MaximumConcurrency`` (5), and as many callbacks. An upper bound for a steady load of 1 M jobs a month (0.4 a second,
under 0.1 s each keeps one or two warm); the media function (video jobs) is left out."""

CUSTOM_METRICS = 38
"""Custom metrics (EMF) of a PiAPI deployment: ProviderLatency, ProviderCalls and ProviderErrors by provider and by
provider and operation (create, read: 9), ProviderErrors by error code (about 3), JobsSubmitted (2), JobsSucceeded,
ResultBytes, TimeToResult (6), JobsFailed by service, provider and about 5 error codes (7), WebhookRejections,
CallbackBodyRefusals, JobsSwept, ApiJobsRequested (4) and Powertools' ColdStart per function (7)."""

ALARM_METRICS = 13
"""The template's 11 alarms; two of them (failed-job rate, provider error rate) are metric math over 2 metrics."""

DASHBOARDS = 1
CUSTOMER_MANAGED_KMS_KEYS = 1
"""``AlarmTopicKey`` (the alarm topic's encryption; CloudWatch cannot publish to one under ``aws/sns``)."""

SQS_EVENT_SOURCES = 3
"""The submit, check and media queues' event source mappings, each long-polling while idle."""

SQS_IDLE_POLLERS = 5
SQS_LONG_POLL_SECONDS = 20
"""An idle SQS event source mapping keeps about 5 long polls of 20 s going (an assumption: AWS does not publish it)."""

SWEEPS_PER_MONTH = SECONDS_PER_MONTH // 300
"""The sweeper runs every 5 minutes (EventBridge Scheduler)."""

SWEEP_ASSUMED = {"billed_ms": 100, "log_bytes": 1500, "read_units": 1}
"""One sweep: duration, log bytes (its lines and Lambda's records) and read units of a ``StateIndex`` query that
finds nothing (assumptions: the sweeper is not measured)."""


def provider_request_bytes(target: bytes, swap: bytes) -> int:
    """Bytes a PiAPI image job sends to the provider: both images as the submit function prepares them
    (:func:`faceswap.images.prepare_image` to PiAPI's limits), base64-encoded in the create request, plus
    :data:`PROVIDER_REQUEST_OVERHEAD_BYTES`."""
    from faceswap.images import prepare_image
    from faceswap.providers.piapi import PiAPIProvider

    limits = PiAPIProvider.image_limits
    encoded = sum(len(base64.b64encode(prepare_image(data, limits).data)) for data in (target, swap))
    return encoded + PROVIDER_REQUEST_OVERHEAD_BYTES


def cost_per_million_jobs(
    *,
    mean_ms: dict[str, float],
    memory_mb: int,
    counts: dict[str, Any],
    result_bytes: int,
    item_bytes: int,
    provider_bytes: int,
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Dollars per million jobs by section and line item, and the quantities per job they came from.

    Parameters
    ----------
    mean_ms
        Mean measured handler duration per function (one job per invocation).
    memory_mb
        The functions' memory size.
    counts
        Per-job counts of the PiAPI webhook scenario (:func:`aws_requests.summarise_counts` plus
        ``log_bytes_per_job``).
    result_bytes
        Size of the result kept per job (for storage).
    item_bytes
        Size of a finished job row in DynamoDB.
    provider_bytes
        Bytes sent to the provider per job (:func:`provider_request_bytes`).

    Returns
    -------
    tuple
        ``{"overhead": {line: usd}, "provider_transfer": {…}, "storage": {…}, "totals": {"overhead": …,
        "provider_transfer": …, "storage_first_month": …, "total": …}}`` per million jobs, rounded to cents;
        and the quantities per job.
    """
    totals = counts["totals"]
    gb = memory_mb / 1024
    quantities: dict[str, float] = {}
    overhead: dict[str, float] = {}

    gb_seconds = 0.0
    invocations = 0.0
    for function, per_job in INVOCATIONS_PER_JOB_ON_AWS.items():
        billed_ms = math.ceil(mean_ms.get(function, 0.0))
        gb_seconds += per_job * billed_ms / 1000 * gb
        invocations += per_job
    quantities["lambda_gb_seconds"] = gb_seconds
    quantities["lambda_invocations"] = invocations
    overhead["lambda_duration"] = PRICES["lambda_arm64_gb_second"].cost(gb_seconds)
    overhead["lambda_requests"] = PRICES["lambda_request"].cost(invocations)

    callbacks = INVOCATIONS_PER_JOB_ON_AWS["CallbackFunction"]
    quantities["http_api_requests"] = callbacks
    overhead["http_api"] = PRICES["http_api_request"].cost(callbacks)

    handler_sqs = totals.get("sqs_requests", 0.0)
    quantities["sqs_requests"] = handler_sqs + 1 + 2 * SQS_MESSAGES_PER_JOB
    overhead["sqs"] = PRICES["sqs_request"].cost(quantities["sqs_requests"])

    job_writes = totals.get("dynamodb_jobs_table_writes", totals.get("dynamodb_writes", 0.0))
    other_writes = totals.get("dynamodb_writes", 0.0) - job_writes
    final_units = max(1, math.ceil(item_bytes / 1024))
    table_units = max(0.0, job_writes - 1) + min(1.0, job_writes) * final_units
    # StateIndex: a put on the first write; on each later write a delete of the old entry and a put of the new one,
    # 1 unit each under 1 KB, except the last put (the final row): 2 per write after the first, plus the final row.
    index_units = 2 * max(0.0, job_writes - 1) + min(1.0, job_writes) * final_units
    quantities["dynamodb_jobs_table_write_units"] = table_units
    quantities["dynamodb_state_index_write_units"] = index_units
    quantities["dynamodb_other_write_units"] = other_writes
    quantities["dynamodb_write_units"] = table_units + index_units + other_writes
    quantities["dynamodb_read_units"] = totals.get("dynamodb_reads", 0.0) * max(1, math.ceil(item_bytes / 4096))
    overhead["dynamodb_writes"] = PRICES["dynamodb_write_request_unit"].cost(quantities["dynamodb_write_units"])
    overhead["dynamodb_reads"] = PRICES["dynamodb_read_request_unit"].cost(quantities["dynamodb_read_units"])
    stored = (item_bytes + DYNAMODB_ITEM_OVERHEAD_BYTES) / 1e9
    quantities["dynamodb_job_row_gb"] = stored
    overhead["dynamodb_job_row_storage_first_month"] = PRICES["dynamodb_storage_gb_month"].cost(
        2 * stored  # the table and StateIndex (projection ALL)
    ) + PRICES["dynamodb_pitr_gb_month"].cost(stored)

    quantities["s3_put_class_requests"] = totals.get("s3_put_class_requests", 0.0)
    quantities["s3_get_class_requests"] = totals.get("s3_get_class_requests", 0.0)
    overhead["s3_put_class"] = PRICES["s3_put_class_request"].cost(quantities["s3_put_class_requests"])
    overhead["s3_get_class"] = PRICES["s3_get_class_request"].cost(quantities["s3_get_class_requests"])

    quantities["eventbridge_events"] = totals.get("eventbridge_events", 0.0)
    overhead["eventbridge"] = PRICES["eventbridge_custom_event"].cost(quantities["eventbridge_events"])

    function_log_bytes = sum(v for k, v in counts.get("log_bytes_per_job", {}).items() if k.endswith("Function"))
    quantities["function_log_bytes"] = function_log_bytes
    quantities["log_bytes"] = (
        function_log_bytes + LAMBDA_PLATFORM_LOG_BYTES * invocations + HTTP_API_ACCESS_LOG_BYTES * callbacks
    )
    overhead["cloudwatch_logs_ingestion"] = PRICES["cloudwatch_logs_ingested_gb"].cost(quantities["log_bytes"] / 1e9)
    quantities["xray_traces"] = invocations * XRAY_SAMPLED_FRACTION
    overhead["xray_traces"] = PRICES["xray_trace_recorded"].cost(quantities["xray_traces"])

    quantities["provider_bytes"] = provider_bytes
    transfer = {
        "data_transfer_out_to_provider": PRICES["data_transfer_out_internet_gb"].cost(provider_bytes / 1e9),
    }
    quantities["s3_result_gb"] = result_bytes / 1e9
    storage = {"s3_results_storage_first_month": PRICES["s3_storage_gb_month"].cost(quantities["s3_result_gb"])}

    sections = {"overhead": overhead, "provider_transfer": transfer, "storage": storage}
    per_million: dict[str, dict[str, float]] = {
        name: {k: round(v * MILLION, 2) for k, v in lines.items()} for name, lines in sections.items()
    }
    section_totals = {name: sum(lines.values()) * MILLION for name, lines in sections.items()}
    per_million["totals"] = {
        "overhead": round(section_totals["overhead"], 2),
        "provider_transfer": round(section_totals["provider_transfer"], 2),
        "storage_first_month": round(section_totals["storage"], 2),
        "total": round(sum(section_totals.values()), 2),
    }
    return per_million, {k: round(v, 6) for k, v in quantities.items()}


def fixed_monthly(*, memory_mb: int) -> tuple[dict[str, float], dict[str, float]]:
    """Dollars a month that do not depend on the number of jobs, by line, and the quantities behind them.

    The X-Ray reservoir and the secrets' reads are upper bounds: a reservoir trace needs an invocation in that
    second, a secret read a warm environment (:data:`WARM_ENVIRONMENTS`) that is used after its copy aged.
    """
    quantities: dict[str, float] = {}
    lines: dict[str, float] = {}
    quantities["secrets"] = SECRETS_PER_ENVIRONMENT
    lines["secrets_manager_secrets"] = PRICES["secrets_manager_secret_month"].cost(SECRETS_PER_ENVIRONMENT)
    environments = sum(WARM_ENVIRONMENTS.values())
    reads = environments * SECRETS_PER_ENVIRONMENT * SECONDS_PER_MONTH / SECRETS_CACHE_SECONDS
    quantities["warm_environments"] = environments
    quantities["secrets_manager_calls"] = reads
    lines["secrets_manager_calls"] = PRICES["secrets_manager_api_call"].cost(reads)
    reservoir = XRAY_RESERVOIR_PER_SECOND * SECONDS_PER_MONTH
    quantities["xray_reservoir_traces"] = reservoir
    lines["xray_reservoir"] = PRICES["xray_trace_recorded"].cost(reservoir)
    quantities["custom_metrics"] = CUSTOM_METRICS
    lines["cloudwatch_custom_metrics"] = PRICES["cloudwatch_custom_metric_month"].cost(CUSTOM_METRICS)
    quantities["alarm_metrics"] = ALARM_METRICS
    lines["cloudwatch_alarms"] = PRICES["cloudwatch_alarm_metric_month"].cost(ALARM_METRICS)
    lines["cloudwatch_dashboard"] = PRICES["cloudwatch_dashboard_month"].cost(DASHBOARDS)
    lines["kms_alarm_topic_key"] = PRICES["kms_key_month"].cost(CUSTOMER_MANAGED_KMS_KEYS)
    polls = SQS_EVENT_SOURCES * SQS_IDLE_POLLERS * SECONDS_PER_MONTH / SQS_LONG_POLL_SECONDS
    quantities["sqs_idle_receives"] = polls
    lines["sqs_idle_polling"] = PRICES["sqs_request"].cost(polls)
    sweeps = SWEEPS_PER_MONTH
    quantities["sweeps"] = sweeps
    lines["sweeper"] = sweeps * (
        PRICES["lambda_arm64_gb_second"].cost(SWEEP_ASSUMED["billed_ms"] / 1000 * memory_mb / 1024)
        + PRICES["lambda_request"].cost(1)
        + PRICES["eventbridge_scheduler_invocation"].cost(1)
        + PRICES["dynamodb_read_request_unit"].cost(SWEEP_ASSUMED["read_units"])
        + PRICES["cloudwatch_logs_ingested_gb"].cost(SWEEP_ASSUMED["log_bytes"] / 1e9)
    )
    rounded = {k: round(v, 2) for k, v in lines.items()}
    rounded["total"] = round(sum(lines.values()), 2)
    return rounded, {k: round(v, 2) for k, v in quantities.items()}


def price_table() -> dict[str, dict[str, Any]]:
    """The price constants, for ``results.json``."""
    return {
        name: {"usd": p.usd, "per": p.per, "unit": p.unit, "source": p.source, "as_published": PRICES_AS_PUBLISHED}
        for name, p in PRICES.items()
    }
