#!/usr/bin/env python3
"""The fronted tunnel's CPU per GiB in one process, on uvloop: a `front:` dialer, a relay
serving HTTPS itself, an origin that sinks or sources, all in one event loop. The process's
CPU time per GiB is the tunnel's both ends (four TLS passes, WebSocket, multiplexing) plus a
little for the origin; one process is steadier than benchmarks/relay.py's four on a busy
machine, and py-spy sees the whole path in one profile. The detour tree is the current
directory's, so a before/after runs the same file from two checkouts:

    .venv/bin/python benchmarks/front_cpu.py 256 mux        # MiB each way; mux or nomux
    .venv/bin/python benchmarks/front_cpu.py 4 capped       # carrier=capped (KiB-sized carriers)
    (cd OTHER && /path/.venv/bin/python /path/benchmarks/front_cpu.py 256 mux)
    py-spy record -r 300 -- .venv/bin/python benchmarks/front_cpu.py 256 mux
"""

import asyncio
import os
import ssl
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.getcwd())
import uvloop

from helper.lab.ca import LabCA
from helper.relay.config import parse_relay_config
from helper.relay.keys import RelayKeys
from helper.relay.server import RelayServer
from transports import DialOptions, Endpoint, parse_chain

SIZE = (int(sys.argv[1]) if len(sys.argv) > 1 else 256) << 20
MODE = sys.argv[2] if len(sys.argv) > 2 else "mux"
MUX = {"mux": "", "nomux": ";mux=off", "capped": ";carrier=capped"}[MODE]
RELAY = """
[relay]
listen = "127.0.0.1:0"
state = "{tmp}/state"
tls_cert = "{cert}"
tls_key = "{key}"
[destinations]
allow = "any"
public = ["127.0.0.0/8"]
"""


async def origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A mode byte (0: sink and acknowledge the count, 1: source) and a size (8 bytes)."""
    head = await reader.readexactly(9)
    mode, size = head[0], int.from_bytes(head[1:], "big")
    if mode == 0:
        got = 0
        while got < size and (data := await reader.read(1 << 20)):
            got += len(data)
        writer.write(got.to_bytes(8, "big"))
    else:
        block = bytes(1 << 18)
        for start in range(0, size, len(block)):
            writer.write(block[: size - start])
            await writer.drain()
    await writer.drain()
    writer.close()


async def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="detour-front-cpu-"))
    ca = LabCA(tmp / "ca")
    cert, key = ca.issue("relay.bench.test")
    server = await asyncio.start_server(origin, "127.0.0.1", 0)
    target = Endpoint("127.0.0.1", server.sockets[0].getsockname()[1])
    config = parse_relay_config(RELAY.format(tmp=tmp, cert=cert, key=key))
    keys = RelayKeys(config.state)
    keys.generate()
    relay = RelayServer(config, keys)
    _, port = await relay.start()
    name = "relay.bench.test"
    access = keys.add_client("bench", Endpoint("127.0.0.1", port), name, name)
    tls = ssl.create_default_context(cafile=str(ca.ca_path))
    dialer = parse_chain("front:" + access.encode() + MUX).build(DialOptions(tls=tls))
    for mode in (0, 1):
        stream = await dialer.dial(target)
        began, cpu = time.monotonic(), time.process_time()
        stream.write(bytes([mode]) + SIZE.to_bytes(8, "big"))
        if mode == 0:
            block = bytes(1 << 18)
            for _ in range(0, SIZE, len(block)):
                stream.write(block)
                await stream.drain()
            answer = b""
            while len(answer) < 8 and (data := await stream.read(8)):
                answer += data
        else:
            got = 0
            while got < SIZE and (data := await stream.read(1 << 20)):
                got += len(data)
        wall, cpu = time.monotonic() - began, time.process_time() - cpu
        direction = "up  " if mode == 0 else "down"
        per_gib = cpu / (SIZE / (1 << 30))
        print(f"{direction} {SIZE / wall / 1e6:7.2f} MB/s  cpu {per_gib:.2f} s/GiB")
        stream.close()
    for session in getattr(dialer, "sessions", []):
        capped = getattr(session, "capped", None)
        if capped is not None:
            print(f"carriers opened {capped.carriers_opened}, lost {capped.carriers_lost}")
    carrier = getattr(dialer, "carrier", None)
    timings = list(getattr(carrier, "timings", ()))
    if timings:
        # Where a carrier's time goes: the median of each step's end, from its start.
        steps = ("tcp", "tls_turn", "tls", "upgrade", "welcome")
        medians = {s: sorted(t.get(s, 0.0) for t in timings)[len(timings) // 2] for s in steps}
        print(
            "carrier steps (median ms from the start): "
            + ", ".join(f"{s} {medians[s] * 1000:.1f}" for s in steps)
            + f"; resumed {carrier.resumed}, early hellos {carrier.early_carriers}"
        )
    await relay.stop(grace=0.1)


uvloop.run(main())
