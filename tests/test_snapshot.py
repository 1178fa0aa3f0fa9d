"""SnapshotHolder: two-phase publish, so a veto by any listener leaves every listener on the old data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route as StarletteRoute
from starlette.testclient import TestClient

from originshield import OriginShield, Policy, Route, SecretHeader, aws
from originshield.snapshot import Snapshot, SnapshotHolder

from .asgi import never_called

HISTORY = sorted((Path(__file__).parent / "data" / "aws" / "history").glob("ip-ranges-*.json.gz"))


def _veto(snap: Snapshot) -> None:
    raise RuntimeError(f"refusing generation {snap.generation}")


def test_a_veto_after_the_middleware_prepared_leaves_everything_on_the_old_data() -> None:
    old, new = aws.load_ranges(HISTORY[0]), aws.load_ranges(HISTORY[-1])
    holder = SnapshotHolder(old, "file")
    shield = OriginShield(never_called, ranges=holder, default=Policy.region_locked(["us-east-1"]))
    holder.subscribe(_veto)  # registered after the middleware: runs after it has compiled
    with pytest.raises(RuntimeError, match="refusing generation 2"):
        holder.publish(new, "network")
    assert holder.current.sync_token == old.sync_token
    assert shield.engine.sync_token == old.sync_token  # the middleware did not commit either
    assert shield.engine.generation == 1


def test_publish_commits_every_listener_then_swaps() -> None:
    old, new = aws.load_ranges(HISTORY[0]), aws.load_ranges(HISTORY[-1])
    holder = SnapshotHolder(old, "file")
    shield = OriginShield(never_called, ranges=holder, default=Policy.region_locked(["us-east-1"]))
    seen: list[tuple[str, int]] = []

    def listener(snap: Snapshot) -> Any:
        seen.append(("prepare", holder.current.generation))
        return lambda: seen.append(("commit", holder.current.generation))

    holder.subscribe(listener)
    snap = holder.publish(new, "network")
    assert seen == [("prepare", 1), ("commit", 1)]  # both before ``current`` changes
    assert holder.current is snap
    assert (shield.engine.generation, shield.engine.sync_token) == (2, new.sync_token)


def test_stale_reject_snapshot_fails_closed_only_where_ranges_are_used() -> None:
    # The refresher publishes the same data with stale_reject=True once it is older than max_age
    # and the operator chose stale_action = "reject".
    secret = SecretHeader.of("x-origin-verify", ["stale-test-secret-0123456789"])

    async def ok(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    inner = Starlette(routes=[StarletteRoute("/{path:path}", ok)])
    holder = SnapshotHolder(aws.load_ranges(HISTORY[-1]), "cache")
    health = Policy.health_check(["127.0.0.0/8"])
    shield = OriginShield(inner, ranges=holder, secret=secret, routes=[Route("/health", health, name="health")])
    edge = {"x-origin-verify": "stale-test-secret-0123456789", "x-forwarded-for": "198.51.100.7"}
    with TestClient(shield, client=("130.176.1.1", 1)) as cf, TestClient(shield, client=("127.0.0.1", 1)) as alb:
        assert cf.get("/", headers=edge).status_code == 200
        holder.publish(holder.current.ranges, "cache", stale_reject=True)
        assert cf.get("/", headers=edge).status_code == 403
        assert alb.get("/health").status_code == 200  # CIDR-only: independent of the AWS ranges
        holder.publish(holder.current.ranges, "network")  # fresh data again
        assert cf.get("/", headers=edge).status_code == 200
    assert shield.counters.total(reason="ranges_stale", action="rejected") == 1
    assert shield.counters.total(route="health", reason="allowed") == 1
