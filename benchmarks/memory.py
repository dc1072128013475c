#!/usr/bin/env python3
"""Resident memory of `detour run --headless`: idle, and holding 1,000 client connections.

    .venv/bin/python benchmarks/memory.py                    # uvloop and asyncio, 1,000 conns
    .venv/bin/python benchmarks/memory.py --connections 300  # a quicker run
    .venv/bin/python benchmarks/memory.py --json out.json    # also write the raw numbers

What runs, each in its own process, so that detour's process holds only detour:

* an echo server (this file with ``--serve``) on 127.0.0.1, on asyncio;
* detour as a subprocess, once on uvloop (the default) and once with DETOUR_LOOP=asyncio,
  with a router-style config: the built-in config's services (without their probes, so the
  benchmark sends nothing beyond loopback) and the routes ``direct`` and ``tlsfrag:sni``;
* this script is the client: blocking sockets, one SOCKS5 handshake each, to the echo server
  (which belongs to no service, so the default policy's ``direct`` carries it).

Measured from /proc/PID/status (Linux only): VmRSS (resident now) and VmHWM (the peak), at

1. idle: 2 s after "listening on";
2. N connections open and relayed, nothing moving;
3. the same N connections after a little traffic: 4 rounds of 4 KiB echoed on each;
4. after the client closed them all (what detour gives back);
5. the same again with a second wave of N connections (memory that grows from wave to wave
   would be a leak);
6. idle again, in new processes, with the status API, with the WhatsApp proxy (first when it
   makes its certificate, then when it finds it kept), and with both.

Figures are in MB (10^6 bytes). The bars (docs/performance.md): at most 40 MB idle, at most
120 MB with 1,000 connections (the peak, VmHWM, counts).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import datetime
import json
import os
import platform
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HOST = "127.0.0.1"
MB = 1_000_000
BAR_IDLE = 40 * MB
BAR_CONNECTIONS = 120 * MB
ROUNDS, ROUND_BYTES = 4, 4096
START_TIMEOUT = 20.0
PR_SET_PDEATHSIG = 1
LOOPS = (("uvloop", "auto"), ("asyncio", "asyncio"))


def log(message: str) -> None:
    print(f"[memory] {message}", file=sys.stderr, flush=True)


def _die_with_parent() -> None:
    """Children die with the benchmark even if it is killed (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def raise_nofile(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < needed:
            raise SystemExit(f"need {needed} open files, the hard limit is {hard}")


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of `pid`, in bytes."""
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) * 1024
    return fields


# --- the echo server ------------------------------------------------------------------------


def serve_main() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(echo, HOST, 0, backlog=4096)
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    asyncio.run(main())


def start_echo() -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve"],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=_die_with_parent,
    )
    assert process.stdout is not None
    return process, int(process.stdout.readline())


# --- detour ---------------------------------------------------------------------------------


def router_config(port: int) -> str:
    """The built-in config's services without probes, routes direct and tlsfrag:sni, and
    connection limits above what the benchmark opens."""
    from helper.config import default_config_text

    text = default_config_text()
    text = re.sub(r"(?ms)^probes = \[.*?^\]\n", "", text)
    # One client (this script) holds every connection: above the default per-client limit.
    text = text.replace(
        'mixed = "127.0.0.1:1080"',
        f'mixed = "{HOST}:{port}"\nmax_connections = 10000\nmax_connections_per_client = 10000',
    )
    if 'name = "tls-fragment"' in text:  # the built-in config has it since 2026-12
        return text
    return text + '\n[[route]]\nname = "tls-fragment"\nchain = "tlsfrag:sni"\n'


# Everything else a router may turn on, each on a free loopback port.
EXTRAS = {
    "api": '[api]\nlisten = "127.0.0.1:0"\n',
    "whatsapp": (
        '[whatsapp_proxy]\nlisten = "127.0.0.1"\n'
        "tls_port = 0\nchat_port = 0\nhttp_port = 0\nmedia_ports = [0]\n"
    ),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def start_detour(config: Path, port: int, loop: str, log_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DETOUR_LOOP": loop, "PYTHONUNBUFFERED": "1"}
    env["DETOUR_STATE_DIR"] = str(config.parent / "state")
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "helper", "run", "--headless", "-c", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
            preexec_fn=_die_with_parent,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while "listening on" not in log_path.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"detour did not start:\n{log_path.read_text(errors='replace')}")
        time.sleep(0.05)
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if detour has not exited within 30 s."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def socks5_connect(proxy: tuple[str, int], port: int) -> socket.socket:
    sock = socket.create_connection(proxy, timeout=30)
    # v5 1 method: no auth | v5 CONNECT rsv IPv4 127.0.0.1 port
    sock.sendall(b"\x05\x01\x00\x05\x01\x00\x01\x7f\x00\x00\x01" + struct.pack("!H", port))
    reply = b""
    while len(reply) < 12:
        data = sock.recv(12 - len(reply))
        if not data:
            raise ConnectionError("detour closed the connection during the handshake")
        reply += data
    if reply[:4] != b"\x05\x00\x05\x00":
        raise ConnectionError(f"SOCKS5 refused: {reply.hex()}")
    return sock


def recv_exactly(sock: socket.socket, n: int) -> None:
    while n:
        data = sock.recv(n)
        if not data:
            raise ConnectionError("connection closed mid-echo")
        n -= len(data)


def measure_idle(name: str, loop: str, extra: str, workdir: Path) -> dict[str, int]:
    """Idle memory with `extra` config sections on (state kept in `workdir`/state)."""
    port = free_port()
    config = workdir / f"detour-{name}-idle.toml"
    config.write_text(router_config(port) + "\n" + extra)
    log_path = workdir / f"detour-{name}-idle.log"
    process = start_detour(config, port, loop, log_path)
    try:
        time.sleep(2)
        return memory(process.pid)
    finally:
        stop(process)


def measure(
    name: str, loop: str, connections: int, echo_port: int, workdir: Path, waves: int = 2
) -> dict[str, Any]:
    port = free_port()
    config = workdir / f"detour-{name}.toml"
    config.write_text(router_config(port))
    log_path = workdir / f"detour-{name}.log"
    process = start_detour(config, port, loop, log_path)
    result: dict[str, Any] = {}
    socks: list[socket.socket] = []

    def note(key: str) -> None:
        result[key] = memory(process.pid)
        log(f"{name}: {key} {result[key]['VmRSS'] / MB:.1f} MB")

    try:
        time.sleep(2)
        note("idle")
        for wave in range(1, waves + 1):
            suffix = "" if wave == 1 else f"_{wave}"
            for _ in range(connections):
                socks.append(socks5_connect((HOST, port), echo_port))
            time.sleep(1)
            note(f"open{suffix}")
            payload = os.urandom(ROUND_BYTES)
            for _ in range(ROUNDS):
                for sock in socks:
                    sock.sendall(payload)
                for sock in socks:
                    recv_exactly(sock, ROUND_BYTES)
            time.sleep(1)
            note(f"traffic{suffix}")
            for sock in socks:
                sock.close()
            socks.clear()
            deadline = time.monotonic() + 30
            while log_path.read_text(errors="replace").count(" closed") < wave * connections:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            time.sleep(1)
            note(f"closed{suffix}")
    finally:
        for sock in socks:
            sock.close()
        stop(process)
    return result


def markdown(report: dict[str, Any]) -> str:
    n = report["connections"]
    loops = [name for name, _ in LOOPS if name in report["results"]]
    rows = [
        ("idle", "idle after start"),
        ("open", f"{n:,} connections open"),
        ("traffic", f"{n:,} connections, after {ROUNDS}x{ROUND_BYTES // 1024} KiB echoed"),
        ("closed", "after they closed"),
    ]
    waves = report.get("waves", 2)
    for wave in range(2, waves + 1):
        rows += [
            (f"traffic_{wave}", f"wave {wave} of {n:,}, after its traffic"),
            (f"closed_{wave}", f"after wave {wave} closed"),
        ]
    rows += [
        ("idle_api", "idle, with the status API (`[api]`)"),
        ("idle_whatsapp_new", "idle, WhatsApp proxy making its certificate"),
        ("idle_whatsapp", "idle, WhatsApp proxy (certificate kept)"),
        ("idle_all", "idle, status API and WhatsApp proxy"),
    ]
    head = "| | " + " | ".join(f"{loop} VmRSS | {loop} VmHWM" for loop in loops) + " |"
    lines = [
        f"detour {report['detour']}, Python {report['python']}, {report['machine']}, "
        f"{report['date']}",
        "",
        head,
        "|---|" + "---:|" * (2 * len(loops)),
    ]
    for key, label in rows:
        cells = []
        if not all(key in report["results"][loop] for loop in loops):
            continue
        for loop in loops:
            values = report["results"][loop][key]
            cells += [f"{values['VmRSS'] / MB:.1f} MB", f"{values['VmHWM'] / MB:.1f} MB"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    for loop in loops:
        values = report["results"][loop]
        idle = values["idle"]["VmRSS"]
        peak = max(v["VmHWM"] for k, v in values.items() if k.startswith("traffic"))
        per = (values["traffic"]["VmRSS"] - idle) / n / 1000
        lines.append(
            f"- {loop}: idle {idle / MB:.1f} MB (bar {BAR_IDLE // MB} MB: "
            f"{'met' if idle <= BAR_IDLE else 'MISSED'}); peak with {n:,} connections "
            f"{peak / MB:.1f} MB (bar {BAR_CONNECTIONS // MB} MB: "
            f"{'met' if peak <= BAR_CONNECTIONS else 'MISSED'}); about {per:.1f} kB per "
            "connection"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from helper import __version__

    raise_nofile(2 * args.connections + 256)  # inherited by detour and the echo server
    echo, echo_port = start_echo()
    results = {}
    try:
        with tempfile.TemporaryDirectory(prefix="detour-memory-") as tmp:
            for name, value in LOOPS:
                if name in args.loops:
                    results[name] = measure(
                        name, value, args.connections, echo_port, Path(tmp), args.waves
                    )
                    # The status API, and the WhatsApp proxy: first when it makes its
                    # certificate, then when it finds it in the state directory.
                    extra = Path(tmp) / f"extra-{name}"
                    extra.mkdir()
                    results[name]["idle_api"] = measure_idle(name, value, EXTRAS["api"], extra)
                    for key in ("idle_whatsapp_new", "idle_whatsapp"):
                        results[name][key] = measure_idle(name, value, EXTRAS["whatsapp"], extra)
                    both = EXTRAS["api"] + EXTRAS["whatsapp"]
                    results[name]["idle_all"] = measure_idle(name, value, both, extra)
    finally:
        echo.terminate()
        echo.wait()
    return {
        "detour": __version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "date": datetime.date.today().isoformat(),
        "connections": args.connections,
        "waves": args.waves,
        "results": results,
    }


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through every finally: children are stopped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks/memory.py",
        description="Resident memory of detour run --headless: idle and with N connections.",
    )
    parser.add_argument("--connections", type=int, default=1000, metavar="N", help="(default 1000)")
    parser.add_argument(
        "--loops",
        type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
        default=[name for name, _ in LOOPS],
        help="comma-separated subset of uvloop,asyncio (default: both)",
    )
    parser.add_argument(
        "--waves", type=int, default=2, choices=range(2, 11), metavar="N",
        help="waves of N connections, one after the other (default 2; 2-10)",
    )  # fmt: skip
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve_main()
        return 0
    if not sys.platform.startswith("linux"):
        parser.error("reads /proc/PID/status: Linux only")
    signal.signal(signal.SIGTERM, _terminate)
    report = run(args)
    print(markdown(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
