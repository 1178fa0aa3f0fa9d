"""originshield: admit only Amazon CloudFront / AWS traffic to a web origin."""

from .aws import AwsIpRanges, Record, Selection, load
from .config import Config, load_config
from .errors import ConfigError, InvalidAddress, OriginShieldError, RangesError
from .files import FileWatcher, Reloadable, WatchedFile
from .geoip import CountryDatabase, GeoIPDatabaseError
from .metrics import Counters
from .middleware import OriginShield
from .policy import CountryResolver, Decision, Policy, Route
from .radix import RadixTree
from .refresh import Refresher, RefresherStatus, RefreshResult
from .secret import SecretHeader

__all__ = [
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
    "WatchedFile",
    "load",
    "load_config",
]
__version__ = "0.1.0"
