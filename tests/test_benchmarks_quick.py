"""The benchmark suite runs end to end (``python -m benchmarks --quick``) so it cannot rot.

No assertion on any timing: the figures of a quick run mean nothing and the machine is shared. The
test checks the report's structure: every section heading, a goal table, the plots it links to
exist and are PNG files, and the run exited cleanly (a section that crashes makes the exit status
1; a peer or load generator missing on this machine is a note, not a failure).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.report import SECTION_TITLES

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    return out, proc


def test_quick_run_exits_cleanly(quick_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, proc = quick_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == str(out / "report.md")


def test_report_has_every_section(quick_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, _ = quick_run
    report = (out / "report.md").read_text()
    headings = re.findall(r"^## (.+)$", report, flags=re.MULTILINE)
    assert headings[0] == "Goals"
    for title in SECTION_TITLES.values():
        assert title in headings, title
    assert "- command: `python -m benchmarks --quick`" in report
    # The lookup section compares originshield with the peers: its table is always there.
    assert "| originshield |" in report
    assert "FAILED" not in report
    assert (out / "headline.md").read_text().startswith("Measured ")


def test_plots_exist_and_are_linked(quick_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, _ = quick_run
    report = (out / "report.md").read_text()
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", report)
    # Lookup distribution, ASGI overhead distribution, e2e throughput bars and latency curves.
    assert {"lookup-1.png", "asgi-1.png", "e2e-1.png", "e2e-2.png"} <= set(linked)
    for name in linked:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
        assert len(data) > 1000, name


def test_raw_results_are_json(quick_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, _ = quick_run
    raw = json.loads((out / "results.json").read_text())
    keys = [s["key"] for s in raw["sections"]]
    assert keys[: len(SECTION_TITLES)] == list(SECTION_TITLES)
    assert raw["command"] == "python -m benchmarks --quick"


def test_python_load_generator_fallback(tmp_path: Path) -> None:
    """Without wrk the end-to-end section falls back to the Python load generator and says so."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "e2e", "--loadgen", "python", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (tmp_path / "report.md").read_text()
    assert "Python asyncio load generator" in report
    assert "apt-get install wrk" in report
    assert "| bare | " in report
    assert (tmp_path / "e2e-1.png").exists()
    # Sections that were not selected are still present, marked as not run.
    assert "## Lookup (issue 2)" in report
    assert "Not run." in report
