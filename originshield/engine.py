"""The compiled decision engine: routes and policies turned into radix trees for one ranges snapshot.

An :class:`Engine` is immutable once built (its decision cache aside, which belongs to it alone):
the middleware builds a new one in the snapshot listener, off the request path, and swaps one
reference. A request reads that reference once and decides with that engine to the end, so the
cache is invalidated per generation by construction: a new engine starts with an empty cache.

:meth:`Engine.decide` is the one implementation of the decision, used by the ASGI hot path and by
:meth:`Engine.explain` (the CLI's ``explain``); only the amount of trace kept differs.

Hot-path shape (design.md, "Performance"): one pass over ``scope["headers"]`` with a dict lookup per
header name; the cheap checks (client present, path, secret) run before the cache and answer with
pre-built outcome objects; the cache key is ``(route index, peer host, X-Forwarded-For bytes, ...)``
with every element bounded in length (an over-long header is decided without the cache, so an
attacker cannot grow the cache or its keys without limit; the cache itself is a ``cachetools``
FIFO cache of fixed size). The secret value is never part of a key: only its verdict is, and only
where it matters.

The cheap half of :meth:`Engine.decide` (everything up to and including a cache hit) also exists in
C, as ``_speedups.Gate`` (:attr:`Engine.gate`): the middleware's ``__call__`` asks it first and
runs ``decide`` only when it answers ``None``. Both read the same cache dict, so a hit returns the
tuple ``decide`` would (the gate also remembers hits in a memo of its own, which lives exactly as
long as this cache: see ``memo_find`` in ``_speedups.c``). The cache is FIFO rather than LRU
because a hit must be a plain read: no order to update, nothing a concurrent reader could observe
half-done, and the C gate can serve it (under a flood of distinct keys FIFO and LRU evict alike;
the hot keys are refilled on a miss).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from socket import AF_INET, AF_INET6, inet_ntop
from typing import Any, Final, NamedTuple

from cachetools import FIFOCache

from .aws import AwsIpRanges, Network
from .client_ip import MAX_TRUSTED_HOPS, TrustedProxies, forwarded_entries, parse_forwarded_entry, parse_viewer_address
from .errors import ConfigError, InvalidAddress
from .metrics import CounterKey, Counters
from .policy import (
    ALLOWED,
    BAD_CLIENT_ADDRESS,
    BAD_FORWARDED_CHAIN,
    BAD_PATH,
    BAD_VIEWER_ADDRESS,
    EDGE_NOT_ALLOWED,
    NO_CLIENT_ADDRESS,
    PEER_NOT_ALLOWED,
    RANGES_STALE,
    REASONS,
    SECRET_DUPLICATE,
    SECRET_INVALID,
    SECRET_MISSING,
    Cidr,
    CountryResolver,
    Decision,
    Matched,
    Policy,
    Route,
)
from .radix import SPEEDUPS, RadixTree, pack_address
from .secret import SecretHeader

# Without the C extension Engine.decide answers every request.
_Gate: Any = getattr(SPEEDUPS, "Gate", None)

__all__ = ["DEFAULT_ROUTE", "Engine", "Outcome", "PolicyReport"]

logger = logging.getLogger("originshield.engine")

#: The name of the catch-all route in logs, counters and ``explain``.
DEFAULT_ROUTE: Final = "default"

# Bounds on what goes into a cache key; longer values are decided without the cache.
_MAX_KEY_XFF: Final = 256
_MAX_KEY_HOST: Final = 64
_MAX_KEY_HEADER: Final = 64

# Header ids for the single pass over scope["headers"].
_XFF, _SECRET, _CVA, _CVC = 1, 2, 3, 4
_XFF_NAME: Final = b"x-forwarded-for"
_CVA_NAME: Final = b"cloudfront-viewer-address"
_CVC_NAME: Final = b"cloudfront-viewer-country"
_DUPLICATE: Final = b"\x00duplicate"  # marks a repeated single-valued CloudFront header

# Secret verdicts (the trace shows these words; the value itself never leaves the header pass).
_VERIFIED, _MISSING, _INVALID, _DUP, _NOT_CONFIGURED = "verified", "missing", "invalid", "duplicate", "not_configured"

_COUNTRY_CODE = re.compile(rb"[A-Z]{2}")
_ALL_COPIES: Final = object()  # strip marker: the secret header appeared more than once


class GateBinding(NamedTuple):
    """What the C gate needs to finish a request itself (``OriginShield.__call__``)."""

    #: The ASGI app, called with the request's own (scope, receive, send) when it is allowed.
    app: Any
    #: The middleware's counters: the gate adds one to an outcome's cell per request it settles.
    counters: Counters
    #: ``refuse(scope, send)`` -> awaitable sending the refusal.
    refuse: Any
    #: ``logged()`` -> whether refusals are logged (then the Python path runs: it builds the line).
    logged: Any


class Outcome:
    """A decision's verdict, shared by every request with the same route and reason (built once)."""

    __slots__ = ("allowed", "counter_key", "passes", "reason", "route")

    def __init__(self, route: str, reason: str, report_only: bool) -> None:
        self.route = route
        self.reason = reason
        self.allowed = reason == ALLOWED
        #: Whether the app is called: allowed, or report-only mode.
        self.passes = self.allowed or report_only
        action = "allowed" if self.allowed else ("reported" if report_only else "rejected")
        self.counter_key: CounterKey = (route, reason, action)

    def __repr__(self) -> str:
        return f"Outcome({self.route!r}, {self.reason!r}, passes={self.passes})"


# A decision as cached: (outcome, peer, checked, checked_from_header, viewer, matched, country,
# country_source). Addresses are packed bytes; a plain tuple keeps a cache miss cheap, and
# :meth:`Engine.decision` turns it into the public :class:`Decision` only for logs and explain.
_Result = tuple[Outcome, bytes | None, bytes | None, bool, bytes | None, tuple[Matched, ...], str | None, str | None]


@dataclass(frozen=True, slots=True)
class PolicyReport:
    """One policy as compiled for the current snapshot (for ``export`` / ``check-config``)."""

    policy: Policy
    #: Names of the routes that use it (``"default"`` for the catch-all).
    routes: tuple[str, ...]
    #: Every record in its tree: AWS records (one per listing) and :class:`~originshield.policy.Cidr`.
    records: tuple[Matched, ...]

    @property
    def prefixes(self) -> tuple[Network, ...]:
        """Distinct prefixes, IPv4 first, sorted."""
        nets = {r.prefix for r in self.records}
        return tuple(sorted(nets, key=lambda n: (n.version, n.network_address.packed, n.prefixlen)))


class _CompiledPolicy:
    __slots__ = ("lookup", "policy", "records")

    def __init__(self, policy: Policy, ranges: AwsIpRanges) -> None:
        records: list[Matched] = []
        for sel in policy.selectors:
            chosen = sel.apply(ranges).records
            if not chosen:
                # A typo ("CLOUDFRONT_ORIGN_FACING") or a region AWS stopped publishing must not
                # silently turn a policy into "refuse everyone" or "allow only the CIDRs".
                raise ConfigError(
                    f"policy {policy.name!r}: selection {sel.name!r} matches no prefix in ranges "
                    f"syncToken {ranges.sync_token}"
                )
            records.extend(chosen)
        records.extend(Cidr(net) for net in policy.cidrs)
        self.policy = policy
        self.records: tuple[Matched, ...] = tuple(records)
        self.lookup = _shared_tree(self.records).lookup_packed


#: Recently built trees by the identity of their records (each entry keeps its records alive, so
#: an id cannot be reused while it is a key). Every ranges update recompiles every policy, but
#: policies sharing a selection get the same records, and so do publications that leave it
#: unchanged (nearly all do: the refresher reuses unchanged records): an immutable tree can be
#: shared instead of rebuilt in the publishing thread (issue 4: a swap must cost the server
#: process almost nothing). Least recently used first.
_TREES: dict[tuple[int, ...], tuple[tuple[Matched, ...], RadixTree[Matched]]] = {}
_TREES_MAX: Final = 8
_TREES_LOCK = threading.Lock()


def _shared_tree(records: tuple[Matched, ...]) -> RadixTree[Matched]:
    key = tuple(map(id, records))
    with _TREES_LOCK:
        hit = _TREES.pop(key, None)
    if hit is None:
        hit = (records, RadixTree.build(records))
    with _TREES_LOCK:
        _TREES[key] = hit
        while len(_TREES) > _TREES_MAX:
            del _TREES[next(iter(_TREES))]
    return hit[1]


_RouteEntry = tuple[str, bool, "frozenset[str] | None", "_CompiledRoute"]


class _CompiledRoute:
    __slots__ = (
        "early",
        "index",
        "mode",
        "name",
        "outcomes",
        "policy",
        "reject_secret_duplicate",
        "reject_secret_invalid",
        "reject_secret_missing",
        "stale",
        "uses_country",
        "uses_cva",
        "uses_cvc",
        "uses_xff",
        "want_country_header",
    )

    def __init__(
        self,
        index: int,
        name: str,
        compiled: _CompiledPolicy,
        report_only: bool,
        trusted: TrustedProxies,
        *,
        stale_reject: bool = False,
    ) -> None:
        policy = compiled.policy
        self.index = index
        self.name = name
        self.policy = compiled
        self.mode = policy.source
        self.outcomes = {reason: Outcome(name, reason, report_only) for reason in REASONS}
        # Results of the checks that run before any address work: built once, returned as is.
        self.early: dict[str, _Result] = {
            reason: (self.outcomes[reason], None, None, False, None, (), None, None) for reason in REASONS
        }
        self.reject_secret_duplicate = self.early[SECRET_DUPLICATE]
        # Stale AWS data (and stale_action = "reject") only affects routes that use AWS ranges.
        self.stale = self.early[RANGES_STALE] if stale_reject and policy.selectors else None
        self.reject_secret_missing = self.early[SECRET_MISSING] if policy.require_secret else None
        self.reject_secret_invalid = self.early[SECRET_INVALID] if policy.require_secret else None
        # Which inputs the cached part of the decision depends on (and so must be in the key).
        self.uses_xff = policy.source == "cloudfront" or (policy.source == "direct" and bool(trusted))
        self.uses_country = policy.has_country_rules
        self.want_country_header = policy.viewer_country_header and policy.has_country_rules
        self.uses_cvc = self.want_country_header
        self.uses_cva = policy.viewer_address_header and policy.source == "cloudfront"


class Engine:
    """Routes, policies, trusted proxies and secret compiled against one ranges snapshot."""

    __slots__ = (
        "_bind",
        "_buckets",
        "_header_ids",
        "_root",
        "_routes",
        "_table",
        "cache",
        "default",
        "gate",
        "generation",
        "geoip",
        "policies",
        "ranges",
        "report_only",
        "secret",
        "source",
        "stale_reject",
        "sync_token",
        "trusted",
    )

    def __init__(
        self,
        *,
        default: Policy,
        routes: Sequence[Route],
        ranges: AwsIpRanges,
        generation: int,
        source: str,
        trusted: TrustedProxies,
        secret: SecretHeader | None,
        geoip: CountryResolver | None,
        report_only: bool,
        cache_size: int,
        stale_reject: bool = False,
        bind: GateBinding | None = None,
    ) -> None:
        self.ranges = ranges
        self._bind = bind
        self.stale_reject = stale_reject
        self.generation = generation
        self.source = source
        self.sync_token = ranges.sync_token
        self.trusted = trusted
        self.secret = secret
        self.geoip = geoip
        self.report_only = report_only
        compiled: dict[int, _CompiledPolicy] = {}

        def comp(policy: Policy) -> _CompiledPolicy:
            found = compiled.get(id(policy))
            if found is None:
                found = compiled[id(policy)] = _CompiledPolicy(policy, ranges)
            return found

        # Longest prefix first; at equal length, routes with methods before routes without.
        ordered = sorted(routes, key=lambda r: (-len(r.prefix.rstrip("/")), -len(r.prefix), r.methods is None))
        names = [r.name for r in ordered]
        if len(set(names)) != len(names) or DEFAULT_ROUTE in names:
            raise ConfigError(f"routes: names must be unique and not {DEFAULT_ROUTE!r}: {names}")
        self._routes = tuple(ordered)
        crs = [
            _CompiledRoute(i, r.name, comp(r.policy), report_only, trusted, stale_reject=stale_reject)
            for i, r in enumerate(ordered)
        ]
        self.default = _CompiledRoute(
            len(crs), DEFAULT_ROUTE, comp(default), report_only, trusted, stale_reject=stale_reject
        )
        # (prefix, whether it ends with "/" (matches anything below), methods, compiled route)
        self._table = tuple(
            (r.prefix, r.prefix.endswith("/"), r.methods, cr) for r, cr in zip(ordered, crs, strict=True)
        )
        # Routes bucketed by the first path segment: prefixes match whole segments, so a request can
        # only match routes whose first segment equals its own, plus "/" (which matches anything).
        root = tuple(e for e in self._table if e[0] == "/")
        buckets: dict[str, list[_RouteEntry]] = {}
        for entry in self._table:
            if entry[0] != "/":
                buckets.setdefault(entry[0].split("/")[1], []).append(entry)
        self._buckets = {seg: (*entries, *root) for seg, entries in buckets.items()}
        self._root = root
        self.policies: tuple[_CompiledPolicy, ...] = tuple(compiled.values())
        self.cache: FIFOCache[tuple[Any, ...], _Result] | None = FIFOCache(cache_size) if cache_size > 0 else None
        ids = {_XFF_NAME: _XFF, _CVA_NAME: _CVA, _CVC_NAME: _CVC}
        if secret is not None:
            ids[secret.header] = _SECRET
        self._header_ids = ids
        #: The C fast path: ``gate(scope)`` -> the result :meth:`decide` would return, or ``None``
        #: (then call :meth:`decide`); never modifies the scope. ``None`` without the C extension.
        #: Built with ``bind``, ``OriginShield.__call__`` uses it to finish requests on its own.
        self.gate: Any = self._build_gate()

    def _build_gate(self) -> Any:
        bind = self._bind
        if bind is not None:  # every outcome has its counter cell, with or without the C gate
            bind.counters.seed(self.outcome_keys())
        if _Gate is None:
            return None

        def info(cr: _CompiledRoute) -> tuple[Any, ...]:
            return (
                cr.index,
                cr.uses_xff,
                cr.uses_cva,
                cr.uses_cvc,
                cr.early[NO_CLIENT_ADDRESS],
                cr.reject_secret_duplicate,
                cr.reject_secret_missing,
                cr.reject_secret_invalid,
                cr.stale,
                cr.outcomes[ALLOWED],
                None if cells is None else cells[cr.outcomes[ALLOWED].counter_key],
            )

        secret = self.secret
        cells = bind.counters.cells if bind is not None else None
        return _Gate(
            tuple((p, d, None if m is None else frozenset(m), info(cr)) for p, d, m, cr in self._table),
            info(self.default),
            (_XFF_NAME, None if secret is None else secret.header, _CVA_NAME, _CVC_NAME),
            None if secret is None else secret.values,
            _backing_dict(self.cache),
            _DUPLICATE,
            (_MAX_KEY_XFF, _MAX_KEY_HOST, _MAX_KEY_HEADER),
            self.report_only,
            None if bind is None else (bind.app, cells, bind.refuse, bind.logged),
        )

    # -- compiled views ------------------------------------------------------------------------------

    @property
    def routes(self) -> tuple[Route, ...]:
        """Configured routes in match order (longest prefix first)."""
        return self._routes

    def outcome_keys(self) -> list[CounterKey]:
        """Every counter key the engine can produce (to pre-seed the counters)."""
        return [o.counter_key for _p, _d, _m, cr in self._table for o in cr.outcomes.values()] + [
            o.counter_key for o in self.default.outcomes.values()
        ]

    def policy_reports(self) -> tuple[PolicyReport, ...]:
        """Each distinct policy with the routes using it and the records of its tree."""
        out = []
        for cp in self.policies:
            names = [cr.name for _p, _d, _m, cr in self._table if cr.policy is cp]
            if self.default.policy is cp:
                names.append(DEFAULT_ROUTE)
            out.append(PolicyReport(cp.policy, tuple(names), cp.records))
        return tuple(out)

    def with_fresh_cache(self, bind: GateBinding | None = None) -> Engine:
        """The same compiled engine with an empty cache (e.g. after a GeoIP database reload), its
        gate bound to ``bind`` if given (else as before)."""
        clone = object.__new__(Engine)
        for slot in Engine.__slots__:
            object.__setattr__(clone, slot, getattr(self, slot))
        clone.cache = FIFOCache(self.cache.maxsize) if self.cache is not None else None
        if bind is not None:
            clone._bind = bind
        clone.gate = clone._build_gate()
        return clone

    # -- the decision --------------------------------------------------------------------------------

    def route_for(self, method: str, path: str) -> _CompiledRoute:
        end = path.find("/", 1)
        entries = self._buckets.get(path[1:end] if end > 0 else path[1:], self._root)
        for prefix, is_dir, methods, cr in entries:
            # Whole segments only: "/api" covers "/api" and "/api/x", never "/apix".
            if (
                path.startswith(prefix)
                and (is_dir or len(path) == len(prefix) or path[len(prefix)] == "/")
                and (methods is None or method in methods)
            ):
                return cr
        return self.default

    def decide(
        self,
        method: str,
        path: str,
        client: Any,
        headers: Any,
        use_cache: bool = True,
    ) -> tuple[_Result, Any, str]:
        """Decide one request from raw ASGI values.

        Returns ``(result, strip, secret)``: ``result[0]`` is the :class:`Outcome` (the rest is the
        trace :meth:`decision` turns into a :class:`Decision`); ``strip`` is ``None`` when no secret
        header was present, else what :meth:`strip_secret` needs to remove it (the caller does so
        only when the app is going to run: a refused request costs no list copy); ``secret`` is the
        secret's verdict word.
        """
        # Route: inlined copy of route_for (one Python call less per request).
        end = path.find("/", 1)
        for prefix, is_dir, methods, cr in self._buckets.get(path[1:end] if end > 0 else path[1:], self._root):  # noqa: B007
            if (
                path.startswith(prefix)
                and (is_dir or len(path) == len(prefix) or path[len(prefix)] == "/")
                and (methods is None or method in methods)
            ):
                break
        else:
            cr = self.default

        # One pass over the headers. ASGI promises lower-case names; a crafted or non-conforming
        # server may not, and the trust model must not be sidestepped by "X-Forwarded-For".
        xff: bytes | None = None
        secret_item: Any = None
        secret_count = 0
        cva: bytes | None = None
        cvc: bytes | None = None
        get = self._header_ids.get
        for item in headers:
            name, value = item
            hid = get(name)
            if hid is None:
                if name.islower():
                    continue
                hid = get(name.lower())
                if hid is None:
                    continue
            if hid == _XFF:
                # RFC 9110 5.3: repeated lines are one list, in order.
                xff = value if xff is None else xff + b"," + value
            elif hid == _SECRET:
                secret_count += 1
                secret_item = item
            elif hid == _CVA:
                cva = value if cva is None else _DUPLICATE
            else:
                cvc = value if cvc is None else _DUPLICATE

        strip: Any = None  # what strip_secret removes, if the app runs
        secret = self.secret
        if secret is None:
            state = _NOT_CONFIGURED
        elif not secret_count:
            state = _MISSING
        elif secret_count == 1:
            strip = secret_item
            state = _VERIFIED if secret.verify(secret_item[1]) else _INVALID
        else:
            strip = _ALL_COPIES
            state = _DUP
        if client is None:
            return cr.early[NO_CLIENT_ADDRESS], strip, state
        if "/." in path and _has_dot_segment(path):
            return cr.early[BAD_PATH], strip, state
        if state is not _VERIFIED and state is not _NOT_CONFIGURED:
            if state is _DUP:
                return cr.reject_secret_duplicate, strip, state
            if state is _MISSING and cr.reject_secret_missing is not None:
                return cr.reject_secret_missing, strip, state
            if state is _INVALID and cr.reject_secret_invalid is not None:
                return cr.reject_secret_invalid, strip, state
        if cr.stale is not None:
            return cr.stale, strip, state

        host = client[0]
        verified = state is _VERIFIED
        cache = self.cache if use_cache else None
        key: tuple[Any, ...] | None = None
        if cache is not None:
            if cr.uses_cva or cr.uses_cvc:
                key = (
                    cr.index,
                    host,
                    xff if cr.uses_xff else None,
                    verified,
                    cva if cr.uses_cva and verified else None,
                    cvc if cr.uses_cvc and verified else None,
                )
                if (cva is not None and len(cva) > _MAX_KEY_HEADER) or (cvc is not None and len(cvc) > _MAX_KEY_HEADER):
                    key = None
            else:
                key = (cr.index, host, xff if cr.uses_xff else None)
            if key is not None and (
                (xff is not None and len(xff) > _MAX_KEY_XFF) or host.__class__ is not str or len(host) > _MAX_KEY_HOST
            ):
                key = None
            if key is not None:
                try:
                    return cache[key], strip, state
                except KeyError:
                    pass
        result = self._evaluate(cr, host, xff, verified, cva, cvc)
        if key is not None and cache is not None:
            cache[key] = result
        return result, strip, state

    def _evaluate(  # noqa: PLR0917 (positional: the cache-miss path, called per request)
        self,
        cr: _CompiledRoute,
        host: Any,
        xff: bytes | None,
        verified: bool,
        cva: bytes | None,
        cvc: bytes | None,
    ) -> _Result:
        outcomes = cr.outcomes
        try:
            if host.__class__ is not str:
                raise InvalidAddress("peer host is not a string")
            peer = pack_address(host)
        except InvalidAddress:
            return (outcomes[BAD_CLIENT_ADDRESS], None, None, False, None, (), None, None)

        mode = cr.mode
        parts: list[bytes] = []
        walked = 0  # entries of ``parts`` consumed, right to left
        checked = peer
        from_header = False
        if mode != "peer" and self.trusted and self.trusted.contains_packed(peer):
            # Behind our own proxies: the hop to check is the rightmost entry not written by one of
            # them (topology 2: the CloudFront edge the ALB appended).
            parts = _entries(xff)
            while True:
                if walked >= len(parts) or walked > MAX_TRUSTED_HOPS:
                    return (outcomes[BAD_FORWARDED_CHAIN], peer, None, False, None, (), None, None)
                try:
                    hop = parse_forwarded_entry(parts[walked])
                except InvalidAddress:
                    return (outcomes[BAD_FORWARDED_CHAIN], peer, None, False, None, (), None, None)
                walked += 1
                if not self.trusted.contains_packed(hop):
                    break
            checked = hop
            from_header = True
        elif mode == "cloudfront":
            parts = _entries(xff)

        matched = cr.policy.lookup(checked)
        if not matched:
            reason = EDGE_NOT_ALLOWED if from_header else PEER_NOT_ALLOWED
            return (outcomes[reason], peer, checked, from_header, None, (), None, None)

        viewer = checked
        if mode == "cloudfront":
            if cr.uses_cva and verified and cva is not None:
                try:
                    viewer = parse_viewer_address(cva)
                except InvalidAddress:
                    return (outcomes[BAD_VIEWER_ADDRESS], peer, checked, from_header, None, matched, None, None)
            else:
                # CloudFront appends the address it saw: the entry just left of the edge. It always
                # sends one, so a missing or unparsable viewer means this is not CloudFront's chain.
                try:
                    if walked >= len(parts):
                        raise InvalidAddress("no viewer entry")
                    viewer = parse_forwarded_entry(parts[walked])
                except InvalidAddress:
                    return (outcomes[BAD_FORWARDED_CHAIN], peer, checked, from_header, None, matched, None, None)
        elif mode == "peer":
            viewer = peer

        if not cr.uses_country:
            return (outcomes[ALLOWED], peer, checked, from_header, viewer, matched, None, None)
        country: str | None = None
        country_source: str | None = None
        if cr.want_country_header and verified and cvc is not None:
            # CloudFront's own header, trusted because the secret proves the request came through
            # our distribution; a malformed or repeated value is "unknown", never a guess.
            if _COUNTRY_CODE.fullmatch(cvc):
                country = cvc.decode("ascii")
            country_source = "header"
        elif self.geoip is not None:
            country_source = "geoip"
            try:
                country = self.geoip.country(viewer)
            except Exception:  # a resolver bug must fail closed, not crash the request
                logger.exception("GeoIP resolver failed; treating the country as unknown")
                country = None
        reason = cr.policy.policy.country_verdict(country)
        return (outcomes[reason], peer, checked, from_header, viewer, matched, country, country_source)

    def strip_secret(self, headers: Any, strip: Any) -> list[Any]:
        """``headers`` without the secret header (``strip`` from :meth:`decide`), as a new list.

        Every request that reaches the app goes through this, report-only ones included: the app
        never sees the secret, so it cannot leak it (logs, error pages, upstream calls).
        """
        if strip is _ALL_COPIES:
            name = self.secret.header if self.secret is not None else b""
            return [h for h in headers if h[0].lower() != name]
        out = list(headers)
        out.remove(strip)  # identity matches first: removes this very item
        return out

    # -- explain -------------------------------------------------------------------------------------

    def decision(
        self,
        result: _Result,
        method: str,
        path: str,
        client: Any,
        secret: str,
    ) -> Decision:
        """The public :class:`Decision` for a result of :meth:`decide` (logs and explain)."""
        outcome, peer, checked, from_header, viewer, matched, country, country_source = result
        if peer is None and client is not None and isinstance(client[0], str):
            peer = _maybe_pack(client[0])
        shown = _text(peer)
        if shown is None and client is not None and isinstance(client[0], str):
            shown = client[0][:64]  # not an address: show it (bounded) as the server gave it
        cr = self.default if outcome.route == DEFAULT_ROUTE else None
        if cr is None:
            cr = next(c for _p, _d, _m, c in self._table if c.name == outcome.route)
        return Decision(
            allowed=outcome.allowed,
            reason=outcome.reason,
            enforced=not self.report_only,
            route=outcome.route,
            policy=cr.policy.policy.name,
            method=method,
            path=path,
            peer=shown,
            checked=_text(checked),
            checked_from=None if checked is None else ("x-forwarded-for" if from_header else "peer"),
            viewer=_text(viewer),
            matched=matched,
            secret=secret,
            country=country,
            country_source=country_source,
            generation=self.generation,
            sync_token=self.sync_token,
        )

    def explain(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]] = (),
        peer: str | None = None,
    ) -> Decision:
        """Decide a request described by hand, without the cache; ``peer=None`` is a unix socket."""
        items = headers.items() if isinstance(headers, Mapping) else headers
        raw = [
            (
                (n if isinstance(n, bytes) else n.encode("latin-1")).lower(),
                v if isinstance(v, bytes) else v.encode("latin-1"),
            )
            for n, v in items
        ]
        client = (peer, 0) if peer is not None else None
        result, _headers, secret = self.decide(method.upper(), path, client, raw, use_cache=False)
        return self.decision(result, method.upper(), path, client, secret)


def _backing_dict(cache: FIFOCache[Any, Any] | None) -> dict[Any, Any] | None:
    """The dict a cachetools cache keeps its entries in, for the C gate's reads; ``None`` if this
    version of cachetools keeps them elsewhere (then the gate answers early refusals only)."""
    data = getattr(cache, "_Cache__data", None)
    if cache is None or type(data) is not dict or len(cache):
        return None
    probe = object()  # check on the empty cache that an entry really lands in that dict
    cache[(probe,)] = probe
    found = data.get((probe,)) is probe
    del cache[(probe,)]
    return data if found and not data else None


def _entries(xff: bytes | None) -> list[bytes]:
    return forwarded_entries(xff) if xff else []


def _has_dot_segment(path: str) -> bool:
    return any(seg in (".", "..") for seg in path.split("/"))


def _maybe_pack(text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        return pack_address(text)
    except InvalidAddress:
        return None


def _text(packed: bytes | None) -> str | None:
    if packed is None:
        return None
    return inet_ntop(AF_INET if len(packed) == 4 else AF_INET6, packed)
