"""What the stand-in servers (the CRM's, the model provider's) share: an aiohttp app on a
loopback port with a lifecycle, and running one in the foreground until a signal."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from types import TracebackType
from typing import Self

from aiohttp import web


class LoopbackServer:
    """Subclasses add their routes in `_routes`; `start`/`stop` and `async with` do the rest."""

    name = "stand-in"
    cancel_handlers = False
    """aiohttp's handler_cancellation: a client that gives up stops its (streaming) handler."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host, self._requested_port = host, port
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        # Set on stop() so delays and hangs end at once instead of holding shutdown.
        self._closing = asyncio.Event()

    def _routes(self, app: web.Application) -> None:
        raise NotImplementedError

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"the {self.name} is not started")
        return self._port

    @property
    def origin(self) -> str:
        return f"http://{self._host}:{self.port}"

    async def start(self) -> None:
        if self._runner is not None:
            return
        self._closing.clear()
        app = web.Application()
        self._routes(app)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=self.cancel_handlers)
        await runner.setup()
        await web.TCPSite(runner, self._host, self._requested_port).start()
        self._runner, self._port = runner, int(runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            self._closing.set()
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def serve_until_signal(standin: LoopbackServer, banner: Callable[[], str]) -> None:
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
