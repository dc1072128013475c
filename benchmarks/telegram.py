#!/usr/bin/env python3
"""Telegram through `tgws` and through detour's MTProto proxy endpoint against Telegram
direct, side by side: throughput both ways and the added connection set-up, in one run.

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
* detour four times, all on uvloop: one `direct` route, and one `tgws` route to that web
  endpoint (`addr=`, a throw-away CA in `[tls] extra_ca`), both reached over SOCKS5; and
  twice its MTProto proxy endpoint (`[mtproto_proxy]`, DC 2 at the DC process's plain port,
  the `direct` route), reached as Telegram's apps reach a proxy: with a plain secret (the
  client's obfuscated2 init made with it), and with an `ee` secret (fake TLS: the client's
  ClientHello, then TLS records; tests/support/mtproxy_client.py makes the hello);
* for the `mtproxy:` route (an MTProto proxy someone was handed), mtprotoproxy (PyPI, in the
  test extra; run by tests/support/mtprotoproxy_run.py with its DC table pointed at the DC
  process, plain secret, asyncio) and three contestants: detour's SOCKS5 port with the route
  `mtproxy:` to it (`mtproxy`), the client talking to mtprotoproxy itself with the secret
  (`mtprotoproxy`: what detour's layer adds is the ratio of the two), and the client
  talking to the DC process with no proxy at all (`dc`: what any hop costs).

The ratios to direct (detour's `direct` route) are the figures: the same client and the
same DC process, only the path differs -- TLS and WebSocket framing in detour and in the DC
process (as Telegram's own web endpoint adds them) for tgws; for the proxy endpoint, detour
decrypting the client's obfuscated2 and encrypting it again toward the DC (and the
records, with fake TLS).
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
    free_port,
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
from tests.support.mtprotoproxy_run import script as mtprotoproxy_script  # noqa: E402
from tests.support.mtproxy_client import (  # noqa: E402
    application_records,
    client_hello,
    read_secret,
    server_flight_size,
    server_proof_ok,
)
from transports.mtproto import Keystream, Tag, accept, initiate  # noqa: E402

PLAIN = "5a" * 16
FAKE_TLS = "ee" + "a5" * 16 + b"www.example.org".hex()
MTPROTO_SECTION = """
[mtproto_proxy]
listen = "{host}:{port}"
secrets = {{ bench = "{secret}" }}
dcs = {{ 2 = "{host}:{dc_port}" }}
mask = "{host}:9"
"""


def wait_listening(address: tuple[str, int], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(address, timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


PACKET = 512 * 1024  # payload per MTProto packet: an upload's file part
MODE_SINK, MODE_SOURCE, MODE_ECHO = 1, 2, 3
WEB_NAME = "kws2.web.telegram.org"


# ------------------------------------------------------------------------------------------
# the DC process
# ------------------------------------------------------------------------------------------


def _first_packet(init: bytes, first: bytes) -> tuple[int, int, Any]:
    """(mode, size, the DC's ciphers) from the bytes after the init."""
    _, obfuscation = accept(init)
    plain = obfuscation.decrypt(first[:13])
    mode, size = plain[4], struct.unpack("<Q", plain[5:13])[0]
    return mode, size, obfuscation


def _serve_tcp(conn: socket.socket) -> None:
    """The DC itself, on a thread with blocking sockets (a loop at C speed, as the relay
    benchmark's sink): what the `direct` route reaches."""
    with conn:
        try:
            init, first = recv_exact(conn, 64), recv_exact(conn, 16)
            mode, size, obfuscation = _first_packet(init, first)
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
            # The count, encrypted (a proxy endpoint re-encrypts what the DC sends).
            conn.sendall(obfuscation.encrypt(struct.pack("!Q", got)))
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
    mode, size, obfuscation = _first_packet(init, first.data)
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
    await ws.send_bytes(obfuscation.encrypt(struct.pack("!Q", got)))
    async for _ in ws:
        pass
    return ws


def _serve_ws_threads(ws: Any) -> None:
    """_serve_ws for `--endpoint threads` (benchmarks/tg_endpoint.py)."""
    init, first = ws.message(), ws.message()
    if init is None or first is None:
        return
    mode, size, obfuscation = _first_packet(init, first)
    if mode == MODE_ECHO:
        while (message := ws.message()) is not None:
            ws.send(message)
        return
    if mode == MODE_SOURCE:
        block = memoryview(os.urandom(PACKET))
        left = size
        while left:
            n = min(left, PACKET)
            ws.send(block[:n])
            left -= n
        ws.drain_until_close()
        return
    got = 0
    while got < size and (n := ws.skip_message()) is not None:
        got += n
    ws.send(obfuscation.encrypt(struct.pack("!Q", got)))
    ws.drain_until_close()


def serve_main(cert: str, key: str, endpoint: str = "aiohttp") -> None:
    """`telegram.py --serve CERT KEY`: print "PORTS TCP WSS", serve until stdin closes."""
    import ssl

    from aiohttp import web

    if endpoint == "threads":
        from benchmarks import tg_endpoint

        tcp = socket.create_server((HOST, 0), backlog=1024)
        threading.Thread(target=_accept_forever, args=(tcp,), daemon=True).start()
        wss = tg_endpoint.serve(HOST, cert, key, _serve_ws_threads)
        sys.stdout.write(f"PORTS {tcp.getsockname()[1]} {wss.getsockname()[1]}\n")
        sys.stdout.flush()
        sys.stdin.read()
        os._exit(0)

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
    they lie; payloads are sent as they are (random bytes). `secret`: a proxy's."""

    def __init__(self, secret: bytes | None = None) -> None:
        self.init, obfuscation = initiate(Tag.INTERMEDIATE, 2, secret=secret)
        self.keystream: Keystream = obfuscation.send
        self.receive: Keystream = obfuscation.receive
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


class FakeTlsSocket:
    """A socket whose bytes travel in TLS application-data records (after a fake-TLS
    handshake with the proxy): what a client with an `ee` secret sends and receives."""

    def __init__(self, sock: socket.socket, held: bytes) -> None:
        self.sock = sock
        self._raw = bytearray(held)  # received, not yet parsed
        self._ready = bytearray()
        self._left = 0  # payload bytes of the current record still to come

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(application_records(data))

    def sendmsg(self, buffers: list[Any]) -> None:
        self.sock.sendall(application_records(b"".join(buffers)))

    def recv_into(self, buf: memoryview, n: int = 0) -> int:
        """The next payload bytes; a record's header is read apart from its payload, which
        goes straight into `buf` (no copies beyond the socket's)."""
        want = n or len(buf)
        if self._ready:
            take = min(want, len(self._ready))
            buf[:take] = self._ready[:take]
            del self._ready[:take]
            return take
        if self._left == 0:
            head = self._exact(5)
            if head is None:
                return 0
            self._left = int.from_bytes(head[3:5], "big")
            if head[0] != 0x17:
                self._exact(self._left)
                self._left = 0
                return self.recv_into(buf, n)
        want = min(want, self._left)
        if self._raw:
            take = min(want, len(self._raw))
            buf[:take] = self._raw[:take]
            del self._raw[:take]
        else:
            take = self.sock.recv_into(buf, want)
            if not take:
                return 0
        self._left -= take
        return take

    def _exact(self, n: int) -> bytes | None:
        while len(self._raw) < n:
            more = self.sock.recv(max(n, 65536))
            if not more:
                return None
            self._raw += more
        out = bytes(self._raw[:n])
        del self._raw[:n]
        return out

    def recv(self, n: int) -> bytes:
        buf = bytearray(n)
        got = self.recv_into(memoryview(buf), n)
        return bytes(buf[:got])

    def __enter__(self) -> FakeTlsSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def open_mtproto(c: Contestant, target: tuple[str, int], mode: int, size: int):
    sock = socket.create_connection(c.address)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if c.secret is None:
        if c.socks:
            socks5_connect(sock, c.target or target)
        client = MTProtoClient()
        sock.sendall(client.first(mode, size))
        return sock, client
    parsed = read_secret(c.secret)
    client = MTProtoClient(parsed.key)
    if parsed.domain is None:
        sock.sendall(client.first(mode, size))
        return sock, client
    hello = client_hello(parsed.key, parsed.domain)
    sock.sendall(hello)
    flight = b""
    while (end := server_flight_size(flight)) is None:
        more = sock.recv(65536)
        if not more:
            raise RuntimeError("the proxy closed instead of answering the ClientHello")
        flight += more
    if not server_proof_ok(parsed.key, hello, flight[:end]):
        raise RuntimeError("the proxy's ServerHello is no proof of the secret")
    wrapped = FakeTlsSocket(sock, flight[end:])
    sock.sendall(b"\x14\x03\x03\x00\x01\x01")
    wrapped.sendall(client.first(mode, size))
    return wrapped, client


DC_PID: list[int] = []  # the DC process, once started


@dataclass
class Transfer:
    seconds: float
    proxy_cpu: float | None
    client_cpu: float
    dc_cpu: float | None = None  # the DC process's (TLS and WebSocket for tgws)

    def mbps(self, size: int) -> float:
        return size / self.seconds / MB


def wire_size(size: int) -> int:
    """What `size` bytes of payload take on the wire: each packet has a 4-byte length."""
    return size + 4 * -(-size // PACKET)


def upload(c: Contestant, target, size: int, timeout: float) -> Transfer:
    pid = c.pid
    payload = memoryview(os.urandom(PACKET))
    with Timeout(timeout, "upload"):
        sock, client = open_mtproto(c, target, MODE_SINK, wire_size(size))
        with sock:
            cpu0, own0 = process_cpu_seconds(pid), own_cpu_seconds()
            dc0 = process_cpu_seconds(DC_PID[0]) if DC_PID else None
            t0 = time.perf_counter()
            left = size
            while left:
                n = min(left, PACKET)
                sock.sendmsg([client.header(n), payload[:n]])
                left -= n
            got = struct.unpack("!Q", client.receive.apply(recv_exact(sock, 8)))[0]
            t1 = time.perf_counter()
            cpu1, own1 = process_cpu_seconds(pid), own_cpu_seconds()
            dc1 = process_cpu_seconds(DC_PID[0]) if DC_PID else None
    if got != wire_size(size):
        raise RuntimeError(f"upload: the DC received {got} of {wire_size(size)} bytes")
    return Transfer(
        t1 - t0,
        None if cpu0 is None or cpu1 is None else cpu1 - cpu0,
        own1 - own0,
        None if dc0 is None or dc1 is None else dc1 - dc0,
    )


def download(c: Contestant, target, size: int, timeout: float) -> Transfer:
    pid = c.pid
    buf = memoryview(bytearray(1 << 20))
    with Timeout(timeout, "download"):
        sock, _ = open_mtproto(c, target, MODE_SOURCE, size)
        with sock:
            cpu0, own0 = process_cpu_seconds(pid), own_cpu_seconds()
            dc0 = process_cpu_seconds(DC_PID[0]) if DC_PID else None
            t0 = time.perf_counter()
            got = 0
            while got < size:
                n = sock.recv_into(buf)
                if not n:
                    break
                got += n
            t1 = time.perf_counter()
            cpu1, own1 = process_cpu_seconds(pid), own_cpu_seconds()
            dc1 = process_cpu_seconds(DC_PID[0]) if DC_PID else None
    if got != size:
        raise RuntimeError(f"download: the client received {got} of {size} bytes")
    return Transfer(
        t1 - t0,
        None if cpu0 is None or cpu1 is None else cpu1 - cpu0,
        own1 - own0,
        None if dc0 is None or dc1 is None else dc1 - dc0,
    )


def setup_latency(c: Contestant, target, count: int, timeout: float) -> list[float]:
    """`count` times: connect, SOCKS5 (or the proxy's handshake), the init and a first
    packet, one small packet echoed back, close; in µs. Through tgws the dial includes TLS
    and the WebSocket upgrade; through the endpoint with fake TLS, its hello and answer."""
    samples = []
    with Timeout(timeout, "connection set-up"):
        for _ in range(count):
            t0 = time.perf_counter_ns()
            sock, client = open_mtproto(c, target, MODE_ECHO, 0)
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
    secret: str | None = None  # through the MTProto proxy endpoint with this secret
    socks: bool = True  # through detour's SOCKS5 port (False: to `address` itself)
    target: tuple[str, int] | None = None  # what to ask SOCKS5 for, when not the DC's port
    root: Path = ROOT  # the source tree detour runs from
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
        argv += ["--endpoint", args.endpoint]
        dc = stack.enter_context(started(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE))
        assert dc.stdout is not None
        with Timeout(START_TIMEOUT, "starting the DC process"):
            line = dc.stdout.readline().decode()
        if not line.startswith("PORTS "):
            raise RuntimeError(f"the DC process did not start: {line!r}")
        tcp_port, wss_port = (int(p) for p in line.split()[1:])
        DC_PID[:] = [dc.pid]
        target = (HOST, tcp_port)  # the DC's address; tgws goes to its web endpoint instead
        extra = f'[tls]\nextra_ca = ["{ca.ca_path}"]\n'
        contestants = [
            Contestant("direct", "detour, direct route", "direct"),
            Contestant("tgws", "detour, tgws route", f"tgws:dc2={HOST};addr={HOST}:{wss_port}"),
            Contestant("mtproto", "detour MTProto endpoint, plain secret", "direct", PLAIN),
            Contestant("mtproto-ee", "detour MTProto endpoint, ee secret", "direct", FAKE_TLS),
            Contestant(
                "mtproto-tgws",
                "detour MTProto endpoint, plain secret, tgws route",
                f"tgws:dc2={HOST};addr={HOST}:{wss_port}",
                PLAIN,
            ),
        ]
        contestants += [
            Contestant("dc", "no proxy: the DC process itself", "", socks=False),
            Contestant(
                "mtproxy",
                "detour, mtproxy: route to mtprotoproxy",
                "mtproxy:{proxy};secret=" + PLAIN,
                target=DC2,
            ),
            Contestant("mtprotoproxy", "mtprotoproxy alone, plain secret", "", PLAIN),
        ]
        if args.only:
            contestants = [c for c in contestants if c.key == "direct" or c.key in args.only]
        if mtprotoproxy_script() is None and any(c.key in MTPROTOPROXY_USERS for c in contestants):
            if args.only and args.only & set(MTPROTOPROXY_USERS):
                raise SystemExit("mtprotoproxy is not installed (pip install mtprotoproxy)")
            print("mtprotoproxy is not installed: no mtproxy contestants", file=sys.stderr)
            contestants = [c for c in contestants if c.key not in MTPROTOPROXY_USERS]
        if any(c.key in MTPROTOPROXY_USERS for c in contestants):
            proxy = stack.enter_context(run_mtprotoproxy(tcp_port, tmp))
            for c in contestants:
                c.chain = c.chain.replace("{proxy}", f"{HOST}:{proxy[0][1]}")
        if args.baseline:
            # The same contestants but direct run from another source tree: before / after.
            contestants += [
                Contestant(
                    f"{c.key}-before",
                    f"{c.label} (baseline)",
                    c.chain,
                    c.secret,
                    socks=c.socks,
                    target=c.target,
                    root=args.baseline,
                )
                for c in contestants
                if c.key not in ("direct", "dc", "mtprotoproxy")
            ]
        for c in contestants:
            if c.key == "dc":
                c.address, c.pid = target, 0
                continue
            if c.key == "mtprotoproxy":
                c.address, c.pid = proxy
                continue
            more = extra
            port = 0
            if c.secret is not None:
                port = free_port()
                more += MTPROTO_SECTION.format(
                    port=port, secret=c.secret, host=HOST, dc_port=tcp_port
                )
            c.address, c.pid, c.info = stack.enter_context(
                run_detour(tmp, "uvloop", chain=c.chain, extra=more, label=c.key, root=c.root)
            )
            if c.secret is not None:
                c.address = (HOST, port)
                wait_listening(c.address)
        if args.pin:
            pin(dc.pid, {0})  # the stand-ins and this client on one core,
            for c in contestants:
                if c.pid:
                    pin(c.pid, {1})  # detour (and mtprotoproxy) alone on the other
            os.sched_setaffinity(0, {0})
        for round_ in range(args.repeat):
            order = contestants[round_ % 2 :] + contestants[: round_ % 2]
            for c in order:
                print(f"round {round_ + 1}/{args.repeat}: {c.label}", file=sys.stderr)
                c.up.append(upload(c, target, args.size, args.timeout))
                c.down.append(download(c, target, args.size, args.timeout))
        for c in contestants:
            print(f"set-up: {c.label}", file=sys.stderr)
            setup_latency(c, target, 5, args.timeout)  # warm up
            c.latency = setup_latency(c, target, args.connections, args.timeout)
        with contextlib.suppress(OSError):
            assert dc.stdin is not None
            dc.stdin.close()
    return report(args, machine, contestants)


DC2 = ("149.154.167.51", 443)  # DC 2's address in detour's table: what an app asks for
MTPROTOPROXY_USERS = ("mtproxy", "mtprotoproxy")


@contextlib.contextmanager
def run_mtprotoproxy(dc_port: int, tmp: Path):
    """mtprotoproxy with the plain secret, every DC at the DC process's plain port: yields
    ((host, port), pid). Its stderr goes to a file in `tmp` (on Python 3.11 it prints a
    traceback of its own when a client closes: it names asyncio.streams.IncompleteReadError)."""
    options = {
        "port": 0,
        "key": PLAIN,
        "dcs": [HOST] * 5,
        "dc_port": dc_port,
        "tls_domain": "www.example.org",
        "mask": [HOST, 9],
        "secure_only": False,
    }
    argv = [sys.executable, "-m", "tests.support.mtprotoproxy_run", json.dumps(options)]
    with (
        (tmp / "mtprotoproxy.log").open("wb") as log,
        started(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=log) as process,
    ):
        assert process.stdout is not None
        with Timeout(START_TIMEOUT, "starting mtprotoproxy"):
            line = process.stdout.readline().decode()
        if not line.startswith("ready "):
            raise RuntimeError(f"mtprotoproxy did not start (pip install mtprotoproxy): {line!r}")
        yield (HOST, int(line.split()[1])), process.pid


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of process `pid` (and those it starts later) on `cpus`."""
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(task), cpus)


def report(args: argparse.Namespace, machine: dict[str, Any], contestants: list[Contestant]):
    size = args.size
    rows = {}
    for c in contestants:
        up = median([t.mbps(size) for t in c.up])
        down = median([t.mbps(size) for t in c.down])
        cpu_up = [t.proxy_cpu / size * (1 << 30) for t in c.up if t.proxy_cpu is not None]
        cpu_down = [t.proxy_cpu / size * (1 << 30) for t in c.down if t.proxy_cpu is not None]
        dc_up = [t.dc_cpu / size * (1 << 30) for t in c.up if t.dc_cpu is not None]
        dc_down = [t.dc_cpu / size * (1 << 30) for t in c.down if t.dc_cpu is not None]
        rows[c.key] = {
            "label": c.label,
            "chain": c.chain,
            "upload_mbps": up,
            "download_mbps": down,
            "detour_cpu_s_per_gib": (
                median(cpu_up) if cpu_up else None,
                median(cpu_down) if cpu_down else None,
            ),
            "dc_cpu_s_per_gib": (
                median(dc_up) if dc_up else None,
                median(dc_down) if dc_down else None,
            ),
            "setup_median_us": median(c.latency),
            "setup_p90_us": percentile(c.latency, 0.9),
            "info": c.info,
            "runs_up_mbps": [t.mbps(size) for t in c.up],
            "runs_down_mbps": [t.mbps(size) for t in c.down],
        }
    direct = rows["direct"]
    ratios = {
        key: {
            "upload": row["upload_mbps"] / direct["upload_mbps"],
            "download": row["download_mbps"] / direct["download_mbps"],
            "setup_added_us": row["setup_median_us"] - direct["setup_median_us"],
        }
        for key, row in rows.items()
        if key != "direct"
    }
    return {
        "machine": machine,
        "command": shlex.join(["python", "benchmarks/telegram.py", *sys.argv[1:]]),
        "endpoint": args.endpoint,
        "pinned": args.pin,
        "size": size,
        "repeat": args.repeat,
        "contestants": rows,
        "vs_direct": ratios,
    }


def markdown(result: dict[str, Any]) -> str:
    rows = result["contestants"]
    lines = [
        "| contestant | upload MB/s | download MB/s | vs direct (up / down) "
        "| detour CPU s/GiB (up / down) | DC process CPU s/GiB (up / down) "
        "| set-up median | set-up p90 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    direct = rows["direct"]
    for row in rows.values():
        up_ratio = row["upload_mbps"] / direct["upload_mbps"]
        down_ratio = row["download_mbps"] / direct["download_mbps"]
        cpu = row["detour_cpu_s_per_gib"]
        cpu_text = " / ".join("n/a" if v is None else f"{v:.2f}" for v in cpu)
        dc_text = " / ".join(
            "n/a" if v is None else f"{v:.2f}" for v in row.get("dc_cpu_s_per_gib", (None, None))
        )
        lines.append(
            f"| {row['label']} | {row['upload_mbps']:.0f} | {row['download_mbps']:.0f} | "
            f"{up_ratio:.2f}x / {down_ratio:.2f}x | {cpu_text} | {dc_text} | "
            f"{row['setup_median_us'] / 1000:.2f} ms | {row['setup_p90_us'] / 1000:.2f} ms |"
        )
    lines.append("")
    for key, r in result["vs_direct"].items():
        goal = "" if key in ("dc", "mtprotoproxy") else " Goal: at least 0.5x."
        lines.append(
            f"{key} / direct: {r['upload']:.2f}x up, {r['download']:.2f}x down; connection "
            f"set-up {r['setup_added_us'] / 1000:+.2f} ms (median).{goal}"
        )
    if "mtproxy" in rows and "mtprotoproxy" in rows:
        ours, alone = rows["mtproxy"], rows["mtprotoproxy"]
        lines.append(
            f"mtproxy / mtprotoproxy alone: {ours['upload_mbps'] / alone['upload_mbps']:.2f}x "
            f"up, {ours['download_mbps'] / alone['download_mbps']:.2f}x down; connection "
            f"set-up {(ours['setup_median_us'] - alone['setup_median_us']) / 1000:+.2f} ms "
            "(median): what detour's SOCKS5 port and `mtproxy:` layer add to the same proxy."
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("256M"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--connections", type=int, default=200, help="set-up samples each")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--json", type=Path, help="write the whole result there")
    parser.add_argument(
        "--only",
        type=lambda text: set(text.split(",")),
        help="these contestants (comma-separated keys: tgws, mtproto, mtproto-ee, "
        "mtproto-tgws, dc, mtproxy, mtprotoproxy) besides direct",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="also run the MTProto endpoint contestants from this source tree (e.g. "
        "`git archive main | tar -x -C DIR`): before and after in one run",
    )
    parser.add_argument(
        "--endpoint",
        choices=("aiohttp", "threads"),
        default="aiohttp",
        help="the stand-in web endpoint: aiohttp's WebSocket server on uvloop (the default), "
        "or threads with blocking TLS sockets that count an upload's frames without "
        "unmasking them (benchmarks/tg_endpoint.py: about the TLS's cost alone)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="the DC process and the client on CPU 0, every detour on CPU 1 (two cores at "
        "least): detour's speed without the stand-ins taking its core",
    )
    parser.add_argument("--serve", nargs=2, metavar=("CERT", "KEY"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        serve_main(*args.serve, endpoint=args.endpoint)
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
