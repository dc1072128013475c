"""Which router each open client connection uses, across reloads.

A reload gives every listener a new router for new connections, while a connection keeps the
router it started with to its end. Inside a connection's task, a listener's `router` is that
connection's: a context variable set when the task starts, so the code that serves a
connection reads `self.router` as always, and a reload in the middle of a handshake or a
relay changes nothing for it. Elsewhere, `router` is the newest.

`released` waits until no open connection uses a router (then its resources can be closed);
listeners also offer `stop_accepting` and `idle`, which the engine's drain uses.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

from transports import Stream

from ..events import ConnectionClosed, ConnectionOpened, EventBus
from ..routing import Connection, Router
from ..status import Tally
from .relay import relay

if TYPE_CHECKING:
    from .listener import ActiveConnection

__all__ = ["ClientListener", "RouterSwitch", "ServingTasks"]

log = logging.getLogger("detour.proxy")

_SERVING: ContextVar[Router | None] = ContextVar("detour_serving_router", default=None)


class RouterSwitch:
    """A listener's routers: the newest, and the one each open connection started with."""

    def __init__(self, router: Router) -> None:
        self.newest = router
        self._routers: dict[int, Router] = {}  # connection id -> its router
        self._changed = asyncio.Event()

    def current(self) -> Router:
        """The router of the connection this task serves, else the newest."""
        serving = _SERVING.get()
        return self.newest if serving is None else serving

    def begin(self, conn_id: int) -> Router:
        """Call first thing in a connection's own task: it keeps the newest router."""
        router = self._routers[conn_id] = self.newest
        _SERVING.set(router)
        return router

    def end(self, conn_id: int) -> None:
        self._routers.pop(conn_id, None)
        self.changed()

    def changed(self) -> None:
        """A connection ended (or its task did)."""
        self._changed.set()

    async def wait_changed(self) -> None:
        self._changed.clear()
        await self._changed.wait()

    async def released(self, router: Router) -> None:
        """Wait until no open connection uses `router`."""
        while router in self._routers.values():
            await self.wait_changed()


class ServingTasks:
    """What every listener shares: one task per client connection, and the router switch.
    A subclass sets `switch` and `_tasks` in its __init__."""

    switch: RouterSwitch
    _tasks: set[asyncio.Task[None]]
    tally: Tally | None = None

    @property
    def router(self) -> Router:
        """The router for new connections; inside a connection's task, the one that
        connection started with."""
        return self.switch.current()

    @router.setter
    def router(self, router: Router) -> None:
        self.switch.newest = router

    @property
    def open_connections(self) -> int:
        return len(self._tasks)

    async def idle(self) -> None:
        """Wait until no connection is open."""
        while self._tasks:
            await self.switch.wait_changed()

    async def released(self, router: Router) -> None:
        """Wait until no open connection uses `router`."""
        await self.switch.released(router)

    async def _cut_connections(self) -> None:
        """End every open connection (cut: the clients see a reset)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self.switch.changed()

    async def _relay_accounted(
        self,
        active: ActiveConnection,
        client: Stream,
        connection: Connection,
        *,
        events: EventBus | None,
        idle_timeout: float,
    ) -> None:
        """Relay until both directions end, with what every listener tells about a
        connection: the opened and closed events, route success, and one log line."""
        if self.tally is not None:
            self.tally.connection_opened(active.service, active.route or "")
        if events is not None:
            events.publish(
                ConnectionOpened(
                    active.id, active.client, str(active.target), active.service, active.route
                )
            )
        try:
            await relay(client, connection.stream, idle_timeout=idle_timeout, stats=active.stats)
        finally:
            stats = active.stats
            if stats.down:
                self.router.record_success(connection.service, connection.route)
            how = "idle timeout" if stats.idle_timed_out else ("reset" if stats.reset else "closed")
            duration = time.monotonic() - active.started
            if self.tally is not None:
                self.tally.connection_closed(
                    active.service, connection.route.name, stats.up, stats.down
                )
            if events is not None:
                events.publish(ConnectionClosed(active.id, stats.up, stats.down, duration, how))
            log.info(
                "client %s: %s %s via %s: %d bytes up, %d down, %.1fs, %s",
                active.client,
                active.protocol,
                active.target,
                connection.route.name,
                stats.up,
                stats.down,
                duration,
                how,
                extra={
                    "event": "connection_closed",
                    "client": active.client,
                    "protocol": active.protocol,
                    "target": str(active.target),
                    "service": active.service,
                    "route": connection.route.name,
                    "up": stats.up,
                    "down": stats.down,
                    "seconds": round(duration, 3),
                    "end": how,
                },
            )


class ClientListener(Protocol):
    """What reload and drain need of a listener."""

    router: Router
    first_answer: float

    @property
    def open_connections(self) -> int: ...

    def stop_accepting(self) -> None: ...

    async def idle(self) -> None: ...

    async def released(self, router: Router) -> None: ...

    async def stop(self) -> None: ...
