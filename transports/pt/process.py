"""Pluggable transport clients as child processes, managed the way Tor manages them (PT 1.0),
on the shared child-process machinery (transports/children.py: started on first use,
shared, restarted with backoff, stopped in order).

A PT child is keyed by its program, transport and upstream proxy. Its stdout is the PT
protocol: the launch (VERSION ... CMETHODS DONE, bounded by a timeout), then LOG and STATUS
lines, which go to the log at debug level. Stopping closes stdin first, which a PT started
with TOR_PT_EXIT_ON_STDIN_CLOSE=1 takes as the signal to exit.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..base import DialError, Failure, Op
from ..children import (
    ChildManager,
    ChildRun,
    Launched,
    LaunchFailed,
    LaunchWatch,
    ManagedChild,
    Program,
    _exiting,
)
from .ipc import (
    CMethod,
    Launch,
    LineReader,
    Log,
    Malformed,
    Message,
    Status,
    Unknown,
    client_environment,
    printable,
)

__all__ = ["ClientRun", "ManagedClient", "PtManager", "PtProgram"]

log = logging.getLogger("detour.pt")

# The shared machinery under the names the pt layer has always used.
ManagedClient = ManagedChild
ClientRun = ChildRun
_ = _exiting  # re-exported: tests read /proc through it


@dataclass(frozen=True)
class ClientKey:
    binary: str
    transport: str
    proxy: str | None  # TOR_PT_PROXY (with credentials: never shown)
    state: Path


class PtProgram(Program):
    """A PT client program for one transport (and upstream proxy)."""

    log = log
    not_installed = Failure.PT_NOT_INSTALLED
    failed = Failure.PT_FAILED

    def __init__(self, key: ClientKey) -> None:
        self.key = key
        self.name = f"{key.transport} client ({os.path.basename(key.binary)})"

    def prepare(self) -> None:
        try:
            self.key.state.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise DialError(
                Failure.PT_FAILED,
                Op.CONNECT,
                f"cannot create the {self.name}'s state directory {self.key.state}: {exc.strerror}",
            ) from None

    def argv(self) -> list[str]:
        return [self.key.binary]

    def environment(self) -> dict[str, str]:
        return client_environment(self.key.transport, self.key.state, self.key.proxy)

    def cwd(self) -> Path:
        return self.key.state

    def watch(self, run: ChildRun) -> LaunchWatch:
        return _PtWatch(run, Launch(self.key.transport, proxy=self.key.proxy is not None))


class _PtWatch(LaunchWatch):
    """The PT's stdout: its launch messages decide the launch, the rest is logged."""

    def __init__(self, run: ChildRun, launch: Launch) -> None:
        self._run = run
        self._launch = launch
        self._reader = LineReader()

    def stdout(self, data: bytes) -> None:
        for message in self._reader.feed(data):
            self._message(message)

    def stdout_eof(self) -> None:
        for message in self._reader.eof():
            self._message(message)

    def _message(self, message: Message) -> None:
        run = self._run
        if not run.launched.done():
            outcome = self._launch.feed(message)
            if isinstance(outcome, CMethod):
                run.decide(_Method(outcome.protocol, outcome.address, outcome.transport))
            elif outcome is not None:
                run.decide(LaunchFailed(outcome.reason))
        name = run.name
        match message:
            case Log(severity, text):
                log.debug("%s: %s %s", name, severity.lower() or "log", text)
            case Status(transport, fields):
                shown = " ".join(f"{k}={v}" for k, v in fields)
                log.debug("%s: status %s %s", name, transport, shown)
            case Malformed(reason):
                log.debug("%s wrote a line that is not PT protocol: %s", name, reason)
            case Unknown(keyword):
                log.debug("%s: ignored %s line", name, printable(keyword, 40))


@dataclass(frozen=True)
class _Method(Launched):
    """A CMETHOD: where the PT takes SOCKS requests, for which transport."""

    transport: str = ""


class PtManager(ChildManager):
    """Every PT child of one engine (and, through the same machinery, every proxy core:
    transports/core). `state_dir` is where their TOR_PT_STATE_LOCATION directories go (one
    per transport unless a layer gives state=); without one, a private temporary directory
    is used and removed at close."""

    def state_for(self, transport: str, state: str | None) -> Path:
        if state is not None:
            return Path(state).expanduser().absolute()
        return self.state_path(transport)

    def client(
        self, binary: str, transport: str, proxy: str | None = None, state: str | None = None
    ) -> ManagedChild:
        """The child for this program, transport and proxy (made now, started on first use)."""
        if self._closed:
            raise DialError(Failure.PT_FAILED, Op.CONNECT, "detour is shutting down")
        key = ClientKey(binary, transport, proxy, self.state_for(transport, state))
        return self.child(PtProgram(key))

    @property
    def clients(self) -> list[ManagedChild]:
        return self.children
