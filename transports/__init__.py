"""Pluggable transports: every way detour can reach a destination is a Dialer, and Dialers
compose into chains. This package never imports `helper`."""

from .base import Dialer, DialError, Endpoint, Failure, Op, Stream
from .chain import Chain, ChainError, DialOptions, parse_chain, redact

__all__ = [
    "Chain",
    "ChainError",
    "DialError",
    "DialOptions",
    "Dialer",
    "Endpoint",
    "Failure",
    "Op",
    "Stream",
    "parse_chain",
    "redact",
]
