#!/usr/bin/env python3
"""UDP through detour, side by side with UDP without it, in one run: a UDP echo of 10,000
datagrams per path, with loss, reordering, round-trip time and datagrams per second; and the
memory one UDP association holds.

    .venv/bin/python benchmarks/udp.py                    # 10,000 datagrams of 1,400 bytes
    .venv/bin/python benchmarks/udp.py --count 2000 --size 200 --window 16
    .venv/bin/python benchmarks/udp.py --json out.json    # also the raw numbers
    .venv/bin/python benchmarks/udp.py --only direct,front,core   # some paths (and plain)
    .venv/bin/python benchmarks/udp.py --only front --burst 8 --unbatched  # the tunnel's batching

Paths (all on loopback; the echo server is a separate process):

    plain            client -> echo (no proxy): the baseline
    detour direct    client -> detour (SOCKS5 UDP ASSOCIATE, route `direct`) -> echo
    dante            client -> danted (UDP ASSOCIATE) -> echo: a real SOCKS5 relay alone
    detour -> dante  client -> detour (route `socks5://dante`) -> danted -> echo
    detour -> front  client -> detour (route `front:`) -> detour relay (in this process,
                     datagrams inside the fronted tunnel) -> echo
    front capped     the same over the byte-capped carriers (`;carrier=capped`)
    ss-server alone  client -> ss-server (Shadowsocks AEAD UDP, chacha20-ietf-poly1305),
                     with detour's packet codec as the client: what the server costs
    detour -> ss     client -> detour (route `ss://`) -> ss-server -> echo
    v2ray alone      client -> v2ray (the core detour started: its SOCKS5 inbound's UDP
                     ASSOCIATE) -> VLESS over TLS -> v2ray server -> echo
    detour -> vless  client -> detour (route `vless://`) -> that core -> v2ray server -> echo

With `--unbatched`, the fronted paths run twice: first with the tunnel's records written each
turn of the event loop as they come (COALESCE_TURNS = 0, as before batching across turns),
then as detour runs them (transports/fronted/datagrams.py's RecordBatch); each fronted row
ends with the datagrams per write the relay sent back (`/write`). `--burst N` sends
the datagrams N at a time, back to back, as a video call sends the packets of one frame.

The client keeps `--window` datagrams in flight (a call sends a few dozen a second; this
sends as fast as the window lets, to find the rate), each carrying its sequence number and
the time it was sent; a datagram not back 2 s after the last was sent is lost. Reordered:
datagrams that came back after one sent later. Every answer is compared byte for byte.
detour runs in this process, in the client's event loop (one core for both: the ratios
matter, not the absolute figures). Needs danted and ss-server (scripts/install-test-peers)
for the dante and Shadowsocks paths, and Debian's v2ray for the core paths; without them
they are skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import struct
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.udp import associate  # noqa: E402
from transports import Endpoint  # noqa: E402

ECHO = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
while True:
    data, addr = s.recvfrom(65535)
    s.sendto(data, addr)
"""


class _Plain(asyncio.DatagramProtocol):
    def __init__(self, queue: asyncio.Queue) -> None:
        self.queue = queue
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.queue.put_nowait(data)


BURST = 1  # datagrams sent back to back (--burst)


async def _run(send, receive, count: int, size: int, window: int) -> dict[str, Any]:
    """Echo `count` datagrams of `size` bytes, `window` in flight, BURST at a time; the
    figures."""
    filler = bytes(range(256)) * (size // 256 + 1)
    rtts: list[float] = []
    arrived: set[int] = set()
    corrupt = reordered = 0
    highest = -1
    credit = asyncio.Semaphore(window)
    done = asyncio.Event()
    last_arrival = time.perf_counter()

    async def reader() -> None:
        nonlocal corrupt, reordered, highest, last_arrival
        while len(arrived) < count:
            data = await receive()
            seq, sent = struct.unpack_from("!Id", data)
            if data[12:] != filler[: size - 12] or seq in arrived:
                corrupt += 1
                continue
            last_arrival = time.perf_counter()
            rtts.append(last_arrival - sent)
            arrived.add(seq)
            if seq < highest:
                reordered += 1
            highest = max(highest, seq)
            credit.release()
        done.set()

    task = asyncio.get_running_loop().create_task(reader())
    started = time.perf_counter()
    burst = max(1, min(BURST, window))
    for seq in range(count):
        if seq % burst == 0:
            for _ in range(min(burst, count - seq)):
                try:
                    async with asyncio.timeout(0.5):  # a lost datagram gives its credit back late
                        await credit.acquire()
                except TimeoutError:
                    pass
        send(struct.pack("!Id", seq, time.perf_counter()) + filler[: size - 12])
    try:
        async with asyncio.timeout(2.0):
            await done.wait()
    except TimeoutError:
        pass
    elapsed = last_arrival - started
    task.cancel()
    rtts.sort()
    return {
        "sent": count,
        "received": len(arrived),
        "lost": count - len(arrived),
        "reordered": reordered,
        "corrupt": corrupt,
        "datagrams_per_s": round(len(arrived) / elapsed) if elapsed else None,
        "rtt_median_us": round(statistics.median(rtts) * 1e6) if rtts else None,
        "rtt_p99_us": round(rtts[int(len(rtts) * 0.99) - 1] * 1e6) if rtts else None,
    }


async def _plain(echo: Endpoint, count: int, size: int, window: int) -> dict[str, Any]:
    queue: asyncio.Queue = asyncio.Queue()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _Plain(queue), remote_addr=(echo.host, echo.port)
    )
    try:
        return await _run(transport.sendto, queue.get, count, size, window)
    finally:
        transport.close()


async def _socks(proxy: tuple[str, int], echo: Endpoint, count: int, size: int, window: int):
    client = await associate(proxy)
    try:

        async def receive() -> bytes:
            return (await client.receive(10.0))[0]

        return await _run(lambda d: client.send(d, echo), receive, count, size, window)
    finally:
        await client.close()


async def _memory_per_association(engine, echo: Endpoint, n: int = 200) -> float:
    """Bytes of Python heap one association holds, with one flow open (tracemalloc)."""
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    clients = []
    for _ in range(n):
        client = await associate(engine.mixed_address)
        await client.echo(b"x", echo)
        clients.append(client)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    for client in clients:
        await client.close()
    return grown / n


PATHS = ("direct", "dante", "front", "ss", "core")  # --only picks among these (plain always)


async def main(args: argparse.Namespace, echo: Endpoint) -> dict[str, Any]:
    from helper.config import parse_config
    from helper.engine import Engine
    from tests.conftest import config_text

    only = set(args.only.split(",")) if args.only else set(PATHS)
    results: dict[str, Any] = {}
    run = (args.count, args.size, args.window)
    results["plain"] = await _plain(echo, *run)
    if "direct" in only:
        import dataclasses

        config = parse_config(config_text(), "benchmark")
        # The memory figure opens 200 associations from one client: no per-client limit.
        listen = dataclasses.replace(config.listen, udp_associations_per_client=0)
        engine = Engine(dataclasses.replace(config, listen=listen), probe_on_start=False)
        await engine.start()
        try:
            results["detour direct"] = await _socks(engine.mixed_address, echo, *run)
            results["memory_per_association_bytes"] = round(
                await _memory_per_association(engine, echo)
            )
        finally:
            await engine.stop()
    if "dante" in only:
        await _skipped_without_peer("dante", _dante(echo, run, results))
    if "front" in only:
        fronted = (
            ("detour -> front", "front unbatched", ""),
            ("front capped", "capped unbatched", ";carrier=capped"),
        )
        for name, unbatched, options in fronted:
            if args.unbatched:  # right before its batched run: the same load for both
                results[unbatched] = await _unbatched(echo, run, options)
            results[name] = await _front(echo, run, options)
    if "ss" in only:
        await _skipped_without_peer("Shadowsocks", _shadowsocks(echo, run, results))
    if "core" in only:
        await _skipped_without_peer("core", _core(echo, run, results))
    return results


async def _unbatched(echo: Endpoint, run: tuple[int, int, int], options: str) -> dict[str, Any]:
    """_front with the tunnel's records written each turn as they come (no batching)."""
    from transports.fronted import datagrams

    batching, datagrams.COALESCE_TURNS = datagrams.COALESCE_TURNS, 0
    try:
        return await _front(echo, run, options)
    finally:
        datagrams.COALESCE_TURNS = batching


async def _skipped_without_peer(what: str, paths) -> None:
    try:
        await paths
    except BaseException as exc:  # the peer is not installed: its paths are skipped
        if type(exc).__name__ not in ("Skipped", "PeerStartError"):
            raise
        print(f"{what} paths skipped: {exc}", file=sys.stderr)


async def _dante(echo: Endpoint, run: tuple[int, int, int], results: dict) -> None:
    from helper.config import parse_config
    from helper.engine import Engine
    from tests.conftest import config_text
    from tests.support import peers

    with peers.danted(udp=True) as dante:
        results["dante"] = await _socks(("127.0.0.1", dante.port), echo, *run)
        routes = {"dante": f"socks5://127.0.0.1:{dante.port}"}
        engine = Engine(parse_config(config_text(routes=routes), "b"), probe_on_start=False)
        await engine.start()
        try:
            results["detour -> dante"] = await _socks(engine.mixed_address, echo, *run)
        finally:
            await engine.stop()


async def _core(echo: Endpoint, run: tuple[int, int, int], results: dict) -> None:
    """A v2ray VLESS server (TLS) on loopback and a `vless://` route to it, with v2ray as
    the core; then the same core's SOCKS5 inbound without detour in front."""
    import tempfile

    from helper.config import parse_config
    from helper.engine import Engine
    from tests.integration.test_core_udp import CASES, USER
    from tests.integration.test_cores import engine_config, server_tls
    from tests.support import peers
    from tests.support.origins import TestCA

    inbound, link = CASES["vless"]
    with tempfile.TemporaryDirectory(prefix="detour-bench-core-") as tmp:
        ca = TestCA(Path(tmp) / "ca")
        stream = dict(inbound["streamSettings"], tlsSettings=server_tls(ca))
        with peers.v2ray_server({**inbound, "streamSettings": stream}) as server:
            text = engine_config(link.format(user=USER, port=server.port), ca, core="v2ray")
            engine = Engine(parse_config(text, "b"), probe_on_start=False)
            await engine.start()
            try:
                results["detour -> vless"] = await _socks(engine.mixed_address, echo, *run)
                [child] = engine.pluggable.children
                core = child.program.inbound
                client = await associate(
                    ("127.0.0.1", core.port), username=core.username, password=core.password
                )
                try:

                    async def receive() -> bytes:
                        return (await client.receive(10.0))[0]

                    results["v2ray alone"] = await _run(
                        lambda d: client.send(d, echo), receive, *run
                    )
                finally:
                    await client.close()
            finally:
                await engine.stop()


async def _front(echo: Endpoint, run: tuple[int, int, int], options: str) -> dict[str, Any]:
    """A relay on loopback (a test CA's certificates) and a `front:` route to it."""
    import tempfile

    from helper.config import ListenConfig
    from helper.proxy import ClientServer, MixedListener
    from helper.proxy.mixed import listen_admission
    from helper.relay.keys import RelayKeys
    from helper.relay.server import RelayServer
    from helper.routing import Route, Router
    from helper.services import ServiceTable
    from tests.integration.test_fronted import relay_config
    from tests.support.origins import TestCA
    from transports import DialOptions, parse_chain
    from transports.guard import AddressPolicy

    with tempfile.TemporaryDirectory(prefix="detour-bench-front-") as tmp:
        ca = TestCA(Path(tmp) / "ca")
        config = relay_config(
            Path(tmp), ca, '[destinations]\nallow = "any"\npublic = ["127.0.0.0/8"]\n'
        )
        keys = RelayKeys(config.state)
        keys.generate()
        relay = RelayServer(config, keys)
        _, port = await relay.start()
        key = keys.add_client("bench", Endpoint("127.0.0.1", port), "relay.test", "relay.test")
        chain = parse_chain("front:" + key.encode() + options)
        dialer = chain.build(DialOptions(tls=ca.client_context(), handshake_timeout=5))
        router = Router([Route("front", chain, dialer)], ServiceTable([]), "front")
        listen = ListenConfig(mixed=Endpoint("127.0.0.1", 0))
        server = ClientServer(router)
        listener = server.add(MixedListener(listen, listen_admission(listen), AddressPolicy()))
        await server.start()
        try:
            result = await _socks(("127.0.0.1", listener.sockets[0][1]), echo, *run)
            counters = relay.udp.counters  # the relay's writes toward the client: batching
            result["datagrams_per_write_down"] = round(counters.down / counters.writes_down, 2)
            return result
        finally:
            await server.stop()
            await dialer.aclose()
            await relay.stop(grace=0.5)


async def _ss_alone(server: Endpoint, key, echo: Endpoint, run: tuple[int, int, int]):
    """Shadowsocks UDP straight to ss-server with detour's codec: the server's share."""
    from transports.shadowsocks.udp import ClientPackets

    packets = ClientPackets(key)
    queue: asyncio.Queue = asyncio.Queue()

    class _Opened(_Plain):
        def datagram_received(self, data: bytes, addr) -> None:
            self.queue.put_nowait(packets.open(data)[1])

    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _Opened(queue), remote_addr=(server.host, server.port)
    )
    try:
        transport.sendto(packets.seal(echo, b"warm-up" + bytes(5)))  # the server binds
        await asyncio.wait_for(queue.get(), 5)
        return await _run(lambda d: transport.sendto(packets.seal(echo, d)), queue.get, *run)
    finally:
        transport.close()


async def _shadowsocks(echo: Endpoint, run: tuple[int, int, int], results: dict) -> None:
    from helper.config import parse_config
    from helper.engine import Engine
    from tests.conftest import config_text
    from tests.support import peers
    from transports.shadowsocks.server import shadowsocks_server

    method, password = "chacha20-ietf-poly1305", "benchmark-secret"
    with peers.ss_server(method, password, udp=True) as ss:
        server = shadowsocks_server("127.0.0.1", ss.port, method, password)
        results["ss-server alone"] = await _ss_alone(server.address, server.key, echo, run)
        routes = {"ss": peers.ss_link(ss)}
        engine = Engine(
            parse_config(config_text(routes=routes, default="ss"), "b"), probe_on_start=False
        )
        await engine.start()
        try:
            results["detour -> ss"] = await _socks(engine.mixed_address, echo, *run)
        finally:
            await engine.stop()


def _table(results: dict[str, Any], args: argparse.Namespace) -> str:
    base = results["plain"]
    lines = [
        f"UDP echo: {args.count} datagrams of {args.size} bytes, {args.window} in flight"
        + (f", {args.burst} at a time" if args.burst > 1 else ""),
        f"{'path':16} {'lost':>6} {'reord':>6} {'bad':>4} {'dgram/s':>8} {'rate':>6} "
        f"{'rtt med':>8} {'p99':>8} {'+rtt':>7}",
    ]
    for name, r in results.items():
        if not isinstance(r, dict):
            continue
        ratio = r["datagrams_per_s"] / base["datagrams_per_s"] if base["datagrams_per_s"] else 0
        extra = (r["rtt_median_us"] or 0) - (base["rtt_median_us"] or 0)
        lines.append(
            f"{name:16} {r['lost']:>6} {r['reordered']:>6} {r['corrupt']:>4} "
            f"{r['datagrams_per_s']:>8} {ratio:>5.2f}x {r['rtt_median_us']:>6}us "
            f"{r['rtt_p99_us']:>6}us {extra:>+5}us"
            + (
                f"  {r['datagrams_per_write_down']:.2f}/write"
                if "datagrams_per_write_down" in r
                else ""
            )
        )
    if "memory_per_association_bytes" in results:
        lines.append(
            f"memory per association (one flow): {results['memory_per_association_bytes']} bytes"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=1400)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--burst", type=int, default=1, help="datagrams sent back to back")
    parser.add_argument(
        "--unbatched", action="store_true", help="the fronted paths without batching too"
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--only", help=f"comma-separated paths among {', '.join(PATHS)}")
    arguments = parser.parse_args()
    if arguments.size < 12:
        parser.error("--size must be at least 12 (sequence number and time)")
    if arguments.burst < 1:
        parser.error("--burst must be at least 1")
    BURST = arguments.burst
    os.environ.setdefault("DETOUR_STATE_DIR", "/tmp/detour-benchmark-udp")
    echo_process = subprocess.Popen([sys.executable, "-c", ECHO], stdout=subprocess.PIPE, text=True)
    assert echo_process.stdout is not None
    try:
        echo_at = Endpoint("127.0.0.1", int(echo_process.stdout.readline()))
        figures = asyncio.run(main(arguments, echo_at))
    finally:
        echo_process.kill()
        echo_process.wait()
    print(_table(figures, arguments))
    if arguments.json:
        arguments.json.write_text(json.dumps(figures, indent=2))
