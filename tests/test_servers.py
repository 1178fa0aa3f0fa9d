"""Every common ASGI server, for real, on loopback (select with ``-m servers``).

Each server runs ``tests/servers_app.py`` in its own process on a free 127.0.0.1 port, as its
users start it, with proxy-header rewriting off: an allowed request (topology 2: 127.0.0.1 plays
the ALB; the app sees the real peer and never the secret), a refused one, a websocket allowed and
one refused during the handshake, the lifespan reaching the app, and the real ``Refresher`` started
on startup and stopped on shutdown. Then each server once more with its rewriting on (uvicorn and
gunicorn ``forwarded_allow_ips``, hypercorn's ``ProxyFixMiddleware``, granian's proxy-headers
wrapper, daphne ``--proxy-headers``): the middleware logs that the peer was rewritten and how to
turn it off *for that server*.

A server whose package is not installed is skipped with the reason; all of them install from
PyPI on Linux (they are in the ``test`` extra).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus, WebSocketException
from websockets.sync.client import connect

from originshield.rewrite import HINTS
from tests.loopback import free_port
from tests.servers_app import SECRET

pytestmark = [pytest.mark.servers, pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(120)]

ROOT = Path(__file__).parent.parent
EDGE = "130.176.88.1"  # 130.176.88.0/21 GLOBAL CLOUDFRONT_ORIGIN_FACING (tests/data/aws/ip-ranges.json)
VIEWER = "203.0.113.7"
GOOD = {"x-origin-verify": SECRET, "x-forwarded-for": f"{VIEWER}, {EDGE}"}


@dataclass(frozen=True)
class Server:
    name: str
    module: str  # what must be importable
    plain: tuple[str, ...]  # argv after "python -m", {port} substituted
    rewriting: tuple[str, ...]
    wrap: str = ""  # OS_TEST_WRAP for the rewriting run
    lifespan: bool = True


APP = "tests.servers_app:app"
SERVERS = [
    Server(
        "uvicorn-httptools",
        "httptools",
        ("uvicorn", APP, "--port", "{port}", "--http", "httptools", "--no-proxy-headers"),
        ("uvicorn", APP, "--port", "{port}", "--http", "httptools", "--forwarded-allow-ips", "127.0.0.1"),
    ),
    Server(
        "uvicorn-h11",
        "h11",
        ("uvicorn", APP, "--port", "{port}", "--http", "h11", "--no-proxy-headers"),
        ("uvicorn", APP, "--port", "{port}", "--http", "h11", "--proxy-headers", "--forwarded-allow-ips", "*"),
    ),
    Server(
        "hypercorn",
        "hypercorn",
        ("hypercorn", APP, "--bind", "127.0.0.1:{port}"),
        ("hypercorn", APP, "--bind", "127.0.0.1:{port}"),
        wrap="hypercorn",
    ),
    Server(
        "granian",
        "granian",
        ("granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", "{port}", "--workers", "1", APP),
        ("granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", "{port}", "--workers", "1", APP),
        wrap="granian",
    ),
    Server(
        "gunicorn",
        "gunicorn",
        ("gunicorn", "-k", "tests.servers_worker.NoProxyHeadersWorker", "-w", "1", "-b", "127.0.0.1:{port}", APP),
        ("gunicorn", "-k", "uvicorn.workers.UvicornWorker", "-w", "1", "-b", "127.0.0.1:{port}", APP),
    ),
    Server(
        "daphne",
        "daphne",
        ("daphne", "-b", "127.0.0.1", "-p", "{port}", APP),
        ("daphne", "-b", "127.0.0.1", "-p", "{port}", "--proxy-headers", APP),
        lifespan=False,  # daphne implements no ASGI lifespan: the refresher starts on the first request
    ),
]
HINT_FOR = {
    "uvicorn-httptools": "uvicorn",
    "uvicorn-h11": "uvicorn",
    "hypercorn": "hypercorn",
    "granian": "granian",
    "gunicorn": "gunicorn",
    "daphne": "daphne",
}


# Only what the requests here need (the edge's prefix, as in tests/data/aws/ip-ranges.json): each
# server parses it on import in milliseconds, where the full document costs seconds.
SMALL_RANGES = {
    "syncToken": "1787411825",
    "createDate": "2026-08-22-15-17-05",
    "prefixes": [
        {"ip_prefix": "130.176.88.0/21", "region": "GLOBAL", "service": s, "network_border_group": "GLOBAL"}
        for s in ("AMAZON", "CLOUDFRONT_ORIGIN_FACING")
    ],
    "ipv6_prefixes": [],
}


@dataclass
class Running:
    port: int
    events: Path
    log: Path
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def run(server: Server, tmp: Path, *, rewriting: bool) -> Iterator[Running]:
    if importlib.util.find_spec(server.module) is None:
        pytest.skip(f"{server.name}: the package {server.module!r} is not installed")
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        *(a.replace("{port}", str(port)) for a in (server.rewriting if rewriting else server.plain)),
    ]
    events, log = tmp / "events", tmp / "log"
    (tmp / "ip-ranges.json").write_text(json.dumps(SMALL_RANGES))
    env = {
        **os.environ,
        "OS_TEST_EVENTS": str(events),
        "OS_TEST_LOG": str(log),
        "OS_TEST_CACHE": str(tmp / "cache"),
        "OS_TEST_RANGES": str(tmp / "ip-ranges.json"),
        "OS_TEST_WRAP": server.wrap if rewriting else "",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("FORWARDED_ALLOW_IPS", None)
    out = (tmp / "server.out").open("wb")
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{server.name} exited: {(tmp / 'server.out').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{server.name} did not listen: {(tmp / 'server.out').read_text()[-2000:]}")
                time.sleep(0.05)
        yield Running(port, events, log, proc)
    finally:
        proc.send_signal(signal.SIGINT if server.name == "daphne" else signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        out.close()


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.parametrize("server", SERVERS, ids=[s.name for s in SERVERS])
def test_server_end_to_end(server: Server, tmp_path: Path) -> None:
    with run(server, tmp_path, rewriting=False) as srv:
        with httpx.Client(base_url=srv.url, timeout=10) as client:
            ok = client.get("/client", headers=GOOD)
            assert ok.status_code == 200, ok.text
            host, port = ok.json()["client"]
            assert host == "127.0.0.1" and port != 0  # the socket peer, not rewritten
            assert ok.json()["secret_seen"] is False  # stripped before the app
            refused = client.get("/client", headers={"x-forwarded-for": f"{VIEWER}, {EDGE}"})
            assert (refused.status_code, refused.text) == (403, "Forbidden\n")
            forged = client.get("/client", headers={**GOOD, "x-forwarded-for": f"{EDGE}, 198.51.100.9"})
            assert forged.status_code == 403  # the edge must be the last entry, whatever comes first
        with connect(f"ws://127.0.0.1:{srv.port}/ws", additional_headers=GOOD, open_timeout=10) as ws:
            assert ws.recv(timeout=10) == "hello"
        with pytest.raises((InvalidStatus, WebSocketException)) as info:  # noqa: SIM117
            with connect(f"ws://127.0.0.1:{srv.port}/ws", additional_headers={"x-forwarded-for": VIEWER}):
                pytest.fail("the handshake must be refused")
        if isinstance(info.value, InvalidStatus):
            assert info.value.response.status_code == 403
        started = _lines(srv.events)
    stopped = _lines(srv.events)
    if server.lifespan:
        # the middleware starts the refresher when lifespan.startup passes by, before the app sees it
        assert started == ["refresher-start", "startup"]
        assert stopped[2:] == ["refresher-stop:True", "shutdown"]
    else:  # no lifespan: started lazily by the first request, stopped with the process
        assert started == ["refresher-start"]
    assert "rewrites scope['client']" not in "\n".join(_lines(srv.log))


@pytest.mark.parametrize("server", SERVERS, ids=[s.name for s in SERVERS])
def test_server_rewriting_is_detected_and_explained(server: Server, tmp_path: Path) -> None:
    with run(server, tmp_path, rewriting=True) as srv:
        response = httpx.get(f"{srv.url}/client", headers=GOOD, timeout=10)
        assert response.status_code in (200, 403)  # which one depends on the server's choice of entry
    log = srv.log.read_text()
    assert "rewrites scope['client']" in log, log
    assert HINTS[HINT_FOR[server.name]] in log, log
