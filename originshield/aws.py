"""The AWS ip-ranges.json model: parse, validate strictly, select by service/region/border group.

Format reference: AWS General Reference, "AWS IP address ranges" (syntax of ip-ranges.json). Every
prefix may be listed several times, once per (region, service, network_border_group): e.g. a range is
listed as ``AMAZON`` and again as ``EC2``. Each listing is kept as its own :class:`Record`, so a lookup
can say which service and region an address belongs to; none overwrites another.

Validation is strict because this document decides who may reach an origin: a malformed entry is an
error naming its list, index and value, never skipped, so a corrupted or hostile download is refused
as a whole and the data already in service stays (see ``refresher``).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import warnings
import zlib
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any, Final

from .errors import RangesError
from .selector import PRESETS, Selection, Selector

# PRESETS, Selection and Selector live in originshield.selector; re-exported here because 0.1 exported
# Selector from nowhere else (users wrote ``from originshield.aws import Selector``).
__all__ = [
    "DEFAULT_URL",
    "MAX_DOCUMENT_BYTES",
    "PRESETS",
    "AwsIpRanges",
    "Network",
    "Positions",
    "Record",
    "Selection",
    "Selector",
    "load",
    "load_ranges",
    "loads_strict",
    "parse_network",
    "strict_decoder",
    "with_positions",
]

#: Where AWS publishes the document (AWS General Reference, "AWS IP address ranges").
DEFAULT_URL: Final = "https://ip-ranges.amazonaws.com/ip-ranges.json"

#: Upper bound on a decoded document. The real file is about 2.6 MB; the bound stops a gzip bomb
#: or a runaway download from exhausting memory before validation even starts.
MAX_DOCUMENT_BYTES: Final = 64 * 1024 * 1024

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_EMBEDDED = "ip-ranges.json.gz"
_CREATE_DATE = re.compile(r"\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}")
# Canonical "address/length" only: no bare address, no netmask form, no leading zeros in the length.
_CIDR = re.compile(r"[0-9A-Fa-f:.]+/(?:0|[1-9][0-9]{0,2})")
_SYNC_TOKEN = re.compile(r"[0-9]{1,20}")
_CONTROL = re.compile(r"[\t\n\r]")


@dataclass(frozen=True, slots=True)
class Record:
    """One listing of a prefix: the prefix plus the region, service and border group it serves.

    ``network_border_group`` is ``None`` for documents published before 2020-04, which lack it.
    """

    prefix: Network
    region: str
    service: str
    network_border_group: str | None

    def as_dict(self) -> dict[str, str | None]:
        return {
            "prefix": str(self.prefix),
            "region": self.region,
            "service": self.service,
            "network_border_group": self.network_border_group,
        }


class Positions:
    """Where each name occurs in one document's records: for each attribute (``service``,
    ``region``, ``network_border_group``) and name, the ascending indices of its records.

    With it, :meth:`Selector.apply` visits only the records carrying a wanted name (the 49
    origin-facing records, say) instead of all 16,828: the refresher's parse worker computes it
    next to the parse (:meth:`of`), so that a swap costs the server process almost nothing per
    policy (issue 4: every CPU millisecond a swap spends in the server process is one less for
    requests). ``spans[attribute][name] = (offset, count)`` into ``indices``.
    """

    __slots__ = ("indices", "spans")

    ATTRIBUTES: Final = ("service", "region", "network_border_group")

    def __init__(self, spans: Mapping[str, Mapping[str, tuple[int, int]]], indices: Sequence[int]) -> None:
        self.spans = spans
        self.indices = indices

    @classmethod
    def of(cls, records: Sequence[Record]) -> Positions:
        """The positions of ``records``' names (indices into ``records``)."""
        spans: dict[str, dict[str, tuple[int, int]]] = {}
        indices = array("I")  # an array: compact, and sent to the server process as bytes
        for attribute in cls.ATTRIBUTES:
            groups: dict[str, list[int]] = {}
            for i, rec in enumerate(records):
                name = getattr(rec, attribute)
                if name is not None:
                    groups.setdefault(name, []).append(i)
            names = spans[attribute] = {}
            for name, where in groups.items():
                names[name] = (len(indices), len(where))
                indices.extend(where)
        return cls(spans, indices)

    def check(self) -> None:
        """Raise ValueError unless every span lies within ``indices``."""
        if any(o + c > len(self.indices) for names in self.spans.values() for o, c in names.values()):
            raise ValueError("record positions out of range")

    def names(self, attribute: str) -> frozenset[str]:
        return frozenset(self.spans.get(attribute, ()))

    def candidates(self, sel: Selector) -> list[int] | None:
        """Ascending indices of the records that carry one of the names of the most selective of
        ``sel``'s name filters (a superset of its selection); None when it filters no name."""
        best: list[tuple[int, int]] | None = None
        best_total = 0
        for attribute, names in (
            ("service", sel.services),
            ("region", sel.regions),
            ("network_border_group", sel.network_border_groups),
        ):
            if names is None:
                continue
            spans = self.spans.get(attribute, {})
            found = [spans[name] for name in names if name in spans]
            total = sum(count for _, count in found)
            if best is None or total < best_total:
                best, best_total = found, total
        if best is None:
            return None
        indices = self.indices
        out = [i for offset, count in best for i in indices[offset : offset + count]]
        if len(best) > 1:
            out.sort()
        return out


@dataclass(frozen=True, slots=True)
class AwsIpRanges:
    """A validated ip-ranges.json document. Immutable; build one with :meth:`from_bytes` or :func:`load_ranges`."""

    sync_token: int
    create_date: datetime
    records: tuple[Record, ...]
    source: str = "bytes"
    _index: dict[str, frozenset[str]] = field(default_factory=dict, repr=False, compare=False)
    #: Where each name occurs (see :class:`Positions`, :func:`with_positions`); only documents the
    #: refresher's parse worker described have one. Not an init field: ``dataclasses.replace``
    #: must not carry it over to other records.
    _positions: Positions | None = field(default=None, init=False, repr=False, compare=False)
    #: Selections already computed from this document (see :meth:`Selector.apply`).
    _selections: dict[Selector, Selection] = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "bytes") -> AwsIpRanges:
        """Parse and validate a document (plain JSON or gzip). Raises :class:`RangesError`."""
        return _parse(_decompress(data), source)

    # -- metadata -----------------------------------------------------------------------------

    def age(self, now: datetime | None = None) -> timedelta:
        """Time since AWS published this document (its ``createDate``)."""
        return (now or datetime.now(UTC)) - self.create_date

    def values(self, attribute: str) -> frozenset[str]:
        """Distinct values of ``region``, ``service`` or ``network_border_group`` in this document."""
        if attribute not in ("region", "service", "network_border_group"):
            raise ValueError(f"unknown record attribute {attribute!r}")
        found = self._index.get(attribute)
        if found is None:
            positions = self._positions
            if positions is not None:
                found = positions.names(attribute)
            else:
                found = frozenset(v for r in self.records if (v := getattr(r, attribute)) is not None)
            self._index[attribute] = found
        return found

    # -- selection ----------------------------------------------------------------------------

    def select(
        self,
        services: Iterable[str] | None = None,
        regions: Iterable[str] | None = None,
        network_border_groups: Iterable[str] | None = None,
        ip_versions: Iterable[int] | None = None,
    ) -> Selection:
        """Records matching every given filter; ``None`` means "any". Names match exactly."""
        return Selector.of(services, regions, network_border_groups, ip_versions).apply(self)

    def preset(self, name: str) -> Selection:
        """A named selection: a key of :data:`PRESETS`, ``region:<name>`` or ``service:<NAME>``."""
        return Selector.preset(name).apply(self)

    def selection(self, selector: Selector) -> Selection:
        """The records ``selector`` selects, in document order (what :meth:`Selector.apply` returns)."""
        # Remembered per document: the middleware compiles several policies that usually share a
        # selector, and the refresher checks the same selection before the swap.
        found = self._selections.get(selector)
        if found is not None:
            return found
        records = self.records
        positions = self._positions
        wanted = positions.candidates(selector) if positions is not None else None
        pool: Iterable[Record] = records if wanted is None else [records[i] for i in wanted]
        chosen = tuple(selector.select(pool))
        return self._selections.setdefault(selector, Selection(chosen, self.sync_token, selector.name))


def with_positions(ranges: AwsIpRanges, positions: Positions) -> AwsIpRanges:
    """``ranges`` with ``positions`` attached (they must describe exactly its records, e.g.
    ``Positions.of(ranges.records)`` computed elsewhere): selections then visit only candidates."""
    object.__setattr__(ranges, "_positions", positions)
    return ranges


def load_ranges(path: str | os.PathLike[str] | None = None) -> AwsIpRanges:
    """Load a document from a file (JSON or gzip), or the embedded snapshot when ``path`` is None."""
    if path is None:
        data = resources.files(__package__).joinpath("data", _EMBEDDED).read_bytes()
        return _parse(_decompress(data), "embedded")
    with open(path, "rb") as f:
        # Read one byte past the bound so an oversized file is detected without reading all of it.
        data = f.read(MAX_DOCUMENT_BYTES + 1)
    return _parse(_decompress(data), os.fspath(path))


def load(path: str | os.PathLike[str] | None = None) -> AwsIpRanges:
    """Deprecated alias of :func:`load_ranges` (the name did not say what it loads)."""
    warnings.warn("originshield.load() is deprecated: use load_ranges()", DeprecationWarning, stacklevel=2)
    return load_ranges(path)


# -- parsing ----------------------------------------------------------------------------------


def _decompress(data: bytes) -> bytes:
    if len(data) > MAX_DOCUMENT_BYTES:
        raise RangesError(f"document larger than {MAX_DOCUMENT_BYTES} bytes")
    if data[:2] != b"\x1f\x8b":
        return data
    # Decompress incrementally with an output bound: a small gzip can expand to gigabytes.
    d = zlib.decompressobj(wbits=31)
    try:
        out = d.decompress(data, MAX_DOCUMENT_BYTES + 1)
    except zlib.error as exc:
        raise RangesError(f"corrupt gzip data: {exc}") from None
    if len(out) > MAX_DOCUMENT_BYTES:
        raise RangesError(f"decompressed document larger than {MAX_DOCUMENT_BYTES} bytes")
    if not d.eof:
        raise RangesError("truncated gzip data")
    return out


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # RFC 8259 4: names "SHOULD be unique"; parsers disagree on which duplicate wins (json.loads
    # keeps the last, others the first), so a document with two ``prefixes`` lists could mean one
    # thing to one reader and another to the next. Refused, wherever it is parsed.
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise RangesError(f"duplicate key {dup!r}")
    return out


def _no_constant(name: str) -> Any:
    # NaN and Infinity are not JSON (RFC 8259 6); json.loads accepts them by default.
    raise RangesError(f"not a JSON document: {name} is not a JSON value")


def strict_decoder() -> json.JSONDecoder:
    """The one JSON grammar of ip-ranges.json everywhere (network, cache file, embedded, the parse
    worker): RFC 8259 strictly, with duplicate object keys and NaN/Infinity refused."""
    return json.JSONDecoder(object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant)


_DECODER: Final = strict_decoder()


def loads_strict(data: bytes | str) -> Any:
    """``json.loads`` with :func:`strict_decoder`'s rules; raises :class:`RangesError`."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return _DECODER.decode(text)
    except RangesError:
        raise
    except (UnicodeDecodeError, ValueError) as exc:
        raise RangesError(f"not a JSON document: {exc}") from None


def _parse(data: bytes, source: str) -> AwsIpRanges:
    if not data.strip():
        raise RangesError("empty document")
    doc = loads_strict(data)
    if not isinstance(doc, dict):
        raise RangesError(f"top level must be a JSON object, got {type(doc).__name__}")
    sync_token = _sync_token(doc.get("syncToken"))
    create_date = _create_date(doc.get("createDate"))
    if "prefixes" not in doc:
        raise RangesError("missing field 'prefixes'")
    networks: dict[str, Network] = {}  # the same CIDR is listed several times: parse it once
    seen: set[Record] = set()
    records: list[Record] = []
    # 'ipv6_prefixes' was added to the format in 2016; older documents have only 'prefixes'.
    for list_key, prefix_key, version in (("prefixes", "ip_prefix", 4), ("ipv6_prefixes", "ipv6_prefix", 6)):
        entries = doc.get(list_key, [])
        if not isinstance(entries, list):
            raise RangesError(f"{list_key!r} must be a list, got {type(entries).__name__}")
        for i, entry in enumerate(entries):
            rec = _record(entry, f"{list_key}[{i}]", prefix_key, version, networks)
            # An exact repeat adds no information; never double-attribute. One hash per record
            # (ipaddress hashes in Python): add, and keep the record if the set grew.
            size = len(seen)
            seen.add(rec)
            if len(seen) > size:
                records.append(rec)
    if not records:
        raise RangesError("empty document: no prefixes")
    return AwsIpRanges(sync_token, create_date, tuple(records), source)


def _sync_token(value: Any) -> int:
    # AWS publishes syncToken as a string of decimal digits (Unix seconds of publication).
    if isinstance(value, str) and _SYNC_TOKEN.fullmatch(value):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if value is None:
        raise RangesError("missing field 'syncToken'")
    raise RangesError(f"'syncToken' must be a string of digits, got {value!r}")


def _create_date(value: Any) -> datetime:
    if value is None:
        raise RangesError("missing field 'createDate'")
    if not isinstance(value, str) or not _CREATE_DATE.fullmatch(value):
        raise RangesError(f"'createDate' must look like YYYY-MM-DD-hh-mm-ss, got {value!r}")
    try:
        return datetime.strptime(value, "%Y-%m-%d-%H-%M-%S").replace(tzinfo=UTC)
    except ValueError as exc:
        raise RangesError(f"'createDate' {value!r} is not a valid date: {exc}") from None


def _record(entry: Any, where: str, prefix_key: str, version: int, networks: dict[str, Network]) -> Record:
    if not isinstance(entry, dict):
        raise RangesError(f"{where}: entry must be an object, got {entry!r}")
    text = entry.get(prefix_key)
    if text is None:
        raise RangesError(f"{where}: missing field {prefix_key!r} in {entry!r}")
    if not isinstance(text, str):
        raise RangesError(f"{where}: {prefix_key!r} must be a string, got {text!r}")
    net = networks.get(text)
    if net is None:
        net = parse_network(text, where, version)
        networks[text] = net
    region = _text_field(entry, "region", where, text)
    service = _text_field(entry, "service", where, text)
    # network_border_group first appeared in the publication of 2020-04-01: absent is fine, wrong is not.
    nbg = _text_field(entry, "network_border_group", where, text) if "network_border_group" in entry else None
    return Record(net, region, service, nbg)


def _text_field(entry: dict[str, Any], key: str, where: str, text: str) -> str:
    if key not in entry:
        raise RangesError(f"{where} ({text}): missing field {key!r}")
    value = entry[key]
    if not isinstance(value, str) or not value:
        raise RangesError(f"{where} ({text}): {key!r} must be a non-empty string, got {value!r}")
    if _CONTROL.search(value):
        # AWS names are letters, digits and dashes. A tab or newline inside one could forge a record
        # in any line-oriented form of the data (the refresher's worker answers and cache metadata
        # carry records as tab-separated lines): such a document is refused as a whole.
        raise RangesError(f"{where} ({text}): control character in {key!r} {value!r}")
    return value


def parse_network(text: str, where: str, version: int) -> Network:
    """``text`` as an IPv``version`` network in canonical ``address/length`` form, else a
    :class:`RangesError` naming ``where`` (the list and index, or the file and line)."""
    if not _CIDR.fullmatch(text):
        raise RangesError(f"{where}: bad CIDR {text!r} (expected address/length)")
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        # ipaddress says "has host bits set" for e.g. 10.0.0.1/24: keep its precise reason.
        raise RangesError(f"{where}: bad CIDR {text!r}: {exc}") from None
    if net.version != version:
        raise RangesError(f"{where}: {text!r} is IPv{net.version}, expected IPv{version} in this list")
    return net
