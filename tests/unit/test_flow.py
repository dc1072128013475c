"""A multiplexed stream's flow control (transports/fronted/flow.py), event by event: each
event fed to the machine, and exactly the frames it asks to send. Small windows (8 bytes,
frames of at most 4) keep the byte counts readable; the rules do not depend on the sizes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transports.fronted.flow import (
    MAX_WINDOW,
    WINDOW_SIZE,
    Command,
    Flow,
    SendBlocked,
    SendData,
    SendWindow,
)
from transports.wire import ProtocolError


def out(commands: list[Command]) -> list[tuple[object, ...]]:
    """Commands as the frames they become: ("DATA", bytes), ("WINDOW", n), ("BLOCKED",)."""
    frames: list[tuple[object, ...]] = []
    for command in commands:
        if isinstance(command, SendData):
            frames.append(("DATA", bytes(command.chunk)))
        elif isinstance(command, SendWindow):
            frames.append(("WINDOW", command.increment))
        else:
            assert isinstance(command, SendBlocked)
            frames.append(("BLOCKED",))
    return frames


def small() -> Flow:
    return Flow(window=8, max_window=32, max_data=4)


class Playbook:
    """Events in order, each with the frames it must send: `play(flow, (event, frames), ...)`
    in the manner of mitmproxy's Playbook."""

    def __init__(self, flow: Flow) -> None:
        self.flow = flow

    def __call__(self, *steps: tuple[str, object, list[tuple[object, ...]]]) -> None:
        for number, (event, argument, expected) in enumerate(steps, 1):
            method = getattr(self.flow, event)
            got = out((method() if argument is None else method(argument)) or [])
            assert got == expected, f"step {number}, {event}({argument!r}): {got} != {expected}"


# --- sending ----------------------------------------------------------------------------------


def test_writes_go_out_within_the_window_then_blocked_once() -> None:
    play = Playbook(small())
    play(
        ("write", b"abcdefghij", [("DATA", b"abcd"), ("DATA", b"efgh"), ("BLOCKED",)]),
        ("write", b"k", []),  # still blocked: BLOCKED is not said twice
        ("on_window", 3, [("DATA", b"ij"), ("DATA", b"k")]),  # each write its own frames
        ("write", b"lm", [("BLOCKED",)]),  # a new window was used up: a new BLOCKED
        ("on_window", 8, [("DATA", b"lm")]),
    )


def test_too_much_credit_is_a_protocol_error() -> None:
    flow = small()
    flow.on_window(24)  # up to the largest window the peer may grant
    with pytest.raises(ProtocolError, match="more credit than the window"):
        flow.on_window(1)


def test_a_failed_stream_drops_what_waits() -> None:
    flow = small()
    flow.write(b"x" * 20)
    assert flow.pending == 12
    flow.stop_sending()
    assert flow.pending == 0
    assert out(flow.on_window(8)) == []


# --- receiving --------------------------------------------------------------------------------


def test_credit_is_returned_in_quarter_window_steps() -> None:
    play = Playbook(small())
    play(
        ("on_data", 6, []),
        ("on_read", 1, []),  # 1 of credit: under a quarter of the window
        ("on_read", 1, [("WINDOW", 2)]),
        ("on_read", 3, [("WINDOW", 3)]),
        ("on_read", 1, []),
    )


def test_credit_goes_at_once_when_the_peer_has_no_window_left() -> None:
    flow = Flow(window=64, max_window=64, max_data=64)
    assert out(flow.on_data(64)) == []
    assert out(flow.on_read(1)) == [("WINDOW", 1)]  # the peer is stopped: no waiting for 16


def test_data_beyond_the_window_is_a_protocol_error() -> None:
    flow = small()
    flow.on_data(6)
    with pytest.raises(ProtocolError, match="beyond the window"):
        flow.on_data(3)


def test_the_window_doubles_for_a_reader_that_keeps_up() -> None:
    play = Playbook(small())
    play(
        ("on_data", 8, []),
        ("on_blocked", None, []),  # the reader has not run yet: 8 unread, more than half
        ("on_read", 4, [("WINDOW", 8), ("WINDOW", 4)]),  # caught up: doubled, and the credit
        ("on_data", 12, []),  # all it may send: 16 unread
        ("on_blocked", None, []),
        ("on_read", 16, [("WINDOW", 16), ("WINDOW", 16)]),  # 16 -> 32
        ("on_data", 32, []),
        ("on_blocked", None, []),
        ("on_read", 32, [("WINDOW", 32)]),  # at its largest: only the credit
    )
    assert Flow().window == WINDOW_SIZE and WINDOW_SIZE * 8 == MAX_WINDOW


def test_a_reader_that_stays_behind_never_grows_the_window() -> None:
    flow = small()
    flow.on_data(6)
    for _ in range(3):
        assert out(flow.on_blocked()) == []
    assert out(flow.on_read(1)) == []  # 5 unread: still behind
    assert flow.window == 8


def test_no_credit_after_the_peers_fin() -> None:
    flow = small()
    flow.on_data(8)
    flow.end_receiving()
    assert out(flow.on_read(8)) == []
    assert out(flow.on_blocked()) == []


def test_after_our_reader_left_data_is_credited_at_once() -> None:
    play = Playbook(small())
    play(
        ("on_data", 6, []),
        ("reader_gone", None, []),
        ("on_data", 2, [("WINDOW", 2)]),  # dropped, and credited so the peer can finish
        ("on_data", 0, []),
        ("on_blocked", None, []),  # nothing to grow for
    )
    assert play.flow.buffered == 0


def test_the_sizes_are_checked() -> None:
    with pytest.raises(ValueError):
        Flow(window=0)
    with pytest.raises(ValueError):
        Flow(window=64, max_window=32)


# --- two ends, any schedule -------------------------------------------------------------------


@settings(max_examples=300)
@given(
    st.lists(st.integers(1, 40), min_size=1, max_size=12),
    st.lists(st.sampled_from(["deliver", "read", "credit"]), max_size=300),
    st.integers(1, 9),
)
def test_two_ends_move_every_byte_and_never_overrun(
    writes: list[int], schedule: list[str], read_size: int
) -> None:
    """A sender and a receiver joined by two queues of frames, under any interleaving of
    deliveries and reads: the receiver never sees data beyond its window, never holds more
    than its window unread, and, once the schedule is done and everything is let through,
    every byte arrives in order."""
    sender, receiver = small(), small()
    to_receiver: list[Command] = []
    to_sender: list[Command] = []
    sent = b"".join(bytes([i % 251]) * size for i, size in enumerate(writes))
    for i, size in enumerate(writes):
        to_receiver += sender.write(bytes([i % 251]) * size)
    got = bytearray()
    unread = bytearray()

    def step(action: str) -> None:
        if action == "deliver" and to_receiver:
            command = to_receiver.pop(0)
            if isinstance(command, SendData):
                to_sender.extend(receiver.on_data(len(command.chunk)))
                unread.extend(command.chunk)
            else:
                to_sender.extend(receiver.on_blocked())
        elif action == "read" and unread:
            size = min(read_size, len(unread))
            got.extend(unread[:size])
            del unread[:size]
            to_sender.extend(receiver.on_read(size))
        elif action == "credit" and to_sender:
            command = to_sender.pop(0)
            assert isinstance(command, SendWindow)
            to_receiver.extend(sender.on_window(command.increment))
        assert receiver.buffered == len(unread) <= receiver.window <= receiver.max_window
        assert receiver.recv_window + receiver.buffered + receiver.credit == receiver.window

    for action in schedule:
        step(action)
    for _ in range(10 * len(sent) + 100):
        for action in ("deliver", "read", "credit"):
            step(action)
    assert bytes(got) == sent
    assert sender.pending == 0
