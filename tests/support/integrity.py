"""An exchange that proves bytes arrive intact both ways, and that half-close works.

    client -> server   REQUEST: want (8 bytes, big-endian), seed (8), expect (8)
    client -> server   the client's payload: `expect` bytes, or with expect = UNTIL_EOF any
                       length followed by the client shutting down its writing side
    server -> client   `want` bytes of seeded random data, sent while the payload arrives
    server -> client   once the payload is complete: sha256 of everything it received
    server             closes

The client checks the sha256 of what it received against the seeded data it expected and
the server's digest against what it sent. In UNTIL_EOF mode the digest comes only after the
client's shutdown, so a pass also shows that a client that stops writing still receives the
full reply (half-close carried end to end).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import struct
from dataclasses import dataclass

CHUNK = 1 << 20
UNTIL_EOF = (1 << 64) - 1


def seeded_chunks(size: int, seed: int):
    rng = random.Random(seed)
    left = size
    while left:
        n = min(CHUNK, left)
        yield rng.randbytes(n)
        left -= n


async def serve_integrity(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    received: dict[int, int] | None = None,
) -> None:
    """`received`: given, how many payload bytes each connection's client sent, by the
    request's seed (the client's seed + 1), once its payload has ended -- so a failed
    exchange can say how much of the upload arrived."""
    try:
        want, seed, expect = struct.unpack("!QQQ", await reader.readexactly(24))

        async def send() -> None:
            for chunk in seeded_chunks(want, seed):
                writer.write(chunk)
                await writer.drain()

        async def receive() -> bytes:
            digest = hashlib.sha256()
            left, size = expect, 0
            while left:
                data = await reader.read(min(CHUNK, left))
                if not data:
                    break
                digest.update(data)
                size += len(data)
                if expect != UNTIL_EOF:
                    left -= len(data)
            if received is not None:
                received[seed] = size
            return digest.digest()

        _, received = await asyncio.gather(send(), receive())
        writer.write(received)
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass  # the client gave up; its side of the test reports the failure
    finally:
        writer.close()


@dataclass
class IntegrityResult:
    sent: int
    received: int
    ok_down: bool  # what the client received is what the server sent
    ok_up: bool  # what the server received is what the client sent

    @property
    def ok(self) -> bool:
        return self.ok_down and self.ok_up


async def run_integrity(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up: int,
    down: int,
    seed: int = 1,
    half_close: bool = True,
) -> IntegrityResult:
    """Run the exchange over an already-connected (e.g. proxied) stream pair.

    With `half_close`, the client ends its payload by shutting down writing and the server
    replies after that; without, the server is told the payload's length instead.
    """
    writer.write(struct.pack("!QQQ", down, seed + 1, UNTIL_EOF if half_close else up))
    sent_digest = hashlib.sha256()

    async def send() -> None:
        for chunk in seeded_chunks(up, seed):
            sent_digest.update(chunk)
            writer.write(chunk)
            await writer.drain()
        if half_close:
            writer.write_eof()

    async def receive() -> tuple[int, bool, bytes]:
        digest = hashlib.sha256()
        expected = hashlib.sha256()
        for chunk in seeded_chunks(down, seed + 1):
            expected.update(chunk)
        got = 0
        while got < down:
            data = await reader.read(min(CHUNK, down - got))
            if not data:
                break
            digest.update(data)
            got += len(data)
        tail = b""
        while data := await reader.read(64):  # the server's digest, then its end of stream
            tail += data
        return got, digest.digest() == expected.digest(), tail

    _, (got, intact, server_digest) = await asyncio.gather(send(), receive())
    writer.close()
    return IntegrityResult(
        sent=up,
        received=got,
        ok_down=got == down and intact,
        ok_up=server_digest == sent_digest.digest(),
    )
