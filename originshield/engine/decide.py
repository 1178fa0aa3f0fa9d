"""The decision, step by step: :class:`Engine`, the readable reference of ``_speedups.Decider``.

An :class:`Engine` is immutable once built: the middleware builds a new one in the snapshot
listener, off the request path, and swaps one reference. A request reads that reference once and
decides with that engine to the end. The engine is sans-IO: no app, no refusal, no counters; it
turns raw ASGI values into a :class:`Verdict` and nothing else.

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
   trusted proxies the right-to-left walk over the X-Forwarded-For entries
   (:meth:`TrustedProxies.walk <originshield.client_ip.TrustedProxies.walk>`; lines never joined:
   :func:`~originshield.client_ip.rightmost_entries`).
6. The checked address in the policy's radix tree, then the viewer, then the country rules (the
   GeoIP resolver's per-network-block answer cache, or CloudFront-Viewer-Country).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from socket import AF_INET, AF_INET6, inet_ntop
from typing import Any, Final, NamedTuple

from originshield.aws import AwsIpRanges
from originshield.client_ip import TrustedProxies, parse_forwarded_entry, parse_viewer_address, rightmost_entries
from originshield.decision import (
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
    SECRET_DUPLICATE,
    SECRET_INVALID,
    SECRET_MISSING,
    Decision,
    Matched,
    Outcome,
    country_verdict,
)
from originshield.errors import InvalidAddress
from originshield.policy import CountryResolver, Policy, Route
from originshield.radix import pack_address
from originshield.secret import SecretHeader

from . import native
from .routes import CompiledRoute, PolicyReport, RouteTable

__all__ = ["Engine", "Verdict"]

logger = logging.getLogger("originshield.engine")

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
_new_verdict: Final = tuple.__new__


class Verdict(NamedTuple):
    """One decision: its :class:`~originshield.decision.Outcome`, what the app must not see, and the
    trace :meth:`Engine.decision` turns into a :class:`~originshield.decision.Decision`.

    Addresses are packed (4 or 16 bytes); fields after the failing check keep their defaults.
    """

    outcome: Outcome
    #: The secret's verdict word: ``verified``, ``missing``, ``invalid``, ``duplicate``,
    #: ``not_configured``, or ``unread`` (a malformed scope).
    secret: str
    #: What :meth:`Engine.strip_secret` removes if the app runs (``None``: nothing).
    strip: Any = None
    peer: bytes | None = None
    #: The address matched against the policy's sources, and whether it came from X-Forwarded-For.
    checked: bytes | None = None
    checked_from_header: bool = False
    viewer: bytes | None = None
    matched: tuple[Matched, ...] = ()
    country: str | None = None
    #: ``"header"`` (CloudFront-Viewer-Country) or ``"geoip"``.
    country_source: str | None = None


class Engine:
    """Routes, policies, trusted proxies and secret compiled against one ranges snapshot."""

    __slots__ = (
        "_header_ids",
        "_native",
        "generation",
        "geoip",
        "native_tables",
        "ranges",
        "report_only",
        "secret",
        "source",
        "stale_reject",
        "sync_token",
        "table",
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
    ) -> None:
        self.ranges = ranges
        self.stale_reject = stale_reject
        self.generation = generation
        self.source = source
        self.sync_token = ranges.sync_token
        self.trusted = trusted
        self.secret = secret
        self.geoip = geoip
        self.report_only = report_only
        #: The compiled routes (match order) and the default route.
        self.table = RouteTable(default, routes, ranges, report_only=report_only, stale_reject=stale_reject)
        ids = {_XFF_NAME: _XFF, _CVA_NAME: _CVA, _CVC_NAME: _CVC}
        if secret is not None:
            ids[secret.header] = _SECRET
        self._header_ids = ids
        #: The same compiled engine as the C decider reads it (unbound: see :mod:`.native`).
        self.native_tables = native.tables(
            self.table, secret=secret, trusted=trusted, geoip=geoip, report_only=report_only
        )
        self._native: Any = None

    # -- compiled views ------------------------------------------------------------------------------

    @property
    def native(self) -> Any:
        """``_speedups.Decider`` over :attr:`native_tables` (``None`` without the C extension):
        ``native.decide(method, path, client, headers)`` -> the :class:`Outcome` :meth:`decide`
        gives, computed in C. Built on first use; the middleware binds its own copy."""
        if self._native is None:
            self._native = native.decider(self.native_tables)
        return self._native

    @property
    def routes(self) -> tuple[Route, ...]:
        """Configured routes in match order (longest prefix first)."""
        return self.table.routes

    def outcomes(self) -> Iterator[Outcome]:
        """Every :class:`Outcome` this engine can return (one per route and reason code)."""
        for cr in self.table.compiled():
            yield from cr.outcomes.values()

    def policy_reports(self) -> tuple[PolicyReport, ...]:
        """Each distinct policy with the routes using it and the records of its tree."""
        return self.table.reports()

    # -- the decision (the reference; _speedups.c mirrors it step for step) -------------------------

    def outcome(self, method: Any, path: Any, client: Any, headers: Any) -> Outcome:
        """The :class:`Outcome` of :meth:`decide` (what ``native.decide`` returns, for comparisons)."""
        return self.decide(method, path, client, headers).outcome

    def decide(self, method: Any, path: Any, client: Any, headers: Any) -> Verdict:
        """Decide one request from raw ASGI values (``client`` and ``headers`` as in the scope).

        The caller strips the secret (:meth:`strip_secret`, with :attr:`Verdict.strip`) only when
        the app is going to run: a refused request's headers are left as they are. Never raises for
        any input (an exception from the GeoIP resolver is logged and makes the country unknown).
        """
        table = self.table
        if method.__class__ is not str or path.__class__ is not str or headers.__class__ not in (list, tuple):
            return Verdict(table.default.outcomes[MALFORMED_SCOPE], _UNREAD)
        cr = table.match(method, path)

        xff: list[bytes] = []  # every X-Forwarded-For line, in order: one list (RFC 9110 5.3)
        secret_at = -1
        secret_item: Any = None
        secret_value = b""
        secret_count = cva_count = cvc_count = 0
        cva = cvc = b""
        get = self._header_ids.get
        for i, item in enumerate(headers):
            if item.__class__ not in (tuple, list) or len(item) != 2:
                return Verdict(cr.outcomes[MALFORMED_SCOPE], _UNREAD, self._strip_all())
            name, value = item
            if name.__class__ is not bytes or value.__class__ is not bytes:
                return Verdict(cr.outcomes[MALFORMED_SCOPE], _UNREAD, self._strip_all())
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
        outcomes = cr.outcomes
        if client is None:
            return Verdict(outcomes[NO_CLIENT_ADDRESS], state, strip)
        if "." in path and _has_dot_segment(path):  # the test first: most paths have no dot
            return Verdict(outcomes[BAD_PATH], state, strip)
        if secret is not None:
            if state is _DUP:
                return Verdict(outcomes[SECRET_DUPLICATE], state, strip)
            if cr.require_secret and state is _MISSING:
                return Verdict(outcomes[SECRET_MISSING], state, strip)
            if cr.require_secret and state is _INVALID:
                return Verdict(outcomes[SECRET_INVALID], state, strip)
        if cr.stale:
            return Verdict(outcomes[RANGES_STALE], state, strip)
        return self._evaluate(cr, client, xff, state, strip, cva_count, cva, cvc_count, cvc)

    def _evaluate(  # noqa: PLR0917 (positional: one call per request)
        self,
        cr: CompiledRoute,
        client: Any,
        xff: list[bytes],
        state: str,
        strip: Any,
        cva_count: int,
        cva: bytes,
        cvc_count: int,
        cvc: bytes,
    ) -> Verdict:
        outcomes = cr.outcomes
        host = client[0] if client.__class__ in (tuple, list) and client else None
        if host.__class__ is not str:
            return Verdict(outcomes[BAD_CLIENT_ADDRESS], state, strip)
        try:
            peer = pack_address(host)
        except InvalidAddress:
            return Verdict(outcomes[BAD_CLIENT_ADDRESS], state, strip)

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
                return Verdict(outcomes[PEER_FORWARDED], state, strip, peer)
        else:
            entries = rightmost_entries(xff) if xff and (behind_proxy or mode == "cloudfront") else []
            if behind_proxy:
                # Behind our own proxies: the hop to check is the rightmost entry not written by one
                # of them (topology 2: the CloudFront edge the ALB appended).
                hop = trusted.walk(entries)
                if hop is None:
                    return Verdict(outcomes[BAD_FORWARDED_CHAIN], state, strip, peer)
                checked, walked = hop
                from_header = True

        matched = cr.policy.lookup(checked)
        if not matched:
            reason = EDGE_NOT_ALLOWED if from_header else PEER_NOT_ALLOWED
            return Verdict(outcomes[reason], state, strip, peer, checked, from_header)

        viewer = checked
        if mode == "cloudfront":
            if cr.uses_cva and state is _VERIFIED and cva_count:
                # CloudFront's own header (the secret proves the request came through our
                # distribution); a repeated one is ambiguous.
                try:
                    if cva_count > 1:
                        raise InvalidAddress("CloudFront-Viewer-Address repeated")
                    viewer = parse_viewer_address(cva)
                except InvalidAddress:
                    return Verdict(
                        outcomes[BAD_VIEWER_ADDRESS], state, strip, peer, checked, from_header, None, matched
                    )
            else:
                # CloudFront appends the address it saw: the entry just left of the edge. It always
                # sends one, so a missing or unparsable viewer means this is not CloudFront's chain.
                try:
                    if walked >= len(entries):
                        raise InvalidAddress("no viewer entry")
                    viewer = parse_forwarded_entry(entries[walked])
                except InvalidAddress:
                    return Verdict(
                        outcomes[BAD_FORWARDED_CHAIN], state, strip, peer, checked, from_header, None, matched
                    )
        elif mode == "peer":
            viewer = peer

        if not cr.country:
            # The common answer: built by tuple.__new__ directly, which costs 1,500 instructions less
            # than Verdict(...) (NamedTuple's __new__ is a Python function; callgrind, issue 15).
            return _new_verdict(
                Verdict, (outcomes[ALLOWED], state, strip, peer, checked, from_header, viewer, matched, None, None)
            )
        country: str | None = None
        country_source: str | None = None
        if cr.uses_cvc and state is _VERIFIED and cvc_count:
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
        return Verdict(
            outcomes[reason], state, strip, peer, checked, from_header, viewer, matched, country, country_source
        )

    def _strip_all(self) -> Any:
        return None if self.secret is None else _ALL_COPIES

    def strip_secret(self, headers: Any, strip: Any) -> Any:
        """``headers`` without the secret header (``strip`` from :meth:`decide`): the same list with
        the secret deleted in place if ``headers`` is a list, else a new list.

        Every request that reaches the app goes through this, report-only ones included: the app
        never sees the secret, so it cannot leak it (logs, error pages, upstream calls). The caller
        assigns the result to ``scope["headers"]``. In place is safe: the middleware already
        mutates the server's scope (``scope["headers"]`` replaced, as uvicorn's proxy_headers
        replaces ``scope["client"]``); the only other parties that see the list change are those
        holding the list itself (the server, which built it for this request, and outer
        middleware), and for them the secret being gone is the safer outcome (an outer access-log
        middleware cannot log it). A second call with the same scope was already refused the same
        way. It saves copying CloudFront's ~17 headers on every request.

        The item :meth:`decide` saw is removed by position and identity (no comparison that could
        run code); if it moved, every item named like the secret is removed.
        """
        if strip is None or headers.__class__ not in (list, tuple) or self.secret is None:
            return headers
        out: Any = headers if headers.__class__ is list else list(headers)
        if strip is not _ALL_COPIES:
            at, item = strip
            if at < len(out) and out[at] is item:
                del out[at]
                return out
        name = self.secret.header
        out[:] = [h for h in out if not _named(h, name)]  # one slice assignment: linear in any number of copies
        return out

    # -- explain -------------------------------------------------------------------------------------

    def decision(self, verdict: Verdict, method: Any, path: Any, client: Any) -> Decision:
        """The public :class:`Decision` for a :class:`Verdict` of :meth:`decide` (logs and explain)."""
        outcome, peer = verdict.outcome, verdict.peer
        host = client[0] if client.__class__ in (tuple, list) and client else None
        if peer is None and host.__class__ is str:
            peer = _maybe_pack(host)
        shown = _text(peer)
        if shown is None and host.__class__ is str:
            shown = host[:64]  # not an address: show it (bounded) as the server gave it
        checked = verdict.checked
        return Decision(
            allowed=outcome.allowed,
            reason=outcome.reason,
            enforced=outcome.enforced,
            route=outcome.route,
            policy=self.table.named(outcome.route).policy.policy.name,
            method=method if method.__class__ is str else repr(method)[:64],
            path=path if path.__class__ is str else repr(path)[:64],
            peer=shown,
            checked=_text(checked),
            checked_from=None if checked is None else ("x-forwarded-for" if verdict.checked_from_header else "peer"),
            viewer=_text(verdict.viewer),
            matched=verdict.matched,
            secret=verdict.secret,
            country=verdict.country,
            country_source=verdict.country_source,
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
        return self.decision(self.decide(method.upper(), path, client, raw), method.upper(), path, client)


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
