"""Tor pluggable transports (obfs4, webtunnel, snowflake, ...) as route layers: detour runs
the transport's client program as a managed child process (PT 1.0) and sends connections
through it to a bridge.

    spec.py     the `pt:` layer's text (query form or a pasted bridge line), client
                programs, per-connection arguments
    ipc.py      the child's environment and its stdout messages (sans-IO)
    process.py  PtManager: children started on first use, shared, restarted, stopped
    dialer.py   PtDialer: SOCKS to the child, which reaches the bridge
"""

from .dialer import PtDialer
from .process import ManagedClient, PtManager
from .spec import PtSpec, PtSpecError, parse_pt

__all__ = ["ManagedClient", "PtDialer", "PtManager", "PtSpec", "PtSpecError", "parse_pt"]
