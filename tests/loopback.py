"""Real servers on 127.0.0.1 for the tests: a scriptable HTTP server, uvicorn in a thread, free ports.

Tests talk only to loopback (the house rule): every server here binds 127.0.0.1. The HTTP server is
scriptable per test (``server.action``, ``server.serve(...)``) so that a ranges source can misbehave
exactly as a test needs: slow, cut, oversized, refusing, dripping one byte at a time.
"""

from __future__ import annotations

import gzip
import http.server
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

__all__ = ["Action", "LoopbackHandler", "LoopbackServer", "free_port", "uvicorn_thread"]

Action = Callable[["LoopbackHandler"], None]


def free_port() -> int:
    """A 127.0.0.1 port nothing listens on once this returns (for a child process to bind, or to be refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LoopbackHandler(http.server.BaseHTTPRequestHandler):
    server: LoopbackServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        with self.server.counter_lock:
            self.server.requests.append(dict(self.headers.items()))
            self.server.in_flight += 1
            self.server.max_in_flight = max(self.server.max_in_flight, self.server.in_flight)
        try:
            self.server.action(self)
        finally:
            with self.server.counter_lock:
                self.server.in_flight -= 1

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def send_body(self, body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> None:
        headers = dict(headers or {})
        if "gzip" in self.headers.get("Accept-Encoding", "") and self.server.gzip:
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class LoopbackServer(http.server.ThreadingHTTPServer):
    """HTTP (or HTTPS with ``tls``) on 127.0.0.1 that answers each GET with ``action(handler)``.

    It records every request's headers and the most requests it served at once; ``release`` is set
    on ``close()`` so that a handler told to stall or drip ends when the test does.
    """

    daemon_threads = True
    action: Action
    gzip = False

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), LoopbackHandler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.scheme = "http" if tls is None else "https"
        self.requests: list[dict[str, str]] = []
        self.counter_lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0
        self.release = threading.Event()
        self.action = lambda h: h.send_body(b"", 500)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server_address[1]}/ip-ranges.json"

    def serve(self, body: bytes, headers: dict[str, str] | None = None, delay: float = 0.0) -> None:
        def action(h: LoopbackHandler) -> None:
            if delay:
                time.sleep(delay)
            h.send_body(body, 200, headers)

        self.action = action

    def start(self) -> LoopbackServer:
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def close(self) -> None:
        self.release.set()  # ends every stalled or dripping handler
        self.shutdown()
        self.server_close()


@contextmanager
def uvicorn_thread(app: Any, **config: Any) -> Iterator[str]:
    """Run ``app`` under uvicorn in a thread on 127.0.0.1; yields ``"127.0.0.1:PORT"``.

    The socket is bound here and handed to uvicorn: no window in which another process takes the port.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, **{"log_level": "warning", **config}))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()
