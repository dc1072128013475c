#!/usr/bin/env python3
"""Side-by-side relay benchmark: detour against no proxy, pproxy and microsocks.

    .venv/bin/python benchmarks/relay.py                   # 1 GiB each way, 3 rounds
    .venv/bin/python benchmarks/relay.py --size 256M        # a quick run
    .venv/bin/python benchmarks/relay.py --json out.json    # also write the raw numbers
    .venv/bin/python benchmarks/relay.py --setup-only --connections 3000  # set-up cost only

What runs, each in its own process so that the proxy is the only thing measured:

* this script is the client: blocking sockets, a SOCKS5 handshake of its own, then
  ``sendall`` of one 1 MiB memoryview in a loop (upload) or ``recv_into`` one preallocated
  buffer (download);
* a server process (this file with ``--serve``) on 127.0.0.1: a sink that counts what it
  receives with ``recv_into`` and acknowledges the total, a source that sends, and an echo
  server for the connection set-up test;
* the contestants: no proxy (client straight to the server), detour as a subprocess with one
  ``direct`` route (uvloop, and once more with DETOUR_LOOP=asyncio), pproxy, microsocks.

Every transfer starts after the SOCKS5 handshake and ends when the last byte has arrived:
for uploads the sink acknowledges the byte count once it has received all of it, for
downloads the client has counted all of it. (The client announces the size first instead of
half-closing with shutdown(SHUT_WR): pproxy and microsocks close both directions when one
ends, so an acknowledgement sent after the client's FIN would never come back through them.)

Rounds interleave the contestants round-robin, rotating who goes first, so that noise on a
shared machine hits them alike; the report gives medians and ratios to the other contestants
on the same run, which carry over between machines far better than absolute MB/s.

Also reported: the CPU time each proxy process used (from /proc, in 10 ms ticks, so give
--size 256M or more for meaningful per-GiB figures), which is much less noisy than wall time.
pproxy is run on uvloop through a small shim (see _PPROXY_SHIM). Every process started here is
stopped on exit, Ctrl-C or SIGTERM; on Linux they also die with the benchmark if it is killed.
Written for Linux (where the bar is set); elsewhere the CPU columns read "n/a".
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import json
import os
import platform
import re
import resource
import selectors
import shlex
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CHUNK = 1 << 20  # the client's send buffer and both sides' receive buffers
HOST = "127.0.0.1"
MB = 1_000_000  # throughput is reported in MB/s = 10^6 bytes per second
GIB = 1 << 30
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0

# The bar from the issue, for detour with its default event loop (uvloop) on 2 cores.
BARS = (
    ("direct", "no proxy", 0.35),
    ("pproxy", "pproxy (uvloop)", 3.0),
    ("pproxy-asyncio", "pproxy (asyncio)", 3.0),
    ("microsocks", "microsocks", 4.0),
)
BAR_SUBJECT = "detour"

CLK_TCK = os.sysconf("SC_CLK_TCK")
_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


# ------------------------------------------------------------------------------------------
# small helpers
# ------------------------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """'1G', '256M', '64MiB', '1048576' -> bytes (K/M/G are binary: KiB, MiB, GiB)."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmgKMG]?)(i?[bB])?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1G, 256M, 4096)")
    value = (
        int(match.group(1))
        * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[match.group(2).lower()]
    )
    if value < CHUNK:
        raise argparse.ArgumentTypeError(f"size must be at least 1M (got {text!r})")
    return value


def human_size(n: int) -> str:
    for unit, factor in (("GiB", GIB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    return f"{n} B"


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        part = sock.recv(n - len(data))
        if not part:
            raise ConnectionError(f"connection closed after {len(data)} of {n} bytes")
        data += part
    return bytes(data)


def process_cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of a process (all its threads), from /proc; None when unknown."""
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def uses_uvloop(pid: int) -> bool | None:
    """Whether a process has uvloop's extension module mapped (it imported uvloop)."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return None
    return "uvloop/loop." in maps


def _die_with_parent() -> None:  # preexec_fn: the child is SIGKILLed if we die abruptly
    if sys.platform == "linux":
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class Timeout:
    """SIGALRM watchdog around blocking socket calls (no socket timeouts: those cost a
    poll() per recv/send and would slow the client down)."""

    def __init__(self, seconds: float, what: str) -> None:
        self.seconds = seconds
        self.what = what

    def _fire(self, signum: int, frame: object) -> None:
        raise TimeoutError(f"{self.what}: no result within {self.seconds:g} s")

    def __enter__(self) -> Timeout:
        self._old = signal.signal(signal.SIGALRM, self._fire)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self._old)


# ------------------------------------------------------------------------------------------
# the server process: sink, source, echo
# ------------------------------------------------------------------------------------------


def _read_size(conn: socket.socket) -> int:
    """The 8-byte transfer size. TLS handshake records before it are skipped: the tlsfrag
    contestant's client sends a ClientHello first, which detour cuts into several records.
    (A size's first byte is 0, never 0x16.)"""
    while (first := recv_exact(conn, 1)) == b"\x16":
        header = recv_exact(conn, 4)  # version, length
        recv_exact(conn, int.from_bytes(header[2:4], "big"))
    return struct.unpack("!Q", first + recv_exact(conn, 7))[0]


def _sink(conn: socket.socket) -> None:
    """Read an 8-byte size, count that many bytes with recv_into, acknowledge the count."""
    with conn:
        size = _read_size(conn)
        buf = memoryview(bytearray(CHUNK))
        total = 0
        while total < size:
            n = conn.recv_into(buf, min(CHUNK, size - total))
            if not n:
                break  # cut short: the short count tells the client
            total += n
        conn.sendall(struct.pack("!Q", total))
        while conn.recv_into(buf):  # until the client closes
            pass


def _source(conn: socket.socket) -> None:
    """Read an 8-byte size, send that many bytes from one buffer, wait for the close."""
    with conn:
        size = _read_size(conn)
        data = memoryview(bytearray(CHUNK))
        remaining = size
        while remaining >= CHUNK:
            conn.sendall(data)
            remaining -= CHUNK
        if remaining:
            conn.sendall(data[:remaining])
        with contextlib.suppress(OSError):
            while conn.recv(65536):
                pass


def _serve_each(listener: socket.socket, handler: Callable[[socket.socket], None]) -> None:
    def run(conn: socket.socket) -> None:
        try:
            handler(conn)
        except OSError:
            pass  # a client or proxy reset: the client reports the failure

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=run, args=(conn,), daemon=True).start()


def _echo(listener: socket.socket) -> None:
    """Echo server on one thread with epoll: no thread start per connection."""
    sel = selectors.DefaultSelector()
    listener.setblocking(False)
    sel.register(listener, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if sock is listener:
                with contextlib.suppress(BlockingIOError):
                    while True:
                        conn, _ = listener.accept()
                        conn.setblocking(False)
                        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        sel.register(conn, selectors.EVENT_READ)
                continue
            try:
                data = sock.recv(65536)
                if data:
                    sock.send(data)  # a byte or two: always fits the send buffer
                    continue
            except BlockingIOError:
                continue
            except OSError:
                pass
            sel.unregister(sock)
            sock.close()


def serve_main() -> None:
    """`relay.py --serve`: print the three ports, serve until stdin closes (parent gone)."""
    listeners = [socket.create_server((HOST, 0), backlog=1024) for _ in range(3)]
    sink, source, echo = listeners
    threading.Thread(target=_serve_each, args=(sink, _sink), daemon=True).start()
    threading.Thread(target=_serve_each, args=(source, _source), daemon=True).start()
    threading.Thread(target=_echo, args=(echo,), daemon=True).start()
    ports = " ".join(str(s.getsockname()[1]) for s in listeners)
    sys.stdout.write(f"PORTS {ports}\n")
    sys.stdout.flush()
    # Also a watchdog: "guard PGID" / "release PGID" lines name process groups (microsocks,
    # which tests.support.peers starts without a parent-death signal) to SIGKILL should the
    # benchmark die without stopping them. EOF on stdin: the benchmark is done or gone.
    guarded: set[int] = set()
    for line in sys.stdin:
        command, _, pgid = line.partition(" ")
        if command == "guard":
            guarded.add(int(pgid))
        elif command == "release":
            guarded.discard(int(pgid))
    for pgid in guarded:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    os._exit(0)


def delay_line_main(target: int, rtt_ms: float) -> None:
    """`relay.py --delay-line PORT RTT_MS`: forward 127.0.0.1:ANY -> 127.0.0.1:PORT, holding
    every chunk for half the round trip in each direction (order kept), as a path to a relay
    far away would. The TCP handshake itself is not delayed (so a new tunnel is one round
    trip cheaper than on a real path). Prints "PORT N", serves until stdin closes."""
    import asyncio

    delay = rtt_ms / 2000

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await queue.get()
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                if data is None:
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(send())
        with contextlib.suppress(OSError):
            while data := await reader.read(1 << 20):
                queue.put_nowait((loop.time() + delay, data))
        queue.put_nowait((loop.time() + delay, None))
        with contextlib.suppress(OSError):
            await sender

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(HOST, target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        writer.close()
        up_writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(handle, HOST, 0)
        sys.stdout.write(f"PORT {server.sockets[0].getsockname()[1]}\n")
        sys.stdout.flush()
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    asyncio.run(serve())
    os._exit(0)


@contextlib.contextmanager
def delay_line(target: int, rtt_ms: float) -> Iterator[int]:
    """A delay line process in front of 127.0.0.1:`target`; yields its port."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--delay-line", str(target), str(rtt_ms)]
    with started(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as process:
        assert process.stdout is not None and process.stdin is not None
        with Timeout(START_TIMEOUT, "starting the delay line"):
            line = process.stdout.readline().decode()
        if not line.startswith("PORT "):
            raise RuntimeError(f"the delay line did not start: {line!r}")
        try:
            yield int(line.split()[1])
        finally:
            process.stdin.close()


# ------------------------------------------------------------------------------------------
# processes
# ------------------------------------------------------------------------------------------


@dataclass
class Servers:
    process: subprocess.Popen[bytes]
    sink: tuple[str, int]
    source: tuple[str, int]
    echo: tuple[str, int]

    def _tell(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    @contextlib.contextmanager
    def guarding(self, pgid: int) -> Iterator[None]:
        """Have the server process SIGKILL group `pgid` if this benchmark dies meanwhile."""
        self._tell(f"guard {pgid}")
        try:
            yield
        finally:
            self._tell(f"release {pgid}")


def stop_process(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM the process group, SIGKILL it if it lingers; it leads its own session."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # stragglers in the group, if any
    process.wait()


@contextlib.contextmanager
def started(
    argv: list[str], *, env: dict[str, str] | None = None, **kwargs: object
) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        argv,
        start_new_session=True,  # our Ctrl-C does not reach it; we stop it ourselves
        preexec_fn=_die_with_parent,
        env=env,
        **kwargs,  # type: ignore[arg-type]
    )
    try:
        yield process
    finally:
        stop_process(process)


@contextlib.contextmanager
def run_servers() -> Iterator[Servers]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--serve"]
    with started(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as process:
        assert process.stdout is not None
        assert process.stdin is not None
        with Timeout(START_TIMEOUT, "starting the sink/echo server"):
            line = process.stdout.readline().decode()
        if not line.startswith("PORTS "):
            raise RuntimeError(f"sink/echo server did not start: {line!r}")
        sink, source, echo = (int(p) for p in line.split()[1:])
        try:
            yield Servers(process, (HOST, sink), (HOST, source), (HOST, echo))
        finally:
            process.stdin.close()


def wait_accepting(
    process: subprocess.Popen[bytes], address: tuple[str, int], name: str, log: Path
) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"{name} exited with status {process.returncode}:\n"
                + log.read_text(errors="replace")
            )
        try:
            with socket.create_connection(address, timeout=1):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not listen on {address} within {START_TIMEOUT:g} s")
        time.sleep(0.05)


def _client_hello() -> bytes:
    """A real ClientHello (OpenSSL's, with a server name) for the tlsfrag contestant."""
    from tests.support.tls import openssl_client_hello

    return openssl_client_hello("web.telegram.org")


def free_port() -> int:
    from tests.support.peers import free_port as _free_port

    return _free_port(HOST)


DETOUR_CONFIG = """\
# written by benchmarks/relay.py: one route, everything goes through it
[base]
config = "none"

[listen]
mixed = "127.0.0.1:1080"
{extra}
[default]
policy = "only"

[[route]]
name = "only"
chain = "{chain}"
"""


@contextlib.contextmanager
def run_detour(
    tmp: Path,
    loop: str,
    chain: str = "direct",
    extra: str = "",
    label: str | None = None,
    root: Path = ROOT,
) -> Iterator[tuple[tuple[str, int], int, dict[str, object]]]:
    """`root`: the source tree detour runs from (another checkout: a before/after run)."""
    label = label or loop
    config = tmp / f"detour-{label}.toml"
    config.write_text(DETOUR_CONFIG.format(chain=chain, extra=extra))
    port = free_port()
    argv = [
        sys.executable, "-m", "helper", "run", "--headless", "-c", str(config),
        "--listen", f"{HOST}:{port}", "--log-level", "warning",
    ]  # fmt: skip
    env = dict(os.environ)
    env.pop("DETOUR_LOOP", None)
    if loop == "asyncio":
        env["DETOUR_LOOP"] = "asyncio"
    log = tmp / f"detour-{label}.log"
    with (
        log.open("wb") as out,
        started(argv, env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT) as proc,
    ):
        wait_accepting(proc, (HOST, port), f"detour ({label})", log)
        info: dict[str, object] = {
            "command": shlex.join(["python", *argv[1:]]),
            "env": "DETOUR_LOOP=asyncio" if loop == "asyncio" else "",
            "uvloop": uses_uvloop(proc.pid),
            "version": _version("detour"),
        }
        if root != ROOT:
            info["source"] = str(root)
        try:
            yield (HOST, port), proc.pid, info
        finally:
            text = log.read_text(errors="replace")
            if "Traceback" in text:
                print(f"warning: detour ({loop}) logged a traceback:\n{text}", file=sys.stderr)


@contextlib.contextmanager
def run_detour_front(
    tmp: Path,
    *,
    mux: bool = True,
    relay_cpu: int | None = None,
    relay_rtt: float = 0.0,
    root: Path = ROOT,
    carrier: str | None = None,
) -> Iterator[tuple[tuple[str, int], int, dict[str, object]]]:
    """detour with one front: route to a `detour relay` process of its own, both on uvloop:
    the client's bytes cross TLS to the front, WebSocket framing and the inner TLS to the
    relay, which dials the benchmark's servers. The relay's CPU is not in the CPU columns.

    `mux`: many connections in one tunnel (the default) or one tunnel each (`;mux=off`).
    `relay_cpu`: the relay runs on that CPU alone, as on a machine of its own.
    `relay_rtt`: milliseconds of round trip between detour and the relay (a delay line).
    `root`: the detour source tree both run from (another checkout: a before/after).
    `carrier`: `;carrier=` for the tunnel (capped: many short connections, each under the
    byte budget)."""
    from tests.support.relay_process import write_relay

    label = ("front" if mux else "front-nomux") + (f"-{carrier}" if carrier else "")
    label += "" if root == ROOT else "-baseline"
    port = free_port()
    config = tmp / f"relay-{label}.toml"
    written = write_relay(
        config,
        ca_dir=tmp / f"{label}-ca",
        state=tmp / f"relay-{label}-state",
        name="relay.bench.test",
        host=HOST,
        port=port,
        client="bench",
        heading="# written by benchmarks/relay.py: a relay that serves HTTPS itself (no CDN)\n",
    )
    argv = [sys.executable, "-m", "helper", "relay", "-c", str(config)]
    log_path = tmp / f"relay-{label}.log"
    with (
        log_path.open("wb") as out,
        started(argv, cwd=root, stdout=out, stderr=subprocess.STDOUT) as relay,
    ):
        if relay_cpu is not None:
            os.sched_setaffinity(relay.pid, {relay_cpu})
        wait_accepting(relay, (HOST, port), "detour relay", log_path)
        extra = f'\n[tls]\nextra_ca = ["{written.ca_path}"]\n'
        # The handshake budget off: with it a new tunnel to one front waits its turn (about
        # 2.5 a second), and `mux=off`'s set-up would measure the budget's gap, not the tunnel.
        extra += "\n[probe]\nhandshakes = 0\n"
        chain = "front:" + written.access_key + ("" if mux else ";mux=off")
        if carrier:
            chain += f";carrier={carrier}"
        with contextlib.ExitStack() as stack:
            if relay_rtt > 0:
                chain += f";addr={HOST}:{stack.enter_context(delay_line(port, relay_rtt))}"
            with run_detour(tmp, "uvloop", chain, extra, label, root) as (address, pid, info):
                info = dict(
                    info,
                    relay=shlex.join(["python", *argv[1:]]),
                    relay_cpu=relay_cpu,
                    relay_rtt_ms=relay_rtt,
                    relay_pid=relay.pid,  # taken out again by run(): not a result
                )
                yield address, pid, info


# pproxy's main() calls uvloop.install() and then asyncio.get_event_loop(), which raises with
# uvloop >= 0.21 ("There is no current event loop"), so `pproxy -l ...` dies at start where
# uvloop is installed (as here: detour's `speed` extra). This shim runs the unmodified pproxy
# main() on uvloop, as pproxy intends, by making install() also set a current loop. uvloop is
# not a dependency of pproxy, so `pip install pproxy` alone runs it on asyncio's loop: the
# "pproxy-asyncio" contestant hides uvloop from it to measure that.
_PPROXY_SHIM = """
import asyncio, sys
if sys.argv[1] == "asyncio":
    sys.modules["uvloop"] = None  # as if not installed
del sys.argv[1]
try:
    import uvloop
except ImportError:
    pass
else:
    def install():
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        asyncio.set_event_loop(asyncio.new_event_loop())
    uvloop.install = install
from pproxy.server import main
sys.argv[0] = "pproxy"
sys.exit(main())
"""


@contextlib.contextmanager
def run_pproxy(tmp: Path, loop: str) -> Iterator[tuple[tuple[str, int], int, dict[str, object]]]:
    if _version("pproxy") is None:
        raise RuntimeError("pproxy not installed (pip install pproxy, or the 'bench' extra)")
    port = free_port()
    argv = [sys.executable, "-c", _PPROXY_SHIM, loop, "-l", f"socks5://{HOST}:{port}"]
    log = tmp / f"pproxy-{loop}.log"
    with log.open("wb") as out, started(argv, stdout=out, stderr=subprocess.STDOUT) as proc:
        wait_accepting(proc, (HOST, port), f"pproxy ({loop})", log)
        info: dict[str, object] = {
            "command": shlex.join(["pproxy", *argv[4:]]),
            "uvloop": uses_uvloop(proc.pid),
            "version": _version("pproxy"),
        }
        yield (HOST, port), proc.pid, info


@contextlib.contextmanager
def run_microsocks(servers: Servers) -> Iterator[tuple[tuple[str, int], int, dict[str, object]]]:
    from tests.support import peers

    with peers.microsocks() as peer, servers.guarding(peer.process.pid):
        info: dict[str, object] = {
            "command": shlex.join(["microsocks", *peer.process.args[1:]]),  # type: ignore[index]
            "version": _dpkg_version("microsocks"),
        }
        yield peer.address, peer.process.pid, info


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _dpkg_version(package: str) -> str | None:
    if shutil.which("dpkg-query") is None:
        return None
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True
    )
    return result.stdout.strip() or None if result.returncode == 0 else None


# ------------------------------------------------------------------------------------------
# the client
# ------------------------------------------------------------------------------------------


def socks5_connect(sock: socket.socket, target: tuple[str, int]) -> None:
    """RFC 1928 CONNECT without authentication, one message per step like real clients."""
    sock.sendall(b"\x05\x01\x00")
    if recv_exact(sock, 2) != b"\x05\x00":
        raise ConnectionError("SOCKS5: proxy refused the no-authentication method")
    sock.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(target[0]) + struct.pack("!H", target[1]))
    head = recv_exact(sock, 4)
    if head[1] != 0:
        raise ConnectionError(f"SOCKS5: CONNECT failed with reply code {head[1]}")
    atyp = head[3]
    rest = 4 + 2 if atyp == 1 else 16 + 2 if atyp == 4 else recv_exact(sock, 1)[0] + 2
    recv_exact(sock, rest)


def open_tunnel(
    proxy: tuple[str, int] | None, target: tuple[str, int], preamble: bytes = b""
) -> socket.socket:
    """Connect (through the proxy), then send `preamble`: a TLS ClientHello for the tlsfrag
    contestant, so detour rewrites it before the measured transfer starts."""
    sock = socket.create_connection(proxy or target)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        if proxy is not None:
            socks5_connect(sock, target)
        sock.sendall(preamble)
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass
class Transfer:
    seconds: float
    proxy_cpu: float | None
    client_cpu: float
    server_cpu: float | None

    def mbps(self, size: int) -> float:
        return size / self.seconds / MB


def _cpu_now(pid: int | None, servers: Servers) -> tuple[float | None, float, float | None]:
    """CPU seconds so far of the proxy (pid), of this process and of the servers' process."""
    return (
        process_cpu_seconds(pid),
        own_cpu_seconds(),
        process_cpu_seconds(servers.process.pid),
    )


def upload(
    proxy: tuple[str, int] | None,
    servers: Servers,
    size: int,
    pid: int | None,
    timeout: float,
    preamble: bytes = b"",
) -> Transfer:
    data = memoryview(bytearray(CHUNK))
    with Timeout(timeout, "upload"):
        sock = open_tunnel(proxy, servers.sink, preamble)
        with sock:
            cpu0 = _cpu_now(pid, servers)
            t0 = time.perf_counter()
            sock.sendall(struct.pack("!Q", size))
            remaining = size
            while remaining >= CHUNK:
                sock.sendall(data)
                remaining -= CHUNK
            if remaining:
                sock.sendall(data[:remaining])
            got = struct.unpack("!Q", recv_exact(sock, 8))[0]
            t1 = time.perf_counter()
            cpu1 = _cpu_now(pid, servers)
    if got != size:
        raise RuntimeError(f"upload: the sink received {got} of {size} bytes")
    return _transfer(t1 - t0, cpu0, cpu1)


def download(
    proxy: tuple[str, int] | None,
    servers: Servers,
    size: int,
    pid: int | None,
    timeout: float,
    preamble: bytes = b"",
) -> Transfer:
    buf = memoryview(bytearray(CHUNK))
    with Timeout(timeout, "download"):
        sock = open_tunnel(proxy, servers.source, preamble)
        with sock:
            cpu0 = _cpu_now(pid, servers)
            t0 = time.perf_counter()
            sock.sendall(struct.pack("!Q", size))
            got = 0
            recv_into = sock.recv_into
            while got < size:
                n = recv_into(buf)
                if not n:
                    break
                got += n
            t1 = time.perf_counter()
            cpu1 = _cpu_now(pid, servers)
    if got != size:
        raise RuntimeError(f"download: the client received {got} of {size} bytes")
    return _transfer(t1 - t0, cpu0, cpu1)


def _transfer(
    seconds: float,
    cpu0: tuple[float | None, float, float | None],
    cpu1: tuple[float | None, float, float | None],
) -> Transfer:
    def diff(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else b - a

    return Transfer(seconds, diff(cpu0[0], cpu1[0]), cpu1[1] - cpu0[1], diff(cpu0[2], cpu1[2]))


def setup_latency(
    proxy: tuple[str, int] | None, echo: tuple[str, int], count: int, timeout: float
) -> list[float]:
    """`count` times: connect, SOCKS5 handshake, 1-byte echo round trip, close; in µs."""
    samples = []
    with Timeout(timeout, "connection set-up"):
        for _ in range(count):
            t0 = time.perf_counter_ns()
            sock = open_tunnel(proxy, echo)
            sock.sendall(b"x")
            if sock.recv(1) != b"x":
                sock.close()
                raise RuntimeError("echo: wrong or missing answer")
            sock.close()
            samples.append((time.perf_counter_ns() - t0) / 1000)
    return samples


# ------------------------------------------------------------------------------------------
# the benchmark
# ------------------------------------------------------------------------------------------


@dataclass
class Contestant:
    key: str
    label: str
    address: tuple[str, int] | None  # None: the client goes straight to the server
    pid: int | None
    info: dict[str, object] = field(default_factory=dict)
    up: list[Transfer] = field(default_factory=list)
    down: list[Transfer] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    setup_cpu: float = 0.0  # proxy CPU seconds spent during the set-up test
    preamble: bytes = b""  # sent before each transfer (not timed)
    relay_pid: int | None = None  # a front: contestant's relay process
    relay_up: list[float | None] = field(default_factory=list)  # its CPU seconds per transfer
    relay_down: list[float | None] = field(default_factory=list)


ALL_CONTESTANTS = (
    "direct", "detour", "detour-baseline", "detour-asyncio", "detour-tlsfrag", "detour-front",
    "detour-front-nomux", "detour-front-baseline", "detour-front-capped",
    "detour-front-capped-baseline", "pproxy", "pproxy-asyncio", "microsocks",
)  # fmt: skip
LABELS = {
    "direct": "no proxy",
    "detour": "detour (uvloop)",
    "detour-baseline": "detour baseline",
    "detour-asyncio": "detour (asyncio)",
    "detour-tlsfrag": "detour tlsfrag:sni",
    "detour-front": "detour front: tunnel",
    "detour-front-nomux": "detour front: mux=off",
    "detour-front-baseline": "detour front: baseline",
    "detour-front-capped": "detour front: carrier=capped",
    "detour-front-capped-baseline": "detour front: carrier=capped, baseline",
    "pproxy": "pproxy (uvloop)",
    "pproxy-asyncio": "pproxy (asyncio)",
    "microsocks": "microsocks",
}


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def rotated(items: list[Contestant], start: int) -> list[Contestant]:
    start %= len(items)
    return items[start:] + items[:start]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def machine_info() -> dict[str, Any]:
    model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop_version: str | None = uvloop.__version__
    except ImportError:
        uvloop_version = None
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": (
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        ),
        "cpu": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "kernel": f"{platform.system()} {platform.release()}",
        "uvloop": uvloop_version,
        "loadavg_start": os.getloadavg()[0],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    wanted = [c for c in ALL_CONTESTANTS if c in args.contestants]
    machine = machine_info()
    command = shlex.join(sys.orig_argv)
    log(f"command: {command}")
    log(
        f"machine: {machine['nproc']} CPUs ({machine['cpu']}), {machine['kernel']}, "
        f"Python {machine['python']}, uvloop {machine['uvloop'] or 'not installed'}"
    )
    transfers = "no transfers" if args.setup_only else (
        f"{human_size(args.size)} up and down x {args.repeat} rounds"
    )  # fmt: skip
    log(
        f"plan: {transfers}, {args.connections} connection set-ups each; "
        f"contestants: {', '.join(wanted)}"
    )
    timeout = args.timeout
    if args.relay_cpu is not None:
        # Everything but the relay (this client, the servers, the proxies) on the other CPUs,
        # inherited by every process started from here; the relay alone on its own.
        others = set(os.sched_getaffinity(0)) - {args.relay_cpu}
        if not others or args.relay_cpu not in os.sched_getaffinity(0):
            raise SystemExit(f"--relay-cpu {args.relay_cpu}: needs that CPU and at least one more")
        os.sched_setaffinity(0, others)
        machine["relay_cpu"] = args.relay_cpu
        machine["other_cpus"] = sorted(others)
        log(f"relay on CPU {args.relay_cpu}; everything else on {sorted(others)}")
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="detour-bench-")))
        servers = stack.enter_context(run_servers())
        contestants: list[Contestant] = []
        skipped: dict[str, str] = {}
        for key in wanted:
            try:
                if key == "direct":
                    address, pid, info = None, None, {}
                elif key == "detour":
                    address, pid, info = stack.enter_context(run_detour(tmp, "uvloop"))
                elif key == "detour-baseline":
                    if args.baseline is None:
                        raise RuntimeError("give --baseline DIR (another checkout of detour)")
                    address, pid, info = stack.enter_context(
                        run_detour(tmp, "uvloop", label="baseline", root=args.baseline)
                    )
                elif key == "detour-asyncio":
                    address, pid, info = stack.enter_context(run_detour(tmp, "asyncio"))
                elif key == "detour-tlsfrag":
                    address, pid, info = stack.enter_context(
                        run_detour(tmp, "uvloop", "tlsfrag:sni")
                    )
                elif key in ("detour-front", "detour-front-nomux", "detour-front-baseline"):
                    baseline = key == "detour-front-baseline"
                    if baseline and args.baseline is None:
                        raise RuntimeError("give --baseline DIR (another checkout of detour)")
                    address, pid, info = stack.enter_context(
                        run_detour_front(
                            tmp,
                            mux=key != "detour-front-nomux",
                            relay_cpu=args.relay_cpu,
                            relay_rtt=args.relay_rtt,
                            root=args.baseline if baseline else ROOT,
                        )
                    )
                elif key in ("detour-front-capped", "detour-front-capped-baseline"):
                    baseline = key.endswith("-baseline")
                    if baseline and args.baseline is None:
                        raise RuntimeError("give --baseline DIR (another checkout of detour)")
                    address, pid, info = stack.enter_context(
                        run_detour_front(
                            tmp,
                            relay_cpu=args.relay_cpu,
                            relay_rtt=args.relay_rtt,
                            root=args.baseline if baseline else ROOT,
                            carrier="capped",
                        )
                    )
                elif key == "pproxy":
                    address, pid, info = stack.enter_context(run_pproxy(tmp, "uvloop"))
                elif key == "pproxy-asyncio":
                    address, pid, info = stack.enter_context(run_pproxy(tmp, "asyncio"))
                else:
                    address, pid, info = stack.enter_context(run_microsocks(servers))
            except RuntimeError as exc:
                skipped[key] = " ".join(str(exc).split())
                log(f"skipping {key}: {exc}")
                continue
            preamble = _client_hello() if key == "detour-tlsfrag" else b""
            relay_pid = info.pop("relay_pid", None)
            contestants.append(
                Contestant(
                    key, LABELS[key], address, pid, info, preamble=preamble, relay_pid=relay_pid
                )
            )
            if info:
                log(f"started {LABELS[key]}: {info}")

        # Warm-up: first connections, page faults, TCP buffer autotuning; not measured.
        warm = min(args.size, 32 << 20)
        for c in contestants:
            if not args.setup_only:
                upload(c.address, servers, warm, c.pid, timeout, c.preamble)
                download(c.address, servers, warm, c.pid, timeout, c.preamble)
            setup_latency(c.address, servers.echo, 200 if args.setup_only else 20, timeout)

        for rnd in range(0 if args.setup_only else args.repeat):
            for c in rotated(contestants, rnd):
                relay_cpu = [process_cpu_seconds(c.relay_pid)]
                up = upload(c.address, servers, args.size, c.pid, timeout, c.preamble)
                relay_cpu.append(process_cpu_seconds(c.relay_pid))
                down = download(c.address, servers, args.size, c.pid, timeout, c.preamble)
                relay_cpu.append(process_cpu_seconds(c.relay_pid))
                c.up.append(up)
                c.down.append(down)
                if None not in relay_cpu:  # the relay's CPU (set-up included: a few ms)
                    c.relay_up.append(relay_cpu[1] - relay_cpu[0])  # type: ignore[operator]
                    c.relay_down.append(relay_cpu[2] - relay_cpu[1])  # type: ignore[operator]
                log(
                    f"round {rnd + 1}/{args.repeat} {c.label:17} "
                    f"up {up.mbps(args.size):8.1f} MB/s  down {down.mbps(args.size):8.1f} MB/s"
                )

        # Set-up latency, in batches interleaved round-robin like the transfers.
        batch = max(1, min(50, args.connections))
        done = 0
        rnd = 0
        while done < args.connections:
            n = min(batch, args.connections - done)
            for c in rotated(contestants, rnd):
                cpu0 = process_cpu_seconds(c.pid)
                c.latency += setup_latency(c.address, servers.echo, n, timeout)
                cpu1 = process_cpu_seconds(c.pid)
                if cpu0 is not None and cpu1 is not None:
                    c.setup_cpu += cpu1 - cpu0
            done += n
            rnd += 1
        for c in contestants:
            log(
                f"set-up {c.label:17} median {median(c.latency):7.0f} µs  "
                f"p90 {percentile(c.latency, 0.9):7.0f} µs"
            )
    machine["loadavg_end"] = os.getloadavg()[0]
    return summarize(args, command, machine, contestants, skipped)


def summarize(
    args: argparse.Namespace,
    command: str,
    machine: dict[str, Any],
    contestants: list[Contestant],
    skipped: dict[str, str],
) -> dict[str, Any]:
    size = args.size
    by_key = {c.key: c for c in contestants}
    results: dict[str, dict[str, Any]] = {}
    direct = by_key.get("direct")
    direct_lat = median(direct.latency) if direct else None

    def per_gib(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return median(known) * GIB / size if known else None

    for c in contestants:
        entry: dict[str, Any] = {"label": c.label, **c.info}
        for name, runs, relay_runs in (
            ("upload", c.up, c.relay_up),
            ("download", c.down, c.relay_down),
        ):
            rates = [t.mbps(size) for t in runs]
            entry[name] = {
                "relay_cpu_s_per_gib": per_gib(list(relay_runs)),
                "median_mbps": median(rates) if rates else None,
                "runs_mbps": rates,
                "seconds": [t.seconds for t in runs],
                "proxy_cpu_s_per_gib": per_gib([t.proxy_cpu for t in runs]),
                "client_cpu_s_per_gib": per_gib([t.client_cpu for t in runs]),
                "server_cpu_s_per_gib": per_gib([t.server_cpu for t in runs]),
            }
        lat_median = median(c.latency)
        entry["setup"] = {
            "count": len(c.latency),
            "median_us": lat_median,
            "p90_us": percentile(c.latency, 0.9),
            "overhead_us": lat_median - direct_lat if direct_lat is not None else None,
            # /proc counts CPU time in 10 ms ticks: too coarse for a few connections.
            "proxy_cpu_us_per_connection": (
                c.setup_cpu / len(c.latency) * 1e6
                if c.pid is not None and len(c.latency) >= 200
                else None
            ),
        }
        results[c.key] = entry
    # Set-up CPU per connection relative to microsocks', measured in the same run.
    reference = results.get("microsocks", {}).get("setup", {}).get("proxy_cpu_us_per_connection")
    for entry in results.values():
        own = entry["setup"]["proxy_cpu_us_per_connection"]
        entry["setup"]["cpu_vs_microsocks"] = (
            own / reference if own is not None and reference else None
        )

    def ratio(a: str, b: str, direction: str) -> float | None:
        if a not in results or b not in results:
            return None
        if results[a][direction]["median_mbps"] is None:
            return None
        return results[a][direction]["median_mbps"] / results[b][direction]["median_mbps"]

    def round_ratios(a: str, b: str, direction: str) -> list[float] | None:
        """a / b within each round, where the two ran back to back under the same noise."""
        if a not in by_key or b not in by_key:
            return None
        runs_a = by_key[a].up if direction == "upload" else by_key[a].down
        runs_b = by_key[b].up if direction == "upload" else by_key[b].down
        if not runs_a:
            return None
        return [rb.seconds / ra.seconds for ra, rb in zip(runs_a, runs_b, strict=True)]

    def cpu_ratio(a: str, b: str) -> float | None:
        """How many times more proxy CPU per byte `b` needs than `a` (both directions)."""
        if a not in results or b not in results:
            return None
        cpu = [results[k][d]["proxy_cpu_s_per_gib"] for k in (a, b) for d in ("upload", "download")]
        if None in cpu or cpu[0] + cpu[1] == 0:
            return None
        return (cpu[2] + cpu[3]) / (cpu[0] + cpu[1])

    ratios = {
        subject: {
            other: {d: ratio(subject, other, d) for d in ("upload", "download")}
            for other, _, _ in BARS
        }
        for subject in ("detour", "detour-asyncio")
        if subject in results
    }
    bars = []
    for other, label, bar in BARS:
        for direction in ("upload", "download"):
            value = ratio(BAR_SUBJECT, other, direction)
            bars.append(
                {
                    "against": other,
                    "label": label,
                    "direction": direction,
                    "bar": bar,
                    "ratio": value,
                    "met": None if value is None else value >= bar,
                    "per_round": round_ratios(BAR_SUBJECT, other, direction),
                }
            )
    ratios.update(_capped_ratios(results, ratio))
    return {
        "date": datetime.datetime.now(datetime.UTC).date().isoformat(),
        "command": command,
        "machine": machine,
        "size_bytes": size,
        "setup_only": args.setup_only,
        "repeat": args.repeat,
        "connections": args.connections,
        "chunk_bytes": CHUNK,
        "results": results,
        "skipped": skipped,
        "ratios": ratios,
        "cpu_efficiency": {
            other: cpu_ratio(BAR_SUBJECT, other)
            for other in ("pproxy", "pproxy-asyncio", "microsocks")
        },
        "bars": bars,
    }


# ------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------


def _capped_ratios(
    results: dict[str, dict[str, Any]], ratio: Callable[[str, str, str], float | None]
) -> dict[str, Any]:
    """The capped carrier mode against no proxy and against the long tunnel: throughput
    ratios each way, and connection set-up as a ratio of median times (higher is slower)."""
    subject = "detour-front-capped"
    if subject not in results:
        return {}
    out: dict[str, Any] = {}
    for other in ("direct", "detour-front", "detour-front-capped-baseline"):
        if other not in results:
            continue
        entry: dict[str, Any] = {d: ratio(subject, other, d) for d in ("upload", "download")}
        mine, theirs = results[subject].get("setup"), results[other].get("setup")
        if mine and theirs and theirs.get("median_us"):
            entry["setup_time"] = mine["median_us"] / theirs["median_us"]
        out[other] = entry
    return {subject: out}


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def _transfer_tables(report: dict[str, Any]) -> list[str]:
    results: dict[str, dict[str, Any]] = report["results"]
    lines = [
        f"Relay throughput, {human_size(report['size_bytes'])} per transfer, median of "
        f"{report['repeat']} interleaved rounds (MB/s = 10^6 bytes/s; proxy CPU = seconds of "
        f"CPU the proxy process used per GiB relayed):",
        "",
        _row("contestant", "upload MB/s", "download MB/s", "vs no proxy (up / down)",
             "proxy CPU s/GiB (up / down)"),
        "|---|---:|---:|---:|---:|",
    ]  # fmt: skip
    direct = results.get("direct")
    for entry in results.values():
        up, down = entry["upload"], entry["download"]
        rel = "n/a"
        if direct is not None:
            rel = (
                f"{up['median_mbps'] / direct['upload']['median_mbps']:.2f}x / "
                f"{down['median_mbps'] / direct['download']['median_mbps']:.2f}x"
            )
        cpu = "–"
        if up["proxy_cpu_s_per_gib"] is not None:
            cpu = f"{up['proxy_cpu_s_per_gib']:.2f} / {down['proxy_cpu_s_per_gib']:.2f}"
        lines.append(
            _row(entry["label"], f"{up['median_mbps']:.0f}", f"{down['median_mbps']:.0f}", rel, cpu)
        )
    relays = [e for e in results.values() if e["upload"].get("relay_cpu_s_per_gib") is not None]
    if relays:
        lines += ["", "The front: contestants' relay process, CPU s/GiB (up / down):", ""]
        lines += [
            f"- {e['label']}: {e['upload']['relay_cpu_s_per_gib']:.2f} / "
            f"{e['download']['relay_cpu_s_per_gib']:.2f}"
            for e in relays
        ]
    lines += ["", *_setup_table(report)]
    lines += [
        "",
        "Bar for detour (uvloop) on this machine: ratio of the median throughputs; in brackets "
        "the lowest and highest ratio within one round (the two ran back to back):",
        "",
        "| detour / ... | bar | upload | download | met |",
        "|---|---:|---:|---:|---|",
    ]
    for other, label, bar in BARS:
        rows = {b["direction"]: b for b in report["bars"] if b["against"] == other}
        met = [rows[d]["met"] for d in ("upload", "download")]
        verdict = "n/a" if None in met else ("yes" if all(met) else "**no**")
        cells = []
        for d in ("upload", "download"):
            cell = _fmt(rows[d]["ratio"], ".2f", "x")
            if rows[d]["per_round"]:
                cell += f" ({min(rows[d]['per_round']):.2f}–{max(rows[d]['per_round']):.2f})"
            cells.append(cell)
        lines.append(_row(label, f"{bar:g}x", cells[0], cells[1], verdict))
    ratios = report["ratios"]
    if "detour-asyncio" in ratios:
        parts = [
            f"{label} {_fmt(ratios['detour-asyncio'][other]['upload'], '.2f', 'x')} / "
            f"{_fmt(ratios['detour-asyncio'][other]['download'], '.2f', 'x')}"
            for other, label, _ in BARS
        ]
        lines += ["", "detour with DETOUR_LOOP=asyncio, up / down: " + "; ".join(parts) + "."]
    parts = [f"{LABELS[k]} {v:.1f}x" for k, v in report["cpu_efficiency"].items() if v is not None]
    if parts:
        lines += [
            "",
            "Proxy CPU per byte relayed, relative to detour (uvloop), both directions: "
            + "; ".join(parts)
            + ".",
        ]
    return lines


def _setup_table(report: dict[str, Any]) -> list[str]:
    results: dict[str, dict[str, Any]] = report["results"]
    lines = [
        f"Connection set-up: connect + SOCKS5 handshake + 1-byte echo + close, "
        f"{report['connections']} sequential connections each:",
        "",
        _row("contestant", "median µs", "p90 µs", "overhead vs no proxy (median)",
             "proxy CPU µs/connection", "CPU vs microsocks"),
        "|---|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for key, entry in results.items():
        setup = entry["setup"]
        overhead = "–" if key == "direct" else _fmt(setup["overhead_us"], "+.0f", " µs")
        cpu = "–" if key == "direct" else _fmt(setup["proxy_cpu_us_per_connection"], ".0f")
        versus = "–" if key == "direct" else _fmt(setup["cpu_vs_microsocks"], ".2f", "x")
        lines.append(
            _row(
                entry["label"],
                f"{setup['median_us']:.0f}",
                f"{setup['p90_us']:.0f}",
                overhead,
                cpu,
                versus,
            )
        )
    return lines


def markdown(report: dict[str, Any]) -> str:
    results: dict[str, dict[str, Any]] = report["results"]
    machine: dict[str, Any] = report["machine"]
    lines = _setup_table(report) if report.get("setup_only") else _transfer_tables(report)
    versions = []
    for key in ("detour", "detour-baseline", "pproxy", "pproxy-asyncio", "microsocks"):
        if key in results:
            entry = results[key]
            name = "detour" if key == "detour" else entry["label"]
            if entry.get("source"):
                name += f" (from {entry['source']})"
            version = entry.get("version")
            text = f"{name} {version}" if version else name
            if entry.get("uvloop") is not None:
                text += f" on {'uvloop' if entry['uvloop'] else 'asyncio'}"
            versions.append(text)
    lines += [
        "",
        f"Machine: {machine['nproc']} CPUs ({machine['cpu']}), {machine['kernel']}, "
        f"{machine['implementation']} {machine['python']}, "
        f"uvloop {machine['uvloop'] or 'not installed'}; load average "
        f"{machine['loadavg_start']:.2f} at start, {machine['loadavg_end']:.2f} at end.",
        f"Contestants: {'; '.join(versions)}.",
        f"Command: `{report['command']}`",
    ]
    for key, why in report["skipped"].items():
        lines.append(f"Skipped {key}: {why}")
    lines += _capped_lines(report)
    return "\n".join(lines)


def _capped_lines(report: dict[str, Any]) -> list[str]:
    capped = report.get("ratios", {}).get("detour-front-capped")
    if not capped:
        return []
    lines = ["", "front: carrier=capped as a ratio of:", ""]
    lines += [_row("against", "upload", "download", "set-up time"), "|---|---:|---:|---:|"]
    for other, entry in capped.items():
        lines.append(
            _row(
                LABELS.get(other, other),
                _fmt(entry.get("upload"), ".3f", "x"),
                _fmt(entry.get("download"), ".3f", "x"),
                _fmt(entry.get("setup_time"), ".2f", "x"),
            )
        )
    return lines


# ------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/relay.py",
        description="Relay throughput and connection set-up: detour vs no proxy, pproxy, "
        "microsocks.",
    )
    parser.add_argument(
        "--size", type=parse_size, default=GIB, help="bytes per transfer (default 1G; e.g. 256M)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument(
        "--baseline", type=Path, metavar="DIR",
        help="also run detour from the source tree DIR (e.g. `git worktree add DIR main`), as "
        "the contestant detour-baseline: a before/after comparison in one run",
    )  # fmt: skip
    parser.add_argument(
        "--setup-only", action="store_true",
        help="measure connection set-up only (no transfers): latency and the proxies' CPU per "
        "connection, with more warm-up connections",
    )  # fmt: skip
    parser.add_argument(
        "--connections", type=int, default=500, metavar="N",
        help="sequential connection set-ups per contestant (default 500)",
    )  # fmt: skip
    parser.add_argument(
        "--contestants", type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
        default=[c for c in ALL_CONTESTANTS if not c.endswith("-baseline")],
        help=f"comma-separated subset of {','.join(ALL_CONTESTANTS)} (default: all but the "
        "baselines: --baseline adds detour-baseline; name detour-front-baseline or "
        "detour-front-capped-baseline to compare the front: tunnel too)",
    )  # fmt: skip
    parser.add_argument(
        "--json", nargs="?", const="-", metavar="FILE",
        help="write the results as JSON to FILE; without FILE, JSON goes to stdout and the "
        "Markdown report to stderr",
    )  # fmt: skip
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds allowed per transfer (default 600)"
    )
    parser.add_argument(
        "--relay-cpu", type=int, metavar="N",
        help="run the front: contestants' relay alone on CPU N and everything else on the "
        "other CPUs (the relay stands for a server elsewhere; it does not compete with the "
        "client side for CPU)",
    )  # fmt: skip
    parser.add_argument(
        "--relay-rtt", type=float, default=0.0, metavar="MS",
        help="put a delay line of MS milliseconds round trip between detour and the front: "
        "contestants' relay (for connection set-up on a long path; the transfer figures "
        "then measure the delay line, not detour)",
    )  # fmt: skip
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--delay-line", nargs=2, metavar=("PORT", "MS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.connections < 1:
        parser.error("--repeat and --connections must be at least 1")
    unknown = set(args.contestants) - set(ALL_CONTESTANTS)
    if unknown:
        parser.error(f"unknown contestants: {', '.join(sorted(unknown))}")
    if "direct" not in args.contestants:
        args.contestants.insert(0, "direct")  # every ratio is relative to it
    if args.baseline is not None:
        args.baseline = args.baseline.resolve()
        if not (args.baseline / "helper" / "__main__.py").is_file():
            parser.error(f"--baseline {args.baseline}: not a detour source tree")
        if "detour-baseline" not in args.contestants:
            args.contestants.append("detour-baseline")
    return args


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through every finally: children are stopped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        serve_main()
        return 0
    if args.delay_line:
        delay_line_main(int(args.delay_line[0]), float(args.delay_line[1]))
        return 0
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    try:
        report = run(args)
    except KeyboardInterrupt:
        log("interrupted; every process this benchmark started has been stopped")
        return 130
    text = markdown(report)
    if args.json == "-":
        print(text, file=sys.stderr)
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        print(text)
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
            log(f"JSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
