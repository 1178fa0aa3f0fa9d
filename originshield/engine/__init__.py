"""The decision engine, sans-IO: compiled route table + ranges snapshot -> decide(method, path, peer,
headers) -> outcome, and the trace when a log line or ``explain`` needs it.

One decision is one pure function of (compiled routes + snapshot, method, path, peer, raw header
list) -> outcome. :meth:`Engine.decide` is its readable reference, in Python; ``_speedups.Decider``
computes the same whole decision in C over the tables :mod:`.native` builds, and the middleware's
hot path runs it. There is no cache keyed on request bytes in front of either (design.md: a key
that forgets one input is a bypass, and on CloudFront's real traffic, where every viewer differs,
it never hits).

- :mod:`.decide`: :class:`Engine` and :class:`Verdict`, the decision step by step (read this first);
- :mod:`.routes`: the route table, the policies' radix trees, :class:`PolicyReport`;
- :mod:`.native`: the C decider's tables, one versioned structure checked at import.
"""

from .decide import Engine, Verdict
from .routes import DEFAULT_ROUTE, PolicyReport

__all__ = ["DEFAULT_ROUTE", "Engine", "PolicyReport", "Verdict"]
