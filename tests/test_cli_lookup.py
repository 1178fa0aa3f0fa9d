"""`originshield lookup`: output, exit codes 0/1/2, --json, --ranges, and `python -m originshield`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from originshield.cli import main

pytestmark = pytest.mark.tooling

HISTORY = Path(__file__).parent / "data" / "aws" / "history"


def test_match_prints_every_record_and_the_snapshot(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lookup", "54.239.134.17"]) == 0
    out = capsys.readouterr().out
    assert "3 matching record(s); syncToken 1787411825, createDate 2026-08-22T15:17:05Z" in out
    assert "source embedded" in out and "days old" in out
    lines = out.splitlines()[1:]
    assert [line.split() for line in lines] == [
        ["54.239.134.0/23", "GLOBAL", "CLOUDFRONT_ORIGIN_FACING", "GLOBAL"],
        ["54.239.128.0/18", "GLOBAL", "AMAZON", "GLOBAL"],
        ["54.239.128.0/18", "GLOBAL", "CLOUDFRONT", "GLOBAL"],
    ]


def test_no_match_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lookup", "8.8.8.8"]) == 1
    assert "0 matching record(s)" in capsys.readouterr().out


@pytest.mark.parametrize("bad", ["054.239.134.17", "54.239.134.17:443", "fe80::1%eth0", "", "garbage"])
def test_bad_address_exits_2_with_one_line(capsys: pytest.CaptureFixture[str], bad: str) -> None:
    assert main(["lookup", bad]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "not an IP address" in captured.err


def test_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lookup", "::ffff:54.239.134.17", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ranges"]["sync_token"] == 1787411825 and doc["ranges"]["source"] == "embedded"
    assert doc["matches"][0] == {
        "prefix": "54.239.134.0/23",
        "region": "GLOBAL",
        "service": "CLOUDFRONT_ORIGIN_FACING",
        "network_border_group": "GLOBAL",
    }


def test_ranges_file_and_its_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 24.110.128.0/17 became origin-facing between these two publications (PROVENANCE.md).
    old, new = HISTORY / "ip-ranges-1786397225.json.gz", HISTORY / "ip-ranges-1786678024.json.gz"
    services = []
    for path, token in ((old, 1786397225), (new, 1786678024)):
        assert main(["lookup", "24.110.200.1", "--ranges", str(path), "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["ranges"]["sync_token"] == token and doc["ranges"]["source"] == str(path)
        services.append({m["service"] for m in doc["matches"]})
    assert services == [{"AMAZON", "CLOUDFRONT"}, {"AMAZON", "CLOUDFRONT", "CLOUDFRONT_ORIGIN_FACING"}]
    broken = tmp_path / "broken.json"
    broken.write_text(
        '{"syncToken": "1", "createDate": "2026-01-01-00-00-00", "prefixes": [{"ip_prefix": "1.2.3.4/8"}]}'
    )
    for path in (broken, tmp_path / "missing.json"):
        assert main(["lookup", "1.2.3.4", "--ranges", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("originshield lookup: error:")


def test_console_entry_points() -> None:
    for argv in ([sys.executable, "-m", "originshield"], [str(Path(sys.executable).with_name("originshield"))]):
        done = subprocess.run([*argv, "lookup", "130.176.1.1"], capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode in (0, 1), done.stderr
        assert "syncToken 1787411825" in done.stdout
    usage = subprocess.run(
        [sys.executable, "-m", "originshield"], capture_output=True, text=True, timeout=60, check=False
    )
    assert usage.returncode == 2
