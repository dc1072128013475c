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
