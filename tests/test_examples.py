"""Smoke tests of ``examples/``: each configuration passes ``check-config``, each ``asgi.py`` builds and
decides as its topology says (Starlette TestClient with the peer address of that topology), and the
examples run under a real server: ``originshield serve`` and plain uvicorn, on a free loopback port.

The examples' ``originshield.toml`` files are used as shipped; only what the environment overrides
are designed for changes: the ranges source (the test document instead of the AWS URL), the cache
directory, the GeoIP database (a small ``.mmdb`` generated here), and the secret.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import os
import runpy
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet
from starlette.testclient import TestClient

from originshield.aws import load
from originshield.cli import main

from .loopback import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # a real server or process; run once in CI (ci/tests.sh)

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "examples"
RANGES = ROOT / "tests" / "data" / "aws" / "ip-ranges.json"
SECRET = "example-secret-" + "q" * 24  # a test fixture, not a real secret
EDGE = "130.176.88.1"  # 130.176.88.0/21 GLOBAL CLOUDFRONT_ORIGIN_FACING
VIEWER = "203.0.113.50"
# Two us-east-1 AMAZON addresses (tests/data/aws/ip-ranges.json); the generated GeoIP database puts
# the first in the US and the second, as if re-assigned, in Germany.
US_EAST_1_US = "3.2.58.10"  # 3.2.58.0/24 us-east-1 AMAZON
US_EAST_1_DE = "15.230.221.10"  # 15.230.221.0/24 us-east-1 AMAZON
EU_WEST_1 = "18.97.192.1"  # 18.97.192.0/18 eu-west-1 AMAZON, EC2: AWS, but not us-east-1


def mmdb(path: Path) -> Path:
    writer = MMDBWriter(ip_version=6, database_type="GeoLite2-Country", ipv4_compatible=True)
    for cidr, code in (("3.2.58.0/24", "US"), ("15.230.221.0/24", "DE"), ("203.0.113.0/24", "US")):
        writer.insert_network(IPSet([cidr]), {"country": {"iso_code": code}})
    writer.to_db_file(str(path))
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    tmp = tmp_path_factory.mktemp("examples")
    values = {
        "ORIGINSHIELD_SECRET": SECRET,
        "ORIGINSHIELD_RANGES_SOURCE": str(RANGES),
        "ORIGINSHIELD_CACHE_DIR": str(tmp / "cache"),
        "ORIGINSHIELD_GEOIP_DATABASE": str(mmdb(tmp / "country.mmdb")),
    }
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    yield values
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def asgi(example: str) -> Any:
    """Run ``examples/<example>/asgi.py`` afresh (it reads the environment when imported)."""
    return runpy.run_path(str(EXAMPLES / example / "asgi.py"))["app"]


def test_addresses_used_here_are_what_the_comments_say() -> None:
    ranges = load(RANGES)
    amazon = {(str(r.prefix), r.region) for r in ranges.records if r.service == "AMAZON"}
    assert ("3.2.58.0/24", "us-east-1") in amazon and ("15.230.221.0/24", "us-east-1") in amazon
    assert {r.region for r in ranges.records if r.prefix.overlaps(_net(EU_WEST_1))} == {"eu-west-1"}
    assert any(r.service == "CLOUDFRONT_ORIGIN_FACING" for r in ranges.records if r.prefix.overlaps(_net(EDGE)))


def _net(ip: str) -> Any:
    return ipaddress.ip_network(ip)


@pytest.mark.parametrize("example", ["cloudfront_direct", "cloudfront_alb", "region_locked", "per_route"])
def test_check_config_accepts_every_example(
    env: dict[str, str], example: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", str(EXAMPLES / example / "originshield.toml")]) == 0
    out = capsys.readouterr().out
    assert "valid" in out.splitlines()[0]
    assert "environment override: ORIGINSHIELD_RANGES_SOURCE -> ranges.source" in out
    # Only the region-locked backend admits a shared pool without the secret, and is warned about it.
    assert ("cdn-proxy" in out) == (example == "region_locked")


def test_topology_1_cloudfront_direct(env: dict[str, str]) -> None:
    app = asgi("cloudfront_direct")
    with TestClient(app, client=(EDGE, 40000)) as edge:
        allowed = edge.get("/headers", headers={"x-forwarded-for": VIEWER, "x-origin-verify": SECRET})
        assert allowed.status_code == 200
        assert "x-origin-verify" not in allowed.json()  # stripped before the app
        assert edge.get("/", headers={"x-forwarded-for": VIEWER}).status_code == 403  # someone else's distribution
    with TestClient(app, client=("198.51.100.9", 40000)) as direct:
        # Straight to the origin with a stolen secret and a forged chain: the peer is not CloudFront.
        headers = {"x-forwarded-for": f"{VIEWER}, {EDGE}", "x-origin-verify": SECRET}
        assert direct.get("/", headers=headers).status_code == 403
    assert app.counters.rejected() == {"secret_missing": 1, "peer_not_allowed": 1}


def test_topology_2_cloudfront_alb_with_health_check_exemption(env: dict[str, str]) -> None:
    app = asgi("cloudfront_alb")
    chain = {"x-forwarded-for": f"{VIEWER}, {EDGE}", "x-origin-verify": SECRET}
    with TestClient(app, client=("10.0.7.20", 40000)) as alb:
        assert alb.get("/api/items", headers=chain).status_code == 200
        assert alb.get("/health").status_code == 200  # the ALB health check: no secret, no XFF
        assert alb.head("/health").status_code == 200
        assert alb.post("/health").status_code == 403  # exemption for GET/HEAD only
        assert alb.get("/admin").status_code == 403  # never a blanket bypass for VPC addresses
        spoofed = {"x-forwarded-for": f"{EDGE}, 198.51.100.9", "x-origin-verify": SECRET}
        assert alb.get("/", headers=spoofed).status_code == 403
    with TestClient(app, client=(EDGE, 40000)) as outside:
        assert outside.get("/health").status_code == 403  # the exemption is for the VPC only
    assert app.counters.rejected() == {"secret_missing": 2, "edge_not_allowed": 1, "peer_not_allowed": 1}


def test_topology_3_region_locked_with_country(env: dict[str, str]) -> None:
    app = asgi("region_locked")
    expected = {US_EAST_1_US: 200, US_EAST_1_DE: 403, EU_WEST_1: 403, "198.51.100.9": 403}
    for peer, status in expected.items():
        with TestClient(app, client=(peer, 40000)) as client:
            # X-Forwarded-For is ignored: there is no trusted proxy in this topology.
            assert client.get("/", headers={"x-forwarded-for": US_EAST_1_US}).status_code == status, peer
    assert app.counters.rejected() == {"country_not_allowed": 1, "peer_not_allowed": 2}


def test_per_route_policies(env: dict[str, str]) -> None:
    app = asgi("per_route")
    cases = [
        (EDGE, "GET", "/api/items", {"x-forwarded-for": VIEWER, "x-origin-verify": SECRET}, 200),
        (EDGE, "GET", "/admin", {"x-forwarded-for": VIEWER, "x-origin-verify": SECRET}, 403),
        ("198.51.100.77", "GET", "/admin", {}, 200),  # the office network, directly
        ("198.51.100.77", "GET", "/api/items", {}, 403),
        ("127.0.0.1", "GET", "/health", {}, 200),
        ("127.0.0.1", "POST", "/health", {}, 403),
    ]
    for peer, method, path, headers, status in cases:
        with TestClient(app, client=(peer, 40000)) as client:
            assert client.request(method, path, headers=headers).status_code == status, (peer, method, path)
    assert app.counters.rejected() == {"peer_not_allowed": 1, "secret_missing": 2}


# -- under a real server ------------------------------------------------------------------------------


def wait_for(url: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("server did not start")


@contextlib.contextmanager
def serve(args: list[str], env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    proc = subprocess.Popen(
        [*args, "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(base + "/health", proc)
        yield base, proc
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_originshield_serve_sees_the_real_peer(env: dict[str, str]) -> None:
    script = Path(sys.executable).with_name("originshield")
    config = "examples/per_route/originshield.toml"
    with serve([str(script), "serve", "examples.app:app", "--config", config], env) as (base, proc):
        assert httpx.get(base + "/health").status_code == 200  # 127.0.0.1: the local monitoring agent
        # A forged chain naming a CloudFront edge, with the secret: uvicorn's proxy-header rewriting
        # is off, so the peer stays 127.0.0.1, which is not an origin-facing address.
        headers = {"x-forwarded-for": EDGE, "x-origin-verify": SECRET}
        assert httpx.get(base + "/api/items", headers=headers).status_code == 403
        # Sent as is (httpx would remove the dot segments): the weak /health route must not cover it.
        conn = http.client.HTTPConnection("127.0.0.1", int(base.rsplit(":", 1)[1]), timeout=10)
        conn.request("GET", "/health/../admin")
        assert conn.getresponse().status == 403
        conn.close()
        proc.terminate()
        output = proc.communicate(timeout=15)[0]
    assert "reason=peer_not_allowed route=api policy=public" in output
    assert "reason=bad_path route=health" in output
    assert "peer=127.0.0.1" in output and SECRET not in output


def test_plain_uvicorn_runs_the_asgi_module(env: dict[str, str]) -> None:
    args = [sys.executable, "-m", "uvicorn", "examples.per_route.asgi:app", "--no-proxy-headers"]
    with serve(args, env) as (base, proc):
        assert httpx.get(base + "/health").status_code == 200
        assert httpx.get(base + "/admin").status_code == 403
        proc.terminate()
        output = proc.communicate(timeout=15)[0]
    assert "Application startup complete" in output
