"""What a decision says: the reason codes, the outcome, the full trace (:class:`Decision`) and its log line.

Every request is decided by :class:`~originshield.engine.Engine` into one :class:`Outcome`: the
route and one reason code from :data:`REASONS` (``allowed``, or the first check that failed, in the
order the checks run). The counters count outcomes; a refusal's log line and ``explain`` show the
:class:`Decision`, the outcome with everything the engine looked at on the way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from .aws import Record
from .metrics import CounterKey, LogKey
from .policy import Cidr

if TYPE_CHECKING:
    from .policy import Policy

__all__ = [
    "ALLOWED",
    "BAD_CLIENT_ADDRESS",
    "BAD_FORWARDED_CHAIN",
    "BAD_PATH",
    "BAD_VIEWER_ADDRESS",
    "COUNTRY_NOT_ALLOWED",
    "COUNTRY_UNKNOWN",
    "EDGE_NOT_ALLOWED",
    "MALFORMED_SCOPE",
    "NO_CLIENT_ADDRESS",
    "PEER_FORWARDED",
    "PEER_NOT_ALLOWED",
    "RANGES_STALE",
    "REASONS",
    "SECRET_DUPLICATE",
    "SECRET_INVALID",
    "SECRET_MISSING",
    "Decision",
    "Matched",
    "Outcome",
    "country_verdict",
    "logfmt",
]

# -- reason codes ------------------------------------------------------------------------------------

ALLOWED: Final = "allowed"
#: The scope is not what ASGI specifies: ``method``/``path`` not ``str``, ``headers`` not a list or
#: tuple of ``(bytes, bytes)`` pairs (e.g. a ``None`` value or a ``bytes`` subclass). Only a broken
#: server or an in-process caller produces one; it is refused rather than guessed at (fail closed).
MALFORMED_SCOPE: Final = "malformed_scope"
#: No socket peer in the scope (unix socket, some test servers): nothing to check, fail closed.
NO_CLIENT_ADDRESS: Final = "no_client_address"
#: The socket peer is not a plain IP address.
BAD_CLIENT_ADDRESS: Final = "bad_client_address"
#: The path contains dot segments (``/health/../admin``): a weak route must not cover a path the
#: application may normalise into a strong one (RFC 3986 section 5.2.4; clients remove them).
BAD_PATH: Final = "bad_path"
#: The secret header appeared more than once: ambiguous, and a classic smuggling probe.
SECRET_DUPLICATE: Final = "secret_duplicate"  # noqa: S105 (a reason code, not a secret)
SECRET_MISSING: Final = "secret_missing"  # noqa: S105
SECRET_INVALID: Final = "secret_invalid"  # noqa: S105
#: A ``peer`` policy (health checks) was reached through a trusted proxy by a request carrying
#: X-Forwarded-For. Real load-balancer health checks carry none (ALB, "Health checks for your target
#: groups"): such a request is an internet client forwarded to the exempt path by the proxy.
PEER_FORWARDED: Final = "peer_forwarded"
#: The peer is a trusted proxy but X-Forwarded-For is missing, shorter than the topology needs, or
#: holds an unparsable entry among those walked.
BAD_FORWARDED_CHAIN: Final = "bad_forwarded_chain"
#: ``CloudFront-Viewer-Address`` is used (secret verified) but is not ``ip:port``.
BAD_VIEWER_ADDRESS: Final = "bad_viewer_address"
#: The socket peer itself is not in the policy's sources.
PEER_NOT_ALLOWED: Final = "peer_not_allowed"
#: The address taken from the trusted forwarding chain (e.g. the CloudFront edge behind an ALB) is
#: not in the policy's sources.
EDGE_NOT_ALLOWED: Final = "edge_not_allowed"
COUNTRY_NOT_ALLOWED: Final = "country_not_allowed"
COUNTRY_UNKNOWN: Final = "country_unknown"
#: The AWS ranges are older than the refresher's ``max_age`` and the operator chose
#: ``stale_action = "reject"``: routes whose policy uses AWS ranges fail closed (CIDR-only routes,
#: such as the ALB health check, do not depend on the ranges and keep working).
RANGES_STALE: Final = "ranges_stale"

#: Every reason code, in the order the checks run (see :class:`~originshield.policy.Policy`). The C
#: decider numbers them in this order (``_speedups.REASONS``, compared at import).
REASONS: Final[tuple[str, ...]] = (
    ALLOWED,
    MALFORMED_SCOPE,
    NO_CLIENT_ADDRESS,
    BAD_PATH,
    SECRET_DUPLICATE,
    SECRET_MISSING,
    SECRET_INVALID,
    RANGES_STALE,
    BAD_CLIENT_ADDRESS,
    PEER_FORWARDED,
    BAD_FORWARDED_CHAIN,
    PEER_NOT_ALLOWED,
    EDGE_NOT_ALLOWED,
    BAD_VIEWER_ADDRESS,
    COUNTRY_NOT_ALLOWED,
    COUNTRY_UNKNOWN,
)

#: What a policy's radix tree holds: AWS records and the policy's explicit networks.
Matched = Record | Cidr


def country_verdict(policy: Policy, country: str | None) -> str:
    """The reason code for a located country (``None``: unknown) under ``policy``'s country rules."""
    if country is None:
        return COUNTRY_UNKNOWN if policy.reject_unknown_country else ALLOWED
    if country in policy.deny_countries:
        return COUNTRY_NOT_ALLOWED
    if policy.allow_countries is not None and country not in policy.allow_countries:
        return COUNTRY_NOT_ALLOWED
    return ALLOWED


def _action(allowed: bool, enforced: bool) -> str:
    if allowed:
        return "allowed"
    return "rejected" if enforced else "reported"


@dataclass(frozen=True, slots=True, eq=False)
class Outcome:
    """A decision's verdict: one per (route, reason) of a compiled engine, shared by every request
    decided so (the C decider returns the same objects). Compared and hashed by identity."""

    route: str
    reason: str
    #: False in report-only mode: a refusal is counted and logged, but the request goes through.
    enforced: bool
    allowed: bool = field(init=False)
    #: Whether the app is called: allowed, or report-only mode.
    passes: bool = field(init=False)
    #: ``allowed``, ``rejected`` or ``reported`` (report-only: would have been rejected).
    action: str = field(init=False)

    def __post_init__(self) -> None:
        allowed = self.reason == ALLOWED
        object.__setattr__(self, "allowed", allowed)
        object.__setattr__(self, "passes", allowed or not self.enforced)
        object.__setattr__(self, "action", _action(allowed, self.enforced))

    @property
    def counter_key(self) -> CounterKey:
        """The key of its request counter: ``(route, reason, action)``."""
        return (self.route, self.reason, self.action)

    @property
    def log_key(self) -> LogKey:
        """The key of its log-line budget: ``(route, reason)``."""
        return (self.route, self.reason)


@dataclass(frozen=True, slots=True)
class Decision:
    """The full trace of one decision: what ``explain`` prints and what a rejection logs.

    Addresses are normalised text (IPv4-mapped IPv6 shown as IPv4). ``checked`` is the address
    matched against the policy's sources: the CloudFront edge in ``cloudfront`` mode (the socket
    peer in topology 1, an X-Forwarded-For entry behind trusted proxies in topology 2), the client
    in ``direct`` mode, the peer in ``peer`` mode; ``checked_from`` says which (``"peer"`` or
    ``"x-forwarded-for"``). ``matched`` holds every record of the policy containing it, most
    specific first (empty: nothing matched, see ``reason``). ``secret`` is the verdict only, never
    the value: ``verified``, ``missing``, ``invalid``, ``duplicate`` or ``not_configured``.
    Fields after the failing check are ``None`` (they were not computed).
    """

    allowed: bool
    reason: str
    #: False in report-only mode: a rejection was logged and counted but the request went through.
    enforced: bool
    route: str
    policy: str
    method: str
    path: str
    peer: str | None
    checked: str | None
    checked_from: str | None
    viewer: str | None
    matched: tuple[Matched, ...]
    secret: str
    country: str | None
    #: ``"header"`` (CloudFront-Viewer-Country, secret verified), ``"geoip"``, or ``None``.
    country_source: str | None
    generation: int
    sync_token: int

    @property
    def action(self) -> str:
        """``allowed``, ``rejected`` or ``reported`` (report-only: would have been rejected)."""
        return _action(self.allowed, self.enforced)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form (for ``originshield explain --json``)."""
        return {
            "action": self.action,
            "allowed": self.allowed,
            "reason": self.reason,
            "enforced": self.enforced,
            "route": self.route,
            "policy": self.policy,
            "method": self.method,
            "path": self.path,
            "peer": self.peer,
            "checked": self.checked,
            "checked_from": self.checked_from,
            "viewer": self.viewer,
            "matched": [
                {
                    "prefix": str(m.prefix),
                    "region": m.region,
                    "service": m.service,
                    "network_border_group": m.network_border_group,
                }
                for m in self.matched
            ],
            "secret": self.secret,
            "country": self.country,
            "country_source": self.country_source,
            "generation": self.generation,
            "sync_token": self.sync_token,
        }

    def log_line(self) -> str:
        """One structured ``key=value`` line; attacker-controlled text is quoted and escaped, the
        secret never appears (only its verdict)."""
        best = self.matched[0] if self.matched else None
        fields: list[tuple[str, object]] = [
            ("action", self.action),
            ("reason", self.reason),
            ("route", self.route),
            ("policy", self.policy),
            ("method", self.method),
            ("path", self.path[:256]),
            ("peer", self.peer),
            ("checked", self.checked),
            ("checked_from", self.checked_from),
            ("viewer", self.viewer),
            ("prefix", best.prefix if best else None),
            ("region", best.region if best else None),
            ("service", best.service if best else None),
            ("secret", self.secret),
            ("country", self.country),
            ("country_source", self.country_source),
            ("generation", self.generation),
            ("sync_token", self.sync_token),
        ]
        return " ".join(f"{k}={logfmt(v)}" for k, v in fields if v is not None)


_PLAIN = re.compile(r"[A-Za-z0-9_./:%+@-]{1,256}")


def logfmt(value: object) -> str:
    """``value`` as one ``key=value`` log field: plain text as is, anything else quoted, with every
    control character escaped (no raw newline or control character from a request reaches the log)."""
    text = str(value)
    if _PLAIN.fullmatch(text):
        return text
    return '"' + text.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'
