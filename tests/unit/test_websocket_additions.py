"""What the WebSocket client offers besides `write`/`read`: one message of any size, a
closing handshake that keeps reading (a half-close), a per-stream frame limit, and the
status of a refused upgrade."""

from __future__ import annotations

import struct

import pytest

from tests.unit.scripted import ScriptedStream
from transports import Failure, Op
from transports.websocket import (
    OP_BINARY,
    OP_CLOSE,
    UpgradeRefused,
    WebSocketError,
    WebSocketStream,
    encode_frame,
    parse_frame,
    websocket_connect,
)


def frames(written: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos < len(written):
        used, frame = parse_frame(written, expect_masked=True, start=pos, max_frame=1 << 30)
        out.append((frame.opcode, frame.payload))
        pos += used
    return out


def test_write_message_sends_one_message_whatever_its_size() -> None:
    inner = ScriptedStream()
    ws = WebSocketStream(inner)
    ws.write_message(bytes(3 << 20))
    ws.write(bytes(3 << 20))
    sent = frames(bytes(inner.written))
    assert sent[0] == (OP_BINARY, bytes(3 << 20))
    assert len(sent) > 2  # `write` cut the same bytes into several


async def test_close_write_keeps_reading_until_the_peers_close() -> None:
    answer = encode_frame(OP_BINARY, b"the rest", mask=False)
    close = encode_frame(OP_CLOSE, struct.pack("!H", 1000), mask=False)
    inner = ScriptedStream([answer, close, encode_frame(OP_BINARY, b"after", mask=False)])
    ws = WebSocketStream(inner)
    ws.close_write()
    ws.close_write()  # once is enough
    assert frames(bytes(inner.written)) == [(OP_CLOSE, struct.pack("!H", 1000))]
    with pytest.raises(ConnectionResetError):
        ws.write_message(b"no more")
    assert await ws.read() == b"the rest"
    assert await ws.read() == b""  # the peer's Close: no answer to it, it was ours first
    assert len(frames(bytes(inner.written))) == 1


async def test_the_frame_limit_is_the_streams() -> None:
    big = encode_frame(OP_BINARY, bytes(2 << 20), mask=False)
    ws = WebSocketStream(ScriptedStream([big]), max_frame=4 << 20)
    assert len(await ws.read(4 << 20)) == 2 << 20
    ws = WebSocketStream(ScriptedStream([big]))
    with pytest.raises(WebSocketError, match="at most"):
        await ws.read()


async def test_a_refused_upgrade_carries_its_status() -> None:
    inner = ScriptedStream([b"HTTP/1.1 302 Found\r\nLocation: https://x/\r\n\r\n"])
    with pytest.raises(UpgradeRefused) as refused:
        await websocket_connect(inner, "kws1.web.telegram.org", "/apiws")
    assert refused.value.status == 302
    assert (refused.value.failure, refused.value.op) == (Failure.PROXY_REFUSED, Op.PROXY_HANDSHAKE)
