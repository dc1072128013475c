"""The relay's side of the capped mode (transports/fronted/capped.py): sessions that outlive
the short connections ("carriers") that carry them.

Each carrier starts with the client's hello: a new session, or the id of one it has. A new
session's byte stream is served as any tunnel is (the inner TLS, the pin, the multiplexed
connections: RelayServer._serve); every carrier of it feeds the session the segments it
carries. The relay sends on the oldest carrier it has not ended, within the allowance the
client gave it; when the allowance is spent it ends the carrier with a segment flagged END.
A REWIND (the client lost a carrier) ends every carrier older than the one it came on.
On a `detour-carrier/2` carrier the hello may be early (it came with the upgrade): the relay
then sends no more than its provisional allowance there until the client's confirm says
what the carrier may carry, and meanwhile sends on the next carrier.
A session with no carrier for LINGER seconds is closed. A session has at most
`[limits] carriers_per_session` carriers open: at the limit the oldest the relay has ended
are closed to make room (a client from before the limit keeps every carrier open until it
has spent its own budget there, so in a long download they pile up), and a carrier is
refused only when every open one is still in use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable

from transports.base import Stream
from transports.fronted.capped import (
    CARRIER_PROTOCOL_EARLY,
    NEW,
    OK,
    REFUSED,
    SEGMENT_WRITE,
    UNKNOWN,
    WRITE_COST,
    SegmentReader,
    SessionStream,
    encode_welcome,
    parse_confirm,
    parse_hello,
    parse_hello_early,
)
from transports.fronted.session import END, HEADER, REWIND
from transports.wire import NeedMore, ProtocolError

__all__ = ["CarrierHub"]

log = logging.getLogger("detour.relay")

LINGER = 60.0  # a session with no carrier is closed after this long
HELLO_TIMEOUT = 10.0
CLOSE_GRACE = 5.0
MAX_SESSIONS = 10_000
PER_SESSION = 32  # carriers of one session open at once (the config's default)

_ = NEW  # the hello's flag, read by parse_hello


class _Link:
    def __init__(self, ws: Stream, allowance: int, *, confirmed: bool = True) -> None:
        self.ws = ws
        self.allowance = allowance  # until confirmed: the provisional one
        self.confirmed = confirmed
        self.used = 0
        self.ended = False  # END sent: nothing more goes here

    @property
    def room(self) -> int:
        # What a segment may take now, keeping room for the END segment.
        return self.allowance - self.used - 2 * (HEADER.size + WRITE_COST)

    @property
    def usable(self) -> bool:
        """Not ended, and not waiting for a confirm with its provisional allowance spent."""
        return not self.ended and (self.confirmed or self.room >= HEADER.size + 1)

    def confirm(self, allowance: int) -> None:
        self.allowance = allowance
        self.confirmed = True

    def send(self, data: bytes) -> None:
        self.used += len(data) + WRITE_COST
        with contextlib.suppress(OSError, RuntimeError):
            self.ws.write(data)

    def end(self, stream: SessionStream) -> None:
        if not self.ended:
            self.ended = True
            self.send(stream.outgoing(HEADER.size, END))


class _Session:
    def __init__(self, ident: bytes, name: str) -> None:
        self.ident = ident
        self.name = name
        self.stream = SessionStream(name=f"relay: {name}")
        self.links: list[_Link] = []
        self.alone_since: float | None = None
        self.changed = asyncio.Event()
        self.writer = asyncio.ensure_future(self._write_loop())
        self.server: asyncio.Task[None] | None = None

    def attach(self, link: _Link) -> None:
        self.links.append(link)
        self.alone_since = None
        self.changed.set()
        self.stream.sendable.set()

    def rewound(self, link: _Link) -> None:
        """The client lost a carrier: the ones before `link` are not to be used."""
        for old in self.links[: self.links.index(link)] if link in self.links else ():
            old.end(self.stream)
        self.changed.set()

    def make_room(self, limit: int) -> bool:
        """At the limit of open carriers: close the oldest the relay has ended (the client
        may still send on them; what was in flight there it sends again, as for any carrier
        lost) until one more fits. False when every open carrier is still in use."""
        for old in [link for link in self.links if link.ended]:
            if len(self.links) < limit:
                break
            self.links.remove(old)
            old.ws.abort()
        return len(self.links) < limit

    def detach(self, link: _Link) -> None:
        if link in self.links:
            self.links.remove(link)
        if not self.links:
            self.alone_since = asyncio.get_running_loop().time()

    async def _write_loop(self) -> None:
        stream = self.stream
        while not stream.ended.is_set():
            link = next((x for x in self.links if x.usable), None)
            if link is None:
                self.changed.clear()
                await self.changed.wait()
                continue
            if link.room < HEADER.size + 1:
                link.end(stream)
                continue
            out = stream.outgoing(min(link.room, SEGMENT_WRITE))
            if not out:  # nothing the window lets out: wait for an acknowledgement or a write
                stream.sendable.clear()
                self.changed.clear()
                waits = [stream.sendable.wait(), self.changed.wait(), stream.ended.wait()]
                tasks = [asyncio.ensure_future(w) for w in waits]
                try:
                    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for task in tasks:
                        task.cancel()
                continue
            link.send(out)
            await asyncio.sleep(0)  # let the readers in between writes


class CarrierHub:
    """Every capped session of a relay. `serve(stream, name)` serves a new session's byte
    stream as a tunnel (returns when the tunnel has ended)."""

    def __init__(
        self,
        serve: Callable[[Stream, str], Awaitable[None]],
        *,
        per_client: int,
        per_session: int = PER_SESSION,
        linger: float = LINGER,
    ) -> None:
        self._serve = serve
        self.per_client = per_client
        self.per_session = per_session
        self.refused_carriers = 0  # beyond a session's limit
        self.linger = linger
        self.sessions: dict[bytes, _Session] = {}
        self.of_client: Counter[str] = Counter()
        self._reaper: asyncio.Task[None] | None = None

    async def carrier(self, ws: Stream, name: str, protocol: str = "") -> None:
        """One carrier, from its hello to its end; `protocol`: the subprotocol agreed."""
        try:
            async with asyncio.timeout(HELLO_TIMEOUT):
                _, ident, new, allowance, early, rest = await _read_hello(
                    ws, protocol == CARRIER_PROTOCOL_EARLY
                )
        except (TimeoutError, ProtocolError, OSError, asyncio.IncompleteReadError) as exc:
            log.info("relay: %s: no valid carrier hello (%s)", name, type(exc).__name__)
            ws.abort()
            return
        session = self.sessions.get(ident)
        if new:
            if session is not None or len(self.sessions) >= MAX_SESSIONS:
                status = REFUSED
            elif self.of_client[name] >= self.per_client:
                log.info("relay: %s is at its limit of %d sessions", name, self.per_client)
                status = REFUSED
            else:
                session = self._start(ident, name)
                status = OK
        elif session is None or session.name != name:
            status = UNKNOWN
        elif len(session.links) >= self.per_session and not session.make_room(self.per_session):
            self.refused_carriers += 1
            log.info("relay: %s: a session is at its limit of %d carriers", name, self.per_session)
            status = REFUSED
        else:
            status = OK
        ws.write(encode_welcome(status))
        if status != OK or session is None:
            ws.close()
            return
        link = _Link(ws, allowance, confirmed=not early)
        session.attach(link)
        reader = SegmentReader()
        pending = b""  # an early hello's confirm, until it is whole
        try:
            data = rest
            while True:
                if data and not link.confirmed:
                    pending += data
                    try:
                        used, final = parse_confirm(pending)
                    except NeedMore:
                        data = b""
                    else:
                        link.confirm(final)
                        session.changed.set()
                        data, pending = pending[used:], b""
                if data:
                    for segment in reader.feed(data):
                        session.stream.receive(segment)
                        if segment.flags & REWIND:
                            session.rewound(link)
                        if segment.flags & END:  # the client is done with this carrier
                            link.end(session.stream)
                            session.changed.set()
                data = await ws.read(65536)
                if not data:
                    break
        except ProtocolError as exc:
            log.info("relay: %s: a carrier sent no segments (%s): the session ends", name, exc)
            session.stream.fail(ConnectionResetError(str(exc)))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            session.detach(link)
            session.changed.set()
            ws.close()

    def _start(self, ident: bytes, name: str) -> _Session:
        session = _Session(ident, name)
        self.sessions[ident] = session
        self.of_client[name] += 1
        session.server = asyncio.ensure_future(self._run(session))
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.ensure_future(self._reap())
        return session

    async def _run(self, session: _Session) -> None:
        try:
            await self._serve(session.stream, session.name)
            session.stream.close()  # the FIN, acknowledged or not within the grace
            loop = asyncio.get_running_loop()
            deadline = loop.time() + CLOSE_GRACE
            while not session.stream.session.finished and loop.time() < deadline:
                session.stream.changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.01, deadline - loop.time())):
                        await session.stream.changed.wait()
        finally:
            self._end(session)

    def _end(self, session: _Session) -> None:
        if self.sessions.get(session.ident) is session:
            del self.sessions[session.ident]
            self.of_client[session.name] -= 1
        session.stream.finish()
        session.writer.cancel()
        for link in list(session.links):
            link.ws.close()

    async def _reap(self) -> None:
        loop = asyncio.get_running_loop()
        while self.sessions:
            await asyncio.sleep(min(self.linger / 4, 5.0))
            for session in list(self.sessions.values()):
                alone = session.alone_since
                if alone is not None and loop.time() - alone > self.linger:
                    log.info("relay: %s: a session without carriers ended", session.name)
                    session.stream.fail(ConnectionResetError("no carrier came back"))

    async def aclose(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for session in list(self.sessions.values()):
            session.stream.fail(ConnectionResetError("the relay is stopping"))
            if session.server is not None:
                session.server.cancel()
        tasks = [s.server for s in self.sessions.values() if s.server is not None]
        await asyncio.gather(*tasks, return_exceptions=True)


async def _read_hello(ws: Stream, early_ok: bool) -> tuple[int, bytes, bool, int, bool, bytes]:
    buf = b""
    while True:
        try:
            if early_ok:
                used, ident, new, allowance, early = parse_hello_early(buf)
            else:
                (used, ident, new, allowance), early = parse_hello(buf), False
            return used, ident, new, allowance, early, buf[used:]
        except NeedMore:
            chunk = await ws.read(64)
            if not chunk:
                raise asyncio.IncompleteReadError(buf, None) from None
            buf += chunk
