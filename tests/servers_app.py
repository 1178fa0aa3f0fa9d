"""The app every ASGI server of ``tests/test_servers.py`` runs in its own process.

OriginShield in topology 2 (127.0.0.1 plays the ALB) around a small Starlette app, with a real
``Refresher`` reading the test ranges file (no network) whose ``start``/``stop`` are recorded, as
are the app's lifespan events, in the file ``$OS_TEST_EVENTS``; the ``originshield`` log goes to
``$OS_TEST_LOG``. ``$OS_TEST_WRAP`` puts a proxy-fix wrapper in front of the middleware, as a user
of that server would: ``hypercorn`` (``ProxyFixMiddleware``) or ``granian``
(``wrap_asgi_with_proxy_headers``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from originshield import OriginShield, Refresher, SecretHeader, Selector, load_ranges

SECRET = "servers-origin-secret-0123456789"
# A small document written by the test (parsing the full 2.6 MB one costs each server seconds).
RANGES = Path(os.environ.get("OS_TEST_RANGES") or Path(__file__).parent / "data" / "aws" / "ip-ranges.json")
EVENTS = Path(os.environ.get("OS_TEST_EVENTS", os.devnull))


def record(event: str) -> None:
    with EVENTS.open("a") as f:
        f.write(f"{event}\n")


class RecordingRefresher(Refresher):
    """The real refresher; ``start``/``stop`` also leave a line in the events file."""

    def start(self) -> None:
        record("refresher-start")
        super().start()

    def stop(self, timeout: float | None = 5.0) -> bool:
        stopped = super().stop(timeout)
        record(f"refresher-stop:{stopped}")
        return stopped


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    record("startup")
    yield
    record("shutdown")


async def client(request: Request) -> JSONResponse:
    peer = request.scope.get("client")
    return JSONResponse({"client": list(peer) if peer else None, "secret_seen": "x-origin-verify" in request.headers})


async def ws(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hello")
    await websocket.close()


if "OS_TEST_LOG" in os.environ:
    _handler = logging.FileHandler(os.environ["OS_TEST_LOG"])
    _handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    logging.getLogger("originshield").addHandler(_handler)
    logging.getLogger("originshield").setLevel(logging.INFO)

origin = Starlette(routes=[Route("/client", client), WebSocketRoute("/ws", ws)], lifespan=lifespan)
refresher = RecordingRefresher(
    str(RANGES),
    cache_dir=os.environ.get("OS_TEST_CACHE") or None,
    selectors=[Selector.preset("cloudfront-origin-facing")],
    initial=load_ranges(RANGES),
    parse_worker=False,
)
app: Any = OriginShield(
    origin,
    ranges=refresher,
    secret=SecretHeader.of("x-origin-verify", [SECRET]),
    trusted_proxies=["127.0.0.1/32"],
)
if os.environ.get("OS_TEST_WRAP") == "hypercorn":
    from hypercorn.middleware import ProxyFixMiddleware

    app = ProxyFixMiddleware(app, mode="legacy", trusted_hops=1)
elif os.environ.get("OS_TEST_WRAP") == "granian":
    from granian.utils.proxies import wrap_asgi_with_proxy_headers

    app = wrap_asgi_with_proxy_headers(app, trusted_hosts="127.0.0.1")
