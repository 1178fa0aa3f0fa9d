"""Metrics that add up across workers (issue 16): the shared files, dead workers, the endpoint."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from originshield import OriginShield, Policy, Route, SecretHeader, load_ranges
from originshield._types import Message
from originshield.hostmetrics import HOST, HostMetrics, WorkerFigures, find_shield

from .asgi import ok_app
from .environment import RANGES, ROOT, SECRET, wait_for
from .loopback import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # a real server or process; run once in CI (ci/tests.sh)

README = (ROOT / "README.md").read_text(encoding="utf-8")
KEY = ("default", "secret_missing", "rejected")


def make_shield() -> OriginShield:
    return OriginShield(
        ok_app,
        ranges=load_ranges(),
        secret=SecretHeader.of("x-origin-verify", [SECRET]),
        routes=[Route("/metrics", Policy.health_check(["127.0.0.0/8"], name="monitoring"))],
    )


def refuse(shield: OriginShield, n: int) -> None:
    """``n`` requests without the secret from 127.0.0.1: counted as secret_missing."""

    async def go() -> None:
        async def receive() -> Message:
            return {"type": "http.request", "body": b""}

        async def send(message: Message) -> None:
            pass

        for _ in range(n):
            scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "client": ("127.0.0.1", 5)}
            await shield(scope, receive, send)

    asyncio.run(go())


def sample(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^originshield_{name}{{{re.escape(want)}}} (\S+)$" if labels else rf"^originshield_{name} (\S+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_figures(directory: Path, figures: WorkerFigures) -> Path:
    path = directory / f"worker-{figures.pid}-{figures.token}.json"
    path.write_bytes(figures.to_json())
    return path


def test_dead_workers_keep_their_counts_and_are_folded_once(tmp_path: Path) -> None:
    shield = make_shield()
    metrics = HostMetrics(shield, directory=tmp_path)
    refuse(shield, 3)
    dead = write_figures(tmp_path, WorkerFigures(dead_pid(), "0123456789ab", time.time(), HOST, requests={KEY: 7}))
    labels = dict(zip(("route", "reason", "action"), KEY, strict=True))
    text = metrics.prometheus_text()
    assert sample(text, "requests_total", **labels) == 10
    assert not dead.exists()
    retired = json.loads((tmp_path / "retired.json").read_text())
    assert retired["folded"] == ["0123456789ab"]
    refuse(shield, 1)
    assert sample(metrics.prometheus_text(), "requests_total", **labels) == 11  # not 18: folded once
    # A fold interrupted between retired.json and the unlink: the file is skipped, then removed.
    dead.write_bytes(WorkerFigures(dead_pid(), "0123456789ab", 0.0, HOST, requests={KEY: 7}).to_json())
    assert sample(metrics.prometheus_text(), "requests_total", **labels) == 11
    assert not dead.exists()
    assert sample(text, "workers_reporting") == 1


def test_live_workers_are_summed_and_their_gauges_taken_worst_first(tmp_path: Path) -> None:
    shield = make_shield()
    metrics = HostMetrics(shield, directory=tmp_path)
    refuse(shield, 2)
    live = WorkerFigures(
        os.getppid(),  # alive for the whole test
        "aaaaaaaaaaaa",
        time.time(),
        HOST,
        requests={KEY: 5},
        refresh_failures={"timeout": 2},
        log_lines_suppressed=4,
        age_seconds=9e9,
        stale=1,
        held_back=3,
        sync_token=1,
    )
    write_figures(tmp_path, live)
    hung = WorkerFigures(os.getpid(), "bbbbbbbbbbbb", time.time() - 600, HOST, requests={KEY: 1}, age_seconds=1e12)
    write_figures(tmp_path, hung)  # alive but not writing: counted, but no say in the gauges
    text = metrics.prometheus_text()
    assert sample(text, "requests_total", route="default", reason="secret_missing", action="rejected") == 8
    assert sample(text, "refresh_failures_total", kind="timeout") == 2
    assert sample(text, "log_lines_suppressed_total") == 4
    assert sample(text, "ranges_stale") == 1
    assert sample(text, "ranges_age_seconds") == 9e9
    assert sample(text, "ranges_sync_token") == 1
    assert sample(text, "ranges_held_back_records") == 3
    assert sample(text, "workers_reporting") == 2
    digests = re.findall(r'policy_selection_info\{policy="([^"]+)",digest="([0-9a-f]{12})"\} 1', text)
    assert {p for p, _ in digests} == {"cloudfront-default", "monitoring"}
    assert sample(text, "policy_selection_prefixes", policy="monitoring") == 1
    # Our own file holds what this scrape used: a scrape by another worker cannot go below it.
    own = [p for p in tmp_path.glob(f"worker-{os.getpid()}-*.json") if "bbbbbbbbbbbb" not in p.name]
    assert WorkerFigures.from_json(own[0].read_bytes()).requests[KEY] == 2


def test_another_containers_worker_is_judged_by_its_writes_and_a_refolded_worker_counts_once(
    tmp_path: Path,
) -> None:
    labels = dict(zip(("route", "reason", "action"), KEY, strict=True))
    # A file from another pid namespace: its pid means nothing here, only its age does.
    foreign = WorkerFigures(dead_pid(), "cccccccccccc", time.time(), "other-boot/4026531836", requests={KEY: 5})
    path = write_figures(tmp_path, foreign)
    scraper_shield = make_shield()
    scraper = HostMetrics(scraper_shield, directory=tmp_path)
    assert sample(scraper.prometheus_text(), "requests_total", **labels) == 5
    assert path.exists()  # not folded: written just now
    # A worker of this process that stops writing for over an hour is folded, then resumes.
    hung_shield = make_shield()
    hung = HostMetrics(hung_shield, directory=tmp_path)
    refuse(hung_shield, 4)
    hung.publish()
    for own in tmp_path.glob(f"worker-{os.getpid()}-*.json"):
        figures = WorkerFigures.from_json(own.read_bytes())
        if figures.requests.get(KEY) == 4:  # the hung one's file, as a reader an hour later sees it
            own.write_bytes(replace(figures, written=0.0, host="other-boot/1").to_json())
    path.write_bytes(replace(foreign, written=time.time() - 7200).to_json())
    assert sample(scraper.prometheus_text(), "requests_total", **labels) == 9  # both folded, none lost
    assert not path.exists()
    refuse(hung_shield, 2)
    hung.publish()  # finds itself folded: writes only what came after, under a new token
    refuse(scraper_shield, 1)
    assert sample(scraper.prometheus_text(), "requests_total", **labels) == 12  # 5 + 6 + 1, not 16


def test_refresh_failures_and_stale_come_from_the_refresher(tmp_path: Path) -> None:
    from originshield import Refresher

    missing = tmp_path / "missing.json"
    refresher = Refresher(str(missing), initial=load_ranges(), max_age=1.0)
    refresher.refresh_now()
    shield = OriginShield(ok_app, ranges=refresher, secret=SecretHeader.of("x-origin-verify", [SECRET]))
    text = HostMetrics(shield).prometheus_text()
    assert sample(text, "refresh_failures_total", kind="file-error") == 1
    assert sample(text, "ranges_stale") == 1  # the embedded snapshot is months old, max_age 1 s
    assert sample(text, "ranges_age_seconds") > 86400


def test_readme_fastapi_snippet_finds_the_instance_and_serves_metrics(tmp_path: Path) -> None:
    match = re.search(r"```python\n(from contextlib import asynccontextmanager\n.*?)```", README, re.DOTALL)
    assert match, "the README's add_middleware metrics snippet"
    code = match.group(1).replace("/var/cache/originshield/metrics", str(tmp_path))
    namespace: dict[str, Any] = {}
    os.environ["ORIGIN_SECRET"] = SECRET
    try:
        exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    finally:
        del os.environ["ORIGIN_SECRET"]
    app = namespace["app"]
    with TestClient(app, client=("10.0.3.3", 5000)) as client:
        shield = find_shield(app)
        assert isinstance(shield, OriginShield)
        assert client.get("/").status_code == 403  # no secret
        response = client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert 'reason="secret_missing",action="rejected"} 1' in response.text
    with TestClient(app, client=("192.0.2.1", 5000)) as client:
        assert client.get("/metrics").status_code == 403  # its own policy: not from the monitoring network
    assert list(tmp_path.glob("worker-*.json"))  # written at start/stop


def test_find_shield_explains_a_missing_middleware() -> None:
    with pytest.raises(LookupError, match="no OriginShield"):
        find_shield(ok_app)
    shield = make_shield()
    assert find_shield(shield) is shield


def test_two_real_workers_a_scrape_sums_both(tmp_path: Path) -> None:
    config = tmp_path / "originshield.toml"
    config.write_text(
        f"""
default_policy = "cloudfront"
[ranges]
source = "{RANGES}"
cache_dir = "{tmp_path / "cache"}"
[secret]
env = "OS_HM_SECRET"
[policies.cloudfront]
selectors = ["cloudfront-origin-facing"]
require_secret = true
[policies.monitoring]
cidrs = ["127.0.0.1/32"]
source = "peer"
[[routes]]
prefix = "/metrics"
policy = "monitoring"
""",
        encoding="utf-8",
    )
    port = free_port()
    script = Path(sys.executable).with_name("originshield")
    args = [str(script), "serve", "examples.app:app", "--config", str(config), "--workers", "2", "--port", str(port)]
    proc = subprocess.Popen(
        [*args, "--metrics-path", "/metrics", "--no-access-log"],
        cwd=ROOT,
        env={**os.environ, "OS_HM_SECRET": SECRET},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    metrics_dir = tmp_path / "cache" / "metrics"
    try:
        wait_for(base + "/metrics", proc)
        sent = 0
        per_worker: dict[int, int] = {}
        deadline = time.monotonic() + 60
        # Fresh connections, several at once, until each worker has refused some (the kernel
        # spreads connections over the two accepting processes).
        while (len(per_worker) < 2 or min(per_worker.values()) == 0) and time.monotonic() < deadline:
            with ThreadPoolExecutor(8) as pool:
                codes = list(
                    pool.map(lambda _: httpx.get(base + "/", headers={"connection": "close"}).status_code, range(16))
                )
            assert set(codes) == {403}
            sent += len(codes)
            time.sleep(6)  # one writer period: both files are current
            per_worker = {}
            for path in metrics_dir.glob("worker-*.json"):
                figures = WorkerFigures.from_json(path.read_bytes())
                per_worker[figures.pid] = figures.requests.get(KEY, 0)
        assert len(per_worker) == 2 and min(per_worker.values()) > 0, per_worker
        # Every scrape, whichever worker answers it, sees the host's total.
        for _ in range(6):
            text = httpx.get(base + "/metrics", headers={"connection": "close"}).text
            assert sample(text, "requests_total", route="default", reason="secret_missing", action="rejected") == sent
            assert sample(text, "workers_reporting") == 2
    finally:
        proc.terminate()
        output = proc.communicate(timeout=60)[0]  # two workers shutting down on a loaded machine
    assert "Traceback" not in output, output
