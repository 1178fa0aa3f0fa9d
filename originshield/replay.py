"""``originshield replay``: what enforcing a configuration would have done to real traffic.

Reads access logs as AWS delivers them and decides every request with the configured middleware's
public :meth:`~originshield.middleware.OriginShield.explain` (no cache, no counters, no logging),
against the ranges in service or a given publication, so that an operator can answer "would any
real edge of last week have been refused?" before switching ``report_only`` off.

Formats (one file may be gzip-compressed, as S3 delivers them; ``-`` is stdin):

- ALB access logs (Elastic Load Balancing User Guide, "Access log entries"): space-separated, quoted
  fields; ``client:port`` is what the ALB saw, i.e. the CloudFront edge in topology 2 (the address
  the ALB appends to X-Forwarded-For and the middleware checks), or the client itself when nothing
  is in front. The request is replayed as the app behind the ALB receives it: the socket peer is an
  ALB node (``peer``, by default the first address of the first ``trusted_proxies`` network) and
  X-Forwarded-For is ``<viewer>, <client>``.
- CloudFront standard logs (CloudFront Developer Guide, "Standard logging"): tab-separated, a
  ``#Fields:`` line names the columns; ``c-ip`` is the viewer. The edge that forwarded to the
  origin is not logged: the request is replayed as coming from ``edge`` (by default the first
  origin-facing address of the ranges), which tests routes, paths, methods and country rules.

What logs do not hold is assumed and said so in the report: the secret header is present (your
distribution sends it; ``secret_present=False`` replays without it), the viewer behind an ALB is
``viewer`` (192.0.2.1, RFC 5737, unless given). Memory stays bounded whatever the input: lines
are streamed, and at most ``max_addresses`` refused addresses are tracked (the rest are counted).
"""

from __future__ import annotations

import gzip
import io
import ipaddress
import re
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final, Literal

from .aws import AwsIpRanges
from .decision import Decision
from .errors import ConfigError
from .middleware import OriginShield
from .radix import RadixTree

__all__ = ["LogFormat", "LogRequest", "RefusedAddress", "ReplayReport", "Replayer", "read_logs"]

LogFormat = Literal["alb", "cloudfront", "auto"]
_ALB_TYPES: Final = frozenset({"http", "https", "h2", "grpcs", "ws", "wss"})
_ALB_FIELD = re.compile(r'"((?:[^"\\]|\\.)*)"|(\S+)')
_DEFAULT_VIEWER: Final = "192.0.2.1"  # RFC 5737 TEST-NET-1: never a real viewer
_CLOUDFRONT_SERVICES: Final = frozenset({"CLOUDFRONT", "CLOUDFRONT_ORIGIN_FACING"})
#: Refusals for who the address is (not for the path, the method or the secret).
_ADDRESS_REASONS: Final = frozenset({"peer_not_allowed", "edge_not_allowed"})


@dataclass(frozen=True, slots=True)
class LogRequest:
    """One request read from a log: when, what, and the address the log recorded."""

    time: str  # ISO 8601, as the log wrote it
    method: str
    path: str
    client: str  # ALB: its client (the edge in topology 2); CloudFront: the viewer (c-ip)
    kind: Literal["alb", "cloudfront"]
    source: str  # file:line


@dataclass(slots=True)
class RefusedAddress:
    """An address whose requests would be refused: how often, why, when first and last."""

    address: str
    count: int
    reasons: Counter[str]
    first_seen: str
    last_seen: str
    #: Where the address sits in the whole ranges document (``region service`` per record).
    aws: tuple[str, ...] = ()

    @property
    def cloudfront(self) -> bool:
        """A CloudFront address refused for being who it is: refusing it is refusing real traffic."""
        return any(r in _ADDRESS_REASONS for r in self.reasons) and any(
            entry.split()[-1] in _CLOUDFRONT_SERVICES for entry in self.aws
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "count": self.count,
            "reasons": dict(self.reasons),
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "aws": list(self.aws),
            "cloudfront": self.cloudfront,
        }


@dataclass(slots=True)
class ReplayReport:
    """The outcome of a replay; :meth:`as_dict` is the ``--json`` document."""

    requests: int = 0
    allowed: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    routes: Counter[str] = field(default_factory=Counter)
    refused: dict[str, RefusedAddress] = field(default_factory=dict)
    untracked_refusals: int = 0  # refusals of addresses beyond max_addresses
    unparsable: int = 0
    unparsable_examples: list[str] = field(default_factory=list)
    formats: Counter[str] = field(default_factory=Counter)
    first_seen: str | None = None
    last_seen: str | None = None
    assumptions: list[str] = field(default_factory=list)
    ranges: dict[str, Any] = field(default_factory=dict)

    @property
    def refused_total(self) -> int:
        return self.requests - self.allowed

    def cloudfront_refused(self) -> list[RefusedAddress]:
        return [r for r in self.refused.values() if r.cloudfront]

    def as_dict(self) -> dict[str, Any]:
        ordered = sorted(self.refused.values(), key=lambda r: (-r.count, r.address))
        return {
            "requests": self.requests,
            "allowed": self.allowed,
            "refused": self.refused_total,
            "reasons": dict(self.reasons.most_common()),
            "refused_by_route": dict(self.routes.most_common()),
            "refused_addresses": [r.as_dict() for r in ordered],
            "cloudfront_addresses_refused": len(self.cloudfront_refused()),
            "untracked_refusals": self.untracked_refusals,
            "unparsable_lines": self.unparsable,
            "unparsable_examples": self.unparsable_examples,
            "formats": dict(self.formats),
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "assumptions": self.assumptions,
            "ranges": self.ranges,
        }

    def lines(self, top: int = 20) -> list[str]:
        """The human report."""
        share = f" ({100 * self.refused_total / self.requests:.1f}%)" if self.requests else ""
        out = [
            f"requests: {self.requests} ({', '.join(f'{k} {v}' for k, v in sorted(self.formats.items())) or 'none'}), "
            f"from {self.first_seen or '-'} to {self.last_seen or '-'}",
            f"would allow: {self.allowed}",
            f"would refuse: {self.refused_total}{share}",
        ]
        out += [f"  {reason:<22}{count}" for reason, count in self.reasons.most_common()]
        if self.routes:
            out.append("refused by route: " + ", ".join(f"{r} {c}" for r, c in self.routes.most_common()))
        real = self.cloudfront_refused()
        out.append(
            f"CloudFront addresses that would be refused: {len(real)}"
            + (" <- real CloudFront traffic: fix this before enforcing" if real else "")
        )
        ordered = sorted(self.refused.values(), key=lambda r: (not r.cloudfront, -r.count, r.address))
        if ordered:
            out.append(f"refused addresses (top {min(top, len(ordered))} of {len(ordered)}):")
            for r in ordered[:top]:
                reasons = ",".join(r.reasons)
                where = "; ".join(r.aws) if r.aws else "not in AWS ranges"
                out.append(
                    f"  {r.address:<39} {r.count:>7}  {reasons}  first {r.first_seen}  last {r.last_seen}  [{where}]"
                )
        if self.untracked_refusals:
            out.append(f"refusals of addresses beyond the tracked limit: {self.untracked_refusals}")
        if self.unparsable:
            out.append(f"unparsable lines: {self.unparsable} (first: {'; '.join(self.unparsable_examples)})")
        out += [f"assumed: {a}" for a in self.assumptions]
        return out


# -- reading logs -------------------------------------------------------------------------------------


def _open(path: str) -> IO[str]:
    """A text stream of a log file, gunzipped if it starts with the gzip magic (S3 delivers ``.gz``)."""
    raw = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115 - closed by the caller
    buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)  # type: ignore[type-var]
    if buffered.peek(2)[:2] == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.GzipFile(fileobj=buffered), encoding="utf-8", errors="replace")
    return io.TextIOWrapper(buffered, encoding="utf-8", errors="replace")


def _files(paths: Iterable[str]) -> Iterator[str]:
    for path in paths:
        if path != "-" and Path(path).is_dir():
            yield from (str(p) for p in sorted(Path(path).rglob("*")) if p.is_file())
        else:
            yield path


def read_logs(paths: Iterable[str], fmt: LogFormat = "auto") -> Iterator[LogRequest | str]:
    """Every request of every file (directories are walked), or the ``file:line`` of a line that is
    not one. Streams: one line in memory at a time."""
    for path in _files(paths):
        with _open(path) as stream:
            yield from _read_stream(stream, path, fmt)


def _read_stream(stream: IO[str], name: str, fmt: LogFormat) -> Iterator[LogRequest | str]:
    fields: list[str] | None = None
    kind = fmt
    for number, text in enumerate(stream, 1):
        line = text.rstrip("\r\n")
        if not line:
            continue
        where = f"{name}:{number}"
        if line.startswith("#"):
            if line.startswith("#Fields:"):
                fields, kind = line[len("#Fields:") :].split(), "cloudfront"
            continue
        if kind == "auto":
            kind = "alb" if line.split(" ", 1)[0] in _ALB_TYPES else "cloudfront"
        parsed = _alb(line, where) if kind == "alb" else _cloudfront(line, fields, where)
        yield parsed if parsed is not None else where


def _alb(line: str, where: str) -> LogRequest | None:
    # type time elb client:port target:port t1 t2 t3 elb_status target_status rx tx "request" ...
    tokens = [quoted if quoted or plain == "" else plain for quoted, plain in _ALB_FIELD.findall(line)]
    if len(tokens) < 13 or tokens[0] not in _ALB_TYPES:
        return None
    client = _host(tokens[3], port=True)
    request = tokens[12].split(" ")
    if client is None or len(request) != 3 or request[0] == "-":
        return None
    method, url = request[0], request[1]
    path = urllib.parse.urlsplit(url).path if "://" in url else url.split("?", 1)[0]
    return LogRequest(tokens[1], method, urllib.parse.unquote(path) or "/", client, "alb", where)


def _cloudfront(line: str, fields: list[str] | None, where: str) -> LogRequest | None:
    if fields is None:
        return None
    values = dict(zip(fields, line.split("\t"), strict=False))
    try:
        stamp = f"{values['date']}T{values['time']}Z"
        client, method, path = values["c-ip"], values["cs-method"], values["cs-uri-stem"]
    except KeyError:
        return None
    if _host(client, port=False) is None or not method.isalpha():
        return None
    return LogRequest(stamp, method, urllib.parse.unquote(path) or "/", client, "cloudfront", where)


def _host(value: str, *, port: bool) -> str | None:
    """The address of ``ip:port`` / ``[v6]:port`` (``port``) or of a bare address; ``None`` if not one.

    An ALB always writes a port, so its last colon always starts it: ``2001:db8::1:443`` is the
    address ``2001:db8::1``, although it would also parse as one address itself.
    """
    host = value
    if port:
        host = value[1 : value.find("]")] if value.startswith("[") else value.rpartition(":")[0]
    return host if _is_ip(host) else None


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


# -- replaying ------------------------------------------------------------------------------------------


class Replayer:
    """Decides logged requests with a configured middleware (built on fixed ranges, never served).

    ``peer``: the socket peer the app sees behind the ALB (default: the first address of the first
    trusted proxy network). ``edge``: the CloudFront edge CloudFront-log requests are replayed from.
    ``viewer``: the viewer behind an ALB (not in ALB logs). ``secret``: the value to send, or
    ``None`` to replay without the secret header. ``attribution``: the ranges that say where a
    refused address sits (default ``ranges``; pass the newest publication when replaying an old one).
    """

    def __init__(
        self,
        shield: OriginShield,
        ranges: AwsIpRanges,
        *,
        trusted_proxies: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network] = (),
        secret: tuple[str, str] | None = None,
        peer: str | None = None,
        edge: str | None = None,
        viewer: str = _DEFAULT_VIEWER,
        max_addresses: int = 100_000,
        attribution: AwsIpRanges | None = None,
    ) -> None:
        for key, value in (("peer", peer), ("edge", edge), ("viewer", viewer)):
            if value is not None and not _is_ip(value):
                raise ConfigError(f"--{key}: not an IP address: {value!r}")
        self._shield = shield
        self._ranges = ranges
        # Where refused addresses sit: in the newest publication known (a replay against an old one
        # must still tell that a refused address is a CloudFront edge today).
        self._everything = RadixTree.build((attribution or ranges).records)
        nets = list(trusted_proxies)
        if peer is None and nets:  # an address of the first trusted proxy network stands for the ALB node
            peer = str(nets[0].network_address + (0 if nets[0].num_addresses == 1 else 1))
        self._peer = peer
        self._edge = edge or self._first_edge()
        self._viewer = viewer
        self._secret = secret
        self._max = max_addresses
        self._memo: dict[tuple[str, str, str, str], Decision] = {}
        self.report = ReplayReport()
        self.report.ranges = {"sync_token": ranges.sync_token, "create_date": str(ranges.create_date)}
        self.report.ranges["source"] = ranges.source

    def _first_edge(self) -> str:
        for record in self._ranges.records:
            if record.service == "CLOUDFRONT_ORIGIN_FACING" and record.prefix.version == 4:
                return str(record.prefix.network_address + 1)
        return "130.176.0.1"

    def _assume(self) -> None:
        notes, seen = self.report.assumptions, self.report.formats
        if self._secret is not None:
            notes.append(f"the secret header ({self._secret[0]}) is present and valid: logs do not record headers")
        else:
            notes.append("no secret header on any request")
        if seen["alb"] and self._peer is not None:
            notes.append(
                f"ALB logs: the app's socket peer is the ALB node {self._peer}; X-Forwarded-For "
                f"'{self._viewer}, <client>' (the viewer is not in ALB logs)"
            )
        elif seen["alb"]:
            notes.append("ALB logs: no trusted_proxies and no --peer: the ALB's client is taken as the socket peer")
        if seen["cloudfront"]:
            notes.append(f"CloudFront logs: forwarded by the origin-facing edge {self._edge} (not in these logs)")

    def _request(self, req: LogRequest) -> tuple[list[tuple[str, str]], str]:
        headers: list[tuple[str, str]] = [self._secret] if self._secret is not None else []
        if req.kind == "alb":
            if self._peer is None:
                return headers, req.client
            headers.append(("x-forwarded-for", f"{self._viewer}, {req.client}"))
            return headers, self._peer
        if self._peer is not None:  # CloudFront -> ALB -> app
            headers.append(("x-forwarded-for", f"{req.client}, {self._edge}"))
            return headers, self._peer
        headers.append(("x-forwarded-for", req.client))  # CloudFront -> app
        return headers, self._edge

    def feed(self, item: LogRequest | str) -> None:
        report = self.report
        if isinstance(item, str):
            report.unparsable += 1
            if len(report.unparsable_examples) < 3:
                report.unparsable_examples.append(item)
            return
        report.requests += 1
        report.formats[item.kind] += 1
        if report.first_seen is None or item.time < report.first_seen:
            report.first_seen = item.time
        if report.last_seen is None or item.time > report.last_seen:
            report.last_seen = item.time
        # The same inputs give the same decision (fixed ranges, no clock): real logs repeat a few
        # hundred edges and paths, so a bounded memo of the exact inputs saves most explain calls.
        key = (item.kind, item.method, item.path, item.client)
        decision = self._memo.get(key)
        if decision is None:
            headers, peer = self._request(item)
            decision = self._shield.explain(item.method, item.path, headers, peer)
            if len(self._memo) >= 65536:
                self._memo.pop(next(iter(self._memo)))
            self._memo[key] = decision
        if decision.allowed:
            report.allowed += 1
            return
        report.reasons[decision.reason] += 1
        report.routes[decision.route] += 1
        address = decision.checked or item.client
        entry = report.refused.get(address)
        if entry is None:
            if len(report.refused) >= self._max:
                report.untracked_refusals += 1
                return
            aws = tuple(f"{r.prefix} {r.region} {r.service}" for r in self._everything.lookup(address))
            entry = report.refused[address] = RefusedAddress(address, 0, Counter(), item.time, item.time, aws)
        entry.count += 1
        entry.reasons[decision.reason] += 1
        entry.first_seen = min(entry.first_seen, item.time)
        entry.last_seen = max(entry.last_seen, item.time)

    def run(self, items: Iterable[LogRequest | str], progress: IO[str] | None = None) -> ReplayReport:
        """Feed everything; with ``progress`` (a terminal), a progress line at most 4 times a second."""
        shown = 0.0
        for item in items:
            self.feed(item)
            if progress is not None and (now := time.monotonic()) - shown > 0.25:
                shown = now
                r = self.report
                progress.write(
                    f"\r{r.requests} requests, {r.refused_total} would be refused, {r.unparsable} unparsable"
                )
                progress.flush()
        if progress is not None:
            progress.write("\r\x1b[K")
            progress.flush()
        self._assume()
        return self.report
