"""The `pt:` layer's Dialer: a byte stream through a pluggable transport to a bridge, and by
the bridge to the one address its server side forwards to.

    detour --SOCKS5 + args--> PT client (child) ==obfs4==> bridge's PT server --> forward target
                                                                                (a SOCKS server)

The PT client is a local SOCKS proxy (pt-spec 3.5): detour asks it to CONNECT to the bridge
address and passes the bridge's arguments (cert=, iat-mode=, url=, ...) as the login. What
comes out at the far end is decided by the bridge's server (TOR_PT_ORPORT), not by detour,
so `dial` ignores its target: the layer after `pt:` in a chain (socks5://, http://, ...)
speaks to that forward target through the stream and names the real destination.
"""

from __future__ import annotations

from ..base import DialError, Endpoint, Failure, Op, Stream
from ..children import ChildStream, Launched
from ..direct import DirectDialer
from ..socks import Socks4aDialer, Socks5Dialer
from .process import ManagedClient, PtManager
from .spec import PtSpec, encode_args, find_client, socks5_login

__all__ = ["PtDialer", "PtStream"]


class PtDialer:
    inner = None  # the PT client makes the connection itself: this is a chain's base

    def __init__(
        self,
        spec: PtSpec,
        manager: PtManager,
        *,
        proxy_url: str | None = None,
        connect_timeout: float = 10.0,
        handshake_timeout: float = 10.0,
    ) -> None:
        self.spec = spec
        self.manager = manager
        self._proxy_url = proxy_url
        self._connect_timeout = connect_timeout
        self._handshake_timeout = handshake_timeout
        encoded = encode_args(spec.args)
        self._user_id = encoded
        self._login = socks5_login(encoded.encode())

    def client(self) -> ManagedClient:
        """The child this layer dials through (made now if new, started on first use).
        Raises DialError(pt_not_installed) when its program is not found."""
        spec = self.spec
        return self.manager.client(find_client(spec), spec.transport, self._proxy_url, spec.state)

    async def dial(self, target: Endpoint) -> Stream:
        spec = self.spec
        client = self.client()
        # A child that died a moment ago may not have been noticed yet: its port refuses or
        # closes. Nothing reached the bridge then, so the dial starts a new child and tries
        # once more.
        for attempt in (1, 2):
            method, child = await client.method()
            try:
                stream = await self._socks(method, client.name).dial(spec.bridge)
            except DialError as exc:
                if not await child.ended():
                    label = f"the {client.name}"
                    raise _about_bridge(
                        exc, spec.transport, label, self._handshake_timeout
                    ) from None
                if attempt == 2:
                    raise self._died(client.name, child.process.returncode) from None
                continue
            if child.exited.is_set():
                stream.abort()
                if attempt == 2:
                    raise self._died(client.name, child.process.returncode)
                continue
            wrapped = PtStream(stream, child)
            client.track(child, wrapped)
            return wrapped
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _socks(self, method: Launched, name: str) -> Socks5Dialer | Socks4aDialer:
        """A SOCKS client for the child's port, with the bridge's arguments as the login."""
        local = DirectDialer(connect_timeout=self._connect_timeout)
        label = f"the {name}"
        if method.protocol == "socks5":
            username, password = self._login or (None, None)
            return Socks5Dialer(
                local,
                method.address,
                username,
                password,
                handshake_timeout=self._handshake_timeout,
                label=label,
            )
        return Socks4aDialer(
            local,
            method.address,
            self._user_id,
            handshake_timeout=self._handshake_timeout,
            label=label,
        )

    @staticmethod
    def _died(name: str, code: int | None) -> DialError:
        how = f"was killed by signal {-code}" if code is not None and code < 0 else "exited"
        return DialError(
            Failure.PT_FAILED,
            Op.PROXY_HANDSHAKE,
            f"the {name} {how} during the handshake; the next connection starts it again",
        )

    def __repr__(self) -> str:
        return f"PtDialer({self.spec.transport})"


# A connection through a PT child: its end counts only while the child lives.
PtStream = ChildStream


def _about_bridge(exc: DialError, transport: str, label: str, timeout: float) -> DialError:
    """Say what a PT client's SOCKS answer means for the bridge. PT clients answer "general
    failure" whenever the bridge cannot be reached or its handshake fails."""
    if exc.failure is Failure.PROXY_REFUSED:
        return DialError(
            Failure.PROXY_REFUSED,
            exc.op,
            f"{label} could not connect to the {transport} bridge or complete its handshake "
            "(is the bridge up, and are its arguments right?)",
        )
    if exc.failure is Failure.TIMEOUT and exc.op is Op.PROXY_HANDSHAKE:
        return DialError(
            Failure.TIMEOUT,
            exc.op,
            f"no answer from the {transport} bridge through {label} within {timeout:g} s",
        )
    return exc
