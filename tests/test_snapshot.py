"""SnapshotHolder: two-phase publish, so a veto by any listener leaves every listener on the old data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from originshield import OriginShield, Policy, aws
from originshield.snapshot import Snapshot, SnapshotHolder

HISTORY = sorted((Path(__file__).parent / "data" / "aws" / "history").glob("ip-ranges-*.json.gz"))


async def _app(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("not called")


def _veto(snap: Snapshot) -> None:
    raise RuntimeError(f"refusing generation {snap.generation}")


def test_a_veto_after_the_middleware_prepared_leaves_everything_on_the_old_data() -> None:
    old, new = aws.load(HISTORY[0]), aws.load(HISTORY[-1])
    holder = SnapshotHolder(old, "file")
    shield = OriginShield(_app, ranges=holder, default=Policy.region_locked(["us-east-1"]))
    holder.subscribe(_veto)  # registered after the middleware: runs after it has compiled
    with pytest.raises(RuntimeError, match="refusing generation 2"):
        holder.publish(new, "network")
    assert holder.current.sync_token == old.sync_token
    assert shield.engine.sync_token == old.sync_token  # the middleware did not commit either
    assert shield.engine.generation == 1


def test_publish_commits_every_listener_then_swaps() -> None:
    old, new = aws.load(HISTORY[0]), aws.load(HISTORY[-1])
    holder = SnapshotHolder(old, "file")
    shield = OriginShield(_app, ranges=holder, default=Policy.region_locked(["us-east-1"]))
    seen: list[tuple[str, int]] = []

    def listener(snap: Snapshot) -> Any:
        seen.append(("prepare", holder.current.generation))
        return lambda: seen.append(("commit", holder.current.generation))

    holder.subscribe(listener)
    snap = holder.publish(new, "network")
    assert seen == [("prepare", 1), ("commit", 1)]  # both before ``current`` changes
    assert holder.current is snap
    assert (shield.engine.generation, shield.engine.sync_token) == (2, new.sync_token)
