"""Benchmark 1: what the pipeline adds per job, against a plain script doing the same provider work.

The PiAPI emulator answers at once (``processing_seconds = 0``) and its swap returns a fixed 64x64 PNG, so the
figures are the pipeline's own cost, not the engine's. Inputs are the shared photos scaled to 512 px (JPEG).

- **Sequential phase** (latency): one upload at a time, the next when the previous job ended. Each submit
  invocation then carries one job, so its duration is the per-job submit cost. Upload → SUCCEEDED is the
  ``put_object`` start → the job row's ``finished_at``; callback → result stored is the callback invocation
  (verify, get-task, download, store in S3, mark SUCCEEDED).
- **Burst phase** (throughput): all uploads at once, as a user dropping a folder; jobs per second is
  jobs / (last ``finished_at`` - first upload).
- A webhook can reach the callback before the submit function has stored the provider's task id (the
  emulator answers at once); the callback cannot collect then, and the job ends at the poller's first check.
  ``overhead_jobs_not_ended_by_their_callback`` counts those jobs.
- **Baseline**: a plain script, one job at a time: PiAPI create with base64 images and no webhook, poll
  get-task every 10 ms, download the result with httpx, ``put_object`` it into the moto results bucket.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from PIL import Image

from harness import Recorder
from report import FACES_DIR, percentile, say, summary_ms

BASELINE_POLL_SECONDS = 0.01
"""How often the baseline script asks PiAPI for the task (tight, so the baseline is the least work possible)."""

INPUT_SIDE = 512
"""Longest side of the benchmark's input photos, in pixels."""

JOB_TIMEOUT_SECONDS = 60.0
STALL_SECONDS = 30.0
"""A phase stops waiting when no job has ended for this long (e.g. uploads sent to the dead-letter queue)."""


@dataclass(frozen=True)
class Inputs:
    """The photos every job uses: the swap face, the target, and the fixed result the emulator returns."""

    face: bytes
    target: bytes
    result: bytes


def scaled_jpeg(path: Any, side: int) -> bytes:
    """``path`` scaled so its longest side is ``side`` px, as JPEG (quality 90)."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((side, side))
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=90)
        return out.getvalue()


def tiny_png(side: int = 64) -> bytes:
    """A ``side`` x ``side`` PNG: the emulator's result in this benchmark."""
    out = io.BytesIO()
    Image.new("RGB", (side, side), (180, 120, 90)).save(out, format="PNG")
    return out.getvalue()


def bench_inputs() -> Inputs:
    """The benchmark's inputs from the shared photos."""
    return Inputs(
        face=scaled_jpeg(FACES_DIR / "obama.jpg", INPUT_SIDE),
        target=scaled_jpeg(FACES_DIR / "biden.jpg", INPUT_SIDE),
        result=tiny_png(),
    )


def fixed_swap(result: bytes) -> Callable[[bytes, bytes, dict[str, Any]], bytes]:
    """A ``swap_fn`` for the emulator that returns ``result`` whatever the inputs."""

    def swap(target: bytes, swap_image: bytes, options: dict[str, Any]) -> bytes:
        return result

    return swap


class JobDriver:
    """Uploads inputs to the running stack and reads back the jobs they made."""

    def __init__(self, stack: Any, recorder: Recorder) -> None:
        from faceswap.ids import job_id_for

        self._job_id_for = job_id_for
        self.stack = stack
        self.recorder = recorder
        info = stack.info()
        self.input_bucket = info["input_bucket"]
        self.results_bucket = info["results_bucket"]
        self.jobs_table = info["jobs_table"]
        self.s3 = stack.client("s3")
        self.ddb = stack.client("dynamodb")

    def upload(self, key: str, body: bytes) -> tuple[tuple[str, ...], float]:
        """Put an input object; returns the ids its job may have and the wall-clock time the put started.

        A job id comes from the bucket, the key and the S3 event's version id, or its ETag when the event
        has none (moto's events carry no version id, AWS's do), so both candidates are returned.
        """
        started = time.time()
        response = self.s3.put_object(Bucket=self.input_bucket, Key=key, Body=body)
        candidates = (
            self._job_id_for("s3", self.input_bucket, key, response.get("VersionId") or ""),
            self._job_id_for("s3", self.input_bucket, key, response["ETag"].strip('"')),
        )
        return candidates, started

    def rows(self, job_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The job rows (plain values) of ``job_ids``, read with strong consistency."""
        from faceswap.aws.dynamodb import job_from_item

        rows: dict[str, dict[str, Any]] = {}
        for job_id in job_ids:
            item = self.ddb.get_item(TableName=self.jobs_table, Key={"job_id": {"S": job_id}}, ConsistentRead=True)
            if "Item" in item:
                job = job_from_item(item["Item"])
                rows[job_id] = {"state": str(job.state), "finished_at": job.finished_at, "item": item["Item"]}
        return rows

    def wait(
        self,
        jobs: list[tuple[str, ...]],
        timeout: float = JOB_TIMEOUT_SECONDS,
        *,
        stall: float | None = None,
        allow_missing: bool = False,
    ) -> list[str]:
        """Wait until the jobs (candidate ids each) ended; returns their ids (``""`` for a job that did not).

        Raises ``TimeoutError`` if some did not end (after ``timeout`` s, or ``stall`` s without progress),
        unless ``allow_missing``.
        """
        resolved, missing = self.recorder.wait_ended(jobs, timeout, stall=stall)
        if missing and not allow_missing:
            raise TimeoutError(f"{missing} of {len(jobs)} jobs did not end within {timeout:.0f} s")
        return resolved

    def dead_letters(self) -> int:
        """Messages in the submit queue's dead-letter queue (uploads the pipeline gave up on)."""
        url = self.stack.stack.refs.get("SubmitDeadLetterQueue")
        if not url:
            return 0
        attributes = self.stack.client("sqs").get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        return int(attributes.get("ApproximateNumberOfMessages", 0))


def _epoch(stamp: str | None) -> float:
    if not stamp:
        raise ValueError("job has no finished_at")
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def run_pipeline_phase(driver: JobDriver, inputs: Inputs, jobs: int, *, burst: bool, prefix: str) -> dict[str, Any]:
    """Run ``jobs`` uploads through the pipeline, one at a time or all at once; returns raw measurements."""
    recorder = driver.recorder
    started = time.perf_counter()
    uploads: list[tuple[tuple[str, ...], float]] = []
    misses = 0
    for i in range(jobs):
        candidates, at = driver.upload(f"incoming/bench/{prefix}-{i:04d}.jpg", inputs.target)
        uploads.append((candidates, at))
        if not burst:
            misses = 0 if all(driver.wait([candidates], STALL_SECONDS, allow_missing=True)) else misses + 1
            if misses == 3:
                raise TimeoutError(f"3 jobs in a row did not end within {STALL_SECONDS:.0f} s each")
    resolved = driver.wait(
        [c for c, _ in uploads], JOB_TIMEOUT_SECONDS + jobs * 1.0, stall=STALL_SECONDS, allow_missing=True
    )
    if not any(resolved):
        raise TimeoutError(f"none of {jobs} jobs ended")
    recorder.wait_quiet(0.3)
    ended = time.perf_counter()
    job_ids = [j for j in resolved if j]
    rows = driver.rows(job_ids)
    states = [row["state"] for row in rows.values()]
    latencies = [_epoch(rows[j]["finished_at"]) - at for j, (_, at) in zip(resolved, uploads, strict=True) if j]
    first_upload = min(at for _, at in uploads)
    last_finish = max(_epoch(row["finished_at"]) for row in rows.values())
    invocations = recorder.invocations_between(started, ended)
    by_callback = {j for i in invocations if i.function == "CallbackFunction" for j in i.ended_jobs}
    return {
        "jobs": jobs,
        "not_ended": jobs - len(job_ids),
        "succeeded": states.count("SUCCEEDED"),
        "latencies": latencies,
        "span_seconds": last_finish - first_upload,
        "ended_without_callback": sum(1 for j in job_ids if j not in by_callback),
        "invocations": invocations,
        "item": next(iter(rows.values()))["item"] if rows else {},
    }


def run_baseline(stack: Any, inputs: Inputs, jobs: int) -> dict[str, Any]:
    """The plain script (see the module docstring) ``jobs`` times; returns per-job seconds and the total."""
    assert stack.piapi is not None and stack.stack is not None
    url = stack.piapi.url
    headers = {"x-api-key": stack.stack.secret_values["providers/piapi"]}
    s3 = stack.client("s3")
    bucket = stack.info()["results_bucket"]
    body = {
        "model": "Qubico/image-toolkit",
        "task_type": "face-swap",
        "input": {
            "target_image": base64.b64encode(inputs.target).decode("ascii"),
            "swap_image": base64.b64encode(inputs.face).decode("ascii"),
        },
        "config": {"service_mode": "public"},
    }
    durations: list[float] = []
    gets = 0
    with httpx.Client(timeout=httpx.Timeout(20.0, connect=5.0)) as http:
        started = time.perf_counter()
        for i in range(jobs):
            t0 = time.perf_counter()
            task_id = (
                http.post(f"{url}/api/v1/task", json=body, headers=headers).raise_for_status().json()["data"]["task_id"]
            )
            while True:
                data = http.get(f"{url}/api/v1/task/{task_id}", headers=headers).raise_for_status().json()["data"]
                gets += 1
                if data["status"] == "completed":
                    break
                if data["status"] == "failed":
                    raise RuntimeError(f"baseline task failed: {data['error']}")
                time.sleep(BASELINE_POLL_SECONDS)
            result = http.get(data["output"]["image_url"]).raise_for_status().content
            s3.put_object(Bucket=bucket, Key=f"baseline/{i:04d}.png", Body=result, ContentType="image/png")
            durations.append(time.perf_counter() - t0)
        total = time.perf_counter() - started
    return {"durations": durations, "total_seconds": total, "gets_per_job": gets / jobs}


def _function_seconds(invocations: list[Any], function: str) -> list[float]:
    return [i.seconds for i in invocations if i.function == function and i.error is None]


def measure_overhead(stack: Any, recorder: Recorder, jobs: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run benchmark 1 on the running, instrumented stack.

    Returns
    -------
    tuple
        The figures (``overhead_*``, ``baseline_*``, ``ratio_*``) and internals other benchmarks reuse
        (mean durations per function, a finished job row).
    """
    inputs = bench_inputs()
    stack.piapi.faults.processing_seconds = 0
    driver = JobDriver(stack, recorder)
    driver.s3.put_object(Bucket=driver.input_bucket, Key="faces/bench.jpg", Body=inputs.face)

    say(f"  warm-up: 3 jobs; baseline: {jobs} jobs")
    run_pipeline_phase(driver, inputs, 3, burst=False, prefix="warm")
    baseline = run_baseline(stack, inputs, jobs)

    say(f"  pipeline, one job at a time: {jobs} jobs")
    seq = run_pipeline_phase(driver, inputs, jobs, burst=False, prefix="seq")
    say(f"  pipeline, burst: {jobs} jobs")
    burst = run_pipeline_phase(driver, inputs, jobs, burst=True, prefix="burst")

    submit = summary_ms(_function_seconds(seq["invocations"], "SubmitFunction"))
    callback = summary_ms(_function_seconds(seq["invocations"], "CallbackFunction"))
    poller = summary_ms(_function_seconds(seq["invocations"], "PollerFunction"))
    publisher_ended = [
        i.seconds for i in seq["invocations"] if i.function == "PublisherFunction" and i.ended_jobs and not i.error
    ]
    publisher = summary_ms(publisher_ended)
    latency = summary_ms(seq["latencies"])
    burst_latency = summary_ms(burst["latencies"])
    burst_submits = [i for i in burst["invocations"] if i.function == "SubmitFunction"]
    baseline_ms = summary_ms(baseline["durations"])
    pipeline_rate = (burst["jobs"] - burst["not_ended"]) / burst["span_seconds"]
    baseline_rate = jobs / baseline["total_seconds"]
    figures: dict[str, Any] = {
        "overhead_jobs": jobs,
        "overhead_input_target_bytes": len(inputs.target),
        "overhead_input_face_bytes": len(inputs.face),
        "overhead_jobs_succeeded_fraction": round((seq["succeeded"] + burst["succeeded"]) / (2 * jobs), 4),
        "overhead_jobs_not_ended": seq["not_ended"] + burst["not_ended"],
        "overhead_submit_dead_letters": driver.dead_letters(),
        "overhead_submit_p50_ms": submit["p50"],
        "overhead_submit_p95_ms": submit["p95"],
        "overhead_callback_to_stored_p50_ms": callback["p50"],
        "overhead_callback_to_stored_p95_ms": callback["p95"],
        "overhead_upload_to_succeeded_p50_ms": latency["p50"],
        "overhead_upload_to_succeeded_p95_ms": latency["p95"],
        "overhead_upload_to_succeeded_max_ms": round(max(seq["latencies"]) * 1000, 1),
        "overhead_jobs_not_ended_by_their_callback": seq["ended_without_callback"] + burst["ended_without_callback"],
        "overhead_poller_check_p50_ms": poller["p50"],
        "overhead_publisher_job_end_p50_ms": publisher["p50"],
        "overhead_sequential_jobs_per_second": round(jobs / sum(seq["latencies"]), 2),
        "overhead_burst_jobs_per_second": round(pipeline_rate, 2),
        "overhead_burst_upload_to_succeeded_p50_ms": burst_latency["p50"],
        "overhead_burst_upload_to_succeeded_p95_ms": burst_latency["p95"],
        "overhead_burst_submit_jobs_per_invocation_mean": round(
            sum(i.records for i in burst_submits) / max(1, len(burst_submits)), 2
        ),
        "baseline_job_p50_ms": baseline_ms["p50"],
        "baseline_job_p95_ms": baseline_ms["p95"],
        "baseline_jobs_per_second": round(baseline_rate, 2),
        "baseline_get_task_calls_per_job": round(baseline["gets_per_job"], 2),
        "ratio_latency_p50_pipeline_over_baseline": round(latency["p50"] / baseline_ms["p50"], 2),
        "ratio_throughput_pipeline_over_baseline": round(pipeline_rate / baseline_rate, 3),
    }
    internals = {
        "mean_ms": {
            "SubmitFunction": submit["mean"],
            "CallbackFunction": callback["mean"],
            "PollerFunction": poller["mean"],
            "PublisherFunction": publisher["mean"],
        },
        "item": seq["item"],
        "latency_p99_ms": round(percentile([s * 1000 for s in seq["latencies"]], 99), 1),
    }
    return figures, internals
