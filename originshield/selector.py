"""Selections of AWS ranges: :class:`Selector` (a filter policies hold), :class:`Selection` (what a
filter picked from one document) and the named :data:`PRESETS`.

A selector is independent of any document: every new publication is selected with it again, and
the refresher checks that the result is neither empty nor shrunk before it is served. A bad filter
is a :class:`~originshield.errors.ConfigError` naming the value, raised when the selector is made.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from .errors import ConfigError

if TYPE_CHECKING:
    from .aws import AwsIpRanges, Network, Record

__all__ = ["PRESETS", "Selection", "Selector"]

#: Named selections (preset name -> services, None for every service), for configuration and the
#: CLI. ``region:<name>`` and ``service:<NAME>`` are parametric and handled by :meth:`Selector.preset`.
PRESETS: Final[Mapping[str, frozenset[str] | None]] = {
    # Origin-facing CloudFront servers: what an origin behind CloudFront actually sees. Every region,
    # not only GLOBAL: two of its IPv4 prefixes are listed under ap-northeast-2 and me-central-1.
    "cloudfront-origin-facing": frozenset({"CLOUDFRONT_ORIGIN_FACING"}),
    "cloudfront": frozenset({"CLOUDFRONT"}),
    "route53-healthchecks": frozenset({"ROUTE53_HEALTHCHECKS"}),
    "amazon": frozenset({"AMAZON"}),
    "ec2": frozenset({"EC2"}),
    "all": None,
}


@dataclass(frozen=True, slots=True)
class Selection:
    """The records of one document that match a filter; what :class:`RadixTree` is built from."""

    records: tuple[Record, ...]
    sync_token: int
    description: str

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __bool__(self) -> bool:
        return bool(self.records)

    def prefixes(self) -> frozenset[Network]:
        """The distinct prefixes (a prefix listed under several services counts once)."""
        return frozenset(r.prefix for r in self.records)


@dataclass(frozen=True, slots=True)
class Selector:
    """A filter independent of any one document: policies hold it, and every new publication is
    selected with it again (the refresher checks that the result is not empty and did not shrink).

    ``None`` means "any". Build one with :meth:`of` (validating) or :meth:`preset`.
    """

    services: frozenset[str] | None = None
    regions: frozenset[str] | None = None
    network_border_groups: frozenset[str] | None = None
    ip_versions: frozenset[int] | None = None
    name: str = ""

    @classmethod
    def of(
        cls,
        services: Iterable[str] | None = None,
        regions: Iterable[str] | None = None,
        network_border_groups: Iterable[str] | None = None,
        ip_versions: Iterable[int] | None = None,
        name: str = "",
    ) -> Selector:
        """A validated selector. Raises :class:`ConfigError` naming the bad value."""
        ver: frozenset[int] | None = None
        if ip_versions is not None:
            ver = _collection(ip_versions, "ip_versions")
            if not ver or not ver <= {4, 6}:
                raise ConfigError(f"ip_versions must be a non-empty subset of {{4, 6}}, got {sorted(ver, key=repr)}")
        svc = _name_set("services", services)
        reg = _name_set("regions", regions)
        nbg = _name_set("network_border_groups", network_border_groups)
        if not name:
            parts = [
                f"{label}={','.join(sorted(map(str, values)))}"
                for label, values in (
                    ("services", svc),
                    ("regions", reg),
                    ("network_border_groups", nbg),
                    ("ip_versions", ver),
                )
                if values is not None
            ]
            name = " ".join(parts) or "all"
        return cls(svc, reg, nbg, ver, name)

    @classmethod
    def preset(cls, name: str) -> Selector:
        """A named selection: a key of :data:`PRESETS`, ``region:<name>`` or ``service:<NAME>``."""
        kind, sep, arg = name.partition(":")
        if sep:
            if kind not in ("region", "service") or not arg:
                raise ConfigError(f"unknown preset {name!r}: expected region:<name> or service:<NAME>")
            return cls.of(regions=[arg], name=name) if kind == "region" else cls.of(services=[arg], name=name)
        try:
            return cls.of(services=PRESETS[name], name=name)
        except KeyError:
            known = ", ".join([*PRESETS, "region:<name>", "service:<NAME>"])
            raise ConfigError(f"unknown preset {name!r}; known: {known}") from None

    def apply(self, ranges: AwsIpRanges) -> Selection:
        """The records of ``ranges`` this selector selects (remembered per document)."""
        return ranges.selection(self)

    def select(self, records: Iterable[Record]) -> Iterator[Record]:
        """The records among ``records`` that this selector selects, in their order."""
        svc, reg, nbg, ver = self.services, self.regions, self.network_border_groups, self.ip_versions
        return (
            r
            for r in records
            if (svc is None or r.service in svc)
            and (reg is None or r.region in reg)
            and (nbg is None or r.network_border_group in nbg)
            and (ver is None or r.prefix.version in ver)
        )


def _collection(values: object, label: str) -> frozenset[Any]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ConfigError(f"{label} must be a collection, got {values!r}")
    try:
        return frozenset(values)
    except TypeError:  # an unhashable member (a list in a list)
        raise ConfigError(f"{label} must hold plain values, got {values!r}") from None


def _name_set(label: str, values: Iterable[str] | None) -> frozenset[str] | None:
    if values is None:
        return None
    if isinstance(values, str):  # a bare string would be iterated letter by letter
        values = [values]
    result = _collection(values, label)
    bad = [v for v in result if not isinstance(v, str) or not v]
    if not result or bad:
        raise ConfigError(
            f"{label} must be a non-empty collection of non-empty strings, got {sorted(map(repr, result))}"
        )
    return result
