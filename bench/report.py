"""Shared helpers of the benchmark: paths, statistics, targets, the machine description and the final table."""

from __future__ import annotations

import math
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

REPO = Path(__file__).resolve().parents[1]
"""The repository root (where ``template.yaml`` is)."""

FACES_DIR = Path(os.environ.get("FACES_DIR") or REPO.parent / "shared" / "faces")
"""The shared photos (``obama.jpg``, ``biden.jpg``); ``FACES_DIR`` overrides, as for ``bench/engine_speed.py``."""

CONSOLE: TextIO = sys.__stdout__ or sys.stderr
"""Where the benchmark prints: while the local stack runs, ``sys.stdout`` carries the functions' logs."""


def say(message: str) -> None:
    """Print a progress line on the console (never into the functions' log stream)."""
    print(message, file=CONSOLE, flush=True)


def percentile(values: Iterable[float], pct: float) -> float:
    """The ``pct`` percentile (0-100) of ``values`` with linear interpolation between closest ranks.

    Raises ``ValueError`` for no values.
    """
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = (len(ordered) - 1) * pct / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary_ms(seconds: Iterable[float]) -> dict[str, float]:
    """``p50``, ``p95`` and ``mean`` of durations given in seconds, in milliseconds rounded to 0.1 ms."""
    values = [s * 1000 for s in seconds]
    return {
        "p50": round(percentile(values, 50), 1),
        "p95": round(percentile(values, 95), 1),
        "mean": round(statistics.fmean(values), 1),
    }


@dataclass(frozen=True)
class Target:
    """A target a figure is held to: ``text`` for people, ``check`` decides "met" from the figure's value."""

    text: str
    check: Callable[[Any], bool]


def at_most(limit: float, unit: str = "") -> Target:
    """Met when the value is at most ``limit``."""
    return Target(f"<= {limit:g}{(' ' + unit) if unit else ''}", lambda v: v is not None and v <= limit)


def below(limit: float, unit: str = "") -> Target:
    """Met when the value is strictly below ``limit``."""
    return Target(f"< {limit:g}{(' ' + unit) if unit else ''}", lambda v: v is not None and v < limit)


def at_least(limit: float, unit: str = "") -> Target:
    """Met when the value is at least ``limit``."""
    return Target(f">= {limit:g}{(' ' + unit) if unit else ''}", lambda v: v is not None and v >= limit)


def exactly(value: float, unit: str = "") -> Target:
    """Met when the value equals ``value``."""
    return Target(f"= {value:g}{(' ' + unit) if unit else ''}", lambda v: v is not None and v == value)


def judge(figures: Mapping[str, Any], targets: Mapping[str, Target]) -> dict[str, dict[str, Any]]:
    """``{figure: {"target": text, "met": bool}}`` for every figure that has a target and was measured."""
    return {
        key: {"target": target.text, "met": bool(target.check(figures[key]))}
        for key, target in targets.items()
        if key in figures
    }


def format_value(value: Any) -> str:
    """A figure's value for the table: floats to 4 significant digits, lists joined, ``None`` as "-"."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10000 else str(value)
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "none"
    return str(value)


def table(figures: Mapping[str, Any], verdicts: Mapping[str, Mapping[str, Any]]) -> str:
    """The final table: every scalar figure, its target and "met"/"NOT MET" where it has one; then the lists."""
    rows = [("figure", "value", "target", "status")]
    lists = []
    for key, value in figures.items():
        if isinstance(value, dict):
            continue
        if isinstance(value, list | tuple):
            lists.append(f"{key}:" + "".join(f"\n    {item}" for item in value) if value else f"{key}: none")
            continue
        verdict = verdicts.get(key)
        status = "" if verdict is None else ("met" if verdict["met"] else "NOT MET")
        rows.append((key, format_value(value), verdict["target"] if verdict else "", status))
    widths = [min(max(len(row[i]) for row in rows), cap) for i, cap in enumerate((64, 24, 26, 7))]
    lines = []
    for row in rows:
        cells = [
            cell if len(cell) <= width else cell[: width - 1] + "…" for cell, width in zip(row, widths, strict=True)
        ]
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join([*lines, "", *lists])


def machine() -> dict[str, Any]:
    """What the figures were measured on: CPU model and cores, memory, Python, OS, date and git commit."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_mib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_mib = int(line.split()[1]) // 1024
    except OSError:
        pass
    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_mib": memory_mib,
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_uncommitted_changes": bool(_git("status", "--porcelain")),
    }


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    except OSError:
        return ""
