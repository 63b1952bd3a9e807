"""``make bench``: what the pipeline costs in time, memory and money on top of the provider, on the local stack.

Usage::

    .venv/bin/python bench/run.py [--quick] [--out bench/results.json] [--only overhead,requests,...]

Runs the benchmarks described in ``bench/README.md``, prints every figure with its target and whether it is
met, and writes ``results.json`` (one key per figure, units in the key names, plus ``machine``, ``targets``,
``prices`` and ``details``). Unmet targets are reported, not failed: the exit status is non-zero only when a
benchmark could not run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import REPO, Target, at_least, at_most, below, exactly, judge, machine, say, table

PARTS = ("overhead", "requests", "memory", "sizes", "cold", "cost", "engine", "quality", "video")
MEMORY_SIZES_MIB = (10, 50, 200)
RESULT_MEMORY_CAP_MIB = 32
PART_MIB = 8
VIDEO_COPY_MEMORY_CAP_MIB = 72
"""A video result is kept with six 8 MiB parts in flight and one more being read: at most 56 MiB, plus the threads."""
LAMBDA_UNZIPPED_LIMIT_MIB = 250
IMPORT_TARGET_MS = 300
OVERHEAD_COST_TARGET_USD = 15
"""The pipeline's own cost per million jobs (issue 17): storage of results and data sent to the provider apart."""
LOG_FILE = REPO / ".local" / "logs" / "bench.log"

TARGETS: list[tuple[str, Target]] = [
    (r"memory_peak_rss_increase_mib_at_\d+mib", at_most(RESULT_MEMORY_CAP_MIB, "MiB")),
    (r"memory_peak_rss_increase_spread_mib", at_most(PART_MIB, "MiB (flat)")),
    (r"memory_throughput_ratio_pipeline_over_boto3_at_\d+mib", at_least(0.8)),
    (r"cold_start_\w+_import(_with_pyc)?_ms", below(IMPORT_TARGET_MS, "ms")),
    (r"cold_start_\w+_unused_imports_count", exactly(0)),
    (r"requests_\w+_webhook_dynamodb_writes_per_job", at_most(3)),
    (r"ceiling_\d+_per_second_dynamodb_writes_per_job", at_most(3)),
    (r"ceiling_\d+_per_second_busiest_second_at_provider", at_most(5)),
    (r"requests_\w+_webhook_s3_uploads_per_job", exactly(1)),
    (r"requests_\w+_webhook_provider_creates_per_job", exactly(1)),
    (r"requests_\w+_webhook_provider_reads_per_job", at_most(1)),
    (r"package_\w+_unzipped_mib", below(LAMBDA_UNZIPPED_LIMIT_MIB, "MiB (Lambda limit)")),
    (r"engine_swap_seconds_\w+", below(1.0, "s (one core)")),
    (r"quality_\w+_identity_margin", at_least(0.1)),
    (r"quality_\w+_occluder_pixels", exactly(0)),
    (r"video_copy_throughput_ratio_over_boto3_at_\d+mib", at_least(0.8)),
    (r"video_copy_peak_rss_increase_mib_at_\d+mib", at_most(VIDEO_COPY_MEMORY_CAP_MIB, "MiB")),
    (r"video_copy_peak_rss_increase_spread_mib", at_most(PART_MIB, "MiB (flat)")),
    (r"cost_per_million_jobs_usd_overhead", below(OVERHEAD_COST_TARGET_USD, "USD per million jobs")),
]
"""Targets by figure-name pattern (the issue's, plus Lambda's hard limit on unzipped code + layers)."""


def targets_for(figures: dict[str, Any]) -> dict[str, Target]:
    """The target of every figure a pattern of :data:`TARGETS` names."""
    found: dict[str, Target] = {}
    for key in figures:
        for pattern, target in TARGETS:
            if re.fullmatch(pattern, key):
                found[key] = target
                break
    return found


def memory_size_mb() -> int:
    """The functions' ``MemorySize`` from ``template.yaml`` (Globals), as Lambda bills it."""
    from faceswap_local.template import load_template

    template = load_template(REPO / "template.yaml")
    return int(template.get("Globals", {}).get("Function", {}).get("MemorySize", 128))


POLL_DELAYS = json.dumps({"piapi": [1, 1.5, 4], "selfhosted": [1, 1.5, 4]})
"""Checks 1 s after submit (the local stack's default is 2 s; AWS's 30 s), so the webhook-lost case is quick."""

NO_CEILINGS = json.dumps({})
"""``ProviderRateLimits`` for benchmark 1: no per-provider call ceilings, so it measures the pipeline rather
than the configured ceiling (200 jobs at PiAPI's default 5 calls/s would take 80 s whatever the code does).
Benchmark 4 runs with the template's defaults, so the ceilings' own requests are counted."""


def in_worker(part: str, jobs: int, figures: dict[str, Any], details: dict[str, Any]) -> None:
    """Run a local-stack benchmark in a fresh process (``run.py --worker <part>``) and merge what it found.

    One local stack per process: the handlers' module-level state (Powertools' logger stream, the cached
    Secrets Manager client and its endpoint) belongs to the first stack a process starts.
    """
    import subprocess

    with tempfile.TemporaryDirectory() as workdir:
        out = Path(workdir) / f"{part}.json"
        done = subprocess.run(
            [sys.executable, str(Path(__file__)), "--worker", part, "--jobs", str(jobs), "--out", str(out)],
            check=False,
        )
        if done.returncode != 0 or not out.exists():
            raise RuntimeError(f"the {part} worker failed ({done.returncode}); see its output above")
        found = json.loads(out.read_text())
    if found.get("error"):
        raise RuntimeError(found["error"])
    figures.update(found["figures"])
    details.update(found["details"])


def overhead_part(jobs: int, figures: dict[str, Any], details: dict[str, Any]) -> None:
    """Benchmark 1 on its own instrumented local stack (PiAPI default provider, no call ceilings)."""
    from harness import Recorder, instrumented_stack
    from overhead import bench_inputs, fixed_swap, measure_overhead

    recorder = Recorder()
    with instrumented_stack(
        recorder,
        log_file=LOG_FILE,
        swap_fn=fixed_swap(bench_inputs().result),
        parameters={"DefaultProvider": "piapi", "ProviderRateLimits": NO_CEILINGS},
        config={"POLL_DELAYS": POLL_DELAYS},
    ) as stack:
        found, internals = measure_overhead(stack, recorder, jobs)
    figures.update(found)
    details["overhead"] = internals


def requests_part(figures: dict[str, Any], details: dict[str, Any]) -> None:
    """Benchmark 4 on its own instrumented local stack (PiAPI default provider, the template's defaults)."""
    from aws_requests import measure_requests
    from harness import Recorder, instrumented_stack
    from overhead import bench_inputs, fixed_swap

    recorder = Recorder()
    with instrumented_stack(
        recorder,
        log_file=LOG_FILE.with_name("bench-requests.log"),
        swap_fn=fixed_swap(bench_inputs().result),
        parameters={"DefaultProvider": "piapi"},
        config={"POLL_DELAYS": POLL_DELAYS},
    ) as stack:
        found, counts = measure_requests(stack, recorder)
    figures.update(found)
    details["requests"] = counts


def run_cost(figures: dict[str, Any], details: dict[str, Any]) -> None:
    """Benchmark 5 from benchmarks 1 and 4 (see ``cost.py``'s docstring for the model)."""
    from cost import REGION, cost_per_million_jobs, fixed_monthly, provider_request_bytes
    from report import FACES_DIR

    if "overhead" not in details or "requests" not in details:
        raise RuntimeError("the cost needs the overhead and requests benchmarks")
    counts = details["requests"]["piapi_webhook"]
    result_bytes = details["requests"]["selfhosted_webhook"]["result_bytes"]
    # The requests benchmark's PiAPI jobs: biden.jpg uploaded to incoming/, onto the face library's obama.jpg.
    provider_bytes = provider_request_bytes(
        (FACES_DIR / "biden.jpg").read_bytes(), (FACES_DIR / "obama.jpg").read_bytes()
    )
    memory_mb = memory_size_mb()
    per_million, quantities = cost_per_million_jobs(
        mean_ms=details["overhead"]["mean_ms"],
        memory_mb=memory_mb,
        counts=counts,
        result_bytes=result_bytes,
        item_bytes=counts["item_bytes"],
        provider_bytes=provider_bytes,
    )
    monthly, monthly_quantities = fixed_monthly(memory_mb=memory_mb)
    figures["cost_lambda_memory_mb"] = memory_mb
    figures["cost_assumed_result_bytes"] = result_bytes
    figures["cost_job_row_bytes"] = counts["item_bytes"]
    figures["cost_provider_request_bytes"] = provider_bytes
    figures["cost_region"] = REGION
    for section in ("overhead", "provider_transfer", "storage"):
        for line, usd in per_million[section].items():
            figures[f"cost_per_million_jobs_usd_{line}"] = usd
    for total, usd in per_million["totals"].items():
        figures[f"cost_per_million_jobs_usd_{total}"] = usd
    for line, usd in monthly.items():
        figures[f"cost_fixed_usd_per_month_{line}"] = usd
    details["cost_per_million_jobs_by_section"] = per_million
    details["cost_quantities_per_job"] = quantities
    details["cost_fixed_monthly_quantities"] = monthly_quantities


def run_engine(figures: dict[str, Any]) -> None:
    """Benchmark 6: ``bench/engine_speed.py``'s own function, so the figures are the same as its own."""
    import engine_speed
    from report import FACES_DIR

    with tempfile.TemporaryDirectory() as workdir:
        out = Path(workdir) / "engine.json"
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            status = engine_speed.main(["--faces-dir", str(FACES_DIR), "--json", str(out)])
        if status != 0:
            raise RuntimeError(f"engine_speed failed: {printed.getvalue()}")
        for line in printed.getvalue().splitlines():
            say(f"  {line}")
        figures.update(json.loads(out.read_text()))


def run_quality(figures: dict[str, Any]) -> None:
    """Benchmark 7: ``bench/engine_quality.py``'s own function (identity margin, seam, occluder pixels per pair)."""
    import engine_quality
    from report import FACES_DIR

    with tempfile.TemporaryDirectory() as workdir:
        out = Path(workdir) / "quality.json"
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            engine_quality.main(
                ["--faces-dir", str(FACES_DIR), "--json", str(out), "--out", str(REPO / "out" / "quality")]
            )
        for line in printed.getvalue().splitlines():
            say(f"  {line}")
        for n, row in enumerate(json.loads(out.read_text()), start=1):
            for measure in ("identity_margin", "seam", "occluder_pixels"):
                if row.get(measure) is not None:
                    figures[f"quality_pair{n}_{measure}"] = row[measure]


def worker(part: str, jobs: int, out: Path) -> int:
    """``--worker``: run one local-stack benchmark in this process and write its figures and details."""
    figures: dict[str, Any] = {}
    details: dict[str, Any] = {}
    error = None
    try:
        if part == "overhead":
            overhead_part(jobs, figures, details)
        else:
            requests_part(figures, details)
    except Exception as e:
        error = f"{type(e).__name__}: {e}"
        traceback.print_exc(file=sys.stderr)
    out.write_text(json.dumps({"figures": figures, "details": details, "error": error}, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks, print the table and write the results; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer jobs and runs (a smoke test, not figures)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results.json", help="results file")
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(PARTS)}")
    parser.add_argument("--worker", choices=("overhead", "requests"), help=argparse.SUPPRESS)
    parser.add_argument("--jobs", type=int, default=200, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.jobs, args.out)
    parts = set(args.only.split(",")) if args.only else set(PARTS)
    if unknown := parts - set(PARTS):
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    jobs = 40 if args.quick else 200
    cold_runs = 3 if args.quick else 10
    repeats = 1 if args.quick else 3

    started = time.perf_counter()
    host = machine()
    say(f"bench on {host['cpu_model']} ({host['cores']} cores), Python {host['python_version']}, {host['date']}")
    if host["load_average_1m_at_start"] > 0.5:
        say(f"  note: load average {host['load_average_1m_at_start']} at start; other work skews the timings")
    figures: dict[str, Any] = {}
    details: dict[str, Any] = {}
    errors: list[str] = []

    def attempt(name: str, work: Any) -> None:
        part_started = time.perf_counter()
        try:
            work()
        except Exception as e:
            errors.append(f"{name}: {type(e).__name__}: {e}")
            say(f"  FAILED: {type(e).__name__}: {e}")
            traceback.print_exc(file=sys.stderr)
        details.setdefault("part_seconds", {})[name] = round(time.perf_counter() - part_started, 1)

    if "overhead" in parts:
        say(f"1. overhead per job (functions' logs: {LOG_FILE.relative_to(REPO)})")
        attempt("overhead", lambda: in_worker("overhead", jobs, figures, details))
    if "requests" in parts:
        say("4. AWS requests per job")
        attempt("requests", lambda: in_worker("requests", jobs, figures, details))
    if "memory" in parts:
        say("2. memory per result")
        from result_memory import measure_result_memory

        def memory() -> None:
            found, raw = measure_result_memory(MEMORY_SIZES_MIB, repeats)
            figures.update(found)
            details["memory"] = raw

        attempt("memory", memory)
    layer_entries: list[str] | None = None
    layer_pyc = False
    if "sizes" in parts:
        say("3. package sizes (sam build)")
        from cold_start import measure_package_sizes

        def sizes() -> None:
            nonlocal layer_entries, layer_pyc
            found, contents = measure_package_sizes()
            figures.update(found)
            details["package"] = contents
            layer_entries = contents["layer_entries"]
            layer_pyc = contents["layer_ships_pyc"]

        attempt("sizes", sizes)
    if "cold" in parts:
        say(f"3. cold start ({cold_runs} fresh processes per function and variant)")
        from cold_start import measure_cold_starts

        def cold() -> None:
            if layer_entries is None:
                # A figure measured on the wrong layout is an error, not a figure: the development environment holds
                # packages the layer does not ship, which change what gets imported.
                raise RuntimeError(
                    "cold start is measured on the layer sam build makes, and the size step (which builds it) did "
                    "not run or failed: run make bench (or --only sizes,cold)"
                )
            found, reports = measure_cold_starts(cold_runs, layer_entries, layer_pyc=layer_pyc)
            figures.update(found)
            details["cold_start"] = reports

        attempt("cold", cold)
    if "cost" in parts:
        say("5. cost per million jobs")
        attempt("cost", lambda: run_cost(figures, details))
    if "engine" in parts:
        say("6. self-hosted engine, seconds per swap")
        attempt("engine", lambda: run_engine(figures))
    if "quality" in parts:
        say("7. self-hosted engine, quality per pair (identity margin, seam, occluder pixels)")
        attempt("quality", lambda: run_quality(figures))
    if "video" in parts:
        say("8. video: result copy at 50/200/500 MiB, engine seconds per frame, a 10 s 720p clip end to end")

        def video() -> None:
            import video as video_bench

            found, raw = video_bench.measure(repeats, quick=args.quick)
            figures.update(found)
            details.update(raw)

        attempt("video", video)

    from cost import price_table

    figures["bench_runtime_seconds"] = round(time.perf_counter() - started, 1)
    host["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    figures["bench_quick"] = args.quick
    verdicts = judge(figures, targets_for(figures))
    results = {
        "machine": host,
        **figures,
        "targets": verdicts,
        "prices": price_table(),
        "errors": errors,
        "details": details,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    say("")
    say(table(figures, verdicts))
    met = sum(v["met"] for v in verdicts.values())
    say(f"\n{met} of {len(verdicts)} targets met; {len(errors)} errors; {figures['bench_runtime_seconds']:.0f} s")
    say(f"results: {args.out}")
    for error in errors:
        say(f"error: {error}")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
