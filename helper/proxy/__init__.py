"""The inbound side: the client server (one per engine), the listeners applications and
devices connect to (each a handshake on it), and the relay pump."""

from .listener import ClientConnection, Listener, Request
from .mixed import MixedListener
from .relay import RelayStats, relay
from .server import ClientServer
from .transparent import TransparentListener

__all__ = [
    "ClientConnection",
    "ClientServer",
    "Listener",
    "MixedListener",
    "RelayStats",
    "Request",
    "TransparentListener",
    "relay",
]
