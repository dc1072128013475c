"""WebSocket (transports/websocket.py) at both ends over an in-memory pipe: the opening
handshake, who masks, pings, the close handshake; the server's checks of an upgrade
request; and the compiled mask accelerator, checked before it is trusted."""

from __future__ import annotations

import asyncio
import logging
import struct
import sys
import types

import pytest

from tests.support.memory import memory_pipe
from transports import DialError, Failure, websocket
from transports.websocket import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    WebSocketError,
    WebSocketStream,
    accept_headers,
    accept_key,
    encode_frame,
    parse_frame,
    websocket_connect,
)
from transports.wire import ProtocolError, RequestHead, parse_request_head

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3's example


def upgrade(*extra: str, key: str = KEY, version: str = "13") -> RequestHead:
    lines = [
        "GET /chat HTTP/1.1",
        "Host: server.example.com",
        "Upgrade: websocket",
        "Connection: keep-alive, Upgrade",
        f"Sec-WebSocket-Key: {key}",
        f"Sec-WebSocket-Version: {version}",
        *extra,
    ]
    return parse_request_head(("\r\n".join(lines) + "\r\n\r\n").encode())


# --- the server's half of the handshake -------------------------------------------------------


def test_a_valid_upgrade_gets_the_accept_key_of_rfc_6455() -> None:
    headers, chosen = accept_headers(upgrade())
    assert ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") in headers
    assert ("Upgrade", "websocket") in headers and chosen is None


def test_the_server_chooses_the_first_offered_subprotocol_it_speaks() -> None:
    request = upgrade("Sec-WebSocket-Protocol: chat, binary", "Sec-WebSocket-Protocol: x")
    headers, chosen = accept_headers(request, ["x", "binary"])
    assert chosen == "binary" and ("Sec-WebSocket-Protocol", "binary") in headers
    assert accept_headers(request, ["other"])[1] is None


@pytest.mark.parametrize(
    ("request_head", "why"),
    [
        (upgrade(version="8"), "version 13"),
        (upgrade(key="short"), "Sec-WebSocket-Key"),
        (upgrade(key="AAAAAAAAAAAAAAAAAAAAAAAA"), "Sec-WebSocket-Key"),  # 18 bytes
        (upgrade(f"Sec-WebSocket-Key: {KEY}"), "Sec-WebSocket-Key"),  # two of them
        (parse_request_head(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "Upgrade"),
        (
            parse_request_head(
                b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: close\r\n\r\n"
            ),
            "Connection",
        ),
        (parse_request_head(b"POST / HTTP/1.1\r\n\r\n"), "GET"),
        (parse_request_head(b"GET / HTTP/1.0\r\n\r\n"), "GET in HTTP/1.1"),
    ],
)
def test_what_is_no_upgrade_says_why(request_head: RequestHead, why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        accept_headers(request_head)


# --- both ends --------------------------------------------------------------------------------


async def serve_one_upgrade(server_end, protocols=(), answer_protocol=None) -> WebSocketStream:
    """A minimal server: read the upgrade, answer 101, return its end of the WebSocket."""
    head = await server_end.readuntil(b"\r\n\r\n", 65536)
    headers, chosen = accept_headers(parse_request_head(head), protocols)
    if answer_protocol is not None:
        headers.append(("Sec-WebSocket-Protocol", answer_protocol))
    lines = ["HTTP/1.1 101 Switching Protocols", *(f"{k}: {v}" for k, v in headers)]
    server_end.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    return WebSocketStream(server_end, client=False, subprotocol=chosen)


async def connected(protocols=(), offer=(), headers=None, record=False):
    a, b = memory_pipe(record=record)
    server = asyncio.ensure_future(serve_one_upgrade(b, protocols))
    client = await websocket_connect(
        a, "server.example.com", "/chat", protocols=offer, headers=headers
    )
    return client, await server, a, b


async def test_bytes_flow_both_ways_and_only_the_client_masks() -> None:
    a, b = memory_pipe(record=True)
    server_task = asyncio.ensure_future(serve_one_upgrade(b))
    client = await websocket_connect(a, "server.example.com", "/chat")
    server = await server_task
    client.write(b"up" * 1000)
    await client.drain()
    assert await server.readexactly(2000) == b"up" * 1000
    server.write(b"down")
    assert await client.read() == b"down"
    # On the wire: the client's frame masked, the server's not (RFC 6455 §5.1).
    assert a.writes is not None and b.writes is not None
    assert a.writes[-1][1] & 0x80 and not b.writes[-1][1] & 0x80
    assert parse_frame(b.writes[-1])[1].payload == b"down"


async def test_a_subprotocol_is_offered_and_agreed() -> None:
    client, server, _, _ = await connected(protocols=["binary"], offer=["binary"])
    assert client.subprotocol == server.subprotocol == "binary"


async def test_a_subprotocol_offered_in_the_headers_counts_as_offered() -> None:
    client, _, _, _ = await connected(
        protocols=["binary"], headers={"Sec-WebSocket-Protocol": "binary"}
    )
    assert client.subprotocol == "binary"


async def test_a_subprotocol_nobody_offered_fails_the_handshake() -> None:
    a, b = memory_pipe()
    server = asyncio.ensure_future(serve_one_upgrade(b, answer_protocol="chat"))
    with pytest.raises(DialError) as caught:
        await websocket_connect(a, "server.example.com", "/chat")
    assert caught.value.failure is Failure.PROXY_PROTOCOL_ERROR
    await server


async def test_pings_are_answered_at_either_end() -> None:
    client, server, a, b = await connected(record=True)
    b.write(encode_frame(OP_PING, b"are you there", mask=False))  # server -> client
    b.write(encode_frame(OP_BINARY, b"after", mask=False))
    assert await client.read() == b"after"
    a.write(encode_frame(OP_PING, b"and you", mask=True))  # client -> server
    a.write(encode_frame(OP_BINARY, b"then", mask=True))
    assert await server.read() == b"then"
    assert a.writes is not None and b.writes is not None
    client_pong = parse_frame(
        next(w for w in a.writes if w[0] == 0x80 | OP_PONG), expect_masked=True
    )
    server_pong = parse_frame(b.writes[-1], expect_masked=False)
    assert (client_pong[1].opcode, client_pong[1].payload) == (OP_PONG, b"are you there")
    assert (server_pong[1].opcode, server_pong[1].payload) == (OP_PONG, b"and you")


async def test_a_close_frame_is_answered_and_ends_the_stream() -> None:
    client, server, a, b = await connected(record=True)
    client.close()
    assert await server.read() == b""
    # The server answered the close with a close of its own (the same code), unmasked.
    assert b.writes is not None
    frame = parse_frame(b.writes[-1], expect_masked=False)[1]
    assert frame.opcode == OP_CLOSE and struct.unpack("!H", frame.payload)[0] == 1000
    with pytest.raises(ConnectionResetError):
        server.write(b"too late")


async def test_the_wrong_masking_or_a_text_message_is_an_error() -> None:
    client, server, a, b = await connected()
    a.write(encode_frame(OP_BINARY, b"x", mask=False))  # a client must mask
    with pytest.raises(WebSocketError, match="unmasked"):
        await server.read()
    client, server, a, b = await connected()
    b.write(encode_frame(OP_TEXT, b"hello", mask=False))
    with pytest.raises(WebSocketError, match="text message"):
        await client.read()


# --- the mask accelerator ---------------------------------------------------------------------


def right(mask: bytes, data: bytearray) -> None:
    data[:] = websocket._apply_mask_python(bytes(data), mask)


def wrong(mask: bytes, data: bytearray) -> None:
    """Masks the first bytes only: right on short payloads, wrong on the rest."""
    data[:4] = websocket._apply_mask_python(bytes(data[:4]), mask)


def broken(mask: bytes, data: bytearray) -> None:
    raise TypeError("an incompatible build")


@pytest.mark.parametrize("candidate", [wrong, broken])
def test_a_wrong_accelerator_is_refused_for_the_python_loop(
    candidate, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG, logger="detour.transports.websocket")
    chosen = websocket._select_mask(candidate, "a test")
    assert chosen is None
    assert "the Python loop" in caplog.text and "test vector" in caplog.text
    # With it, frames still round-trip (the Python loop masks them).
    monkeypatch.setattr(websocket, "_mask_in_place", chosen)
    payload = bytes(range(256)) * 41
    frame = encode_frame(OP_BINARY, payload, mask=True)
    assert parse_frame(frame, expect_masked=True)[1].payload == payload


def test_a_right_accelerator_is_taken_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="detour.transports.websocket")
    assert websocket._select_mask(right, "a test") is right
    assert "the compiled loop (a test)" in caplog.text
    assert websocket._select_mask(None, "none here") is None
    assert "the Python loop (none here)" in caplog.text


def test_a_wrong_loaded_extension_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """An aiohttp whose extension already loaded but computes something else: refused."""
    fake = types.ModuleType("aiohttp._websocket.mask")
    fake._websocket_mask_cython = wrong  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "aiohttp._websocket.mask", fake)
    candidate, origin = websocket._compiled_mask()
    assert candidate is wrong and "already loaded" in origin
    assert websocket._select_mask(candidate, origin) is None


def test_the_installed_accelerator_is_in_use() -> None:
    """aiohttp (a dependency, >= 3.11) ships the compiled loop; it passed its check."""
    assert websocket._mask_in_place is not None
    assert websocket._select_mask(websocket._mask_in_place, "again") is not None


def test_accept_key_is_rfc_6455s() -> None:
    assert accept_key(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
