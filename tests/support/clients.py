"""Minimal proxy clients for tests, written from the RFCs independently of detour's own code,
so a bug shared by detour's client and server sides cannot hide itself."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import struct


async def open_socks5(
    proxy: tuple[str, int],
    host: str,
    port: int,
    username: str | None = None,
    password: str | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(*proxy, limit=1 << 20)
    if username is None:
        writer.write(b"\x05\x01\x00")  # v5, 1 method: no auth
    else:
        writer.write(b"\x05\x01\x02")  # v5, 1 method: user/password
    version, method = await reader.readexactly(2)
    assert version == 5, version
    if method == 0x02:
        assert username is not None and password is not None
        u, p = username.encode(), password.encode()
        writer.write(bytes([1, len(u)]) + u + bytes([len(p)]) + p)
        _, status = await reader.readexactly(2)
        if status != 0:
            writer.close()
            raise PermissionError("SOCKS5 login rejected")
    elif method != 0x00:
        writer.close()
        raise PermissionError(f"SOCKS5 method {method:#x}")
    try:
        ip = ipaddress.ip_address(host)
        addr = (b"\x01" if ip.version == 4 else b"\x04") + ip.packed
    except ValueError:
        addr = b"\x03" + bytes([len(host)]) + host.encode()
    writer.write(b"\x05\x01\x00" + addr + struct.pack("!H", port))  # v5 CONNECT rsv addr port
    version, reply, _, atyp = await reader.readexactly(4)
    if reply != 0:
        writer.close()
        raise ConnectionError(f"SOCKS5 reply {reply}")
    await reader.readexactly({1: 4, 4: 16}.get(atyp, 0) + 2)
    return reader, writer


async def open_http_connect(
    proxy: tuple[str, int],
    host: str,
    port: int,
    username: str | None = None,
    password: str | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(*proxy, limit=1 << 20)
    auth = ""
    if username is not None:
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        auth = f"Proxy-Authorization: Basic {token}\r\n"
    writer.write(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n{auth}\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if status != 200:
        writer.close()
        raise ConnectionError(f"HTTP CONNECT status {status}")
    return reader, writer


async def exchange(
    proxy: tuple[str, int], payload: bytes, *, close_write: bool = True, timeout: float = 5
) -> bytes:
    """Send raw bytes to the proxy port, optionally half-close, return all it answers."""
    reader, writer = await asyncio.open_connection(*proxy)
    try:
        writer.write(payload)
        if close_write:
            writer.write_eof()
        async with asyncio.timeout(timeout):
            return await reader.read()
    finally:
        writer.close()
