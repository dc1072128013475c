"""Pluggable transport clients as child processes, managed the way Tor manages them (PT 1.0).

One `PtManager` per engine owns every child. A child is started on first use and shared by
every route that needs the same program, transport and upstream proxy. Its stdout is read
for the whole of its life: the launch (VERSION ... CMETHODS DONE, bounded by a timeout),
then LOG and STATUS lines, which go to the log at debug level. stderr is logged the same way
and its last lines are kept for the message when the child fails.

When a child exits on its own, every connection that went through it is reset (so no
client mistakes a cut transfer for a complete one), and the next connection starts it
again; a child that keeps failing is restarted with exponential backoff, and a connection
that arrives during the wait gets the last failure at once instead of hanging.

Stopping follows the spec's order: close stdin (TOR_PT_EXIT_ON_STDIN_CLOSE=1), then
SIGTERM after a grace period, then SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import time
import weakref
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..base import DialError, Failure, Op, Stream
from .ipc import (
    CMethod,
    Launch,
    LaunchFailed,
    LineReader,
    Log,
    Malformed,
    Message,
    Status,
    Unknown,
    client_environment,
    printable,
)

__all__ = ["ManagedClient", "PtManager"]

log = logging.getLogger("detour.pt")

START_TIMEOUT = 10.0
STOP_GRACE = 2.0  # after closing stdin, before SIGTERM; again before SIGKILL
# A child that ran this long before it exited counts as having worked: no backoff.
HEALTHY_AFTER = 30.0
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
_STDERR_KEPT = 5


@dataclass(frozen=True)
class ClientKey:
    binary: str
    transport: str
    proxy: str | None  # TOR_PT_PROXY (with credentials: never shown)
    state: Path


class PtManager:
    """Every PT child of one engine. `state_dir` is where their TOR_PT_STATE_LOCATION
    directories go (one per transport unless a layer gives state=); without one, a private
    temporary directory is used and removed at close."""

    def __init__(
        self,
        state_dir: Path | None = None,
        *,
        start_timeout: float = START_TIMEOUT,
        stop_grace: float = STOP_GRACE,
        backoff_first: float = BACKOFF_FIRST,
        backoff_max: float = BACKOFF_MAX,
    ) -> None:
        self._state_dir = state_dir
        self._temporary: Path | None = None
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace
        self.backoff_first = backoff_first
        self.backoff_max = backoff_max
        self._clients: dict[ClientKey, ManagedClient] = {}
        self._closed = False

    def state_for(self, transport: str, state: str | None) -> Path:
        if state is not None:
            return Path(state).expanduser().absolute()
        if self._state_dir is None:
            if self._temporary is None:
                self._temporary = Path(tempfile.mkdtemp(prefix="detour-pt-"))
            return self._temporary / transport
        return self._state_dir / transport

    def client(
        self, binary: str, transport: str, proxy: str | None = None, state: str | None = None
    ) -> ManagedClient:
        """The child for this program, transport and proxy (made now, started on first use)."""
        if self._closed:
            raise DialError(Failure.PT_FAILED, Op.CONNECT, "detour is shutting down")
        key = ClientKey(binary, transport, proxy, self.state_for(transport, state))
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = ManagedClient(key, self)
        return client

    @property
    def clients(self) -> list[ManagedClient]:
        return list(self._clients.values())

    async def forget(self, client: ManagedClient) -> None:
        """Stop one child and forget it: no route uses it any more (a reload removed it).
        A later dial for the same key makes a new one."""
        if self._clients.get(client.key) is client:
            del self._clients[client.key]
        await client.stop()

    async def aclose(self) -> None:
        """Stop every child (stdin closed, then SIGTERM, then SIGKILL) and forget them."""
        self._closed = True
        await asyncio.gather(*(client.stop() for client in self._clients.values()))
        self._clients.clear()
        if self._temporary is not None:
            shutil.rmtree(self._temporary, ignore_errors=True)
            self._temporary = None


class ManagedClient:
    """One PT client program for one transport; (re)started on demand."""

    def __init__(self, key: ClientKey, manager: PtManager) -> None:
        self.key = key
        self._manager = manager
        self.name = f"{key.transport} client ({os.path.basename(key.binary)})"
        self._child: ClientRun | None = None
        self._starting: asyncio.Future[ClientRun] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._failures = 0  # in a row: starts that failed, and children that died young
        self._next_start = 0.0
        self._last_error: str | None = None
        self.starts = 0  # how many children were started (for tests and the status view)
        self._stopped = False

    @property
    def pid(self) -> int | None:
        child = self._child
        return child.process.pid if child is not None and not child.exited.is_set() else None

    async def method(self) -> tuple[CMethod, ClientRun]:
        """Where to send SOCKS requests, starting the program if it is not running."""
        if self._stopped:  # a dial that began before the engine stopped starts nothing
            raise DialError(Failure.PT_FAILED, Op.CONNECT, "detour is shutting down")
        child = self._child
        if child is not None and not child.gone():
            assert child.method is not None
            return child.method, child
        if self._starting is None:
            wait = self._next_start - time.monotonic()
            if wait > 0 and self._last_error is not None:
                raise DialError(
                    Failure.PT_FAILED,
                    Op.CONNECT,
                    f"{self._last_error}; it failed {self._failures} times in a row, next "
                    f"start in {wait:.1f} s",
                )
            self._starting = self._spawn(self._start(), f"detour-pt-start-{self.key.transport}")
        # Shielded: a connection that gives up (a lost race) must not stop the start that
        # other connections are waiting for.
        child = await asyncio.shield(self._starting)
        assert child.method is not None
        return child.method, child

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _start(self) -> ClientRun:
        try:
            child = await self._launch()
        except DialError as exc:
            self._failed(exc.detail)
            raise
        finally:
            self._starting = None
        self._child = child
        self._spawn(self._supervise(child), f"detour-pt-{self.key.transport}-{child.process.pid}")
        return child

    async def _launch(self) -> ClientRun:
        key = self.key
        try:
            key.state.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise DialError(
                Failure.PT_FAILED,
                Op.CONNECT,
                f"cannot create the {self.name}'s state directory {key.state}: {exc.strerror}",
            ) from None
        env = client_environment(key.transport, key.state, key.proxy)
        try:
            process = await asyncio.create_subprocess_exec(
                key.binary,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                cwd=key.state,
                # Its own session: a Ctrl-C in detour's terminal is detour's to handle, and
                # detour then stops the child in order.
                start_new_session=os.name == "posix",
            )
        except FileNotFoundError:
            raise DialError(
                Failure.PT_NOT_INSTALLED, Op.CONNECT, f"{key.binary} does not exist"
            ) from None
        except OSError as exc:
            raise DialError(
                Failure.PT_FAILED, Op.CONNECT, f"cannot run {key.binary}: {exc.strerror or exc}"
            ) from None
        self.starts += 1
        child = ClientRun(process, Launch(key.transport, proxy=key.proxy is not None), self.name)
        child.readers = [
            self._spawn(child.read_stdout(), f"detour-pt-stdout-{process.pid}"),
            self._spawn(child.read_stderr(), f"detour-pt-stderr-{process.pid}"),
        ]
        child.waiter = self._spawn(child.wait_exit(), f"detour-pt-wait-{process.pid}")
        log.debug("started %s, pid %d", self.name, process.pid)
        try:
            async with asyncio.timeout(self._manager.start_timeout):
                outcome = await child.launched
        except TimeoutError:
            await child.stop(0.0)
            raise DialError(
                Failure.PT_FAILED,
                Op.CONNECT,
                f"the {self.name} did not report its SOCKS port within "
                f"{self._manager.start_timeout:g} s{child.stderr_tail()}",
            ) from None
        except BaseException:
            await child.stop(0.0)
            raise
        if isinstance(outcome, LaunchFailed):
            await child.stop(self._manager.stop_grace)
            raise DialError(
                Failure.PT_FAILED,
                Op.CONNECT,
                f"the {self.name} {outcome.reason}{child.stderr_tail()}",
            )
        child.method = outcome
        child.started_at = time.monotonic()
        log.info("%s ready: %s on %s", self.name, outcome.protocol, outcome.address)
        return child

    async def _supervise(self, child: ClientRun) -> None:
        await child.exited.wait()
        if child.stopping:
            return
        code = child.process.returncode
        lived = time.monotonic() - child.started_at
        if code is not None and code < 0:
            how = f"was killed by signal {-code}"
        else:
            how = f"exited with status {code}"
        reset = child.reset_streams()
        log.warning(
            "the %s %s after %.1f s%s; %d connection(s) through it reset; the next connection "
            "starts it again",
            self.name,
            how,
            lived,
            child.stderr_tail(),
            reset,
        )
        if self._child is child:
            self._child = None
        self._failed(f"the {self.name} {how}", healthy=lived >= HEALTHY_AFTER)

    def _failed(self, reason: str, healthy: bool = False) -> None:
        """Count a failure (`reason`: a sentence) and set when the next start may be."""
        self._failures = 1 if healthy else self._failures + 1
        self._last_error = reason
        # The first failure restarts at once (the next connection does it); more in a row
        # wait 1 s, 2 s, 4 s ... so a broken program is not run in a tight loop.
        delay = 0.0
        if self._failures > 1:
            delay = min(
                self._manager.backoff_first * 2 ** (self._failures - 2), self._manager.backoff_max
            )
        self._next_start = time.monotonic() + delay

    def track(self, child: ClientRun, stream: Stream) -> None:
        """Reset `stream` if `child` exits while it is open."""
        child.streams.add(stream)

    async def stop(self) -> None:
        self._stopped = True
        starting = self._starting
        if starting is not None:
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await starting
        child = self._child
        self._child = None
        if child is not None:
            await child.stop(self._manager.stop_grace)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class ClientRun:
    """One run of the program: its process, output readers and launch state."""

    def __init__(self, process: asyncio.subprocess.Process, launch: Launch, name: str) -> None:
        self.process = process
        self.name = name
        self._launch = launch
        self.launched: asyncio.Future[CMethod | LaunchFailed] = (
            asyncio.get_running_loop().create_future()
        )
        self.method: CMethod | None = None
        self.started_at = time.monotonic()
        self.exited = asyncio.Event()
        self.stopping = False
        self.readers: list[asyncio.Task[None]] = []
        self.waiter: asyncio.Task[None] | None = None
        self.streams: weakref.WeakSet[Stream] = weakref.WeakSet()
        self._stderr: deque[str] = deque(maxlen=_STDERR_KEPT)

    def _decide(self, outcome: CMethod | LaunchFailed) -> None:
        if not self.launched.done():
            self.launched.set_result(outcome)

    def _message(self, message: Message) -> None:
        if not self.launched.done():
            outcome = self._launch.feed(message)
            if outcome is not None:
                self._decide(outcome)
        match message:
            case Log(severity, text):
                log.debug("%s: %s %s", self.name, severity.lower() or "log", text)
            case Status(transport, fields):
                shown = " ".join(f"{k}={v}" for k, v in fields)
                log.debug("%s: status %s %s", self.name, transport, shown)
            case Malformed(reason):
                log.debug("%s wrote a line that is not PT protocol: %s", self.name, reason)
            case Unknown(keyword):
                log.debug("%s: ignored %s line", self.name, printable(keyword, 40))

    async def read_stdout(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        reader = LineReader()
        try:
            while data := await stdout.read(65536):
                for message in reader.feed(data):
                    self._message(message)
        except (OSError, ValueError):
            pass  # the pipe broke: the process is gone, which wait() below reports
        for message in reader.eof():
            self._message(message)

    async def read_stderr(self) -> None:
        stderr = self.process.stderr
        assert stderr is not None
        reader = _TextLines()
        try:
            while data := await stderr.read(65536):
                for line in reader.feed(data):
                    self._stderr.append(line)
                    log.debug("%s stderr: %s", self.name, line)
        except (OSError, ValueError):
            pass

    async def wait_exit(self) -> None:
        code = await self.process.wait()
        await self._drain_readers()
        how = f"killed by signal {-code}" if code < 0 else f"status {code}"
        self._decide(LaunchFailed(f"exited ({how}) before it was ready"))
        self.exited.set()

    async def _drain_readers(self) -> None:
        """The pipes may still hold its last words (a VERSION-ERROR printed just before it
        exited, a crash's message): let the readers take them. A grandchild that keeps the
        pipes open must not keep detour waiting, hence the bound."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                await asyncio.gather(*self.readers, return_exceptions=True)

    def gone(self) -> bool:
        """Whether the child has exited or is exiting, as far as can be told at once (the
        exit is reported a moment after the process dies; /proc knows sooner)."""
        if self.exited.is_set() or self.process.returncode is not None:
            return True
        return bool(_exiting(self.process.pid))

    async def ended(self) -> bool:
        """Whether the child has exited or is exiting, asked when one of its connections
        has just ended: a dying child closes its sockets exactly like a normal end."""
        if self.exited.is_set() or self.process.returncode is not None:
            return True
        exiting = _exiting(self.process.pid)
        if exiting is not None:
            return exiting
        # Without /proc: the exit is reported a moment after the sockets close.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_EXIT_NOTICE):
                await self.exited.wait()
        return self.exited.is_set()

    def stderr_tail(self) -> str:
        if not self._stderr:
            return ""
        return "; it said: " + " / ".join(self._stderr)

    def reset_streams(self) -> int:
        streams = list(self.streams)
        for stream in streams:
            stream.abort()
        self.streams.clear()
        return len(streams)

    async def stop(self, grace: float) -> None:
        """Close stdin; after `grace`, SIGTERM; after another `grace`, SIGKILL."""
        self.stopping = True
        process = self.process
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        for send in (process.terminate, process.kill):
            if await self._exits_within(grace):
                break
            with contextlib.suppress(ProcessLookupError):
                send()
        await process.wait()
        await self._drain_readers()
        self.exited.set()
        tasks = [*self.readers, *([self.waiter] if self.waiter is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _exits_within(self, seconds: float) -> bool:
        if self.process.returncode is not None:
            return True
        try:
            async with asyncio.timeout(seconds):
                await self.process.wait()
        except TimeoutError:
            return False
        return True


# Linux task flag: set first thing in do_exit(), before the process's files (its sockets)
# are closed, so it is already visible when a connection's end arrives.
_PF_EXITING = 0x4
_EXIT_NOTICE = 0.1


def _exiting(pid: int) -> bool | None:
    """Whether a process is exiting or gone, from /proc (None where there is no /proc)."""
    if not os.path.isdir("/proc/self"):
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True  # reaped already
    except OSError:
        return None
    # pid (comm) state ppid pgrp session tty_nr tpgid flags ...; comm may hold ") "
    fields = stat[stat.rindex(")") + 2 :].split()
    try:
        return fields[0] in ("Z", "X", "x") or bool(int(fields[6]) & _PF_EXITING)
    except (IndexError, ValueError):
        return None


class _TextLines:
    """stderr as printable lines of bounded length (it is free text, not protocol)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[str]:
        self._buffer += data
        lines = []
        while (newline := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[:newline])
            del self._buffer[: newline + 1]
            if line.strip():
                lines.append(printable(line.decode("utf-8", errors="replace").strip()))
        if len(self._buffer) > 4096:
            lines.append(printable(self._buffer.decode("utf-8", errors="replace")))
            self._buffer.clear()
        return lines
