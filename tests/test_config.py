"""The configuration file: schema, precise errors (file, key, reason, nearest key), environment
overrides, secrets only by reference, shared-pool warnings, and a middleware built from it."""

from __future__ import annotations

import ast
import ipaddress
import logging
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount
from starlette.testclient import TestClient

from originshield import Refresher
from originshield.aws import load_ranges
from originshield.cli import main
from originshield.config import Config, load_config, loads_config
from originshield.config.pools import proxy_warnings
from originshield.errors import ConfigError
from originshield.snapshot import SnapshotHolder

from .configs import alb_config

pytestmark = pytest.mark.tooling

DATA = Path(__file__).parent / "data" / "aws"
RANGES = DATA / "ip-ranges.json"
SECRET = "rotation-new-" + "n" * 20  # test fixtures, not real secrets
OLD_SECRET = "rotation-old-" + "o" * 20
EDGE = "130.176.88.1"  # 130.176.88.0/21 GLOBAL CLOUDFRONT_ORIGIN_FACING

BASE = alb_config("OS_TEST_SECRET")


def parse(text: str, environ: dict[str, str] | None = None, base: Path | str = ".") -> Config:
    return loads_config(text, name="test.toml", base_dir=base, environ=environ or {})


def error_of(text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text, environ)
    return str(info.value)


app = Starlette(routes=[Mount("/", PlainTextResponse("app"))])


# -- a valid file ------------------------------------------------------------------------------------


def test_valid_file_gives_policies_routes_and_settings() -> None:
    config = parse(BASE)
    assert config.default_policy == "cloudfront"
    assert list(config.policies) == ["cloudfront", "health"]
    assert config.default.require_secret and config.default.source == "cloudfront"
    assert [(r.prefix, r.methods, r.policy.name) for r in config.routes] == [("/health", frozenset({"GET"}), "health")]
    assert [str(n) for n in config.trusted_proxies] == ["10.0.0.0/16"]
    assert config.secret is not None and config.secret.env == "OS_TEST_SECRET"
    assert config.ranges.source == "embedded" and not config.ranges.refresh
    assert config.rejection_status == 403 and not config.report_only


def test_build_protects_an_app_with_rotating_secrets() -> None:
    # Rotation: two accepted values at once, "new,old", both work; anything else is refused.
    config = parse(BASE)
    shield = config.build(app, environ={"OS_TEST_SECRET": f"{SECRET},{OLD_SECRET}"})
    chain = {"x-forwarded-for": f"203.0.113.9, {EDGE}"}
    with TestClient(shield, client=("10.0.1.2", 40000)) as client:
        assert client.get("/", headers={**chain, "x-origin-verify": SECRET}).status_code == 200
        assert client.get("/", headers={**chain, "x-origin-verify": OLD_SECRET}).status_code == 200
        assert client.get("/", headers={**chain, "x-origin-verify": "x" * 33}).status_code == 403
        assert client.get("/", headers=chain).status_code == 403
        assert client.get("/health").status_code == 200
        assert client.post("/health").status_code == 403  # GET only: POST falls to the default policy
    assert shield.counters.rejected() == {"secret_invalid": 1, "secret_missing": 2}


def test_secret_from_file(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text(f"# rotated 2026-11-21\n{SECRET}\n{OLD_SECRET}\n")
    text = BASE.replace('env = "OS_TEST_SECRET"', 'file = "secret"')
    config = parse(text, base=tmp_path)  # relative to the configuration file's directory
    assert config.secret is not None and config.secret.file == str(tmp_path / "secret")
    header = config.load_secret()
    assert header is not None and header.verify(SECRET.encode()) and header.verify(OLD_SECRET.encode())


def test_load_config_reads_a_file_and_resolves_paths_relative_to_it(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "os.toml"
    path.write_text(
        BASE.replace('source = "embedded"', 'source = "ranges.json"\ncache_dir = "cache"'), encoding="utf-8"
    )
    config = load_config(path, environ={})
    assert config.ranges.source == str(tmp_path / "sub" / "ranges.json")
    assert config.ranges.cache_dir == str(tmp_path / "sub" / "cache")
    assert config.path == str(path)


# -- errors name the file, the key and the reason -------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("require_secret = true", "require_secrets = true"),
            "test.toml: policies.cloudfront.require_secrets: unknown key (did you mean 'require_secret'?)",
        ),
        (
            ('trusted_proxies = ["10.0.0.0/16"]', 'trusted_proxy = ["10.0.0.0/16"]'),
            "test.toml: trusted_proxy: unknown key (did you mean 'trusted_proxies'?)",
        ),
        (
            ('source = "embedded"', 'sorce = "embedded"'),
            "test.toml: ranges.sorce: unknown key (did you mean 'source'?)",
        ),
        (
            ("require_secret = true", 'require_secret = "yes"'),
            "test.toml: policies.cloudfront.require_secret: expected true or false, got a string ('yes')",
        ),
        (
            ('policy = "health"', 'policy = "healht"'),
            "test.toml: routes[0].policy: no policy named 'healht' (did you mean 'health'?)",
        ),
        (
            ('default_policy = "cloudfront"', 'default_policy = "cloudfrnt"'),
            "test.toml: default_policy: no policy named 'cloudfrnt' (did you mean 'cloudfront'?)",
        ),
        (
            ('cidrs = ["10.0.0.0/16"]', 'cidrs = ["10.0.0.1/16"]'),
            "test.toml: policies.health.cidrs[0]: '10.0.0.1/16' is not a CIDR",
        ),
        (
            ('trusted_proxies = ["10.0.0.0/16"]', 'trusted_proxies = ["0.0.0.0/0"]'),
            "test.toml: trusted_proxies[0]: 0.0.0.0/0 trusts every address",
        ),
        (
            ('source = "peer"', 'source = "pere"'),
            "test.toml: policies.health.source: must be cloudfront, direct or peer, got 'pere' (did you mean 'peer'?)",
        ),
        (
            ('selectors = ["cloudfront-origin-facing"]', 'selectors = ["cloudfront-origin"]'),
            "test.toml: policies.cloudfront.selectors[0]: unknown preset 'cloudfront-origin'",
        ),
        (
            ('methods = ["GET"]', 'methods = "GET"'),
            "test.toml: routes[0].methods: expected a list of strings, got a string ('GET')",
        ),
        (
            ("[ranges]", "rejection_status = 200\n[ranges]"),
            "test.toml: rejection_status: must be an HTTP error status (400-599), got 200",
        ),
    ],
)
def test_errors_name_file_key_reason_and_nearest_key(change: tuple[str, str], expected: str) -> None:
    text = BASE.replace(*change)
    assert text != BASE
    assert error_of(text, {}).startswith(expected)


def test_invalid_toml_names_the_file_and_position() -> None:
    message = error_of("default_policy = \n")
    assert message.startswith("test.toml: invalid TOML:") and "line 1" in message


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml: cannot read the configuration file"):
        load_config(tmp_path / "missing.toml")


def test_secret_values_never_in_the_file() -> None:
    message = error_of(BASE.replace('env = "OS_TEST_SECRET"', 'value = "hunter2-hunter2-hunter2"'))
    assert message.startswith("test.toml: secret.value: secret values never go in the configuration file")
    assert "hunter2" not in message  # the value is never echoed
    message = error_of(BASE.replace('env = "OS_TEST_SECRET"', 'env = "abc,def-ghi"'))
    assert "secret.env: 'abc,def-ghi' is not an environment variable name" in message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (('env = "OS_TEST_SECRET"', 'env = "A"\nfile = "/x"'), "test.toml: secret: give env or file, not both"),
        (('env = "OS_TEST_SECRET"', ""), "test.toml: secret: say where the values come from"),
        (
            ('[secret]\nenv = "OS_TEST_SECRET"\n', ""),
            "test.toml: policies.cloudfront.require_secret: uses the secret header, but the file has no [secret] table",
        ),
        (
            ("require_secret = true", 'require_secret = true\nallow_countries = ["US"]'),
            "test.toml: policies.cloudfront.allow_countries: country rules need a [geoip] database",
        ),
        (
            ('source = "embedded"', 'source = "embedded"\ncache_dir = "/tmp/x"'),
            "test.toml: ranges.cache_dir: has no effect with source = 'embedded'",
        ),
        (
            ('default_policy = "cloudfront"\n', ""),
            "test.toml: default_policy: missing: name the policy for paths no route covers",
        ),
        (('cidrs = ["10.0.0.0/16"]', "cidrs = []"), "test.toml: policies.health: no allowed sources"),
        (
            (
                'methods = ["GET"]',
                'methods = ["GET"]\n[[routes]]\nprefix = "/health"\npolicy = "cloudfront"\nmethods = ["GET"]',
            ),
            "test.toml: routes[1]: same prefix and methods as routes[0]",
        ),
        (
            ('source = "embedded"', 'source = "ftp://example.com/ip-ranges.json"'),
            "test.toml: ranges.source: unsupported scheme 'ftp'",
        ),
        (
            ('selectors = ["cloudfront-origin-facing"]', "selectors = [{}]"),
            "test.toml: policies.cloudfront.selectors[0]: an empty selector selects all of AWS",
        ),
        (
            ('selectors = ["cloudfront-origin-facing"]', 'selectors = [{ services = ["EC2"], ip_versions = [5] }]'),
            "test.toml: policies.cloudfront.selectors[0].ip_versions: expected a list of 4 and/or 6",
        ),
    ],
)
def test_impossible_combinations(change: tuple[str, str], expected: str) -> None:
    text = BASE.replace(*change)
    assert text != BASE
    assert error_of(text).startswith(expected)


def test_missing_secret_variable_is_reported_at_build_with_the_file() -> None:
    config = parse(BASE)
    with pytest.raises(ConfigError, match=r"^test\.toml: secret: environment variable OS_TEST_SECRET is not set"):
        config.build(app, environ={})


def test_selection_typos_are_found_against_the_ranges_with_the_nearest_name() -> None:
    text = BASE.replace(
        'selectors = ["cloudfront-origin-facing"]', 'selectors = [{ services = ["CLOUDFRONT_ORIGN_FACING"] }]'
    )
    config = parse(text)
    problems = config.check_selections(load_ranges(None))
    assert len(problems) == 1
    assert problems[0].startswith("test.toml: policies.cloudfront.selectors[0]: services: 'CLOUDFRONT_ORIGN_FACING'")
    assert "(did you mean 'CLOUDFRONT_ORIGIN_FACING'?)" in problems[0]
    with pytest.raises(ConfigError, match="CLOUDFRONT_ORIGN_FACING"):
        config.build(app, environ={"OS_TEST_SECRET": SECRET})


def test_a_selection_that_matches_nothing_is_a_problem() -> None:
    # Both names exist, but CloudFront's origin-facing ranges are not listed under eu-west-3.
    text = BASE.replace(
        'selectors = ["cloudfront-origin-facing"]',
        'selectors = [{ services = ["CLOUDFRONT_ORIGIN_FACING"], regions = ["eu-west-3"] }]',
    )
    problems = parse(text).check_selections(load_ranges(None))
    assert len(problems) == 1 and "matches no prefix" in problems[0]


# -- environment overrides ----------------------------------------------------------------------------


def test_environment_overrides_source_paths_and_report_only(tmp_path: Path) -> None:
    text = BASE.replace('source = "embedded"', 'source = "https://ip-ranges.amazonaws.com/ip-ranges.json"')
    environ = {
        "ORIGINSHIELD_RANGES_SOURCE": str(RANGES),
        "ORIGINSHIELD_CACHE_DIR": str(tmp_path / "cache"),
        "ORIGINSHIELD_SECRET_FILE": str(tmp_path / "secret"),
        "ORIGINSHIELD_GEOIP_DATABASE": str(tmp_path / "country.mmdb"),
        "ORIGINSHIELD_REPORT_ONLY": "true",
    }
    config = parse(text, environ)
    assert config.ranges.source == str(RANGES)
    assert config.ranges.cache_dir == str(tmp_path / "cache")
    assert config.secret is not None and config.secret.file == str(tmp_path / "secret") and config.secret.env is None
    assert config.geoip is not None and config.geoip.database == str(tmp_path / "country.mmdb")
    assert config.report_only
    assert len(config.overrides) == 5 and "ORIGINSHIELD_RANGES_SOURCE -> ranges.source" in config.overrides
    # A local file source is what the server starts with (no network), and what it watches.
    assert config.load_ranges().sync_token == load_ranges(RANGES).sync_token
    with pytest.raises(ConfigError, match="ORIGINSHIELD_REPORT_ONLY: expected true or false"):
        parse(BASE, {"ORIGINSHIELD_REPORT_ONLY": "maybe"})


def test_make_holder_is_a_refresher_for_a_source_and_fixed_for_embedded(tmp_path: Path) -> None:
    holder = parse(BASE).make_holder()
    assert type(holder) is SnapshotHolder and holder.current.source == "embedded"
    text = BASE.replace('source = "embedded"', f'source = "{RANGES}"\ncache_dir = "{tmp_path}"')
    refresher = parse(text).make_holder()
    assert isinstance(refresher, Refresher)
    assert refresher.current.sync_token == load_ranges(RANGES).sync_token
    assert not refresher.running  # started by the middleware on lifespan startup, not here


# -- warnings -----------------------------------------------------------------------------------------


SHARED = """
default_policy = "region"
[ranges]
source = "embedded"
[policies.region]
selectors = [{ services = ["AMAZON"], regions = ["us-east-1"] }]
source = "direct"
"""


@pytest.mark.parametrize(
    "selector", ['"cloudfront"', '"amazon"', '"ec2"', '"region:us-east-1"', '"cloudfront-origin-facing"']
)
def test_shared_pool_without_secret_warns_and_explains_the_bypass(selector: str) -> None:
    config = parse(SHARED.replace('{ services = ["AMAZON"], regions = ["us-east-1"] }', selector))
    warning = next(w for w in config.warnings if "require_secret" in w)
    assert warning.startswith("test.toml: policies.region: allows ")
    assert "shared by all AWS customers" in warning and "own CloudFront distribution" in warning
    assert "cdn-proxy" in warning


def test_no_shared_pool_warning_with_the_secret_or_only_cidrs() -> None:
    config = parse(BASE)
    assert not [w for w in config.warnings if "require_secret" in w]


def test_warnings_are_logged_at_startup(caplog: pytest.LogCaptureFixture) -> None:
    config = parse(SHARED)
    with caplog.at_level(logging.WARNING, logger="originshield"):
        config.build(app)
    messages = [r.getMessage() for r in caplog.records if r.name == "originshield.config"]
    assert any("cdn-proxy" in m for m in messages)
    assert any("embedded snapshot is never refreshed" in m for m in messages)


def test_shared_pool_warnings_are_the_same_at_startup_and_in_check_config(
    caplog: pytest.LogCaptureFixture, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Both kinds: an AWS pool without the secret (from the file) and a trusted proxy inside AWS's
    # shared ranges (3.2.58.0/24: us-east-1 AMAZON, needs the ranges). One producer, two readers.
    text = SHARED.replace('default_policy = "region"', 'default_policy = "region"\ntrusted_proxies = ["3.2.58.0/24"]')
    path = tmp_path / "shared.toml"
    path.write_text(text, encoding="utf-8")
    config = load_config(path, environ={})
    with caplog.at_level(logging.WARNING, logger="originshield"):
        config.build(app, environ={})
    logged = [r.getMessage() for r in caplog.records if r.name == "originshield.config"]
    assert any("trusted_proxies: 3.2.58.0/24 overlaps AWS shared ranges" in m for m in logged)
    assert any("policies.region: allows" in m and "cdn-proxy" in m for m in logged)
    # The middleware's own wording of the policy warning stays silent: one line per risk.
    assert not [r for r in caplog.records if r.name != "originshield.config" and "cdn-proxy" in r.getMessage()]
    assert main(["check-config", str(path)]) == 0
    printed = [line.removeprefix("warning: ") for line in capsys.readouterr().out.splitlines() if "warning: " in line]
    assert printed == logged


def test_report_only_and_unused_policies_warn() -> None:
    config = parse("report_only = true\n" + BASE + '[policies.spare]\ncidrs = ["192.0.2.0/24"]\n')
    assert any("report_only: nothing is rejected" in w for w in config.warnings)
    assert any("policies 'spare': defined but used by no route" in w for w in config.warnings)


def test_report_only_lets_refusals_through_and_counts_them() -> None:
    config = parse("report_only = true\n" + BASE)
    shield = config.build(app, environ={"OS_TEST_SECRET": SECRET})
    with TestClient(shield, client=("192.0.2.1", 40000)) as client:
        assert client.get("/", headers={"x-origin-verify": SECRET}).status_code == 200
    assert shield.counters.total(reason="peer_not_allowed", action="reported") == 1


def test_a_geoip_file_is_watched_even_with_the_embedded_snapshot() -> None:
    # The embedded snapshot never refreshes, but the .mmdb can change on disk: a watch-only
    # refresher checks it (and never fetches), and the middleware starts it with the lifespan.
    mmdb = Path(__file__).parent / "data" / "geoip" / "GeoIP2-Country-Test.mmdb"
    text = BASE.replace("[secret]", f'[geoip]\ndatabase = "{mmdb}"\n[secret]')
    config = parse(text.replace("[policies.cloudfront]", '[policies.cloudfront]\nallow_countries = ["US"]'))
    shield = config.build(app, environ={"OS_TEST_SECRET": SECRET})
    holder = shield.holder
    assert isinstance(holder, Refresher)
    assert holder.refresh is False
    assert holder.current.source == "embedded"
    assert shield.engine.geoip is not None
    geoip: object = shield.engine.geoip
    assert len(holder.watchers) == 1
    assert holder.watchers[0] is geoip  # the very database the decisions use
    assert shield._manage  # started on lifespan startup


def test_log_rate_limit_keys_and_deprecated_cache_size() -> None:
    config = parse("log_burst = 2\nlog_interval = 30\ncache_size = 4096\n" + BASE)
    assert (config.log_burst, config.log_interval) == (2, 30.0)
    assert any("cache_size: deprecated and ignored" in w for w in config.warnings)
    shield = config.build(app, environ={"OS_TEST_SECRET": SECRET})
    assert (shield.log_limiter.burst, shield.log_limiter.interval) == (2, 30.0)
    assert "log_burst: must be 1 or more" in error_of("log_burst = 0\n" + BASE)
    assert "log_interval: must be greater than 0" in error_of("log_interval = 0\n" + BASE)
    assert not any("cache_size" in w for w in parse(BASE).warnings)


def test_schema_and_loader_do_not_import_the_running_parts() -> None:
    # A tool that only reads a configuration must not pay for (or be broken by) the middleware,
    # the refresher thread or the GeoIP reader: only the composition root (assemble) imports them.
    package = Path(__file__).parent.parent / "originshield" / "config"
    for module in ("schema.py", "loader.py", "pools.py"):
        tree = ast.parse((package / module).read_text(encoding="utf-8"))
        top = [n.module for n in tree.body if isinstance(n, ast.ImportFrom)]
        running = ("originshield.middleware", "originshield.refresh", "originshield.geoip")
        assert not [m for m in top if m and m.startswith(running)], module


@pytest.mark.parametrize(
    ("network", "overlaps"),
    [
        ("3.2.58.128/25", True),  # inside 3.2.58.0/24 (us-east-1 AMAZON)
        ("3.2.0.0/16", True),  # holds AWS prefixes
        ("2600:1f18::/32", True),  # IPv6, holds us-east-1/us-east-2 prefixes
        ("10.0.0.0/8", False),  # a VPC: private, never in the published ranges
        ("198.51.100.0/24", False),  # TEST-NET-2 (RFC 5737)
        ("::ffff:0:0/96", False),  # IPv4-mapped space: IPv6 records only, none there
    ],
)
def test_trusted_proxy_overlap_is_an_interval_test(network: str, overlaps: bool) -> None:
    ranges = load_ranges(RANGES)
    net = ipaddress.ip_network(network)
    brute = any(r.prefix.version == net.version and r.prefix.overlaps(net) for r in ranges.records)
    assert brute is overlaps  # the case is what it says
    assert bool(proxy_warnings("t.toml", [net], ranges)) is overlaps
