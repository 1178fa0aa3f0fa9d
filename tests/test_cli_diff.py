"""``originshield diff``: prefixes added and removed between two real publications."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from originshield.cli import main

pytestmark = pytest.mark.tooling

HISTORY = Path(__file__).parent / "data" / "aws" / "history"


def doc(token: int) -> str:
    return str(HISTORY / f"ip-ranges-{token}.json.gz")


def test_cloudfront_origin_facing_gained_a_prefix(capsys: pytest.CaptureFixture[str]) -> None:
    # PROVENANCE.md: 24.110.128.0/17 joins CLOUDFRONT_ORIGIN_FACING between these two publications.
    code = main(["diff", doc(1786397225), doc(1786678024), "--service", "CLOUDFRONT_ORIGIN_FACING"])
    out = capsys.readouterr().out
    assert code == 1  # like diff(1): 1 means "changed"
    assert "+ 24.110.128.0/17" in out and "GLOBAL CLOUDFRONT_ORIGIN_FACING" in out
    assert "IPv4 addresses: +32768 -0" in out
    assert out.rstrip().endswith("1 added, 0 removed")
    assert "\n- " not in out


def test_json_output_and_reverse_direction(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["diff", doc(1786678024), doc(1786397225), "--service", "CLOUDFRONT_ORIGIN_FACING", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 1
    assert result["added"] == []
    assert result["removed"] == [{"prefix": "24.110.128.0/17", "records": ["GLOBAL CLOUDFRONT_ORIGIN_FACING"]}]
    assert result["addresses"]["ipv4"] == {"added": 0, "removed": 32768}
    assert (result["old"]["sync_token"], result["new"]["sync_token"]) == (1786678024, 1786397225)


def test_no_change_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    # The same selection in consecutive publications where nothing origin-facing changed.
    code = main(["diff", doc(1786678024), doc(1786985225), "--service", "CLOUDFRONT_ORIGIN_FACING"])
    out = capsys.readouterr().out
    assert code == 0 and out.rstrip().endswith("no change")


def test_region_filter_and_a_flapping_prefix(capsys: pytest.CaptureFixture[str]) -> None:
    # PROVENANCE.md: 1.178.86.0/24 (ap-southeast-3, AMAZON and EC2) flaps on 2026-08-22.
    tokens = [1787373425, 1787378225, 1787390225]
    seen = []
    for old, new in itertools.pairwise(tokens):
        main(["diff", doc(old), doc(new), "--region", "ap-southeast-3", "--json"])
        result = json.loads(capsys.readouterr().out)
        seen.append(([a["prefix"] for a in result["added"]], [r["prefix"] for r in result["removed"]]))
        for entry in result["added"] + result["removed"]:
            assert all(r.startswith("ap-southeast-3 ") for r in entry["records"])
    changes = [s for s in seen if s != ([], [])]
    assert (["1.178.86.0/24"], []) in changes and ([], ["1.178.86.0/24"]) in changes


def test_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.json").write_text("{}")
    assert main(["diff", str(tmp_path / "bad.json"), doc(1786678024)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("originshield diff: error:") and err.count("\n") == 1
