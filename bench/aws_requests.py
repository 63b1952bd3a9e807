"""Benchmark 4: AWS requests and provider HTTP calls per job, by function, service and operation.

Scenarios (each a few jobs, one at a time, on the running instrumented stack). The emulator takes
:data:`PROCESSING_SECONDS` per task, as a provider takes some time: a webhook that arrives before the submit
function has stored the task id is a race of its own (benchmark 1 counts how often it happens), not the
happy path counted here.

- ``piapi_webhook``: a face-library upload (``incoming/<face>/…``) through PiAPI, webhook delivered.
- ``selfhosted_webhook``: a manifest (``jobs/<name>.json`` naming ``"provider": "selfhosted"``) through the
  self-hosted engine (a real swap), webhook delivered.
- ``piapi_polling``: as ``piapi_webhook`` but the webhook is lost (``faults.webhook = "none"``); the poller's
  check collects the result.

- ``ceiling_<r>_per_second`` (:data:`RATES`): face-library uploads through PiAPI, webhook delivered, offered at ``r``
  jobs per second under the template's default ceiling of PiAPI calls (5 per second): the DynamoDB writes per job
  (the jobs table's and the call ceiling's) and the busiest one-second window at the emulator. Each job makes two
  PiAPI calls (the create, and the callback's read of the task), so the ceiling lets about 2.5 jobs per second
  through: at 5 and 50 the functions' containers wait for the ceiling's shares.

A scenario's counts run from its first upload until its jobs ended and every follow-up (the scheduled
check, the stream records) was handled. Calls by the local runtime's pollers outside an invocation stand for
what Lambda's event source mappings do and are reported apart (``event_source``): their number locally
says nothing about AWS (long polls), so the cost model counts them per message instead.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from typing import Any

from harness import Recorder
from overhead import JobDriver
from report import FACES_DIR, say

RATES = {1: 20, 5: 40, 50: 100}
"""Offered jobs per second: number of jobs offered at that rate."""

PROCESSING_SECONDS = 0.3
"""How long the emulator's tasks take here (any real provider takes longer)."""

DDB_WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"})
DDB_READS = frozenset({"GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems"})
S3_UPLOADS = frozenset({"PutObject", "CompleteMultipartUpload", "CopyObject"})
S3_PUT_CLASS = frozenset(
    {"PutObject", "CopyObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "ListObjectsV2"}
)
"""S3 requests billed at the PUT/COPY/POST/LIST rate; others (GET, HEAD…) at the GET rate; deletes and aborts
are free."""
S3_FREE = frozenset({"DeleteObject", "AbortMultipartUpload"})


def item_bytes(item: dict[str, Any]) -> int:
    """Approximate DynamoDB size of an item in attribute-value form (names + values, per AWS's sizing rules).

    Strings and binaries count their bytes, numbers about one byte per two digits plus one, booleans and nulls
    one byte, maps and lists three bytes plus one per element plus their contents.
    """

    def value(v: dict[str, Any]) -> int:
        ((kind, content),) = v.items()
        if kind == "S":
            return len(content.encode("utf-8"))
        if kind == "B":
            return len(content)
        if kind == "N":
            return math.ceil(len(content.lstrip("-").replace(".", "")) / 2) + 1
        if kind in ("BOOL", "NULL"):
            return 1
        if kind == "M":
            return 3 + sum(len(k.encode("utf-8")) + value(x) + 1 for k, x in content.items())
        if kind == "L":
            return 3 + sum(value(x) + 1 for x in content)
        if kind in ("SS", "NS", "BS"):
            return sum(len(str(x)) for x in content)
        raise ValueError(f"unknown DynamoDB type {kind}")

    return sum(len(name.encode("utf-8")) + value(v) for name, v in item.items())


def summarise_counts(
    aws_calls: Counter[tuple[str, str, str]], http_calls: Counter[tuple[str, str, str]], jobs: int
) -> dict[str, Any]:
    """Per-job counts: totals by kind, and every operation by function (event-source calls kept apart)."""
    by_function: dict[str, dict[str, float]] = {}
    event_source: dict[str, float] = {}
    totals: Counter[str] = Counter()
    for (origin, service, label), n in sorted(aws_calls.items()):
        per_job = n / jobs
        operation, _, table = label.partition(":")
        label = f"{operation}:{table}" if table else operation
        operation_key = f"{service}.{label}"
        if origin.startswith("event-source:"):
            event_source[operation_key] = event_source.get(operation_key, 0) + per_job
            continue
        by_function.setdefault(origin, {})[operation_key] = per_job
        totals["aws_requests"] += per_job
        totals[f"{service}_requests"] += per_job
        if service == "dynamodb":
            totals["dynamodb_writes"] += per_job if operation in DDB_WRITES else 0
            totals["dynamodb_reads"] += per_job if operation in DDB_READS else 0
            if table == "JobsTable":
                totals["dynamodb_jobs_table_writes"] += per_job if operation in DDB_WRITES else 0
        if service == "s3":
            totals["s3_uploads"] += per_job if operation in S3_UPLOADS else 0
            if operation in S3_PUT_CLASS:
                totals["s3_put_class_requests"] += per_job
            elif operation not in S3_FREE:
                totals["s3_get_class_requests"] += per_job
        if service == "events" and operation == "PutEvents":
            totals["eventbridge_events"] += per_job
    provider: dict[str, dict[str, float]] = {}
    for (origin, name, kind), n in sorted(http_calls.items()):
        provider.setdefault(origin, {})[f"{name}.{kind}"] = n / jobs
        totals[f"provider_{kind}s"] += n / jobs
    return {
        "totals": {k: round(v, 3) for k, v in sorted(totals.items())},
        "by_function": {f: {k: round(v, 3) for k, v in ops.items()} for f, ops in by_function.items()},
        "provider_http_by_function": provider,
        "event_source": {k: round(v, 3) for k, v in event_source.items()},
    }


def _run_scenario(driver: JobDriver, name: str, jobs: int, upload: Any, *, webhook: str) -> dict[str, Any]:
    """Run one scenario's jobs one at a time and count what they caused (see the module docstring)."""
    from faceswap_local.emulators.piapi import Faults

    stack, recorder = driver.stack, driver.recorder
    stack.piapi.faults = Faults(processing_seconds=PROCESSING_SECONDS, webhook=webhook)
    recorder.wait_quiet(1.5)
    creates_before = stack.piapi.create_calls
    tasks_before = set(stack.piapi.tasks)
    recorder.reset_counts()
    started = time.perf_counter()
    job_ids = [driver.wait([upload(i)])[0] for i in range(jobs)]
    # Every job's scheduled check must have run (checks are batched: count records, not invocations).
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        checks = sum(i.records for i in recorder.invocations_between(started, time.perf_counter(), "PollerFunction"))
        if checks >= jobs:
            break
        time.sleep(0.1)
    recorder.wait_quiet(1.0)
    rows = driver.rows(job_ids)
    counts = summarise_counts(recorder.aws_calls, recorder.http_calls, jobs)
    new_tasks = [t for task_id, t in stack.piapi.tasks.items() if task_id not in tasks_before]
    counts["emulator"] = {
        "piapi_creates_per_job": (stack.piapi.create_calls - creates_before) / jobs,
        "piapi_gets_per_job": sum(t.gets for t in new_tasks) / jobs,
    }
    counts["log_bytes_per_job"] = {
        origin: round(n / jobs) for origin, n in recorder.log_bytes.items() if not origin.startswith("event-source")
    }
    counts["states"] = sorted({row["state"] for row in rows.values()})
    counts["item_bytes"] = max(item_bytes(row["item"]) for row in rows.values())
    counts["result_bytes"] = max(
        int(row["item"].get("result", {}).get("M", {}).get("size", {}).get("N", 0)) for row in rows.values()
    )
    invocations = recorder.invocations_between(started, time.perf_counter())
    counts["records_per_job"] = {
        fn: round(sum(i.records or 1 for i in invocations if i.function == fn) / jobs, 2)
        for fn in sorted({i.function for i in invocations})
    }
    say(f"  {name}: states {counts['states']}, {counts['totals'].get('aws_requests', 0):g} AWS requests per job")
    return counts


def _run_rate(driver: JobDriver, rate: int, jobs: int, upload: Any) -> dict[str, Any]:
    """Offer ``jobs`` uploads at ``rate`` per second; count the DynamoDB writes per job, the busiest second at PiAPI."""
    from faceswap_local.emulators.piapi import Faults

    stack, recorder = driver.stack, driver.recorder
    stack.piapi.faults = Faults(processing_seconds=PROCESSING_SECONDS, webhook="normal")
    recorder.wait_quiet(1.5)
    recorder.reset_counts()
    started, wall = time.perf_counter(), time.time()
    uploaded = []
    for i in range(jobs):
        time.sleep(max(0.0, started + i / rate - time.perf_counter()))
        uploaded.append(upload(i))
    job_ids = driver.wait(uploaded, timeout=600)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # every job's scheduled check has run
        checks = sum(i.records for i in recorder.invocations_between(started, time.perf_counter(), "PollerFunction"))
        if checks >= jobs:
            break
        time.sleep(0.2)
    recorder.wait_quiet(1.0)
    elapsed = time.perf_counter() - started
    counts = summarise_counts(recorder.aws_calls, recorder.http_calls, jobs)
    writes = sum(
        n
        for (origin, service, label), n in recorder.aws_calls.items()
        if service == "dynamodb" and not origin.startswith("event-source:") and label.partition(":")[0] in DDB_WRITES
    )
    ceiling = sum(
        n
        for (origin, service, label), n in recorder.aws_calls.items()
        if service == "dynamodb" and label.endswith(":RateLimitTable") and label.partition(":")[0] in DDB_WRITES
    )
    times = sorted(t for t in stack.piapi.request_times if t >= wall)
    busiest = max((sum(1 for t in times[i:] if t < start + 1.0) for i, start in enumerate(times)), default=0)
    states = sorted({row["state"] for row in driver.rows(job_ids).values()})
    say(
        f"  {rate} jobs/s offered: {jobs} jobs {states} in {elapsed:.0f} s, {writes / jobs:.2f} DynamoDB writes per job"
        f" ({ceiling / jobs:.2f} for the ceiling), busiest second at PiAPI {busiest}"
    )
    return {
        "jobs": jobs,
        "seconds": round(elapsed, 1),
        "states": states,
        "dynamodb_writes_per_job": round(writes / jobs, 3),
        "ceiling_writes_per_job": round(ceiling / jobs, 3),
        "busiest_second": busiest,
        "piapi_requests": len(times),
        "by_function": counts["by_function"],
    }


def measure_requests(stack: Any, recorder: Recorder, jobs: int = 3) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run benchmark 4's scenarios; returns the figures and the detailed counts per scenario."""
    driver = JobDriver(stack, recorder)
    face = (FACES_DIR / "obama.jpg").read_bytes()
    target = (FACES_DIR / "biden.jpg").read_bytes()
    driver.s3.put_object(Bucket=driver.input_bucket, Key="faces/count.jpg", Body=face)
    driver.s3.put_object(Bucket=driver.input_bucket, Key="photos/count-target.jpg", Body=target)
    stamp = int(time.time())

    def face_library(i: int, scenario: str = "warm") -> tuple[str, ...]:
        return driver.upload(f"incoming/count/{scenario}-{stamp}-{i}.jpg", target)[0]

    def manifest(i: int, scenario: str = "warm") -> tuple[str, ...]:
        body = {
            "target_image": {"s3_key": "photos/count-target.jpg"},
            "swap_image": {"s3_key": "faces/count.jpg"},
            "provider": "selfhosted",
        }
        return driver.upload(f"jobs/count-{scenario}-{stamp}-{i}.json", json.dumps(body).encode())[0]

    # A first job of each provider warms up (the engine loads its models, secrets are read); not counted.
    driver.wait([manifest(-1), face_library(-1)])
    details = {
        "piapi_webhook": _run_scenario(
            driver, "piapi_webhook", jobs, lambda i: face_library(i, "piapi-webhook"), webhook="normal"
        ),
        "selfhosted_webhook": _run_scenario(
            driver, "selfhosted_webhook", jobs, lambda i: manifest(i, "selfhosted-webhook"), webhook="normal"
        ),
        "piapi_polling": _run_scenario(
            driver, "piapi_polling", jobs, lambda i: face_library(i, "piapi-polling"), webhook="none"
        ),
    }
    rates = {
        rate: _run_rate(driver, rate, jobs_at, lambda i, r=rate: face_library(i, f"rate-{r}"))
        for rate, jobs_at in RATES.items()
    }
    figures: dict[str, Any] = {}
    for rate, found in rates.items():
        prefix = f"ceiling_{rate}_per_second"
        figures[f"{prefix}_dynamodb_writes_per_job"] = found["dynamodb_writes_per_job"]
        figures[f"{prefix}_ceiling_writes_per_job"] = found["ceiling_writes_per_job"]
        figures[f"{prefix}_busiest_second_at_provider"] = found["busiest_second"]
        details[f"ceiling_{rate}_per_second"] = found
    for scenario, counts in details.items():
        if scenario.startswith("ceiling_"):
            continue
        totals = counts["totals"]
        prefix = f"requests_{scenario}"
        figures[f"{prefix}_dynamodb_writes_per_job"] = totals.get("dynamodb_writes", 0.0)
        figures[f"{prefix}_dynamodb_jobs_table_writes_per_job"] = totals.get("dynamodb_jobs_table_writes", 0.0)
        figures[f"{prefix}_dynamodb_reads_per_job"] = totals.get("dynamodb_reads", 0.0)
        figures[f"{prefix}_s3_uploads_per_job"] = totals.get("s3_uploads", 0.0)
        figures[f"{prefix}_s3_requests_per_job"] = totals.get("s3_requests", 0.0)
        figures[f"{prefix}_sqs_requests_per_job"] = totals.get("sqs_requests", 0.0)
        figures[f"{prefix}_eventbridge_events_per_job"] = totals.get("eventbridge_events", 0.0)
        figures[f"{prefix}_secretsmanager_requests_per_job"] = totals.get("secretsmanager_requests", 0.0)
        figures[f"{prefix}_aws_requests_per_job"] = totals.get("aws_requests", 0.0)
        figures[f"{prefix}_provider_creates_per_job"] = totals.get("provider_creates", 0.0)
        figures[f"{prefix}_provider_reads_per_job"] = totals.get("provider_reads", 0.0)
        figures[f"{prefix}_result_downloads_per_job"] = totals.get("provider_result_downloads", 0.0)
        figures[f"{prefix}_by_operation"] = counts["by_function"]
    return figures, details
