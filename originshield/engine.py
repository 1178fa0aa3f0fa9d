"""The compiled decision engine: routes and policies turned into radix trees for one ranges snapshot.

An :class:`Engine` is immutable once built: the middleware builds a new one in the snapshot
listener, off the request path, and swaps one reference. A request reads that reference once and
decides with that engine to the end.

One decision is one pure function of (compiled routes + snapshot, method, path, peer, raw header
list) -> outcome. :meth:`Engine.decide` is its readable reference, in Python; ``_speedups.Decider``
(:attr:`Engine.native`) computes the same whole decision in C, over tables this module builds
(:meth:`Engine._native`), and the middleware's hot path runs it. There is no cache keyed on request
bytes in front of either (design.md: a key that forgets one input is a bypass, and on CloudFront's
real traffic, where every viewer differs, it never hits). The trace (:class:`Decision`) is built
only when a log line or ``explain`` needs it, by the Python reference.

The steps, each with its reason code (:data:`~originshield.decision.REASONS`, in this order):

1. ``method``/``path`` are ``str``, ``headers`` a list or tuple of ``(bytes, bytes)`` pairs, else
   ``malformed_scope`` (what we do not understand we do not pass, and C and Python must read the
   same values: no ``bytes`` subclass whose comparison runs code, no ``None`` value).
2. The route: the first of the routes (longest prefix first) whose prefix covers the path on
   segment boundaries and whose methods include the method, else the default route.
3. One pass over the headers, names compared case-insensitively (ASGI promises lower case; a
   non-conforming server may not keep the promise, and ``X-Forwarded-For`` must not sidestep the
   trust model): the X-Forwarded-For lines, the secret header, CloudFront-Viewer-Address/-Country.
4. The early refusals: no client, dot segments in the path, the secret's verdict (constant time),
   stale ranges.
5. The peer; for a ``peer`` policy, no X-Forwarded-For through a trusted proxy. Otherwise behind
   trusted proxies the right-to-left walk over the X-Forwarded-For entries (lines never joined:
   :func:`~originshield.client_ip.rightmost_entries`), at most ``MAX_TRUSTED_HOPS`` trusted hops.
6. The checked address in the policy's radix tree, then the viewer, then the country rules (the
   GeoIP resolver's per-network-block answer cache, or CloudFront-Viewer-Country).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from socket import AF_INET, AF_INET6, inet_ntop
from typing import Any, Final, NamedTuple

from .aws import AwsIpRanges, Network
from .client_ip import MAX_TRUSTED_HOPS, TrustedProxies, parse_forwarded_entry, parse_viewer_address, rightmost_entries
from .decision import (
    ALLOWED,
    BAD_CLIENT_ADDRESS,
    BAD_FORWARDED_CHAIN,
    BAD_PATH,
    BAD_VIEWER_ADDRESS,
    EDGE_NOT_ALLOWED,
    MALFORMED_SCOPE,
    NO_CLIENT_ADDRESS,
    PEER_FORWARDED,
    PEER_NOT_ALLOWED,
    RANGES_STALE,
    REASONS,
    SECRET_DUPLICATE,
    SECRET_INVALID,
    SECRET_MISSING,
    Decision,
    Matched,
    country_verdict,
)
from .errors import ConfigError, InvalidAddress
from .metrics import CounterKey, Counters
from .policy import Cidr, CountryResolver, Policy, Route
from .radix import SPEEDUPS, RadixTree, pack_address
from .ratelimit import LogLimiter
from .secret import SecretHeader

__all__ = ["DEFAULT_ROUTE", "Binding", "Engine", "Outcome", "PolicyReport"]

logger = logging.getLogger("originshield.engine")

#: The C decider, or ``None`` (no compiler: :meth:`Engine.decide` answers every request).
_Decider: Any = getattr(SPEEDUPS, "Decider", None)
#: The version of the table structure :meth:`Engine._native` builds (``_speedups.c``, Decider).
_DECIDER_VERSION: Final = 1
if _Decider is not None and (
    SPEEDUPS.DECIDER_VERSION != _DECIDER_VERSION
    or tuple(SPEEDUPS.REASONS) != REASONS
    or SPEEDUPS.MAX_TRUSTED_HOPS != MAX_TRUSTED_HOPS
):
    # A stale build would decide by other rules: refuse to start rather than guess.
    raise ImportError("originshield._speedups was built from another version of originshield: rebuild it")

#: The name of the catch-all route in logs, counters and ``explain``.
DEFAULT_ROUTE: Final = "default"

# Header ids for the single pass over scope["headers"].
_XFF, _SECRET, _CVA, _CVC = 1, 2, 3, 4
_XFF_NAME: Final = b"x-forwarded-for"
_CVA_NAME: Final = b"cloudfront-viewer-address"
_CVC_NAME: Final = b"cloudfront-viewer-country"

# Secret verdicts (the trace shows these words; the value itself never leaves the header pass).
_VERIFIED, _MISSING, _INVALID, _DUP, _NOT_CONFIGURED = "verified", "missing", "invalid", "duplicate", "not_configured"
_UNREAD: Final = "unread"  # a malformed scope: the header pass stopped before the verdict

_COUNTRY_CODE = re.compile(rb"[A-Z]{2}")
_COUNTRY_TEXT = re.compile(r"[A-Z]{2}")
_ALL_COPIES: Final = object()  # strip marker: remove every header named like the secret
_MODES: Final = {"cloudfront": 0, "direct": 1, "peer": 2}  # Decider's source mode numbers


class Binding(NamedTuple):
    """What an engine needs to run requests itself (``OriginShield.__call__``), not only decide."""

    #: The ASGI app, called with the request's own (scope, receive, send) when it passes.
    app: Any
    #: The middleware's counters: every outcome holds its cell.
    counters: Counters
    #: The refusal log-line budgets, one per (route, reason).
    limiter: LogLimiter
    #: ``refuse(scope, send)`` -> awaitable sending the refusal.
    refuse: Any
    #: ``log(scope, outcome, summarised)``: a refusal line the budget let through (the Python
    #: reference rebuilds its trace), after a summary of ``summarised`` suppressed lines.
    log: Any


class Outcome:
    """A decision's verdict, shared by every request with the same route and reason (built once)."""

    __slots__ = ("allowed", "budget", "cell", "counter_key", "log_key", "passes", "reason", "route")

    def __init__(self, route: str, reason: str, report_only: bool, bind: Binding | None) -> None:
        self.route = route
        self.reason = reason
        self.allowed = reason == ALLOWED
        #: Whether the app is called: allowed, or report-only mode.
        self.passes = self.allowed or report_only
        action = "allowed" if self.allowed else ("reported" if report_only else "rejected")
        self.counter_key: CounterKey = (route, reason, action)
        self.log_key = (route, reason)
        #: The counter cell (bound engines), else ``None``.
        self.cell: Any = None if bind is None else bind.counters.cell(self.counter_key)
        #: The log-line budget of a refusal (bound engines), else ``None``.
        self.budget: Any = None if bind is None or self.allowed else bind.limiter.budget(self.log_key)

    def __repr__(self) -> str:
        return f"Outcome({self.route!r}, {self.reason!r}, passes={self.passes})"


# A decision with its trace: (outcome, peer, checked, checked_from_header, viewer, matched, country,
# country_source). Addresses are packed bytes; :meth:`Engine.decision` turns it into the public
# :class:`Decision` only for logs and explain.
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
    __slots__ = ("lookup", "policy", "records", "walker")

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
        tree = _shared_tree(self.records)
        self.lookup = tree.lookup_packed
        #: The tree's walker (``_speedups.Lookup`` with the C extension): what the C decider reads.
        self.walker: Any = tree.lookup


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


class _CompiledRoute:
    __slots__ = (
        "country",
        "early",
        "mode",
        "name",
        "outcomes",
        "policy",
        "require_secret",
        "stale",
        "uses_cva",
        "uses_cvc",
    )

    def __init__(
        self,
        name: str,
        compiled: _CompiledPolicy,
        report_only: bool,
        bind: Binding | None,
        *,
        stale_reject: bool,
    ) -> None:
        policy = compiled.policy
        self.name = name
        self.policy = compiled
        self.mode = policy.source
        self.outcomes = {reason: Outcome(name, reason, report_only, bind) for reason in REASONS}
        # Results of the checks that run before any address work: built once, returned as is.
        self.early: dict[str, _Result] = {
            reason: (self.outcomes[reason], None, None, False, None, (), None, None) for reason in REASONS
        }
        self.require_secret = policy.require_secret
        # Stale AWS data (and stale_action = "reject") only affects routes that use AWS ranges.
        self.stale = stale_reject and bool(policy.selectors)
        self.country = policy.has_country_rules
        self.uses_cvc = policy.viewer_country_header and policy.has_country_rules
        self.uses_cva = policy.viewer_address_header and policy.source == "cloudfront"


class Engine:
    """Routes, policies, trusted proxies and secret compiled against one ranges snapshot."""

    __slots__ = (
        "_bind",
        "_header_ids",
        "_routes",
        "_table",
        "default",
        "generation",
        "geoip",
        "native",
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
        stale_reject: bool = False,
        bind: Binding | None = None,
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
        self.default = _CompiledRoute(DEFAULT_ROUTE, comp(default), report_only, bind, stale_reject=stale_reject)
        # (prefix, whether it ends with "/" (matches anything below), methods, compiled route)
        self._table = tuple(
            (
                r.prefix,
                r.prefix.endswith("/"),
                r.methods,
                _CompiledRoute(r.name, comp(r.policy), report_only, bind, stale_reject=stale_reject),
            )
            for r in ordered
        )
        self.policies: tuple[_CompiledPolicy, ...] = tuple(compiled.values())
        ids = {_XFF_NAME: _XFF, _CVA_NAME: _CVA, _CVC_NAME: _CVC}
        if secret is not None:
            ids[secret.header] = _SECRET
        self._header_ids = ids
        #: ``_speedups.Decider``: ``native.decide(method, path, client, headers)`` -> the
        #: :class:`Outcome` :meth:`decide` gives, computed in C; bound engines also run requests with
        #: it (``OriginShield.__call__``). ``None`` without the C extension.
        self.native: Any = self._native()

    def _native(self) -> Any:
        """The tables of the C decider (structure version ``_DECIDER_VERSION``, documented at
        ``decider_new`` in ``_speedups.c``)."""
        if _Decider is None:
            return None
        bind = self._bind

        def info(cr: _CompiledRoute) -> tuple[Any, ...]:
            outcomes = tuple(cr.outcomes[reason] for reason in REASONS)
            policy = cr.policy.policy
            country = None
            if cr.country:
                allow = policy.allow_countries
                country = (
                    None if allow is None else _country_flags(allow),
                    _country_flags(policy.deny_countries),
                    policy.reject_unknown_country,
                )
            return (
                outcomes,
                None if bind is None else tuple(o.cell for o in outcomes),
                None if bind is None else tuple(o.budget for o in outcomes),
                _MODES[cr.mode],
                cr.require_secret,
                cr.stale,
                cr.uses_cva,
                cr.uses_cvc,
                cr.policy.walker,
                country,
            )

        secret = self.secret
        return _Decider(
            _DECIDER_VERSION,
            tuple((p, d, None if m is None else frozenset(m), info(cr)) for p, d, m, cr in self._table),
            info(self.default),
            None if secret is None else (secret.header, secret.values),
            self.trusted.walker,
            bool(self.trusted),
            None if self.geoip is None else self.geoip.country,
            self.report_only,
            None if bind is None else (bind.app, bind.refuse, bind.log),
        )

    # -- compiled views ------------------------------------------------------------------------------

    @property
    def routes(self) -> tuple[Route, ...]:
        """Configured routes in match order (longest prefix first)."""
        return self._routes

    def policy_reports(self) -> tuple[PolicyReport, ...]:
        """Each distinct policy with the routes using it and the records of its tree."""
        out = []
        for cp in self.policies:
            names = [cr.name for _p, _d, _m, cr in self._table if cr.policy is cp]
            if self.default.policy is cp:
                names.append(DEFAULT_ROUTE)
            out.append(PolicyReport(cp.policy, tuple(names), cp.records))
        return tuple(out)

    def rebind(self, bind: Binding) -> Engine:
        """The same compiled engine bound to ``bind`` (e.g. after the middleware's app changed)."""
        return Engine(
            default=self.default.policy.policy,
            routes=self._routes,
            ranges=self.ranges,
            generation=self.generation,
            source=self.source,
            trusted=self.trusted,
            secret=self.secret,
            geoip=self.geoip,
            report_only=self.report_only,
            stale_reject=self.stale_reject,
            bind=bind,
        )

    # -- the decision (the reference; _speedups.c mirrors it step for step) -------------------------

    def outcome(self, method: Any, path: Any, client: Any, headers: Any) -> Outcome:
        """The :class:`Outcome` of :meth:`decide` (what ``native.decide`` returns, for comparisons)."""
        return self.decide(method, path, client, headers)[0][0]

    def decide(self, method: Any, path: Any, client: Any, headers: Any) -> tuple[_Result, Any, str]:
        """Decide one request from raw ASGI values (``client`` and ``headers`` as in the scope).

        Returns ``(result, strip, secret)``: ``result[0]`` is the :class:`Outcome` (the rest is the
        trace :meth:`decision` turns into a :class:`Decision`); ``strip`` is what
        :meth:`strip_secret` needs to remove the secret header (``None``: nothing to remove; the
        caller does so only when the app is going to run: a refused request costs no list copy);
        ``secret`` is the secret's verdict word. Never raises for any input (an exception from the
        GeoIP resolver is logged and makes the country unknown).
        """
        if method.__class__ is not str or path.__class__ is not str or headers.__class__ not in (list, tuple):
            return self.default.early[MALFORMED_SCOPE], None, _UNREAD
        cr = self._route(method, path)

        xff: list[bytes] = []  # every X-Forwarded-For line, in order: one list (RFC 9110 5.3)
        secret_at = -1
        secret_item: Any = None
        secret_value = b""
        secret_count = cva_count = cvc_count = 0
        cva = cvc = b""
        get = self._header_ids.get
        for i, item in enumerate(headers):
            if item.__class__ not in (tuple, list) or len(item) != 2:
                return cr.early[MALFORMED_SCOPE], self._strip_all(), _UNREAD
            name, value = item
            if name.__class__ is not bytes or value.__class__ is not bytes:
                return cr.early[MALFORMED_SCOPE], self._strip_all(), _UNREAD
            hid = get(name)
            if hid is None:
                if name.islower():
                    continue
                hid = get(name.lower())
                if hid is None:
                    continue
            if hid == _XFF:
                xff.append(value)
            elif hid == _SECRET:
                secret_count += 1
                secret_at, secret_item, secret_value = i, item, value
            elif hid == _CVA:
                cva_count += 1
                cva = value if cva_count == 1 else cva
            else:
                cvc_count += 1
                cvc = value if cvc_count == 1 else cvc

        strip: Any = None  # what strip_secret removes, if the app runs
        secret = self.secret
        if secret is None:
            state = _NOT_CONFIGURED
        elif not secret_count:
            state = _MISSING
        elif secret_count == 1:
            strip = (secret_at, secret_item)
            state = _VERIFIED if secret.verify(secret_value) else _INVALID
        else:
            strip = _ALL_COPIES
            state = _DUP
        if client is None:
            return cr.early[NO_CLIENT_ADDRESS], strip, state
        if _has_dot_segment(path):
            return cr.early[BAD_PATH], strip, state
        if secret is not None:
            if state is _DUP:
                return cr.early[SECRET_DUPLICATE], strip, state
            if cr.require_secret and state is _MISSING:
                return cr.early[SECRET_MISSING], strip, state
            if cr.require_secret and state is _INVALID:
                return cr.early[SECRET_INVALID], strip, state
        if cr.stale:
            return cr.early[RANGES_STALE], strip, state
        verified = state is _VERIFIED
        return self._evaluate(cr, client, xff, verified, cva_count, cva, cvc_count, cvc), strip, state

    def _route(self, method: str, path: str) -> _CompiledRoute:
        for prefix, is_dir, methods, cr in self._table:
            # Whole segments only: "/api" covers "/api" and "/api/x", never "/apix".
            if (
                path.startswith(prefix)
                and (is_dir or len(path) == len(prefix) or path[len(prefix)] == "/")
                and (methods is None or method in methods)
            ):
                return cr
        return self.default

    def _evaluate(  # noqa: PLR0917 (positional: one call per request)
        self,
        cr: _CompiledRoute,
        client: Any,
        xff: list[bytes],
        verified: bool,
        cva_count: int,
        cva: bytes,
        cvc_count: int,
        cvc: bytes,
    ) -> _Result:
        outcomes = cr.outcomes
        host = client[0] if client.__class__ in (tuple, list) and client else None
        if host.__class__ is not str:
            return (outcomes[BAD_CLIENT_ADDRESS], None, None, False, None, (), None, None)
        try:
            peer = pack_address(host)
        except InvalidAddress:
            return (outcomes[BAD_CLIENT_ADDRESS], None, None, False, None, (), None, None)

        mode = cr.mode
        trusted = self.trusted
        behind_proxy = bool(trusted.contains_packed(peer))
        entries: list[bytes] = []
        walked = 0  # entries consumed, right to left
        checked = peer
        from_header = False
        if mode == "peer":
            # Health checks come from the load balancer itself and carry no X-Forwarded-For; one
            # forwarded through it is an internet client reaching the exempt path.
            if behind_proxy and xff:
                return (outcomes[PEER_FORWARDED], peer, None, False, None, (), None, None)
        else:
            entries = rightmost_entries(xff) if xff and (behind_proxy or mode == "cloudfront") else []
            if behind_proxy:
                # Behind our own proxies: the hop to check is the rightmost entry not written by one
                # of them (topology 2: the CloudFront edge the ALB appended).
                while True:
                    if walked >= len(entries) or walked > MAX_TRUSTED_HOPS:
                        return (outcomes[BAD_FORWARDED_CHAIN], peer, None, False, None, (), None, None)
                    try:
                        hop = parse_forwarded_entry(entries[walked])
                    except InvalidAddress:
                        return (outcomes[BAD_FORWARDED_CHAIN], peer, None, False, None, (), None, None)
                    walked += 1
                    if not trusted.contains_packed(hop):
                        break
                checked = hop
                from_header = True

        matched = cr.policy.lookup(checked)
        if not matched:
            reason = EDGE_NOT_ALLOWED if from_header else PEER_NOT_ALLOWED
            return (outcomes[reason], peer, checked, from_header, None, (), None, None)

        viewer = checked
        if mode == "cloudfront":
            if cr.uses_cva and verified and cva_count:
                # CloudFront's own header (the secret proves the request came through our
                # distribution); a repeated one is ambiguous.
                try:
                    if cva_count > 1:
                        raise InvalidAddress("CloudFront-Viewer-Address repeated")
                    viewer = parse_viewer_address(cva)
                except InvalidAddress:
                    return (outcomes[BAD_VIEWER_ADDRESS], peer, checked, from_header, None, matched, None, None)
            else:
                # CloudFront appends the address it saw: the entry just left of the edge. It always
                # sends one, so a missing or unparsable viewer means this is not CloudFront's chain.
                try:
                    if walked >= len(entries):
                        raise InvalidAddress("no viewer entry")
                    viewer = parse_forwarded_entry(entries[walked])
                except InvalidAddress:
                    return (outcomes[BAD_FORWARDED_CHAIN], peer, checked, from_header, None, matched, None, None)
        elif mode == "peer":
            viewer = peer

        if not cr.country:
            return (outcomes[ALLOWED], peer, checked, from_header, viewer, matched, None, None)
        country: str | None = None
        country_source: str | None = None
        if cr.uses_cvc and verified and cvc_count:
            # CloudFront's own header, trusted because the secret proves the request came through
            # our distribution; a malformed or repeated value is "unknown", never a guess.
            if cvc_count == 1 and _COUNTRY_CODE.fullmatch(cvc):
                country = cvc.decode("ascii")
            country_source = "header"
        elif self.geoip is not None:
            country_source = "geoip"
            try:
                answer: Any = self.geoip.country(viewer)
            except Exception:  # a resolver bug must fail closed, not crash the request
                logger.exception("GeoIP resolver failed; treating the country as unknown")
                answer = None
            # Anything but a two-letter code is "unknown" (as in C, which reads no other value).
            country = answer if answer.__class__ is str and _COUNTRY_TEXT.fullmatch(answer) else None
        reason = country_verdict(cr.policy.policy, country)
        return (outcomes[reason], peer, checked, from_header, viewer, matched, country, country_source)

    def _strip_all(self) -> Any:
        return None if self.secret is None else _ALL_COPIES

    def strip_secret(self, headers: Any, strip: Any) -> Any:
        """``headers`` without the secret header (``strip`` from :meth:`decide`), as a new list.

        Every request that reaches the app goes through this, report-only ones included: the app
        never sees the secret, so it cannot leak it (logs, error pages, upstream calls). The item
        :meth:`decide` saw is removed by position and identity (no comparison that could run code);
        if it moved, every item named like the secret is left out.
        """
        if strip is None or headers.__class__ not in (list, tuple) or self.secret is None:
            return headers
        if strip is not _ALL_COPIES:
            at, item = strip
            if at < len(headers) and headers[at] is item:
                out = list(headers)
                del out[at]
                return out
        name = self.secret.header
        return [h for h in headers if not _named(h, name)]

    # -- explain -------------------------------------------------------------------------------------

    def decision(
        self,
        result: _Result,
        method: Any,
        path: Any,
        client: Any,
        secret: str,
    ) -> Decision:
        """The public :class:`Decision` for a result of :meth:`decide` (logs and explain)."""
        outcome, peer, checked, from_header, viewer, matched, country, country_source = result
        host = client[0] if client.__class__ in (tuple, list) and client else None
        if peer is None and host.__class__ is str:
            peer = _maybe_pack(host)
        shown = _text(peer)
        if shown is None and host.__class__ is str:
            shown = host[:64]  # not an address: show it (bounded) as the server gave it
        cr = self.default if outcome.route == DEFAULT_ROUTE else None
        if cr is None:
            cr = next(c for _p, _d, _m, c in self._table if c.name == outcome.route)
        return Decision(
            allowed=outcome.allowed,
            reason=outcome.reason,
            enforced=not self.report_only,
            route=outcome.route,
            policy=cr.policy.policy.name,
            method=method if method.__class__ is str else repr(method)[:64],
            path=path if path.__class__ is str else repr(path)[:64],
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
        """Decide a request described by hand (the reference); ``peer=None`` is a unix socket."""
        items = headers.items() if isinstance(headers, Mapping) else headers
        raw = [
            (
                (n if isinstance(n, bytes) else n.encode("latin-1")).lower(),
                v if isinstance(v, bytes) else v.encode("latin-1"),
            )
            for n, v in items
        ]
        client = (peer, 0) if peer is not None else None
        result, _strip, secret = self.decide(method.upper(), path, client, raw)
        return self.decision(result, method.upper(), path, client, secret)


def _country_flags(codes: Iterable[str]) -> bytes:
    """A set of country codes as the C decider reads it: one flag per two-letter code."""
    flags = bytearray(26 * 26)
    for code in codes:
        flags[(ord(code[0]) - 65) * 26 + ord(code[1]) - 65] = 1
    return bytes(flags)


def _named(item: Any, name: bytes) -> bool:
    # bytes.lower on the raw data: a bytes subclass's own lower() never runs.
    return (
        item.__class__ in (tuple, list)
        and len(item) == 2
        and isinstance(item[0], bytes)
        and bytes.lower(item[0]) == name
    )


def _has_dot_segment(path: str) -> bool:
    # "/health/../admin": a weak route must not cover a path the app may normalise into a strong one.
    return "." in path and any(seg in (".", "..") for seg in path.split("/"))


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
