"""Decision counters, readable from Python and as Prometheus text, with no dependency.

Each ``(route, reason, action)`` key has a counter cell, created when the middleware puts an engine
in service; its C decider holds the cells of every outcome and adds to them directly (no dict
lookup, no hashing, no int object per request), and the Python path adds to the same cells. ``action``
is one of ``allowed``, ``rejected`` or ``reported`` (report-only mode: would have been rejected,
was let through).

Each ``(route, reason)`` of a refusal also has a cell counting the log lines the rate limiter
suppressed (:mod:`originshield.ratelimit`): refusals counted = lines logged + lines suppressed.

The counters are updated from the event loop thread; readers get copies (:attr:`Counters.counts`,
:meth:`Counters.snapshot`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .radix import SPEEDUPS

__all__ = ["CounterKey", "Counters", "LogKey", "Sample", "render_family"]

#: ``(route, reason, action)``: the key of a request counter.
CounterKey = tuple[str, str, str]
#: ``(route, reason)``: the key of a log-line budget.
LogKey = tuple[str, str]


class _PyCounter:
    """The pure-Python twin of ``_speedups.Counter``."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


_Counter: Any = getattr(SPEEDUPS, "Counter", _PyCounter)


class Counters:
    """Per-(route, reason, action) request counts, plus gauges registered by the middleware."""

    __slots__ = ("_gauges", "cells", "suppressed_cells")

    def __init__(self) -> None:
        #: ``(route, reason, action) -> cell`` (``cell.value`` is the count): for the middleware.
        self.cells: dict[CounterKey, Any] = {}
        #: ``(route, reason) -> cell``: log lines of refusals suppressed by the rate limiter.
        self.suppressed_cells: dict[LogKey, Any] = {}
        self._gauges: list[tuple[str, str, Callable[[], float]]] = []

    def cell(self, key: CounterKey) -> Any:
        """The counter cell of ``key`` (created at zero): ``cell.value`` is the count."""
        found = self.cells.get(key)
        if found is None:
            found = self.cells[key] = _Counter()
        return found

    def suppressed_cell(self, key: LogKey) -> Any:
        """The cell counting suppressed log lines of ``(route, reason)`` (created at zero)."""
        found = self.suppressed_cells.get(key)
        if found is None:
            found = self.suppressed_cells[key] = _Counter()
        return found

    @property
    def suppressed(self) -> dict[LogKey, int]:
        """``(route, reason) -> log lines suppressed by the rate limiter``, every key (a copy)."""
        return {k: c.value for k, c in list(self.suppressed_cells.items())}

    @property
    def counts(self) -> dict[CounterKey, int]:
        """``(route, reason, action) -> count``, every seeded key (a copy)."""
        return {k: c.value for k, c in list(self.cells.items())}

    def add_gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """A value exported with :meth:`prometheus_text` (e.g. the ranges snapshot's age)."""
        self._gauges.append((name, help_text, read))

    # -- reading -------------------------------------------------------------------------------------

    def snapshot(self) -> dict[CounterKey, int]:
        """A copy of every non-zero count."""
        return {k: v for k, v in list(self.counts.items()) if v}

    def total(self, *, route: str | None = None, reason: str | None = None, action: str | None = None) -> int:
        """Sum of the counts matching every given label."""
        return sum(
            v
            for (r, why, act), v in list(self.counts.items())
            if (route is None or r == route) and (reason is None or why == reason) and (action is None or act == action)
        )

    def allowed(self, route: str | None = None) -> int:
        return self.total(route=route, action="allowed")

    def rejected(self, route: str | None = None) -> dict[str, int]:
        """Rejections by reason (report-only "would reject" included under their reason)."""
        out: dict[str, int] = {}
        for (r, why, act), v in list(self.counts.items()):
            if v and act != "allowed" and (route is None or r == route):
                out[why] = out.get(why, 0) + v
        return out

    def by_route(self) -> dict[str, dict[str, int]]:
        """``route -> {action: count}``."""
        out: dict[str, dict[str, int]] = {}
        for (r, _why, act), v in list(self.counts.items()):
            if v:
                slot = out.setdefault(r, {})
                slot[act] = slot.get(act, 0) + v
        return out

    def prometheus_text(self, prefix: str = "originshield") -> str:
        """The Prometheus text exposition format (version 0.0.4), ready to serve as ``text/plain``."""
        lines = [
            f"# HELP {prefix}_requests_total Requests decided by originshield, by route, reason and action.",
            f"# TYPE {prefix}_requests_total counter",
        ]
        for (route, reason, action), v in sorted(self.counts.items()):
            labels = f'route="{_escape(route)}",reason="{_escape(reason)}",action="{_escape(action)}"'
            lines.append(f"{prefix}_requests_total{{{labels}}} {v}")
        lines.append(
            f"# HELP {prefix}_log_lines_suppressed_total Refusal log lines withheld by the rate limiter, "
            "by route and reason."
        )
        lines.append(f"# TYPE {prefix}_log_lines_suppressed_total counter")
        for (route, reason), v in sorted(self.suppressed.items()):
            labels = f'route="{_escape(route)}",reason="{_escape(reason)}"'
            lines.append(f"{prefix}_log_lines_suppressed_total{{{labels}}} {v}")
        for gname, help_text, read in self._gauges:
            lines.append(f"# HELP {prefix}_{gname} {help_text}")
            lines.append(f"# TYPE {prefix}_{gname} gauge")
            lines.append(f"{prefix}_{gname} {_number(read())}")
        return "\n".join(lines) + "\n"


#: One sample of a metric family: its labels and its value.
Sample = tuple[Mapping[str, str], float]


def render_family(
    name: str, kind: str, help_text: str, samples: Iterable[Sample], prefix: str = "originshield"
) -> list[str]:
    """The exposition lines of one family (``kind``: ``counter`` or ``gauge``), in the format of
    :meth:`Counters.prometheus_text`, for the series that carry labels (e.g. per policy)."""
    lines = [f"# HELP {prefix}_{name} {help_text}", f"# TYPE {prefix}_{name} {kind}"]
    for labels, value in samples:
        text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        lines.append(f"{prefix}_{name}{{{text}}} {_number(value)}" if text else f"{prefix}_{name} {_number(value)}")
    return lines


def _number(value: float) -> str:
    # Integral values in full (a syncToken is 10 digits; "%g" would round it), others as repr.
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _escape(value: str) -> str:
    # Prometheus text format: backslash, double quote and newline are escaped in label values.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
