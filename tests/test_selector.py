"""Selectors: a bad filter is a ConfigError (still a ValueError) that names the bad value."""

from __future__ import annotations

from typing import Any

import pytest

from originshield import ConfigError, Selector, load_ranges


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"ip_versions": [5]}, "[5]"),
        ({"ip_versions": []}, "[]"),
        ({"ip_versions": 4}, "4"),  # not a collection: no TypeError from iterating an int
        ({"services": []}, "services"),
        ({"services": ["EC2", ""]}, "''"),
        ({"regions": [["us-east-1"]]}, "[['us-east-1']]"),  # unhashable member: no TypeError
        ({"network_border_groups": 7}, "7"),
    ],
)
def test_bad_filters_raise_config_error_naming_the_value(kwargs: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError) as info:
        Selector.of(**kwargs)
    assert isinstance(info.value, ValueError)  # callers that guard against ValueError keep working
    assert named in str(info.value)
    assert next(iter(kwargs)) in str(info.value)


@pytest.mark.parametrize("name", ["nope", "region:", "zone:x", "cloudfront-origin-facin"])
def test_unknown_preset_is_a_config_error_naming_it(name: str) -> None:
    with pytest.raises(ConfigError, match=f"unknown preset {name!r}"):
        Selector.preset(name)


def test_a_selector_selects_the_same_records_from_the_document_and_remembers_them() -> None:
    ranges = load_ranges()
    sel = Selector.preset("cloudfront-origin-facing")
    picked = sel.apply(ranges)
    assert picked is ranges.selection(sel)  # computed once per document
    assert picked.records == tuple(sel.select(ranges.records))
    assert picked.description == "cloudfront-origin-facing" and picked.sync_token == ranges.sync_token
