"""The shared-pool warnings: where a configuration trusts addresses every AWS customer can hold.

Produced here only, with the file and key in each line; :meth:`Config.startup_warnings
<originshield.config.schema.Config.startup_warnings>` joins them to the file's other warnings for
the startup log (:func:`~originshield.config.assemble.build`) and for ``originshield check-config``.

- A policy that allows an AWS selection without requiring the secret (design.md, trust model): the
  pool is shared by all AWS customers, so anyone can aim their own CloudFront distribution, EC2
  instance or Lambda function at the origin (the cdn-proxy attack). Known from the file alone.
- A trusted proxy network that overlaps AWS's published ranges: forwarding headers written by
  whoever holds those addresses are believed, so any AWS customer there can name any edge in
  X-Forwarded-For. Needs the ranges in service.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from originshield.aws import AwsIpRanges, Network
    from originshield.policy import Policy, Route

__all__ = ["policy_warnings", "proxy_warnings"]


def policy_warnings(path: str, policies: Mapping[str, Policy], routes: Sequence[Route], default: str) -> list[str]:
    """One line per policy that allows AWS ranges without ``require_secret``, naming its routes."""
    out = []
    for name, policy in policies.items():
        risk = policy.shared_pool_risk
        if risk is None:
            continue
        covers = [r.name for r in routes if r.policy is policy] + (["default"] if name == default else [])
        pools = ", ".join(s.name for s in policy.selectors)
        out.append(
            f"{path}: policies.{name}: allows {pools} (routes: {', '.join(covers) or 'none'}) without "
            f"require_secret = true. {risk[0].upper()}{risk[1:]}. Unless the app authenticates every client "
            "itself, add a [secret] table and require_secret = true."
        )
    return out


def proxy_warnings(path: str, trusted_proxies: Iterable[Network], ranges: AwsIpRanges) -> list[str]:
    """One line per trusted proxy network that overlaps a prefix of ``ranges`` (three named)."""
    out = []
    for net in trusted_proxies:
        # Two networks overlap when their address intervals do. Integer bounds, not
        # Network.overlaps: every worker runs this at startup over ~17,000 records (3x faster).
        low, high = int(net.network_address), int(net.broadcast_address)
        hits = [
            r
            for r in ranges.records
            if r.prefix.version == net.version
            and int(r.prefix.network_address) <= high
            and low <= int(r.prefix.broadcast_address)
        ]
        if hits:
            sample = ", ".join(f"{r.prefix} {r.region} {r.service}" for r in hits[:3])
            out.append(
                f"{path}: trusted_proxies: {net} overlaps AWS shared ranges ({sample}"
                f"{f' and {len(hits) - 3} more' if len(hits) > 3 else ''}): every AWS customer with an address "
                "there is trusted to write X-Forwarded-For; list only your own load balancers' subnets"
            )
    return out
