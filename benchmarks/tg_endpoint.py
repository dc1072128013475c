"""A lean stand-in for Telegram's web endpoint, for benchmarks/telegram.py
(`--endpoint threads`): TLS in the standard library's blocking sockets (OpenSSL called from
C, no Python per record), a WebSocket read and written by hand, one thread per connection
-- as the plain "DC" beside it is. Its cost per byte is about the TLS alone: frame heads are
parsed in Python (one per 512 KiB packet), but an upload's payload is counted, not
unmasked (only the init and the first packet, which say what to do, are); a download's
frames go out unmasked, as a server's do. What a real endpoint does with the bytes is
Telegram's cost, not detour's: this keeps the stand-in from taking the cores detour is
measured on.

Each connection: the HTTP upgrade on /apiws, then `handle(init, first, conn)` from the
caller decides (sink, source or echo); see telegram.py's _first_packet.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import ssl
import struct
import threading
from collections.abc import Callable
from typing import Any

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _recv_exact(conn: Any, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        part = conn.recv(n - len(data))
        if not part:
            raise ConnectionError("closed")
        data += part
    return bytes(data)


class WsConn:
    """The server end of one WebSocket over a blocking (TLS) socket."""

    def __init__(self, conn: Any, held: bytes) -> None:
        self.conn = conn
        self.held = bytearray(held)  # read with the upgrade, after it
        self.scratch = memoryview(bytearray(1 << 20))

    def _exact(self, n: int) -> bytes:
        if self.held:
            take = bytes(self.held[:n])
            del self.held[:n]
            return take + (_recv_exact(self.conn, n - len(take)) if len(take) < n else b"")
        return _recv_exact(self.conn, n)

    def _head(self) -> tuple[int, int, bytes]:
        """(opcode, payload length, mask key) of the next frame."""
        b0, b1 = self._exact(2)
        length = b1 & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._exact(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._exact(8))[0]
        key = self._exact(4) if b1 & 0x80 else b""
        return b0 & 0x0F, length, key

    def message(self) -> bytes | None:
        """The next data message, unmasked (None at a Close frame). For small messages."""
        while True:
            opcode, length, key = self._head()
            data = self._exact(length)
            if key:
                data = bytes(b ^ key[i % 4] for i, b in enumerate(data))
            if opcode == 0x8:
                return None
            if opcode in (0x0, 0x2):
                return data

    def skip_message(self) -> int | None:
        """Read the next data message's payload without unmasking it; its length (None at
        a Close frame)."""
        while True:
            opcode, length, _ = self._head()
            left = length
            while left and self.held:
                take = min(left, len(self.held))
                del self.held[:take]
                left -= take
            while left:
                n = self.conn.recv_into(self.scratch, min(left, len(self.scratch)))
                if not n:
                    raise ConnectionError("closed inside a frame")
                left -= n
            if opcode == 0x8:
                return None
            if opcode in (0x0, 0x2):
                return length

    def send(self, payload: bytes | memoryview) -> None:
        n = len(payload)
        if n < 126:
            head = bytes([0x82, n])
        elif n < 1 << 16:
            head = struct.pack("!BBH", 0x82, 126, n)
        else:
            head = struct.pack("!BBQ", 0x82, 127, n)
        if n < 4096:
            self.conn.sendall(head + bytes(payload))
        else:
            self.conn.sendall(head)
            self.conn.sendall(payload)

    def drain_until_close(self) -> None:
        try:
            while self.skip_message() is not None:
                pass
            self.conn.sendall(b"\x88\x02\x03\xe8")  # our Close: 1000
        except (OSError, ConnectionError):
            pass


def _upgrade(conn: Any) -> WsConn:
    request = bytearray()
    while b"\r\n\r\n" not in request:
        part = conn.recv(4096)
        if not part:
            raise ConnectionError("closed during the upgrade")
        request += part
    head, _, rest = bytes(request).partition(b"\r\n\r\n")
    key = b""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-key":
            key = value.strip()
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    conn.sendall(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\nSec-WebSocket-Protocol: binary\r\n\r\n"
    )
    return WsConn(conn, rest)


def serve(host: str, cert: str, key: str, handle: Callable[[WsConn], None]) -> socket.socket:
    """Listen on `host`, port 0; serve each connection on a thread. The listener (for its
    port) is returned."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    listener = socket.create_server((host, 0), backlog=1024)

    def one(raw: socket.socket) -> None:
        try:
            with context.wrap_socket(raw, server_side=True) as conn:
                handle(_upgrade(conn))
        except (OSError, ConnectionError, ValueError):
            pass

    def accept_forever() -> None:
        while True:
            raw, _ = listener.accept()
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=one, args=(raw,), daemon=True).start()

    threading.Thread(target=accept_forever, daemon=True).start()
    return listener
