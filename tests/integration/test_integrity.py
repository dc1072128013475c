"""Integrity: 16 MiB each way through every kind of route (64 MiB with DETOUR_FULL_LOAD=1,
4 MiB in `make test`: tests/support/sizes.py),
sha256-checked, and the client's half-close carried end to end where the route can carry it.

Each case runs on both event loops detour uses: asyncio's own and uvloop (when installed)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helper.config import parse_config
from helper.engine import Engine
from tests.conftest import config_text
from tests.reliability import harness
from tests.support import peers
from tests.support.clients import open_http_connect, open_socks5
from tests.support.integrity import run_integrity
from tests.support.sizes import transfer_size

# The default run (make test) and a full run (DETOUR_FULL_LOAD=1) of the load tests below.
FULL_LOAD = os.environ.get("DETOUR_FULL_LOAD", "").strip() not in ("", "0")
# Far more than every buffer on the way (reads of 64-256 KiB, socket buffers of a few
# hundred KiB): a few hundred rounds of each relay loop, each byte checked.
SIZE = transfer_size(16 << 20)

# name -> (peer factory or None, whether the upstream itself passes a half-close on).
# microsocks and tinyproxy close both directions at the first end of stream, so through
# them the exchange announces its length instead of half-closing.
ROUTES: dict[str, tuple[Callable[[], contextlib.AbstractContextManager] | str | None, bool]] = {
    "direct": (None, True),
    # The exchange does not start with a ClientHello, so these step aside after the first
    # write and the relay continues on its fast path: that switch is what they test here.
    "tlsfrag": ("tlsfrag:sni", True),
    "split": ("split:1,5", True),
    "dante": (lambda: peers.danted(), True),
    "microsocks-auth": (lambda: peers.microsocks("alice", "pw-1"), False),
    "tinyproxy": (lambda: peers.tinyproxy(), False),
}


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.new_event_loop
    return asyncio.new_event_loop


@pytest.fixture(params=list(ROUTES))
def route(request: pytest.FixtureRequest) -> Iterator[tuple[str, bool]]:
    make_peer, half_close = ROUTES[request.param]
    if make_peer is None or isinstance(make_peer, str):
        yield make_peer or "direct", half_close
        return
    with make_peer() as peer:
        yield peer.url, half_close


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("inbound", ["socks5", "http-connect"])
def test_mebibytes_each_way_sha256(route, inbound, loop, integrity_origin) -> None:
    chain, half_close = route
    config = parse_config(config_text(routes={"r": chain}, default="r"))
    opener = open_socks5 if inbound == "socks5" else open_http_connect

    async def scenario() -> None:
        async with Engine(config) as engine:
            reader, writer = await opener(engine.mixed_address, "127.0.0.1", integrity_origin.port)
            result = await run_integrity(reader, writer, up=SIZE, down=SIZE, half_close=half_close)
            assert result.received == SIZE
            assert result.ok_down, "bytes from the server arrived altered"
            assert result.ok_up, "the server's digest of what we sent differs, or never came"

    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        runner.run(scenario())


async def test_half_close_small_reply_after_client_eof(start_engine, integrity_origin) -> None:
    """The smallest case: nothing sent, then EOF; the whole reply still arrives."""
    engine = await start_engine(config_text())
    reader, writer = await open_socks5(engine.mixed_address, "127.0.0.1", integrity_origin.port)
    result = await run_integrity(reader, writer, up=0, down=1000)
    assert result.ok


# --- many connections at once -----------------------------------------------------------------
#
# detour, the origin and the front's relay run as processes of their own (tests/reliability/
# harness.py), so the peak memory measured is detour's alone. The default run keeps each route
# to a few seconds (1,000 connections x 64 KiB each way; 16 KiB in make test, the 1,000 at once
# all the same); DETOUR_FULL_LOAD=1 runs the full 1,000 connections x 1 MiB each way.

LOAD_CONNECTIONS = 1000
LOAD_SIZE = transfer_size(64 << 10, full=1 << 20, dev=16 << 10)
LOAD_ROUTES = ["direct", "dante", "tinyproxy", "tlsfrag", "front"]
UNLIMITED_LISTENER = """handshake_timeout = "60s"
max_connections = 0
max_connections_per_client = 0
max_handshakes = 0
max_handshakes_per_client = 0"""


@contextlib.contextmanager
def load_route(name: str, tmp: Path) -> Iterator[tuple[str, bool, str]]:
    """(chain, half-close passes, extra config) for a route of the load test."""
    if name == "direct":
        yield "direct", True, ""
    elif name == "tlsfrag":
        yield "tlsfrag:sni", True, ""
    elif name == "dante":
        with peers.danted() as peer:
            yield peer.url, True, ""
    elif name == "tinyproxy":
        with peers.tinyproxy() as peer:
            yield peer.url, False, ""
    else:
        front = harness.relay(tmp)
        with harness.running(front.process):
            yield front.chain, True, front.tls_extra


@pytest.mark.slow
@pytest.mark.timeout(1800 if FULL_LOAD else 300)
@pytest.mark.parametrize("name", LOAD_ROUTES)
def test_many_connections_at_once_sha256(name: str, tmp_path: Path, record_property) -> None:
    with load_route(name, tmp_path) as (chain, half_close, extra):
        # All 1,000 come from one address: lift the listener's per-client limits (and the
        # handshake timeout: the client's own work can hold its loop for seconds).
        text = config_text(routes={"r": chain}, default="r", extra=extra).replace(
            'handshake_timeout = "2s"', UNLIMITED_LISTENER
        )
        origin = harness.origin(tmp_path)
        detour = harness.detour(tmp_path, text)
        with harness.running(origin, detour):
            with asyncio.Runner(loop_factory=harness.loop_factory()) as runner:
                result = runner.run(
                    harness.run_load(
                        detour.address,
                        origin.address,
                        LOAD_CONNECTIONS,
                        LOAD_SIZE,
                        half_close=half_close,
                    )
                )
            peak = detour.peak_rss()
            assert detour.alive(), detour.output
        assert "Traceback" not in detour.output, detour.output
    report = f"{name}: {result.summary}; detour peak RSS {peak / 2**20:.0f} MiB"
    record_property("load", report)
    print(report)
    assert result.intact == LOAD_CONNECTIONS, report
