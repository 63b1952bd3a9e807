"""``make stress [N=500]``: N uploads at once through the local stack while the provider misbehaves.

The run (:func:`run`):

1. Starts a :class:`faceswap_local.app.LocalStack` with PiAPI as the default provider, short poll delays (the
   safety net for lost webhooks comes within seconds), a job deadline well above the run's timeout (so nothing
   may end TIMED_OUT) and a PiAPI call ceiling high enough not to be the bottleneck but still in the path.
2. Makes the PiAPI emulator inject faults at random rates from a seeded RNG (:class:`FaultRates`: failed
   creates, duplicate and lost webhooks, expired result URLs, slow answers) and the local runtime deliver every
   S3 event twice.
3. Uploads one face (``faces/stress.jpg``) and N distinct target images (variants of the shared photos) under
   ``incoming/stress/`` at once, as a user dropping a folder into the bucket; the emulator swaps with the
   self-hosted engine, so every result is a real swap.
4. Waits until every upload has a job in a terminal state (or the timeout passes, or nothing moves for
   ``stall`` seconds), then until the submit and check queues have drained.
5. Reads what happened (job rows, the emulator's tasks and faults, object versions in both buckets, queue
   depths, dead-letter queues, published events, the captured logs) and checks it with the pure functions of
   this module (unit-tested in ``tests/unit/test_stress.py``): every job terminal; one job per upload; at most
   one provider task per job; each SUCCEEDED job has exactly one result object version, whose sha256 is what
   the provider served; each failure carries a documented code and is explained by an injected fault; inputs
   unchanged; no message stuck outside a dead-letter queue and every job in one visibly failed; exactly one
   "Job Succeeded"/"Job Failed" event per job; no secret in the logs.

It prints a summary, writes its figures to ``--out`` (default ``.local/stress.json``) and exits 1 on any
violation. The functions' logs (and every other log line of the run) go to ``.local/logs/stress.log``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import hashlib
import io
import json
import logging
import os
import re
import string
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import unquote_plus

ROOT = Path(__file__).resolve().parents[2]
STATE_DIR = Path(os.environ.get("FACESWAP_LOCAL_STATE_DIR") or ROOT / ".local")
FACES = ROOT.parent / "shared" / "faces"
TERMINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT"})
FACE_ID = "stress"
"""Face id of the run: the face is ``faces/stress.jpg``, targets ``incoming/stress/tNNNN.jpg``."""
IMAGE_SIDE = 512
"""Longest side of the uploaded photos, in pixels."""
POLL_DELAYS = [2, 1.5, 6]
"""PiAPI check delays for the run (first, factor, maximum; seconds): a lost webhook is covered within seconds."""
MAX_SUBMIT_ATTEMPTS = 3
"""Failed creates after which the pipeline ends a job FAILED (``provider_unavailable``); the template's default."""

_CONSOLE: TextIO = sys.__stdout__ or sys.stderr


@dataclass(frozen=True)
class FaultRates:
    """The faults the run injects, as fractions (0-1) drawn from a seeded RNG.

    Attributes
    ----------
    create_error
        PiAPI creates answered 500 (no task created).
    webhook_duplicate
        Tasks whose webhook is delivered twice.
    webhook_lost
        Tasks whose webhook is never delivered (the poller must finish the job).
    result_expired
        Tasks whose result URL answers 404/410 (the job must end FAILED ``result_expired``).
    slow
        PiAPI API calls answered after a delay drawn from ``slow_range_seconds``.
    slow_range_seconds
        ``(shortest, longest)`` delay of a slow answer, in seconds.
    duplicate_s3_events
        Whether the local runtime delivers every S3 event twice.
    """

    create_error: float = 0.10
    webhook_duplicate: float = 0.10
    webhook_lost: float = 0.10
    result_expired: float = 0.05
    slow: float = 0.05
    slow_range_seconds: tuple[float, float] = (0.2, 1.0)
    duplicate_s3_events: bool = True


# ------------------------------------------------------------------------------------------------ records


@dataclass(frozen=True)
class Violation:
    """One broken promise: the ``check`` that found it, its ``subject`` (job id, key…) and what is wrong.

    ``detail`` never contains a secret's value (the secret check names the secret, not its value).
    """

    check: str
    subject: str
    detail: str


@dataclass(frozen=True)
class JobRecord:
    """What the jobs table says about one job (plain values)."""

    job_id: str
    target_key: str
    state: str
    error_code: str | None = None
    provider_task_id: str | None = None
    result_key: str | None = None
    result_sha256: str | None = None
    created_at: str | None = None
    finished_at: str | None = None


@dataclass(frozen=True)
class TaskRecord:
    """What the PiAPI emulator recorded about one task it created.

    ``served_sha256`` has the sha256 of each result body it served; ``result_expired`` says its result URL
    answered 404/410 (an injected fault); ``webhook_fate`` is ``normal``, ``lost`` or ``duplicate``.
    """

    task_id: str
    job_id: str | None
    served_sha256: tuple[str, ...] = ()
    result_expired: bool = False
    webhook_fate: str = "normal"
    webhook_failures: int = 0


@dataclass(frozen=True)
class ObjectVersion:
    """One version (or delete marker) of an S3 object, with the sha256 of its bytes when it was read."""

    key: str
    version_id: str
    etag: str = ""
    is_latest: bool = True
    delete_marker: bool = False
    sha256: str | None = None


@dataclass(frozen=True)
class QueueDepth:
    """A queue's approximate counts: visible, in flight (received, not deleted) and delayed messages."""

    visible: int = 0
    in_flight: int = 0
    delayed: int = 0

    @property
    def total(self) -> int:
        """All messages in the queue."""
        return self.visible + self.in_flight + self.delayed


@dataclass
class Observations:
    """Everything the run saw, as plain records for the checks.

    Attributes
    ----------
    uploads
        Every input object put by the run (targets and the face), as put.
    target_keys
        Keys of the uploaded targets (one job expected each).
    jobs
        Every row of the jobs table.
    tasks
        Every task the PiAPI emulator created.
    create_errors
        Failed creates (5xx injected) per job id.
    injected
        Faults that fired, by kind (from the emulator's and the runtime's records).
    inputs_after
        Versions and delete markers in the input bucket after the run.
    results
        Versions and delete markers under ``results/`` in the results bucket (with sha256 of each version).
    queues
        Depths of the work queues (submit, check) at the end.
    dead_letters
        Per dead-letter queue: the job id each message names (``None`` when it names none).
    events
        ``(job_id, detail-type)`` of every event the pipeline published.
    invocations
        Invocations of each function (by logical id) during the run.
    """

    uploads: list[ObjectVersion] = field(default_factory=list)
    target_keys: list[str] = field(default_factory=list)
    jobs: list[JobRecord] = field(default_factory=list)
    tasks: list[TaskRecord] = field(default_factory=list)
    create_errors: dict[str, int] = field(default_factory=dict)
    injected: dict[str, int] = field(default_factory=dict)
    inputs_after: list[ObjectVersion] = field(default_factory=list)
    results: list[ObjectVersion] = field(default_factory=list)
    queues: dict[str, QueueDepth] = field(default_factory=dict)
    dead_letters: dict[str, list[str | None]] = field(default_factory=dict)
    events: list[tuple[str, str]] = field(default_factory=list)
    invocations: dict[str, int] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------- checks


def documented_codes() -> frozenset[str]:
    """The error codes ``faceswap.errors`` documents: the ``code`` each :class:`PipelineError` subclass sets.

    Classes that only group others (``InputError``, ``ProviderError``…) set none and inherit the base's
    ``internal_error``, which is not a documented code.
    """
    from faceswap.errors import PipelineError

    codes: set[str] = set()
    pending: list[type] = list(PipelineError.__subclasses__())
    while pending:
        cls = pending.pop()
        if "code" in vars(cls):
            codes.add(str(vars(cls)["code"]))
        pending.extend(cls.__subclasses__())
    return frozenset(codes)


def check_jobs(target_keys: Collection[str], jobs: Sequence[JobRecord]) -> tuple[dict[str, JobRecord], list[Violation]]:
    """Every upload has exactly one job, and it ended.

    Returns
    -------
    tuple
        The job of each upload (by target key; the first when there are several) and the violations: ``lost``
        for an upload with no job or with a job not in a terminal state, ``duplicated`` for an upload that made
        more than one job.
    """
    by_key: dict[str, list[JobRecord]] = defaultdict(list)
    for job in jobs:
        by_key[job.target_key].append(job)
    found: dict[str, JobRecord] = {}
    violations: list[Violation] = []
    for key in target_keys:
        rows = by_key.get(key, [])
        if not rows:
            violations.append(Violation("lost", key, "the upload made no job"))
            continue
        if len(rows) > 1:
            ids = ", ".join(sorted(r.job_id for r in rows))
            violations.append(Violation("duplicated", key, f"the upload made {len(rows)} jobs: {ids}"))
        found[key] = rows[0]
        for row in rows:
            if row.state not in TERMINAL_STATES:
                violations.append(Violation("lost", row.job_id, f"job for {key} still {row.state}"))
    return found, violations


def check_tasks(jobs: Sequence[JobRecord], tasks: Sequence[TaskRecord]) -> list[Violation]:
    """No job created more than one provider task; every task belongs to a job; a result comes from its task.

    Violations: ``duplicated`` for a job with several tasks or a task of no known job; ``result`` for a
    SUCCEEDED job with no task, or whose recorded task id is not its task's.
    """
    by_job: dict[str | None, list[TaskRecord]] = defaultdict(list)
    for task in tasks:
        by_job[task.job_id].append(task)
    known = {job.job_id for job in jobs}
    violations: list[Violation] = []
    for job_id, owned in by_job.items():
        if job_id is None or job_id not in known:
            for task in owned:
                violations.append(Violation("duplicated", task.task_id, f"provider task of no known job ({job_id})"))
        elif len(owned) > 1:
            ids = ", ".join(t.task_id for t in owned)
            violations.append(Violation("duplicated", job_id, f"{len(owned)} provider tasks created: {ids}"))
    for job in jobs:
        if job.state != "SUCCEEDED":
            continue
        owned = by_job.get(job.job_id, [])
        if not owned:
            violations.append(Violation("result", job.job_id, "SUCCEEDED with no provider task"))
        elif job.provider_task_id not in {t.task_id for t in owned}:
            violations.append(Violation("result", job.job_id, f"records task {job.provider_task_id}, not its own"))
    return violations


def check_results(
    jobs: Sequence[JobRecord], tasks: Sequence[TaskRecord], results: Sequence[ObjectVersion]
) -> list[Violation]:
    """Each SUCCEEDED job has exactly one result object version, whose bytes are what the provider served.

    Parameters
    ----------
    jobs, tasks
        As recorded.
    results
        Every version and delete marker in the results bucket (``sha256`` of each version's bytes).

    Returns
    -------
    list of Violation
        ``duplicated`` for a result key with several versions or a delete marker, ``result`` for a missing
        result, a sha256 that differs from the job row's or from every body the provider served, or a result
        object that no SUCCEEDED job owns.
    """
    served: dict[str, set[str]] = defaultdict(set)
    for task in tasks:
        if task.job_id:
            served[task.job_id].update(task.served_sha256)
    by_key: dict[str, list[ObjectVersion]] = defaultdict(list)
    for version in results:
        by_key[version.key].append(version)
    owned: set[str] = set()
    violations: list[Violation] = []
    for job in jobs:
        if job.state != "SUCCEEDED":
            continue
        if not job.result_key:
            violations.append(Violation("result", job.job_id, "SUCCEEDED without a result key"))
            continue
        owned.add(job.result_key)
        versions = by_key.get(job.result_key, [])
        objects = [v for v in versions if not v.delete_marker]
        if len(versions) != len(objects):
            violations.append(Violation("result", job.job_id, f"delete marker on {job.result_key}"))
        if not objects:
            violations.append(Violation("result", job.job_id, f"no object at {job.result_key}"))
            continue
        if len(objects) > 1:
            violations.append(Violation("duplicated", job.job_id, f"{len(objects)} versions of {job.result_key}"))
        for version in objects:
            if version.sha256 != job.result_sha256:
                violations.append(
                    Violation("result", job.job_id, f"{job.result_key} sha256 differs from the job row's")
                )
            if version.sha256 not in served.get(job.job_id, set()):
                violations.append(
                    Violation("result", job.job_id, f"{job.result_key} sha256 is not what the provider served")
                )
    for key in sorted(set(by_key) - owned):
        violations.append(Violation("result", key, "result object that no SUCCEEDED job owns"))
    return violations


def check_failures(
    jobs: Sequence[JobRecord],
    tasks: Sequence[TaskRecord],
    create_errors: Mapping[str, int],
    documented: Collection[str],
    *,
    max_submit_attempts: int = MAX_SUBMIT_ATTEMPTS,
) -> list[Violation]:
    """Each failure carries a documented code and is explained by a fault the run injected.

    Expected failures: ``provider_unavailable`` after ``max_submit_attempts`` creates answered 5xx, and
    ``result_expired`` when the job's result URL answered 404/410. Anything else (another code, a failure
    with no injected cause, TIMED_OUT while the deadline is above the run's length) is a ``failure``
    violation. A lost webhook is no excuse: the poller must finish the job.
    """
    expired = {t.job_id for t in tasks if t.result_expired and t.job_id}
    violations: list[Violation] = []
    for job in jobs:
        if job.state not in TERMINAL_STATES or job.state == "SUCCEEDED":
            continue
        code = job.error_code
        if not code:
            violations.append(Violation("failure", job.job_id, f"{job.state} without an error code"))
            continue
        if code not in documented:
            violations.append(Violation("failure", job.job_id, f"{job.state} with undocumented code {code!r}"))
            continue
        if job.state == "TIMED_OUT":
            violations.append(Violation("failure", job.job_id, "TIMED_OUT although the deadline is above the run"))
        elif code == "provider_unavailable":
            failed = create_errors.get(job.job_id, 0)
            if failed < max_submit_attempts:
                violations.append(
                    Violation(
                        "failure",
                        job.job_id,
                        f"provider_unavailable after {failed} injected create errors (< {max_submit_attempts})",
                    )
                )
        elif code == "result_expired":
            if job.job_id not in expired:
                violations.append(Violation("failure", job.job_id, "result_expired but its result URL never was"))
        else:
            violations.append(Violation("failure", job.job_id, f"{code}: not explained by the injected faults"))
    return violations


def check_inputs(before: Sequence[ObjectVersion], after: Sequence[ObjectVersion]) -> list[Violation]:
    """No input object was deleted, overwritten or changed: each version put is still there, unchanged and
    latest, with no other version or delete marker on its key."""
    by_key: dict[str, list[ObjectVersion]] = defaultdict(list)
    for version in after:
        by_key[version.key].append(version)
    violations: list[Violation] = []
    for put in before:
        versions = by_key.get(put.key, [])
        same = [v for v in versions if v.version_id == put.version_id and not v.delete_marker]
        if not same:
            violations.append(Violation("input", put.key, f"version {put.version_id} deleted"))
            continue
        if same[0].etag != put.etag:
            violations.append(Violation("input", put.key, "content changed (ETag differs)"))
        if not same[0].is_latest:
            violations.append(Violation("input", put.key, "no longer the latest version (overwritten)"))
        others = [v for v in versions if v.version_id != put.version_id]
        if any(v.delete_marker for v in others):
            violations.append(Violation("input", put.key, "delete marker added"))
        elif others:
            violations.append(Violation("input", put.key, f"{len(others)} other versions written"))
    return violations


def check_queues(
    queues: Mapping[str, QueueDepth], dead_letters: Mapping[str, Sequence[str | None]], jobs: Sequence[JobRecord]
) -> list[Violation]:
    """No message left in a work queue, and every job in a dead-letter queue visibly failed.

    Parameters
    ----------
    queues
        Depths of the work queues at the end (``submit``, ``check``).
    dead_letters
        Per dead-letter queue, the job id each message names (``None``: names no job, e.g. a publisher batch).
    jobs
        The job rows.
    """
    by_id = {job.job_id: job for job in jobs}
    violations: list[Violation] = []
    for name, depth in queues.items():
        if depth.total:
            violations.append(
                Violation(
                    "queue",
                    name,
                    f"{depth.visible} visible, {depth.in_flight} in flight, {depth.delayed} delayed at the end",
                )
            )
    for name, job_ids in dead_letters.items():
        for job_id in job_ids:
            job = by_id.get(job_id) if job_id else None
            if job_id is None:
                violations.append(Violation("dead_letter", name, "a message that names no job"))
            elif job is None:
                violations.append(Violation("dead_letter", job_id, f"in {name} with no job row"))
            elif job.state not in ("FAILED", "TIMED_OUT") or not job.error_code:
                violations.append(Violation("dead_letter", job_id, f"in {name} but {job.state}, not visibly failed"))
    return violations


def check_events(jobs: Sequence[JobRecord], events: Sequence[tuple[str, str]]) -> list[Violation]:
    """Exactly one "Job Succeeded" or "Job Failed" event per ended job, matching its state."""
    published: dict[str, list[str]] = defaultdict(list)
    for job_id, detail_type in events:
        published[job_id].append(detail_type)
    violations: list[Violation] = []
    for job in jobs:
        if job.state not in TERMINAL_STATES:
            continue
        expected = "Job Succeeded" if job.state == "SUCCEEDED" else "Job Failed"
        got = published.pop(job.job_id, [])
        if got != [expected]:
            violations.append(Violation("event", job.job_id, f"{job.state}: events {got or 'none'}"))
    for job_id, got in published.items():
        violations.append(Violation("event", job_id, f"events {got} for a job not ended"))
    return violations


_HEX_RUN = re.compile(r"[0-9a-fA-F]{16,}")


def find_secrets(lines: Iterable[str], secrets: Mapping[str, str]) -> list[Violation]:
    """Lines that contain a secret's value.

    Parameters
    ----------
    lines
        The captured log lines.
    secrets
        Secret values by a label to report (``"PiapiApiKeySecret"``, ``"webhook secret of job …"``); the
        value itself is never put in a violation.

    Returns
    -------
    list of Violation
        ``secret`` violations naming the line number (from 1) and the label. Hex secrets (API keys, the
        signing key, per-job webhook secrets) are found in any case inside longer hex runs; others by substring.
    """
    hex_secrets: dict[str, str] = {}
    other: dict[str, str] = {}
    for label, value in secrets.items():
        if len(value) >= 16 and all(c in string.hexdigits for c in value):
            hex_secrets[value.lower()] = label
        elif value:
            other[value] = label
    lengths = sorted({len(v) for v in hex_secrets})
    violations: list[Violation] = []
    for number, line in enumerate(lines, start=1):
        hits: set[str] = set()
        for match in _HEX_RUN.finditer(line):
            run = match.group().lower()
            for length in lengths:
                for start in range(len(run) - length + 1):
                    found = hex_secrets.get(run[start : start + length])
                    if found:
                        hits.add(found)
        hits.update(label for value, label in other.items() if value in line)
        violations.extend(Violation("secret", f"log line {number}", f"contains {label}") for label in sorted(hits))
    return violations


def faults_by_kind(injected: Iterable[str], *, s3_event_duplicates: int = 0) -> dict[str, int]:
    """Faults that fired, counted by kind (``create_error``, ``slow_response``…, ``s3_event_duplicate``)."""
    counts = Counter(injected)
    if s3_event_duplicates:
        counts["s3_event_duplicate"] += s3_event_duplicates
    return dict(sorted(counts.items()))


def run_checks(
    observed: Observations,
    *,
    documented: Collection[str],
    log_lines: Iterable[str] = (),
    secrets: Mapping[str, str] | None = None,
) -> list[Violation]:
    """All the checks over what the run observed; see the module docstring."""
    _, violations = check_jobs(observed.target_keys, observed.jobs)
    violations += check_tasks(observed.jobs, observed.tasks)
    violations += check_results(observed.jobs, observed.tasks, observed.results)
    violations += check_failures(observed.jobs, observed.tasks, observed.create_errors, documented)
    violations += check_inputs(observed.uploads, observed.inputs_after)
    violations += check_queues(observed.queues, observed.dead_letters, observed.jobs)
    violations += check_events(observed.jobs, observed.events)
    violations += find_secrets(log_lines, secrets or {})
    return violations


def summarize(observed: Observations, violations: Sequence[Violation], *, started: float) -> dict[str, Any]:
    """The run's figures (see the module docstring): outcomes, faults, lost, duplicated, timings, violations.

    Parameters
    ----------
    observed
        What the run saw.
    violations
        What the checks found.
    started
        Epoch seconds of the first upload (throughput and latencies are measured from it).
    """
    by_key, _ = check_jobs(observed.target_keys, observed.jobs)
    ours = list(by_key.values())
    states = Counter(job.state for job in ours)
    failed = Counter(job.error_code or "none" for job in ours if job.state == "FAILED")
    lost = {v.subject for v in violations if v.check == "lost"}
    duplicated = {v.subject for v in violations if v.check == "duplicated"}
    finished = [_epoch(job.finished_at) for job in ours if job.finished_at]
    latencies = sorted(end - started for end in finished)
    span = (max(finished) - started) if finished else 0.0
    lost_webhooks = {t.job_id for t in observed.tasks if t.webhook_fate == "lost"}
    return {
        "jobs": len(observed.target_keys),
        "succeeded": states.get("SUCCEEDED", 0),
        "failed": sum(failed.values()),
        "failed_by_code": dict(sorted(failed.items())),
        "timed_out": states.get("TIMED_OUT", 0),
        "not_terminal": sum(n for s, n in states.items() if s not in TERMINAL_STATES),
        "lost": len(lost),
        "duplicated": len(duplicated),
        "faults_injected": observed.injected,
        "lost_webhook_jobs_succeeded": sum(
            1 for job in ours if job.job_id in lost_webhooks and job.state == "SUCCEEDED"
        ),
        "webhook_delivery_errors": sum(t.webhook_failures for t in observed.tasks),
        "provider_tasks": len(observed.tasks),
        "processing_seconds": round(span, 1),
        "throughput_jobs_per_second": round(len(finished) / span, 2) if span > 0 else 0.0,
        "latency_p50_seconds": round(_percentile(latencies, 50), 1),
        "latency_p95_seconds": round(_percentile(latencies, 95), 1),
        "latency_max_seconds": round(latencies[-1], 1) if latencies else 0.0,
        "queues_at_end": {name: asdict(depth) for name, depth in observed.queues.items()},
        "dead_letter_messages": {name: len(ids) for name, ids in observed.dead_letters.items()},
        "events_published": len(observed.events),
        "function_invocations": dict(sorted(observed.invocations.items())),
        "violations_by_check": dict(sorted(Counter(v.check for v in violations).items())),
        "violations": [asdict(v) for v in violations],
    }


def _percentile(values: Sequence[float], pct: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, round(pct / 100 * (len(values) - 1)))]


def _epoch(stamp: str | None) -> float:
    if not stamp:
        return 0.0
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


# --------------------------------------------------------------------------------------------------- inputs


def target_images(count: int, *, side: int = IMAGE_SIDE) -> Iterator[bytes]:
    """``count`` distinct JPEG targets: the shared portraits scaled to ``side`` px, each with its number drawn
    in a corner (so every job's input, and so its result, is different)."""
    from PIL import ImageDraw

    bases = [_scaled(FACES / name, side) for name in ("biden.jpg", "obama.jpg")]
    for number in range(count):
        image = bases[number % len(bases)].copy()
        ImageDraw.Draw(image).text((4, 4), f"#{number:05d}", fill=(255, 255, 0))
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=90)
        yield out.getvalue()


def face_image(*, side: int = IMAGE_SIDE) -> bytes:
    """The swap face: the shared Obama portrait scaled to ``side`` px, as JPEG."""
    out = io.BytesIO()
    _scaled(FACES / "obama.jpg", side).save(out, format="JPEG", quality=90)
    return out.getvalue()


def _scaled(path: Path, side: int) -> Any:
    from PIL import Image

    with Image.open(path) as opened:
        image = opened.convert("RGB")
    image.thumbnail((side, side))
    return image


# ------------------------------------------------------------------------------------------------------ run


def say(*parts: object) -> None:
    """Print to the terminal (stdout carries the functions' logs to the log file while the run lasts)."""
    print(*parts, file=_CONSOLE, flush=True)


@dataclass
class RunSettings:
    """How to run: jobs, faults, seed, timing and where to write.

    Attributes
    ----------
    jobs
        Uploads (jobs) to make.
    rates
        Faults to inject.
    seed
        Seeds the emulator's fault RNG.
    timeout
        Longest wait for every job to end, in seconds.
    stall
        Stop waiting when no job moved for this many seconds.
    calls_per_second
        The PiAPI call ceiling (``ProviderRateLimits``) for the run; 0 for none.
    swap
        ``engine`` (real swaps by the self-hosted engine) or ``placeholder`` (the face pasted on the target).
    out
        The figures' JSON file.
    log_file
        Where every log line of the run goes.
    """

    jobs: int = 500
    rates: FaultRates = field(default_factory=FaultRates)
    seed: int = 1
    timeout: float = 0.0
    stall: float = 90.0
    calls_per_second: int = 50
    swap: str = "engine"
    out: Path = STATE_DIR / "stress.json"
    log_file: Path = STATE_DIR / "logs" / "stress.log"

    def __post_init__(self) -> None:
        if not self.timeout:
            self.timeout = 120.0 + 1.0 * self.jobs


def run(settings: RunSettings) -> int:
    """Run the stress test (see the module docstring); returns the exit status (0: no violation)."""
    settings.log_file.parent.mkdir(parents=True, exist_ok=True)
    wall = time.monotonic()
    face = face_image()
    targets = list(target_images(settings.jobs))
    with settings.log_file.open("w") as log, _capture_logs(log):
        observed, secrets, started = _drive(settings, face, targets)
    log_bytes = settings.log_file.stat().st_size
    say(f"Checking ({log_bytes / 1e6:.1f} MB of logs for {len(secrets)} secrets)…")
    with settings.log_file.open(errors="replace") as log:
        violations = run_checks(observed, documented=documented_codes(), log_lines=log, secrets=secrets)
    figures = summarize(observed, violations, started=started)
    figures = {
        "jobs": figures.pop("jobs"),
        "seed": settings.seed,
        "rates": asdict(settings.rates),
        "swap": settings.swap,
        "calls_per_second_ceiling": settings.calls_per_second,
        "wall_seconds": round(time.monotonic() - wall, 1),
        **figures,
        "log_file": str(settings.log_file),
        "log_bytes": log_bytes,
        "secrets_searched": len(secrets),
    }
    settings.out.parent.mkdir(parents=True, exist_ok=True)
    settings.out.write_text(json.dumps(figures, indent=2) + "\n")
    _print_summary(figures, settings.out)
    return 1 if violations else 0


@contextlib.contextmanager
def _capture_logs(sink: TextIO) -> Iterator[None]:
    """Send stdout, stderr and every logger (root at INFO) to ``sink`` while the stack runs."""
    handler = logging.StreamHandler(sink)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _drive(settings: RunSettings, face: bytes, targets: list[bytes]) -> tuple[Observations, dict[str, str], float]:
    """Start the stack, inject the faults, upload, wait and read back; returns what was observed, the secrets
    to look for in the logs (by label) and the epoch seconds of the first upload. The stack is always stopped."""
    from faceswap.ids import webhook_secret
    from faceswap_local.app import LocalStack
    from faceswap_local.emulators.piapi import Faults, placeholder_swap
    from faceswap_local.engine_service import engine_swap

    rates = settings.rates
    ceilings = {"piapi": {"per_second": settings.calls_per_second}} if settings.calls_per_second else {}
    stack = LocalStack(
        parameters={
            "DefaultProvider": "piapi",
            "JobDeadlineSeconds": str(int(settings.timeout) + 600),
            "ProviderRateLimits": json.dumps(ceilings),
        },
        config={"POLL_DELAYS": json.dumps({"piapi": POLL_DELAYS})},
        swap_fn=engine_swap if settings.swap == "engine" else placeholder_swap,
    )
    say(f"Starting the local stack (PiAPI default provider, seed {settings.seed}, log {settings.log_file})…")
    try:
        stack.start()
        assert stack.piapi is not None and stack.runtime is not None and stack.stack is not None
        piapi, runtime = stack.piapi, stack.runtime
        piapi.faults = Faults(
            create_error_rate=rates.create_error,
            webhook_lost_rate=rates.webhook_lost,
            webhook_duplicate_rate=rates.webhook_duplicate,
            result_expired_rate=rates.result_expired,
            slow_rate=rates.slow,
            slow_range_seconds=rates.slow_range_seconds,
            seed=settings.seed,
        )
        runtime.s3_events.enabled = rates.duplicate_s3_events
        driver = _Driver(stack)
        driver.subscribe_events()
        say(f"Uploading a face and {len(targets)} targets at once…")
        started = time.time()
        uploads = driver.upload(face, targets)
        say(f"  uploaded in {time.time() - started:.1f} s; waiting for the jobs (timeout {settings.timeout:.0f} s)…")
        target_keys = [u.key for u in uploads if u.key.startswith("incoming/")]
        driver.wait_terminal(target_keys, started=started, timeout=settings.timeout, stall=settings.stall)
        driver.wait_drained(timeout=max(POLL_DELAYS) * 3 + 30)
        observed = driver.observe(uploads, target_keys)
        observed.injected = faults_by_kind(
            (i.kind for i in piapi.injected), s3_event_duplicates=runtime.s3_events.duplicated
        )
        observed.invocations = {name: pool.invocations for name, pool in runtime.functions.items()}
        observed.create_errors = dict(
            Counter(i.job_id for i in piapi.injected if i.kind == "create_error" and i.job_id)
        )
        signing_key = stack.stack.secret_values["WebhookSigningKeySecret"]
        secrets = dict(stack.stack.secret_values)
        job_ids = {job.job_id for job in observed.jobs} | {t.job_id for t in observed.tasks if t.job_id}
        for job_id in job_ids:
            secrets[f"webhook secret of job {job_id}"] = webhook_secret(signing_key.encode("utf-8"), job_id)
        for task in piapi.tasks.values():
            if task.webhook_secret:
                secrets.setdefault(f"webhook secret sent with task {task.task_id}", task.webhook_secret)
    finally:
        say("Stopping the local stack…")
        stack.stop()
    return observed, secrets, started


class _Driver:
    """Uploads, waits and reads back, against a started :class:`faceswap_local.app.LocalStack`."""

    def __init__(self, stack: Any) -> None:
        self.stack = stack
        self.info = stack.info()
        self.s3, self.ddb, self.sqs = stack.client("s3"), stack.client("dynamodb"), stack.client("sqs")
        self.events_queue_url = ""

    def subscribe_events(self) -> None:
        """A queue that receives every event the pipeline publishes on its bus."""
        events = self.stack.client("events")
        self.events_queue_url = self.sqs.create_queue(QueueName="stress-job-events")["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.events_queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        events.put_rule(
            Name="stress-job-events",
            EventBusName=self.info["event_bus"],
            EventPattern=json.dumps({"source": ["faceswap.pipeline"]}),
        )
        events.put_targets(
            Rule="stress-job-events", EventBusName=self.info["event_bus"], Targets=[{"Id": "stress", "Arn": arn}]
        )

    def upload(self, face: bytes, targets: list[bytes]) -> list[ObjectVersion]:
        """Put the face, then every target at once (8 at a time, like ``aws s3 cp --recursive``)."""
        bucket = self.info["input_bucket"]

        def put(key: str, body: bytes) -> ObjectVersion:
            response = self.s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="image/jpeg")
            return ObjectVersion(key, response.get("VersionId") or "null", response["ETag"].strip('"'))

        uploads = [put(f"faces/{FACE_ID}.jpg", face)]
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            futures = [pool.submit(put, f"incoming/{FACE_ID}/t{i:04d}.jpg", body) for i, body in enumerate(targets)]
            uploads.extend(f.result() for f in futures)
        return uploads

    def scan_jobs(self) -> list[JobRecord]:
        """Every job row, read with strong consistency."""
        from faceswap.aws.dynamodb import job_from_item

        records = []
        for page in self.ddb.get_paginator("scan").paginate(TableName=self.info["jobs_table"], ConsistentRead=True):
            for item in page["Items"]:
                job = job_from_item(item)
                result = job.result or {}
                records.append(
                    JobRecord(
                        job_id=job.job_id,
                        target_key=job.target_image.key or "",
                        state=str(job.state),
                        error_code=(job.error or {}).get("code"),
                        provider_task_id=job.provider_task_id,
                        result_key=result.get("key") or job.result_key,
                        result_sha256=result.get("sha256"),
                        created_at=job.created_at,
                        finished_at=job.finished_at,
                    )
                )
        return records

    def wait_terminal(self, target_keys: list[str], *, started: float, timeout: float, stall: float) -> None:
        """Wait until every upload has an ended job, printing progress; give up after ``timeout`` s in all or
        ``stall`` s without any change."""
        wanted = set(target_keys)
        last_change, last_counts = time.monotonic(), ""
        deadline = time.monotonic() + timeout
        while True:
            jobs = [job for job in self.scan_jobs() if job.target_key in wanted]
            states = Counter(job.state for job in jobs)
            ended = sum(n for s, n in states.items() if s in TERMINAL_STATES)
            counts = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
            missing = len(wanted) - len({job.target_key for job in jobs})
            if counts != last_counts:
                say(f"  [{time.time() - started:6.1f} s] {counts}" + (f", {missing} no job yet" if missing else ""))
                last_change, last_counts = time.monotonic(), counts
            if ended >= len(wanted) and not missing:
                return
            if time.monotonic() > deadline:
                say(f"  gave up after {timeout:.0f} s: {len(wanted) - ended} jobs not ended")
                return
            if time.monotonic() - last_change > stall:
                say(f"  gave up: nothing moved for {stall:.0f} s; {len(wanted) - ended} jobs not ended")
                return
            time.sleep(2.0)

    def queue_depth(self, url: str) -> QueueDepth:
        """The queue's approximate counts."""
        names = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ]
        attributes = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
        visible, in_flight, delayed = (int(attributes.get(name, 0)) for name in names)
        return QueueDepth(visible, in_flight, delayed)

    def work_queues(self) -> dict[str, QueueDepth]:
        """Depths of the submit and check queues."""
        return {
            "submit": self.queue_depth(self.info["submit_queue_url"]),
            "check": self.queue_depth(self.info["check_queue_url"]),
        }

    def wait_drained(self, *, timeout: float) -> None:
        """Wait until the submit and check queues are empty (scheduled checks of ended jobs, copies of S3
        events), up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not any(depth.total for depth in self.work_queues().values()):
                say("  submit and check queues drained")
                return
            time.sleep(1.0)
        say(f"  queues not drained after {timeout:.0f} s")

    def observe(self, uploads: list[ObjectVersion], target_keys: list[str]) -> Observations:
        """Read back everything the checks need (the stack still running)."""
        piapi = self.stack.piapi
        with piapi._lock:
            tasks = [
                TaskRecord(
                    task_id=t.task_id,
                    job_id=t.job_id,
                    served_sha256=tuple(t.served_sha256),
                    result_expired=t.expired_answers > 0,
                    webhook_fate=t.webhook_fate,
                    webhook_failures=t.webhook_failures,
                )
                for t in piapi.tasks.values()
            ]
        jobs = self.scan_jobs()
        by_key = {job.target_key: job.job_id for job in jobs}
        return Observations(
            uploads=uploads,
            target_keys=target_keys,
            jobs=jobs,
            tasks=tasks,
            inputs_after=self.versions(self.info["input_bucket"]),
            results=self.versions(self.info["results_bucket"], prefix="results/", read=True),
            queues=self.work_queues(),
            dead_letters={
                "submit_dlq": [
                    by_key.get(key)
                    for body in self.drain(self.info["submit_dead_letter_queue_url"])
                    for key in _s3_keys(body) or [""]
                ],
                "check_dlq": [
                    _json_field(body, "job_id") for body in self.drain(self.info["check_dead_letter_queue_url"])
                ],
                "publisher_dlq": [None for _ in self.drain(self.info["publisher_dead_letter_queue_url"])],
            },
            events=self.published_events(expected=sum(1 for j in jobs if j.state in TERMINAL_STATES)),
        )

    def versions(self, bucket: str, *, prefix: str = "", read: bool = False) -> list[ObjectVersion]:
        """Every version and delete marker in ``bucket`` under ``prefix`` (with sha256 of each when ``read``)."""
        found: list[ObjectVersion] = []
        for page in self.s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
            for v in page.get("Versions", []):
                found.append(ObjectVersion(v["Key"], v["VersionId"], v["ETag"].strip('"'), v["IsLatest"]))
            for m in page.get("DeleteMarkers", []):
                found.append(ObjectVersion(m["Key"], m["VersionId"], "", m["IsLatest"], delete_marker=True))
        if not read:
            return found

        def digest(version: ObjectVersion) -> ObjectVersion:
            if version.delete_marker:
                return version
            body = self.s3.get_object(Bucket=bucket, Key=version.key, VersionId=version.version_id)["Body"].read()
            return ObjectVersion(**{**asdict(version), "sha256": hashlib.sha256(body).hexdigest()})

        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            return list(pool.map(digest, found))

    def drain(self, url: str) -> list[str]:
        """Every message body in a queue (received and hidden; dead-letter queues only)."""
        bodies: list[str] = []
        while True:
            messages = self.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=900
            ).get("Messages", [])
            if not messages:
                return bodies
            bodies.extend(m["Body"] for m in messages)

    def published_events(self, *, expected: int, wait: float = 15.0) -> list[tuple[str, str]]:
        """``(job_id, detail-type)`` of the events received, waiting up to ``wait`` s for ``expected`` of them."""
        events: list[tuple[str, str]] = []
        deadline = time.monotonic() + wait
        while True:
            messages = self.sqs.receive_message(
                QueueUrl=self.events_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            ).get("Messages", [])
            for message in messages:
                event = json.loads(message["Body"])
                events.append((str(event.get("detail", {}).get("job_id")), str(event.get("detail-type"))))
                self.sqs.delete_message(QueueUrl=self.events_queue_url, ReceiptHandle=message["ReceiptHandle"])
            if not messages and (len(events) >= expected or time.monotonic() > deadline):
                return events


def _s3_keys(body: str) -> list[str]:
    try:
        records = json.loads(body).get("Records") or []
    except (ValueError, AttributeError):
        return []
    return [unquote_plus(r["s3"]["object"]["key"]) for r in records if isinstance(r, dict) and "s3" in r]


def _json_field(body: str, name: str) -> str | None:
    try:
        value = json.loads(body).get(name)
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _print_summary(figures: dict[str, Any], out: Path) -> None:
    say("")
    say(
        f"{figures['jobs']} jobs in {figures['wall_seconds']:.0f} s wall "
        f"({figures['processing_seconds']:.0f} s from first upload to last job ended, "
        f"{figures['throughput_jobs_per_second']} jobs/s; latency p50 {figures['latency_p50_seconds']} s, "
        f"p95 {figures['latency_p95_seconds']} s)"
    )
    failed = ", ".join(f"{code} {n}" for code, n in figures["failed_by_code"].items()) or "none"
    say(
        f"  outcomes: {figures['succeeded']} SUCCEEDED, {figures['failed']} FAILED ({failed}), "
        f"{figures['timed_out']} TIMED_OUT, {figures['not_terminal']} not ended"
    )
    faults = ", ".join(f"{kind} {n}" for kind, n in figures["faults_injected"].items()) or "none"
    say(f"  faults injected: {faults}")
    say(
        f"  lost webhooks finished by the poller: {figures['lost_webhook_jobs_succeeded']}; "
        f"webhook deliveries that failed: {figures['webhook_delivery_errors']}; "
        f"provider tasks: {figures['provider_tasks']}"
    )
    dlq = ", ".join(f"{name} {n}" for name, n in figures["dead_letter_messages"].items())
    say(f"  dead-letter queues: {dlq}; events published: {figures['events_published']}")
    calls = ", ".join(f"{name.removesuffix('Function')} {n}" for name, n in figures["function_invocations"].items())
    say(f"  invocations: {calls}")
    say(f"  lost: {figures['lost']}   duplicated: {figures['duplicated']}")
    violations = figures["violations"]
    if violations:
        by_check = ", ".join(f"{check} {n}" for check, n in figures["violations_by_check"].items())
        say(f"  VIOLATIONS: {len(violations)} ({by_check})")
        for violation in violations[:20]:
            say(f"    [{violation['check']}] {violation['subject']}: {violation['detail']}")
        if len(violations) > 20:
            say(f"    … {len(violations) - 20} more in {out}")
    else:
        say("  no violations: nothing lost, nothing duplicated, inputs intact, queues empty, no secret in the logs")
    say(f"figures: {out}")


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m faceswap_local stress``."""
    defaults = FaultRates()
    parser = argparse.ArgumentParser(prog="faceswap_local stress", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500, help="uploads to make at once (default 500)")
    parser.add_argument("--out", type=Path, default=STATE_DIR / "stress.json", help="figures (JSON)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the fault RNG (default 1)")
    parser.add_argument("--timeout", type=float, default=0.0, help="longest wait for the jobs, s (120 + 1 s/job)")
    parser.add_argument("--stall", type=float, default=90.0, help="stop waiting after this long without progress")
    parser.add_argument("--create-error-rate", type=float, default=defaults.create_error)
    parser.add_argument("--webhook-duplicate-rate", type=float, default=defaults.webhook_duplicate)
    parser.add_argument("--webhook-lost-rate", type=float, default=defaults.webhook_lost)
    parser.add_argument("--result-expired-rate", type=float, default=defaults.result_expired)
    parser.add_argument("--slow-rate", type=float, default=defaults.slow, help="fraction of PiAPI calls delayed")
    parser.add_argument("--no-duplicate-s3-events", action="store_true", help="deliver each S3 event once")
    parser.add_argument("--calls-per-second", type=int, default=50, help="PiAPI call ceiling (0: none)")
    parser.add_argument("--swap", choices=("engine", "placeholder"), default="engine", help="how results are made")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    rates = FaultRates(
        create_error=args.create_error_rate,
        webhook_duplicate=args.webhook_duplicate_rate,
        webhook_lost=args.webhook_lost_rate,
        result_expired=args.result_expired_rate,
        slow=args.slow_rate,
        duplicate_s3_events=not args.no_duplicate_s3_events,
    )
    return run(
        RunSettings(
            jobs=args.jobs,
            rates=rates,
            seed=args.seed,
            timeout=args.timeout,
            stall=args.stall,
            calls_per_second=args.calls_per_second,
            swap=args.swap,
            out=args.out,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
