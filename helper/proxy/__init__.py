"""The inbound side: the listeners applications connect to, and the relay pump."""

from .listener import ActiveConnection, MixedListener
from .relay import RelayStats, relay
from .transparent import TransparentListener

__all__ = ["ActiveConnection", "MixedListener", "RelayStats", "TransparentListener", "relay"]
