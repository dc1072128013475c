"""Flow control of one stream in a multiplexed tunnel (mux.py), both directions, sans-IO:
events in (the app wrote, the reader took, the peer sent DATA, WINDOW or BLOCKED), frames to
send out (DATA, WINDOW, BLOCKED) as commands. No clocks, no sockets: tests/unit/test_flow.py
feeds it events one by one and checks each command.

Receiving. The peer may have at most `window` bytes of the stream sent and not yet read
here (`recv_window` is what it may still send). As the reader takes bytes, they become
credit, returned to the peer as a WINDOW frame once it reaches a step (a quarter of the
window: fewer frames) or at once when the peer has nothing left to send. The window starts
at WINDOW_SIZE and doubles, up to MAX_WINDOW, when the peer reports itself BLOCKED while the
reader keeps up (at most half the window waiting unread): then the window, not the reader,
limits the stream (a long or busy path). The DATA that used up the window usually arrives
with the BLOCKED, before the reader has run, so a BLOCKED is remembered until the reader has
caught up. A reader that stays behind never grows the window, so a stalled app holds at most
the window it had.

Sending. What the app writes waits in `outgoing` until the peer's window lets it go, in
DATA frames of at most `max_data`. A sender with data and no window says BLOCKED, once per
window it was given.

After the peer's FIN (or a failure) no more credit is given: nothing more may come. After our
reader has gone (`reader_gone`), what still arrives is dropped and credited at once, so a
peer finishing its sending is not stuck (the stream tells it to stop once ours has gone).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ..wire import ProtocolError
from .frames import MAX_DATA

__all__ = ["MAX_WINDOW", "WINDOW_SIZE", "Command", "Flow", "SendBlocked", "SendData", "SendWindow"]

WINDOW_SIZE = 512 * 1024  # per stream and direction: unread bytes the peer may send, at first
MAX_WINDOW = 4 * 1024 * 1024  # ... and at most, once grown for a reader that keeps up


@dataclass(frozen=True, slots=True)
class SendData:
    chunk: memoryview


@dataclass(frozen=True, slots=True)
class SendWindow:
    increment: int


@dataclass(frozen=True, slots=True)
class SendBlocked:
    pass


Command = SendData | SendWindow | SendBlocked


class Flow:
    """One stream's windows, credit and outgoing queue. Each event returns the frames to
    send, in order; a peer that breaks the rules raises ProtocolError."""

    def __init__(
        self,
        *,
        window: int = WINDOW_SIZE,
        max_window: int = MAX_WINDOW,
        max_data: int = MAX_DATA,
    ) -> None:
        if not 0 < window <= max_window or max_data < 1:
            raise ValueError("flow control needs 0 < window <= max_window and max_data > 0")
        self.max_window = max_window
        self.max_data = max_data
        # receiving
        self.window = window  # our receive window: grows for a reader that keeps up
        self.recv_window = window  # what the peer may still send
        self.buffered = 0  # received, not yet read (counts against the window)
        self.credit = 0  # read, not yet returned to the peer
        self.peer_blocked = False  # the peer said BLOCKED; the window may grow
        self.receiving = True  # until the peer's FIN or a failure: credit flows
        self.reading = True  # until our reader is gone
        # sending
        self.send_window = window  # what we may still send
        self.outgoing: deque[memoryview] = deque()
        self.blocked_sent = False  # BLOCKED is out for the window we have now

    def __repr__(self) -> str:
        return (
            f"Flow(window={self.window}, recv_window={self.recv_window}, "
            f"buffered={self.buffered}, credit={self.credit}, send_window={self.send_window}, "
            f"outgoing={self.pending})"
        )

    # --- receiving ------------------------------------------------------------------------

    def on_data(self, size: int) -> list[Command]:
        """The peer sent `size` bytes of DATA."""
        if size > self.recv_window:
            raise ProtocolError("data beyond the window")
        if not self.reading:  # nobody will read them: taken and credited at once
            return [SendWindow(size)] if size else []
        self.recv_window -= size
        self.buffered += size
        return []

    def on_read(self, size: int) -> list[Command]:
        """Our reader took `size` of the buffered bytes."""
        self.buffered -= size
        self.credit += size
        if not self.receiving:
            return []
        commands = self._grow()
        if self.credit >= self.credit_step() or self.recv_window == 0:
            credit, self.credit = self.credit, 0
            self.recv_window += credit
            commands.append(SendWindow(credit))
        return commands

    def credit_step(self) -> int:
        """Credit is returned in steps of this much (fewer WINDOW frames)."""
        return self.window // 4

    def on_blocked(self) -> list[Command]:
        """The peer has more to send than our window lets it."""
        self.peer_blocked = True
        return self._grow()

    def _grow(self) -> list[Command]:
        if not self.peer_blocked or self.buffered > self.window // 2:
            return []
        self.peer_blocked = False
        if self.window >= self.max_window or not self.receiving or not self.reading:
            return []
        grown = min(self.window * 2, self.max_window)
        extra, self.window = grown - self.window, grown
        self.recv_window += extra
        return [SendWindow(extra)]

    def end_receiving(self) -> None:
        """The peer's direction has ended (FIN), or the stream failed: no more credit."""
        self.receiving = False

    def reader_gone(self) -> None:
        """Our reader will read no more (close): what is buffered is dropped."""
        self.reading = False
        self.buffered = 0

    # --- sending --------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Bytes written and not yet sent."""
        return sum(len(chunk) for chunk in self.outgoing)

    def write(self, data: bytes) -> list[Command]:
        """The app wrote `data` (not empty)."""
        self.outgoing.append(memoryview(data))
        return self._pump()

    def on_window(self, increment: int) -> list[Command]:
        """The peer gave `increment` more credit."""
        if self.send_window + increment > self.max_window:
            raise ProtocolError("more credit than the window")
        self.send_window += increment
        self.blocked_sent = False
        return self._pump()

    def stop_sending(self) -> None:
        """The stream failed or was aborted: what waits is dropped."""
        self.outgoing.clear()

    def _pump(self) -> list[Command]:
        commands: list[Command] = []
        outgoing = self.outgoing
        while outgoing and self.send_window > 0:
            chunk = outgoing[0]
            size = min(len(chunk), self.send_window, self.max_data)
            if size == len(chunk):
                outgoing.popleft()
            else:
                outgoing[0] = chunk[size:]
                chunk = chunk[:size]
            self.send_window -= size
            commands.append(SendData(chunk))
        if outgoing and not self.blocked_sent:
            self.blocked_sent = True
            commands.append(SendBlocked())
        return commands
