"""What a server has in service: the startup log line and the per-policy selection digest.

At lifespan startup the middleware logs one line (:func:`log_startup`) saying which ranges
(syncToken, createDate, age, source), policies and routes it enforces, so that the first look at a
server's output answers "what is this host doing" without ``check-config``. The digest of each
policy's selection (:func:`selection_digests`, also a metric) tells hosts that serve different data
apart: two hosts with the same syncToken but different digests run different configurations.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .engine import DEFAULT_ROUTE, PolicyReport

if TYPE_CHECKING:
    from .middleware import OriginShield

__all__ = ["SelectionDigest", "log_startup", "selection_digests", "startup_line"]

logger = logging.getLogger("originshield")


@dataclass(frozen=True, slots=True)
class SelectionDigest:
    """A policy's compiled selection: its name, distinct prefixes, and a digest of them."""

    policy: str
    prefixes: int
    #: The first 12 hex digits of SHA-256 over the sorted prefixes, one per line.
    digest: str


def selection_digests(shield: OriginShield) -> tuple[SelectionDigest, ...]:
    """One :class:`SelectionDigest` per policy in service (CIDRs included)."""
    return tuple(_digest(report) for report in shield.policies())


def _digest(report: PolicyReport) -> SelectionDigest:
    prefixes = report.prefixes  # sorted: IPv4 first, then by address and length
    text = "\n".join(map(str, prefixes)).encode("ascii")
    return SelectionDigest(report.policy.name, len(prefixes), hashlib.sha256(text).hexdigest()[:12])


def startup_line(shield: OriginShield, now: datetime | None = None) -> str:
    """``in service: sync_token=... policies="..." routes="..."`` as one ``key=value`` line."""
    engine = shield.engine
    ranges = engine.ranges
    age = ranges.age(now or datetime.now(UTC)).total_seconds() / 86400
    policies, default = [], "?"
    for report in shield.policies():
        p, d = report.policy, _digest(report)
        secret = "+secret" if p.require_secret else ""
        policies.append(f"{p.name}({p.source}{secret},{d.prefixes}_prefixes,digest={d.digest})")
        if DEFAULT_ROUTE in report.routes:
            default = p.name
    routes = [
        f"{r.prefix}{'[' + ','.join(sorted(r.methods)) + ']' if r.methods else ''}->{r.policy.name}"
        for r in engine.routes
    ]
    routes.append(f"{DEFAULT_ROUTE}->{default}")
    fields = [
        ("sync_token", str(ranges.sync_token)),
        ("create_date", f"{ranges.create_date:%Y-%m-%dT%H:%M:%SZ}"),
        ("age_days", f"{age:.1f}"),
        ("source", str(engine.source)),
        ("generation", str(engine.generation)),
        ("policies", " ".join(policies)),
        ("routes", " ".join(routes)),
        ("report_only", str(shield.report_only).lower()),
    ]
    return "in service: " + " ".join(f'{k}="{v}"' if " " in v else f"{k}={v}" for k, v in fields)


def log_startup(shield: OriginShield) -> None:
    """Log :func:`startup_line` at INFO on the ``originshield`` logger (lifespan startup)."""
    if logger.isEnabledFor(logging.INFO):
        logger.info("%s", startup_line(shield))
