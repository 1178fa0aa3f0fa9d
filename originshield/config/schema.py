"""The configuration's values: what a validated file says, as frozen dataclasses.

:mod:`~originshield.config.loader` builds them from TOML and the environment;
:mod:`~originshield.config.assemble` turns a :class:`Config` into the running parts. Nothing here
imports the middleware, the refresher or the GeoIP reader: a tool that only reads or checks a
configuration pays for none of them.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from originshield.aws import DEFAULT_URL, AwsIpRanges, Network
from originshield.errors import ConfigError
from originshield.policy import CountryResolver, Policy, Route
from originshield.secret import SecretHeader
from originshield.selector import Selector

from ._text import strip_prefix, suggest
from .pools import proxy_warnings

if TYPE_CHECKING:
    from originshield._types import ASGIApp
    from originshield.metrics import Counters
    from originshield.middleware import OriginShield
    from originshield.refresh import Refresher
    from originshield.snapshot import SnapshotHolder

__all__ = [
    "EMBEDDED",
    "Config",
    "GeoIPSettings",
    "RangesSettings",
    "SecretSettings",
    "SnsSettings",
    "local_file",
]

#: ``ranges.source`` for the snapshot inside the package (offline start; never refreshed).
EMBEDDED: Final = "embedded"


def local_file(source: str) -> str | None:
    """The file a ranges source names (a path or a ``file://`` URL), or None for any other URL."""
    from originshield.refresh.fetch import local_path  # noqa: PLC0415 - the refresher's rule for what names a file

    return local_path(source)


@dataclass(frozen=True, slots=True)
class RangesSettings:
    """Where the AWS ranges come from and how they are kept fresh (``[ranges]``)."""

    #: A URL (``https://``, ``http://``, ``file://``), a file path, or ``"embedded"`` (the snapshot in
    #: the package; never refreshed).
    source: str = DEFAULT_URL
    cache_dir: str | None = None
    refresh: bool = True
    interval: float = 600.0
    max_age: float = 86400.0
    stale_action: str = "serve"
    shrink_threshold: float = 0.25
    shrink_window: float = 7 * 86400.0
    timeout: float = 10.0

    @property
    def local_file(self) -> str | None:
        """The file the source names, or None for a URL or the embedded snapshot."""
        return None if self.source == EMBEDDED else local_file(self.source)


@dataclass(frozen=True, slots=True)
class SecretSettings:
    """Where the secret header's accepted values come from (``[secret]``): never the values."""

    header: str = "x-origin-verify"
    env: str | None = None
    file: str | None = None

    @property
    def origin(self) -> str:
        """Where the values come from, for messages (``environment variable X`` / ``file F``)."""
        return f"environment variable {self.env}" if self.env else f"file {self.file}"

    def load(self, environ: Mapping[str, str] | None = None) -> SecretHeader:
        """Read the accepted values now. Raises :class:`ConfigError` (never showing a value)."""
        if self.env is not None:
            return SecretHeader.from_env(self.header, self.env, environ)
        assert self.file is not None  # noqa: S101 - guaranteed by the loader (env or file)
        return SecretHeader.from_file(self.file, self.header)


@dataclass(frozen=True, slots=True)
class GeoIPSettings:
    """The country database (``[geoip]``)."""

    database: str
    registered_country_fallback: bool = False


@dataclass(frozen=True, slots=True)
class SnsSettings:
    """The AmazonIpSpaceChanged endpoint (``[sns]``, :class:`originshield.sns.SnsEndpoint`)."""

    path: str = "/_originshield/sns"
    max_age: float = 3600.0


@dataclass(frozen=True, slots=True)
class Config:
    """A validated configuration file. Build the middleware with :meth:`build`."""

    #: The file it was read from (in every message).
    path: str
    ranges: RangesSettings
    secret: SecretSettings | None
    geoip: GeoIPSettings | None
    #: Policies by name, in file order.
    policies: Mapping[str, Policy]
    default_policy: str
    routes: tuple[Route, ...]
    trusted_proxies: tuple[Network, ...]
    report_only: bool = False
    rejection_status: int = 403
    #: Deprecated (no decision cache since issue 12): read and ignored with a warning.
    cache_size: int | None = None
    #: Refusal log lines: full lines per (route, reason) and interval, and the interval (seconds).
    log_burst: int = 10
    log_interval: float = 60.0
    #: Warnings known from the file alone (a shared AWS pool without the secret, report-only, no
    #: refresh, ...); :meth:`startup_warnings` adds those that need the ranges.
    warnings: tuple[str, ...] = ()
    #: Environment overrides applied, as ``VARIABLE -> key``.
    overrides: tuple[str, ...] = field(default=())
    sns: SnsSettings | None = None

    @property
    def default(self) -> Policy:
        return self.policies[self.default_policy]

    def selectors(self) -> tuple[Selector, ...]:
        """Every distinct AWS selection the policies use (the refresher keeps each non-empty)."""
        seen: dict[Selector, None] = {}
        for policy in self.policies.values():
            for sel in policy.selectors:
                seen.setdefault(sel, None)
        return tuple(seen)

    def env_note(self, key: str) -> str:
        """`` (from VARIABLE)`` when ``key`` was overridden by the environment, else empty."""
        variables = [o.split(" -> ")[0] for o in self.overrides if o.endswith(f" -> {key}")]
        return f" (from {variables[0]})" if variables else ""

    # -- checks against the ranges -------------------------------------------------------------------

    def check_selections(self, ranges: AwsIpRanges) -> list[str]:
        """Problems of the AWS selections against a document: names it does not know (with the
        nearest known one) and selections that match nothing. Empty when all is well."""
        problems: list[str] = []
        known = {
            "services": ranges.values("service"),
            "regions": ranges.values("region"),
            "network_border_groups": ranges.values("network_border_group"),
        }
        for name, policy in self.policies.items():
            for i, sel in enumerate(policy.selectors):
                where = f"{self.path}: policies.{name}.selectors[{i}]"
                typo = False
                for attr, values in known.items():
                    for value in sorted(getattr(sel, attr) or ()):
                        if value not in values:
                            typo = True
                            problems.append(
                                f"{where}: {attr}: {value!r} is not in the ranges document "
                                f"(syncToken {ranges.sync_token}){suggest(value, values)}"
                            )
                if not typo and not sel.apply(ranges):
                    problems.append(
                        f"{where}: {sel.name!r} matches no prefix in the ranges document (syncToken "
                        f"{ranges.sync_token})"
                    )
        return problems

    def startup_warnings(self, ranges: AwsIpRanges) -> list[str]:
        """What an operator must hear before serving with ``ranges``: :attr:`warnings` plus a trusted
        proxy inside AWS's shared ranges. Logged at startup and printed by ``check-config``."""
        return [*self.warnings, *proxy_warnings(self.path, self.trusted_proxies, ranges)]

    # -- the secret ------------------------------------------------------------------------------------

    def load_secret(self, environ: Mapping[str, str] | None = None) -> SecretHeader | None:
        """The secret header with its current values, or None when ``[secret]`` is absent."""
        if self.secret is None:
            return None
        try:
            return self.secret.load(environ)
        except ConfigError as exc:
            raise ConfigError(f"{self.path}: secret: {strip_prefix(str(exc), 'secret: ')}") from None

    def placeholder_secret(self) -> SecretHeader | None:
        """A secret with one random value nobody knows: for offline commands (``export``,
        ``explain`` without the real values) that must build the policies but never verify."""
        if self.secret is None:
            return None
        return SecretHeader.of(self.secret.header, [secrets.token_urlsafe(32)])

    # -- the running parts: built by the composition root (originshield.config.assemble) ------------

    def build(
        self,
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
        """Wrap ``app`` in the configured middleware: :func:`originshield.config.assemble.build`."""
        from .assemble import build  # noqa: PLC0415 - the middleware only when one is built

        return build(
            self,
            app,
            environ=environ,
            ranges=ranges,
            secret=secret,
            geoip=geoip,
            counters=counters,
            manage_refresher=manage_refresher,
            log_warnings=log_warnings,
        )

    def open_geoip(self) -> CountryResolver | None:
        """The GeoIP database, or None: :func:`originshield.config.assemble.open_geoip`."""
        from .assemble import open_geoip  # noqa: PLC0415

        return open_geoip(self)

    def load_ranges(self) -> AwsIpRanges:
        """The ranges a server would start with: :func:`originshield.config.assemble.offline_ranges`."""
        from .assemble import offline_ranges  # noqa: PLC0415

        return offline_ranges(self)

    def make_holder(self, watchers: Sequence[Any] = ()) -> SnapshotHolder:
        """A server's snapshot holder: :func:`originshield.config.assemble.make_holder`."""
        from .assemble import make_holder  # noqa: PLC0415

        return make_holder(self, watchers)

    def refresher(self, *, initial: AwsIpRanges | None = None, watchers: Iterable[Any] = ()) -> Refresher:
        """The configured refresher, never started: :func:`originshield.config.assemble.refresher`."""
        from .assemble import refresher  # noqa: PLC0415

        return refresher(self, initial=initial, watchers=watchers)
