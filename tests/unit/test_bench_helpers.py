"""The benchmark's pure helpers: statistics, targets, DynamoDB item sizes, request tallies, import trees, cost."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from aws_requests import item_bytes, summarise_counts
from cold_start import import_report, parse_importtime
from cost import (
    HTTP_API_ACCESS_LOG_BYTES,
    LAMBDA_PLATFORM_LOG_BYTES,
    PRICES,
    SECONDS_PER_MONTH,
    cost_per_million_jobs,
    fixed_monthly,
)
from report import at_least, at_most, judge, percentile, summary_ms, table
from run import targets_for


def test_percentile_interpolates_between_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 50) == 2.5
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile([7.0], 95) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_summary_is_in_milliseconds() -> None:
    assert summary_ms([0.010, 0.020, 0.030]) == {"p50": 20.0, "p95": 29.0, "mean": 20.0}


def test_targets_are_found_by_pattern_and_judged() -> None:
    figures = {
        "memory_peak_rss_increase_mib_at_50mib": 40.0,
        "memory_throughput_ratio_pipeline_over_boto3_at_50mib": 0.9,
        "cold_start_publisher_import_ms": 250.0,
        "requests_piapi_webhook_dynamodb_writes_per_job": 3.0,
        "requests_piapi_polling_dynamodb_writes_per_job": 4.0,
        "overhead_submit_p50_ms": 12.0,
        "cost_per_million_jobs_usd_overhead": 14.99,
        "cost_per_million_jobs_usd_total": 99.0,
    }
    verdicts = judge(figures, targets_for(figures))
    assert verdicts["cost_per_million_jobs_usd_overhead"] == {"target": "< 15 USD per million jobs", "met": True}
    assert "cost_per_million_jobs_usd_total" not in verdicts  # storage and data sent to the provider have no target
    assert verdicts["memory_peak_rss_increase_mib_at_50mib"] == {"target": "<= 32 MiB", "met": False}
    assert verdicts["memory_throughput_ratio_pipeline_over_boto3_at_50mib"]["met"] is True
    assert verdicts["cold_start_publisher_import_ms"]["met"] is True
    assert verdicts["requests_piapi_webhook_dynamodb_writes_per_job"]["met"] is True
    assert "requests_piapi_polling_dynamodb_writes_per_job" not in verdicts  # targets are for webhook paths
    assert "overhead_submit_p50_ms" not in verdicts
    assert at_most(3).check(None) is False and at_least(0.8).check(0.8) is True
    printed = table(figures | {"cold_start_publisher_unused_imports": ["PIL 8 ms"]}, verdicts)
    assert "NOT MET" in printed and "    PIL 8 ms" in printed


def test_item_bytes_follows_dynamodb_sizing() -> None:
    item = {
        "job_id": {"S": "abcd"},  # 6 + 4
        "size": {"N": "12345"},  # 4 + 4
        "ok": {"BOOL": True},  # 2 + 1
        "result": {"M": {"key": {"S": "ab"}}},  # 6 + 3 + (3 + 2 + 1)
    }
    assert item_bytes(item) == 10 + 8 + 3 + 15


def test_counts_are_per_job_and_classified() -> None:
    aws = Counter(
        {
            ("SubmitFunction", "dynamodb", "PutItem:JobsTable"): 2,
            ("SubmitFunction", "dynamodb", "UpdateItem:RateLimitTable"): 2,
            ("SubmitFunction", "dynamodb", "GetItem:JobsTable"): 2,
            ("SubmitFunction", "s3", "ListObjectsV2"): 2,
            ("CallbackFunction", "s3", "PutObject"): 2,
            ("CallbackFunction", "s3", "HeadObject"): 2,
            ("event-source:sqs-SubmitFunction", "sqs", "ReceiveMessage"): 40,
        }
    )
    http = Counter({("SubmitFunction", "piapi", "create"): 2, ("CallbackFunction", "piapi", "read"): 2})
    counts = summarise_counts(aws, http, jobs=2)
    totals = counts["totals"]
    assert totals["dynamodb_writes"] == 2 and totals["dynamodb_jobs_table_writes"] == 1
    assert totals["dynamodb_reads"] == 1
    assert counts["by_function"]["SubmitFunction"]["dynamodb.UpdateItem:RateLimitTable"] == 1
    assert totals["s3_uploads"] == 1 and totals["s3_put_class_requests"] == 2 and totals["s3_get_class_requests"] == 1
    assert totals["provider_creates"] == 1 and totals["provider_reads"] == 1
    assert totals["aws_requests"] == 6
    assert counts["event_source"] == {"sqs.ReceiveMessage": 20}


IMPORTTIME = """\
import time: self [us] | cumulative | imported package
import time:       100 |        100 | site
bench: handler import starts
import time:       500 |        500 |       urllib3
import time:      2000 |       2500 |     botocore
import time:      1000 |       3500 |   boto3
import time:      3000 |       3000 |       PIL
import time:      4000 |       7000 |     PIL.Image
import time:       300 |       7300 |   faceswap.images
import time:       200 |      11000 | faceswap.jobs
import time:      6000 |       6000 |   httpcore
import time:      1000 |       7000 | httpx
"""


def test_importtime_tree_gives_chains_after_the_marker() -> None:
    entries = {e["name"]: e for e in parse_importtime(IMPORTTIME)}
    assert "site" not in entries
    assert entries["urllib3"]["chain"] == ["faceswap.jobs", "boto3", "botocore"]
    assert entries["PIL"]["chain"] == ["faceswap.jobs", "faceswap.images", "PIL.Image"]
    assert entries["httpcore"]["chain"] == ["httpx"]


def test_import_report_flags_unneeded_packages_with_their_own_dependencies() -> None:
    entries = parse_importtime(IMPORTTIME)
    requires = {"httpx": {"httpx", "httpcore"}, "PIL": {"PIL"}}
    report = import_report(entries, {"boto3", "botocore", "urllib3"}, lambda p: requires.get(p, {p}))
    unused = {u["package"]: u for u in report["unused"]}
    assert set(unused) == {"httpx", "PIL"}
    assert unused["httpx"]["with"] == ["httpcore"] and unused["httpx"]["cumulative_ms"] == 7.0
    assert unused["PIL"]["cumulative_ms"] == 7.0  # PIL.Image's subtree, which holds PIL itself
    assert unused["PIL"]["imported_by"] == "app > faceswap.jobs > faceswap.images > PIL.Image > PIL"
    assert [h["package"] for h in report["heavy"]] == ["PIL", "httpcore"]
    only_present = import_report(entries, {"boto3", "botocore", "urllib3"}, lambda p: {p}, present={"boto3", "PIL"})
    assert [u["package"] for u in only_present["unused"]] == ["PIL"]


def _cost(item_bytes: int = 1500) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    counts = {
        "totals": {
            "sqs_requests": 1.0,
            "dynamodb_writes": 5.0,
            "dynamodb_jobs_table_writes": 3.0,
            "dynamodb_reads": 3.0,
            "s3_put_class_requests": 2.0,
            "s3_get_class_requests": 3.0,
            "eventbridge_events": 1.0,
            "secretsmanager_requests": 0.667,
        },
        "log_bytes_per_job": {"SubmitFunction": 1000, "other": 5000},
    }
    return cost_per_million_jobs(
        mean_ms={"SubmitFunction": 99.2, "CallbackFunction": 50.0, "PollerFunction": 10.0, "PublisherFunction": 20.0},
        memory_mb=512,
        counts=counts,
        result_bytes=1_000_000,
        item_bytes=item_bytes,
        provider_bytes=1_000_000,
    )


def test_cost_adds_up_from_quantities_by_section() -> None:
    per_million, quantities = _cost()
    assert quantities["lambda_gb_seconds"] == pytest.approx((100 + 50 + 10 + 20) / 1000 * 0.5)
    assert quantities["sqs_requests"] == 6
    # A 1.5 KB final row: the last table write 2 units, the two before it 1 each; the index puts the row (1), then
    # deletes and puts it on each state change (1 + 1, then 1 + 2); the other table's 2 writes 1 unit each.
    assert quantities["dynamodb_jobs_table_write_units"] == 1 + 1 + 2
    assert quantities["dynamodb_state_index_write_units"] == 1 + 2 + 3
    assert quantities["dynamodb_write_units"] == 4 + 6 + 2
    assert quantities["dynamodb_read_units"] == 3
    assert quantities["log_bytes"] == 1000 + 4 * LAMBDA_PLATFORM_LOG_BYTES + HTTP_API_ACCESS_LOG_BYTES
    overhead = per_million["overhead"]
    assert overhead["s3_put_class"] == pytest.approx(10.0)
    assert overhead["dynamodb_writes"] == pytest.approx(PRICES["dynamodb_write_request_unit"].usd * 12)
    assert "secrets_manager" not in overhead  # per warm environment, not per job: fixed monthly
    assert per_million["provider_transfer"]["data_transfer_out_to_provider"] == pytest.approx(90.0)
    assert per_million["storage"]["s3_results_storage_first_month"] == pytest.approx(23.0)
    totals = per_million["totals"]
    assert totals["overhead"] == pytest.approx(sum(overhead.values()), abs=0.05)
    assert totals["total"] == pytest.approx(
        totals["overhead"] + totals["provider_transfer"] + totals["storage_first_month"], abs=0.02
    )


def test_a_job_row_under_1_kb_saves_a_table_and_an_index_unit() -> None:
    over, _ = _cost(item_bytes=1073)
    under, quantities = _cost(item_bytes=1013)
    assert quantities["dynamodb_jobs_table_write_units"] + quantities["dynamodb_state_index_write_units"] == 3 + 5
    saved = over["overhead"]["dynamodb_writes"] - under["overhead"]["dynamodb_writes"]
    assert saved == pytest.approx(2 * PRICES["dynamodb_write_request_unit"].usd, abs=0.01)


def test_fixed_monthly_costs_add_up() -> None:
    monthly, quantities = fixed_monthly(memory_mb=512)
    assert monthly["xray_reservoir"] == pytest.approx(SECONDS_PER_MONTH / 1e6 * 5, abs=0.01)  # one trace a second
    assert monthly["secrets_manager_secrets"] == pytest.approx(0.8)  # the signing key and PiAPI's key
    assert quantities["secrets_manager_calls"] == 15 * 2 * SECONDS_PER_MONTH / 300
    lines = {k: v for k, v in monthly.items() if k != "total"}
    assert monthly["total"] == pytest.approx(sum(lines.values()), abs=0.05)
