"""TLS over any detour Stream: the handshake and the record layer run in Python, on top of
whatever the inner stream is — a plain socket, a `tlsfrag` wrapper that must see and rewrite
the ClientHello, a tunnel through an upstream proxy, or (for the fronted transport) messages
inside another TLS connection.

asyncio's own TLS needs an asyncio transport underneath, so it cannot sit on a Stream. This
module drives OpenSSL through the standard library's sans-IO interface instead: an
`ssl.SSLObject` between two `ssl.MemoryBIO`s. Ciphertext OpenSSL produces is handed to the
inner stream at once, after every call into the SSLObject; ciphertext is read from the inner
stream only when OpenSSL asks for more.

    caller  --write-->  SSLObject  --outgoing BIO-->  inner.write      (one write per call)
    caller  <--read---  SSLObject  <--incoming BIO--  inner.read       (only on WantRead)

Used by the probes (a handshake with the service's server name, through a route) and by the
fronted transport. `tls_connect` and `tls_accept` run the handshake and translate failures
into DialError(failure, Op.TLS_HANDSHAKE).

Ends of stream:

- close_notify from the peer: `read` returns b"".
- the inner stream ends without close_notify (an "unclean" or "ragged" EOF): many servers
  close TCP right after a response whose length the application protocol already gives, so
  by default this is also an end of stream, as browsers treat it for HTTP/1.1. It is
  recorded: `get_extra_info("unclean_eof")` is then True. With `suppress_ragged_eofs=False`
  `read` raises TlsTruncationError instead, for callers that cannot tell a cut-off stream
  from a complete one otherwise.
- `write_eof` sends close_notify, then ends the inner stream's writing side when it can.
  RFC 8446 §6.1 makes close_notify in TLS 1.3 close only the sender's direction, so the
  peer may keep sending: `can_write_eof()` is True. In TLS 1.2 (RFC 5246 §7.2.1) the peer
  must answer close_notify by closing, so `can_write_eof()` is False there; `write_eof` still
  sends close_notify if called, and the peer may then end its side as well.
- `close` sends close_notify (best effort) and closes the inner stream; `abort` aborts it.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from collections import deque
from typing import Any

from .base import DialError, Failure, Op, Stream, classify_os_error
from .deadlines import patient

__all__ = [
    "TlsStream",
    "TlsTruncationError",
    "loop_tls_applies",
    "tls_accept",
    "tls_connect",
    "tls_connect_fast",
]

# Ciphertext asked of the inner stream at a time. Reads happen only when OpenSSL has used up
# what it was given, so the incoming BIO never holds much more than this. Larger than what a
# peer writes at a time (WRITE_CHUNK plus record overhead): a WebSocket below hands over a
# whole message per read instead of splitting it into a large piece and a small one.
READ_SIZE = 512 * 1024
# Plaintext encrypted per SSLObject call; the outgoing BIO is emptied into the inner stream
# after each, so a large write never holds a second full-size copy inside OpenSSL. Each
# call's ciphertext is one write below (one WebSocket message in a fronted tunnel): larger
# chunks mean fewer of those, each with its framing and per-write costs. The extra KiB keeps
# a 256 KiB relay chunk with a small header in front (a multiplexed tunnel's frame) in one.
WRITE_CHUNK = 256 * 1024 + 1024
# OpenSSL returns at most one record's plaintext per read (RFC 8446 §5.1: 2^14 bytes); asking
# for more only makes the ssl module allocate a larger buffer it then shrinks.
MAX_RECORD = 1 << 14
# While a TLS 1.2 renegotiation holds up our writes and nobody is reading, `drain` reads on
# the caller's behalf and sets aside the plaintext that arrives meanwhile, up to this much.
SET_ASIDE_LIMIT = 1 << 20


class TlsTruncationError(ConnectionResetError):
    """The inner stream ended without the peer's close_notify, and the TlsStream was asked
    not to treat that as an end of stream (`suppress_ragged_eofs=False`)."""


class TlsStream(Stream):
    """TLS over an inner Stream (ssl.SSLObject + MemoryBIO). Made by tls_connect/tls_accept.

    Every write is encrypted (or, during a TLS 1.2 renegotiation, copied) before `write`
    returns, so a writer may reuse its buffer at once (`copies_writes`).

    One task may read while another writes (the relay does that). Writes never wait for the
    peer; messages OpenSSL produces while reading (a TLS 1.2 renegotiation's) are written to
    the inner stream before the read returns, in the order OpenSSL produced them. (OpenSSL
    answers a TLS 1.3 KeyUpdate request with the next write, as RFC 8446 §4.6.3 allows.)
    """

    copies_writes = True  # see the class's docstring

    def __init__(
        self,
        inner: Stream,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
        suppress_ragged_eofs: bool = True,
        session: ssl.SSLSession | None = None,
    ) -> None:
        self.inner = inner
        self.suppress_ragged_eofs = suppress_ragged_eofs
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(
            self._incoming,
            self._outgoing,
            server_side=server_side,
            server_hostname=server_hostname,
            session=session,
        )
        self._plain = bytearray()  # decrypted, not yet returned: unread(), or set aside
        # Plaintext OpenSSL could not take yet because a renegotiation is waiting for the
        # peer; sent, in order, as soon as it completes.
        self._backlog: deque[bytes] = deque()
        # One task reads the inner stream at a time; `_pulls` counts the reads fed to
        # OpenSSL, so a task that waited for the lock knows whether to read again.
        self._pull_lock = asyncio.Lock()
        self._pulls = 0
        self._inner_eof = False  # the inner stream has ended (fed to OpenSSL as EOF)
        self._read_eof = False  # the peer's stream has ended (clean or not)
        self._unclean_eof = False
        self._read_error: BaseException | None = None  # raised by the next read
        self._write_error: OSError | None = None  # a write the reader made failed
        self._eof_wanted = False  # write_eof() was called
        self._eof_sent = False  # close_notify is out
        self._inner_write_closed = False
        self._closed = False

    # handshake ---------------------------------------------------------------------------

    async def _handshake(self) -> None:
        while True:
            try:
                self._ssl.do_handshake()
            except ssl.SSLWantReadError:
                # A whole flight at once: the first is the ClientHello, and a `tlsfrag`
                # layer underneath must see its record complete in one write.
                self._flush()
                await self.inner.drain()
                await self._pull()
                continue
            except ssl.SSLError:
                self._flush_quietly()  # the alert that tells the peer why
                raise
            self._flush()
            await self.inner.drain()
            return

    # reading -----------------------------------------------------------------------------

    async def read(self, n: int = 65536) -> bytes:
        if n < 1:
            raise ValueError(f"read size must be positive (got {n})")
        while True:
            if self._plain:
                data = bytes(self._plain[:n])
                del self._plain[:n]
                return data
            if self._read_error is not None:
                raise self._read_error
            if self._read_eof:
                if self._unclean_eof and not self.suppress_ragged_eofs:
                    raise TlsTruncationError(
                        "the TLS stream was cut off: the peer closed without close_notify"
                    )
                return b""
            pulls = self._pulls
            data = self._decrypt(n)
            self._push_backlog(quietly=True)  # a renegotiation may have finished
            if data:
                return data
            if self._read_eof or self._read_error is not None:
                continue
            async with self._pull_lock:
                if self._pulls == pulls:  # nobody fed OpenSSL while we waited for the lock
                    await self._pull()

    def unread(self, data: bytes) -> None:
        if data:
            self._plain[:0] = data

    def _decrypt(self, n: int) -> bytes:
        """Up to n bytes of plaintext from what OpenSSL has been given; b"" if it needs more
        (or the stream ended: see _read_eof). Never awaits."""
        chunks: list[bytes] = []
        size = 0
        try:
            while size < n:
                chunk = self._ssl.read(min(n - size, MAX_RECORD))
                if not chunk:  # the peer's close_notify
                    self._read_eof = True
                    break
                chunks.append(chunk)
                size += len(chunk)
        except ssl.SSLWantReadError:
            if self._inner_eof:  # cannot happen with OpenSSL; never wait for a dead stream
                self._end_uncleanly()
        except ssl.SSLZeroReturnError:  # close_notify, when ours went out first
            self._read_eof = True
        except ssl.SSLEOFError:
            self._end_uncleanly()
        except ssl.SSLError as exc:
            # A broken record or a fatal alert: the plaintext before it is still good; the
            # error comes with the next read.
            self._read_error = exc
        # OpenSSL may have answered something (a renegotiation) while reading.
        self._flush_quietly()
        return b"".join(chunks)

    def _end_uncleanly(self) -> None:
        self._read_eof = True
        self._unclean_eof = True

    async def _pull(self) -> None:
        """Read once from the inner stream into the incoming BIO."""
        if self._inner_eof:
            return
        data = await self.inner.read(READ_SIZE)
        self._pulls += 1
        if data:
            self._incoming.write(data)
        else:
            self._inner_eof = True
            self._incoming.write_eof()

    def _set_aside(self) -> None:
        """Decrypt all OpenSSL has been given into the read buffer, where read() finds it
        first. Bounded by what one _pull() delivers: OpenSSL is only fed when it asks."""
        self._plain += self._decrypt(sys.maxsize)

    # writing -----------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._closed:
            raise ConnectionResetError("the TLS stream is closed")
        if self._eof_wanted:
            raise RuntimeError("write() after write_eof() on a TLS stream")
        if self._write_error is not None:
            raise self._write_error
        view = memoryview(data)
        for start in range(0, len(view), WRITE_CHUNK):
            chunk = view[start : start + WRITE_CHUNK]
            if self._backlog:
                self._backlog.append(bytes(chunk))  # a copy: the caller may reuse its buffer
                continue
            written = self._encrypt(chunk)
            if written < len(chunk):
                self._backlog.append(bytes(chunk[written:]))
        self._flush()

    def _encrypt(self, chunk: bytes | memoryview) -> int:
        """Encrypt into the outgoing BIO and hand it on; how much OpenSSL took (0 while a
        renegotiation waits for the peer)."""
        try:
            written = self._ssl.write(chunk)
        except ssl.SSLWantReadError:
            written = 0
        self._flush()
        return written

    def _push_backlog(self, *, quietly: bool = False) -> None:
        """Retry what a renegotiation held up; then send close_notify if it was waiting."""
        try:
            while self._backlog:
                chunk = self._backlog[0]
                written = self._encrypt(chunk)
                if written == 0:
                    return
                if written < len(chunk):
                    self._backlog[0] = chunk[written:]
                else:
                    self._backlog.popleft()
            self._send_close_notify()
        except OSError as exc:
            if not quietly:
                raise
            self._write_error = self._write_error or exc

    async def drain(self) -> None:
        if self._write_error is not None:
            raise self._write_error
        # Normally empty. In a TLS 1.2 renegotiation our writes wait for the peer's answer:
        # read it here if no reader task does, so drain() cannot wait forever.
        while self._backlog and not self._closed:
            pulls = self._pulls
            async with self._pull_lock:
                if self._pulls == pulls and self._backlog:
                    if self._inner_eof or self._read_eof:
                        raise BrokenPipeError(
                            "the peer closed the connection during a TLS renegotiation"
                        )
                    if len(self._plain) >= SET_ASIDE_LIMIT:
                        raise ConnectionResetError(
                            "the peer kept sending data without finishing a TLS renegotiation"
                        )
                    await self._pull()
            self._set_aside()
            self._push_backlog()
        await self.inner.drain()

    def _flush(self) -> None:
        """Hand everything OpenSSL has produced to the inner stream, as one write."""
        if self._outgoing.pending:
            data = self._outgoing.read()
            if not self._inner_write_closed:
                self.inner.write(data)

    def _flush_quietly(self) -> None:
        """_flush for a reader: a write failure is reported to the next writer, not to the
        read that happened to cause it (it may have good plaintext to return)."""
        try:
            self._flush()
        except OSError as exc:
            self._write_error = self._write_error or exc

    # ends --------------------------------------------------------------------------------

    def can_write_eof(self) -> bool:
        # TLS 1.3 close_notify closes one direction (RFC 8446 §6.1); in TLS 1.2 the peer must
        # answer it by closing the connection (RFC 5246 §7.2.1), so there is no half-close.
        return not self._closed and self._ssl.version() == "TLSv1.3"

    def write_eof(self) -> None:
        if self._eof_wanted or self._closed:
            return
        self._eof_wanted = True
        self._send_close_notify()

    def _send_close_notify(self) -> None:
        """Send close_notify and end the inner stream's writing side, once nothing written
        before is still waiting (a renegotiation holds up the backlog)."""
        if not self._eof_wanted or self._eof_sent or self._backlog:
            return
        # The ssl module's unwrap() calls SSL_shutdown twice, and the second call reads: a
        # record already waiting would be taken as "application data after close notify"
        # and break the connection. Decrypt what is waiting first; read() returns it later.
        self._set_aside()
        try:
            self._ssl.unwrap()
        except ssl.SSLWantReadError:
            pass  # ours is out; the peer's comes (or not) through read()
        except ssl.SSLError:
            # OpenSSL will not shut down in the middle of a renegotiation; this runs again
            # after the next read, when the handshake may be done.
            self._flush_quietly()
            return
        self._eof_sent = True
        self._flush()
        self._inner_write_closed = True
        if self.inner.can_write_eof():
            self.inner.write_eof()

    def close(self) -> None:
        if self._closed:
            return
        if not self.inner.is_closing() and self._write_error is None:
            self._backlog.clear()  # held up by a renegotiation: nobody will wait for it now
            self._eof_wanted = True
            try:
                self._send_close_notify()
            except OSError:
                pass  # best effort: the connection is going away either way
        self._closed = True
        self.inner.close()

    def abort(self) -> None:
        self._closed = True
        self._backlog.clear()
        self.inner.abort()

    async def wait_closed(self) -> None:
        await self.inner.wait_closed()

    def is_closing(self) -> bool:
        return self._closed or self.inner.is_closing()

    # information -------------------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        tls = self._ssl
        if name == "ssl_object":
            return tls
        if name == "sslcontext":
            return tls.context
        if name == "peercert":
            return tls.getpeercert()
        if name == "cipher":
            return tls.cipher()
        if name == "version":
            return tls.version()
        if name == "server_hostname":
            return tls.server_hostname
        if name == "alpn_protocol":
            return tls.selected_alpn_protocol()
        if name == "unclean_eof":
            return self._unclean_eof
        return self.inner.get_extra_info(name, default)

    def raw_socket_stream(self) -> None:
        return None  # every byte is transformed in Python


# --- running a handshake, translating what goes wrong ---------------------------------------


async def tls_connect(
    stream: Stream,
    context: ssl.SSLContext,
    server_hostname: str | None,
    *,
    timeout: float = 10.0,
    suppress_ragged_eofs: bool = True,
    session: ssl.SSLSession | None = None,
) -> TlsStream:
    """Run a TLS client handshake over `stream` (the certificate checked for
    `server_hostname` as `context` says) and return the TLS stream on top of it.
    `session`: an earlier connection's (ssl_object.session) to resume, when the server
    allows (a resumed handshake sends no certificates).

    Within `timeout` seconds for the whole handshake. On failure the inner stream is closed
    and DialError(failure, Op.TLS_HANDSHAKE, detail) is raised; a server name the ssl module
    refuses, or a context it cannot use as a client, is a ValueError.
    """
    tls = _wrap(stream, context, False, server_hostname, timeout, suppress_ragged_eofs, session)
    await _run_handshake(tls, timeout, "server")
    return tls


async def tls_accept(
    stream: Stream,
    context: ssl.SSLContext,
    *,
    timeout: float = 10.0,
    suppress_ragged_eofs: bool = True,
) -> TlsStream:
    """The server side of tls_connect: for tests and for detour's relay server."""
    tls = _wrap(stream, context, True, None, timeout, suppress_ragged_eofs)
    await _run_handshake(tls, timeout, "client")
    return tls


def loop_tls_applies(stream: Stream) -> bool:
    """Whether TLS over `stream` may run on the event loop's own TLS transport: only when
    the stream is a bare socket (a SocketStream itself, not wrapped by anything) with
    nothing unread. Any layer that wraps it -- `tlsfrag` and the other evasion layers,
    which must see and rewrite the ClientHello as written, a proxy's or a tunnel's stream --
    is a different type, and then TLS runs here, in Python, on top of it."""
    from .tcp import SocketStream  # here: tcp does not need this module

    return type(stream) is SocketStream and stream.loop_tls_applies()


async def tls_connect_fast(
    stream: Stream,
    context: ssl.SSLContext,
    server_hostname: str | None,
    *,
    timeout: float = 10.0,
) -> Stream:
    """tls_connect, on the event loop's own TLS transport when `loop_tls_applies(stream)`
    (the same ssl context, so the same ClientHello; OpenSSL's records read and written by
    the loop's compiled code instead of a TlsStream's Python). The stream returned is then
    a SocketStream over the loop's TLS transport: `get_extra_info("ssl_object")` works as
    on a TlsStream, and it has no half-close (`can_write_eof()` is False: the loop's TLS
    transport closes both ways on close_notify). Otherwise, and for what the loop cannot
    check (no server name with a context that checks it), this is tls_connect. Failures
    are the same DialError(failure, Op.TLS_HANDSHAKE, detail) as tls_connect's."""
    if not loop_tls_applies(stream) or (context.check_hostname and server_hostname is None):
        return await tls_connect(stream, context, server_hostname, timeout=timeout)
    if not timeout > 0:
        stream.abort()
        raise ValueError(f"the TLS handshake timeout must be positive (got {timeout!r})")
    if context.protocol == ssl.PROTOCOL_TLS_SERVER:
        stream.abort()
        raise ValueError("cannot start TLS: a server context cannot be used here")
    try:
        async with patient(timeout):
            # The loop's own timeout would only be a second, later one (past what a probe's
            # patience, at most 10 times, can stretch ours to).
            return await stream.start_tls(context, server_hostname, timeout=timeout * 10 + 60)  # type: ignore[attr-defined]
    except TimeoutError:  # before OSError: TimeoutError is one
        stream.abort()
        raise DialError(
            Failure.TIMEOUT, Op.TLS_HANDSHAKE, f"no TLS handshake within {timeout:g}s"
        ) from None
    except OSError as exc:  # ssl.SSLError included
        stream.abort()
        failure = classify_os_error(exc, Op.TLS_HANDSHAKE).failure
        raise DialError(
            failure, Op.TLS_HANDSHAKE, _handshake_detail(exc, failure, "server")
        ) from None
    except ValueError as exc:  # a name the ssl module refuses (UnicodeError is one too)
        stream.abort()
        raise ValueError(f"cannot start TLS: {exc}") from None
    except BaseException:
        stream.abort()
        raise


def _wrap(
    stream: Stream,
    context: ssl.SSLContext,
    server_side: bool,
    server_hostname: str | None,
    timeout: float,
    suppress_ragged_eofs: bool,
    session: ssl.SSLSession | None = None,
) -> TlsStream:
    if not timeout > 0:
        stream.abort()
        raise ValueError(f"the TLS handshake timeout must be positive (got {timeout!r})")
    problem = None
    if not server_side and context.check_hostname and server_hostname is None:
        # ssl.SSLSocket refuses this, but SSLObject does not: it would then accept a valid
        # certificate for any name.
        problem = "check_hostname requires server_hostname"
    elif context.protocol == (ssl.PROTOCOL_TLS_CLIENT if server_side else ssl.PROTOCOL_TLS_SERVER):
        problem = f"a {'client' if server_side else 'server'} context cannot be used here"
    if problem is not None:
        stream.abort()
        raise ValueError(f"cannot start TLS: {problem}")
    try:
        return TlsStream(
            stream,
            context,
            server_side=server_side,
            server_hostname=server_hostname,
            suppress_ragged_eofs=suppress_ragged_eofs,
            session=session,
        )
    except ValueError as exc:  # a name the ssl module refuses (UnicodeError is one too)
        stream.abort()
        raise ValueError(f"cannot start TLS: {exc}") from None
    except BaseException:
        stream.abort()
        raise


async def _run_handshake(tls: TlsStream, timeout: float, peer: str) -> None:
    try:
        async with patient(timeout):
            await tls._handshake()
    except TimeoutError:  # before OSError: TimeoutError is one
        tls.abort()
        raise DialError(
            Failure.TIMEOUT, Op.TLS_HANDSHAKE, f"no TLS handshake within {timeout:g}s"
        ) from None
    except OSError as exc:  # ssl.SSLError included
        failure = classify_os_error(exc, Op.TLS_HANDSHAKE).failure
        if isinstance(exc, ssl.SSLError) and failure is not Failure.EOF:
            tls.inner.close()  # the alert OpenSSL wrote goes out first
        else:
            tls.inner.abort()
        tls._closed = True
        raise DialError(failure, Op.TLS_HANDSHAKE, _handshake_detail(exc, failure, peer)) from None
    except BaseException:  # cancelled: the handshake will never finish
        tls.abort()
        raise


def _handshake_detail(exc: OSError, failure: Failure, peer: str) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"the {peer}'s certificate: {exc.verify_message}"
    if failure is Failure.EOF:
        return f"the {peer} closed the connection during the TLS handshake"
    if failure is Failure.CONNECTION_RESET:
        return "the connection was reset during the TLS handshake"
    if isinstance(exc, ssl.SSLError) and exc.reason:
        # OpenSSL's reason code ("WRONG_VERSION_NUMBER") without the source file and line
        return f"TLS handshake failed: {exc.reason.lower().replace('_', ' ')}"
    return f"TLS handshake failed: {exc.strerror or exc}"
