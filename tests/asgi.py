"""Raw ASGI for the tests: one scope builder, one request runner and the small apps behind a middleware."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from originshield.aws import AwsIpRanges
from originshield.snapshot import SnapshotHolder

__all__ = ["LifecycleHolder", "Recorder", "http_scope", "never_called", "ok_app", "run_request"]


def http_scope(
    headers: Sequence[tuple[bytes, bytes]] | None = None,
    peer: str | None = "127.0.0.1",
    *,
    port: int = 50000,
    path: str = "/api/items",
    method: str = "GET",
    kind: str = "http",
) -> Scope:
    """An ASGI ``http`` (or ``websocket``) scope as a server hands it over: raw header bytes, no parsing.

    ``headers`` is used as given (a list or a tuple, any case, duplicates kept); ``peer`` is the
    socket peer's address (None: a Unix socket, no ``client``).
    """
    scope: Scope = {
        "type": kind,
        "asgi": {"version": "3.0"},
        "path": path,
        # surrogateescape: a test can put any raw byte in the path, as a server would.
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "query_string": b"",
        "headers": [] if headers is None else headers,
        "client": None if peer is None else (peer, port),
        "server": ("127.0.0.1", 8000),
        "scheme": "http" if kind == "http" else "ws",
    }
    if kind == "http":
        scope["method"] = method
    return scope


def run_request(app: Any, scope: Scope) -> list[Message]:
    """One request through ``app`` (empty body); the messages it sent."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


async def ok_app(scope: Scope, receive: Receive, send: Send) -> None:
    """200 ``ok`` to every request, lifespan completed, websockets accepted."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
    elif scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})
    elif scope["type"] == "websocket":
        await send({"type": "websocket.accept"})


async def never_called(scope: Scope, receive: Receive, send: Send) -> None:
    """The app behind a middleware whose test must never reach it."""
    raise AssertionError("the app was called")


class Recorder:
    """``ok_app`` that records every scope that reached it."""

    def __init__(self) -> None:
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)
        await ok_app(scope, receive, send)


class LifecycleHolder(SnapshotHolder):
    """A ranges holder with the Refresher's lifecycle, for a middleware's lifespan: ``start()`` spawns a
    thread, ``stop(timeout)`` ends it; ``events`` records the calls."""

    def __init__(self, ranges: AwsIpRanges) -> None:
        super().__init__(ranges, "embedded")
        self.events: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.events.append("start")
        self._thread = threading.Thread(target=self._stop.wait, name="test-refresher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 5.0) -> bool:
        self.events.append("stop")
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        return True
