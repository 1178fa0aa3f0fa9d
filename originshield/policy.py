"""Policies and routes: who may reach which part of the origin (configuration values only).

A :class:`Policy` says which sources are allowed (selections of AWS ranges by service, region and
border group, plus explicit CIDRs), which address is checked against them (the ``source`` mode, one
per deployment topology of ``design.md``), whether the CloudFront secret header is required, and
the country rules. A :class:`Route` maps a path prefix (and optionally methods) to a policy; the
longest matching prefix wins and a default policy covers the rest. Everything here is a frozen value
checked in its constructor (:class:`~originshield.errors.ConfigError` names the key and the
reason); :mod:`originshield.engine` compiles it into radix trees once per ranges snapshot, and
:mod:`originshield.decision` holds what a decision says (reason codes, outcome, trace).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol, runtime_checkable

from .aws import Network
from .errors import ConfigError
from .selector import Selector

__all__ = ["Cidr", "CountryResolver", "Policy", "Route", "SourceMode", "UnknownCountry"]

# -- the GeoIP seam ----------------------------------------------------------------------------------


@runtime_checkable
class CountryResolver(Protocol):
    """Maps an address to an ISO 3166-1 alpha-2 country code (implemented by ``originshield.geoip``).

    ``packed`` is the 4- or 16-byte form from :func:`originshield.radix.pack_address` (IPv4-mapped
    IPv6 already normalised to 4 bytes). Returns the upper-case code, or ``None`` when the address
    is not in the database or has no country; it raises nothing for an unknown address. It is called
    for every decision of a route with country rules (``originshield.geoip`` keeps a per-network-block
    answer cache), from the event loop: it must not block on
    I/O (a memory-mapped or in-memory reader is fine).
    """

    def country(self, packed: bytes) -> str | None: ...


# -- configuration values ----------------------------------------------------------------------------

#: Which address a policy checks, one mode per deployment topology (``design.md``):
#:
#: ``"cloudfront"`` (topologies 1 and 2): the checked address is the CloudFront edge, i.e. the
#: first hop from the right that is not a trusted proxy: the socket peer itself when it is not a
#: trusted proxy (topology 1), else the rightmost untrusted X-Forwarded-For entry (topology 2, the
#: one the ALB appended). The viewer is the X-Forwarded-For entry just left of the edge (CloudFront
#: appends the address it saw); it must be present and parse, or the request is refused with
#: ``bad_forwarded_chain`` (CloudFront always sends it). Entries further left are written by the
#: viewer and never read.
#:
#: ``"direct"`` (topology 3): the checked address is the client, i.e. the first hop from the right
#: that is not a trusted proxy (normally the socket peer); it is also the located "viewer".
#:
#: ``"peer"``: the socket peer only, forwarding headers ignored even from trusted proxies. For
#: health checks that come straight from the load balancer (VPC CIDR + health path, no secret).
SourceMode = Literal["cloudfront", "direct", "peer"]
_SOURCE_MODES: Final = ("cloudfront", "direct", "peer")

UnknownCountry = Literal["reject", "allow"]

_SHARED_V4: Final = ipaddress.IPv4Network("100.64.0.0/10")
_COUNTRY = re.compile(r"[A-Z]{2}")
_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Z-]+")  # RFC 9110 token, upper case


@dataclass(frozen=True, slots=True)
class Cidr:
    """An explicit network allowed by a policy; stored in the policy's radix tree next to the AWS
    :class:`~originshield.aws.Record` objects, with the same attribution attributes."""

    prefix: Network
    region: str | None = None
    service: str = "CIDR"
    network_border_group: str | None = None


def _network(value: object, where: str) -> Network:
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return value
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a CIDR string, got {type(value).__name__}")
    try:
        # strict=True: "10.0.0.1/8" has host bits set and is almost always a typo for a host.
        return ipaddress.ip_network(value.strip(), strict=True)
    except ValueError as exc:
        raise ConfigError(f"{where}: {value!r} is not a CIDR ({exc})") from None


def _countries(values: Iterable[str] | None, where: str) -> frozenset[str] | None:
    if values is None:
        return None
    if isinstance(values, str):
        raise ConfigError(f"{where}: expected a list of country codes, got the string {values!r}")
    out = set()
    for value in values:
        code = value.strip().upper() if isinstance(value, str) else value
        if not isinstance(code, str) or not _COUNTRY.fullmatch(code):
            raise ConfigError(f"{where}: {value!r} is not an ISO 3166-1 alpha-2 country code")
        out.add(code)
    return frozenset(out)


def _selector(value: object, where: str) -> Selector:
    if isinstance(value, Selector):
        return value
    if isinstance(value, str):
        try:
            return Selector.preset(value)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    raise ConfigError(f"{where}: expected a Selector or a preset name, got {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class Policy:
    """Who may reach a route. Immutable; validated in the constructor.

    The checks run in this order, and the first failing one gives the reason code: a well-formed
    scope (``malformed_scope``), client address present (``no_client_address``), path without dot
    segments (``bad_path``), secret header not duplicated (``secret_duplicate``), secret present
    and valid when ``require_secret`` (``secret_missing`` / ``secret_invalid``), AWS data fresh
    enough (``ranges_stale``), peer parsable (``bad_client_address``), for a ``peer`` policy no
    X-Forwarded-For through a trusted proxy (``peer_forwarded``), forwarding chain as ``source``
    expects (``bad_forwarded_chain``),
    checked address in ``selectors`` or ``cidrs`` (``peer_not_allowed`` / ``edge_not_allowed``),
    viewer resolved (``bad_forwarded_chain`` / ``bad_viewer_address``), country rules
    (``country_not_allowed`` / ``country_unknown``).

    Fields:

    - ``name``: shown in logs, counters and ``explain``.
    - ``selectors``: AWS selections (:class:`~originshield.aws.Selector` or a preset name such as
      ``"cloudfront-origin-facing"`` or ``"region:eu-west-1"``); re-applied to every new snapshot.
    - ``cidrs``: explicit networks (strings or ``ipaddress`` networks, strict: no host bits).
    - ``require_secret``: the CloudFront secret header must be present once and valid.
    - ``source``: which address is checked, see :data:`SourceMode`.
    - ``allow_countries`` / ``deny_countries``: ISO 3166-1 alpha-2 codes applied to the located
      viewer (``cloudfront``: the viewer from the trusted chain or ``CloudFront-Viewer-Address``;
      ``direct``/``peer``: the checked address itself), never the CloudFront edge, never a raw
      header. Deny wins. ``allow_countries=None`` means no allow list.
    - ``unknown_country``: what to do when the country cannot be determined; default (``None``):
      ``"reject"`` when an allow list is set, else ``"allow"``.
    - ``viewer_country_header``: use CloudFront's ``CloudFront-Viewer-Country`` header, but only on
      requests whose secret was verified (a header is only CloudFront's word when the request
      provably went through your distribution); when absent, the GeoIP database is used if one is
      configured, else the country is unknown.
    - ``viewer_address_header``: take the viewer from ``CloudFront-Viewer-Address`` (``ip:port``,
      split on the last colon) instead of X-Forwarded-For, again only with a verified secret.
    """

    name: str
    selectors: tuple[Selector, ...] = ()
    cidrs: tuple[Network, ...] = ()
    require_secret: bool = False
    source: SourceMode = "cloudfront"
    allow_countries: frozenset[str] | None = None
    deny_countries: frozenset[str] = field(default_factory=frozenset)
    unknown_country: UnknownCountry | None = None
    viewer_country_header: bool = False
    viewer_address_header: bool = False

    def __post_init__(self) -> None:
        # Coerce friendly inputs (lists, preset names, CIDR strings) so that configuration code can
        # pass what it parsed; the stored values always have the declared types.
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError("policy name: must be a non-empty string")
        where = f"policy {self.name!r}"
        if isinstance(self.selectors, (str, Selector)):
            raise ConfigError(f"{where}: selectors must be a list")
        sels = tuple(_selector(s, f"{where}: selectors[{i}]") for i, s in enumerate(self.selectors))
        if isinstance(self.cidrs, str):
            raise ConfigError(f"{where}: cidrs must be a list, got the string {self.cidrs!r}")
        nets = tuple(_network(c, f"{where}: cidrs[{i}]") for i, c in enumerate(self.cidrs))
        if not sels and not nets:
            raise ConfigError(f"{where}: no allowed sources (give selectors and/or cidrs)")
        if self.source not in _SOURCE_MODES:
            raise ConfigError(f"{where}: source must be one of {', '.join(_SOURCE_MODES)}, got {self.source!r}")
        for key in ("require_secret", "viewer_country_header", "viewer_address_header"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"{where}: {key} must be true or false")
        allow = _countries(self.allow_countries, f"{where}: allow_countries")
        deny = _countries(self.deny_countries, f"{where}: deny_countries") or frozenset()
        if allow is not None and not allow:
            raise ConfigError(f"{where}: allow_countries is empty (it would refuse everyone); omit it instead")
        if allow is not None and allow & deny:
            raise ConfigError(f"{where}: {', '.join(sorted(allow & deny))} both allowed and denied")
        if self.unknown_country not in (None, "reject", "allow"):
            raise ConfigError(f"{where}: unknown_country must be 'reject' or 'allow', got {self.unknown_country!r}")
        object.__setattr__(self, "selectors", sels)
        object.__setattr__(self, "cidrs", nets)
        object.__setattr__(self, "allow_countries", allow)
        object.__setattr__(self, "deny_countries", deny)

    # -- convenience constructors ------------------------------------------------------------------

    @classmethod
    def of(
        cls,
        name: str,
        *,
        selectors: Iterable[Selector | str] = (),
        cidrs: Iterable[str | Network] = (),
        require_secret: bool = False,
        source: SourceMode = "cloudfront",
        allow_countries: Iterable[str] | None = None,
        deny_countries: Iterable[str] = (),
        unknown_country: UnknownCountry | None = None,
        viewer_country_header: bool = False,
        viewer_address_header: bool = False,
    ) -> Policy:
        """The constructor with friendly input types (preset names, CIDR strings, lists), typed."""
        if isinstance(selectors, str) or isinstance(cidrs, str):
            raise ConfigError(f"policy {name!r}: selectors and cidrs must be lists, not strings")
        return cls(
            name,
            selectors=tuple(selectors),  # type: ignore[arg-type]  # coerced in __post_init__
            cidrs=tuple(cidrs),  # type: ignore[arg-type]
            require_secret=require_secret,
            source=source,
            allow_countries=allow_countries,  # type: ignore[arg-type]
            deny_countries=deny_countries,  # type: ignore[arg-type]
            unknown_country=unknown_country,
            viewer_country_header=viewer_country_header,
            viewer_address_header=viewer_address_header,
        )

    @classmethod
    def cloudfront(cls, name: str = "cloudfront", **options: object) -> Policy:
        """Topologies 1 and 2: CloudFront origin-facing edges carrying the secret header."""
        options.setdefault("require_secret", True)
        return cls(name, selectors=(Selector.preset("cloudfront-origin-facing"),), **options)  # type: ignore[arg-type]

    @classmethod
    def region_locked(cls, regions: Iterable[str], name: str = "", **options: object) -> Policy:
        """Topology 3: any AWS address (every service) in the given regions, checked on the peer."""
        regs = [regions] if isinstance(regions, str) else list(regions)
        if not regs:
            raise ConfigError("region_locked: regions is empty")
        options.setdefault("source", "direct")
        sel = Selector.of(regions=regs, name="regions=" + ",".join(sorted(regs)))
        return cls(name or f"region:{','.join(sorted(regs))}", selectors=(sel,), **options)  # type: ignore[arg-type]

    @classmethod
    def health_check(cls, cidrs: Iterable[str | Network], name: str = "health-check") -> Policy:
        """The ALB health-check exemption: the socket peer in the VPC CIDRs, no secret, no headers.

        Give it a :class:`Route` for the health path only: it is an exemption, never a bypass.
        """
        return cls(name, cidrs=tuple(_network(c, f"policy {name!r}: cidrs") for c in cidrs), source="peer")

    @classmethod
    def vpc_origin(
        cls, cidrs: Iterable[str | Network], name: str = "cloudfront-vpc-origin", **options: object
    ) -> Policy:
        """Topology 4, CloudFront VPC origins: the private peer in your VPC, and the secret header.

        With a VPC origin, CloudFront reaches a private ALB, NLB or EC2 instance through network
        interfaces it manages in your VPC's subnets (AWS CloudFront Developer Guide, "Restrict
        access with VPC origins"). The socket peer is a private address of your VPC (the VPC
        origin's interface, or the internal ALB's node that received from it), never a public
        CloudFront address, so ``cloudfront-origin-facing`` would refuse everything. The peer
        check keeps out the rest of your network (peered VPCs, VPN, other workloads in shared
        subnets); the secret header, added by *your* distribution only, stays the proof that the
        request went through it (its WAF, geo restriction, signed URLs), whichever distribution
        (another of yours, or one in an account the VPC origin is shared with) can reach the origin.

        ``cidrs``: the VPC (or the subnets of the VPC origin and of the internal load balancer);
        private networks only. The checked address is the socket peer (``source="peer"``):
        forwarding headers are not needed to decide, whoever appended them.
        """
        nets = tuple(_network(c, f"policy {name!r}: cidrs") for c in ([cidrs] if isinstance(cidrs, str) else cidrs))
        # IPv4 only: a VPC's IPv6 block is global unicast; 100.64.0.0/10 (RFC 6598) is a valid VPC CIDR.
        public = [str(n) for n in nets if n.version == 4 and not (n.is_private or n.subnet_of(_SHARED_V4))]
        if public:
            raise ConfigError(
                f"policy {name!r}: cidrs {', '.join(public)} are not private: a VPC origin reaches the origin from "
                "private addresses of your VPC (CloudFront's public ranges are not what it sees)"
            )
        if options.get("require_secret", True) is not True:
            raise ConfigError(
                f"policy {name!r}: require_secret must stay true: only the secret proves your distribution"
            )
        if options.get("selectors"):
            raise ConfigError(f"policy {name!r}: no AWS selectors: a VPC origin's peers are private VPC addresses")
        if options.get("source", "peer") != "peer":
            raise ConfigError(f"policy {name!r}: source must be 'peer' (the VPC origin's or internal ALB's address)")
        options.update(require_secret=True, source="peer")
        return cls(name, cidrs=nets, **options)  # type: ignore[arg-type]

    # -- derived -------------------------------------------------------------------------------------

    @property
    def shared_pool_risk(self) -> str | None:
        """Why this policy is bypassable, when it allows AWS ranges without requiring the secret.

        design.md: an AWS selection means "any AWS tenant"; only the secret ties a request to *your*
        distribution. The middleware logs this once at startup, the config loader with file and key.
        """
        if not self.selectors or self.require_secret:
            return None
        return (
            "every address in the AWS ranges is shared by all AWS customers: anyone can create their own "
            "CloudFront distribution (or an EC2 instance or Lambda function in those regions) aimed at this "
            "origin and reach it from an allowed address, bypassing your distribution, its WAF and its geo "
            "restrictions (the cdn-proxy attack)"
        )

    @property
    def has_country_rules(self) -> bool:
        return self.allow_countries is not None or bool(self.deny_countries)

    @property
    def reject_unknown_country(self) -> bool:
        """The effective ``unknown_country`` setting."""
        if self.unknown_country is None:
            return self.allow_countries is not None
        return self.unknown_country == "reject"


@dataclass(frozen=True, slots=True)
class Route:
    """Maps requests to a policy: ``prefix`` matches whole path segments (``/api`` matches ``/api``
    and ``/api/x``, not ``/apix``; a prefix ending in ``/`` matches anything below it), optionally
    only for ``methods`` (upper case; a websocket handshake counts as ``GET``). The longest
    matching prefix wins; at equal length a route with methods wins over one without."""

    prefix: str
    policy: Policy
    methods: frozenset[str] | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, str) or not self.prefix.startswith("/"):
            raise ConfigError(f"route prefix: must start with '/', got {self.prefix!r}")
        if any(seg in (".", "..") for seg in self.prefix.split("/")):
            raise ConfigError(f"route {self.prefix!r}: prefix must not contain dot segments")
        if not isinstance(self.policy, Policy):
            raise ConfigError(f"route {self.prefix!r}: policy must be a Policy, got {type(self.policy).__name__}")
        if self.methods is not None:
            if isinstance(self.methods, str):
                raise ConfigError(f"route {self.prefix!r}: methods must be a list, got the string {self.methods!r}")
            methods = frozenset(m.upper() for m in self.methods)
            bad = [m for m in methods if not _METHOD.fullmatch(m)]
            if bad or not methods:
                raise ConfigError(f"route {self.prefix!r}: invalid methods {sorted(bad) or '(empty)'}")
            object.__setattr__(self, "methods", methods)
        if not self.name:
            label = self.prefix if self.methods is None else f"{' '.join(sorted(self.methods))} {self.prefix}"
            object.__setattr__(self, "name", label)
