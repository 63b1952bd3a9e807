"""Benchmark 5: what a million jobs cost on AWS on top of the provider, from the measured figures.

PRICES ARE CONSTANTS, NOT FETCHED. They are AWS's public on-demand prices for us-east-1 as published on the
pages below in 2025 (:data:`PRICES_AS_PUBLISHED`), written down from the author's knowledge without internet
access; free tiers are ignored. Check the pages before relying on a figure.

The model, per job of the common case (PiAPI, webhook delivered):

- **Lambda** (arm64, the template's ``MemorySize``): for each function, invocations per job x (mean measured
  duration rounded up to the next ms x memory in GB x the GB-second price + the request price). Invocations
  per job on AWS: submit 1 (a batch of up to 5 shares one under load, so this is the most), callback 1,
  poller 1 (the safety-net check runs even after the webhook), publisher 1 (the stream's filter criteria let
  only the record that ended the job through; the local runtime does not filter, so it sees 3). Durations are
  this machine's, against moto on loopback: a 512 MB function has about a third of a vCPU and real AWS calls
  take longer, so real durations are likely higher.
- **HTTP API**: one request (the callback). **SQS**: the messages sent by the handlers (the check), the S3
  notification into the submit queue, and per message one receive and one delete by the event source
  mapping (at low traffic; batches make it less). **DynamoDB**: each jobs-table write costs ceil(row KB)
  write units and each strongly consistent read ceil(row / 4 KB) read units, with the row at its final
  size; writes to other tables (the rate limiter's small items) one unit each.
  **S3**: PUT-class requests (PUT, multipart, LIST) and GET-class requests (GET, HEAD) as counted, plus one
  month of storage of the result. **EventBridge**: events put. **Secrets Manager**: calls counted in steady
  state (cached for 5 minutes per container, so about none per job).
- Not in the issue's list but switched on by the template, so shown as their own lines and included in the
  total: **CloudWatch Logs** ingestion of the functions' logs (bytes measured, plus Lambda's own start and
  report records) and **X-Ray** traces (``Tracing: Active``; the default sampling rule records about 5 % of
  requests at volume).
- Not per job, so not included: Secrets Manager's monthly fee per secret, the event source mappings' empty
  long polls of idle queues, custom metrics (EMF) per metric per month, log storage.
"""

from __future__ import annotations

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


PRICES: dict[str, Price] = {
    "lambda_arm64_gb_second": Price(0.0000133334, 1, "GB-second", "https://aws.amazon.com/lambda/pricing/"),
    "lambda_request": Price(0.20, 1_000_000, "requests", "https://aws.amazon.com/lambda/pricing/"),
    "http_api_request": Price(1.00, 1_000_000, "requests", "https://aws.amazon.com/api-gateway/pricing/"),
    "sqs_request": Price(0.40, 1_000_000, "requests (standard queue)", "https://aws.amazon.com/sqs/pricing/"),
    "dynamodb_write_request_unit": Price(
        0.625, 1_000_000, "write request units (on-demand)", "https://aws.amazon.com/dynamodb/pricing/on-demand/"
    ),
    "dynamodb_read_request_unit": Price(
        0.125, 1_000_000, "read request units (on-demand)", "https://aws.amazon.com/dynamodb/pricing/on-demand/"
    ),
    "s3_put_class_request": Price(0.005, 1_000, "PUT, COPY, POST, LIST requests", "https://aws.amazon.com/s3/pricing/"),
    "s3_get_class_request": Price(
        0.0004, 1_000, "GET, SELECT and other requests", "https://aws.amazon.com/s3/pricing/"
    ),
    "s3_storage_gb_month": Price(0.023, 1, "GB-month (S3 Standard, first 50 TB)", "https://aws.amazon.com/s3/pricing/"),
    "eventbridge_custom_event": Price(1.00, 1_000_000, "custom events", "https://aws.amazon.com/eventbridge/pricing/"),
    "secrets_manager_api_call": Price(0.05, 10_000, "API calls", "https://aws.amazon.com/secrets-manager/pricing/"),
    "cloudwatch_logs_ingested_gb": Price(
        0.50, 1, "GB ingested (standard logs)", "https://aws.amazon.com/cloudwatch/pricing/"
    ),
    "xray_trace_recorded": Price(5.00, 1_000_000, "traces recorded", "https://aws.amazon.com/xray/pricing/"),
}

LAMBDA_PLATFORM_LOG_BYTES = 500
"""Bytes Lambda itself logs per invocation (its start and report records, JSON format), an estimate."""

XRAY_SAMPLED_FRACTION = 0.05
"""X-Ray's default sampling rule: the first request each second and 5 % of the rest (about 5 % at volume)."""

INVOCATIONS_PER_JOB_ON_AWS = {
    "SubmitFunction": 1.0,
    "CallbackFunction": 1.0,
    "PollerFunction": 1.0,
    "PublisherFunction": 1.0,
}
"""See the module docstring for why."""

SQS_MESSAGES_PER_JOB = 2
"""The S3 notification into the submit queue and the check message."""

MILLION = 1_000_000


def cost_per_million_jobs(
    *,
    mean_ms: dict[str, float],
    memory_mb: int,
    counts: dict[str, Any],
    result_bytes: int,
    item_bytes: int,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Dollars per million jobs by line item, and the quantities per job they came from.

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
    """
    totals = counts["totals"]
    gb = memory_mb / 1024
    quantities: dict[str, float] = {}
    lines: dict[str, float] = {}

    gb_seconds = 0.0
    invocations = 0.0
    for function, per_job in INVOCATIONS_PER_JOB_ON_AWS.items():
        billed_ms = math.ceil(mean_ms.get(function, 0.0))
        gb_seconds += per_job * billed_ms / 1000 * gb
        invocations += per_job
    quantities["lambda_gb_seconds"] = gb_seconds
    quantities["lambda_invocations"] = invocations
    lines["lambda_duration"] = PRICES["lambda_arm64_gb_second"].cost(gb_seconds)
    lines["lambda_requests"] = PRICES["lambda_request"].cost(invocations)

    quantities["http_api_requests"] = INVOCATIONS_PER_JOB_ON_AWS["CallbackFunction"]
    lines["http_api"] = PRICES["http_api_request"].cost(quantities["http_api_requests"])

    handler_sqs = totals.get("sqs_requests", 0.0)
    quantities["sqs_requests"] = handler_sqs + 1 + 2 * SQS_MESSAGES_PER_JOB
    lines["sqs"] = PRICES["sqs_request"].cost(quantities["sqs_requests"])

    # Jobs-table items are the job row; other tables' (the rate limiter's) are small: one unit each.
    job_writes = totals.get("dynamodb_jobs_table_writes", totals.get("dynamodb_writes", 0.0))
    other_writes = totals.get("dynamodb_writes", 0.0) - job_writes
    write_units = job_writes * max(1, math.ceil(item_bytes / 1024)) + other_writes
    read_units = totals.get("dynamodb_reads", 0.0) * max(1, math.ceil(item_bytes / 4096))
    quantities["dynamodb_write_units"] = write_units
    quantities["dynamodb_read_units"] = read_units
    lines["dynamodb_writes"] = PRICES["dynamodb_write_request_unit"].cost(write_units)
    lines["dynamodb_reads"] = PRICES["dynamodb_read_request_unit"].cost(read_units)

    quantities["s3_put_class_requests"] = totals.get("s3_put_class_requests", 0.0)
    quantities["s3_get_class_requests"] = totals.get("s3_get_class_requests", 0.0)
    quantities["s3_result_gb"] = result_bytes / 1e9
    lines["s3_put_class"] = PRICES["s3_put_class_request"].cost(quantities["s3_put_class_requests"])
    lines["s3_get_class"] = PRICES["s3_get_class_request"].cost(quantities["s3_get_class_requests"])
    lines["s3_storage_first_month"] = PRICES["s3_storage_gb_month"].cost(quantities["s3_result_gb"])

    quantities["eventbridge_events"] = totals.get("eventbridge_events", 0.0)
    lines["eventbridge"] = PRICES["eventbridge_custom_event"].cost(quantities["eventbridge_events"])
    quantities["secrets_manager_calls"] = totals.get("secretsmanager_requests", 0.0)
    lines["secrets_manager"] = PRICES["secrets_manager_api_call"].cost(quantities["secrets_manager_calls"])

    function_log_bytes = sum(v for k, v in counts.get("log_bytes_per_job", {}).items() if k.endswith("Function"))
    quantities["log_bytes"] = function_log_bytes + LAMBDA_PLATFORM_LOG_BYTES * invocations
    lines["cloudwatch_logs_ingestion"] = PRICES["cloudwatch_logs_ingested_gb"].cost(quantities["log_bytes"] / 1e9)
    quantities["xray_traces"] = invocations * XRAY_SAMPLED_FRACTION
    lines["xray_traces"] = PRICES["xray_trace_recorded"].cost(quantities["xray_traces"])

    per_million = {k: round(v * MILLION, 2) for k, v in lines.items()}
    per_million["total"] = round(sum(lines.values()) * MILLION, 2)
    return per_million, {k: round(v, 6) for k, v in quantities.items()}


def price_table() -> dict[str, dict[str, Any]]:
    """The price constants, for ``results.json``."""
    return {
        name: {"usd": p.usd, "per": p.per, "unit": p.unit, "source": p.source, "as_published": PRICES_AS_PUBLISHED}
        for name, p in PRICES.items()
    }
