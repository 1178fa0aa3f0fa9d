"""What the commands share: exit codes, the parser class, ranges metadata, the offline shield."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from originshield._types import Receive, Scope, Send
from originshield.aws import AwsIpRanges, load_ranges
from originshield.config import Config
from originshield.config.assemble import build, offline_ranges, open_geoip
from originshield.errors import ConfigError
from originshield.middleware import OriginShield

__all__ = [
    "EXIT_NEGATIVE",
    "EXIT_OK",
    "EXIT_USAGE",
    "NoCountry",
    "Parser",
    "config_ranges",
    "describe_ranges",
    "no_app",
    "offline_shield",
]

EXIT_OK, EXIT_NEGATIVE, EXIT_USAGE = 0, 1, 2


class Parser(argparse.ArgumentParser):
    """argparse exits 2 on usage errors already; keep its message to one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def describe_ranges(ranges: AwsIpRanges, now: datetime | None = None) -> dict[str, object]:
    """Metadata every command prints: which publication answered, and how old it is."""
    age = ranges.age(now or datetime.now(UTC))
    return {
        "sync_token": ranges.sync_token,
        "create_date": ranges.create_date.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "age_days": round(age.total_seconds() / 86400, 1),
        "source": ranges.source,
    }


def offline_shield(config: Config, ranges: AwsIpRanges, notes: list[str]) -> OriginShield:
    """The configured middleware on fixed ranges, never started and never fetching: for commands
    that inspect a configuration. A secret or GeoIP database that cannot be loaded here is replaced
    by a stand-in (and a note says so), so the rest of the configuration can still be examined."""
    try:
        secret = config.load_secret()
    except ConfigError as exc:
        notes.append(f"{exc}; using a stand-in value that no request can match")
        secret = config.placeholder_secret()
    try:
        geoip = open_geoip(config)
    except ConfigError as exc:
        notes.append(f"{exc}; every country is unknown")
        geoip = NoCountry()
    return build(config, no_app, ranges=ranges, secret=secret, geoip=geoip, manage_refresher=False, log_warnings=False)


class NoCountry:
    """A country resolver that knows no country: for offline commands without the GeoIP database."""

    def country(self, packed: bytes) -> str | None:
        return None


async def no_app(scope: Scope, receive: Receive, send: Send) -> None:  # pragma: no cover - never served
    raise RuntimeError("offline shield: not an application")


def config_ranges(config: Config, path: str | None) -> AwsIpRanges:
    return load_ranges(path) if path else offline_ranges(config)
