"""The public API: what ``from originshield import ...`` offers, the version, deprecated names."""

from __future__ import annotations

import importlib.metadata
import warnings

import pytest

import originshield
from originshield import OriginShield, Policy, load_ranges
from originshield._types import Receive, Scope, Send
from originshield.cli import main


def test_every_name_in_all_resolves_and_the_documented_ones_are_there() -> None:
    for name in originshield.__all__:
        assert getattr(originshield, name) is not None
    assert {"Selector", "Selection", "load_ranges", "load_config", "Config", "OriginShield"} <= set(
        originshield.__all__
    )


def test_version_comes_from_the_package_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    assert originshield.__version__ == importlib.metadata.version("originshield")
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"originshield {originshield.__version__}\n"


def test_load_is_a_deprecated_alias_of_load_ranges() -> None:
    with pytest.warns(DeprecationWarning, match=r"load_ranges\(\)"):
        old = originshield.load()
    assert old.sync_token == load_ranges().sync_token and old.records == load_ranges().records


def test_the_package_itself_never_calls_the_deprecated_alias() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        load_ranges()
        # No ranges given: the middleware loads the embedded snapshot itself.
        OriginShield(_app, default=Policy.health_check(["10.0.0.0/8"]), manage_refresher=False)


async def _app(scope: Scope, receive: Receive, send: Send) -> None:  # pragma: no cover - never called
    raise AssertionError("not served")
