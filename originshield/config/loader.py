"""Reading the configuration file: TOML (with :mod:`tomllib`) plus a few environment overrides.

An operator adopts the product without writing Python: ``originshield serve app:app --config
originshield.toml``. :func:`load_config` reads and validates a file into a
:class:`~originshield.config.schema.Config`; :func:`~originshield.config.assemble.build` (also
:meth:`Config.build`) turns it into an :class:`~originshield.middleware.OriginShield` (with a
:class:`~originshield.Refresher` tied to the ASGI lifespan and a
:class:`~originshield.geoip.CountryDatabase` when configured).

Every mistake is a :class:`~originshield.errors.ConfigError` that names the file, the key and the
reason, and suggests the nearest valid key for a typo (``require_secrets`` -> ``require_secret``)::

    originshield.toml: policies.api.require_secrets: unknown key (did you mean 'require_secret'?)

Secrets never live in the file: ``[secret]`` names an environment variable (``env``) or a file
(``file``) holding the accepted values, several at once during a rotation (``new,old`` in the
variable, one per line in the file). A policy that allows any part of the AWS ranges without
requiring the secret gets a startup warning that explains the bypass (:attr:`Config.warnings`).

Schema (every key optional unless marked)::

    default_policy = "cloudfront"      # the policy for paths no route covers (required with 2+ policies)
    trusted_proxies = ["10.0.0.0/16"]  # your own proxies (ALB subnets); X-Forwarded-For is read only from them
    report_only = false                # decide, log and count, but let everything through
    rejection_status = 403
    log_burst = 10                     # full refusal log lines per (route, reason) and interval
    log_interval = 60                  # seconds; the rest is one summary line with the number suppressed

    [ranges]
    source = "https://ip-ranges.amazonaws.com/ip-ranges.json"  # a URL, a file path, or "embedded"
    cache_dir = "/var/cache/originshield"  # last known good document, shared by worker processes
    refresh = true                     # run the background refresher (tied to the ASGI lifespan)
    interval = 600                     # seconds between refreshes
    max_age = 86400                    # seconds without a confirmed refresh before "stale"
    stale_action = "serve"             # or "reject"
    shrink_threshold = 0.25
    shrink_window = 604800             # seconds over which the shrink guard adds up removals
    timeout = 10

    [secret]
    header = "x-origin-verify"
    env = "ORIGINSHIELD_SECRET"        # or: file = "/run/secrets/origin-verify" (not both)

    [geoip]
    database = "/var/lib/GeoIP/GeoLite2-Country.mmdb"
    registered_country_fallback = false

    [policies.cloudfront]              # one table per policy; the name is used in logs and counters
    selectors = ["cloudfront-origin-facing"]   # presets, "region:<r>", "service:<S>", or tables
    cidrs = []                         # explicit networks
    require_secret = true
    source = "cloudfront"              # cloudfront | direct | peer (see originshield.policy.SourceMode)
    allow_countries = ["US"]
    deny_countries = []
    unknown_country = "reject"
    viewer_country_header = false
    viewer_address_header = false

    [[routes]]
    prefix = "/health"
    policy = "health-check"
    methods = ["GET", "HEAD"]
    name = "health"

A selector table: ``{ services = ["AMAZON"], regions = ["us-east-1"], network_border_groups = [...],
ip_versions = [4, 6], name = "..." }``. Relative paths in the file are relative to the file's
directory. Environment overrides (relative paths: to the working directory) are listed in
:data:`ENVIRONMENT`.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from originshield.aws import DEFAULT_URL, Network
from originshield.errors import ConfigError
from originshield.policy import Policy, Route
from originshield.secret import SecretHeader
from originshield.selector import Selector

from ._text import kind, quoted, strip_prefix, suggest
from .pools import policy_warnings
from .schema import EMBEDDED, Config, GeoIPSettings, RangesSettings, SecretSettings, SnsSettings, local_file

__all__ = ["ENVIRONMENT", "load_config", "loads_config"]

#: Environment variables that override the file (deployment-specific values: where the ranges come
#: from and where files live), mapped to the key they replace.
ENVIRONMENT: Final[Mapping[str, str]] = {
    "ORIGINSHIELD_RANGES_SOURCE": "ranges.source",
    "ORIGINSHIELD_CACHE_DIR": "ranges.cache_dir",
    "ORIGINSHIELD_GEOIP_DATABASE": "geoip.database",
    "ORIGINSHIELD_SECRET_FILE": "secret.file",
    "ORIGINSHIELD_REPORT_ONLY": "report_only",
}

_TOP_KEYS: Final = (
    "default_policy",
    "trusted_proxies",
    "report_only",
    "rejection_status",
    "cache_size",
    "log_burst",
    "log_interval",
    "ranges",
    "secret",
    "geoip",
    "policies",
    "routes",
    "sns",
)
_RANGES_KEYS: Final = (
    "source",
    "cache_dir",
    "refresh",
    "interval",
    "max_age",
    "stale_action",
    "shrink_threshold",
    "shrink_window",
    "timeout",
)
_SECRET_KEYS: Final = ("header", "env", "file")
_GEOIP_KEYS: Final = ("database", "registered_country_fallback")
_SNS_KEYS: Final = ("path", "max_age")
_POLICY_KEYS: Final = (
    "selectors",
    "cidrs",
    "require_secret",
    "source",
    "allow_countries",
    "deny_countries",
    "unknown_country",
    "viewer_country_header",
    "viewer_address_header",
    "preset",
)
#: ``preset`` values of a policy table: named topologies whose checks are fixed (``Policy.vpc_origin``).
_POLICY_PRESETS: Final = ("cloudfront-vpc-origin",)
_SELECTOR_KEYS: Final = ("services", "regions", "network_border_groups", "ip_versions", "name")
_ROUTE_KEYS: Final = ("prefix", "policy", "methods", "name")
# Keys that would put a secret value in the file: refused with a specific explanation.
_SECRET_VALUE_KEYS: Final = frozenset({"value", "values", "secret", "secrets", "token", "password"})
_MODES: Final = ("cloudfront", "direct", "peer")


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a TOML configuration file (``environ`` defaults to ``os.environ``)."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read the configuration file ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{name}: not UTF-8 text (TOML files are UTF-8)") from None
    return loads_config(text, name=name, base_dir=os.path.dirname(os.path.abspath(name)), environ=environ)


def loads_config(
    text: str,
    *,
    name: str = "<config>",
    base_dir: str | os.PathLike[str] = ".",
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Validate configuration text; ``name`` is used in messages, ``base_dir`` for relative paths."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name}: invalid TOML: {exc}") from None
    return _Loader(name, Path(base_dir), os.environ if environ is None else environ).load(doc)


class _Loader:
    """One pass over the parsed document; every error goes through :meth:`error`."""

    def __init__(self, name: str, base: Path, environ: Mapping[str, str]) -> None:
        self.name = name
        self.base = base
        self.environ = environ
        self.overrides: list[str] = []
        self.from_env: dict[str, tuple[str, str]] = {}  # variable -> (key, value) of applied overrides

    def error(self, key: str, reason: str, related: str = "") -> ConfigError:
        text = f"{self.name}: {key}: {reason}" if key else f"{self.name}: {reason}"
        # A value from the environment is not in the file the operator is looking at: say where it is.
        came = [f"{k} = {v!r} comes from {var}" for var, (k, v) in self.from_env.items() if k in text or k == related]
        return ConfigError(text + (f" ({'; '.join(came)})" if came else ""))

    # -- generic checks ------------------------------------------------------------------------------

    def keys(self, table: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
        for key in table:
            if key in allowed:
                continue
            full = f"{where}.{key}" if where else key
            if where == "secret" and key.lower() in _SECRET_VALUE_KEYS:
                raise self.error(
                    full,
                    "secret values never go in the configuration file (it ends up in repositories, "
                    'images and backups); name an environment variable (env = "ORIGINSHIELD_SECRET") '
                    'or a file (file = "/run/secrets/origin-verify") that holds them',
                )
            hint = suggest(key, allowed)
            raise self.error(full, "unknown key" + (hint or f" (valid keys: {', '.join(allowed)})"))

    def table(self, value: object, key: str) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.error(key, f"expected a table, got {kind(value)}")
        return value

    def string(self, value: object, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"expected a non-empty string, got {kind(value)}")
        return value.strip()

    def boolean(self, value: object, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {kind(value)}")
        return value

    def number(self, value: object, key: str, *, positive: bool = True) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(key, f"expected a number, got {kind(value)}")
        if positive and not value > 0:
            raise self.error(key, f"must be greater than 0, got {value!r}")
        return float(value)

    def integer(self, value: object, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected an integer, got {kind(value)}")
        return value

    def strings(self, value: object, key: str) -> list[str]:
        if not isinstance(value, list):
            raise self.error(key, f"expected a list of strings, got {kind(value)}")
        return [self.string(v, f"{key}[{i}]") for i, v in enumerate(value)]

    def path(self, value: str) -> str:
        return str(self.base / os.path.expanduser(value))

    def env(self, variable: str) -> str | None:
        value = self.environ.get(variable)
        if value is None or not value.strip():
            return None
        self.overrides.append(f"{variable} -> {ENVIRONMENT[variable]}")
        self.from_env[variable] = (ENVIRONMENT[variable], value.strip())
        return value.strip()

    # -- sections --------------------------------------------------------------------------------------

    def load(self, doc: Mapping[str, Any]) -> Config:
        self.keys(doc, _TOP_KEYS, "")
        ranges = self.load_ranges(self.table(doc.get("ranges", {}), "ranges"))
        secret = self.load_secret(doc.get("secret"))
        geoip = self.load_geoip(doc.get("geoip"))
        trusted = self.load_networks(doc.get("trusted_proxies", []), "trusted_proxies")
        for i, net in enumerate(trusted):
            if net.prefixlen == 0:
                raise self.error(f"trusted_proxies[{i}]", f"{net} trusts every address; list your proxies' networks")

        report_only = self.boolean(doc.get("report_only", False), "report_only")
        env_report = self.env("ORIGINSHIELD_REPORT_ONLY")
        if env_report is not None:
            if env_report.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise self.error("environment ORIGINSHIELD_REPORT_ONLY", f"expected true or false, got {env_report!r}")
            report_only = env_report.lower() in ("true", "1", "yes")
        status = self.integer(doc.get("rejection_status", 403), "rejection_status")
        if not 400 <= status <= 599:
            raise self.error("rejection_status", f"must be an HTTP error status (400-599), got {status}")
        cache_size = self.integer(doc["cache_size"], "cache_size") if "cache_size" in doc else None
        log_burst = self.integer(doc.get("log_burst", 10), "log_burst")
        if log_burst < 1:
            raise self.error("log_burst", f"must be 1 or more, got {log_burst}")
        log_interval = self.number(doc.get("log_interval", 60), "log_interval")

        raw_policies = self.table(doc.get("policies", {}), "policies")
        if not raw_policies:
            raise self.error("policies", "no policy defined; add e.g. [policies.cloudfront]")
        policies = {name: self.load_policy(name, raw) for name, raw in raw_policies.items()}
        if "default_policy" in doc:
            default = self.string(doc["default_policy"], "default_policy")
            if default not in policies:
                raise self.error("default_policy", f"no policy named {default!r}{suggest(default, policies)}")
        elif len(policies) == 1:
            default = next(iter(policies))
        else:
            raise self.error(
                "default_policy", f"missing: name the policy for paths no route covers ({quoted(policies)})"
            )
        routes = self.load_routes(doc.get("routes", []), policies)

        for name, policy in policies.items():
            where = f"policies.{name}"
            if (policy.require_secret or policy.viewer_address_header or policy.viewer_country_header) and (
                secret is None
            ):
                key = "require_secret" if policy.require_secret else "viewer_country_header"
                if policy.viewer_address_header and not policy.require_secret:
                    key = "viewer_address_header"
                raise self.error(f"{where}.{key}", "uses the secret header, but the file has no [secret] table")
            if policy.has_country_rules and geoip is None and not policy.viewer_country_header:
                raise self.error(
                    f"{where}.allow_countries" if policy.allow_countries is not None else f"{where}.deny_countries",
                    "country rules need a [geoip] database or viewer_country_header = true",
                )
        used = {default} | {r.policy.name for r in routes}
        unused = [n for n in policies if n not in used]
        warnings = policy_warnings(self.name, policies, routes, default)
        if cache_size is not None:
            warnings.append(f"{self.name}: cache_size: deprecated and ignored (there is no decision cache)")
        if unused:
            warnings.append(f"{self.name}: policies {quoted(unused)}: defined but used by no route nor default_policy")
        if report_only:
            warnings.append(
                f"{self.name}: report_only: nothing is rejected; refusals are only logged and counted (action=reported)"
            )
        if ranges.source != EMBEDDED and not ranges.refresh:
            warnings.append(f"{self.name}: ranges.refresh: false: the ranges are never refreshed and will age")
        if ranges.source == EMBEDDED:
            warnings.append(
                f"{self.name}: ranges.source: the embedded snapshot is never refreshed; AWS adds ranges "
                "every few days, so real CloudFront edges will start to be refused"
            )
        sns = self.load_sns(doc.get("sns"), ranges)
        return Config(
            sns=sns,
            path=self.name,
            ranges=ranges,
            secret=secret,
            geoip=geoip,
            policies=policies,
            default_policy=default,
            routes=routes,
            trusted_proxies=trusted,
            report_only=report_only,
            rejection_status=status,
            cache_size=cache_size,
            log_burst=log_burst,
            log_interval=log_interval,
            warnings=tuple(warnings),
            overrides=tuple(self.overrides),
        )

    def load_ranges(self, table: Mapping[str, Any]) -> RangesSettings:
        self.keys(table, _RANGES_KEYS, "ranges")
        source = self.string(table.get("source", DEFAULT_URL), "ranges.source")
        env_source = self.env("ORIGINSHIELD_RANGES_SOURCE")
        if env_source is not None:
            source = env_source
        elif source != EMBEDDED and local_file(source) == source:
            source = self.path(source)  # a plain path in the file: relative to the file
        scheme = source.split("://", 1)[0].lower() if "://" in source else ""
        if scheme not in ("", "http", "https", "file"):
            raise self.error(
                "ranges.source", f"unsupported scheme {scheme!r} (https, http, file, a path or 'embedded')"
            )
        cache_dir: str | None = None
        if "cache_dir" in table:
            cache_dir = self.path(self.string(table["cache_dir"], "ranges.cache_dir"))
        env_cache = self.env("ORIGINSHIELD_CACHE_DIR")
        if env_cache is not None:
            cache_dir = env_cache
        refresh = self.boolean(table.get("refresh", True), "ranges.refresh")
        if source == EMBEDDED and (cache_dir is not None or "refresh" in table):
            key = "ranges.cache_dir" if cache_dir is not None else "ranges.refresh"
            raise self.error(
                key,
                "has no effect with source = 'embedded' (a fixed snapshot, never refreshed)",
                related="ranges.source",
            )
        stale_action = self.string(table.get("stale_action", "serve"), "ranges.stale_action")
        if stale_action not in ("serve", "reject"):
            raise self.error("ranges.stale_action", f"must be 'serve' or 'reject', got {stale_action!r}")
        shrink = self.number(table.get("shrink_threshold", 0.25), "ranges.shrink_threshold")
        if shrink > 1:
            raise self.error("ranges.shrink_threshold", f"a share of the address space in (0, 1], got {shrink}")
        return RangesSettings(
            source=source,
            cache_dir=cache_dir,
            refresh=refresh and source != EMBEDDED,
            interval=self.number(table.get("interval", 600), "ranges.interval"),
            max_age=self.number(table.get("max_age", 86400), "ranges.max_age"),
            stale_action=stale_action,
            shrink_threshold=shrink,
            shrink_window=self.number(table.get("shrink_window", 7 * 86400), "ranges.shrink_window"),
            timeout=self.number(table.get("timeout", 10), "ranges.timeout"),
        )

    def load_secret(self, value: object) -> SecretSettings | None:
        env_file = self.env("ORIGINSHIELD_SECRET_FILE")
        if value is None and env_file is None:
            return None
        table = self.table(value if value is not None else {}, "secret")
        self.keys(table, _SECRET_KEYS, "secret")
        header = self.string(table.get("header", "x-origin-verify"), "secret.header")
        env = self.string(table["env"], "secret.env") if "env" in table else None
        file = self.path(self.string(table["file"], "secret.file")) if "file" in table else None
        if env_file is not None:
            env, file = None, env_file
        if env is not None and file is not None:
            raise self.error("secret", "give env or file, not both (one place holds the accepted values)")
        if env is None and file is None:
            raise self.error("secret", 'say where the values come from: env = "ORIGINSHIELD_SECRET" or file = "/path"')
        if env is not None and (not env.replace("_", "").isalnum() or env[0].isdigit()):
            raise self.error("secret.env", f"{env!r} is not an environment variable name (put the name, not the value)")
        try:
            SecretHeader.of(header, ["x" * 32])  # validates the header name only
        except ConfigError as exc:
            raise self.error("secret.header", strip_prefix(str(exc), "secret header name: ")) from None
        return SecretSettings(header=header.lower(), env=env, file=file)

    def load_geoip(self, value: object) -> GeoIPSettings | None:
        env_db = self.env("ORIGINSHIELD_GEOIP_DATABASE")
        if value is None and env_db is None:
            return None
        table = self.table(value if value is not None else {}, "geoip")
        self.keys(table, _GEOIP_KEYS, "geoip")
        if env_db is not None:
            database = env_db
        elif "database" in table:
            database = self.path(self.string(table["database"], "geoip.database"))
        else:
            raise self.error("geoip.database", "missing: the path of a GeoLite2/GeoIP2 Country or City .mmdb file")
        fallback = self.boolean(table.get("registered_country_fallback", False), "geoip.registered_country_fallback")
        return GeoIPSettings(database, fallback)

    def load_sns(self, value: object, ranges: RangesSettings) -> SnsSettings | None:
        if value is None:
            return None
        table = self.table(value, "sns")
        self.keys(table, _SNS_KEYS, "sns")
        if not ranges.refresh or ranges.source == EMBEDDED:
            raise self.error("sns", "a notice makes the refresher fetch: needs [ranges] with a source and refresh on")
        path = self.string(table.get("path", "/_originshield/sns"), "sns.path")
        if not path.startswith("/") or "?" in path or "/." in path:
            raise self.error("sns.path", f"expected an absolute path without query or dot segments, got {path!r}")
        return SnsSettings(path, self.number(table.get("max_age", 3600.0), "sns.max_age"))

    def load_networks(self, value: object, key: str) -> tuple[Network, ...]:
        out = []
        for i, text in enumerate(self.strings(value, key)):
            try:
                # strict: "10.0.0.1/16" has host bits set and is almost always a typo.
                out.append(ipaddress.ip_network(text, strict=True))
            except ValueError as exc:
                raise self.error(f"{key}[{i}]", f"{text!r} is not a CIDR ({exc})") from None
        return tuple(out)

    def load_selector(self, value: object, key: str) -> Selector:
        if isinstance(value, str):
            try:
                return Selector.preset(value.strip())
            except ValueError as exc:
                raise self.error(key, str(exc)) from None
        table = self.table(value, key)
        self.keys(table, _SELECTOR_KEYS, key)
        if not any(k in table for k in _SELECTOR_KEYS[:4]):
            raise self.error(key, "an empty selector selects all of AWS; write the preset 'all' if you mean it")
        versions = None
        if "ip_versions" in table:
            raw = table["ip_versions"]
            if not isinstance(raw, list) or not raw or any(v not in (4, 6) or isinstance(v, bool) for v in raw):
                raise self.error(f"{key}.ip_versions", f"expected a list of 4 and/or 6, got {raw!r}")
            versions = [int(v) for v in raw]
        try:
            return Selector.of(
                services=self.strings(table["services"], f"{key}.services") if "services" in table else None,
                regions=self.strings(table["regions"], f"{key}.regions") if "regions" in table else None,
                network_border_groups=(
                    self.strings(table["network_border_groups"], f"{key}.network_border_groups")
                    if "network_border_groups" in table
                    else None
                ),
                ip_versions=versions,
                name=self.string(table["name"], f"{key}.name") if "name" in table else "",
            )
        except ValueError as exc:
            raise self.error(key, str(exc)) from None

    def load_policy(self, name: str, value: object) -> Policy:
        where = f"policies.{name}"
        table = self.table(value, where)
        self.keys(table, _POLICY_KEYS, where)
        raw_selectors = table.get("selectors", [])
        if not isinstance(raw_selectors, list):
            raise self.error(f"{where}.selectors", f"expected a list, got {kind(raw_selectors)}")
        selectors = tuple(self.load_selector(s, f"{where}.selectors[{i}]") for i, s in enumerate(raw_selectors))
        cidrs = self.load_networks(table.get("cidrs", []), f"{where}.cidrs")
        if not selectors and not cidrs:
            raise self.error(where, "no allowed sources: give selectors and/or cidrs")
        options: dict[str, Any] = {}
        for key in ("require_secret", "viewer_country_header", "viewer_address_header"):
            if key in table:
                options[key] = self.boolean(table[key], f"{where}.{key}")
        if "source" in table:
            source = self.string(table["source"], f"{where}.source")
            if source not in ("cloudfront", "direct", "peer"):
                raise self.error(
                    f"{where}.source", f"must be cloudfront, direct or peer, got {source!r}{suggest(source, _MODES)}"
                )
            options["source"] = source
        for key in ("allow_countries", "deny_countries"):
            if key in table:
                options[key] = self.strings(table[key], f"{where}.{key}")
        if "unknown_country" in table:
            options["unknown_country"] = self.string(table["unknown_country"], f"{where}.unknown_country")
        if options.get("viewer_address_header") and options.get("source", "cloudfront") != "cloudfront":
            raise self.error(f"{where}.viewer_address_header", "only applies to source = 'cloudfront'")
        preset = self.string(table["preset"], f"{where}.preset") if "preset" in table else None
        if preset is not None and preset not in _POLICY_PRESETS:
            raise self.error(f"{where}.preset", f"unknown preset {preset!r}{suggest(preset, _POLICY_PRESETS)}")
        try:
            if preset is not None:  # topology 4: the peer in the VPC's private cidrs + the secret
                return Policy.vpc_origin(cidrs, name, selectors=selectors, **options)
            return Policy(name, selectors=selectors, cidrs=cidrs, **options)
        except ConfigError as exc:
            raise self.error(where, strip_prefix(str(exc), f"policy {name!r}: ")) from None

    def load_routes(self, value: object, policies: Mapping[str, Policy]) -> tuple[Route, ...]:
        if not isinstance(value, list):
            raise self.error("routes", f"expected an array of tables ([[routes]]), got {kind(value)}")
        routes: list[Route] = []
        seen: dict[tuple[str, frozenset[str] | None], int] = {}
        names: dict[str, int] = {}
        for i, raw in enumerate(value):
            where = f"routes[{i}]"
            table = self.table(raw, where)
            self.keys(table, _ROUTE_KEYS, where)
            if "prefix" not in table:
                raise self.error(f"{where}.prefix", 'missing: the path prefix, e.g. prefix = "/api"')
            if "policy" not in table:
                raise self.error(f"{where}.policy", f"missing: one of {quoted(policies)}")
            prefix = self.string(table["prefix"], f"{where}.prefix")
            policy = self.string(table["policy"], f"{where}.policy")
            if policy not in policies:
                raise self.error(f"{where}.policy", f"no policy named {policy!r}{suggest(policy, policies)}")
            methods = self.strings(table["methods"], f"{where}.methods") if "methods" in table else None
            try:
                route = Route(
                    prefix,
                    policies[policy],
                    frozenset(methods) if methods is not None else None,
                    self.string(table["name"], f"{where}.name") if "name" in table else "",
                )
            except ConfigError as exc:
                raise self.error(where, str(exc)) from None
            key = (route.prefix, route.methods)
            if key in seen:
                raise self.error(where, f"same prefix and methods as routes[{seen[key]}]: one of them never matches")
            if route.name in names or route.name == "default":
                raise self.error(f"{where}.name", f"{route.name!r} is already used (route names must be unique)")
            seen[key] = i
            names[route.name] = i
            routes.append(route)
        return tuple(routes)
