"""The configuration file (``originshield.toml``), in three parts with one job each.

- :mod:`~originshield.config.schema`: the values (:class:`Config` and its settings), frozen; no
  middleware, refresher or GeoIP reader imported.
- :mod:`~originshield.config.loader`: TOML + environment -> :class:`Config` (:func:`load_config`,
  :func:`loads_config`), every mistake a :class:`~originshield.errors.ConfigError` naming the file,
  the key and the reason, with the nearest valid name for a typo.
- :mod:`~originshield.config.assemble`: the composition root, :class:`Config` -> OriginShield +
  Refresher + CountryDatabase + SNS endpoint (:meth:`Config.build` delegates to it).

:mod:`~originshield.config.pools` words the shared-pool warnings, for startup and ``check-config``.
"""

from .loader import ENVIRONMENT, load_config, loads_config
from .schema import Config, GeoIPSettings, RangesSettings, SecretSettings, SnsSettings

__all__ = [
    "ENVIRONMENT",
    "Config",
    "GeoIPSettings",
    "RangesSettings",
    "SecretSettings",
    "SnsSettings",
    "load_config",
    "loads_config",
]
