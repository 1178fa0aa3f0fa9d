"""originshield: admit only Amazon CloudFront / AWS traffic to a web origin."""

from importlib import metadata as _metadata

from .aws import AwsIpRanges, Record, load, load_ranges
from .config import Config, load_config
from .decision import Decision
from .errors import ConfigError, InvalidAddress, OriginShieldError, RangesError
from .files import FileWatcher, Reloadable, WatchedFile
from .geoip import CountryDatabase, GeoIPDatabaseError
from .metrics import Counters
from .middleware import OriginShield
from .policy import CountryResolver, Policy, Route
from .radix import RadixTree
from .refresh import Refresher, RefresherStatus, RefreshResult
from .secret import SecretHeader
from .selector import PRESETS, Selection, Selector

__all__ = [
    "PRESETS",
    "AwsIpRanges",
    "Config",
    "ConfigError",
    "Counters",
    "CountryDatabase",
    "CountryResolver",
    "Decision",
    "FileWatcher",
    "GeoIPDatabaseError",
    "InvalidAddress",
    "OriginShield",
    "OriginShieldError",
    "Policy",
    "RadixTree",
    "RangesError",
    "Record",
    "RefreshResult",
    "Refresher",
    "RefresherStatus",
    "Reloadable",
    "Route",
    "SecretHeader",
    "Selection",
    "Selector",
    "WatchedFile",
    "load",  # deprecated alias of load_ranges (warns when called)
    "load_config",
    "load_ranges",
]

# The version lives in pyproject.toml only; the installed distribution's metadata carries it.
try:
    __version__ = _metadata.version("originshield")
except _metadata.PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"
