"""The UI's terminal watch: a hang-up (the signal, or a terminal that stopped answering) ends
the UI once; a live terminal does not."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from helper.tui.terminal import TerminalWatch, terminal_alive

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX terminals")


def test_a_pty_answers_until_its_other_end_closes() -> None:
    master, slave = os.openpty()
    try:
        assert terminal_alive([slave])
        os.close(master)
        assert not terminal_alive([slave])
    finally:
        os.close(slave)


async def test_the_watch_fires_once_when_the_terminal_hangs_up() -> None:
    master, slave = os.openpty()
    fired = asyncio.Event()
    calls: list[int] = []

    def gone() -> None:
        calls.append(1)
        fired.set()

    try:
        async with TerminalWatch(gone, interval=0.01, fds=[slave]) as watch:
            await asyncio.sleep(0.05)
            assert not watch.went_away  # a live terminal is left alone
            os.close(master)
            await asyncio.wait_for(fired.wait(), 10)
            os.kill(os.getpid(), signal.SIGHUP)  # a late signal does not fire again
            await asyncio.sleep(0.05)
        assert watch.went_away and calls == [1]
    finally:
        os.close(slave)


async def test_sighup_fires_the_watch_and_is_released_afterwards() -> None:
    fired = asyncio.Event()
    async with TerminalWatch(fired.set, fds=[]) as watch:
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.wait_for(fired.wait(), 10)
    assert watch.went_away
    assert not asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
