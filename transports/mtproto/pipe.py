"""The relay's fast path for an MTProto stream re-encrypted both ways (the `mtproxy:` route:
an app's obfuscated2 on one side, detour's own, keyed with a proxy's secret, on the other).

A stream whose bytes change cannot be piped transport to transport as they are; this makes
the far side's socket look like one that can: a transport wrapper the relay writes the
app's bytes into (decrypted and encrypted again, written out, as fake-TLS records for an
`ee` secret) and a protocol that receives the far side's bytes into a shared buffer, reads
their records, decrypts and encrypts them again into the relay's own buffer, in one
callback. No task, no await, and no new buffer per read: each pass writes into a buffer
that is reused, so no byte lands on a page the kernel has to fault in and zero first. (A
new buffer of 128-256 KiB per pass and per read, as the streams' own reads and writes
make, comes and goes at the top of the heap: glibc hands it back to the kernel each time
and faults it in again, which cost more than both AES passes together.)
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .faketls import RecordError, RecordSplitter, record_pieces
from .obfuscated2 import Keystream

__all__ = ["Ciphers", "PipedSocket", "scratch"]

log = logging.getLogger("detour.transports.mtproto")

_SCRATCH = 256 * 1024 + 16
_BLOCK = 15  # update_into's room for a block beyond the data


@dataclass(frozen=True)
class Ciphers:
    """Both directions' passes: the app's keystreams (None: it speaks in the clear) and the
    far side's; `records`: the far side's bytes come (and go) in fake-TLS records."""

    from_app: Keystream | None  # decrypts what the app sends
    to_far: Keystream  # encrypts it toward the far side
    from_far: Keystream  # decrypts what the far side sends
    to_app: Keystream | None  # encrypts it toward the app
    records: RecordSplitter | None = None


class PipedSocket:
    """What the relay's fast path takes instead of the far side's socket stream (`inner`):
    `detach` returns the re-encrypting transport, what `convert_held` makes of the bytes
    that arrived before (for the app), and the stream protocol's state. `unanswered`: what
    to log when the far side ends before it has sent a byte (then the app is reset, not
    given a clean end); None once it has answered. `name`: the far side, in log lines."""

    def __init__(
        self,
        inner: Any,
        ciphers: Ciphers,
        convert_held: Callable[[bytes], bytes],
        unanswered: Callable[[], str | None] = lambda: None,
        name: str = "MTProto proxy",
    ) -> None:
        self.inner = inner
        self.name = name
        self.ciphers = ciphers
        self.convert_held = convert_held
        self.unanswered = unanswered

    def detach(self) -> tuple[Any, bytes, Any]:
        transport, held, state = self.inner.detach()
        try:
            pending = self.convert_held(held)
        except ConnectionResetError:
            pending = b""  # said and logged by the stream, which reset the transport
        unanswered = None if pending else self.unanswered()
        piped = _PipedTransport(transport, self.ciphers, unanswered, self.name)
        return piped, pending, state


class _PipedTransport:
    """The far side's transport as the relay sees it: what the relay writes (the app's
    bytes) is decrypted and encrypted again into a buffer of this wrapper's own before it
    goes out, so none of the relay's buffer is ever held here. Everything else is the
    transport's own."""

    def __init__(
        self,
        transport: asyncio.Transport,
        ciphers: Ciphers,
        unanswered: str | None = None,
        name: str = "MTProto proxy",
    ) -> None:
        self._transport = transport
        self._ciphers = ciphers
        self._unanswered = unanswered
        self._name = name
        self._protocol: asyncio.BaseProtocol | None = None

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.BufferedProtocol)
        self._protocol = protocol
        self._transport.set_protocol(
            _PipedProtocol(protocol, self._transport, self._ciphers, self._unanswered, self._name)
        )

    def get_protocol(self) -> asyncio.BaseProtocol | None:
        return self._protocol

    def write(self, data: bytes | bytearray | memoryview) -> None:
        size = len(data)
        if not size:
            return
        ciphers = self._ciphers
        transport = self._transport
        out = _buffers.out(size)
        if ciphers.from_app is not None:
            data = ciphers.from_app.apply_into(data, _buffers.plain(size))
        view = ciphers.to_far.apply_into(data, out)
        if ciphers.records is not None:
            transport.writelines(record_pieces(view))
        else:
            transport.write(view)
        if transport.get_write_buffer_size():
            # The transport holds views of `out` until they are sent: it keeps the buffer
            # (freed once sent) and the next write gets a new one. (Taking it back once
            # sent would need a reference kept per connection, idle ones included.)
            _buffers.retire_out()

    def get_write_buffer_size(self) -> int:
        """How much of what the caller wrote is still held here: nothing, ever (each write
        is converted into this wrapper's own buffer before it returns)."""
        return 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _PipedProtocol(asyncio.BufferedProtocol):
    """Receives the far side's bytes into a shared buffer, takes the records' payloads
    (fake TLS), decrypts them into a second buffer and encrypts them into the relay's
    own, then tells the relay: one callback per read."""

    def __init__(
        self,
        relay: asyncio.BufferedProtocol,
        transport: asyncio.Transport,
        ciphers: Ciphers,
        unanswered: str | None = None,
        name: str = "MTProto proxy",
    ) -> None:
        self.relay = relay
        self.transport = transport
        self.ciphers = ciphers
        self.unanswered = unanswered
        self.name = name
        self.failed = False

    def get_buffer(self, sizehint: int) -> memoryview:
        # What arrives must fit the relay's buffer once converted (update_into: + a block).
        room = len(self.relay.get_buffer(sizehint)) - _BLOCK - 1
        return _buffers.received(room)

    def buffer_updated(self, nbytes: int) -> None:
        if self.failed:
            return
        ciphers = self.ciphers
        received = _buffers.received(nbytes)
        pieces: list[memoryview] | tuple[memoryview, ...] = (received,)
        if ciphers.records is not None:
            try:
                pieces = ciphers.records.feed(received)
            except RecordError as exc:
                self._fail(f"{self.name}: the proxy sent {exc}")
                return
            if not pieces:
                return  # record headers only, so far
        size = sum(len(piece) for piece in pieces) if len(pieces) > 1 else len(pieces[0])
        target = self.relay.get_buffer(size)
        assert len(target) >= size + _BLOCK
        # Decrypted straight into the relay's buffer for an app in the clear; else into a
        # second buffer, then encrypted into the relay's.
        plain = target if ciphers.to_app is None else memoryview(_buffers.plain(size))
        at = 0
        for piece in pieces:
            at += len(ciphers.from_far.apply_into(piece, plain[at:]))  # type: ignore[arg-type]
        if ciphers.to_app is not None:
            ciphers.to_app.apply_into(plain[:size], target)  # type: ignore[arg-type]
        self.unanswered = None
        self.relay.buffer_updated(size)

    def _fail(self, why: str) -> None:
        self.failed = True
        log.info("%s; closing the connection", why)
        from ..tcp import reset_transport

        reset_transport(self.transport)

    def eof_received(self) -> bool | None:
        if self.failed:
            return None
        records = self.ciphers.records
        if records is not None and records.pending:
            self._fail(f"{self.name}: the proxy ended inside a TLS record")
            return None
        if self.unanswered is not None:
            self._fail(self.unanswered)  # as the stream's read says it: a reset, not an end
            return None
        return self.relay.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.connection_lost(exc)

    def pause_writing(self) -> None:
        self.relay.pause_writing()

    def resume_writing(self) -> None:
        self.relay.resume_writing()


class _Buffers(threading.local):
    """The buffers bytes pass through, one set per event loop's thread: each is used and
    done with inside one write or one callback, so every connection shares them; `out`
    is replaced when a transport keeps views of it."""

    def __init__(self) -> None:
        self._received = memoryview(bytearray())
        self._plain = bytearray()
        self._out = bytearray()

    def received(self, size: int) -> memoryview:
        if len(self._received) < size:
            self._received = memoryview(bytearray(max(size, _SCRATCH)))
        return self._received[:size]

    def plain(self, size: int) -> bytearray:
        if len(self._plain) < size + _BLOCK:
            self._plain = bytearray(max(size + _BLOCK, _SCRATCH))
        return self._plain

    def out(self, size: int) -> bytearray:
        if len(self._out) < size + _BLOCK:
            self._out = bytearray(max(size + _BLOCK, _SCRATCH))
        return self._out

    def retire_out(self) -> None:
        self._out = bytearray()


_buffers = _Buffers()


def scratch(size: int) -> bytearray:
    """A buffer of at least `size` + 15 bytes to decrypt into and use at once (before the
    next await): the one this thread's fast paths share."""
    return _buffers.plain(size)
