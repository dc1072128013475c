"""The relay's decoy holds against malformed requests: whatever a prober sends inside TLS, the
answer looks like the web server the decoy claims to be (`Server: nginx`, an nginx-style error
page), never like the Python program behind it, and the relay's log is not flooded with
tracebacks. (Well-formed probes -- paths, wrong keys, stale tokens -- are covered in
tests/integration/test_fronted.py.)"""

from __future__ import annotations

import asyncio
import random
import ssl
from pathlib import Path

import pytest

from tests.reliability import harness

JUNK = [
    b"garbage\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"\x00\x01\x02\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nbad header\r\n\r\n",
    b"SSH-2.0-OpenSSH_9.6\r\n",
    b"\x16\x03\x01\x00\x05hello",
]
FINGERPRINTS = [b"aiohttp", b"Python", b"detour", b"relay", b"Traceback"]


async def answer(relay: harness.Relay, data: bytes) -> bytes:
    context = ssl.create_default_context(cafile=str(relay.ca_path))
    reader, writer = await asyncio.open_connection(
        *relay.process.address, ssl=context, server_hostname="relay.reliability.test"
    )
    writer.write(data)
    got = b""
    try:
        async with asyncio.timeout(5):
            while chunk := await reader.read(65536):
                got += chunk
    except (TimeoutError, ConnectionError, ssl.SSLError):
        pass
    writer.close()
    return got


@pytest.mark.timeout(120)
def test_malformed_requests_meet_the_decoy(tmp_path: Path) -> None:
    relay = harness.relay(tmp_path)
    rng = random.Random(1)
    inputs = JUNK + [rng.randbytes(rng.randrange(1, 300)) + b"\r\n\r\n" for _ in range(20)]
    with harness.running(relay.process):

        async def probe() -> list[tuple[bytes, bytes]]:
            return [(data, await answer(relay, data)) for data in inputs]

        answers = asyncio.run(probe())
        output = relay.process.output
        assert relay.process.alive(), output
    for data, got in answers:
        if not got:
            continue  # closing without a word is what a web server does with some junk too
        head = got.split(b"\r\n\r\n", 1)[0]
        assert got.startswith(b"HTTP/1.1 "), (data[:40], got[:200])  # as nginx answers
        assert b"\r\nServer: nginx\r\n" in head, (data[:40], head)
        for mark in FINGERPRINTS:
            assert mark not in got, (data[:40], got[:300])
    assert "Traceback" not in output and " ERROR " not in output, output
