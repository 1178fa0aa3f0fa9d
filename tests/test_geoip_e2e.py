"""Country rules end to end through the middleware, over small .mmdb files that place real AWS
addresses (tests/data/aws/ip-ranges.json) in chosen countries: MaxMind's test databases cover no
AWS address.

Topology 3 (design.md): a region-locked backend, client -> app directly; the peer must be in
us-east-1 (any service) and, with a country rule, located in an allowed country. Topology 1 checks
that the *viewer* is located, never the CloudFront edge. Then CloudFront-Viewer-Country (only
after a verified secret), a reload that clears the decision cache, and a database replaced on disk
under a real uvicorn server while requests run.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet
from starlette.testclient import TestClient

from originshield.aws import AwsIpRanges
from originshield.geoip import CountryDatabase
from originshield.middleware import OriginShield
from originshield.policy import Policy, Route
from originshield.radix import RadixTree
from originshield.secret import SecretHeader

from .asgi import ok_app
from .loopback import uvicorn_thread

pytestmark = pytest.mark.e2e  # a real uvicorn on 127.0.0.1

DATA = Path(__file__).parent / "data"

# Real addresses from tests/data/aws/ip-ranges.json (asserted in test_the_addresses_are_what_we_say).
EAST_US = "52.4.1.10"  # 52.4.0.0/14 EC2 us-east-1         -> placed in US
EAST_DE = "18.97.1.10"  # 18.97.0.0/18 EC2 us-east-1        -> placed in DE
EAST_NOWHERE = "216.244.7.10"  # 216.244.7.0/24 EC2 us-east-1 -> not in the database
EAST_V6_US = "2600:f0f0:2::10"  # 2600:f0f0:2::/48 EC2 us-east-1 -> placed in US
WEST_US = "54.247.1.10"  # 54.247.0.0/16 EC2 eu-west-1      -> placed in US: wrong region anyway
EDGE_US = "130.176.88.5"  # 130.176.88.0/21 CLOUDFRONT_ORIGIN_FACING -> placed in US
VIEWER_DE = "198.51.100.7"  # TEST-NET-2, not AWS               -> placed in DE
VIEWER_US = "203.0.113.7"  # TEST-NET-3, not AWS                -> placed in US

PLACES: dict[str, str] = {
    "52.4.0.0/16": "US",
    "18.97.0.0/18": "DE",
    "2600:f0f0:2::/48": "US",
    "54.247.0.0/16": "US",
    "130.176.88.0/21": "US",
    "198.51.100.0/24": "DE",
    "203.0.113.0/24": "US",
}
SWAPPED = {net: {"US": "DE", "DE": "US"}[code] for net, code in PLACES.items()}

SECRET_NAME = "x-origin-verify"
SECRET_VALUE = "s3cret-" + "x" * 32  # a test fixture, not a real secret


def build(path: Path, networks: Mapping[str, str]) -> Path:
    writer = MMDBWriter(ip_version=6, database_type="GeoLite2-Country", ipv4_compatible=True)
    for cidr, code in networks.items():
        writer.insert_network(IPSet([cidr]), {"country": {"iso_code": code}, "continent": {"code": "XX"}})
    tmp = path.with_name(path.name + ".tmp")
    writer.to_db_file(str(tmp))
    os.replace(tmp, path)  # atomic replacement, as geoipupdate does
    return path


@pytest.fixture
def geoip(tmp_path: Path) -> Iterator[CountryDatabase]:
    with CountryDatabase(build(tmp_path / "country.mmdb", PLACES), close_grace=0) as db:
        yield db


def shield(ranges: AwsIpRanges, geoip: CountryDatabase | None, policy: Policy, **options: Any) -> OriginShield:
    return OriginShield(ok_app, ranges=ranges, default=policy, geoip=geoip, **options)


def get(app: OriginShield, peer: str, headers: Mapping[str, str] | None = None) -> int:
    with TestClient(app, client=(peer, 40000)) as client:
        status: int = client.get("/x", headers=dict(headers or {})).status_code
        return status


def reason(
    app: OriginShield, peer: str, headers: Mapping[str, str] | None = None
) -> tuple[str, str | None, str | None]:
    decision = app.explain("GET", "/x", dict(headers or {}), peer)
    return decision.reason, decision.country, decision.country_source


def test_the_addresses_are_what_we_say(ranges: AwsIpRanges, geoip: CountryDatabase) -> None:
    tree = RadixTree.build(ranges.records)
    for ip in (EAST_US, EAST_DE, EAST_NOWHERE, EAST_V6_US):
        assert {r.region for r in tree.lookup(ip) if r.service == "EC2"} == {"us-east-1"}, ip
    assert {r.region for r in tree.lookup(WEST_US) if r.service == "EC2"} == {"eu-west-1"}
    assert "CLOUDFRONT_ORIGIN_FACING" in {r.service for r in tree.lookup(EDGE_US)}
    assert tree.lookup(VIEWER_DE) == tree.lookup(VIEWER_US) == ()


# -- topology 3: region-locked backend -----------------------------------------------------------------


def test_topology3_us_east_1_and_us_only(
    ranges: AwsIpRanges, geoip: CountryDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    app = shield(ranges, geoip, Policy.region_locked(["us-east-1"], allow_countries=["US"]))
    with caplog.at_level(logging.INFO, "originshield"):
        assert get(app, EAST_US) == 200
        assert get(app, EAST_V6_US) == 200
        assert get(app, f"::ffff:{EAST_US}") == 200  # a dual-stack socket's spelling of the same peer
        assert get(app, EAST_DE) == 403
        assert get(app, EAST_NOWHERE) == 403
        assert get(app, WEST_US) == 403
    assert reason(app, EAST_US) == ("allowed", "US", "geoip")
    assert reason(app, EAST_DE) == ("country_not_allowed", "DE", "geoip")
    assert reason(app, EAST_NOWHERE) == ("country_unknown", None, "geoip")  # allow list: unknown rejected
    # The region check runs first: a peer outside us-east-1 is never even located.
    assert reason(app, WEST_US) == ("peer_not_allowed", None, None)
    assert app.counters.rejected() == {"country_not_allowed": 1, "country_unknown": 1, "peer_not_allowed": 1}
    assert app.counters.allowed() == 3
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("action=")]
    assert any("reason=country_not_allowed" in x and f"peer={EAST_DE}" in x and "country=DE" in x for x in lines)
    assert any("reason=country_unknown" in x and f"peer={EAST_NOWHERE}" in x for x in lines)


def test_topology3_unknown_country_setting(ranges: AwsIpRanges, geoip: CountryDatabase) -> None:
    allow_unknown = shield(
        ranges, geoip, Policy.region_locked(["us-east-1"], allow_countries=["US"], unknown_country="allow")
    )
    assert get(allow_unknown, EAST_NOWHERE) == 200
    assert get(allow_unknown, EAST_DE) == 403
    # A deny list alone lets unknown addresses through by default; "reject" closes that.
    deny = shield(ranges, geoip, Policy.region_locked(["us-east-1"], deny_countries=["DE"]))
    assert [get(deny, ip) for ip in (EAST_US, EAST_DE, EAST_NOWHERE)] == [200, 403, 200]
    strict = shield(ranges, geoip, Policy.region_locked(["us-east-1"], deny_countries=["DE"], unknown_country="reject"))
    assert [get(strict, ip) for ip in (EAST_US, EAST_DE, EAST_NOWHERE)] == [200, 403, 403]
    assert reason(strict, EAST_NOWHERE)[0] == "country_unknown"


def test_country_rule_per_route(ranges: AwsIpRanges, geoip: CountryDatabase) -> None:
    region = Policy.region_locked(["us-east-1"], name="us-east-1 any country")
    us_only = Policy.region_locked(["us-east-1"], name="us-east-1 US", allow_countries=["US"])
    app = OriginShield(ok_app, ranges=ranges, default=region, routes=[Route("/us", us_only)], geoip=geoip)
    with TestClient(app, client=(EAST_DE, 1)) as client:
        assert client.get("/x").status_code == 200
        assert client.get("/us/x").status_code == 403
    with TestClient(app, client=(EAST_US, 1)) as client:
        assert client.get("/us/x").status_code == 200
    assert app.counters.rejected("/us") == {"country_not_allowed": 1}


# -- topology 1: the viewer is located, never the edge ------------------------------------------------


def test_topology1_locates_the_viewer_not_the_edge(ranges: AwsIpRanges, geoip: CountryDatabase) -> None:
    secret = SecretHeader.of(SECRET_NAME, [SECRET_VALUE])
    app = shield(ranges, geoip, Policy.cloudfront(allow_countries=["US"]), secret=secret)
    headers = {SECRET_NAME: SECRET_VALUE}
    # The edge (peer) sits in US; the viewer CloudFront appended to X-Forwarded-For decides.
    assert get(app, EDGE_US, {**headers, "x-forwarded-for": VIEWER_DE}) == 403
    assert get(app, EDGE_US, {**headers, "x-forwarded-for": VIEWER_US}) == 200
    # A viewer-written leftmost entry is never read.
    assert get(app, EDGE_US, {**headers, "x-forwarded-for": f"{VIEWER_US}, {VIEWER_DE}"}) == 403
    assert reason(app, EDGE_US, {**headers, "x-forwarded-for": VIEWER_DE}) == ("country_not_allowed", "DE", "geoip")


# -- CloudFront-Viewer-Country: CloudFront's word, only with a verified secret ------------------------


def test_viewer_country_header_only_after_verified_secret(ranges: AwsIpRanges, geoip: CountryDatabase) -> None:
    secret = SecretHeader.of(SECRET_NAME, [SECRET_VALUE])
    policy = Policy.region_locked(["us-east-1"], allow_countries=["US"], viewer_country_header=True)
    app = shield(ranges, geoip, policy, secret=secret)
    good = {SECRET_NAME: SECRET_VALUE}
    bad = {SECRET_NAME: "wrong-" + "y" * 32}
    # The database places EAST_DE in DE; the header says US.
    assert reason(app, EAST_DE, {**good, "cloudfront-viewer-country": "US"}) == ("allowed", "US", "header")
    assert get(app, EAST_DE, {**good, "cloudfront-viewer-country": "US"}) == 200
    # Without the secret (or with a wrong one) the header is somebody's claim: the database decides.
    assert reason(app, EAST_DE, {"cloudfront-viewer-country": "US"}) == ("country_not_allowed", "DE", "geoip")
    assert get(app, EAST_DE, {**bad, "cloudfront-viewer-country": "US"}) == 403
    assert get(app, EAST_DE, {"cloudfront-viewer-country": "US"}) == 403
    # Verified but absent: the database is used.
    assert reason(app, EAST_US, good) == ("allowed", "US", "geoip")
    assert reason(app, EAST_DE, good) == ("country_not_allowed", "DE", "geoip")
    # The header wins over the database when it is CloudFront's.
    assert get(app, EAST_US, {**good, "cloudfront-viewer-country": "DE"}) == 403
    # A malformed value is unknown, not a guess.
    assert reason(app, EAST_US, {**good, "cloudfront-viewer-country": "us"})[:2] == ("country_unknown", None)


def test_viewer_country_header_without_database(ranges: AwsIpRanges) -> None:
    secret = SecretHeader.of(SECRET_NAME, [SECRET_VALUE])
    policy = Policy.region_locked(["us-east-1"], allow_countries=["US"], viewer_country_header=True)
    app = shield(ranges, None, policy, secret=secret)
    good = {SECRET_NAME: SECRET_VALUE}
    assert get(app, EAST_DE, {**good, "cloudfront-viewer-country": "US"}) == 200
    assert reason(app, EAST_US, good) == ("country_unknown", None, None)  # enabled, absent, no database
    assert get(app, EAST_US, {"cloudfront-viewer-country": "US"}) == 403


# -- reload -------------------------------------------------------------------------------------------


def test_reload_clears_the_decision_cache(ranges: AwsIpRanges, geoip: CountryDatabase) -> None:
    app = shield(ranges, geoip, Policy.region_locked(["us-east-1"], allow_countries=["US"]))
    with TestClient(app, client=(EAST_DE, 1)) as de, TestClient(app, client=(EAST_US, 1)) as us:
        assert (de.get("/").status_code, us.get("/").status_code) == (403, 200)
        build(Path(geoip.path), SWAPPED)
        # Not checked yet: the old reader (and the cached decisions) still answer.
        assert (de.get("/").status_code, us.get("/").status_code) == (403, 200)
        assert geoip.check() is True
        assert (de.get("/").status_code, us.get("/").status_code) == (200, 403)


@pytest.fixture
def server(ranges: AwsIpRanges, geoip: CountryDatabase) -> Iterator[tuple[str, OriginShield]]:
    # Topology 3 on loopback: 127.0.0.1 is the trusted proxy in front, the client is the rightmost
    # X-Forwarded-For entry (uvicorn's own proxy-header rewriting off).
    app = shield(
        ranges,
        geoip,
        Policy.region_locked(["us-east-1"], allow_countries=["US"]),
        trusted_proxies=["127.0.0.1/32"],
    )
    with uvicorn_thread(app, proxy_headers=False, lifespan="off", http="httptools") as address:
        yield f"http://{address}", app


def test_database_replaced_on_disk_while_requests_run(
    server: tuple[str, OriginShield], geoip: CountryDatabase, tmp_path: Path
) -> None:
    """The file is replaced (atomic rename) back and forth while clients hammer the server: every
    request gets 200 or 403 (never an error), a request that starts after check() returned gets the
    new answer, and one that ends before check() started gets the old one."""
    url, app = server
    path = Path(geoip.path)
    versions = [build(tmp_path / "a.mmdb", PLACES), build(tmp_path / "b.mmdb", SWAPPED)]
    answers = {EAST_US: (200, 403), EAST_DE: (403, 200)}  # status under PLACES, under SWAPPED
    # Swaps started / finished (check() returned) so far; swap k installs version k % 2.
    started, finished = [0], [0]
    stop = threading.Event()
    failures: list[str] = []
    seen = {EAST_US: 0, EAST_DE: 0}

    def client(ip: str) -> None:
        with httpx.Client(base_url=url, headers={"x-forwarded-for": ip}, timeout=10) as http:
            while not stop.is_set():
                first = finished[0]
                try:
                    status = http.get("/").status_code
                except httpx.HTTPError as exc:
                    failures.append(f"{ip}: {exc!r}")
                    continue
                last = started[0]
                allowed = {answers[ip][k % 2] for k in range(first, last + 1)}
                if status not in allowed:
                    failures.append(f"{ip}: {status} between swaps {first} and {last}")
                seen[ip] += 1

    threads = [threading.Thread(target=client, args=(ip,)) for ip in (EAST_US, EAST_DE) for _ in range(2)]
    for t in threads:
        t.start()

    def progress(requests: int) -> None:
        # Wait for requests to complete (not for a fixed time: the machine may be busy), so that
        # every swap really happens between and during requests.
        target = sum(seen.values()) + requests
        deadline = time.monotonic() + 30
        while sum(seen.values()) < target and not failures:
            assert time.monotonic() < deadline, "the clients made no progress"
            time.sleep(0.002)

    try:
        deadline = time.monotonic() + 30
        while min(seen.values()) == 0 and not failures:  # both clients are running
            assert time.monotonic() < deadline, "the clients made no progress"
            time.sleep(0.002)
        for k in range(1, 9):
            progress(4)
            shutil.copy(versions[k % 2], tmp_path / "next.mmdb")
            started[0] = k
            os.replace(tmp_path / "next.mmdb", path)
            assert geoip.check() is True
            finished[0] = k
        progress(4)
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    assert not failures, failures[:5]
    assert min(seen.values()) > 0
    assert geoip.status.generation == 9
    assert geoip.status.lookup_errors == 0
    # Ended on the original placement.
    with httpx.Client(base_url=url) as http:
        assert http.get("/", headers={"x-forwarded-for": EAST_US}).status_code == 200
        assert http.get("/", headers={"x-forwarded-for": EAST_DE}).status_code == 403
    assert app.counters.total(reason="country_not_allowed") > 0
