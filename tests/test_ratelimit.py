"""The refusal log-line rate limiter: counts exact, summary lines right, nothing lost from the
counters; the C budget (``_speedups.Budget``) and its Python reference agree step for step."""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import pytest

from originshield import Counters, OriginShield, SecretHeader, load_ranges
from originshield.errors import ConfigError
from originshield.radix import SPEEDUPS
from originshield.ratelimit import LogLimiter, _PyBudget

from .asgi import http_scope, ok_app, run_request

SECRET = "ratelimit-secret-0123456789"
EDGE, ATTACKER = "130.176.1.1", "198.51.100.66"


def _budgets(burst: int, interval: float) -> list[Any]:
    out: list[Any] = [_PyBudget(burst, interval, Counters().suppressed_cell(("r", "x")))]
    if SPEEDUPS is not None:
        out.append(SPEEDUPS.Budget(burst, interval, Counters().suppressed_cell(("r", "x"))))
    return out


def test_budget_logs_the_first_lines_then_summarises() -> None:
    for budget in _budgets(3, 10.0):
        got = [budget.take(t) for t in (0.0, 1.0, 2.0, 3.0, 4.0, 9.9)]
        assert got == [0, 0, 0, -1, -1, -1]
        assert budget.take(10.0) == 3  # the next interval: a summary of 3, then this line in full
        assert budget.take(10.5) == 0
        assert budget.flush() == 0


def test_budget_flush_and_clock_going_back() -> None:
    for budget in _budgets(1, 5.0):
        assert [budget.take(t) for t in (100.0, 100.1, 100.2)] == [0, -1, -1]
        assert budget.flush() == 2 and budget.flush() == 0
        assert budget.take(50.0) == 0  # a clock that went back starts a new interval


@pytest.mark.parametrize("seed", range(5))
def test_c_budget_equals_the_reference(seed: int) -> None:
    if SPEEDUPS is None:
        pytest.skip("the C extension is not built")
    rng = random.Random(seed)
    py, c = _budgets(rng.randrange(1, 5), rng.choice([0.5, 1.0, 3.0]))
    t = 0.0
    for _ in range(2000):
        t += rng.random() * 0.3
        if rng.random() < 0.01:
            assert py.flush() == c.flush()
        assert py.take(t) == c.take(t)
    assert py.pending == c.pending


def test_counts_are_exact_for_every_key() -> None:
    counters = Counters()
    limiter = LogLimiter(counters, burst=4, interval=3600)
    logged = {("a", "x"): 0, ("a", "y"): 0, ("b", "x"): 0}
    sent = dict.fromkeys(logged, 0)
    rng = random.Random(3)
    for _ in range(1000):
        key = rng.choice(list(logged))
        sent[key] += 1
        if limiter.budget(key).take(time.monotonic()) >= 0:
            logged[key] += 1
    for key, count in logged.items():
        assert count == 4
        assert count + counters.suppressed[key] == sent[key]


def test_summary_lines(caplog: pytest.LogCaptureFixture) -> None:
    counters = Counters()
    limiter = LogLimiter(counters, burst=1, interval=60)
    for _ in range(5):
        limiter.budget(("GET /api", "secret_missing")).take(time.monotonic())
    with caplog.at_level(logging.INFO, logger="t"):
        limiter.flush(logging.getLogger("t"), logging.INFO)
        limiter.flush(logging.getLogger("t"), logging.INFO)  # nothing pending: no line
    assert caplog.messages == ['log_suppressed route="GET /api" reason=secret_missing suppressed=4 interval=60s']
    assert "originshield_log_lines_suppressed_total" in counters.prometheus_text()
    assert (
        'originshield_log_lines_suppressed_total{route="GET /api",reason="secret_missing"} 4'
        in counters.prometheus_text()
    )


@pytest.mark.parametrize(("burst", "interval"), [(0, 1.0), (1.5, 1.0), (True, 1.0), (1, 0), (1, -1), (1, "1")])
def test_bad_settings_fail_at_startup(burst: Any, interval: Any) -> None:
    with pytest.raises(ConfigError, match="log_"):
        LogLimiter(Counters(), burst, interval)


def _run(mw: Any, peer: str, headers: list[tuple[bytes, bytes]]) -> int:
    return int(run_request(mw, http_scope(headers, peer, path="/"))[0]["status"])


def test_a_flood_through_the_middleware(caplog: pytest.LogCaptureFixture) -> None:
    """Counts exact, the first lines in full, then one summary with the number suppressed."""
    secret = SecretHeader.of("x-origin-verify", [SECRET])
    mw = OriginShield(
        ok_app, ranges=load_ranges(), secret=secret, log_burst=3, log_interval=3600, detect_proxy_rewrite=False
    )
    good = [(b"x-forwarded-for", b"203.0.113.7"), (b"x-origin-verify", SECRET.encode())]
    with caplog.at_level(logging.INFO, logger="originshield"):
        for i in range(50):
            assert _run(mw, ATTACKER, [(b"x-forwarded-for", b"192.0.2.%d" % i)]) == 403
        assert _run(mw, EDGE, good) == 200
        mw.flush_log_summaries()
    full = [m for m in caplog.messages if "reason=secret_missing" in m and "log_suppressed" not in m]
    assert len(full) == 3
    assert full[0] == mw.explain("GET", "/", {"x-forwarded-for": "192.0.2.0"}, ATTACKER).log_line()
    assert [m for m in caplog.messages if "log_suppressed" in m] == [
        "log_suppressed route=default reason=secret_missing suppressed=47 interval=3600s"
    ]
    assert mw.counters.rejected() == {"secret_missing": 50} and mw.counters.allowed() == 1
    assert {k: v for k, v in mw.counters.suppressed.items() if v} == {("default", "secret_missing"): 47}
