"""The fuzz corpus (fuzz/corpus/), replayed through both differential targets on every test run.

The corpus holds inputs the fuzzers found interesting (each reaches new code); replaying them here
keeps every such case checked without atheris, on every interpreter and on the pure-Python leg.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzz import adapter, address, decision
from fuzz.__main__ import replay
from fuzz._input import Input, Mismatch
from fuzz.scopes import Pools, scope_from
from originshield import load_ranges

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"


@pytest.mark.parametrize("target", ["address", "decision"])
def test_the_corpus_replays_without_a_mismatch(target: str) -> None:
    one_input = {"address": address.one_input, "decision": decision.one_input}[target]
    assert replay(one_input, [str(FUZZ / "corpus" / target)]) >= 20  # a real corpus, not a placeholder


def test_the_findings_replay_without_a_mismatch() -> None:
    # Inputs on which the former decision-cache gate disagreed with the reference (fuzz/findings/*.txt
    # say how); the whole decision in C must now give the reference's reason on every one of them.
    assert replay(decision.one_input, [str(FUZZ / "findings" / "decision")]) >= 5


def test_a_mismatch_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    # The harnesses must be able to fail: a parser, then a decision, that disagrees with the reference.
    monkeypatch.setattr(adapter, "py_parse_forwarded", lambda raw: b"\0\0\0\0")
    with pytest.raises(Mismatch, match="parse_forwarded_entry"):
        address.one_input(b"1.2.3.4")
    monkeypatch.setattr(adapter, "py_reason", lambda subject, scope: "country_not_allowed")
    with pytest.raises(Mismatch, match="1-cloudfront-app, well-formed: C allowed, Python country_not_allowed"):
        decision.one_input(b"")  # topology 1, an ordinary CloudFront request


def test_short_inputs_are_ordinary_requests() -> None:
    # Exhausted input reads as zeros, which every generator maps to the common case: an empty input
    # is a CloudFront request with the right secret from the topology's own peer.
    pools = Pools(load_ranges())
    s = scope_from(Input(b""), pools, "10.0.3.17")
    assert s["client"] == ("10.0.3.17", 50000) and s["method"] == "GET" and s["path"] == "/"
    assert [name for name, _ in s["headers"]] == [b"x-forwarded-for", b"x-origin-verify"]
