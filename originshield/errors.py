"""The one exception hierarchy of originshield (httpx/h11 style: catch ``OriginShieldError``).

Every error that reports bad input also derives from ``ValueError``, so callers that already guard
against bad values keep working, and none of them can be mistaken for "no match".
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "FetchError",
    "GeoIPDatabaseError",
    "InvalidAddress",
    "LockTimeout",
    "OriginShieldError",
    "RangesError",
]


class OriginShieldError(Exception):
    """Base class of every error raised by originshield."""


class RangesError(OriginShieldError, ValueError):
    """An ip-ranges.json document is malformed; the message names the entry (index and value)."""


class InvalidAddress(OriginShieldError, ValueError):
    """A string is not a plain IPv4 or IPv6 address (no port, zone id, whitespace, leading zeros)."""


class ConfigError(OriginShieldError, ValueError):
    """Bad configuration, raised at startup; the message names the key and the reason."""


class GeoIPDatabaseError(ConfigError):
    """A GeoIP database file cannot be used; the message names the file and the reason."""


class FetchError(OriginShieldError):
    """The ranges source could not be read; ``reason`` is a short machine-readable code
    (``timeout``, ``http-error``, ``too-large``...), the refresher's failure reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class LockTimeout(OriginShieldError):
    """Another process held the cache directory's lock for longer than the wait allowed."""
