"""`detour add` against a running detour: the route lands in the file and, through the
reload the running process is asked for (helper/instances.py), in the running router at
once; new connections of the service take it. A real detour process and a real SOCKS5
proxy (microsocks)."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

from helper.cli import main
from helper.instances import running
from tests.support import peers

from .test_operations import echo_through, ops_config, start_detour  # noqa: F401

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


async def registered(config, bound: float = 30.0) -> list[int]:
    deadline = time.monotonic() + bound
    # (another process's file in the state directory: no event to wait on)
    while not (pids := [i.pid for i in running(config)]) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    return pids


async def test_an_added_route_is_used_without_a_restart(
    start_detour,  # noqa: F811
    echo_origin,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with peers.microsocks() as proxy:
        detour = start_detour(ops_config({"a": "direct"}))
        text = detour.config.read_text()
        # The process records itself just after its listeners are up: wait for the record.
        assert await registered(detour.config) == [detour.process.pid]
        await echo_through(detour.address, echo_origin.port)
        assert main(["add", "-c", str(detour.config), "--service", "local", proxy.url]) == 0
        out = capsys.readouterr().out
        assert f"(pid {detour.process.pid}) reloads it" in out
        # The file's lines stay, in order: one line went into its [[service]], a block at
        # its end.
        new_lines = iter(detour.config.read_text().splitlines())
        assert all(line in new_lines for line in text.splitlines())
        assert 'routes = ["socks5-127.0.0.1", "..."]' in detour.config.read_text()
        await detour.wait_log("reloaded")
        assert "new connections use routes: a, socks5-127.0.0.1" in detour.output
        await echo_through(detour.address, echo_origin.port)
        assert f"connected to 127.0.0.1:{echo_origin.port}" in proxy.logs()
        detour.signal(15)
        assert await detour.exit_code() == 0
        assert running(detour.config) == []
