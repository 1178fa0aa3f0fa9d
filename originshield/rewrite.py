"""Detect an ASGI server (or a proxy-fix middleware) that rewrites ``scope["client"]`` before us.

OriginShield decides from the socket peer and walks X-Forwarded-For itself, from the right, over
``trusted_proxies`` only. A server that has already replaced ``scope["client"]`` with an
X-Forwarded-For entry hides the peer: with a trust list it hands us the CloudFront edge or the
viewer instead of the ALB; trusting everyone (``'*'``, or daphne, which takes the leftmost entry)
it hands us whatever the sender wrote. How each server does it (read from their sources):

- uvicorn (``--proxy-headers``, **on by default**) and gunicorn with uvicorn workers: uvicorn's
  ``ProxyHeadersMiddleware`` wraps the app when the peer is in ``forwarded_allow_ips`` (default
  ``127.0.0.1,::1``; gunicorn's ``--forwarded-allow-ips`` is passed through); client = the
  rightmost entry not in the list (the leftmost with ``'*'``), port 0.
- hypercorn: no server option; ``hypercorn.middleware.ProxyFixMiddleware`` (``trusted_hops``)
  when the user wraps the app with it; client = the n-th entry from the right, port 0.
- granian: no server option; ``granian.utils.proxies.wrap_asgi_with_proxy_headers`` when the user
  wraps the app with it; uvicorn's rule, port 0.
- daphne ``--proxy-headers``: client = the **leftmost** entry, port 0 or X-Forwarded-Port.

:class:`RewriteProbe` looks twice. On lifespan startup and on the first requests it walks the
calling frames for those middlewares (they await the app, so they are on the stack while we run)
and reads their settings. On the first requests it also looks for the signs any rewriting leaves:
a client port of 0 (no TCP peer has port 0; every rewriter above writes it) or the port of
X-Forwarded-Port (daphne), with the client equal to the last (or first) X-Forwarded-For entry
saying which entry the server took (a proxy appends *its* peer, so the real peer is never the
last entry itself). A client that merely writes its own address into X-Forwarded-For is not
reported: it cannot also choose port 0. While the probe watches, the middleware decides in
Python (its C decider stands aside until then). Each finding is logged once, as a warning that
says how to turn the rewriting off for the server found. The probe costs nothing after its first ``requests`` requests.
"""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import dataclass
from types import FrameType
from typing import Final

from ._types import Scope

__all__ = ["HINTS", "Finding", "RewriteProbe", "detect_server"]

logger = logging.getLogger("originshield")

#: How to turn the rewriting off, per server (``None``: the server could not be told).
HINTS: Final[dict[str | None, str]] = {
    "uvicorn": "run uvicorn with --no-proxy-headers (uvicorn.run(..., proxy_headers=False)); "
    "`originshield serve` does this",
    "gunicorn": "use a uvicorn worker class with proxy headers off: class Worker(UvicornWorker): "
    "CONFIG_KWARGS = {**UvicornWorker.CONFIG_KWARGS, 'proxy_headers': False} "
    "(gunicorn's --forwarded-allow-ips only narrows whom it trusts)",
    "hypercorn": "remove hypercorn.middleware.ProxyFixMiddleware from in front of OriginShield "
    "(hypercorn itself does not rewrite)",
    "granian": "do not wrap the app with granian.utils.proxies.wrap_asgi_with_proxy_headers "
    "(granian itself does not rewrite)",
    "daphne": "drop --proxy-headers (and --proxy-headers-host/--proxy-headers-port) from the daphne command line",
    None: "turn off the server's X-Forwarded-For handling, or remove the proxy-fix middleware in front of OriginShield",
}

# (module, class) of the rewriting middlewares -> server
_REWRITERS: Final = {
    ("uvicorn.middleware.proxy_headers", "ProxyHeadersMiddleware"): "uvicorn",
    ("hypercorn.middleware.proxy_fix", "ProxyFixMiddleware"): "hypercorn",
}
# Which server runs us, most specific first: uvicorn is a dependency of originshield, so its being
# imported says little; gunicorn runs uvicorn workers, so it comes before uvicorn.
_SERVER_MODULES: Final = (
    ("daphne", "daphne.server"),
    ("granian", "granian._granian"),
    ("hypercorn", "hypercorn.config"),
    ("gunicorn", "gunicorn.arbiter"),
    ("uvicorn", "uvicorn.server"),
)
_MAX_FRAMES = 64


@dataclass(frozen=True, slots=True)
class Finding:
    """One sign of rewriting: ``server`` (or ``None``), ``kind`` and a human ``detail``."""

    server: str | None
    kind: str
    detail: str

    @property
    def hint(self) -> str:
        return HINTS[self.server]

    def message(self) -> str:
        server = self.server or "the ASGI server"
        return (
            f"originshield: {server} rewrites scope['client'] from forwarding headers before OriginShield runs "
            f"({self.detail}); the socket peer is lost and trusted_proxies cannot apply: {self.hint}"
        )


def detect_server() -> str | None:
    """The ASGI server this process runs under, judged from the modules it imported."""
    for server, module in _SERVER_MODULES:
        if module in sys.modules:
            return server
    return None


class RewriteProbe:
    """Looks for server-side proxy rewriting on startup and on the first ``requests`` requests."""

    def __init__(self, *, requests: int = 16) -> None:
        self._left = requests
        self._lock = threading.Lock()
        self._reported: set[tuple[str | None, str]] = set()
        self.findings: list[Finding] = []

    @property
    def active(self) -> bool:
        """Whether requests are still being looked at."""
        return self._left > 0

    def startup(self) -> None:
        """On lifespan startup: the rewriting middlewares on the stack, and daphne's command line."""
        self._frames(sys._getframe(1))
        if "daphne.server" in sys.modules and "--proxy-headers" in sys.argv:
            self._report(Finding("daphne", "daphne-proxy-headers", "daphne was started with --proxy-headers"))
        if "granian.utils.proxies" in sys.modules:
            self._report(
                Finding("granian", "granian-wrapper-imported", "granian.utils.proxies is imported: is the app wrapped?")
            )

    def observe(self, scope: Scope) -> bool:
        """Look at one request's scope (called by the middleware before deciding); ``False`` once done."""
        with self._lock:
            if self._left <= 0:
                return False
            self._left -= 1
        self._frames(sys._getframe(1))
        client = scope.get("client")
        if not client:
            return self._left > 0
        host, port = client[0], client[1]
        entries: list[str] = []
        port_header = False
        for name, value in scope["headers"]:
            lower = name.lower()
            if lower == b"x-forwarded-for":
                entries += (e.strip() for e in value.decode("latin-1").split(","))
            elif lower == b"x-forwarded-port":
                port_header |= value.strip() == str(port).encode()
        # A client cannot choose its port 0, nor make a server copy X-Forwarded-Port into the scope:
        # only with one of these is the position of the address in the chain a sign, not a forgery.
        if port != 0 and not port_header:
            return self._left > 0
        server = detect_server()
        if port == 0:
            self._report(Finding(server, "port-zero", f"client {host!r} has port 0, which no TCP peer has"))
        if entries and host == entries[-1]:
            self._report(Finding(server, "peer-is-last-entry", f"client {host!r} is the last X-Forwarded-For entry"))
        elif len(entries) > 1 and host == entries[0]:
            self._report(
                Finding(
                    server,
                    "peer-is-first-entry",
                    f"client {host!r} is the first X-Forwarded-For entry, which the sender writes",
                )
            )
        return self._left > 0

    def _frames(self, frame: FrameType | None) -> None:
        for _ in range(_MAX_FRAMES):
            if frame is None:
                return
            obj = frame.f_locals.get("self")
            if obj is not None:
                cls = type(obj)
                server = _REWRITERS.get((cls.__module__, cls.__name__))
                if server is not None:
                    self._report(_describe(server, obj))
            frame = frame.f_back

    def _report(self, finding: Finding) -> None:
        with self._lock:
            key = (finding.server, finding.kind)
            if key in self._reported:
                return
            self._reported.add(key)
            self.findings.append(finding)
        logger.warning("%s", finding.message())


def _describe(server: str, middleware: object) -> Finding:
    if server == "hypercorn":
        hops = getattr(middleware, "trusted_hops", "?")
        mode = getattr(middleware, "mode", "?")
        return Finding("hypercorn", "proxy-fix-middleware", f"ProxyFixMiddleware(mode={mode!r}, trusted_hops={hops})")
    trusted = getattr(middleware, "trusted_hosts", None)
    if getattr(trusted, "always_trust", False):
        allowed = "'*': the client becomes the leftmost, sender-written entry"
    else:
        names = [*getattr(trusted, "trusted_hosts", ()), *getattr(trusted, "trusted_networks", ())]
        names += list(getattr(trusted, "trusted_literals", ()))
        allowed = ",".join(sorted(str(n) for n in names)) or "?"
    if "gunicorn.arbiter" in sys.modules or "uvicorn.workers" in sys.modules:
        server = "gunicorn"
    return Finding(server, "proxy-headers-middleware", f"proxy headers on, forwarded_allow_ips={allowed}")
