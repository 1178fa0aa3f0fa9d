"""Policies, routes and the compiled engine, exercised through ``OriginShield.explain``.

Addresses are real ones from the embedded ranges snapshot (``originshield lookup``):
130.176.1.1 (130.176.0.0/18) and 15.158.1.1 (15.158.0.0/16) and 2600:9000:1000::1 are
CLOUDFRONT_ORIGIN_FACING; 54.239.130.1 is CLOUDFRONT but not origin-facing (viewer-facing edge);
3.80.0.1 is EC2 us-east-1; 18.97.192.1 is EC2 eu-west-1. Countries come from MaxMind's test
databases in tests/data/geoip (PROVENANCE.md): 81.2.69.160 GB, 89.160.20.112 SE, 216.160.83.56 US,
8.8.8.8 not found.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import maxminddb
import pytest

from originshield import AwsIpRanges, OriginShield, Policy, Route, SecretHeader
from originshield.decision import REASONS, country_verdict
from originshield.engine.routes import RouteTable
from originshield.errors import ConfigError
from originshield.policy import Cidr, CountryResolver
from originshield.selector import Selector
from originshield.snapshot import SnapshotHolder

from .asgi import never_called

GEOIP = Path(__file__).parent / "data" / "geoip" / "GeoIP2-Country-Test.mmdb"
SECRET = "test-origin-secret-0123456789"
OLD_SECRET = "old-origin-secret-0123456789"
EDGE, EDGE2, EDGE6 = "130.176.1.1", "15.158.1.1", "2600:9000:1000::1"
VIEWER_FACING_CLOUDFRONT = "54.239.130.1"
GB, SE, US, NOWHERE = "81.2.69.160", "89.160.20.112", "216.160.83.56", "8.8.8.8"


class MmdbCountries:
    """A real CountryResolver over a MaxMind database (the GeoIP module provides the product one)."""

    def __init__(self, path: Path) -> None:
        self.reader = maxminddb.open_database(str(path))
        self.calls = 0

    def country(self, packed: bytes) -> str | None:
        self.calls += 1
        record = self.reader.get(ipaddress.ip_address(packed))
        if not isinstance(record, dict):
            return None
        country = record.get("country")
        code = country.get("iso_code") if isinstance(country, dict) else None
        return code if isinstance(code, str) else None


@pytest.fixture
def geo() -> Iterator[MmdbCountries]:
    resolver = MmdbCountries(GEOIP)
    yield resolver
    resolver.reader.close()


def secret() -> SecretHeader:
    return SecretHeader.of("x-origin-verify", [SECRET, OLD_SECRET])


def shield(ranges: AwsIpRanges, **options: Any) -> OriginShield:
    options.setdefault("secret", secret())
    return OriginShield(never_called, ranges=ranges, **options)


def cf_headers(xff: str | None, value: str | None = SECRET, **extra: str) -> dict[str, str]:
    headers = dict(extra)
    if xff is not None:
        headers["x-forwarded-for"] = xff
    if value is not None:
        headers["x-origin-verify"] = value
    return headers


# -- configuration values ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "no allowed sources"),
        ({"cidrs": ["10.0.0.1/8"]}, r"cidrs\[0\]"),
        ({"cidrs": "10.0.0.0/8"}, "must be a list"),
        ({"selectors": ["no-such-preset"]}, r"selectors\[0\].*unknown preset"),
        ({"cidrs": ["10.0.0.0/8"], "allow_countries": ["GBR"]}, "alpha-2"),
        ({"cidrs": ["10.0.0.0/8"], "allow_countries": "GB"}, "list of country codes"),
        ({"cidrs": ["10.0.0.0/8"], "allow_countries": []}, "allow_countries is empty"),
        ({"cidrs": ["10.0.0.0/8"], "allow_countries": ["GB"], "deny_countries": ["gb"]}, "both allowed and denied"),
        ({"cidrs": ["10.0.0.0/8"], "source": "xff"}, "source must be one of"),
        ({"cidrs": ["10.0.0.0/8"], "unknown_country": "maybe"}, "unknown_country"),
        ({"cidrs": ["10.0.0.0/8"], "require_secret": "yes"}, "require_secret must be true or false"),
    ],
)
def test_policy_config_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Policy("p", **kwargs)


def test_policy_normalises_inputs() -> None:
    policy = Policy.of(
        "p",
        selectors=["cloudfront-origin-facing"],
        cidrs=["10.0.0.0/16"],
        allow_countries=[" gb", "FR"],
        require_secret=True,
    )
    assert policy.selectors == (Selector.preset("cloudfront-origin-facing"),)
    assert policy.cidrs == (ipaddress.ip_network("10.0.0.0/16"),)
    assert policy.allow_countries == frozenset({"GB", "FR"})
    assert policy.deny_countries == frozenset()


def test_aws_selection_without_secret_warns_once_at_startup(caplog: pytest.LogCaptureFixture) -> None:
    region = Policy.region_locked(["us-east-1"])
    assert region.shared_pool_risk is not None
    assert "(the cdn-proxy attack)" in region.shared_pool_risk
    assert Policy.cloudfront().shared_pool_risk is None  # requires the secret
    assert Policy.health_check(["10.0.0.0/16"]).shared_pool_risk is None  # CIDRs only
    # The middleware logs it once per distinct policy, however many routes use it.
    routes = [Route("/a", region, name="a"), Route("/b", region, name="b")]
    with caplog.at_level(logging.WARNING, logger="originshield"):
        OriginShield(never_called, default=region, routes=routes)
    assert caplog.text.count("cdn-proxy") == 1
    assert "policy 'region:us-east-1' allows regions=us-east-1 without requiring the secret header" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="originshield"):
        OriginShield(never_called, default=region, warn_shared_pools=False)
    assert caplog.text == ""


@pytest.mark.parametrize(
    ("allow", "deny", "unknown", "country", "reason"),
    [
        (["GB"], [], None, "GB", "allowed"),
        (["GB"], [], None, "SE", "country_not_allowed"),
        (["GB"], [], None, None, "country_unknown"),  # default with an allow list: reject unknown
        (["GB"], [], "allow", None, "allowed"),
        (None, ["SE"], None, "SE", "country_not_allowed"),
        (None, ["SE"], None, "GB", "allowed"),
        (None, ["SE"], None, None, "allowed"),  # default without an allow list: unknown passes
        (None, ["SE"], "reject", None, "country_unknown"),
    ],
)
def test_country_verdict(
    allow: list[str] | None, deny: list[str], unknown: Any, country: str | None, reason: str
) -> None:
    policy = Policy.of("p", cidrs=["10.0.0.0/8"], allow_countries=allow, deny_countries=deny, unknown_country=unknown)
    assert country_verdict(policy, country) == reason


@pytest.mark.parametrize(
    ("prefix", "methods", "method", "path", "expected"),
    [
        ("/api", None, "GET", "/api", True),
        ("/api", None, "GET", "/api/", True),
        ("/api", None, "GET", "/api/x/y", True),
        ("/api", None, "GET", "/apix", False),
        ("/api", None, "GET", "/", False),
        ("/api/", None, "GET", "/api", False),
        ("/api/", None, "GET", "/api/x", True),
        ("/", None, "GET", "/anything", True),
        ("/api", ["post"], "POST", "/api/x", True),
        ("/api", ["post"], "GET", "/api/x", False),
    ],
)
def test_route_matching(  # noqa: PLR0917 (pytest parameters)
    ranges: AwsIpRanges, prefix: str, methods: list[str] | None, method: str, path: str, expected: bool
) -> None:
    policy = Policy.health_check(["10.0.0.0/8"])
    route = Route(prefix, policy, methods=frozenset(methods) if methods else None)
    table = RouteTable(policy, [route], ranges, report_only=False, stale_reject=False)
    assert (table.match(method, path).name == route.name) is expected


@pytest.mark.parametrize(
    ("prefix", "methods", "message"),
    [
        ("api", None, "must start with '/'"),
        ("/a/../b", None, "dot segments"),
        ("/api", "GET", "must be a list"),
        ("/api", ["GE T"], "invalid methods"),
    ],
)
def test_route_config_errors(prefix: str, methods: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Route(prefix, Policy.health_check(["10.0.0.0/8"]), methods=methods)


def test_middleware_config_errors(ranges: AwsIpRanges) -> None:
    with pytest.raises(ConfigError, match="secret=SecretHeader"):
        OriginShield(never_called, ranges=ranges)
    with pytest.raises(ConfigError, match="uses the secret header"):
        OriginShield(never_called, ranges=ranges, default=Policy.cloudfront())
    with pytest.raises(ConfigError, match="country rules need"):
        shield(ranges, default=Policy.cloudfront(allow_countries=["GB"]))
    with pytest.raises(ConfigError, match="status"):
        shield(ranges, status=200)
    with pytest.raises(ConfigError, match=r"routes\[0\]"):
        shield(ranges, routes=["/api"])
    p = Policy.cloudfront()
    with pytest.raises(ConfigError, match="names must be unique"):
        shield(ranges, routes=[Route("/a", p), Route("/a/", p, name="/a")])
    with pytest.raises(ConfigError, match="matches no prefix"):
        shield(ranges, default=Policy("typo", selectors=(Selector.of(services=["CLOUDFRONT_ORIGN_FACING"]),)))


# -- topology 1: CloudFront -> app -----------------------------------------------------------------------


def test_topology1_allowed_with_attribution(ranges: AwsIpRanges) -> None:
    d = shield(ranges).explain("GET", "/", cf_headers("203.0.113.7"), peer=EDGE)
    assert (d.allowed, d.reason, d.route, d.policy) == (True, "allowed", "default", "cloudfront-default")
    assert (d.peer, d.checked, d.checked_from, d.viewer) == (EDGE, EDGE, "peer", "203.0.113.7")
    assert str(d.matched[0].prefix) == "130.176.0.0/18"
    assert d.matched[0].service == "CLOUDFRONT_ORIGIN_FACING" and d.matched[0].region == "GLOBAL"
    assert d.secret == "verified" and d.sync_token == ranges.sync_token
    assert SECRET not in json.dumps(d.as_dict()) and SECRET not in d.log_line()


@pytest.mark.parametrize(
    ("peer", "headers", "reason"),
    [
        ("198.51.100.1", cf_headers("203.0.113.7"), "peer_not_allowed"),  # direct to origin
        (VIEWER_FACING_CLOUDFRONT, cf_headers("203.0.113.7"), "peer_not_allowed"),  # CLOUDFRONT, not origin-facing
        (EDGE, cf_headers("203.0.113.7", value=None), "secret_missing"),  # another tenant's distribution
        (EDGE, cf_headers("203.0.113.7", value="wrong-secret-0123456789xx"), "secret_invalid"),
        (EDGE, cf_headers("203.0.113.7", value=SECRET[:-1]), "secret_invalid"),  # wrong length
        (EDGE, cf_headers(None), "bad_forwarded_chain"),  # CloudFront always sends the viewer
        (EDGE, cf_headers("unknown"), "bad_forwarded_chain"),
        # XFF from an untrusted peer is only the viewer: it can never turn a bad peer into a good one.
        ("198.51.100.1", cf_headers(EDGE), "peer_not_allowed"),
    ],
)
def test_topology1_rejected(ranges: AwsIpRanges, peer: str, headers: dict[str, str], reason: str) -> None:
    d = shield(ranges).explain("GET", "/", headers, peer=peer)
    assert (d.allowed, d.reason) == (False, reason)


def test_rotation_old_secret_still_accepted(ranges: AwsIpRanges) -> None:
    assert shield(ranges).explain("GET", "/", cf_headers("203.0.113.7", value=OLD_SECRET), peer=EDGE).allowed


def test_ipv6_and_mapped_peers(ranges: AwsIpRanges) -> None:
    s = shield(ranges)
    assert s.explain("GET", "/", cf_headers("2001:db8::7"), peer=EDGE6).allowed
    d = s.explain("GET", "/", cf_headers("203.0.113.7"), peer="::ffff:" + EDGE)
    assert d.allowed and d.peer == EDGE
    assert s.explain("GET", "/", cf_headers("203.0.113.7"), peer="fe80::1%eth0").reason == "bad_client_address"
    assert s.explain("GET", "/", cf_headers("203.0.113.7"), peer="130.176.001.1").reason == "bad_client_address"
    assert s.explain("GET", "/", cf_headers("203.0.113.7"), peer=None).reason == "no_client_address"


# -- topology 2: CloudFront -> ALB -> app ----------------------------------------------------------------

ALB, VPC = "10.0.3.17", "10.0.0.0/16"


def topo2(ranges: AwsIpRanges, **options: Any) -> OriginShield:
    return shield(ranges, trusted_proxies=[VPC], routes=[Route("/health", Policy.health_check([VPC]))], **options)


def test_topology2_allowed(ranges: AwsIpRanges) -> None:
    d = topo2(ranges).explain("GET", "/api", cf_headers(f"203.0.113.7, {EDGE}"), peer=ALB)
    assert d.allowed
    assert (d.peer, d.checked, d.checked_from, d.viewer) == (ALB, EDGE, "x-forwarded-for", "203.0.113.7")


@pytest.mark.parametrize(
    ("xff", "reason"),
    [
        # The viewer prepends a CloudFront address: the leftmost entries are never trusted.
        (f"{EDGE}, 198.51.100.9, 198.51.100.9", "edge_not_allowed"),
        (f"{EDGE}, 203.0.113.7, 198.51.100.9", "edge_not_allowed"),
        (f"{EDGE}", "bad_forwarded_chain"),  # edge without the viewer CloudFront always adds
        ("", "bad_forwarded_chain"),
        (None, "bad_forwarded_chain"),
        (f"203.0.113.7, {EDGE}, garbage", "bad_forwarded_chain"),  # unparsable entry in the walk
        ("203.0.113.7, 130.176.01.1", "bad_forwarded_chain"),  # leading zeros
        (f"203.0.113.7, {EDGE}%eth0", "bad_forwarded_chain"),
        (f"garbage, {EDGE}", "bad_forwarded_chain"),  # the viewer entry must parse too
        (f"203.0.113.7, {VIEWER_FACING_CLOUDFRONT}", "edge_not_allowed"),
        (f"{ALB}, 10.0.9.9", "bad_forwarded_chain"),  # only trusted hops: nothing to check
    ],
)
def test_topology2_rejected(ranges: AwsIpRanges, xff: str | None, reason: str) -> None:
    d = topo2(ranges).explain("GET", "/api", cf_headers(xff), peer=ALB)
    assert (d.allowed, d.reason) == (False, reason)


def test_topology2_forms_and_extra_trusted_hops(ranges: AwsIpRanges) -> None:
    s = topo2(ranges)
    # "junk" left of the viewer is the viewer's own text: never parsed, never decisive.
    assert s.explain("GET", "/", cf_headers(f"junk, 203.0.113.7, {EDGE}"), peer=ALB).allowed
    assert s.explain("GET", "/", cf_headers(f"203.0.113.7,[{EDGE6}]:443"), peer=ALB).allowed
    assert s.explain("GET", "/", cf_headers(f"203.0.113.7:5555, ::ffff:{EDGE}"), peer=ALB).allowed
    # an nginx inside the VPC behind the ALB appended the ALB's address: skipped as a trusted hop
    d = s.explain("GET", "/", cf_headers(f"203.0.113.7, {EDGE}, 10.0.1.1"), peer=ALB)
    assert d.allowed and d.checked == EDGE and d.viewer == "203.0.113.7"
    # too many trusted hops is refused rather than walked forever
    chain = ", ".join(["203.0.113.7", EDGE] + ["10.0.1.1"] * 20)
    assert s.explain("GET", "/", cf_headers(chain), peer=ALB).reason == "bad_forwarded_chain"


def test_topology2_health_check_exemption_is_narrow(ranges: AwsIpRanges) -> None:
    s = topo2(ranges)
    d = s.explain("GET", "/health", {}, peer=ALB)  # ALB health check: no secret, no XFF
    assert d.allowed and d.route == "/health" and d.policy == "health-check"
    assert s.explain("GET", "/health/deep", {}, peer=ALB).allowed
    assert s.explain("GET", "/health", {}, peer="198.51.100.1").reason == "peer_not_allowed"
    # an attacker's XFF cannot turn into a VPC address on the health route: the peer is checked
    assert s.explain("GET", "/health", {"x-forwarded-for": ALB}, peer="198.51.100.1").reason == "peer_not_allowed"
    assert s.explain("GET", "/healthz", {}, peer=ALB).reason == "secret_missing"  # not the health route
    assert s.explain("GET", "/health/../admin", {}, peer=ALB).reason == "bad_path"
    assert s.explain("GET", "/api", {}, peer=ALB).reason == "secret_missing"


# -- topology 3: region-locked backend ---------------------------------------------------------------


def test_topology3_region_locked(ranges: AwsIpRanges) -> None:
    s = OriginShield(never_called, ranges=ranges, default=Policy.region_locked(["us-east-1"]))
    d = s.explain("GET", "/", {}, peer="3.80.0.1")
    assert d.allowed and d.matched[0].region == "us-east-1" and d.secret == "not_configured"
    assert s.explain("GET", "/", {}, peer="18.97.192.1").reason == "peer_not_allowed"  # eu-west-1
    # forwarding headers from an untrusted client mean nothing
    assert s.explain("GET", "/", {"x-forwarded-for": "3.80.0.1"}, peer="198.51.100.1").reason == "peer_not_allowed"


def test_route_precedence(ranges: AwsIpRanges) -> None:
    strict = Policy.of("strict", cidrs=["192.0.2.0/24"])
    api = Policy.of("api", cidrs=["198.51.100.0/24"])
    post = Policy.of("api-post", cidrs=["203.0.113.0/24"])
    s = shield(
        ranges,
        default=strict,
        routes=[Route("/api", api), Route("/api", post, methods=frozenset({"POST"})), Route("/api/admin", strict)],
    )
    assert s.explain("GET", "/api/x", {}, peer="198.51.100.1").policy == "api"
    assert s.explain("POST", "/api/x", {}, peer="203.0.113.1").policy == "api-post"
    assert s.explain("GET", "/api/admin/x", {}, peer="198.51.100.1").reason == "peer_not_allowed"
    assert s.explain("GET", "/apix", {}, peer="198.51.100.1").route == "default"
    reports = {r.policy.name: r for r in s.policies()}
    assert reports["strict"].routes == ("/api/admin", "default")
    assert reports["api"].prefixes == (ipaddress.ip_network("198.51.100.0/24"),)
    assert reports["api"].records == (Cidr(ipaddress.ip_network("198.51.100.0/24")),)


def test_policy_reports_list_selected_prefixes(ranges: AwsIpRanges) -> None:
    (report,) = shield(ranges).policies()
    expected = ranges.preset("cloudfront-origin-facing").prefixes()
    assert set(report.prefixes) == expected and report.routes == ("default",)


# -- countries ----------------------------------------------------------------------------------------------


def test_country_rules_apply_to_the_viewer_behind_trusted_proxies(ranges: AwsIpRanges, geo: MmdbCountries) -> None:
    s = topo2(ranges, default=Policy.cloudfront(allow_countries=["GB", "US"]), geoip=geo)
    d = s.explain("GET", "/", cf_headers(f"{GB}, {EDGE}"), peer=ALB)
    assert (d.allowed, d.country, d.country_source, d.viewer) == (True, "GB", "geoip", GB)
    d = s.explain("GET", "/", cf_headers(f"{SE}, {EDGE}"), peer=ALB)
    assert (d.reason, d.country) == ("country_not_allowed", "SE")
    assert "country=SE" in d.log_line()
    assert s.explain("GET", "/", cf_headers(f"{NOWHERE}, {EDGE}"), peer=ALB).reason == "country_unknown"
    # a spoofed leftmost entry (GB) does not relocate a Swedish viewer
    assert s.explain("GET", "/", cf_headers(f"{GB}, {SE}, {EDGE}"), peer=ALB).reason == "country_not_allowed"


def test_country_topology1_uses_viewer_not_edge(ranges: AwsIpRanges, geo: MmdbCountries) -> None:
    s = shield(ranges, default=Policy.cloudfront(deny_countries=["SE"]), geoip=geo)
    d = s.explain("GET", "/", cf_headers(SE), peer=EDGE)
    assert (d.reason, d.viewer, d.checked) == ("country_not_allowed", SE, EDGE)
    assert s.explain("GET", "/", cf_headers(NOWHERE), peer=EDGE).allowed  # deny list: unknown passes


def test_viewer_country_header_only_with_verified_secret(ranges: AwsIpRanges, geo: MmdbCountries) -> None:
    policy = Policy(
        "geo",
        selectors=(Selector.preset("cloudfront-origin-facing"),),
        require_secret=False,
        allow_countries=frozenset({"GB"}),
        viewer_country_header=True,
    )
    s = shield(ranges, default=policy, geoip=geo)
    # verified: CloudFront's header wins over the database (viewer SE in the DB)
    d = s.explain("GET", "/", cf_headers(SE, **{"cloudfront-viewer-country": "GB"}), peer=EDGE)
    assert (d.allowed, d.country, d.country_source) == (True, "GB", "header")
    # not verified: the header is someone's text; the database decides
    d = s.explain("GET", "/", cf_headers(SE, value=None, **{"cloudfront-viewer-country": "GB"}), peer=EDGE)
    assert (d.reason, d.country, d.country_source) == ("country_not_allowed", "SE", "geoip")
    # verified but absent: the database
    d = s.explain("GET", "/", cf_headers(GB), peer=EDGE)
    assert (d.allowed, d.country_source) == (True, "geoip")
    # verified but malformed: unknown, never a guess
    d = s.explain("GET", "/", cf_headers(GB, **{"cloudfront-viewer-country": "gb"}), peer=EDGE)
    assert (d.reason, d.country_source) == ("country_unknown", "header")
    # header only, no database: absent means unknown
    s2 = shield(ranges, default=policy)
    assert s2.explain("GET", "/", cf_headers(GB), peer=EDGE).reason == "country_unknown"


def test_viewer_address_header_only_with_verified_secret(ranges: AwsIpRanges, geo: MmdbCountries) -> None:
    policy = Policy.cloudfront(allow_countries=["GB"], viewer_address_header=True)
    s = topo2(ranges, default=policy, geoip=geo)
    d = s.explain("GET", "/", cf_headers(f"{SE}, {EDGE}", **{"cloudfront-viewer-address": f"{GB}:4431"}), peer=ALB)
    assert (d.allowed, d.viewer) == (True, GB)
    bad = cf_headers(f"{GB}, {EDGE}", **{"cloudfront-viewer-address": GB})  # no port
    assert s.explain("GET", "/", bad, peer=ALB).reason == "bad_viewer_address"


def test_country_resolver_protocol_and_failure(ranges: AwsIpRanges, geo: MmdbCountries) -> None:
    assert isinstance(geo, CountryResolver)

    class Broken:
        def country(self, packed: bytes) -> str | None:
            raise RuntimeError("database went away")

    s = shield(ranges, default=Policy.cloudfront(allow_countries=["GB"]), geoip=Broken())
    assert s.explain("GET", "/", cf_headers(GB), peer=EDGE).reason == "country_unknown"  # fail closed


# -- snapshots -----------------------------------------------------------------------------------------------


def _doc(prefixes: list[tuple[str, str]], token: int) -> AwsIpRanges:
    doc = {
        "syncToken": str(token),
        "createDate": "2026-11-01-00-00-00",
        "prefixes": [
            {"ip_prefix": p, "region": "GLOBAL", "service": svc, "network_border_group": "GLOBAL"}
            for p, svc in prefixes
        ],
        "ipv6_prefixes": [],
    }
    return AwsIpRanges.from_bytes(json.dumps(doc).encode())


def test_new_snapshot_recompiles_and_empty_selection_vetoes() -> None:
    holder = SnapshotHolder(_doc([("130.176.0.0/18", "CLOUDFRONT_ORIGIN_FACING")], 1), "file")
    s = OriginShield(never_called, ranges=holder, secret=secret())
    assert s.explain("GET", "/", cf_headers("203.0.113.7"), peer=EDGE).allowed
    assert not s.explain("GET", "/", cf_headers("203.0.113.7"), peer=EDGE2).allowed
    holder.publish(_doc([("15.158.0.0/16", "CLOUDFRONT_ORIGIN_FACING")], 2), "network")
    d = s.explain("GET", "/", cf_headers("203.0.113.7"), peer=EDGE2)
    assert d.allowed and d.generation == 2 and d.sync_token == 2
    assert s.explain("GET", "/", cf_headers("203.0.113.7"), peer=EDGE).reason == "peer_not_allowed"
    # a publication without any origin-facing range is refused: the old data stays in service
    with pytest.raises(ConfigError, match="matches no prefix"):
        holder.publish(_doc([("15.158.0.0/16", "AMAZON")], 3), "network")
    assert holder.current.generation == 2
    assert s.explain("GET", "/", cf_headers("203.0.113.7"), peer=EDGE2).allowed


def test_reasons_are_documented() -> None:
    assert len(set(REASONS)) == len(REASONS) and REASONS[0] == "allowed"
