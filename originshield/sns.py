"""SNS push as a nudge: AWS's ``AmazonIpSpaceChanged`` notice triggers an immediate refresh.

AWS publishes a notice on the SNS topic ``arn:aws:sns:us-east-1:806199016981:AmazonIpSpaceChanged``
every time ``ip-ranges.json`` changes (AWS General Reference, "AWS IP address ranges", "Subscribe
to IP address range notifications"). Polling stays the source of truth: a notice only makes the
refresher fetch *now*, from its own configured source, and apply the document only if its MD5 is
the one the notice announced. The notice's ``url``, ``synctoken`` and ``create-time`` are never
used for anything but the log line: an endpoint on the internet must not let its callers choose
what the origin downloads.

:class:`SnsEndpoint` is served by :class:`~originshield.middleware.OriginShield` (``sns=``) on its
own path under its own :class:`~originshield.policy.Policy` (by default: AWS addresses of
us-east-1, where the topic lives), so the usual decision runs before any byte is parsed here. What
each check defends against (AWS SNS Developer Guide, "Verifying the signatures of Amazon SNS
messages" and "Parsing message formats"):

- ``TopicArn`` pinned: any AWS customer can sign messages for *their* topic with the same SNS
  certificate; only the topic says the message is AWS's ranges notice.
- ``SigningCertURL`` only ``https`` on ``sns.<region>.amazonaws.com``, path
  ``/SimpleNotificationService-<hex>.pem``: otherwise an attacker signs with a key of their own and
  points at its certificate. The certificate is trusted because it came over verified TLS from
  that host; its validity dates are checked; it is fetched in a thread with a deadline (never on
  the event loop) and cached, and uncached fetches are rate limited.
- The signature (``SignatureVersion`` 1: RSA SHA-1, 2: RSA SHA-256) over the canonical string
  AWS documents: ``Name\\nValue\\n`` for the type's fields in a fixed order.
- ``Timestamp`` within ``max_age`` (and not from the future beyond ``clock_skew``), and each
  ``MessageId`` acted on once: a captured message cannot be replayed later, nor now.
- ``SubscribeURL`` (subscription confirmation) only ``https`` on the same SNS host pattern: a
  signed message makes us send one GET, and never to a host of the sender's choosing.

Every refusal is answered with a short status (never the reason), logged (rate limited per
reason) and counted in :attr:`SnsEndpoint.counts`.

The signature check needs the optional ``cryptography`` package (``pip install originshield[sns]``).
"""

from __future__ import annotations

import base64
import binascii
import collections
import json
import logging
import re
import ssl
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

from ._types import ASGIApp, Receive, Scope, Send
from .errors import ConfigError
from .policy import Policy, Route
from .selector import Selector

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

__all__ = [
    "REFUSALS",
    "TOPIC_ARN",
    "Refreshable",
    "SnsEndpoint",
    "SnsResult",
    "canonical_string",
    "parse_notice",
]

logger = logging.getLogger("originshield.sns")

#: The one topic whose notices we act on (AWS General Reference, "AWS IP address ranges").
TOPIC_ARN: Final = "arn:aws:sns:us-east-1:806199016981:AmazonIpSpaceChanged"
#: Where SNS certificates and confirmation links live: https://sns.<region>.amazonaws.com/...
SNS_HOST: Final = r"sns\.[a-z]{2}(?:-[a-z]+)+-\d+\.amazonaws\.com"
_CERT_PATH = re.compile(r"/SimpleNotificationService-[0-9a-f]{32}\.pem")

# The fields signed for each message type, in the documented order (SNS "Verifying the signatures
# of Amazon SNS messages"): Subject only when present in a notification.
_SIGNED: Final[Mapping[str, tuple[str, ...]]] = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
_MAX_BODY = 64 * 1024  # an AmazonIpSpaceChanged notice is ~1.5 KB; SNS's own limit is 256 KB
_MD5 = re.compile(r"[0-9a-f]{32}")
_CREATE_TIME = "%Y-%m-%d-%H-%M-%S"  # as AWS writes it: 2017-11-30-18-42-12

#: Every outcome that is not acted on, with the HTTP status it gets.
REFUSALS: Final[Mapping[str, int]] = {
    "method_not_allowed": 405,
    "body_too_large": 413,
    "bad_request": 400,  # not JSON, missing or mistyped fields
    "bad_type": 400,
    "wrong_topic": 403,
    "bad_signature_version": 403,
    "bad_cert_url": 403,
    "stale": 403,
    "from_future": 403,
    "replayed": 200,  # SNS delivers at least once: a duplicate is acknowledged and does nothing
    "bad_signature": 403,
    "bad_certificate": 403,
    "cert_unavailable": 503,  # SNS retries a 5xx: the next delivery may find the certificate
    "bad_notice": 400,
    "bad_subscribe_url": 403,
    "confirm_failed": 502,
}
_ACCEPTED: Final[Mapping[str, int]] = {
    "refresh_requested": 200,
    "subscription_confirmed": 200,
    "unsubscribe_noted": 200,
}


class Refreshable(Protocol):
    """What a valid notice nudges: ``originshield.Refresher`` has this method."""

    def refresh_now(self, *, expected_md5: str | None = None) -> object: ...


@dataclass(frozen=True, slots=True)
class SnsResult:
    """What the endpoint did with one POST: ``outcome`` is a key of :data:`REFUSALS` or an acceptance."""

    outcome: str
    detail: str = ""

    @property
    def status(self) -> int:
        return _ACCEPTED.get(self.outcome) or REFUSALS[self.outcome]

    @property
    def accepted(self) -> bool:
        return self.outcome in _ACCEPTED


def canonical_string(message: Mapping[str, Any]) -> bytes:
    """The bytes SNS signs for ``message`` (its ``Type`` selects the fields; raises ``KeyError``)."""
    lines: list[str] = []
    for name in _SIGNED[message["Type"]]:
        if name == "Subject" and name not in message:
            continue
        lines += (name, message[name])
    return ("\n".join(lines) + "\n").encode("utf-8")


def parse_notice(text: str) -> tuple[str, str, str]:
    """``(md5, synctoken, create_time)`` of an ``AmazonIpSpaceChanged`` message; ``ValueError`` if bad.

    Real messages: ``{"create-time": "2017-11-30-18-42-12", "synctoken": "1511965332",
    "md5": "<32 hex>", "url": "https://ip-ranges.amazonaws.com/ip-ranges.json"}``.
    """
    if len(text) > 4096:
        raise ValueError("message longer than a notice")
    doc = json.loads(text)
    if not isinstance(doc, dict):
        raise ValueError("message is not a JSON object")
    md5, token, created = doc.get("md5"), doc.get("synctoken"), doc.get("create-time")
    if not isinstance(md5, str) or not _MD5.fullmatch(md5.lower()):
        raise ValueError(f"md5: expected 32 hex digits, got {md5!r}"[:120])
    if not isinstance(token, str) or not token.isdigit() or len(token) > 20:
        raise ValueError(f"synctoken: expected digits, got {token!r}"[:120])
    if not isinstance(created, str):
        raise ValueError("create-time: missing")
    datetime.strptime(created, _CREATE_TIME)  # raises ValueError with the format in its message
    return md5.lower(), token, created


def _timestamp(value: str) -> float:
    # SNS writes ISO 8601 UTC with milliseconds: 2017-11-30T18:42:12.123Z. No zone: refused (a
    # naive time would be read in the server's local zone, shifting the age check by hours).
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("Timestamp without a time zone")
    return parsed.astimezone(UTC).timestamp()


class SnsEndpoint:
    """Receives ``AmazonIpSpaceChanged`` over SNS HTTP(S) delivery and nudges the refresher.

    Give it to the middleware: ``OriginShield(app, ..., sns=SnsEndpoint(refresher))``; subscribe
    ``https://<your origin><path>`` to the topic (protocol ``https``, or ``http`` if TLS ends in
    front). Options:

    - ``refresher``: anything with ``refresh_now(expected_md5=...)`` (the ``Refresher``). It is
      called in a background thread (one at a time; notices arriving meanwhile coalesce).
    - ``path``: where SNS posts (exact match); ``policy``: who may post, decided by the middleware
      first (default: AWS ``AMAZON`` addresses in us-east-1, checked on the client address).
    - ``max_age``: oldest ``Timestamp`` acted on (seconds, default 1 hour: SNS retries within it);
      ``clock_skew``: how far in the future a ``Timestamp`` may be.
    - ``cert_timeout``: deadline for fetching a signing certificate; ``ssl_context``: for that
      fetch and the subscription confirmation (default: the system's trust store).
    - ``host_pattern``: the regular expression the host of ``SigningCertURL`` and
      ``SubscribeURL`` must match in full. Change it only in tests (a local CA on loopback).
    - ``topic_arn``: the topic acted on; leave the default outside tests.
    """

    def __init__(
        self,
        refresher: Refreshable,
        *,
        path: str = "/_originshield/sns",
        policy: Policy | None = None,
        max_age: float = 3600.0,
        clock_skew: float = 300.0,
        cert_timeout: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
        host_pattern: str = SNS_HOST,
        topic_arn: str = TOPIC_ARN,
        cert_fetches_per_hour: int = 20,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not callable(getattr(refresher, "refresh_now", None)):
            raise ConfigError("sns: refresher must have a refresh_now(expected_md5=...) method")
        if not isinstance(path, str) or not path.startswith("/") or "?" in path or "/." in path:
            raise ConfigError(f"sns.path: expected an absolute path without query or dot segments, got {path!r}")
        for key, value in (("max_age", max_age), ("clock_skew", clock_skew), ("cert_timeout", cert_timeout)):
            if not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"sns.{key}: must be a positive number of seconds, got {value!r}")
        try:
            self._host = re.compile(host_pattern)
        except re.error as exc:
            raise ConfigError(f"sns.host_pattern: {exc}") from None
        try:  # fail at startup, not on the first notice
            from cryptography import x509  # noqa: F401, PLC0415
        except ImportError:
            raise ConfigError(
                "sns: verifying signatures needs 'cryptography' (pip install originshield[sns])"
            ) from None
        self.path = path
        self.policy = policy or Policy(
            "sns-ip-space-changed",
            selectors=(Selector.of(services=["AMAZON"], regions=["us-east-1"], name="amazon:us-east-1"),),
            source="direct",
        )
        self.route = Route(path, self.policy, methods=frozenset({"POST"}), name="sns")
        self._refresher = refresher
        self._max_age, self._skew, self._cert_timeout = float(max_age), float(clock_skew), float(cert_timeout)
        self._ssl = ssl_context
        self._topic = topic_arn
        self._clock = clock
        self._certs: collections.OrderedDict[str, tuple[RSAPublicKey, float]] = collections.OrderedDict()
        self._fetch_times: collections.deque[float] = collections.deque(maxlen=max(1, cert_fetches_per_hour))
        self._seen: collections.OrderedDict[str, float] = collections.OrderedDict()  # MessageId -> Timestamp
        self._lock = threading.Lock()
        self._refreshing = False
        self._pending: str | None = None
        self._logged: dict[str, float] = {}
        self.counts: collections.Counter[str] = collections.Counter()
        #: ``(md5, result)`` of each refresh the endpoint triggered, newest last (bounded).
        self.refreshes: collections.deque[tuple[str, object]] = collections.deque(maxlen=32)

    # -- ASGI ----------------------------------------------------------------------------------------

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """An ASGI app serving :attr:`path` itself and passing everything else to ``app``."""

        async def sns_or_app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and scope["path"] == self.path:
                await self.serve(scope, receive, send)
            else:
                await app(scope, receive, send)

        return sns_or_app

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            result = self._count(SnsResult("method_not_allowed"))
        else:
            body = await _read_body(receive, _MAX_BODY)
            if body is None:
                result = self._count(SnsResult("body_too_large"))
            else:
                headers = {k.lower(): v for k, v in scope["headers"] if k.lower().startswith(b"x-amz-sns-")}
                result = await self.handle(body, headers)
        text = b"OK\n" if result.accepted or result.outcome == "replayed" else b"Refused\n"
        await send(
            {
                "type": "http.response.start",
                "status": result.status,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(text)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": text})

    # -- the checks ----------------------------------------------------------------------------------

    async def handle(self, body: bytes, headers: Mapping[bytes, bytes] | None = None) -> SnsResult:
        """Check one delivery, act on it and count it (the ASGI-free core; ``headers``: ``x-amz-sns-*``)."""
        return self._count(await self._check(body, headers or {}))

    async def _check(self, body: bytes, headers: Mapping[bytes, bytes]) -> SnsResult:
        try:
            message = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return SnsResult("bad_request", "body is not JSON")
        if not isinstance(message, dict):
            return SnsResult("bad_request", "body is not a JSON object")
        kind = message.get("Type")
        if not isinstance(kind, str) or kind not in _SIGNED:
            return SnsResult("bad_type", f"Type {kind!r}"[:80])
        declared = headers.get(b"x-amz-sns-message-type")
        if declared is not None and declared != kind.encode():
            return SnsResult("bad_type", "x-amz-sns-message-type differs from Type")
        fields = [f for f in _SIGNED[kind] if f != "Subject"] + ["Signature", "SigningCertURL", "SignatureVersion"]
        if any(not isinstance(message.get(f), str) for f in fields) or not isinstance(message.get("Subject", ""), str):
            return SnsResult("bad_request", "a required field is missing or not a string")
        if message["TopicArn"] != self._topic:
            return SnsResult("wrong_topic", f"TopicArn {message['TopicArn']!r}"[:160])
        version = message["SignatureVersion"]
        if version not in ("1", "2"):
            return SnsResult("bad_signature_version", f"SignatureVersion {version!r}"[:60])
        cert_url = message["SigningCertURL"]
        if not self._sns_url(cert_url, cert=True):
            return SnsResult("bad_cert_url", f"SigningCertURL {cert_url!r}"[:200])
        try:
            sent = _timestamp(message["Timestamp"])
        except ValueError:
            return SnsResult("bad_request", "Timestamp is not ISO 8601")
        now = self._clock()
        if now - sent > self._max_age:
            return SnsResult("stale", f"Timestamp {message['Timestamp']} older than {self._max_age:.0f} s")
        if sent - now > self._skew:
            return SnsResult("from_future", f"Timestamp {message['Timestamp']} ahead of the clock")
        message_id = message["MessageId"]
        if message_id in self._seen:
            return SnsResult("replayed", f"MessageId {message_id}"[:80])
        try:
            signature = base64.b64decode(message["Signature"], validate=True)
        except (binascii.Error, ValueError):
            return SnsResult("bad_signature", "Signature is not base64")

        key = await self._public_key(cert_url, now)
        if isinstance(key, SnsResult):
            return key
        if not _verify(key, signature, canonical_string(message), version):
            return SnsResult("bad_signature", f"signature does not verify with {cert_url}")
        # Signed, fresh and about our topic: act on it once. The set of seen ids only ever holds
        # verified messages (an attacker cannot fill it) and forgets them once they are stale anyway.
        if not self._remember(message_id, sent, now):
            return SnsResult("replayed", f"MessageId {message_id}"[:80])
        if kind == "Notification":
            return self._notice(message["Message"])
        if kind == "SubscriptionConfirmation":
            return await self._confirm(message["SubscribeURL"])
        logger.warning("originshield sns: unsubscribed from %s (subscribe again to keep the nudges)", self._topic)
        return SnsResult("unsubscribe_noted")

    def _sns_url(self, url: str, *, cert: bool) -> bool:
        try:
            parts = urllib.parse.urlsplit(url)
        except ValueError:
            return False
        if parts.scheme != "https" or parts.username is not None or parts.password is not None or parts.fragment:
            return False
        if not self._host.fullmatch(parts.netloc):
            return False
        return not cert or (_CERT_PATH.fullmatch(parts.path) is not None and not parts.query)

    def _remember(self, message_id: str, sent: float, now: float) -> bool:
        with self._lock:
            if message_id in self._seen:
                return False
            while self._seen and next(iter(self._seen.values())) < now - self._max_age - self._skew:
                self._seen.popitem(last=False)
            self._seen[message_id] = sent
            if len(self._seen) > 4096:  # far more than AWS publishes in an hour
                self._seen.popitem(last=False)
            return True

    # -- the signing certificate ---------------------------------------------------------------------

    async def _public_key(self, url: str, now: float) -> RSAPublicKey | SnsResult:
        cached = self._certs.get(url)
        if cached is not None and cached[1] > now:
            return cached[0]
        with self._lock:
            if len(self._fetch_times) == self._fetch_times.maxlen and now - self._fetch_times[0] < 3600:
                return SnsResult("cert_unavailable", "certificate fetch budget for this hour used up")
            self._fetch_times.append(now)
        import anyio  # noqa: PLC0415 - only when a certificate is not cached
        import anyio.to_thread  # noqa: PLC0415

        try:
            with anyio.fail_after(self._cert_timeout + 1.0):
                pem = await anyio.to_thread.run_sync(self._download, url, abandon_on_cancel=True)
        except (OSError, TimeoutError, ValueError) as exc:
            return SnsResult("cert_unavailable", f"{url}: {exc}"[:200])
        from cryptography import x509  # noqa: PLC0415
        from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey  # noqa: PLC0415

        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError as exc:
            return SnsResult("bad_certificate", f"{url}: {exc}"[:200])
        key = cert.public_key()
        not_after = cert.not_valid_after_utc.timestamp()
        if not isinstance(key, RSAPublicKey) or not cert.not_valid_before_utc.timestamp() <= now < not_after:
            return SnsResult("bad_certificate", f"{url}: not an RSA certificate valid now")
        self._certs[url] = (key, not_after)
        while len(self._certs) > 8:
            self._certs.popitem(last=False)
        return key

    def _download(self, url: str) -> bytes:
        # In a worker thread: a socket timeout bounds every read, the size bound the memory.
        request = urllib.request.Request(url, headers={"User-Agent": "originshield-sns"})  # noqa: S310 - https only (checked)
        context = self._ssl or ssl.create_default_context()
        opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), _NoRedirect())
        with opener.open(request, timeout=self._cert_timeout) as response:
            pem: bytes = response.read(16 * 1024 + 1)
        if len(pem) > 16 * 1024:
            raise ValueError("certificate larger than 16 KiB")
        return pem

    # -- acting on a verified message ----------------------------------------------------------------

    def _notice(self, text: str) -> SnsResult:
        try:
            md5, token, created = parse_notice(text)
        except ValueError as exc:
            return SnsResult("bad_notice", str(exc)[:200])
        logger.info("originshield sns: ranges changed (synctoken %s, create-time %s): refreshing now", token, created)
        with self._lock:
            self._pending = md5
            if self._refreshing:  # the running refresh picks the newest md5 up when it finishes
                return SnsResult("refresh_requested", md5)
            self._refreshing = True
        threading.Thread(target=self._refresh_loop, name="originshield-sns-refresh", daemon=True).start()
        return SnsResult("refresh_requested", md5)

    def _refresh_loop(self) -> None:
        while True:
            with self._lock:
                md5, self._pending = self._pending, None
                if md5 is None:
                    self._refreshing = False
                    return
            try:
                result: object = self._refresher.refresh_now(expected_md5=md5)
            except Exception as exc:  # the thread must not die silently; polling carries on anyway
                logger.exception("originshield sns: refresh after a notice failed")
                result = exc
            self.refreshes.append((md5, result))

    async def _confirm(self, url: str) -> SnsResult:
        if not self._sns_url(url, cert=False):
            return SnsResult("bad_subscribe_url", f"SubscribeURL {url!r}"[:200])
        import anyio  # noqa: PLC0415
        import anyio.to_thread  # noqa: PLC0415

        try:
            with anyio.fail_after(self._cert_timeout + 1.0):
                await anyio.to_thread.run_sync(self._download, url, abandon_on_cancel=True)
        except (OSError, TimeoutError, ValueError) as exc:
            return SnsResult("confirm_failed", f"{exc}"[:200])
        logger.warning("originshield sns: subscription to %s confirmed", self._topic)
        return SnsResult("subscription_confirmed")

    def _count(self, result: SnsResult) -> SnsResult:
        self.counts[result.outcome] += 1
        now = time.monotonic()
        if not result.accepted and now - self._logged.get(result.outcome, -1e9) >= 60.0:  # a line per reason a minute
            self._logged[result.outcome] = now
            logger.warning("originshield sns: refused reason=%s %s", result.outcome, result.detail)
        return result


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # The host was checked, not where it redirects to.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _verify(key: RSAPublicKey, signature: bytes, data: bytes, version: str) -> bool:
    from cryptography.exceptions import InvalidSignature  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import padding  # noqa: PLC0415

    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303 - SNS SignatureVersion 1
    try:
        key.verify(signature, data, padding.PKCS1v15(), algorithm)
    except InvalidSignature:
        return False
    return True
