#!/usr/bin/env python3
"""Telegram through `tgws` against Telegram direct, side by side: throughput both ways and
the added connection set-up, in one run.

    .venv/bin/python benchmarks/telegram.py                 # 256 MiB each way, 3 rounds
    .venv/bin/python benchmarks/telegram.py --size 1G --repeat 5 --json tg.json

What runs, each in its own process:

* this script is the client: blocking sockets, a SOCKS5 handshake of its own, then an
  MTProto stream as Telegram's apps send it -- an obfuscated2 init, then intermediate
  packets of 512 KiB (a file part's size) whose length fields are encrypted at their offsets
  (tgws reads them to cut the stream into messages); their payload is random bytes, which is
  what encrypted ones look like;
* a "DC" process (this file with --serve) that answers on two listeners: plain TCP (what
  the `direct` route reaches; threads with blocking sockets, as the relay benchmark's sink)
  and TLS with a WebSocket on /apiws (a web endpoint, what the `tgws` route reaches; uvloop
  with aiohttp's WebSocket server). Each decrypts the first
  packet (mode and size), then counts what it receives (upload, acknowledging the count) or
  sends the size asked for (download), or echoes (connection set-up);
* detour twice: one `direct` route, and one `tgws` route to that web endpoint (`addr=`, a
  throw-away CA in `[tls] extra_ca`), both on uvloop.

The ratio tgws / direct is the figure: the same client and the same DC process, only the
route differs -- TLS and WebSocket framing in detour, and the endpoint's TLS and WebSocket
in the DC process (as Telegram's own web endpoint adds them), on the same cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.relay import (  # noqa: E402
    HOST,
    MB,
    START_TIMEOUT,
    Timeout,
    machine_info,
    median,
    own_cpu_seconds,
    parse_size,
    percentile,
    process_cpu_seconds,
    recv_exact,
    run_detour,
    socks5_connect,
    started,
)
from transports.mtproto import Keystream, Tag, accept, initiate  # noqa: E402

PACKET = 512 * 1024  # payload per MTProto packet: an upload's file part
MODE_SINK, MODE_SOURCE, MODE_ECHO = 1, 2, 3
WEB_NAME = "kws2.web.telegram.org"


# ------------------------------------------------------------------------------------------
# the DC process
# ------------------------------------------------------------------------------------------


def _first_packet(init: bytes, first: bytes) -> tuple[int, int, int]:
    """(mode, size, bytes of the first packet) from the bytes after the init."""
    _, obfuscation = accept(init)
    plain = obfuscation.decrypt(first[:13])
    length = struct.unpack("<I", plain[:4])[0]
    mode, size = plain[4], struct.unpack("<Q", plain[5:13])[0]
    return mode, size, 4 + length


def _serve_tcp(conn: socket.socket) -> None:
    """The DC itself, on a thread with blocking sockets (a loop at C speed, as the relay
    benchmark's sink): what the `direct` route reaches."""
    with conn:
        try:
            init, first = recv_exact(conn, 64), recv_exact(conn, 16)
            mode, size, _ = _first_packet(init, first)
            buf = memoryview(bytearray(1 << 20))
            if mode == MODE_ECHO:
                while n := conn.recv_into(buf):
                    conn.sendall(buf[:n])
                return
            if mode == MODE_SOURCE:
                block = memoryview(os.urandom(PACKET))
                left = size
                while left:
                    n = min(left, PACKET)
                    conn.sendall(block[:n])
                    left -= n
                while conn.recv_into(buf):  # until the client closes
                    pass
                return
            got = 0
            while got < size and (n := conn.recv_into(buf, min(len(buf), size - got))):
                got += n
            conn.sendall(struct.pack("!Q", got))
            while conn.recv_into(buf):
                pass
        except (OSError, ConnectionError):
            pass


def _accept_forever(listener: socket.socket) -> None:
    while True:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_serve_tcp, args=(conn,), daemon=True).start()


async def _serve_ws(request: Any) -> Any:
    from aiohttp import WSMsgType, web

    ws = web.WebSocketResponse(protocols=("binary",), max_msg_size=8 << 20)
    await ws.prepare(request)
    init = (await ws.receive()).data
    first = await ws.receive()
    mode, size, _ = _first_packet(init, first.data)
    if mode == MODE_ECHO:
        async for message in ws:
            if message.type == WSMsgType.BINARY:
                await ws.send_bytes(message.data)
        return ws
    if mode == MODE_SOURCE:
        block = os.urandom(PACKET)
        left = size
        while left:
            n = min(left, PACKET)
            await ws.send_bytes(block[:n])
            left -= n
        async for _ in ws:
            pass
        return ws
    got = 0
    async for message in ws:
        got += len(message.data)
        if got >= size:
            break
    await ws.send_bytes(struct.pack("!Q", got))
    async for _ in ws:
        pass
    return ws


def serve_main(cert: str, key: str) -> None:
    """`telegram.py --serve CERT KEY`: print "PORTS TCP WSS", serve until stdin closes."""
    import ssl

    from aiohttp import web

    with contextlib.suppress(ImportError):
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()

    tcp = socket.create_server((HOST, 0), backlog=1024)
    threading.Thread(target=_accept_forever, args=(tcp,), daemon=True).start()

    async def main() -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        app = web.Application()
        app.router.add_get("/apiws", _serve_ws)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, HOST, 0, ssl_context=context)
        await site.start()
        ports = (tcp.getsockname()[1], runner.addresses[0][1])
        sys.stdout.write(f"PORTS {ports[0]} {ports[1]}\n")
        sys.stdout.flush()
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        os._exit(0)

    asyncio.run(main())


# ------------------------------------------------------------------------------------------
# the client
# ------------------------------------------------------------------------------------------


class MTProtoClient:
    """An obfuscated2 stream of intermediate packets whose length fields are encrypted where
    they lie; payloads are sent as they are (random bytes)."""

    def __init__(self) -> None:
        self.init, obfuscation = initiate(Tag.INTERMEDIATE, 2)
        self.keystream: Keystream = obfuscation.send
        self.offset = 64  # the stream offset of the next byte (the init was 64)

    def header(self, length: int) -> bytes:
        pad = self.keystream.peek(self.offset, 4)
        self.offset += 4 + length
        return bytes(a ^ b for a, b in zip(struct.pack("<I", length), pad, strict=True))

    def first(self, mode: int, size: int) -> bytes:
        body = bytes([mode]) + struct.pack("<Q", size) + bytes(3)  # 12 bytes, word-aligned
        start = self.offset
        head = self.header(len(body))
        pad = self.keystream.peek(start + 4, len(body))
        return self.init + head + bytes(a ^ b for a, b in zip(body, pad, strict=True))


def open_mtproto(proxy: tuple[str, int], target: tuple[str, int], mode: int, size: int):
    sock = socket.create_connection(proxy)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    socks5_connect(sock, target)
    client = MTProtoClient()
    sock.sendall(client.first(mode, size))
    return sock, client


@dataclass
class Transfer:
    seconds: float
    proxy_cpu: float | None
    client_cpu: float

    def mbps(self, size: int) -> float:
        return size / self.seconds / MB


def wire_size(size: int) -> int:
    """What `size` bytes of payload take on the wire: each packet has a 4-byte length."""
    return size + 4 * -(-size // PACKET)


def upload(proxy, target, size: int, pid: int, timeout: float) -> Transfer:
    payload = memoryview(os.urandom(PACKET))
    with Timeout(timeout, "upload"):
        sock, client = open_mtproto(proxy, target, MODE_SINK, wire_size(size))
        with sock:
            cpu0, own0 = process_cpu_seconds(pid), own_cpu_seconds()
            t0 = time.perf_counter()
            left = size
            while left:
                n = min(left, PACKET)
                sock.sendmsg([client.header(n), payload[:n]])
                left -= n
            got = struct.unpack("!Q", recv_exact(sock, 8))[0]
            t1 = time.perf_counter()
            cpu1, own1 = process_cpu_seconds(pid), own_cpu_seconds()
    if got != wire_size(size):
        raise RuntimeError(f"upload: the DC received {got} of {wire_size(size)} bytes")
    return Transfer(t1 - t0, None if cpu0 is None or cpu1 is None else cpu1 - cpu0, own1 - own0)


def download(proxy, target, size: int, pid: int, timeout: float) -> Transfer:
    buf = memoryview(bytearray(1 << 20))
    with Timeout(timeout, "download"):
        sock, _ = open_mtproto(proxy, target, MODE_SOURCE, size)
        with sock:
            cpu0, own0 = process_cpu_seconds(pid), own_cpu_seconds()
            t0 = time.perf_counter()
            got = 0
            while got < size:
                n = sock.recv_into(buf)
                if not n:
                    break
                got += n
            t1 = time.perf_counter()
            cpu1, own1 = process_cpu_seconds(pid), own_cpu_seconds()
    if got != size:
        raise RuntimeError(f"download: the client received {got} of {size} bytes")
    return Transfer(t1 - t0, None if cpu0 is None or cpu1 is None else cpu1 - cpu0, own1 - own0)


def setup_latency(proxy, target, count: int, timeout: float) -> list[float]:
    """`count` times: connect, SOCKS5, the init and a first packet, one small packet echoed
    back, close; in µs. Through tgws the dial includes TLS and the WebSocket upgrade."""
    samples = []
    with Timeout(timeout, "connection set-up"):
        for _ in range(count):
            t0 = time.perf_counter_ns()
            sock, client = open_mtproto(proxy, target, MODE_ECHO, 0)
            with sock:
                sock.sendall(client.header(4) + b"ping")
                recv_exact(sock, 8)
            samples.append((time.perf_counter_ns() - t0) / 1000)
    return samples


# ------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------


@dataclass
class Contestant:
    key: str
    label: str
    chain: str
    address: tuple[str, int] = ("", 0)
    pid: int = 0
    info: dict[str, object] = field(default_factory=dict)
    up: list[Transfer] = field(default_factory=list)
    down: list[Transfer] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from helper.lab.ca import LabCA

    machine = machine_info()
    with (
        tempfile.TemporaryDirectory(prefix="detour-bench-tg-") as tmp_name,
        contextlib.ExitStack() as stack,
    ):
        tmp = Path(tmp_name)
        ca = LabCA(tmp / "ca")
        cert, key = ca.issue(WEB_NAME)
        argv = [sys.executable, str(Path(__file__).resolve()), "--serve", str(cert), str(key)]
        dc = stack.enter_context(started(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE))
        assert dc.stdout is not None
        with Timeout(START_TIMEOUT, "starting the DC process"):
            line = dc.stdout.readline().decode()
        if not line.startswith("PORTS "):
            raise RuntimeError(f"the DC process did not start: {line!r}")
        tcp_port, wss_port = (int(p) for p in line.split()[1:])
        target = (HOST, tcp_port)  # the DC's address; tgws goes to its web endpoint instead
        extra = f'[tls]\nextra_ca = ["{ca.ca_path}"]\n'
        contestants = [
            Contestant("direct", "detour, direct route", "direct"),
            Contestant("tgws", "detour, tgws route", f"tgws:dc2={HOST};addr={HOST}:{wss_port}"),
        ]
        for c in contestants:
            c.address, c.pid, c.info = stack.enter_context(
                run_detour(tmp, "uvloop", chain=c.chain, extra=extra, label=c.key)
            )
        for round_ in range(args.repeat):
            order = contestants[round_ % 2 :] + contestants[: round_ % 2]
            for c in order:
                print(f"round {round_ + 1}/{args.repeat}: {c.label}", file=sys.stderr)
                c.up.append(upload(c.address, target, args.size, c.pid, args.timeout))
                c.down.append(download(c.address, target, args.size, c.pid, args.timeout))
        for c in contestants:
            print(f"set-up: {c.label}", file=sys.stderr)
            setup_latency(c.address, target, 5, args.timeout)  # warm up
            c.latency = setup_latency(c.address, target, args.connections, args.timeout)
        with contextlib.suppress(OSError):
            assert dc.stdin is not None
            dc.stdin.close()
    return report(args, machine, contestants)


def report(args: argparse.Namespace, machine: dict[str, Any], contestants: list[Contestant]):
    size = args.size
    rows = {}
    for c in contestants:
        up = median([t.mbps(size) for t in c.up])
        down = median([t.mbps(size) for t in c.down])
        cpu_up = [t.proxy_cpu / size * (1 << 30) for t in c.up if t.proxy_cpu is not None]
        cpu_down = [t.proxy_cpu / size * (1 << 30) for t in c.down if t.proxy_cpu is not None]
        rows[c.key] = {
            "label": c.label,
            "chain": c.chain,
            "upload_mbps": up,
            "download_mbps": down,
            "detour_cpu_s_per_gib": (
                median(cpu_up) if cpu_up else None,
                median(cpu_down) if cpu_down else None,
            ),
            "setup_median_us": median(c.latency),
            "setup_p90_us": percentile(c.latency, 0.9),
            "info": c.info,
            "runs_up_mbps": [t.mbps(size) for t in c.up],
            "runs_down_mbps": [t.mbps(size) for t in c.down],
        }
    direct, tgws = rows["direct"], rows["tgws"]
    ratios = {
        "upload": tgws["upload_mbps"] / direct["upload_mbps"],
        "download": tgws["download_mbps"] / direct["download_mbps"],
        "setup_added_us": tgws["setup_median_us"] - direct["setup_median_us"],
    }
    return {
        "machine": machine,
        "command": shlex.join(["python", "benchmarks/telegram.py", *sys.argv[1:]]),
        "size": size,
        "repeat": args.repeat,
        "contestants": rows,
        "tgws_vs_direct": ratios,
    }


def markdown(result: dict[str, Any]) -> str:
    rows = result["contestants"]
    lines = [
        "| contestant | upload MB/s | download MB/s | vs direct (up / down) "
        "| detour CPU s/GiB (up / down) | set-up median | set-up p90 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    direct = rows["direct"]
    for row in rows.values():
        up_ratio = row["upload_mbps"] / direct["upload_mbps"]
        down_ratio = row["download_mbps"] / direct["download_mbps"]
        cpu = row["detour_cpu_s_per_gib"]
        cpu_text = " / ".join("n/a" if v is None else f"{v:.2f}" for v in cpu)
        lines.append(
            f"| {row['label']} | {row['upload_mbps']:.0f} | {row['download_mbps']:.0f} | "
            f"{up_ratio:.2f}x / {down_ratio:.2f}x | {cpu_text} | "
            f"{row['setup_median_us'] / 1000:.2f} ms | {row['setup_p90_us'] / 1000:.2f} ms |"
        )
    r = result["tgws_vs_direct"]
    lines.append("")
    lines.append(
        f"tgws / direct: {r['upload']:.2f}x up, {r['download']:.2f}x down; connection set-up "
        f"+{r['setup_added_us'] / 1000:.2f} ms (median). Goal: at least 0.5x."
    )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("256M"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--connections", type=int, default=200, help="set-up samples each")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--json", type=Path, help="write the whole result there")
    parser.add_argument("--serve", nargs=2, metavar=("CERT", "KEY"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        serve_main(*args.serve)
        return 0
    result = run(args)
    print(f"machine: {json.dumps(result['machine'])}")
    print(f"command: {result['command']}\n")
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
