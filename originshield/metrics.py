"""Decision counters, readable from Python and as Prometheus text, with no dependency.

The middleware increments one pre-seeded dict entry per request (``counts[key] += 1`` on a key object
computed when the routes were compiled), so counting costs one dict operation and no allocation.
Keys are ``(route, reason, action)`` with ``action`` one of ``allowed``, ``rejected`` or
``reported`` (report-only mode: would have been rejected, was let through).

The counters are updated from the event loop thread; readers get a copy (:meth:`Counters.snapshot`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

__all__ = ["ACTIONS", "CounterKey", "Counters"]

#: What happened to a request.
ACTIONS: Final = ("allowed", "rejected", "reported")

CounterKey = tuple[str, str, str]


class Counters:
    """Per-(route, reason, action) request counts, plus gauges registered by the middleware."""

    __slots__ = ("_gauges", "counts")

    def __init__(self) -> None:
        #: ``(route, reason, action) -> count``; read it with :meth:`snapshot`.
        self.counts: dict[CounterKey, int] = {}
        self._gauges: list[tuple[str, str, Callable[[], float]]] = []

    def seed(self, keys: Iterable[CounterKey]) -> None:
        """Create zero entries, so the hot path never takes the missing-key branch."""
        for key in keys:
            self.counts.setdefault(key, 0)

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
        for gname, help_text, read in self._gauges:
            lines.append(f"# HELP {prefix}_{gname} {help_text}")
            lines.append(f"# TYPE {prefix}_{gname} gauge")
            lines.append(f"{prefix}_{gname} {_number(read())}")
        return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    # Integral values in full (a syncToken is 10 digits; "%g" would round it), others as repr.
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _escape(value: str) -> str:
    # Prometheus text format: backslash, double quote and newline are escaped in label values.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
