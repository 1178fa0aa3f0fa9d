"""``originshield serve`` (issue 16): stops on a worker that cannot start, passes the uvicorn options
through (TLS, unix socket, root path, logging, access log), never turns proxy headers on."""

from __future__ import annotations

import contextlib
import json
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .environment import ROOT, SECRET
from .loopback import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # a real server or process; run once in CI (ci/tests.sh)

SCRIPT = str(Path(sys.executable).with_name("originshield"))
PER_ROUTE = "examples/per_route/originshield.toml"  # /health from 127.0.0.1 is allowed


def run(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SCRIPT, "serve", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_a_crashing_app_with_two_workers_stops(tmp_path: Path, server_env: dict[str, str]) -> None:
    (tmp_path / "crashy.py").write_text('raise RuntimeError("boom at import")\n', encoding="utf-8")
    args = ["crashy:app", "--app-dir", str(tmp_path), "--config", PER_ROUTE, "--workers", "2"]
    started = time.monotonic()
    proc = run([*args, "--port", str(free_port())], server_env)
    assert proc.returncode == 2
    assert time.monotonic() - started < 45
    assert "a worker could not start, stopped: RuntimeError: boom at import" in proc.stderr
    assert proc.stderr.count("boom at import") < 10  # not thousands of respawns
    # One worker: the same, not uvicorn's bare exit status 3.
    proc = run(
        ["crashy:app", "--app-dir", str(tmp_path), "--config", PER_ROUTE, "--port", str(free_port())], server_env
    )
    assert proc.returncode == 2
    assert "a worker could not start" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nosuchmod:app"], "app: no module named 'nosuchmod'"),
        (["examples.app"], "app: expected module:attribute"),
        (["examples.app:app", "--ssl-certfile", "c.pem"], "--ssl-certfile and --ssl-keyfile: give both"),
        (["examples.app:app", "--metrics-path", "/metrics"], "--metrics-path /metrics: no [[routes]] entry covers it"),
        (["examples.app:app", "--log-config", "/nonexistent.json"], "/nonexistent.json: not a readable file"),
    ],
)
def test_fails_before_binding(args: list[str], message: str, server_env: dict[str, str]) -> None:
    proc = run([*args, "--config", PER_ROUTE, "--workers", "2", "--port", str(free_port())], server_env)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr


@contextlib.contextmanager
def server(args: list[str], env: dict[str, str], ready: object) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [SCRIPT, "serve", "examples.app:app", "--config", PER_ROUTE, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "server did not start"
            try:
                ready()  # type: ignore[operator]
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="makes its certificate with openssl")
def test_tls_root_path_json_logs_and_no_access_log(tmp_path: Path, server_env: dict[str, str]) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    self_signed = ["-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"]
    openssl = ["openssl", "req", *self_signed, "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run([*openssl, "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    port = free_port()
    base = f"https://127.0.0.1:{port}"
    tls = ssl.create_default_context(cafile=str(cert))
    args = ["--port", str(port), "--ssl-certfile", str(cert), "--ssl-keyfile", str(key), "--root-path", "/origin"]
    with server(
        [*args, "--log-format", "json", "--no-access-log"], server_env, lambda: httpx.get(base, verify=tls)
    ) as proc:
        # uvicorn puts the root path in front of scope["path"]: /health is /origin/health to the
        # routes, so the per-route example's health exemption no longer applies (fail closed).
        assert httpx.get(base + "/health", verify=tls).status_code == 403
        proc.terminate()
        output = proc.communicate(timeout=20)[0]
    lines = output.splitlines()
    warning = [line for line in lines if line.startswith("originshield serve: warning: --root-path /origin")]
    assert warning and "/health" in warning[0]
    docs = [json.loads(line) for line in lines if line.startswith("{")]
    assert any(d["message"].startswith("Uvicorn running on https://") for d in docs)
    refused = [d for d in docs if d["logger"] == "originshield" and "path=/origin/health" in d["message"]]
    assert refused and "route=default" in refused[0]["message"]
    assert not [d for d in docs if d["logger"] == "uvicorn.access"]


def test_unix_socket_refuses_with_no_client_address(tmp_path: Path, server_env: dict[str, str]) -> None:
    sock = str(tmp_path / "s.sock")
    transport = httpx.HTTPTransport(uds=sock)

    def get() -> httpx.Response:
        with httpx.Client(transport=transport) as client:
            return client.get("http://localhost/health")

    with server(["--uds", sock], server_env, get) as proc:
        assert get().status_code == 403  # the monitoring route checks the peer: there is none
        proc.terminate()
        output = proc.communicate(timeout=20)[0]
    assert "originshield serve: warning: --uds" in output
    assert "reason=no_client_address" in output


def test_proxy_headers_stay_off_with_every_option(server_env: dict[str, str]) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with server(["--port", str(port), "--ws", "websockets"], server_env, lambda: httpx.get(base + "/health")):
        # A forged X-Forwarded-For from 127.0.0.1 (uvicorn's default trusted proxy): no rewriting.
        headers = {"x-forwarded-for": "130.176.88.1", "x-origin-verify": SECRET}
        assert httpx.get(base + "/api/items", headers=headers).status_code == 403
        assert httpx.get(base + "/health").status_code == 200
