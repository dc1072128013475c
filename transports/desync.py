"""`fake`, `disorder` and `oob`: tricks on the TCP packets that carry the first bytes of a
connection, for DPI boxes that cutting the bytes (`split`, `tlsfrag`) no longer fools.

    fake:ttl=3            a decoy ClientHello first, with a TTL that runs out between the DPI
                          and the server; then the real one
    disorder:sni          the bytes up to the middle of the server name with TTL 1: lost on
                          the first hop, so the rest arrives first and they follow later
    oob:sni               one byte of TCP urgent data after the first piece: the server's TCP
                          takes it out of the stream, a DPI that does not sees a wrong name

Each acts once, on the first message a client writes (a TLS ClientHello record is held until
it is complete, as `tlsfrag` does; anything else is taken as it comes), and is pure
pass-through after it. They need the socket of the connection detour opens itself, so a
chain has at most one of them, right after its base (`direct`, `resolve:`); they run on
Linux, whose kernel behaves as described below (checked when a chain is parsed).

How the kernel is made to do it, without raw sockets or root (ByeDPI's methods):

- TTL: IP_TTL / IPV6_UNICAST_HOPS is set on the socket around one send() and restored once
  the kernel has nothing left unsent (SIOCOUTQNSD): IP headers are built when a segment is
  transmitted, so that segment alone carries the low TTL -- and its retransmission, built
  later, the normal one.
- fake: the decoy is written into a memory file and handed to the socket with sendfile(), so
  the kernel sends it from the file's pages without copying them and keeps referring to those
  pages for retransmission. Once it is sent, the real bytes are written over the decoy in the
  same pages and the TTL is restored: the decoy dies on the way, nothing acknowledges it, and
  the retransmission carries the real bytes at the normal TTL.
- oob: send(MSG_OOB) marks the last byte it sends as urgent (BSD's urgent pointer, which
  Linux and every common stack follow); a receiver that does not ask for urgent data (no
  SO_OOBINLINE) drops that byte from the stream.

The socket calls go through a small PacketSocket interface, so tests can record every send
and the TTL it went out with.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import re
import socket
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .base import Dialer, Endpoint, Stream
from .tlsfrag import MAX_RECORD, RECORD_HEADER, server_name_span
from .wrapped import WrappedStream, set_no_delay

__all__ = [
    "SUPPORTED",
    "Cut",
    "Desync",
    "DesyncDialer",
    "DesyncStream",
    "PacketSocket",
    "Trick",
    "decoy_client_hello",
    "parse_desync",
    "server_name_in_stream",
]

log = logging.getLogger("detour.transports.desync")

# Linux: memfd_create and sendfile for the decoy, SIOCOUTQNSD for "nothing unsent".
SUPPORTED = sys.platform == "linux" and hasattr(os, "memfd_create") and hasattr(os, "sendfile")
SIOCOUTQNSD = 0x894B  # linux/sockios.h: bytes in the send queue not yet sent
UNSENT_WAIT = 1.0  # how long a low-TTL segment may wait in the socket before we go on anyway
OOB_BYTE = b"a"  # the urgent byte (any byte: the server's TCP drops it)
DEFAULT_DECOY_NAME = "www.example.com"
MAX_TTL = 255
_NAME = re.compile(r"(?=.{1,253}$)[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")


class Trick(enum.StrEnum):
    FAKE = "fake"
    DISORDER = "disorder"
    OOB = "oob"


SYNTAX = {
    Trick.FAKE: "fake:ttl=N[,OFFSET][,name=NAME]",
    Trick.DISORDER: "disorder:OFFSET|sni[,ttl=N]",
    Trick.OOB: "oob:OFFSET|sni",
}


@dataclass(frozen=True)
class Cut:
    """Where the first message is cut: `offset` bytes from the start of the stream, or in the
    middle of the TLS server name (`sni`)."""

    offset: int | None = None
    sni: bool = False

    def position(self, data: bytes) -> int | None:
        """The cut inside `data` (0 < cut < len(data)), or None when there is none."""
        if self.sni:
            span = server_name_in_stream(data)
            if span is None:
                return None
            point = span[1]
        else:
            assert self.offset is not None
            point = self.offset
        return point if 0 < point < len(data) else None

    def __str__(self) -> str:
        return "sni" if self.sni else str(self.offset)


@dataclass(frozen=True)
class Desync:
    trick: Trick
    cut: Cut | None = None  # fake: None is the whole first message
    ttl: int | None = None  # fake and disorder
    decoy_name: str = DEFAULT_DECOY_NAME  # fake

    def __post_init__(self) -> None:
        if self.trick is not Trick.OOB and not (self.ttl and 1 <= self.ttl <= MAX_TTL):
            raise ValueError(f"{self.trick}: ttl must be 1-{MAX_TTL}")
        if self.trick is not Trick.FAKE and self.cut is None:
            raise ValueError(f"{self.trick}: needs a cut point")


# --- parsing the layer's arguments ---------------------------------------------------------


def parse_desync(trick: Trick, args: list[str]) -> Desync:
    """The arguments after `fake:`, `disorder:`, `oob:` (already split at commas and
    lower-cased). Raises ValueError with a sentence that names the valid syntax."""
    syntax = SYNTAX[trick]
    if not SUPPORTED:
        raise ValueError(
            f"{trick}: needs Linux (it sets the TTL around one send and relies on how Linux "
            f"builds and retransmits segments); this system is {sys.platform}"
        )
    cut: Cut | None = None
    ttl: int | None = None
    name: str | None = None
    seen: set[str] = set()
    for arg in args:
        key, eq, value = arg.partition("=")
        key = key.strip() if eq else "cut"
        value = value.strip() if eq else arg.strip()
        if key in seen:
            raise ValueError(f"{trick}: {key if eq else 'the cut point'} is given twice ({syntax})")
        seen.add(key)
        if key == "cut" and value == "sni" and trick is not Trick.FAKE:
            cut = Cut(sni=True)
        elif key == "cut" and value == "sni":
            raise ValueError(
                "fake: the decoy stands for the whole first message, or its first OFFSET "
                f"bytes; 'sni' is a cut point for disorder and oob ({syntax})"
            )
        elif key == "cut":
            if not (value.isascii() and value.isdigit()) or not 0 < int(value) <= 65535:
                raise ValueError(f"{trick}: {value!r} is not a byte offset 1-65535 ({syntax})")
            cut = Cut(offset=int(value))
        elif key == "ttl" and trick is not Trick.OOB:
            if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_TTL:
                raise ValueError(f"{trick}: ttl={value!r} is not a hop count 1-{MAX_TTL}")
            ttl = int(value)
        elif key == "name" and trick is Trick.FAKE:
            if not _NAME.fullmatch(value):
                raise ValueError(f"{trick}: name={value!r} is not a host name")
            name = value
        else:
            raise ValueError(f"{trick}: unknown argument {arg.strip()!r} ({syntax})")
    if trick is Trick.FAKE and ttl is None:
        raise ValueError(
            f"fake: give the decoy's TTL, more hops than to the DPI and fewer than to the "
            f"server ({syntax})"
        )
    if trick is not Trick.FAKE and cut is None:
        raise ValueError(f"{trick}: give where to cut, an offset or sni ({syntax})")
    if trick is Trick.DISORDER and ttl is None:
        ttl = 1
    return Desync(trick, cut, ttl, name or DEFAULT_DECOY_NAME)


# --- the first message ----------------------------------------------------------------------


def first_message_length(data: bytes) -> int | None:
    """How many of the bytes held are the first message: when they start like TLS, the first
    record, and the records after it that carry the rest of its handshake message (a hello
    `tlsfrag` cut up), as far as they are there; else all of them. None: the first TLS record
    is not complete yet."""
    if not data:
        return None
    if data[0] != 0x16 or (len(data) > 1 and data[1] != 0x03):
        return len(data)
    if len(data) < RECORD_HEADER:
        return None
    length = int.from_bytes(data[3:5], "big")
    if not 0 < length <= MAX_RECORD:
        return len(data)  # not a record we understand: no reason to wait
    end = RECORD_HEADER + length
    if len(data) < end:
        return None
    handshake = data[RECORD_HEADER:end]
    while (
        len(handshake) >= 4
        and len(handshake) < 4 + int.from_bytes(handshake[1:4], "big")
        and end + RECORD_HEADER <= len(data)
        and data[end] == 0x16
    ):
        more = int.from_bytes(data[end + 3 : end + 5], "big")
        if end + RECORD_HEADER + more > len(data):
            break
        handshake += data[end + RECORD_HEADER : end + RECORD_HEADER + more]
        end += RECORD_HEADER + more
    return end


def server_name_in_stream(data: bytes) -> tuple[int, int, int] | None:
    """Where the server name of a ClientHello lies in `data`, as stream offsets of its first
    byte, its middle byte and its end, when `data` starts with TLS handshake records carrying
    one whole ClientHello (in one record, or cut into several by `tlsfrag`). The offsets may
    fall in different records; the middle is counted in the name's own bytes."""
    message = bytearray()
    pieces: list[tuple[int, int]] = []  # (offset in the message, offset in the stream)
    pos = 0
    while pos + RECORD_HEADER <= len(data) and data[pos] == 0x16 and data[pos + 1] == 0x03:
        length = int.from_bytes(data[pos + 3 : pos + 5], "big")
        body = data[pos + RECORD_HEADER : pos + RECORD_HEADER + length]
        if len(body) < length or length == 0:
            return None
        pieces.append((len(message), pos + RECORD_HEADER))
        message += body
        pos += RECORD_HEADER + length
        if len(message) >= 4 and len(message) >= 4 + int.from_bytes(message[1:4], "big"):
            break
    if len(message) < 4:
        return None
    span = server_name_span(bytes(message[: 4 + int.from_bytes(message[1:4], "big")]))
    if span is None:
        return None

    def in_stream(offset: int) -> int:
        at, start = max((p for p in pieces if p[0] <= offset), key=lambda p: p[0])
        return start + offset - at

    start, end = span
    return in_stream(start), in_stream(start + (end - start) // 2), in_stream(end - 1) + 1


def decoy_client_hello(
    name: str, length: int, random_bytes: Callable[[int], bytes] = os.urandom
) -> bytes:
    """A TLS ClientHello record for `name`, exactly `length` bytes long: a plausible TLS 1.3
    hello, filled up with the padding extension (RFC 7685). When even the smallest is longer
    than `length`, its first `length` bytes. At most one record: 5 + 2^14 bytes."""
    length = min(length, RECORD_HEADER + MAX_RECORD)

    def ext(kind: int, body: bytes) -> bytes:
        return struct.pack("!HH", kind, len(body)) + body

    host = name.encode("ascii")
    server_name = ext(0, struct.pack("!HBH", len(host) + 3, 0, len(host)) + host)
    extensions = (
        server_name
        + ext(10, bytes.fromhex("0004001d0017"))  # supported_groups: x25519, secp256r1
        + ext(13, bytes.fromhex("0006040308040401"))  # signature_algorithms
        + ext(43, bytes.fromhex("0403040303"))  # supported_versions: 1.3, 1.2
        + ext(51, struct.pack("!HHH", 36, 0x001D, 32) + random_bytes(32))  # key_share x25519
    )
    ciphers = bytes.fromhex("000a130113021303c02bc02f")
    random = random_bytes(32)

    def record(session: int, padding: int | None) -> bytes:
        exts = extensions if padding is None else extensions + ext(21, bytes(padding))
        body = (
            b"\x03\x03"
            + random
            + bytes([session])
            + random_bytes(session)
            + ciphers
            + b"\x01\x00"
            + struct.pack("!H", len(exts))
            + exts
        )
        hello = b"\x01" + len(body).to_bytes(3, "big") + body
        return b"\x16\x03\x01" + struct.pack("!H", len(hello)) + hello

    smallest = record(32, None)
    gap = length - len(smallest)
    if gap < 0:
        return smallest[:length]
    if gap == 0:
        return smallest
    if gap >= 4:
        return record(32, gap - 4)
    return record(32 - (4 - gap), 0)  # a shorter session id makes room for the extension


# --- the socket ------------------------------------------------------------------------------


class SharedPages(Protocol):
    """Bytes the kernel sends from pages it keeps referring to (the decoy)."""

    sent: int

    def overwrite(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class PacketSocket(Protocol):
    """The socket operations the tricks need (a real socket's, or a test's recording)."""

    def hop_limit(self) -> int: ...

    def set_hop_limit(self, value: int) -> None: ...

    def send(self, data: bytes, *, urgent: bool = False) -> int: ...

    def send_shared(self, data: bytes) -> SharedPages: ...

    def unsent(self) -> int: ...

    def close(self) -> None: ...


class _MemoryPages:
    def __init__(self, fd: int, sent: int) -> None:
        self._fd = fd
        self.sent = sent

    def overwrite(self, data: bytes) -> None:
        os.pwrite(self._fd, data, 0)

    def close(self) -> None:
        os.close(self._fd)  # the kernel keeps the pages it still refers to


class _LinuxSocket:
    """A duplicate of the connection's descriptor, so the tricks can pass flags to send()
    and use sendfile() while asyncio keeps the original (same socket, same blocking mode;
    closing the duplicate leaves the connection open)."""

    def __init__(self, original: Any) -> None:
        self._sock = socket.socket(fileno=os.dup(original.fileno()))
        self._v6 = self._sock.family == socket.AF_INET6

    def hop_limit(self) -> int:
        if self._v6:
            return self._sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS)
        return self._sock.getsockopt(socket.IPPROTO_IP, socket.IP_TTL)

    def set_hop_limit(self, value: int) -> None:
        if self._v6:
            self._sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, value)
            with contextlib.suppress(OSError):  # an IPv4-mapped destination
                self._sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, value)
        else:
            self._sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, value)

    def send(self, data: bytes, *, urgent: bool = False) -> int:
        try:
            return self._sock.send(data, socket.MSG_OOB if urgent else 0)
        except BlockingIOError:
            return 0

    def send_shared(self, data: bytes) -> SharedPages:
        fd = os.memfd_create("detour-decoy", os.MFD_CLOEXEC)
        try:
            os.pwrite(fd, data, 0)
            try:
                sent = os.sendfile(self._sock.fileno(), fd, 0, len(data))
            except BlockingIOError:
                sent = 0
        except BaseException:
            os.close(fd)
            raise
        return _MemoryPages(fd, sent)

    def unsent(self) -> int:
        import fcntl  # not on Windows, where these layers are refused when parsed

        answer = fcntl.ioctl(self._sock.fileno(), SIOCOUTQNSD, b"\0\0\0\0")
        return struct.unpack("i", answer)[0]

    def close(self) -> None:
        self._sock.close()


def open_packet_socket(stream: Stream) -> PacketSocket | None:
    """The connection's socket, when `stream` is a plain TCP connection with nothing waiting
    to be written (so bytes sent on the socket directly keep their place in the stream)."""
    raw = stream.raw_socket_stream()
    sock = stream.get_extra_info("socket")
    if raw is None or sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    transport = getattr(raw, "transport", None)
    if transport is None or transport.get_write_buffer_size():
        return None
    try:
        return _LinuxSocket(sock)
    except OSError:  # no descriptor left to duplicate: no trick, the bytes go as they are
        return None


# --- the stream and the dialer --------------------------------------------------------------


class DesyncStream(WrappedStream):
    """Plays the trick on the first message written through it; everything after it passes
    unchanged. Nothing is held longer than the first TLS record takes to complete, except
    while a low-TTL segment waits in the kernel to be sent (then later writes queue here
    and go out, in order, as soon as the TTL is back)."""

    def __init__(
        self,
        inner: Stream,
        desync: Desync,
        sockets: Callable[[Stream], PacketSocket | None] = open_packet_socket,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        super().__init__(inner)
        self.desync = desync
        self._sockets = sockets
        self._random = random_bytes
        self._held: bytearray | None = bytearray()  # None once the first message is out
        self._finishing: asyncio.Task[None] | None = None
        self._queued = bytearray()  # written while _finishing runs
        self._after: list[Callable[[], None]] = []  # write_eof/close asked for meanwhile
        self._failed: ConnectionResetError | None = None
        self._abandon: Callable[[], None] = lambda: None  # releases what _finishing holds

    def shaping(self) -> bool:
        return self._held is not None or self._finishing is not None

    def write(self, data: bytes) -> None:
        if self._finishing is not None:
            self._queued += data
            return
        if self._held is None:
            self.inner.write(data)
            return
        self._held += data
        length = first_message_length(bytes(self._held))
        if length is None:
            return  # at most one TLS record (16 KiB) is held
        held, self._held = bytes(self._held), None
        self._play(held[:length], held[length:])

    # the trick ---------------------------------------------------------------------------

    def _play(self, message: bytes, rest: bytes) -> None:
        desync = self.desync
        whole = max(1, len(message) - 1)  # all but the last byte: see _decoy
        if desync.cut is None:
            cut: int | None = whole
        else:
            cut = desync.cut.position(message)
            if cut is None and desync.trick is Trick.FAKE and desync.cut.offset:
                cut = whole  # the message is shorter than asked
        sock = self._sockets(self.inner) if cut else None
        if sock is None or cut is None:
            self.inner.write(message + rest)  # nothing to cut, or no socket to play on
            return
        try:
            if desync.trick is Trick.OOB:
                self._urgent(sock, message, cut)
                self.inner.write(message[cut:] + rest)
                sock.close()
                return
            original = sock.hop_limit()
            sock.set_hop_limit(desync.ttl or 1)
            if desync.trick is Trick.FAKE:
                pages: SharedPages | None = sock.send_shared(self._decoy(message, cut))
                sent = pages.sent if pages is not None else 0
            else:
                pages = None
                sent = sock.send(message[:cut])
        except OSError as exc:
            sock.close()
            log.debug("%s: %s; the connection is reset", desync.trick, exc)
            self.inner.abort()
            raise ConnectionResetError(f"{desync.trick}: {exc}") from None
        finish, abandon = self._finisher(
            sock, pages, message[:sent], original, message[sent:] + rest
        )
        try:
            waiting = sock.unsent()
        except OSError:
            waiting = 0  # the connection is gone: finish() says so
        if not waiting:
            finish()
            return
        self._abandon = abandon
        self._finishing = asyncio.get_running_loop().create_task(
            self._finish_later(sock, finish), name=f"detour-{desync.trick}"
        )

    def _decoy(self, message: bytes, cut: int) -> bytes:
        """The decoy for the first `cut` bytes. Without an offset that is all the message but
        its last byte (ByeDPI's `--fake -1`): the last byte, sent normally, reaches the server,
        whose acknowledgement makes the kernel resend the decoy's bytes within a round trip,
        where a decoy with nothing after it waits for a retransmission timer (200 ms or more).
        The decoy hello ends in its padding, so the box reads its name all the same."""
        if message[:1] == b"\x16":  # a decoy hello in place of the real one
            return decoy_client_hello(self.desync.decoy_name, len(message), self._random)[:cut]
        return self._random(cut)

    def _urgent(self, sock: PacketSocket, message: bytes, cut: int) -> None:
        sent = sock.send(message[:cut] + OOB_BYTE, urgent=True)
        if sent != cut + 1:
            # The urgent mark went on a byte of the message, which the server would drop.
            raise OSError(f"the first {cut + 1} bytes did not fit into the socket at once")

    def _finisher(
        self, sock: PacketSocket, pages: SharedPages | None, real: bytes, ttl: int, rest: bytes
    ) -> tuple[Callable[[], None], Callable[[], None]]:
        """What follows once the low-TTL segment has left: the real bytes into the decoy's
        pages (what the retransmission will carry), the TTL back, then the rest; and what
        releases the pages and the socket when the connection is aborted before."""

        done = []

        def abandon() -> None:
            if done:
                return
            done.append(True)
            with contextlib.suppress(OSError):
                if pages is not None:
                    pages.close()
            sock.close()

        def finish() -> None:
            if done:
                return
            done.append(True)
            try:
                if pages is not None:
                    try:
                        pages.overwrite(real)
                    finally:
                        pages.close()
                sock.set_hop_limit(ttl)
            except OSError as exc:
                log.debug("%s: %s; the connection is reset", self.desync.trick, exc)
                self.inner.abort()
                raise ConnectionResetError(f"{self.desync.trick}: {exc}") from None
            finally:
                sock.close()
            if rest:
                self.inner.write(rest)

        return finish, abandon

    async def _finish_later(self, sock: PacketSocket, finish: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + UNSENT_WAIT
        try:
            # The kernel has no event for "sent": poll its counter (rarely needed at all).
            while sock.unsent() and loop.time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.001)
        except OSError:
            pass  # the connection is gone; finish() says so
        try:
            finish()
        except ConnectionResetError as exc:
            self._failed = exc  # for drain(); the inner stream is aborted
            return
        finally:
            queued, self._queued = bytes(self._queued), bytearray()
            self._finishing = None
        if queued:
            self.inner.write(queued)
        for then in self._after:
            then()

    # ends of stream ------------------------------------------------------------------------

    def _release(self) -> None:
        """Send what is held unchanged: the writer will not complete the record."""
        held, self._held = self._held, None
        if held:
            self.inner.write(bytes(held))

    async def drain(self) -> None:
        if self._finishing is not None:
            await asyncio.shield(self._finishing)
        if self._failed is not None:
            raise self._failed
        await self.inner.drain()

    def write_eof(self) -> None:
        if self._finishing is not None:
            self._after.append(self.inner.write_eof)
            return
        self._release()
        self.inner.write_eof()

    def close(self) -> None:
        if self._finishing is not None:
            self._after.append(self.inner.close)
            return
        self._release()
        self.inner.close()

    def abort(self) -> None:
        self._held = None
        if self._finishing is not None:
            self._finishing.cancel()
            self._finishing = None
            self._abandon()  # the decoy's pages and the socket's duplicate
        self.inner.abort()


class DesyncDialer:
    """Dial with `inner` (a `direct` connection), then play the trick on the first message."""

    def __init__(self, inner: Dialer, desync: Desync) -> None:
        self.inner = inner
        self.desync = desync

    async def dial(self, target: Endpoint) -> Stream:
        stream = await self.inner.dial(target)
        set_no_delay(stream)
        return DesyncStream(stream, self.desync)

    def __repr__(self) -> str:
        return f"DesyncDialer({self.inner!r}, {self.desync})"
