"""Running a stand-in server (the CRM's, the model provider's) in the foreground until a signal."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Protocol


class StandIn(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def serve_until_signal(standin: StandIn, banner: Callable[[], str]) -> None:
    """Start `standin`, print `banner()` (it knows the port now), stop on SIGINT or SIGTERM."""
    await standin.start()
    print(banner(), flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await stopping.wait()
    finally:
        await standin.stop()
