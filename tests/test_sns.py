"""``originshield.sns``: AWS's ``AmazonIpSpaceChanged`` notice as a nudge to the refresher.

A locally generated CA signs two certificates: the HTTPS server's (127.0.0.1, serving the signing
certificate and the subscription-confirmation link on loopback, playing ``sns.<region>.amazonaws.com``)
and the SNS signing certificate, whose key signs the messages here with the canonical string AWS
documents (SignatureVersion 1: SHA-1, 2: SHA-256). Only the host pattern is changed for the test
(loopback instead of ``sns.<region>.amazonaws.com``), and the endpoint trusts the local CA.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import ipaddress
import json
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from originshield import OriginShield, Policy, Refresher, SecretHeader
from originshield.aws import load_ranges
from originshield.sns import SNS_HOST, TOPIC_ARN, SnsEndpoint, canonical_string, parse_notice

from .loopback import LoopbackHandler, LoopbackServer, uvicorn_thread

NOTICE_MD5 = "7fd59f5c7f5cf643036cbd4443ad3e4b"
CERT_PATH = "/SimpleNotificationService-" + "a" * 32 + ".pem"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str, key: rsa.RSAPrivateKey, issuer: str, issuer_key: rsa.RSAPrivateKey, *, ca: bool, ip: str | None = None
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        # Python 3.13's default context verifies with VERIFY_X509_STRICT (RFC 5280 profile): key
        # identifiers and a key usage are required, as every public CA's certificates carry them.
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=False,
                key_encipherment=not ca,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if ip is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), False)
    return builder.sign(issuer_key, hashes.SHA256())


class Pki:
    def __init__(self, tmp: Path) -> None:
        ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ca = _cert("originshield test CA", ca_key, "originshield test CA", ca_key, ca=True)
        server_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        server = _cert("127.0.0.1", server_key, "originshield test CA", ca_key, ca=False, ip="127.0.0.1")
        self.signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.signing_pem = _cert(
            "sns.amazonaws.com", self.signing_key, "originshield test CA", ca_key, ca=False
        ).public_bytes(serialization.Encoding.PEM)
        self.server_chain = tmp / "server.pem"
        self.server_chain.write_bytes(
            server.public_bytes(serialization.Encoding.PEM)
            + server_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=self.ca.public_bytes(serialization.Encoding.PEM).decode())
        return context


class FakeSns:
    """HTTPS on 127.0.0.1: the signing certificate, and ConfirmSubscription links (recorded)."""

    def __init__(self, pki: Pki) -> None:
        self.hits: list[str] = []

        def answer(h: LoopbackHandler) -> None:
            self.hits.append(h.path)
            if h.path == CERT_PATH:
                h.send_body(pki.signing_pem)
            elif h.path.startswith("/?Action=ConfirmSubscription"):
                h.send_body(b"<ConfirmSubscriptionResponse/>")
            else:
                h.send_body(b"", 404)

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pki.server_chain)
        self.httpd = LoopbackServer(tls=context)
        self.httpd.action = answer
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.httpd.start()

    def close(self) -> None:
        self.httpd.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def sns(pki: Pki) -> Iterator[FakeSns]:
    server = FakeSns(pki)
    yield server
    server.close()


class StubRefresher:
    def __init__(self) -> None:
        self.calls: list[str | None] = []
        self.done = threading.Event()

    def refresh_now(self, *, expected_md5: str | None = None) -> str:
        self.calls.append(expected_md5)
        self.done.set()
        return "stub"


def endpoint(pki: Pki, sns: FakeSns, refresher: Any, **options: Any) -> SnsEndpoint:
    return SnsEndpoint(
        refresher,
        ssl_context=pki.client_context(),
        host_pattern=r"127\.0\.0\.1:\d+",  # the test's stand-in for sns.<region>.amazonaws.com
        **{"cert_timeout": 5.0, **options},
    )


def _iso(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def message(
    pki: Pki,
    sns: FakeSns,
    *,
    kind: str = "Notification",
    version: str = "1",
    md5: str = NOTICE_MD5,
    age: float = 5.0,
    topic: str = TOPIC_ARN,
    message_id: str = "",
    **override: str,
) -> dict[str, str]:
    notice = {
        "create-time": "2026-11-29-13-40-12",
        "synctoken": "1795960812",
        "md5": md5,
        "url": "https://ip-ranges.amazonaws.com/ip-ranges.json",
    }
    msg = {
        "Type": kind,
        "MessageId": message_id or f"4a1c3e3e-{time.monotonic_ns():x}",
        "TopicArn": topic,
        "Subject": "[AWS] IP address ranges changed",
        "Message": json.dumps(notice),
        "Timestamp": _iso(time.time() - age),
        "SignatureVersion": version,
        "SigningCertURL": f"https://{sns.host}{CERT_PATH}",
    }
    if kind != "Notification":
        del msg["Subject"]
        msg["Message"] = f"You have chosen to subscribe to the topic {topic}."
        msg["Token"] = "2336412f37fb687f5d51e6e2425f004a" * 4
        msg["SubscribeURL"] = f"https://{sns.host}/?Action=ConfirmSubscription&TopicArn={topic}&Token=abc"
    msg.update(override)
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303 - SignatureVersion 1 is SHA-1
    signed = canonical_string(msg) if msg["Type"] != "Unknown" else b"no canonical form"
    signature = pki.signing_key.sign(signed, padding.PKCS1v15(), algorithm)
    msg["Signature"] = base64.b64encode(signature).decode()
    return msg


def post(ep: SnsEndpoint, msg: dict[str, Any]) -> str:
    result = asyncio.run(ep.handle(json.dumps(msg).encode(), {b"x-amz-sns-message-type": msg["Type"].encode()}))
    return result.outcome


# -- pure parts ------------------------------------------------------------------------------------


def test_canonical_string_is_the_documented_one() -> None:
    msg = {
        "Type": "Notification",
        "MessageId": "id",
        "TopicArn": "arn",
        "Message": "m\nline",
        "Timestamp": "t",
        "Signature": "ignored",
    }
    assert (
        canonical_string(msg) == b"Message\nm\nline\nMessageId\nid\nTimestamp\nt\nTopicArn\narn\nType\nNotification\n"
    )
    msg["Subject"] = "s"
    assert b"MessageId\nid\nSubject\ns\nTimestamp\n" in canonical_string(msg)


def test_parse_notice_reads_aws_format_and_refuses_the_rest() -> None:
    real = '{"create-time":"2017-11-30-18-42-12","synctoken":"1512067332","md5":"0A4C0F4F12CE5E8C0D9C6EBD6F07A4E2","url":"https://ip-ranges.amazonaws.com/ip-ranges.json"}'
    assert parse_notice(real) == ("0a4c0f4f12ce5e8c0d9c6ebd6f07a4e2", "1512067332", "2017-11-30-18-42-12")
    for bad in ('{"md5": "x"}', "[]", real.replace("2017-11-30-18-42-12", "2017-11-30T18:42:12")):
        with pytest.raises(ValueError):  # noqa: PT011
            parse_notice(bad)


def test_the_real_host_pattern() -> None:
    import re

    assert re.fullmatch(SNS_HOST, "sns.us-east-1.amazonaws.com")
    assert re.fullmatch(SNS_HOST, "sns.us-gov-west-1.amazonaws.com")
    for host in ("sns.us-east-1.amazonaws.com.evil.example", "evil.example", "sns.us-east-1.amazonaws.com:8443"):
        assert not re.fullmatch(SNS_HOST, host)


# -- verification ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "2"])
def test_valid_notice_nudges_the_refresher_with_its_md5_only(pki: Pki, sns: FakeSns, version: str) -> None:
    stub = StubRefresher()
    ep = endpoint(pki, sns, stub)
    assert post(ep, message(pki, sns, version=version)) == "refresh_requested"
    assert stub.done.wait(5)
    assert stub.calls == [NOTICE_MD5]  # never the payload's url or synctoken
    assert ep.counts == {"refresh_requested": 1}


def test_refusals_are_reasoned_counted_and_do_nothing(pki: Pki, sns: FakeSns) -> None:
    stub = StubRefresher()
    ep = endpoint(pki, sns, stub)
    tampered = message(pki, sns)
    tampered["Message"] = tampered["Message"].replace(NOTICE_MD5, "0" * 32)  # signed md5 swapped
    cases = {
        "bad_signature": tampered,
        "wrong_topic": message(pki, sns, topic="arn:aws:sns:us-east-1:123456789012:AmazonIpSpaceChanged"),
        "stale": message(pki, sns, age=2 * 3600),
        "from_future": message(pki, sns, age=-3600),
        "bad_signature_version": message(pki, sns, SignatureVersion="3"),
        "bad_cert_url": message(pki, sns, SigningCertURL=f"http://{sns.host}{CERT_PATH}"),
        "bad_type": message(pki, sns, Type="Unknown"),
    }
    for reason, msg in cases.items():
        assert post(ep, msg) == reason, reason
    other_host = message(pki, sns, SigningCertURL=f"https://attacker.example{CERT_PATH}")
    assert post(ep, other_host) == "bad_cert_url"
    wrong_path = message(pki, sns, SigningCertURL=f"https://{sns.host}/my-own-key.pem")
    assert post(ep, wrong_path) == "bad_cert_url"
    assert asyncio.run(ep.handle(b"not json")).outcome == "bad_request"
    assert post(ep, message(pki, sns, Timestamp="2026-11-29T13:40:12.000")) == "bad_request"  # no zone
    time.sleep(0.2)
    assert stub.calls == []
    assert ep.counts == {**dict.fromkeys(cases, 1), "bad_cert_url": 3, "bad_request": 2}
    # only the messages that passed the cheap checks made us fetch the certificate: once, then cached
    assert sns.hits == [CERT_PATH]


def test_replay_does_nothing(pki: Pki, sns: FakeSns) -> None:
    stub = StubRefresher()
    ep = endpoint(pki, sns, stub)
    msg = message(pki, sns)
    assert post(ep, msg) == "refresh_requested"
    assert stub.done.wait(5)
    assert post(ep, msg) == "replayed"
    assert post(ep, message(pki, sns, message_id=msg["MessageId"], version="2")) == "replayed"
    time.sleep(0.2)
    assert stub.calls == [NOTICE_MD5] and ep.counts == {"refresh_requested": 1, "replayed": 2}


def test_unavailable_certificate_is_a_retryable_refusal(pki: Pki, sns: FakeSns) -> None:
    ep = endpoint(pki, sns, StubRefresher())
    missing = message(pki, sns, SigningCertURL=f"https://{sns.host}/SimpleNotificationService-{'b' * 32}.pem")
    result = asyncio.run(ep.handle(json.dumps(missing).encode()))
    assert (result.outcome, result.status) == ("cert_unavailable", 503)


def test_subscription_confirmation(pki: Pki, sns: FakeSns) -> None:
    ep = endpoint(pki, sns, StubRefresher())
    assert post(ep, message(pki, sns, kind="SubscriptionConfirmation")) == "subscription_confirmed"
    assert any(hit.startswith("/?Action=ConfirmSubscription") for hit in sns.hits)
    hits = len(sns.hits)
    elsewhere = message(pki, sns, kind="SubscriptionConfirmation", SubscribeURL="https://attacker.example/confirm")
    assert post(ep, elsewhere) == "bad_subscribe_url"
    plain = message(pki, sns, kind="SubscriptionConfirmation", SubscribeURL=f"http://{sns.host}/?Action=Confirm")
    assert post(ep, plain) == "bad_subscribe_url"
    assert len(sns.hits) == hits  # no request to a host the sender chose
    assert post(ep, message(pki, sns, kind="UnsubscribeConfirmation")) == "unsubscribe_noted"


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="refresh_now"):
        SnsEndpoint(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"sns\.path"):
        SnsEndpoint(StubRefresher(), path="no-slash")
    with pytest.raises(ValueError, match=r"sns\.max_age"):
        SnsEndpoint(StubRefresher(), max_age=0)
    secret = SecretHeader.of("x-origin-verify", ["sns-e2e-secret-0123456789"])
    with pytest.raises(ValueError, match=r"expected an originshield\.sns\.SnsEndpoint"):
        OriginShield(app_404, secret=secret, sns=object())  # type: ignore[arg-type]


# -- through the middleware, on a real server, and with the real refresher -------------------------


async def app_404(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b""})


@pytest.mark.e2e
def test_served_by_the_middleware_under_its_own_policy(pki: Pki, sns: FakeSns) -> None:
    stub = StubRefresher()
    # The SNS path's own policy: here loopback (SNS's addresses are AWS us-east-1 in production).
    ep = endpoint(pki, sns, stub, path="/hooks/aws-ip-ranges", policy=Policy.health_check(["127.0.0.1/32"], "sns"))
    secret = SecretHeader.of("x-origin-verify", ["sns-e2e-secret-0123456789"])
    mw = OriginShield(app_404, secret=secret, sns=ep, detect_proxy_rewrite=False)
    with uvicorn_thread(mw, lifespan="off", proxy_headers=False) as address:
        url = f"http://{address}"
        msg = message(pki, sns, version="2")
        headers = {"x-amz-sns-message-type": "Notification", "content-type": "text/plain; charset=UTF-8"}
        assert httpx.post(f"{url}/hooks/aws-ip-ranges", content=json.dumps(msg), headers=headers).status_code == 200
        assert httpx.post(f"{url}/hooks/aws-ip-ranges", content=json.dumps(msg), headers=headers).status_code == 200
        forged = message(pki, sns, topic="arn:aws:sns:us-east-1:111111111111:Mine")
        assert httpx.post(f"{url}/hooks/aws-ip-ranges", content=json.dumps(forged)).status_code == 403
        assert httpx.get(f"{url}/hooks/aws-ip-ranges").status_code == 403  # GET: not the SNS route; default policy
        assert httpx.post(f"{url}/hooks/aws-ip-ranges", content=b"x" * 70_000).status_code == 413
        assert httpx.get(f"{url}/other").status_code == 403  # everything else: the default policy
    assert stub.done.wait(5) and stub.calls == [NOTICE_MD5]
    assert ep.counts == {"refresh_requested": 1, "replayed": 1, "wrong_topic": 1, "body_too_large": 1}
    assert mw.counters.allowed(route="sns") == 4


def test_with_the_real_refresher(pki: Pki, sns: FakeSns, tmp_path: Path) -> None:
    import inspect

    if "expected_md5" not in inspect.signature(Refresher.refresh_now).parameters:
        pytest.skip("Refresher.refresh_now has no expected_md5 parameter in this branch (issue 13 adds it)")
    source = Path(__file__).parent / "data" / "aws" / "ip-ranges.json"
    document = tmp_path / "ip-ranges.json"
    document.write_bytes(source.read_bytes())
    refresher = Refresher(str(document), initial=load_ranges(source), parse_worker=False)
    ep = endpoint(pki, sns, refresher)
    md5 = hashlib.md5(document.read_bytes(), usedforsecurity=False).hexdigest()
    deadline = time.monotonic() + 20
    # one at a time: notices that arrive while a refresh runs coalesce into the newest md5
    for expected, notice_md5 in enumerate(["0" * 32, md5], start=1):  # first: a notice for another document
        assert post(ep, message(pki, sns, md5=notice_md5)) == "refresh_requested"
        while len(ep.refreshes) < expected and time.monotonic() < deadline:
            time.sleep(0.05)
    results = {m: getattr(r, "reason", None) or getattr(r, "outcome", None) for m, r in ep.refreshes}
    assert results["0" * 32] == "md5-mismatch"  # the source did not publish what the notice announced: nothing applied
    assert results[md5] in ("unchanged", "applied", "not-modified")


def test_a_stalled_certificate_host_never_blocks_the_event_loop(pki: Pki, sns: FakeSns) -> None:
    import socket

    with socket.socket() as silent:  # accepts TCP connections (backlog) but never answers the TLS handshake
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        host = f"127.0.0.1:{silent.getsockname()[1]}"
        ep = endpoint(pki, sns, StubRefresher(), cert_timeout=0.5)
        stalled = message(pki, sns, SigningCertURL=f"https://{host}{CERT_PATH}")

        async def both() -> tuple[str, int]:
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1

            task = asyncio.create_task(ticker())
            started = time.monotonic()
            result = await ep.handle(json.dumps(stalled).encode())
            assert time.monotonic() - started < 3.0  # bounded by the deadline
            task.cancel()
            return result.outcome, ticks

        outcome, ticks = asyncio.run(both())
    assert outcome == "cert_unavailable"
    assert ticks >= 10  # the loop kept running while the fetch waited in its thread


def test_the_example(pki: Pki, sns: FakeSns, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import runpy

    from starlette.testclient import TestClient

    root = Path(__file__).parent.parent
    monkeypatch.setenv("ORIGINSHIELD_SECRET", "sns-example-secret-0123456789")
    monkeypatch.setenv("ORIGINSHIELD_RANGES_SOURCE", str(root / "tests" / "data" / "aws" / "ip-ranges.json"))
    monkeypatch.setenv("ORIGINSHIELD_CACHE_DIR", str(tmp_path))
    monkeypatch.syspath_prepend(str(root))
    example = runpy.run_path(str(root / "examples" / "sns_nudge" / "asgi.py"))
    app, refresher = example["app"], example["refresher"]
    try:
        notice = json.dumps(message(pki, sns))  # signed, but its certificate is on loopback, not on SNS
        with TestClient(app, client=("10.0.1.9", 40000)) as alb:  # the ALB, forwarding SNS's POST
            sent_by = {"x-forwarded-for": "3.2.0.17"}  # 3.2.0.0/24 us-east-1 AMAZON
            assert alb.post("/_originshield/sns", content=notice, headers=sent_by).status_code == 403
            not_aws = {"x-forwarded-for": "198.51.100.7"}
            assert alb.post("/_originshield/sns", content=notice, headers=not_aws).status_code == 403
        assert app.counters.rejected(route="sns") == {"edge_not_allowed": 1}  # the policy, first
        assert app.counters.allowed(route="sns") == 1
        assert example["sns"].counts == {"bad_cert_url": 1}  # then the endpoint's own checks
    finally:
        refresher.stop(5.0)


def test_from_the_configuration_file(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from originshield.config import loads_config

    ranges = Path(__file__).parent / "data" / "aws" / "ip-ranges.json"
    text = f"""
default_policy = "cloudfront"
[ranges]
source = "{ranges}"
cache_dir = "{tmp_path}"
[secret]
env = "ORIGINSHIELD_SECRET"
[policies.cloudfront]
selectors = ["cloudfront-origin-facing"]
require_secret = true
[sns]
path = "/hooks/ip-ranges"
"""
    environ = {"ORIGINSHIELD_SECRET": "sns-config-secret-0123456789"}
    config = loads_config(text, environ=environ)
    assert config.sns is not None and config.sns.path == "/hooks/ip-ranges"
    shield: Any = config.build(app_404, environ=environ)
    try:
        assert "'sns'" in repr(shield)  # the endpoint's route, under its own policy
        client = TestClient(shield, client=("198.51.100.7", 40000))  # no lifespan: app_404 has none
        assert client.post("/hooks/ip-ranges", content=b"{}").status_code == 403  # not AWS us-east-1
        assert shield.counters.rejected(route="sns") == {"peer_not_allowed": 1}
    finally:
        shield.holder.stop(5.0)
    with pytest.raises(ValueError, match=r"needs \[ranges\] with a source and refresh on"):
        loads_config(text.replace("[secret]", "refresh = false\n[secret]"), environ=environ)
    with pytest.raises(ValueError, match=r"sns\.path"):
        loads_config(text.replace('path = "/hooks/ip-ranges"', 'path = "hooks"'), environ=environ)
