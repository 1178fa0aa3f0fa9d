"""Continuous ranges-snapshot swaps inside a benchmark server, for the reload-under-load figure.

If ``benchmarks.refresh`` (the refresher's own benchmark module) provides a swap driver, that is
used, so the figure covers exactly what the refresher does on a real update (its source server
runs in a separate process, see that module). Until then the
swapper does the same work by hand: it alternates between the two newest real publications in
``tests/data/aws/history/`` and for each swap parses and validates the full document from bytes
(``AwsIpRanges.from_bytes``, what the refresher does with a download) and publishes it through the
holder the middleware subscribed to (which recompiles its policies in the listener). Back to back,
no pause: the stress case, far more often than the real refresher's every-10-minutes.

The swapper works only while its flag file exists: the parent creates it for the duration of this
server's load and removes it afterwards, so the swapping never steals the shared server core from
the other variants' measurements. Progress goes to a small log file
(``count<TAB>active seconds<TAB>how``) that the parent reads.
"""

from __future__ import annotations

import importlib
import threading
import time
from pathlib import Path
from typing import Any

from originshield.aws import AwsIpRanges
from originshield.snapshot import SnapshotHolder

from ._common import REPO, snapshot

__all__ = ["Swapper"]

HISTORY = REPO / "tests" / "data" / "aws" / "history"


class Swapper:
    def __init__(self, log: Path, flag: Path) -> None:
        self.log = log
        self.flag = flag
        self.count = 0
        self._driver: Any = None
        self.how = ""
        try:
            # The refresher's module (owned by the refresher), when it provides a driver.
            refresh = importlib.import_module("benchmarks.refresh")
            factory = getattr(refresh, "swap_driver", None)
        except ImportError:
            factory = None
        if callable(factory):
            self._driver = factory()
            self.holder: SnapshotHolder = self._driver.holder
            self.how = f"`benchmarks.refresh.swap_driver`: {getattr(self._driver, 'description', 'refresher')}"
        else:
            docs = sorted(HISTORY.glob("ip-ranges-*.json.gz"))[-2:]
            self._docs = [d.read_bytes() for d in docs]
            self.holder = SnapshotHolder(snapshot(), "embedded")
            self.how = (
                "fallback swapper: parse + validate + publish, alternating "
                + " and ".join(d.name for d in docs)
                + " from tests/data/aws/history"
            )

    def _swap_once(self, i: int) -> None:
        if self._driver is not None:
            self._driver.swap()
            return
        data = self._docs[i % len(self._docs)]
        self.holder.publish(AwsIpRanges.from_bytes(data, source="bench"), "network")

    def _run(self) -> None:
        i = 0
        active = 0.0
        while True:
            if not self.flag.exists():
                time.sleep(0.02)
                continue
            t0 = time.monotonic()
            self._swap_once(i)
            i += 1
            self.count = i
            active += time.monotonic() - t0
            with self.log.open("a") as f:
                f.write(f"{i}\t{active:.3f}\t{self.how}\n")

    def start(self) -> None:
        threading.Thread(target=self._run, name="bench-snapshot-swapper", daemon=True).start()
