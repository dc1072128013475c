"""Name resolution for the base of a chain.

A Resolver turns a host name into addresses or raises DialError(op=resolve). The system
resolver is the default; `resolve:` layers (encrypted DNS) and the lab plug in others.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable, Mapping
from typing import Protocol

from .base import DialError, Failure, IPAddress, Op, classify_os_error

__all__ = ["Resolver", "StaticResolver", "SystemResolver"]


class Resolver(Protocol):
    async def resolve(self, host: str) -> list[IPAddress]: ...


def _unique(addresses: Iterable[IPAddress]) -> list[IPAddress]:
    seen: dict[IPAddress, None] = {}
    for addr in addresses:
        seen.setdefault(addr, None)
    return list(seen)


class SystemResolver:
    """The operating system's resolver (getaddrinfo), with a timeout it lacks itself."""

    def __init__(self, timeout: float = 5.0) -> None:
        self.timeout = timeout

    async def resolve(self, host: str) -> list[IPAddress]:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except TimeoutError:
            raise DialError(
                Failure.DNS_TIMEOUT, Op.RESOLVE, f"no answer for {host} within {self.timeout:g}s"
            ) from None
        except OSError as exc:
            raise classify_os_error(exc, Op.RESOLVE, f"{host}: {exc.strerror or exc}") from None
        addresses = _unique(
            ipaddress.ip_address(info[4][0].split("%", 1)[0])
            for info in infos
            if info[0] in (socket.AF_INET, socket.AF_INET6)
        )
        if not addresses:
            raise DialError(Failure.DNS_NO_ANSWER, Op.RESOLVE, f"no addresses for {host}")
        return addresses

    def __repr__(self) -> str:
        return "system"


class StaticResolver:
    """Answers from a fixed table (tests, the lab); unknown names are NXDOMAIN unless a
    fallback resolver is given."""

    def __init__(
        self, table: Mapping[str, Iterable[str]], fallback: Resolver | None = None
    ) -> None:
        self.table = {
            name.lower().rstrip("."): [ipaddress.ip_address(a) for a in addrs]
            for name, addrs in table.items()
        }
        self.fallback = fallback

    async def resolve(self, host: str) -> list[IPAddress]:
        key = host.lower().rstrip(".")
        if key in self.table:
            if not self.table[key]:
                raise DialError(Failure.DNS_NO_ANSWER, Op.RESOLVE, f"no addresses for {host}")
            return list(self.table[key])
        if self.fallback is not None:
            return await self.fallback.resolve(host)
        raise DialError(Failure.DNS_NXDOMAIN, Op.RESOLVE, f"{host}: no such name")
