"""The composition root: a :class:`~originshield.config.schema.Config` becomes the running parts.

:func:`build` is what ``originshield serve``, :meth:`Config.build` and the offline commands call:
the secret from its environment variable or file, the :class:`~originshield.geoip.CountryDatabase`,
a :class:`~originshield.Refresher` (or a fixed snapshot for ``source = "embedded"``),
the SNS endpoint, and the :class:`~originshield.middleware.OriginShield` holding them. Every part
that fails names the file and the key.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from originshield import aws
from originshield._types import ASGIApp
from originshield.aws import AwsIpRanges
from originshield.errors import ConfigError, OriginShieldError
from originshield.metrics import Counters
from originshield.middleware import OriginShield
from originshield.policy import CountryResolver
from originshield.secret import SecretHeader
from originshield.snapshot import SnapshotHolder

from .schema import EMBEDDED, Config

if TYPE_CHECKING:
    from originshield.refresh import Refresher

__all__ = ["build", "make_holder", "offline_ranges", "open_geoip", "refresher"]

# The name the startup warnings have always been logged under (log filters select on it).
logger = logging.getLogger("originshield.config")


def open_geoip(config: Config) -> CountryResolver | None:
    """Open the GeoIP database (None when ``[geoip]`` is absent)."""
    if config.geoip is None:
        return None
    from originshield.geoip import CountryDatabase  # noqa: PLC0415 - only when configured

    try:
        return CountryDatabase(
            config.geoip.database, registered_country_fallback=config.geoip.registered_country_fallback
        )
    except ConfigError as exc:
        raise ConfigError(f"{config.path}: geoip.database{config.env_note('geoip.database')}: {exc}") from None


def offline_ranges(config: Config) -> AwsIpRanges:
    """The ranges a server would start with, without any network access: the source file, or
    the newest of the cache file and the embedded snapshot (what ``export`` and ``explain`` use)."""
    if config.ranges.source == EMBEDDED:
        return _embedded()
    path = config.ranges.local_file
    if path is not None:
        return _load_file(path, config.path + config.env_note("ranges.source"))
    return refresher(config, initial=None, watchers=()).current.ranges


def make_holder(config: Config, watchers: Sequence[Any] = ()) -> SnapshotHolder:
    """The snapshot holder for a server: a :class:`~originshield.Refresher` (its thread
    is started by the middleware on lifespan startup when ``refresh`` is on), or a fixed
    holder for ``source = "embedded"``."""
    if config.ranges.source == EMBEDDED:
        if not watchers:
            return SnapshotHolder(_embedded(), "embedded")
        # A fixed snapshot, but a watched file (the GeoIP database) still needs the thread that
        # checks it: a watch-only refresher that never fetches.
        from originshield.refresh import Refresher  # noqa: PLC0415

        return Refresher(initial=_embedded(), selectors=config.selectors(), watchers=watchers, refresh=False)
    path = config.ranges.local_file
    initial = _load_file(path, config.path + config.env_note("ranges.source")) if path is not None else None
    return refresher(config, initial=initial, watchers=watchers)


def refresher(config: Config, *, initial: AwsIpRanges | None = None, watchers: Iterable[Any] = ()) -> Refresher:
    """A :class:`~originshield.Refresher` with the ``[ranges]`` settings and the
    policies' selections (never started here, never touching the network in the constructor);
    ``originshield status/fetch --config`` use it as is."""
    from originshield.refresh import Refresher  # noqa: PLC0415 - only servers and offline loads need it

    if config.ranges.source == EMBEDDED:
        raise ConfigError(f"{config.path}: ranges.source: 'embedded' is a fixed snapshot: there is nothing to refresh")
    r = config.ranges
    try:
        return Refresher(
            r.source,
            cache_dir=r.cache_dir,
            selectors=config.selectors(),
            interval=r.interval,
            max_age=r.max_age,
            stale_action=r.stale_action,  # type: ignore[arg-type]  # validated by the loader
            shrink_threshold=r.shrink_threshold,
            shrink_window=r.shrink_window,
            timeout=r.timeout,
            watchers=watchers,
            initial=initial,
            refresh=r.refresh,  # refresh = false: the thread only checks the watchers
        )
    except ConfigError as exc:
        raise ConfigError(f"{config.path}: ranges: {exc}") from None


def build(
    config: Config,
    app: ASGIApp,
    *,
    environ: Mapping[str, str] | None = None,
    ranges: AwsIpRanges | SnapshotHolder | None = None,
    secret: SecretHeader | None = None,
    geoip: CountryResolver | None = None,
    counters: Counters | None = None,
    manage_refresher: bool | None = None,
    log_warnings: bool = True,
) -> OriginShield:
    """Wrap ``app`` in the configured :class:`OriginShield`.

    By default everything is loaded here: the secret from its environment variable or file,
    the GeoIP database, and a refresher for the ranges (started on lifespan startup when
    ``[ranges] refresh`` is on). Pass ``ranges`` / ``secret`` / ``geoip`` to supply them
    instead (the CLI's offline commands do). The startup warnings
    (:meth:`~originshield.config.schema.Config.startup_warnings`) are logged unless
    ``log_warnings`` is false.
    """
    if secret is None:
        secret = config.load_secret(environ)
    if geoip is None:
        geoip = open_geoip(config)
    if ranges is None:
        watchers = [geoip] if geoip is not None and callable(getattr(geoip, "check", None)) else []
        ranges = make_holder(config, watchers)
    current = ranges.current.ranges if isinstance(ranges, SnapshotHolder) else ranges
    problems = config.check_selections(current)
    if problems:
        raise ConfigError(problems[0])
    if log_warnings:
        for warning in config.startup_warnings(current):
            logger.warning("%s", warning)
    if manage_refresher is None:  # a thread is needed to refresh the ranges or to watch a file
        manage_refresher = config.ranges.refresh or bool(getattr(ranges, "watchers", ()))
    sns = None
    if config.sns is not None and callable(getattr(ranges, "refresh_now", None)):  # not for offline commands
        from originshield.sns import SnsEndpoint  # noqa: PLC0415 - needs the optional 'cryptography'

        sns = SnsEndpoint(ranges, path=config.sns.path, max_age=config.sns.max_age)  # type: ignore[arg-type]
    try:
        return OriginShield(
            app,
            ranges=ranges,
            default=config.default,
            routes=config.routes,
            trusted_proxies=config.trusted_proxies,
            secret=secret,
            geoip=geoip,
            report_only=config.report_only,
            status=config.rejection_status,
            log_burst=config.log_burst,
            log_interval=config.log_interval,
            manage_refresher=manage_refresher,
            counters=counters,
            warn_shared_pools=False,  # config.startup_warnings has them, with the file and key
            sns=sns,
        )
    except ConfigError as exc:
        raise ConfigError(f"{config.path}: {exc}") from None


@functools.cache
def _embedded() -> AwsIpRanges:
    # Immutable, and the same bytes for the life of the process: parse it once (about 0.5 s).
    return aws.load_ranges(None)


def _load_file(path: str, config: str) -> AwsIpRanges:
    try:
        return aws.load_ranges(path)
    except (OSError, OriginShieldError) as exc:
        raise ConfigError(f"{config}: ranges.source: cannot load {path!r}: {exc}") from None
