"""``originshield replay``: real-format ALB and CloudFront logs (``tests/data/logs``, written by
``make_logs.py`` there, with real edge addresses) decided with the configured middleware, against
the ranges in service and against an older publication."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Any

import pytest

from originshield import OriginShield, SecretHeader
from originshield.aws import load_ranges
from originshield.cli import main
from originshield.replay import LogRequest, Replayer, read_logs
from tests.data.logs.make_logs import EXPECTED

from .asgi import never_called

ROOT = Path(__file__).parent.parent
LOGS = ROOT / "tests" / "data" / "logs"
CONFIG = str(ROOT / "examples" / "cloudfront_alb" / "originshield.toml")
OLD_RANGES = str(ROOT / "tests" / "data" / "aws" / "history" / "ip-ranges-1782167225.json.gz")


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ORIGINSHIELD_SECRET", "replay-test-secret-0123456789")
    monkeypatch.setenv("ORIGINSHIELD_RANGES_SOURCE", str(ROOT / "tests" / "data" / "aws" / "ip-ranges.json"))
    monkeypatch.setenv("ORIGINSHIELD_CACHE_DIR", str(tmp_path / "cache"))


def replay(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code = main(["replay", "--config", CONFIG, "--json", *args])
    return code, json.loads(capsys.readouterr().out)


def test_parsers_read_the_documented_formats() -> None:
    items = list(read_logs([str(LOGS / "alb"), str(LOGS / "cloudfront")]))
    requests = [i for i in items if isinstance(i, LogRequest)]
    bad = [i for i in items if isinstance(i, str)]
    total_alb = sum(EXPECTED[k] for k in ("alb_edges", "alb_attackers", "alb_ec2", "alb_bad_path"))
    assert len([r for r in requests if r.kind == "alb"]) == total_alb
    assert len([r for r in requests if r.kind == "cloudfront"]) == EXPECTED["cf_requests"]
    assert len(bad) == EXPECTED["alb_malformed"] and all(b.endswith(":51") for b in bad)
    first = requests[0]
    assert (first.kind, first.method, first.path, first.client) == ("alb", "GET", "/", "24.110.240.11")
    assert any(":" in r.client for r in requests if r.kind == "alb")  # IPv6 edges, port split off
    assert {r.path for r in requests if "admin" in r.path} >= {"/static/../admin", "/admin"}  # percent-decoded


def test_alb_logs_against_the_ranges_in_service(capsys: pytest.CaptureFixture[str]) -> None:
    code, report = replay(capsys, str(LOGS / "alb"))
    assert code == 1  # something would be refused
    refused = EXPECTED["alb_attackers"] + EXPECTED["alb_ec2"] + EXPECTED["alb_bad_path"] + EXPECTED["alb_health"]
    assert (report["requests"], report["refused"]) == (
        EXPECTED["alb_edges"] + refused - EXPECTED["alb_health"],
        refused,
    )
    assert report["reasons"] == {
        "edge_not_allowed": EXPECTED["alb_attackers"] + EXPECTED["alb_ec2"],
        "bad_path": EXPECTED["alb_bad_path"],
        "peer_forwarded": EXPECTED["alb_health"],
    }
    # No real edge of the week would be refused for its address (peer_forwarded is about the route).
    assert report["cloudfront_addresses_refused"] == 0
    by_address = {r["address"]: r for r in report["refused_addresses"]}
    assert by_address["3.2.0.17"]["aws"] == ["3.2.0.0/24 us-east-1 AMAZON", "3.2.0.0/24 us-east-1 EC2"]
    attacker = by_address["198.51.100.23"]
    assert (attacker["count"], attacker["first_seen"], attacker["last_seen"]) == (
        4,
        "2026-11-16T09:00:05.000000Z",
        "2026-11-16T09:04:26.000000Z",
    )
    assert report["unparsable_lines"] == EXPECTED["alb_malformed"]
    assert any("ALB node 10.0.0.1" in a for a in report["assumptions"])


def test_an_old_publication_would_refuse_real_edges(capsys: pytest.CaptureFixture[str]) -> None:
    code, report = replay(capsys, str(LOGS / "alb"), "--ranges", OLD_RANGES)
    assert code == 1
    assert report["ranges"]["sync_token"] == 1782167225
    real = [r for r in report["refused_addresses"] if r["cloudfront"]]
    assert len(real) == 3 and sum(r["count"] for r in real) == EXPECTED["alb_new_edges_refused"]
    assert all(r["address"].startswith("24.110.") and r["reasons"]["edge_not_allowed"] >= 8 for r in real)
    assert all("24.110.128.0/17 GLOBAL CLOUDFRONT_ORIGIN_FACING" in r["aws"] for r in real)  # attributed by today's


def test_cloudfront_logs(capsys: pytest.CaptureFixture[str]) -> None:
    code, report = replay(capsys, str(LOGS / "cloudfront"))
    assert code == 1
    assert (report["requests"], report["reasons"]) == (
        EXPECTED["cf_requests"],
        {"bad_path": EXPECTED["cf_bad_path"], "peer_forwarded": EXPECTED["cf_health"]},
    )
    assert report["formats"] == {"cloudfront": EXPECTED["cf_requests"]}
    assert any("origin-facing edge" in a for a in report["assumptions"])


def test_without_the_secret_nothing_passes(capsys: pytest.CaptureFixture[str]) -> None:
    _, report = replay(capsys, str(LOGS / "cloudfront"), "--without-secret")
    health = sum(1 for r in read_logs([str(LOGS / "cloudfront")]) if isinstance(r, LogRequest) and r.path == "/health")
    assert report["allowed"] == 0 and health == EXPECTED["cf_health"]
    # The health route checks the peer only, and refuses what came through CloudFront.
    assert report["reasons"] == {
        "secret_missing": EXPECTED["cf_requests"] - health - 4,
        "bad_path": 4,
        "peer_forwarded": health,
    }


def test_text_report_and_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    data = gzip.decompress(next((LOGS / "cloudfront").iterdir()).read_bytes())
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BufferedReader(io.BytesIO(data))))
    assert main(["replay", "--config", CONFIG, "-", "--top", "2"]) == 1
    out = capsys.readouterr().out
    assert "would refuse: 32 (16.0%)" in out and "bad_path" in out and "peer_forwarded" in out
    assert "CloudFront addresses that would be refused: 0" in out


def test_clean_log_exits_zero(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    lines = [
        line
        for line in gzip.decompress(next((LOGS / "alb").iterdir()).read_bytes()).decode().splitlines()
        if line.split(" ")[3].startswith(("130.176.", "15.158."))
        and "/static/.." not in line
        and "/api/./" not in line
        and "%2e" not in line
        and ":443/health " not in line  # the health route refuses forwarded requests
    ]
    assert len(lines) > 20
    (tmp_path / "clean.log").write_text("\n".join(lines) + "\n")
    code, report = replay(capsys, str(tmp_path / "clean.log"))
    assert (code, report["refused"], report["requests"]) == (0, 0, len(lines))


def test_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--config", CONFIG, "--peer", "not-an-ip", str(LOGS / "alb")]) == 2
    assert "--peer: not an IP address" in capsys.readouterr().err


def test_memory_stays_bounded_by_max_addresses() -> None:
    ranges = load_ranges(ROOT / "tests" / "data" / "aws" / "ip-ranges.json")
    secret = SecretHeader.of("x-origin-verify", ["replay-test-secret-0123456789"])
    shield = OriginShield(never_called, ranges=ranges, secret=secret, detect_proxy_rewrite=False)
    replayer = Replayer(shield, ranges, secret=("x-origin-verify", "replay-test-secret-0123456789"), max_addresses=50)

    def flood() -> Any:  # a generator: one request at a time, as read_logs streams them
        for i in range(3000):
            yield LogRequest(
                f"2026-11-16T09:{i // 60 % 60:02d}:{i % 60:02d}Z",
                "GET",
                "/",
                f"198.18.{i // 256}.{i % 256}",
                "alb",
                "x",
            )

    report = replayer.run(flood())
    assert (report.requests, report.refused_total) == (3000, 3000)
    assert len(report.refused) == 50 and report.untracked_refusals == 2950
    assert report.reasons == {"peer_not_allowed": 3000}
