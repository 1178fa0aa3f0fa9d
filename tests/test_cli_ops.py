"""The CLI never misleads (issue 16): each defect an operator met, as a test."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from originshield.aws import load_ranges
from originshield.cli import main

from .configs import alb_config

pytestmark = pytest.mark.tooling

ROOT = Path(__file__).parent.parent
RANGES = ROOT / "tests" / "data" / "aws" / "ip-ranges.json"
HISTORY = ROOT / "tests" / "data" / "aws" / "history"
SECRET = "ops-secret-" + "o" * 24  # a test fixture
EDGE = "130.176.88.1"  # 130.176.88.0/21 GLOBAL CLOUDFRONT_ORIGIN_FACING
CLI = [sys.executable, "-m", "originshield"]


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("OS_OPS_SECRET", SECRET)
    path = tmp_path / "originshield.toml"
    path.write_text(alb_config("OS_OPS_SECRET"), encoding="utf-8")
    return str(path)


def test_bare_command_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: originshield")
    for command in ("check-config", "explain", "serve", "diff", "export", "status", "fetch"):
        assert command in err


@pytest.mark.parametrize(("flag", "value", "hint"), [("--service", "ec2", "EC2"), ("--region", "us-east-99", None)])
def test_diff_refuses_a_name_in_neither_document(
    flag: str, value: str, hint: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before: "no change", exit 0, for a selection that could never match anything.
    assert main(["diff", str(RANGES), str(RANGES), flag, value]) == 2
    err = capsys.readouterr().err
    assert f"{flag} {value}: in neither document" in err
    if hint:
        assert f"did you mean {hint}?" in err
    assert main(["diff", str(RANGES), str(RANGES), "--service", "EC2", "--region", "us-east-1"]) == 0


def test_diff_into_a_closed_pipe_is_quiet() -> None:
    # `originshield diff ... | head -1`: the reader is gone before the output is written.
    old, new = sorted(HISTORY.iterdir())[0], sorted(HISTORY.iterdir())[-1]
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [*CLI, "diff", str(old), str(new)], stdout=write_end, stderr=subprocess.PIPE, text=True, check=False
        )
    finally:
        os.close(write_end)
    assert proc.stderr == ""  # no "BrokenPipeError", no "Exception ignored" at exit
    assert proc.returncode == 141  # 128 + SIGPIPE, as a shell reports coreutils killed by it


def test_check_config_json_on_a_schema_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('default_policy = "x"\n[policies.x]\nrequire_secrets = true\n', encoding="utf-8")
    assert main(["check-config", str(path), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["valid"] is False
    assert "require_secrets: unknown key" in doc["problems"][0]


def test_check_config_warns_about_trusted_proxies_in_aws_ranges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OS_OPS_SECRET", SECRET)
    path = tmp_path / "shared.toml"
    # 3.2.58.0/24 is us-east-1 AMAZON: EC2 instances anyone can rent.
    path.write_text(alb_config("OS_OPS_SECRET").replace('"10.0.0.0/16"]', '"10.0.0.0/16", "3.2.58.0/24"]', 1))
    assert main(["check-config", str(path), "--ranges", str(RANGES)]) == 0
    out = capsys.readouterr().out
    assert "warning:" in out and "trusted_proxies: 3.2.58.0/24 overlaps AWS shared ranges" in out
    assert "10.0.0.0/16 overlaps" not in out
    assert main(["check-config", str(path), "--ranges", str(RANGES), "--strict"]) == 1


def test_env_derived_config_error_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cache.toml"
    path.write_text(alb_config("OS_OPS_SECRET").replace('source = "embedded"', 'cache_dir = "cache"'))
    monkeypatch.setenv("ORIGINSHIELD_RANGES_SOURCE", "embedded")
    assert main(["check-config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "ranges.cache_dir: has no effect" in err
    assert "comes from ORIGINSHIELD_RANGES_SOURCE" in err
    monkeypatch.setenv("ORIGINSHIELD_RANGES_SOURCE", str(tmp_path / "missing.json"))
    assert main(["check-config", str(path)]) == 1
    assert "(from ORIGINSHIELD_RANGES_SOURCE)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("peer", "expected"),
    [
        ("10.0.4.4", "10.0.4.4"),
        ("10.0.4.4:5555", "10.0.4.4"),  # uvicorn's access-log form
        (" 10.0.4.4 ", "10.0.4.4"),
        ("[::ffff:10.0.4.4]:443", "10.0.4.4"),  # the middleware unmaps it too
        ("2001:db8::1", "2001:db8::1"),
    ],
)
def test_explain_accepts_the_forms_logs_show(
    peer: str, expected: str, config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--header", f"X-Forwarded-For: 203.0.113.9, {EDGE}", "--with-secret", "--json"]
    code = main(["explain", "--config", config, "--peer", peer, *args])
    doc = json.loads(capsys.readouterr().out)
    assert doc["peer"] == expected
    if expected == "10.0.4.4":
        assert (code, doc["peer_trusted"], doc["action"]) == (0, True, "allowed")


@pytest.mark.parametrize("peer", ["", "nope", "10.0.4.4:http", "[2001:db8::1", "10.0.4.256", "fe80::1%eth0"])
def test_explain_refuses_a_peer_that_is_not_an_address(
    peer: str, config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before: exit 1 "refused (bad_client_address)", as if the middleware had decided.
    with pytest.raises(SystemExit) as exc:
        main(["explain", "--config", config, "--peer", peer])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--peer" in err and err.count("\n") == 1


def test_dates_in_one_format(config: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    from originshield.snapshot import SnapshotHolder

    old, new = sorted(HISTORY.iterdir())[0], sorted(HISTORY.iterdir())[-1]
    main(["lookup", "54.239.134.17"])
    main(["lookup", "54.239.134.17", "--json"])
    main(["check-config", config])
    main(["check-config", config, "--json"])
    main(["explain", "--config", config, "--peer", "10.0.4.4", "--json"])
    main(["diff", str(old), str(new), "--json", "--service", "CLOUDFRONT_ORIGIN_FACING"])
    with caplog.at_level(logging.INFO, logger="originshield"):
        SnapshotHolder(load_ranges(str(old))).publish(load_ranges(str(new)), "file")
    text = capsys.readouterr().out + caplog.text
    dates = re.findall(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d\S*", text)
    assert len(dates) >= 8
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\W*", d) for d in dates), dates
