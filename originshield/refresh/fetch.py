"""Conditional, bounded download of a ranges document from HTTPS, HTTP, ``file://`` or a local path.

Why each bound exists:

- Certificate verification with the default SSL context: the document decides who may reach the
  origin, so a man-in-the-middle must not be able to substitute it. Redirects from ``https`` to
  ``http`` are refused for the same reason.
- A socket timeout (connect and every read) and a total deadline enforced by a watchdog that shuts
  the connection's socket down when it passes: a server that drips its headers or body one byte at
  a time defeats any per-read timeout (the "slow loris" of clients), never the watchdog. The fetch
  ends by its deadline whatever the peer does (name resolution aside: getaddrinfo cannot be
  interrupted; the system resolver's own timeouts bound it).
- A header block cut off by the peer is an error, not an empty 200: http.client reads end-of-file
  in the headers as their end.
- A maximum size for the body and for its decompressed form: a runaway response or a gzip bomb must
  not exhaust memory before validation even starts.
- Conditional requests (RFC 9110 13.1: ``If-None-Match`` with the last ETag, ``If-Modified-Since``
  with the last ``Last-Modified``): a 304 costs a few hundred bytes instead of 2.6 MB and no rebuild.
- ``Accept-Encoding: gzip``: the document compresses about 10x.

Environment proxies (``HTTPS_PROXY``) are honoured, as origin servers often reach the internet only
through an egress proxy.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.client
import os
import socket
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass
from typing import IO, Any, Literal

from originshield.errors import FetchError

__all__ = ["FetchError", "FetchResult", "fetch", "md5_hex"]

_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class FetchResult:
    """A 200 (``body`` holds the decoded, decompressed document) or a 304 (``body`` is empty)."""

    status: Literal["ok", "not-modified"]
    body: bytes
    etag: str | None
    last_modified: str | None
    gzip: bool


def md5_hex(data: bytes) -> str:
    # MD5 is what AWS's SNS "AmazonIpSpaceChanged" notice carries; an integrity check, not security.
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class _NoDowngradeRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(  # noqa: PLR0917 - the base class's signature
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        if req.full_url.startswith("https:") and not newurl.startswith("https:"):
            raise FetchError("http-error", f"refused redirect from https to {newurl!r}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch(
    url: str,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    timeout: float = 10.0,
    deadline: float = 60.0,
    max_bytes: int = 32 * 1024 * 1024,
    context: ssl.SSLContext | None = None,
    user_agent: str = "originshield",
) -> FetchResult:
    """Download ``url`` (``https``/``http``/``file`` URL or a local path). Raises :class:`FetchError`.

    A local file is read whole each time (no conditional request): the refresher compares its
    stat signature first, so an unchanged file is not read at all.
    """
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme in ("http", "https"):
        return _fetch_http(
            url,
            etag=etag,
            last_modified=last_modified,
            timeout=timeout,
            deadline=deadline,
            max_bytes=max_bytes,
            context=context,
            user_agent=user_agent,
        )
    path = local_path(url)
    if path is None:
        raise FetchError("bad-url", f"unsupported source {url!r}: expected https://, http://, file:// or a path")
    try:
        with open(path, "rb") as f:
            body = f.read(max_bytes + 1)
    except OSError as exc:
        raise FetchError("file-error", f"cannot read {path}: {exc}") from None
    if len(body) > max_bytes:
        raise FetchError("too-large", f"{path} is larger than {max_bytes} bytes")
    gz = body[:2] == b"\x1f\x8b"
    return FetchResult("ok", _gunzip(body, max_bytes) if gz else body, None, None, gz)


def local_path(url: str) -> str | None:
    """The file a ``file://`` URL or a plain path names; None for any other URL."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            return None
        return urllib.request.url2pathname(parsed.path)
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return url
    return None


class _Watchdog:
    """Shuts down every socket of one fetch when its deadline passes.

    It keeps its own duplicate of each socket (``sock.dup()``): TLS wraps, and detaches, the
    original object, but a shutdown(2) through any descriptor reaches the connection itself, so a
    read blocked in ``SSL_read`` or ``recv`` in the fetching thread returns at once.
    """

    def __init__(self, seconds: float) -> None:
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self.expired = False
        self._timer = threading.Timer(max(0.0, seconds), self._expire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> None:
        dup = sock.dup()
        with self._lock:
            if not self.expired:
                self._socks.append(dup)
                return
        dup.close()
        sock.close()
        raise TimeoutError("the fetch deadline passed while connecting")

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._socks:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._timer.cancel()
        with self._lock:
            socks, self._socks = self._socks, []
        for sock in socks:
            sock.close()


class _HeadersCut(http.client.HTTPException):
    pass


class _TrackedFile:
    """The response's file object, noting an end-of-file met while the header block is read."""

    def __init__(self, fp: Any) -> None:
        self._fp = fp
        self.in_headers = True
        self.eof_in_headers = False

    def readline(self, limit: int = -1) -> bytes:
        line: bytes = self._fp.readline(limit)
        if self.in_headers and not line:
            self.eof_in_headers = True
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fp, name)


class _CheckedResponse(http.client.HTTPResponse):
    """An HTTPResponse that refuses a header block without its terminating empty line (RFC 9112
    2.1): http.client takes end-of-file for the end of the headers, so a connection cut in the
    middle of them would read as a complete response with an empty (close-delimited) body."""

    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        self.fp: Any = _TrackedFile(self.fp)

    def begin(self) -> None:
        super().begin()
        tracked = self.fp
        if isinstance(tracked, _TrackedFile):
            tracked.in_headers = False
            if tracked.eof_in_headers:
                raise _HeadersCut("the connection ended inside the response header block")


def _watch_connections(conn: http.client.HTTPConnection, watchdog: _Watchdog) -> None:
    create = conn._create_connection  # type: ignore[attr-defined]  # http.client's documented test hook

    def create_and_watch(*args: Any, **kwargs: Any) -> socket.socket:
        sock: socket.socket = create(*args, **kwargs)
        watchdog.watch(sock)
        return sock

    conn._create_connection = create_and_watch  # type: ignore[attr-defined]


class _WatchedHTTP(http.client.HTTPConnection):
    response_class = _CheckedResponse

    def __init__(self, *args: Any, watchdog: _Watchdog, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _watch_connections(self, watchdog)


class _WatchedHTTPS(http.client.HTTPSConnection):
    response_class = _CheckedResponse

    def __init__(self, *args: Any, watchdog: _Watchdog, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _watch_connections(self, watchdog)


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, watchdog: _Watchdog) -> None:
        super().__init__()
        self._watchdog = watchdog

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_WatchedHTTP, watchdog=self._watchdog), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, watchdog: _Watchdog, context: ssl.SSLContext) -> None:
        super().__init__(context=context)
        self._watchdog = watchdog
        self._ctx = context

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_WatchedHTTPS, watchdog=self._watchdog), req, context=self._ctx)


def _fetch_http(
    url: str,
    *,
    etag: str | None,
    last_modified: str | None,
    timeout: float,
    deadline: float,
    max_bytes: int,
    context: ssl.SSLContext | None,
    user_agent: str,
) -> FetchResult:
    headers = {"Accept-Encoding": "gzip", "User-Agent": user_agent}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - scheme checked by the caller
    watchdog = _Watchdog(deadline)
    try:
        return _fetch_watched(url, request, watchdog, etag, last_modified, timeout, deadline, max_bytes, context)
    except FetchError:
        raise
    except (OSError, http.client.HTTPException) as exc:
        if watchdog.expired:
            raise FetchError("timeout", f"{url}: not complete within the deadline of {deadline}s") from None
        raise FetchError("network-error", f"{url}: {exc!r}") from None
    finally:
        watchdog.close()


def _fetch_watched(  # noqa: PLR0917 - one call site
    url: str,
    request: urllib.request.Request,
    watchdog: _Watchdog,
    etag: str | None,
    last_modified: str | None,
    timeout: float,
    deadline: float,
    max_bytes: int,
    context: ssl.SSLContext | None,
) -> FetchResult:
    handlers: list[urllib.request.BaseHandler] = [_NoDowngradeRedirect(), _HTTPHandler(watchdog)]
    if url.startswith("https:"):
        # Creating a context loads the CA bundle (tens of milliseconds): callers pass one to reuse.
        handlers.append(_HTTPSHandler(watchdog, context or ssl.create_default_context()))
    opener = urllib.request.build_opener(*handlers)
    too_late = f"{url}: not complete within the deadline of {deadline}s"
    try:
        response = opener.open(request, timeout=min(timeout, deadline))
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 304:
            return FetchResult("not-modified", b"", etag, last_modified, False)
        raise FetchError("http-error", f"HTTP {exc.code} {exc.reason} from {url}") from None
    except TimeoutError:
        raise FetchError("timeout", too_late if watchdog.expired else f"{url}: no answer for {timeout}s") from None
    except urllib.error.URLError as exc:
        if watchdog.expired:
            raise FetchError("timeout", too_late) from None
        if isinstance(exc.reason, TimeoutError):
            raise FetchError("timeout", f"timed out connecting to {url} after {timeout}s") from None
        raise FetchError("network-error", f"cannot reach {url}: {exc.reason}") from None
    except _HeadersCut as exc:
        if watchdog.expired:
            raise FetchError("timeout", too_late) from None
        raise FetchError("network-error", f"{url}: {exc}") from None
    except (OSError, http.client.HTTPException) as exc:
        if watchdog.expired:
            raise FetchError("timeout", too_late) from None
        raise FetchError("network-error", f"cannot reach {url}: {exc!r}") from None
    with response:
        if response.status != 200:
            raise FetchError("http-error", f"HTTP {response.status} {response.reason} from {url}")
        length = response.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > max_bytes:
            raise FetchError("too-large", f"{url}: Content-Length {length} exceeds the limit of {max_bytes} bytes")
        chunks: list[bytes] = []
        size = 0
        try:
            while chunk := response.read(_CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise FetchError("too-large", f"{url}: body exceeds the limit of {max_bytes} bytes")
                chunks.append(chunk)
        except TimeoutError:
            raise FetchError("timeout", too_late if watchdog.expired else f"{url}: no data for {timeout}s") from None
        except FetchError:
            raise
        except (OSError, http.client.HTTPException) as exc:  # connection reset, IncompleteRead
            if watchdog.expired:
                raise FetchError("timeout", too_late) from None
            raise FetchError("network-error", f"{url}: download interrupted: {exc!r}") from None
        if watchdog.expired:  # a close-delimited body the watchdog cut short reads as complete
            raise FetchError("timeout", too_late)
        body = b"".join(chunks)
        encoding = (response.headers.get("Content-Encoding") or "identity").strip().lower()
        new_etag = response.headers.get("ETag")
        new_last_modified = response.headers.get("Last-Modified")
    if encoding in ("gzip", "x-gzip"):
        return FetchResult("ok", _gunzip(body, max_bytes), new_etag, new_last_modified, True)
    if encoding != "identity":
        raise FetchError("http-error", f"{url}: unsupported Content-Encoding {encoding!r}")
    return FetchResult("ok", body, new_etag, new_last_modified, False)


def _gunzip(data: bytes, max_bytes: int) -> bytes:
    # Incremental with an output bound: a few kilobytes of gzip can expand to gigabytes. zlib
    # releases the GIL while inflating, so this does not stall the event loop.
    d = zlib.decompressobj(wbits=31)
    try:
        out = d.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise FetchError("invalid-document", f"corrupt gzip data: {exc}") from None
    if len(out) > max_bytes:
        raise FetchError("too-large", f"decompressed document exceeds the limit of {max_bytes} bytes")
    if not d.eof:
        raise FetchError("invalid-document", "truncated gzip data")
    return out
