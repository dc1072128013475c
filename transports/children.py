"""Programs detour runs as child processes and talks SOCKS to: a pluggable transport's client
(transports/pt), a proxy core such as xray, sing-box or v2ray (transports/core).

One `ChildManager` per engine owns every child. A child is started on first use and shared
by every route that needs the same `Program` (equal programs have equal keys). What differs
between kinds of programs is the `Program`: its command, environment and files, and how its
launch is watched until it says where its SOCKS port is (a PT prints CMETHOD lines; a core
is ready when the port it was given accepts connections). The rest is shared:

- stdout and stderr are read for the child's whole life; stderr (and what stdout carries
  that is not protocol) goes to the debug log, and its last lines are kept for the message
  when the child fails;
- when a child exits on its own, every connection that went through it is reset (so no
  client mistakes a cut transfer for a complete one), and the next connection starts it
  again; a child that keeps failing is restarted with exponential backoff, and a connection
  that arrives during the wait gets the last failure at once instead of hanging;
- stopping closes stdin, then sends SIGTERM after a grace period, then SIGKILL.
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
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Coroutine, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import DialError, Endpoint, Failure, Op, Stream
from .wrapped import WrappedStream

__all__ = [
    "ChildManager",
    "ChildRun",
    "ChildStream",
    "LaunchFailed",
    "LaunchWatch",
    "Launched",
    "ManagedChild",
    "Program",
    "printable",
]

START_TIMEOUT = 10.0
STOP_GRACE = 2.0  # after closing stdin, before SIGTERM; again before SIGKILL
# A child that ran this long before it exited counts as having worked: no backoff.
HEALTHY_AFTER = 30.0
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
_STDERR_KEPT = 5
_SHOWN = 300


def printable(text: str, limit: int = _SHOWN) -> str:
    """A child's text made safe for one log line: control characters escaped, length capped."""
    import re

    text = re.sub(r"[\x00-\x1f\x7f-\x9f]", lambda m: f"\\x{ord(m.group(0)):02x}", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class Launched:
    """Where the child takes SOCKS requests."""

    protocol: str  # "socks5" or "socks4"
    address: Endpoint


@dataclass(frozen=True)
class LaunchFailed:
    reason: str  # completes "the obfs4 client ...": "answered VERSION-ERROR: no-version"


class Program(ABC):
    """One kind of child: what to run and how to tell that it is ready.

    `key` decides sharing: routes whose programs have equal keys share one child. The
    failures of a kind of program are reported as `not_installed` / `failed`.
    """

    name: str  # "obfs4 client (obfs4proxy)": in every message about the child
    key: Hashable
    log: logging.Logger
    not_installed: Failure = Failure.PT_NOT_INSTALLED
    failed: Failure = Failure.PT_FAILED

    @abstractmethod
    def prepare(self) -> None:
        """Make its directories and files; raise DialError(failed) when that fails."""

    @abstractmethod
    def argv(self) -> list[str]: ...

    @abstractmethod
    def environment(self) -> dict[str, str]: ...

    @abstractmethod
    def cwd(self) -> Path: ...

    @abstractmethod
    def watch(self, run: ChildRun) -> LaunchWatch:
        """A fresh watcher for one run's launch."""


class LaunchWatch:
    """Watches one launch: fed the child's stdout; `run.decide()` ends the launch."""

    def stdout(self, data: bytes) -> None:
        """Bytes from the child's stdout (protocol or log)."""

    def stdout_eof(self) -> None:
        """The child closed its stdout."""

    async def poll(self) -> None:
        """Runs beside the readers until the launch is decided (for programs that say
        nothing when ready: wait for their port). The default waits for stdout alone."""
        return


class ChildManager:
    """Every child of one engine. `state_dir` is where their state directories go; without
    one, a private temporary directory is used and removed at close."""

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
        self._children: dict[Hashable, ManagedChild] = {}
        self._closed = False

    def state_path(self, name: str) -> Path:
        """Where a child kind keeps its state (`name` is a directory name)."""
        if self._state_dir is None:
            if self._temporary is None:
                self._temporary = Path(tempfile.mkdtemp(prefix="detour-children-"))
            return self._temporary / name
        return self._state_dir / name

    def child(self, program: Program) -> ManagedChild:
        """The child for this program (made now, started on first use)."""
        if self._closed:
            raise DialError(program.failed, Op.CONNECT, "detour is shutting down")
        child = self._children.get(program.key)
        if child is None:
            child = self._children[program.key] = ManagedChild(program, self)
        return child

    @property
    def children(self) -> list[ManagedChild]:
        return list(self._children.values())

    async def forget(self, child: ManagedChild) -> None:
        """Stop one child and forget it: no route uses it any more (a reload removed it).
        A later dial for the same key makes a new one."""
        if self._children.get(child.key) is child:
            del self._children[child.key]
        await child.stop()

    async def aclose(self) -> None:
        """Stop every child (stdin closed, then SIGTERM, then SIGKILL) and forget them."""
        self._closed = True
        await asyncio.gather(*(child.stop() for child in self._children.values()))
        self._children.clear()
        if self._temporary is not None:
            shutil.rmtree(self._temporary, ignore_errors=True)
            self._temporary = None


class ManagedChild:
    """One program; (re)started on demand."""

    def __init__(self, program: Program, manager: ChildManager) -> None:
        self.program = program
        self.key = program.key
        self.name = program.name
        self._manager = manager
        self._log = program.log
        self._child: ChildRun | None = None
        self._starting: asyncio.Future[ChildRun] | None = None
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

    async def method(self) -> tuple[Launched, ChildRun]:
        """Where to send SOCKS requests, starting the program if it is not running."""
        failed = self.program.failed
        if self._stopped:  # a dial that began before the engine stopped starts nothing
            raise DialError(failed, Op.CONNECT, "detour is shutting down")
        child = self._child
        if child is not None and not child.gone():
            assert child.method is not None
            return child.method, child
        if self._starting is None:
            wait = self._next_start - time.monotonic()
            if wait > 0 and self._last_error is not None:
                raise DialError(
                    failed,
                    Op.CONNECT,
                    f"{self._last_error}; it failed {self._failures} times in a row, next "
                    f"start in {wait:.1f} s",
                )
            self._starting = self._spawn(self._start(), f"detour-child-start-{self.name}")
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

    async def _start(self) -> ChildRun:
        try:
            child = await self._launch()
        except DialError as exc:
            self._failed(exc.detail)
            raise
        finally:
            self._starting = None
        self._child = child
        self._spawn(self._supervise(child), f"detour-child-{child.process.pid}")
        return child

    async def _launch(self) -> ChildRun:
        program = self.program
        program.prepare()
        binary = program.argv()[0]
        try:
            process = await asyncio.create_subprocess_exec(
                *program.argv(),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=program.environment(),
                cwd=program.cwd(),
                # Its own session: a Ctrl-C in detour's terminal is detour's to handle, and
                # detour then stops the child in order.
                start_new_session=os.name == "posix",
            )
        except FileNotFoundError:
            raise DialError(program.not_installed, Op.CONNECT, f"{binary} does not exist") from None
        except OSError as exc:
            raise DialError(
                program.failed, Op.CONNECT, f"cannot run {binary}: {exc.strerror or exc}"
            ) from None
        self.starts += 1
        child = ChildRun(process, program)
        child.readers = [
            self._spawn(child.read_stdout(), f"detour-child-stdout-{process.pid}"),
            self._spawn(child.read_stderr(), f"detour-child-stderr-{process.pid}"),
        ]
        child.waiter = self._spawn(child.wait_exit(), f"detour-child-wait-{process.pid}")
        poller = self._spawn(child.watch.poll(), f"detour-child-poll-{process.pid}")
        self._log.debug("started %s, pid %d", self.name, process.pid)
        try:
            async with asyncio.timeout(self._manager.start_timeout):
                outcome = await child.launched
        except TimeoutError:
            await child.stop(0.0)
            raise DialError(
                program.failed,
                Op.CONNECT,
                f"the {self.name} did not report its SOCKS port within "
                f"{self._manager.start_timeout:g} s{child.stderr_tail()}",
            ) from None
        except BaseException:
            await child.stop(0.0)
            raise
        finally:
            poller.cancel()
        if isinstance(outcome, LaunchFailed):
            await child.stop(self._manager.stop_grace)
            raise DialError(
                program.failed, Op.CONNECT, f"the {self.name} {outcome.reason}{child.stderr_tail()}"
            )
        child.method = outcome
        child.started_at = time.monotonic()
        self._log.info("%s ready: %s on %s", self.name, outcome.protocol, outcome.address)
        return child

    async def _supervise(self, child: ChildRun) -> None:
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
        self._log.warning(
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

    def track(self, child: ChildRun, stream: Stream) -> None:
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


class ChildRun:
    """One run of the program: its process, output readers and launch state."""

    def __init__(self, process: asyncio.subprocess.Process, program: Program) -> None:
        self.process = process
        self.name = program.name
        self.program = program
        self.log = program.log
        self.launched: asyncio.Future[Launched | LaunchFailed] = (
            asyncio.get_running_loop().create_future()
        )
        self.method: Launched | None = None
        self.started_at = time.monotonic()
        self.exited = asyncio.Event()
        self.stopping = False
        self.readers: list[asyncio.Task[None]] = []
        self.waiter: asyncio.Task[None] | None = None
        self.streams: weakref.WeakSet[Stream] = weakref.WeakSet()
        self._stderr: deque[str] = deque(maxlen=_STDERR_KEPT)
        self.watch = program.watch(self)

    def decide(self, outcome: Launched | LaunchFailed) -> None:
        """End the launch (the first decision stands)."""
        if not self.launched.done():
            self.launched.set_result(outcome)

    def keep_line(self, line: str) -> None:
        """A line of the child's free text (stderr, a core's log): logged, the last kept."""
        self._stderr.append(line)
        self.log.debug("%s: %s", self.name, line)

    async def read_stdout(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        try:
            while data := await stdout.read(65536):
                self.watch.stdout(data)
        except (OSError, ValueError):
            pass  # the pipe broke: the process is gone, which wait() below reports
        self.watch.stdout_eof()

    async def read_stderr(self) -> None:
        stderr = self.process.stderr
        assert stderr is not None
        reader = TextLines()
        try:
            while data := await stderr.read(65536):
                for line in reader.feed(data):
                    self._stderr.append(line)
                    self.log.debug("%s stderr: %s", self.name, line)
        except (OSError, ValueError):
            pass

    async def wait_exit(self) -> None:
        code = await self.process.wait()
        await self._drain_readers()
        how = f"killed by signal {-code}" if code < 0 else f"status {code}"
        self.decide(LaunchFailed(f"exited ({how}) before it was ready"))
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


class ChildStream(WrappedStream):
    """A connection through a child. Its end of stream counts only while the child lives:
    a child that crashes closes its sockets like a normal end (FIN), and a client must not
    take a cut transfer for a complete one, so that end becomes a reset.

    The relay copies these streams itself (no transport fast path), so that it sees every
    end of stream through `read`; the child costs far more per byte than that copy.
    """

    def __init__(self, inner: Stream, child: ChildRun) -> None:
        super().__init__(inner)
        self._child = child

    async def read(self, n: int = 65536) -> bytes:
        data = await self.inner.read(n)
        if not data and await self._child.ended():
            raise ConnectionResetError(f"the {self._child.name} exited")
        return data

    def raw_socket_stream(self) -> None:
        return None


class TextLines:
    """Free text (stderr, a log) as printable lines of bounded length."""

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


async def wait_for_port(address: Endpoint, run: ChildRun, interval: float = 0.02) -> None:
    """Decide `run`'s launch once `address` accepts a TCP connection (for programs that
    are given their port and say nothing when ready)."""
    host, port = address.host, address.port
    while not run.launched.done():
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(interval)
            interval = min(interval * 1.5, 0.2)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        run.decide(Launched("socks5", address))
        return
