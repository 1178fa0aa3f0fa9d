"""Logs visible out of the box (issue 16): the README's plain-uvicorn recipe, through a real uvicorn."""

from __future__ import annotations

import json
import logging
import re
import shlex
import subprocess
import sys
import time

import httpx
import pytest

from originshield import OriginShield, SecretHeader
from originshield.inservice import startup_line
from originshield.logconfig import JsonFormatter, config_dict, config_path, main
from originshield.policy import Policy, Route

from .asgi import never_called
from .environment import ROOT, SECRET, wait_for
from .loopback import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # a real server or process; run once in CI (ci/tests.sh)

README = (ROOT / "README.md").read_text(encoding="utf-8")
#: 2026-11-29T13:40:01.123Z INFO originshield action=...
LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|WARNING) ([\w.]+) (.*)$", re.MULTILINE)


def readme_recipe() -> list[str]:
    """The plain-uvicorn command of the README, as an operator pastes it (the shell's part done here)."""
    match = re.search(r"^uvicorn (examples\.cloudfront_direct\.asgi:app .*--log-config .*)$", README, re.MULTILINE)
    assert match, "the README shows the plain-uvicorn recipe with --log-config"
    command = match.group(1).replace('"$(python -m originshield.logconfig)"', config_path("text"))
    return shlex.split(command)


def run_server(
    args: list[str], env: dict[str, str], paths: list[tuple[str, dict[str, str]]], linger: float = 0.2
) -> str:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", *args, "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(base + "/health", proc)
        for path, headers in paths:
            httpx.get(base + path, headers=headers)
        time.sleep(linger)
    finally:
        proc.terminate()
        output = proc.communicate(timeout=15)[0]
    return output


def test_readme_plain_uvicorn_recipe_shows_refusals_with_time_level_logger(server_env: dict[str, str]) -> None:
    args = readme_recipe()
    assert "--no-proxy-headers" in args
    output = run_server(args, server_env, [("/", {}), ("/", {"x-origin-verify": "wrong-" + "w" * 20})])
    lines = {(m.group(2), m.group(3).split(" ", 2)[1]) for m in LINE.finditer(output) if " reason=" in m.group(3)}
    assert ("originshield", "reason=secret_missing") in lines, output
    assert ("originshield", "reason=secret_invalid") in lines, output
    assert "originshield originshield" not in output  # the logger's name once
    startup = [m.group(3) for m in LINE.finditer(output) if m.group(3).startswith("in service:")]
    assert len(startup) == 1, output
    assert "sync_token=" in startup[0] and "policies=cloudfront(cloudfront+secret," in startup[0]
    assert "routes=default->cloudfront" in startup[0]
    assert re.search(r'INFO uvicorn\.access 127\.0\.0\.1:\d+ - "GET / HTTP/1\.1" 403', output)
    assert SECRET not in output


def test_json_lines_format_with_refresher_events(server_env: dict[str, str]) -> None:
    # The ranges source is a closed port on loopback: the refresher's failure is a logged event.
    server_env = {**server_env, "ORIGINSHIELD_RANGES_SOURCE": f"http://127.0.0.1:{free_port()}/ip-ranges.json"}
    args = ["examples.cloudfront_direct.asgi:app", "--no-proxy-headers", "--log-config", config_path("json")]
    output = run_server(args, server_env, [("/?a=%22q%22", {})], linger=6.5)  # first refresh: within 5 s of startup
    docs = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    failures = [d for d in docs if d["logger"] == "originshield.refresher" and d["level"] == "WARNING"]
    assert any("ranges refresh failed (network-error" in d["message"] for d in failures), output
    refusals = [d for d in docs if d["logger"] == "originshield" and "reason=secret_missing" in d["message"]]
    assert refusals, output
    assert set(refusals[0]) == {"time", "level", "logger", "pid", "message"}
    assert refusals[0]["level"] == "INFO" and refusals[0]["time"].endswith("Z")
    assert any(d["logger"] == "uvicorn.access" for d in docs)
    assert all(line.startswith("{") for line in output.splitlines() if line.strip()), output


def test_the_packaged_files_are_what_config_dict_returns(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert capsys.readouterr().out.strip() == config_path("text")
    assert main(["--json"]) == 0
    assert capsys.readouterr().out.strip() == config_path("json")
    assert main(["--yaml"]) == 2
    for fmt in ("text", "json"):
        doc = config_dict(fmt)
        assert doc["disable_existing_loggers"] is False  # loggers created at import keep working
        assert doc["loggers"]["originshield"]["level"] == "INFO"


def test_json_formatter_keeps_hostile_text_on_one_line() -> None:
    record = logging.LogRecord("originshield", logging.INFO, __file__, 1, "%s", ('path="/a\nb"',), None)
    line = JsonFormatter().format(record)
    assert "\n" not in line and json.loads(line)["message"] == 'path="/a\nb"'


def test_startup_line_names_ranges_policies_and_routes() -> None:
    shield = OriginShield(
        never_called,
        default=Policy.cloudfront("public"),
        routes=[Route("/health", Policy.health_check(["10.0.0.0/16"], name="alb"), methods=frozenset({"GET"}))],
        secret=SecretHeader.of("x-origin-verify", [SECRET]),
    )
    line = startup_line(shield)
    assert line.startswith("in service: sync_token=")
    assert "source=embedded" in line
    assert re.search(r"public\(cloudfront\+secret,\d+_prefixes,digest=[0-9a-f]{12}\)", line)
    assert "alb(peer,1_prefixes,digest=" in line
    assert 'routes="/health[GET]->alb default->public"' in line
