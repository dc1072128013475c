"""Regressions found by the reliability tests, pinned at the unit level."""

from __future__ import annotations

import ssl

from tests.unit.scripted import ScriptedStream
from transports.websocket import WebSocketStream


class DeadTls(ScriptedStream):
    """A TLS stream whose peer vanished: every write raises as ssl does."""

    def write(self, data: bytes) -> None:
        raise ssl.SSLEOFError(8, "EOF occurred in violation of protocol")


def test_websocket_close_after_the_peer_vanished() -> None:
    """A front's relay killed mid-tunnel: closing the WebSocket tried to send its close frame
    through the dead TLS stream, and the SSLEOFError escaped from close() into the relay pump
    (an 'internal error' with a traceback in detour's log)."""
    inner = DeadTls()
    WebSocketStream(inner).close()
    assert inner.closed


def test_http_head_of_one_empty_line() -> None:
    """Found by the atheris harness: b'\\r\\n' made parse_request_head raise IndexError (the
    listener only passes heads ending in CRLF CRLF, so no client could reach it)."""
    import pytest

    from helper.proxy.handshake import ProtocolError
    from helper.proxy.http import parse_request_head

    for head in (b"\r\n", b""):
        with pytest.raises(ProtocolError):
            parse_request_head(head)


def test_failed_accepts_are_one_sentence_now_and_then() -> None:
    """asyncio's loop logged every accept() without file descriptors at ERROR with a
    traceback, once a second per waiting client; AcceptFailures lets one sentence through
    per interval and leaves every other record alone."""
    import logging

    from helper.logs import AcceptFailures

    def record(msg: str) -> logging.LogRecord:
        error = OSError(24, "Too many open files")
        return logging.makeLogRecord(
            {
                "name": "asyncio",
                "levelno": logging.ERROR,
                "msg": msg,
                "exc_info": (OSError, error, None),
            }
        )

    accept = AcceptFailures(interval=3600)
    first = record("socket.accept() out of system resource\nsocket: <...>")
    assert accept.filter(first)
    assert first.exc_info is None
    assert first.getMessage().startswith("cannot accept new connections: too many open files")
    assert not accept.filter(record("socket.accept() out of system resource\nsocket: <...>"))
    other = record("Unclosed connection")
    assert accept.filter(other) and other.exc_info is not None


def test_an_accept_retry_after_the_listener_closed_says_nothing() -> None:
    """The loop retries a failed accept a second later even when the listener was closed
    meanwhile (detour stopping): the retry met a closed socket and logged a traceback
    (seen as a rare failure of test_faults' descriptor test). Reproduced with the loop's own
    retry on a closed socket; the record is dropped, other callback errors are not."""
    import asyncio
    import logging
    import socket

    from helper.logs import AcceptFailures

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.addFilter(AcceptFailures())
    asyncio_log = logging.getLogger("asyncio")
    asyncio_log.addHandler(handler)
    loop = asyncio.new_event_loop()
    try:
        sock = socket.socket()
        sock.close()  # the listener, closed before the retry

        def boom() -> None:
            raise RuntimeError("another callback's error")

        loop.call_soon(loop._start_serving, lambda: None, sock)  # type: ignore[attr-defined]
        loop.call_soon(boom)
        loop.call_soon(loop.stop)
        loop.run_forever()
    finally:
        loop.close()
        asyncio_log.removeHandler(handler)
    assert len(records) == 1 and "boom" in records[0].getMessage(), [
        r.getMessage() for r in records
    ]
