"""The tables of the C decider (``_speedups.Decider``), built from a compiled engine.

The C side computes :meth:`Engine.decide <originshield.engine.Engine.decide>` whole, over the same
compiled routes. It reads them through one structure, versioned by :data:`DECIDER_VERSION` (the
constant of the same name in ``_speedups.c``, where ``decider_new`` and ``route_info`` parse it);
a build from another version refuses to import (:data:`DECIDER`). Here the structure has named
fields (:class:`DeciderTables` and the types it holds); :func:`decider` hands it to C as the plain
tuples C reads, in field order::

    Decider(version, routes, default, secret, trusted, has_trusted, geoip, report_only, bind)
      routes:  tuple of RouteEntry (prefix: str, is_dir, methods: frozenset | None, info), match order
      default: RouteInfo (outcomes, cells | None, budgets | None, mode, require_secret, stale,
               uses_cva, uses_cvc, lookup, country: CountryRules (allow | None, deny, reject_unknown)
               | None); each of outcomes / cells / budgets holds one item per reason code, in
               ``REASONS`` order
      secret:  None or SecretValues (lower-case header name: bytes, accepted values: tuple of bytes)
      trusted: the trusted proxies' Lookup (has_trusted: whether it holds any)
      geoip:   country(packed) -> str | None, or None
      bind:    None, or Bind (app, refuse, log) with cells and budgets: a decider that runs requests

The engine builds the tables unbound (no cells, budgets or bind: it is sans-IO); the middleware
binds a copy to its app, counters and log budgets (:mod:`originshield._shield`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final, NamedTuple

from originshield.client_ip import MAX_TRUSTED_HOPS, TrustedProxies
from originshield.decision import REASONS, Outcome
from originshield.policy import CountryResolver
from originshield.radix import SPEEDUPS
from originshield.secret import SecretHeader

from .routes import CompiledRoute, RouteTable

__all__ = [
    "DECIDER",
    "DECIDER_VERSION",
    "Bind",
    "CountryRules",
    "DeciderTables",
    "RouteEntry",
    "RouteInfo",
    "SecretValues",
    "decider",
    "route_info",
    "tables",
]

#: The version of the structure below; ``_speedups.DECIDER_VERSION`` must be the same.
DECIDER_VERSION: Final = 1
#: ``_speedups.Decider``, or ``None`` (no compiler: :meth:`Engine.decide` answers every request).
DECIDER: Any = getattr(SPEEDUPS, "Decider", None)
if DECIDER is not None and (
    SPEEDUPS.DECIDER_VERSION != DECIDER_VERSION
    or tuple(SPEEDUPS.REASONS) != REASONS
    or SPEEDUPS.MAX_TRUSTED_HOPS != MAX_TRUSTED_HOPS
):
    # A stale build would decide by other rules: refuse to start rather than guess.
    raise ImportError("originshield._speedups was built from another version of originshield: rebuild it")

#: The decider's source mode numbers.
_MODES: Final = {"cloudfront": 0, "direct": 1, "peer": 2}


class CountryRules(NamedTuple):
    """A route's country rules: one flag per two-letter code (:func:`_country_flags`)."""

    allow: bytes | None
    deny: bytes
    reject_unknown: bool


class RouteInfo(NamedTuple):
    """One compiled route, as the decider reads it."""

    #: One :class:`Outcome` per reason code (what ``Decider.decide`` returns).
    outcomes: tuple[Outcome, ...]
    #: The counter cells of those outcomes (``_speedups.Counter``), bound deciders only.
    cells: tuple[Any, ...] | None
    #: The log-line budgets of those outcomes (``_speedups.Budget``; ``None`` for ``allowed``), bound only.
    budgets: tuple[Any, ...] | None
    mode: int
    require_secret: bool
    stale: bool
    uses_cva: bool
    uses_cvc: bool
    #: The policy tree's walker (``_speedups.Lookup``).
    lookup: Any
    country: CountryRules | None


class RouteEntry(NamedTuple):
    prefix: str
    is_dir: bool
    methods: frozenset[str] | None
    info: RouteInfo


class SecretValues(NamedTuple):
    header: bytes
    values: tuple[bytes, ...]


class Bind(NamedTuple):
    """What a bound decider runs requests with (``OriginShield.__call__``)."""

    #: ``app(scope, receive, send)``: called when the request passes.
    app: Any
    #: ``refuse(scope, send)`` -> awaitable sending the refusal.
    refuse: Any
    #: ``log(scope, outcome, summarised)``: a refusal line the budget let through.
    log: Any


class DeciderTables(NamedTuple):
    """Everything ``_speedups.Decider`` is built from, in its argument order."""

    version: int
    routes: tuple[RouteEntry, ...]
    default: RouteInfo
    secret: SecretValues | None
    trusted: Any
    has_trusted: bool
    geoip: Callable[[bytes], str | None] | None
    report_only: bool
    bind: Bind | None

    def bound(self, bind: Bind, cell: Callable[[Outcome], Any], budget: Callable[[Outcome], Any]) -> DeciderTables:
        """These tables bound to ``bind``, with ``cell(outcome)`` / ``budget(outcome)`` for every outcome."""

        def info(i: RouteInfo) -> RouteInfo:
            return i._replace(cells=tuple(map(cell, i.outcomes)), budgets=tuple(map(budget, i.outcomes)))

        routes = tuple(e._replace(info=info(e.info)) for e in self.routes)
        return self._replace(routes=routes, default=info(self.default), bind=bind)


def route_info(cr: CompiledRoute) -> RouteInfo:
    """The unbound :class:`RouteInfo` of a compiled route."""
    policy = cr.policy.policy
    country = None
    if cr.country:
        allow = policy.allow_countries
        country = CountryRules(
            None if allow is None else _country_flags(allow),
            _country_flags(policy.deny_countries),
            policy.reject_unknown_country,
        )
    return RouteInfo(
        outcomes=tuple(cr.outcomes[reason] for reason in REASONS),
        cells=None,
        budgets=None,
        mode=_MODES[cr.mode],
        require_secret=cr.require_secret,
        stale=cr.stale,
        uses_cva=cr.uses_cva,
        uses_cvc=cr.uses_cvc,
        lookup=cr.policy.walker,
        country=country,
    )


def tables(
    table: RouteTable,
    *,
    secret: SecretHeader | None,
    trusted: TrustedProxies,
    geoip: CountryResolver | None,
    report_only: bool,
) -> DeciderTables:
    """The unbound tables of a compiled engine."""
    return DeciderTables(
        version=DECIDER_VERSION,
        routes=tuple(
            RouteEntry(p, d, None if m is None else frozenset(m), route_info(cr)) for p, d, m, cr in table.entries
        ),
        default=route_info(table.default),
        secret=None if secret is None else SecretValues(secret.header, secret.values),
        trusted=trusted.walker,
        has_trusted=bool(trusted),
        geoip=None if geoip is None else geoip.country,
        report_only=report_only,
        bind=None,
    )


def decider(t: DeciderTables) -> Any:
    """``_speedups.Decider`` over ``t`` (``None`` without the C extension). C checks exact tuples,
    so every named structure is passed as a plain ``tuple`` of its fields."""
    if DECIDER is None:
        return None

    def info(i: RouteInfo) -> tuple[Any, ...]:
        return (*i[:9], None if i.country is None else tuple(i.country))

    return DECIDER(
        t.version,
        tuple((e.prefix, e.is_dir, e.methods, info(e.info)) for e in t.routes),
        info(t.default),
        None if t.secret is None else tuple(t.secret),
        t.trusted,
        t.has_trusted,
        t.geoip,
        t.report_only,
        None if t.bind is None else tuple(t.bind),
    )


def _country_flags(codes: Iterable[str]) -> bytes:
    """A set of country codes as the C decider reads it: one flag per two-letter code, 26 x 26."""
    flags = bytearray(26 * 26)
    for code in codes:
        flags[(ord(code[0]) - 65) * 26 + ord(code[1]) - 65] = 1
    return bytes(flags)
