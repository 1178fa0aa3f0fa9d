"""The route table: routes and policies compiled against one ranges snapshot.

Each distinct :class:`~originshield.policy.Policy` becomes a :class:`CompiledPolicy` (its radix
tree over the AWS records it selects and its CIDRs); each route a :class:`CompiledRoute` (the
policy plus the flags the decision reads and one :class:`~originshield.decision.Outcome` per reason
code); :class:`RouteTable` holds them in match order. Everything here is built off the request path
(in the constructor, in the snapshot listener) and never changes afterwards.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from originshield.aws import AwsIpRanges, Network
from originshield.decision import REASONS, Matched, Outcome
from originshield.errors import ConfigError
from originshield.policy import Cidr, Policy, Route
from originshield.radix import RadixTree

__all__ = ["DEFAULT_ROUTE", "CompiledPolicy", "CompiledRoute", "PolicyReport", "RouteTable"]

#: The name of the catch-all route in logs, counters and ``explain``.
DEFAULT_ROUTE: Final = "default"


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


class CompiledPolicy:
    """A policy's radix tree for one snapshot: its AWS selections' records and its CIDRs."""

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
        #: ``lookup(packed) -> tuple[Matched, ...]``: every record containing the address, most specific first.
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


class CompiledRoute:
    """A route's compiled policy, the flags the decision reads, and its outcomes."""

    __slots__ = (
        "country",
        "mode",
        "name",
        "outcomes",
        "policy",
        "require_secret",
        "stale",
        "uses_cva",
        "uses_cvc",
    )

    def __init__(self, name: str, compiled: CompiledPolicy, *, report_only: bool, stale_reject: bool) -> None:
        policy = compiled.policy
        self.name = name
        self.policy = compiled
        self.mode = policy.source
        #: One :class:`Outcome` per reason code, built once: every request decided so shares it.
        self.outcomes = {reason: Outcome(name, reason, enforced=not report_only) for reason in REASONS}
        self.require_secret = policy.require_secret
        # Stale AWS data (and stale_action = "reject") only affects routes that use AWS ranges.
        self.stale = stale_reject and bool(policy.selectors)
        self.country = policy.has_country_rules
        self.uses_cvc = policy.viewer_country_header and policy.has_country_rules
        self.uses_cva = policy.viewer_address_header and policy.source == "cloudfront"


class RouteTable:
    """The routes in match order (longest prefix first) and the default route, compiled."""

    __slots__ = ("default", "entries", "policies", "routes")

    def __init__(
        self,
        default: Policy,
        routes: Sequence[Route],
        ranges: AwsIpRanges,
        *,
        report_only: bool,
        stale_reject: bool,
    ) -> None:
        compiled: dict[int, CompiledPolicy] = {}

        def comp(policy: Policy) -> CompiledPolicy:
            found = compiled.get(id(policy))
            if found is None:
                found = compiled[id(policy)] = CompiledPolicy(policy, ranges)
            return found

        # Longest prefix first; at equal length, routes with methods before routes without.
        ordered = sorted(routes, key=lambda r: (-len(r.prefix.rstrip("/")), -len(r.prefix), r.methods is None))
        names = [r.name for r in ordered]
        if len(set(names)) != len(names) or DEFAULT_ROUTE in names:
            raise ConfigError(f"routes: names must be unique and not {DEFAULT_ROUTE!r}: {names}")
        #: The configured routes, in match order.
        self.routes: tuple[Route, ...] = tuple(ordered)
        flags = {"report_only": report_only, "stale_reject": stale_reject}
        self.default = CompiledRoute(DEFAULT_ROUTE, comp(default), **flags)
        #: ``(prefix, whether it ends with "/" (matches anything below), methods, compiled route)``.
        self.entries: tuple[tuple[str, bool, frozenset[str] | None, CompiledRoute], ...] = tuple(
            (r.prefix, r.prefix.endswith("/"), r.methods, CompiledRoute(r.name, comp(r.policy), **flags))
            for r in ordered
        )
        self.policies: tuple[CompiledPolicy, ...] = tuple(compiled.values())

    def match(self, method: str, path: str) -> CompiledRoute:
        """The first route covering the request, else the default route."""
        for prefix, is_dir, methods, cr in self.entries:
            # Whole segments only: "/api" covers "/api" and "/api/x", never "/apix".
            if (
                path.startswith(prefix)
                and (is_dir or len(path) == len(prefix) or path[len(prefix)] == "/")
                and (methods is None or method in methods)
            ):
                return cr
        return self.default

    def compiled(self) -> Iterator[CompiledRoute]:
        """Every compiled route, the default last."""
        for _p, _d, _m, cr in self.entries:
            yield cr
        yield self.default

    def named(self, name: str) -> CompiledRoute:
        """The compiled route called ``name`` (``"default"`` for the catch-all)."""
        return next(cr for cr in self.compiled() if cr.name == name)

    def reports(self) -> tuple[PolicyReport, ...]:
        """Each distinct policy with the routes using it and the records of its tree."""
        return tuple(
            PolicyReport(cp.policy, tuple(cr.name for cr in self.compiled() if cr.policy is cp), cp.records)
            for cp in self.policies
        )
