"""``originshield check-config``: validation, the effective policies and the size of each selection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from originshield.cli import main

from .configs import alb_config

pytestmark = pytest.mark.tooling

EXAMPLES = Path(__file__).parent.parent / "examples"

CONFIG = alb_config("OS_CHECK_SECRET", health_methods=False)


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "originshield.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_valid_file_prints_policies_routes_and_selection_sizes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OS_CHECK_SECRET", "s" * 32)
    path = write(tmp_path, CONFIG)
    assert main(["check-config", path]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: valid\n")
    assert "secret header: x-origin-verify from environment variable OS_CHECK_SECRET" in out
    assert "s" * 32 not in out
    # The embedded snapshot: 49 origin-facing records, 46 IPv4 + 3 IPv6 distinct prefixes.
    assert "selection: 49 record(s), 46 IPv4 and 3 IPv6 prefixes" in out
    assert "  /health              any method       -> health" in out
    assert "  (anything else)      any method       -> cloudfront" in out

    assert main(["check-config", path, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] and report["problems"] == []
    cloudfront = next(p for p in report["policies"] if p["name"] == "cloudfront")
    assert (cloudfront["ipv4_prefixes"], cloudfront["ipv6_prefixes"], cloudfront["routes"]) == (46, 3, ["default"])
    # --strict: the embedded-snapshot warning makes it fail.
    assert main(["check-config", path, "--strict"]) == 1


def test_invalid_file_exits_1_with_file_key_and_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, CONFIG.replace("require_secret", "require_secrets"))
    assert main(["check-config", path]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"error: {path}: policies.cloudfront.require_secrets: unknown key (did you mean 'require_secret'?)\n"
    )


def test_missing_secret_and_empty_selection_are_problems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("OS_CHECK_SECRET", raising=False)
    text = CONFIG.replace('"cloudfront-origin-facing"', '{ services = ["CLOUDFRONT_ORIGIN_FACIN"] }')
    assert main(["check-config", write(tmp_path, text), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert not report["valid"]
    assert any("did you mean 'CLOUDFRONT_ORIGIN_FACING'" in p for p in report["problems"])
    assert any("environment variable OS_CHECK_SECRET is not set" in p for p in report["problems"])


def test_shared_pool_warning_is_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OS_CHECK_SECRET", "s" * 32)
    text = CONFIG.replace("require_secret = true", "require_secret = false")
    assert main(["check-config", write(tmp_path, text)]) == 0
    out = capsys.readouterr().out
    assert "warning: " in out and "policies.cloudfront: allows cloudfront-origin-facing (routes: default)" in out
    assert "own CloudFront distribution" in out


def test_ranges_option_checks_against_another_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = Path(__file__).parent / "data" / "aws" / "history" / "ip-ranges-1786397225.json.gz"
    text = CONFIG.replace("require_secret = true", "require_secret = false").replace(
        '[secret]\nenv = "OS_CHECK_SECRET"\n', ""
    )
    assert main(["check-config", write(tmp_path, text), "--ranges", str(old), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ranges"]["sync_token"] == 1786397225
    cloudfront = next(p for p in report["policies"] if p["name"] == "cloudfront")
    assert cloudfront["ipv4_prefixes"] == 45  # before 24.110.128.0/17 joined
