"""``ORIGINSHIELD_NO_SPEEDUPS=1`` blocks the C extension at import, so that CI can run the pure-Python
product (the readable reference) on a machine where the extension is built.

Each case runs in a fresh interpreter: the switch is read once, when ``originshield.radix`` is imported.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from originshield import radix

_PROBE = """
import sys
from originshield import metrics, middleware, radix
print(radix.ACCELERATED, radix.SPEEDUPS is None, "originshield._speedups" in sys.modules,
      type(radix.RadixTree.build([]).lookup).__name__, metrics._Counter.__name__,
      middleware.OriginShield.__mro__[1].__name__)
"""


def probe(value: str | None) -> list[str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("ORIGINSHIELD_NO_SPEEDUPS", "ORIGINSHIELD_REQUIRE_SPEEDUPS")
    }
    if value is not None:
        env["ORIGINSHIELD_NO_SPEEDUPS"] = value
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, check=False, env=env
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_the_switch_blocks_the_extension() -> None:
    # Not even imported: nothing of the C module can be reached through any module.
    assert probe("1") == ["False", "True", "False", "_PyLookup", "_PyCounter", "object"]


@pytest.mark.skipif(
    not radix.ACCELERATED and not os.environ.get("ORIGINSHIELD_REQUIRE_SPEEDUPS"),
    reason="the C extension is not built (pure-Python install)",
)
@pytest.mark.parametrize("value", [None, "", "0", "yes"])
def test_only_the_value_1_blocks_it(value: str | None) -> None:
    # Anything else leaves the extension in use: a typo must not silently slow production down
    # (and the counter-check in CI, ORIGINSHIELD_REQUIRE_SPEEDUPS, catches a missing build).
    assert probe(value) == ["True", "False", "True", "Lookup", "Counter", "Shield"]
