"""Rate-limited refusal log lines: a refusal flood must not become a log flood.

Every refusal is counted (:class:`~originshield.metrics.Counters`); its log line goes through a
budget per ``(route, reason)``: the first ``burst`` lines of each ``interval`` seconds are logged
in full, the rest are suppressed and counted, and one summary line gives their number before the
next full line of that ``(route, reason)`` (or at :meth:`LogLimiter.flush`, e.g. on shutdown).
So for every key, refusals counted = lines logged + lines suppressed, exactly, and the suppressed
numbers are exported with the counters (``originshield_log_lines_suppressed_total``).

Why per ``(route, reason)``: a flood of one kind (say ``secret_missing`` from a scanner) must not
hide the first lines of another (a ``edge_not_allowed`` that shows a real misconfiguration).

The budget is ``_speedups.Budget`` when the C extension is built (the C decider consults it without
entering Python), else :class:`_PyBudget`, its reference; both read ``time.monotonic()``'s clock.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Final

from .decision import logfmt
from .errors import ConfigError
from .metrics import Counters, LogKey
from .radix import SPEEDUPS

__all__ = ["DEFAULT_LOG_BURST", "DEFAULT_LOG_INTERVAL", "LogLimiter"]

#: Full refusal lines per ``(route, reason)`` and interval.
DEFAULT_LOG_BURST: Final = 10
#: Seconds.
DEFAULT_LOG_INTERVAL: Final = 60.0


class _PyBudget:
    """The pure-Python twin of ``_speedups.Budget`` (the reference for its rules)."""

    __slots__ = ("_start", "_suppressed", "_used", "burst", "interval", "pending")

    def __init__(self, burst: int, interval: float, suppressed: Any) -> None:
        if burst < 1 or not interval > 0:
            raise ValueError("Budget: burst must be >= 1 and interval > 0")
        self.burst = burst
        self.interval = interval
        self._start = -math.inf
        self._used = 0
        #: Lines suppressed since the last summary.
        self.pending = 0
        self._suppressed = suppressed

    def take(self, now: float) -> int:
        """-1: suppress this line (counted); n >= 0: log it, after a summary of n lines if n > 0."""
        summary = 0
        if now - self._start >= self.interval or now < self._start:
            summary, self.pending, self._used, self._start = self.pending, 0, 0, now
        if self._used < self.burst:
            self._used += 1
            return summary
        self.pending += 1
        self._suppressed.value += 1
        return -1

    def flush(self) -> int:
        """The lines suppressed since the last summary; the count starts again."""
        n, self.pending = self.pending, 0
        return n


_Budget: Any = getattr(SPEEDUPS, "Budget", _PyBudget)


class LogLimiter:
    """One budget per ``(route, reason)``, kept across ranges updates (engines are rebuilt, the
    budgets and their counts are not)."""

    __slots__ = ("_budgets", "burst", "counters", "interval")

    def __init__(self, counters: Counters, burst: int = DEFAULT_LOG_BURST, interval: float = DEFAULT_LOG_INTERVAL):
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ConfigError(f"log_burst: must be an integer >= 1, got {burst!r}")
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0 < interval < math.inf:
            raise ConfigError(f"log_interval: must be a positive number of seconds, got {interval!r}")
        self.counters = counters
        self.burst = burst
        self.interval = float(interval)
        self._budgets: dict[LogKey, Any] = {}

    def budget(self, key: LogKey) -> Any:
        """The budget of ``(route, reason)`` (created on first use, with its suppressed-lines cell)."""
        found = self._budgets.get(key)
        if found is None:
            found = self._budgets[key] = _Budget(self.burst, self.interval, self.counters.suppressed_cell(key))
        return found

    def flush(self, logger: logging.Logger, level: int) -> None:
        """Log the summary line of every key with suppressed lines not yet summed up."""
        for key, budget in list(self._budgets.items()):
            summary_line(logger, level, key, budget.flush(), self.interval)


def summary_line(logger: logging.Logger, level: int, key: LogKey, suppressed: int, interval: float) -> None:
    """The line that stands for ``suppressed`` refusal lines of ``key`` (nothing when 0)."""
    if suppressed > 0:
        route, reason = key
        logger.log(
            level,
            # Route names come from configuration; one with spaces ("GET /api") is quoted as in decision lines.
            "log_suppressed route=%s reason=%s suppressed=%d interval=%gs",
            logfmt(route),
            reason,
            suppressed,
            interval,
        )
