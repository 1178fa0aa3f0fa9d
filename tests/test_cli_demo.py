"""``originshield demo``: the README's main command, run exactly as written (a subprocess)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.tooling

ROOT = Path(__file__).parent.parent


def main_command() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- main-command -->\s*```\s*\n(.*?)\n```\s*<!-- /main-command -->", readme, re.S)
    assert block is not None, "README.md has no main-command block"
    return block.group(1).strip()


def test_readme_main_command_runs_the_demo_self_check() -> None:
    command = main_command()
    assert command.startswith("python3 -m venv .venv && .venv/bin/pip install -q -e . && ")
    assert command.endswith(".venv/bin/originshield demo --check")


def run_demo(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # The same console script the README command runs, from the environment the tests run in.
    script = Path(sys.executable).with_name("originshield")
    return subprocess.run(
        [str(script), "demo", "--check"], capture_output=True, text=True, timeout=60, env=env, check=False
    )


def test_demo_check_exits_0_with_every_decision_explained() -> None:
    env = {k: v for k, v in os.environ.items() if k != "ORIGINSHIELD_DEMO_SECRET"}
    result = run_demo(env)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "self-check: 8/8 decisions as expected" in out
    generated = re.search(r"secret header x-origin-verify: (demo-\S+)", out)
    assert generated is not None and "generated for this run" in out
    for reason in ("edge_not_allowed", "secret_missing", "secret_invalid"):
        assert re.search(rf"ok   403 rejected reason={reason}", out), reason
    assert out.count("ok   200 allowed") == 3
    assert "FAIL" not in out
    # Each refusal's log line is shown, and never carries the secret.
    assert "log: originshield action=rejected reason=secret_missing" in out
    logs = [line for line in out.splitlines() if "log: " in line]
    assert len(logs) == 5 and not any(generated.group(1) in line for line in logs)
    assert "default    edge_not_allowed     rejected  2" in out  # the counters


def test_demo_uses_the_secret_from_the_environment() -> None:
    env = {**os.environ, "ORIGINSHIELD_DEMO_SECRET": "my-own-demo-secret-value-1234"}
    result = run_demo(env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "my-own-demo-secret-value-1234" not in result.stdout  # only a prefix is shown
    assert "from ORIGINSHIELD_DEMO_SECRET" in result.stdout


def test_demo_with_an_unusable_secret_exits_2() -> None:
    result = run_demo({**os.environ, "ORIGINSHIELD_DEMO_SECRET": "short"})
    assert result.returncode == 2
    assert result.stderr.startswith("originshield demo: error:")
