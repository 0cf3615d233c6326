"""The operator-wide wake-up scheduler: one heap, latest plan per run wins, due runs woken."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sba_operator.handlers.scheduler import WakeScheduler


async def test_wakes_due_runs_in_time_order_and_honours_replacements() -> None:
    woken: list[str] = []
    done = asyncio.Event()

    async def wake(namespace: str, name: str, uid: str) -> None:
        woken.append(uid)
        if len(woken) == 2:
            done.set()

    scheduler = WakeScheduler(wake)
    now = datetime.now(UTC)
    scheduler.schedule("late", "ns", "late", now + timedelta(seconds=0.3))
    scheduler.schedule("early", "ns", "early", now + timedelta(seconds=0.1))
    scheduler.schedule("gone", "ns", "gone", now + timedelta(seconds=0.05))
    scheduler.forget("gone")
    scheduler.schedule("moved", "ns", "moved", now + timedelta(seconds=0.05))
    scheduler.schedule("moved", "ns", "moved", now + timedelta(hours=1))  # replaced: later
    assert scheduler.due_at("moved") == now + timedelta(hours=1)
    scheduler.start()
    try:
        await asyncio.wait_for(done.wait(), timeout=5)
    finally:
        await scheduler.close()
    assert woken == ["early", "late"]
    assert len(scheduler) == 1  # "moved" still waits
    scheduler.schedule("x", "ns", "x", None)
    assert scheduler.due_at("x") is None
