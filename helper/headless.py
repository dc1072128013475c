"""The headless run: detour without a UI, as a service manager runs it. It starts the
engine, tells systemd when it is ready (Type=notify), reloads the config file on SIGHUP and,
on SIGTERM or Ctrl-C, drains: no new connections, established ones get a deadline to finish.
A second SIGTERM or Ctrl-C stops at once."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import time
from typing import TYPE_CHECKING

from transports import Endpoint

from .config import Config, ConfigError, load_config
from .instances import serving

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["notify", "reload_config", "serve", "with_listen"]

log = logging.getLogger("detour")

EXIT_OK, EXIT_FAILURE = 0, 1


def with_listen(config: Config, listen: Endpoint | None) -> Config:
    """`config` with the --listen override, if there is one."""
    if listen is None:
        return config
    return dataclasses.replace(config, listen=dataclasses.replace(config.listen, mixed=listen))


async def reload_config(engine: Engine, path: str, listen: Endpoint | None) -> tuple[bool, str]:
    """Read the config file again and switch new connections to it (SIGHUP; the UI's reload
    key). A file with problems changes nothing: they are logged and detour keeps running.
    Returns whether the new config is in use, and one line saying what happened."""
    try:
        config = with_listen(load_config(path), listen)
    except ConfigError as exc:
        log.error(
            "reload: config problems in %s\nstill running with the previous config",
            exc,
            extra={"event": "reload_failed", "problems": exc.problems},
        )
        first = exc.problems[0] if exc.problems else "see the log"
        return False, f"not reloaded: {first} (still the previous config; the log has all)"
    try:
        result = await engine.reload(config)
    except Exception as exc:  # building a route failed (a CA file vanished, ...)
        log.error(
            "reload: cannot use %s: %s; still running with the previous config",
            path,
            exc,
            extra={"event": "reload_failed", "problems": [str(exc)]},
        )
        return False, f"not reloaded: {exc} (still the previous config)"
    summary = "; ".join(result.changed) or "no changes that affect routing"
    log.info(
        "reloaded %s: %s; new connections use routes: %s",
        path,
        summary,
        ", ".join(route.name for route in engine.router.routes),
        extra={"event": "reloaded", "changed": list(result.changed)},
    )
    line = f"reloaded {path}: {summary}"
    if result.needs_restart:
        log.warning(
            "reload: %s changed but needs a restart; still using the running value",
            ", ".join(result.needs_restart),
            extra={"event": "needs_restart", "keys": list(result.needs_restart)},
        )
        line += f" ({', '.join(result.needs_restart)}: needs a restart)"
    return True, line


async def serve(
    config: Config,
    path: str | None,
    listen: Endpoint | None,
    drain_timeout: float,
) -> int:
    """Run until SIGTERM or Ctrl-C, then drain for up to `drain_timeout` seconds; SIGHUP
    reloads `path`. Returns the exit status."""
    from .engine import Engine
    from .routing.state import HealthStore

    # What worked on this network is remembered across restarts (docs/routing.md, Memory).
    engine = Engine(config, store=HealthStore())
    # Signals are handled from the start: a reload asked for during start-up waits for it,
    # and a stop asked for then happens as soon as the engine runs.
    signals = _ShutdownSignals()
    started = asyncio.Event()
    reloads = _Reloads(engine, path, listen, started, signals.stop)
    record = contextlib.ExitStack()  # this process in the state directory (`detour add`)
    try:
        try:
            await engine.start()
        except OSError as exc:
            # Which listener and why, in a sentence: "listen.mixed 127.0.0.1:1080: Address
            # already in use", "status API on ...", "whatsapp_proxy.tls_port ...".
            log.error("cannot start: %s", start_problem(exc))
            return EXIT_FAILURE
        started.set()
        record.enter_context(serving(path, "SIGHUP"))
        notify("READY=1")
        await signals.stop.wait()
        notify("STOPPING=1")
        open_now = engine.server.open_connections
        if open_now and drain_timeout > 0:
            log.info(
                "shutting down: %d connection(s) open, waiting up to %gs for them to finish "
                "(signal again to stop at once)",
                open_now,
                drain_timeout,
            )
            left = await engine.drain(drain_timeout, signals.force)
            if left:
                why = "stopping at once" if signals.force.is_set() else "drain deadline passed"
                log.warning("%s: closing %d connection(s)", why, left)
        else:
            log.info("shutting down")
    finally:
        record.close()
        signals.remove()
        await reloads.close()
        await engine.stop()
    return EXIT_OK


def notify(state: str) -> None:
    """Tell systemd how the service is doing (sd_notify: a datagram to $NOTIFY_SOCKET).
    Nothing happens where there is no such socket (not under systemd, or not Type=notify)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address or sys.platform == "win32":
        return
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    import socket

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.debug("cannot notify the service manager at %s: %s", address, exc)


class _ShutdownSignals:
    """SIGTERM or SIGINT once: `stop` (drain); again: `force` (stop at once)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.force = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        for sig in self.SIGNALS:
            try:
                self._loop.add_signal_handler(sig, self._received)
            except (NotImplementedError, RuntimeError):  # Windows: Ctrl-C is KeyboardInterrupt
                pass

    def _received(self) -> None:
        (self.force if self.stop.is_set() else self.stop).set()

    def remove(self) -> None:
        for sig in self.SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                self._loop.remove_signal_handler(sig)


class _Reloads:
    """SIGHUP: read the config file again and switch new connections to it. A file with
    problems changes nothing (they are logged); detour keeps running. Not on Windows."""

    def __init__(
        self,
        engine: Engine,
        path: str | None,
        listen: Endpoint | None,
        started: asyncio.Event,
        stopping: asyncio.Event,
    ) -> None:
        self.engine = engine
        self.path = path
        self.listen = listen
        self.started = started
        self.stopping = stopping
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop = asyncio.get_running_loop()
        self._installed = False
        if sys.platform != "win32" and hasattr(signal, "SIGHUP"):
            try:
                self._loop.add_signal_handler(signal.SIGHUP, self._received)
                self._installed = True
            except (NotImplementedError, RuntimeError):
                pass

    def _received(self) -> None:
        if self.stopping.is_set():
            log.info("SIGHUP while shutting down: not reloading")
            return
        task = self._loop.create_task(self._reload(), name="detour-reload")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reload(self) -> None:
        await self.started.wait()
        # MONOTONIC_USEC lets systemd (Type=notify-reload) match this to its request.
        notify(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
        try:
            await self.reload()
        finally:
            notify("READY=1")

    async def reload(self) -> None:
        if self.path is None:
            log.warning("SIGHUP: running with the built-in config, so there is no file to reload")
            return
        await reload_config(self.engine, self.path, self.listen)

    async def close(self) -> None:
        if self._installed:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                self._loop.remove_signal_handler(signal.SIGHUP)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def start_problem(exc: OSError) -> str:
    """Why a listener could not start, and what to do: "listen.mixed 127.0.0.1:1080: Address
    already in use (another program, or another detour, listens there: ...)"."""
    import errno

    text = str(exc.strerror or exc)
    if exc.errno == errno.EADDRINUSE:
        hint = "another program, or another detour, listens there: stop it or choose another port"
        if text.startswith("listen.mixed "):
            hint += ", e.g. --listen 127.0.0.1:1081"
        return f"{text} ({hint})"
    if exc.errno == errno.EACCES:
        return f"{text} (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{text} (no interface of this machine has that address)"
    return text
