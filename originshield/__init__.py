"""originshield: admit only Amazon CloudFront / AWS traffic to a web origin."""

from .aws import AwsIpRanges, Record, Selection, load
from .errors import ConfigError, InvalidAddress, OriginShieldError, RangesError
from .radix import RadixTree

__all__ = [
    "AwsIpRanges",
    "ConfigError",
    "InvalidAddress",
    "OriginShieldError",
    "RadixTree",
    "RangesError",
    "Record",
    "Selection",
    "load",
]
__version__ = "0.1.0"
