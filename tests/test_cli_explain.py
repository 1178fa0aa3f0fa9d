"""``originshield explain``: the decision trace for a described request, from a configuration file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from originshield.cli import main

from .configs import alb_config

pytestmark = pytest.mark.tooling

SECRET = "explain-secret-" + "e" * 20  # a test fixture
EDGE = "130.176.88.1"  # 130.176.88.0/21 GLOBAL CLOUDFRONT_ORIGIN_FACING

CONFIG = alb_config("OS_EXPLAIN_SECRET")


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("OS_EXPLAIN_SECRET", SECRET)
    path = tmp_path / "originshield.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return str(path)


def test_allowed_through_alb_shows_the_whole_trace(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--peer", "10.0.4.4", "--header", f"X-Forwarded-For: 203.0.113.9, {EDGE}", "--with-secret"]
    assert main(["explain", "--config", config, *args, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert (d["action"], d["reason"], d["route"], d["policy"]) == ("allowed", "allowed", "default", "cloudfront")
    assert (d["peer"], d["peer_trusted"], d["checked"], d["checked_from"], d["viewer"]) == (
        "10.0.4.4",
        True,
        EDGE,
        "x-forwarded-for",
        "203.0.113.9",
    )
    assert d["matched"][0] == {
        "prefix": "130.176.88.0/21",
        "region": "GLOBAL",
        "service": "CLOUDFRONT_ORIGIN_FACING",
        "network_border_group": "GLOBAL",
    }
    assert d["secret"] == "verified"
    assert SECRET not in json.dumps(d)

    assert main(["explain", "--config", config, *args]) == 0
    text = capsys.readouterr().out
    assert "decision: allowed (reason: allowed)" in text
    assert f"checked:  {EDGE} (from x-forwarded-for)" in text
    assert "matched:  130.176.88.0/21 GLOBAL CLOUDFRONT_ORIGIN_FACING GLOBAL" in text
    assert SECRET not in text


def test_refused_edge_says_where_the_address_is_instead(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    # 52.95.1.1 is AWS (us-east-2 AMAZON) but not a CloudFront origin-facing address.
    args = ["--peer", "10.0.4.4", "--header", "X-Forwarded-For: 203.0.113.9, 52.95.1.1", "--with-secret"]
    assert main(["explain", "--config", config, *args]) == 1
    text = capsys.readouterr().out
    assert "decision: rejected (reason: edge_not_allowed)" in text
    assert "the address is in AWS ranges outside its selection: 52.95.0.0/20 us-east-2 AMAZON" in text

    assert main(["explain", "--config", config, "--peer", "198.51.100.1", "--with-secret", "--json"]) == 1
    d = json.loads(capsys.readouterr().out)
    assert (d["reason"], d["checked_from"], d["not_in_policy_but_in"]) == ("peer_not_allowed", "peer", [])


@pytest.mark.parametrize(
    ("args", "reason", "route"),
    [
        (["--peer", "10.0.4.4", "--path", "/health"], "allowed", "GET /health"),
        (["--peer", "10.0.4.4", "--path", "/health", "--method", "POST"], "secret_missing", "default"),
        (["--peer", EDGE, "--header", "x-origin-verify: wrong-but-long-enough-value"], "secret_invalid", "default"),
        (["--peer", "10.0.4.4", "--with-secret"], "bad_forwarded_chain", "default"),
        # The weak route covers the path textually; its dot segments are refused before any address check.
        (["--peer", "10.0.4.4", "--path", "/health/../admin"], "bad_path", "GET /health"),
    ],
)
def test_reason_codes(
    config: str, capsys: pytest.CaptureFixture[str], args: list[str], reason: str, route: str
) -> None:
    code = main(["explain", "--config", config, *args, "--json"])
    d = json.loads(capsys.readouterr().out)
    assert (d["reason"], d["route"]) == (reason, route)
    assert code == (0 if reason == "allowed" else 1)


def test_without_the_secret_values_a_stand_in_is_used_and_noted(
    config: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("OS_EXPLAIN_SECRET")
    code = main(["explain", "--config", config, "--peer", EDGE, "--header", f"x-origin-verify: {SECRET}", "--json"])
    d = json.loads(capsys.readouterr().out)
    assert code == 1 and d["reason"] == "secret_invalid"
    assert any("OS_EXPLAIN_SECRET is not set" in n for n in d["notes"])


def test_bad_input_exits_2(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "--config", config, "--peer", "10.0.0.1", "--header", "no colon"]) == 2
    assert "--header: expected 'Name: value'" in capsys.readouterr().err
    assert main(["explain", "--config", config + ".missing", "--peer", "10.0.0.1"]) == 2
    assert "cannot read the configuration file" in capsys.readouterr().err
