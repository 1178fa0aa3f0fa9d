"""Shared result model and helpers: sections, tables, goals, medians, machine description.

Every section returns a :class:`Section`; ``report`` renders it. Figures are medians over rounds in
which the variants run interleaved (A B C, B C A, ...), so slow drifts of a shared, noisy machine
(other tenants, frequency scaling) hit every variant alike; ratios are taken between medians of the
same run, never between runs.
"""

from __future__ import annotations

import functools
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TypeVar

import originshield
from originshield.aws import AwsIpRanges

__all__ = [
    "REPO",
    "Bars",
    "Curves",
    "Goal",
    "Section",
    "Series",
    "Table",
    "callgrind_summary",
    "fmt_ns",
    "fmt_ratio",
    "interleaved",
    "load_average",
    "machine_info",
    "median",
    "package_version",
    "snapshot",
]

REPO = Path(__file__).resolve().parent.parent

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Table:
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True, slots=True)
class Goal:
    """A target from an issue, with what this run measured and whether it was met (None: not measured)."""

    issue: int
    name: str
    target: str
    measured: str
    met: bool | None


@dataclass(frozen=True, slots=True)
class Series:
    """Samples per variant for a distribution plot (box plot): e.g. ns per lookup for each round."""

    title: str
    unit: str
    samples: dict[str, list[float]]
    log: bool = False


@dataclass(frozen=True, slots=True)
class Curves:
    """Latency percentile curves per variant: variant -> [(percentile, latency)]."""

    title: str
    unit: str
    curves: dict[str, list[tuple[float, float]]]


@dataclass(frozen=True, slots=True)
class Bars:
    """Throughput per variant, one value per round: the plot shows the median and the range."""

    title: str
    unit: str
    values: dict[str, list[float]]


@dataclass(slots=True)
class Section:
    key: str
    title: str
    intro: str = ""
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    plots: list[Series | Curves | Bars] = field(default_factory=list)
    seconds: float = 0.0


@functools.cache
def snapshot() -> AwsIpRanges:
    """The embedded snapshot, parsed once per process (``originshield.load_ranges()`` takes ~0.3 s)."""
    return originshield.load_ranges()


def callgrind_summary(dump: Path) -> int:
    """The instruction count of one callgrind dump (its ``summary:`` line)."""
    for line in dump.read_text(errors="replace").splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise ValueError(f"no summary line in {dump}")


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt_ns(ns: float) -> str:
    if math.isnan(ns):  # not measured
        return "-"
    if ns >= 1_000_000:
        return f"{ns / 1_000_000:.2f} ms"
    if ns >= 10_000:
        return f"{ns / 1000:.1f} µs"
    if ns >= 1000:
        return f"{ns / 1000:.2f} µs"
    return f"{ns:.0f} ns"


def fmt_ratio(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.2f}x" if value < 100 else f"{value:.0f}x"


def interleaved(
    variants: Sequence[tuple[str, Callable[[], T]]],
    rounds: int,
) -> dict[str, list[T]]:
    """Run every variant once per round, rotating the starting variant each round."""
    results: dict[str, list[T]] = {name: [] for name, _ in variants}
    n = len(variants)
    for r in range(rounds):
        for i in range(n):
            name, fn = variants[(i + r) % n]
            results[name].append(fn())
    return results


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def machine_info() -> dict[str, str]:
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.0f} GB RAM"
    except OSError:
        pass
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{_cpu_model()}, {os.cpu_count()} cores{', ' + mem if mem else ''}",
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "executable": sys.executable,
        "commit": _git_commit(),
        "load": load_average(),
    }


def load_average() -> str:
    """The 1/5/15-minute load averages: on a shared machine, the context every figure needs."""
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "unknown"
