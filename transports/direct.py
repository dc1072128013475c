"""`direct`: plain TCP to the destination, the base of every chain.

Resolves names with an injectable Resolver, then connects with Happy Eyeballs (RFC 8305):
addresses interleaved by family, the next attempt started 250 ms after the previous one or
as soon as it fails, the first connection wins.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time

from .base import (
    DialError,
    Endpoint,
    Failure,
    IPAddress,
    Op,
    classify_os_error,
    dial_deadline,
    dial_phase,
)
from .guard import check_addresses
from .race import RaceFailed, staggered_race
from .resolver import Resolver, SystemResolver
from .tcp import SocketStream, connect_tcp

__all__ = ["DirectDialer", "interleave_families"]

# Failures that say least about the destination: shown only if nothing better was seen.
_UNINFORMATIVE = (Failure.NETWORK_UNREACHABLE, Failure.HOST_UNREACHABLE, Failure.UNKNOWN)


def interleave_families(addresses: list[IPAddress]) -> list[IPAddress]:
    """RFC 8305 section 4: alternate address families, starting with the first one given."""
    if len(addresses) < 2:
        return list(addresses)
    first = addresses[0].version
    same = [a for a in addresses if a.version == first]
    other = [a for a in addresses if a.version != first]
    out: list[IPAddress] = []
    for i in range(max(len(same), len(other))):
        out.extend(group[i] for group in (same, other) if i < len(group))
    return out


class DirectDialer:
    """Connect straight to the destination."""

    def __init__(
        self,
        resolver: Resolver | None = None,
        *,
        attempt_delay: float = 0.25,
        connect_timeout: float = 10.0,
        local_address: str | None = None,
    ) -> None:
        if attempt_delay < 0 or connect_timeout <= 0:
            raise ValueError("attempt_delay must be >= 0 and connect_timeout > 0")
        self.resolver = resolver if resolver is not None else SystemResolver()
        self.attempt_delay = attempt_delay
        self.connect_timeout = connect_timeout
        # The source address for outgoing connections (a multi-homed router's uplink; the
        # lab's servers outside its censor); only addresses of its family are dialled.
        self.local_address = ipaddress.ip_address(local_address) if local_address else None

    async def dial(self, target: Endpoint) -> SocketStream:
        ip = target.ip
        if ip is not None:
            addresses = [ip]
        else:
            dial_phase.set(Op.RESOLVE)
            addresses = await self.resolver.resolve(target.host)
            dial_phase.set(Op.CONNECT)
        if not addresses:
            raise DialError(Failure.DNS_NO_ANSWER, Op.RESOLVE, f"no addresses for {target.host}")
        # A destination dialed for a LAN client may not be private, loopback, this machine...
        addresses = check_addresses(target.host, addresses)
        if self.local_address is not None:
            version = self.local_address.version
            addresses = [a for a in addresses if a.version == version]
            if not addresses:
                raise DialError(
                    Failure.NETWORK_UNREACHABLE,
                    Op.CONNECT,
                    f"{target.host} has no IPv{version} address to dial from {self.local_address}",
                )
        addresses = interleave_families(addresses)

        # A literal destination is dialled as the client wrote it (no need to write it out).
        literal = target.host if ip is not None else None

        def attempt(addr: IPAddress):
            async def connect() -> SocketStream:
                local = (str(self.local_address), 0) if self.local_address else None
                text = literal if literal is not None else str(addr)
                try:
                    return await connect_tcp(text, target.port, local_addr=local)
                except OSError as exc:
                    where = Endpoint(str(addr), target.port)
                    raise classify_os_error(exc, Op.CONNECT, f"{where}: {_reason(exc)}") from None

            return connect

        attempts = [attempt(a) for a in addresses]
        outer = dial_deadline.get()
        try:
            if outer is not None and outer <= time.monotonic() + self.connect_timeout:
                # The caller's deadline (a route's timeout) ends first: it bounds the connect.
                _, stream = await staggered_race(
                    attempts, self.attempt_delay, discard=lambda s: s.abort()
                )
            else:
                async with asyncio.timeout(self.connect_timeout):
                    _, stream = await staggered_race(
                        attempts, self.attempt_delay, discard=lambda s: s.abort()
                    )
        except TimeoutError:
            shown = ", ".join(str(Endpoint(str(a), target.port)) for a in addresses[:3])
            more = f" and {len(addresses) - 3} more" if len(addresses) > 3 else ""
            raise DialError(
                Failure.TIMEOUT,
                Op.CONNECT,
                f"no answer from {shown}{more} within {self.connect_timeout:g}s",
            ) from None
        except RaceFailed as failed:
            raise _most_informative(failed.errors) from None
        return stream

    def __repr__(self) -> str:
        return f"DirectDialer(resolver={self.resolver!r})"


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _most_informative(errors: list[BaseException | None]) -> DialError:
    dial_errors = [e for e in errors if isinstance(e, DialError)]
    for err in dial_errors:
        if err.failure not in _UNINFORMATIVE:
            return err
    if dial_errors:
        return dial_errors[0]
    return DialError(Failure.UNKNOWN, Op.CONNECT, "connection attempts failed")
