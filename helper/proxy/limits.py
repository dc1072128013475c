"""Admission limits for the listeners and a log that a flood cannot fill.

A router's listener is reachable by every device on the LAN, including a broken or hostile
one. Each accepted connection costs memory and a task, and one still in its handshake costs
them while it gives nothing back; a client that opens a thousand connections and never
finishes a handshake (slowloris) would otherwise take them all. So detour counts, per client
address and in all, open connections and the ones still in their handshake, and closes a new
connection at once when it would pass a limit. The per-client limits are what keep one device
from starving the others; the totals bound what the process holds whoever connects.

Bookkeeping only (no sockets), so the rules are tested as plain functions. `Admission` puts
the allow-list, the limits and the refusal log together for a group of listeners that
count their clients together (the mixed and transparent listeners; the WhatsApp proxy's
ports).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from transports import Endpoint
from transports.base import IPAddress, IPNetwork
from transports.guard import normalize_address

from .logins import LoginBackoff

__all__ = [
    "Admission",
    "ConnectionBook",
    "Limits",
    "ThrottledLog",
    "client_allowed",
    "client_key",
    "listen_limits",
]

# The config keys that set each limit, named when a connection is refused.
LISTEN_KEYS = (
    "listen.max_connections",
    "listen.max_connections_per_client",
    "listen.max_handshakes",
    "listen.max_handshakes_per_client",
)


@dataclass(frozen=True)
class Limits:
    """Each 0 for no limit; `keys` names the config keys of the four, in this order."""

    connections: int = 1024
    connections_per_client: int = 256
    handshakes: int = 128
    handshakes_per_client: int = 32
    keys: tuple[str, str, str, str] = LISTEN_KEYS


def client_key(client: Endpoint) -> str:
    """Limits count per address (an IPv4-mapped address is its IPv4 address)."""
    ip = client.ip
    return str(normalize_address(ip)) if ip is not None else client.host


def client_allowed(client: Endpoint, allow: tuple[IPNetwork, ...]) -> bool:
    """Whether `client` is in the allow-list (an IPv4-mapped address as its IPv4 address)."""
    ip = client.ip
    if ip is None:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in allow if net.version == ip.version)


def listen_limits(config) -> Limits:
    """The `[listen]` limits (a ListenConfig's)."""
    return Limits(
        config.max_connections,
        config.max_connections_per_client,
        config.max_handshakes,
        config.max_handshakes_per_client,
    )


class ConnectionBook:
    """Open connections and pending handshakes, in all and per client address."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.open: Counter[str] = Counter()
        self.handshaking: Counter[str] = Counter()
        self.open_total = 0
        self.handshaking_total = 0

    def admit(self, client: str) -> str | None:
        """Take a new connection from `client` (an address, no port) into its handshake; or
        say which limit it would pass (and take nothing)."""
        limits = self.limits
        total, per_client, handshakes, handshakes_per_client = limits.keys
        if limits.connections and self.open_total >= limits.connections:
            return f"{limits.connections} connections in all ({total})"
        # (Counter's own item lookup and deletion are Python code: the book reads and
        # writes its entries as a dict's, one lookup each, on every connection.)
        open_now = self.open.get(client, 0)
        if limits.connections_per_client and open_now >= limits.connections_per_client:
            return f"{limits.connections_per_client} connections from one client ({per_client})"
        if limits.handshakes and self.handshaking_total >= limits.handshakes:
            return f"{limits.handshakes} pending handshakes in all ({handshakes})"
        handshaking_now = self.handshaking.get(client, 0)
        if limits.handshakes_per_client and handshaking_now >= limits.handshakes_per_client:
            return (
                f"{limits.handshakes_per_client} pending handshakes from one client "
                f"({handshakes_per_client})"
            )
        self.open[client] = open_now + 1
        self.open_total += 1
        self.handshaking[client] = handshaking_now + 1
        self.handshaking_total += 1
        return None

    def handshake_over(self, client: str) -> None:
        """The connection's handshake ended (either way); it stays open."""
        self._drop(self.handshaking, client)
        self.handshaking_total -= 1

    def release(self, client: str, *, handshaking: bool) -> None:
        """The connection closed (`handshaking`: before its handshake ended)."""
        if handshaking:
            self.handshake_over(client)
        self._drop(self.open, client)
        self.open_total -= 1

    @staticmethod
    def _drop(counter: Counter[str], client: str) -> None:
        # Entries at zero are removed: the book's size follows the clients connected now,
        # not every address ever seen.
        left = counter.get(client, 0) - 1
        if left > 0:
            counter[client] = left
        else:
            counter.pop(client, None)


class ThrottledLog:
    """Log lines of one kind at most `burst` per `period` seconds; the rest are counted and
    the count is told with the next line of that kind that is let through."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = 20,
        period: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.burst = burst
        self.period = period
        self.clock = clock
        self._windows: dict[str, tuple[float, int, int]] = {}  # kind -> (start, sent, dropped)

    def log(self, kind: str, level: int, message: str, *args: object) -> bool:
        """Log unless this kind is over its budget; True if the line was written."""
        now = self.clock()
        start, sent, dropped = self._windows.get(kind, (now, 0, 0))
        if now - start >= self.period:
            start, sent = now, 0
        if sent >= self.burst:
            self._windows[kind] = (start, sent, dropped + 1)
            return False
        if dropped:
            message += " (%d more like this not logged)"
            args = (*args, dropped)
        self.logger.log(level, message, *args)
        self._windows[kind] = (start, sent + 1, 0)
        return True


class Admission:
    """Who may connect to a group of listeners and how many at once: the allow-list (empty:
    everyone), the limits, and the refusal log lines, throttled. `prefix` starts each line
    ("WhatsApp proxy: "); `not_allowed_level` is the level of a client not on the list."""

    def __init__(
        self,
        limits: Limits,
        allow: tuple[IPNetwork, ...] = (),
        *,
        logger: logging.Logger,
        prefix: str = "",
        not_allowed_level: int = logging.WARNING,
        allow_key: str = "listen.allow",
    ) -> None:
        self.book = ConnectionBook(limits)
        self.allow = allow
        self.throttled = ThrottledLog(logger)
        self.logins = LoginBackoff()
        self.prefix = prefix
        self.not_allowed_level = not_allowed_level
        self.allow_key = allow_key  # the config key the allow-list comes from, for the log

    def admit(self, client: str, key: str, ip: IPAddress | None) -> bool:
        """Take a new connection from `client` ("host:port" as logged; `key`: its address as
        the limits count it, `ip`: parsed, an IPv4-mapped one as IPv4) into its handshake,
        or log why not and take nothing."""
        if self.allow and not (
            ip is not None and any(ip in net for net in self.allow if net.version == ip.version)
        ):
            self.throttled.log(
                "not-allowed",
                self.not_allowed_level,
                self.prefix + "refused client %s: not in %s",
                client,
                self.allow_key,
            )
            return False
        over = self.book_for(key).admit(key)
        if over is not None:
            self.throttled.log(
                "limit",
                logging.WARNING,
                self.prefix + "refused client %s: at the limit of %s",
                client,
                over,
            )
            return False
        return True

    async def login(self, client: str, key: str, what: str, check: Callable[[], bool], *,
                    patience: float) -> bool:  # fmt: skip
        """Check a login from `client` (`key`: its address) in its turn (logins.py: wrong
        ones slow their address down): True if `check()` says it is right. A login whose
        turn is more than `patience` seconds away is refused unchecked. Failures and
        refusals are logged through the throttled log, so a flood of them cannot fill it."""
        wait = self.logins.turn(key, patience)
        if wait is None:
            self.throttled.log(
                "login",
                logging.WARNING,
                self.prefix + "refused client %s: %s not checked: too many wrong logins from "
                "this address; its logins are slowed down",
                client,
                what,
            )
            return False
        if wait:
            await asyncio.sleep(wait)
        if check():
            self.logins.succeeded(key)
            return True
        delay = self.logins.failed(key)
        self.throttled.log(
            "login",
            logging.INFO if delay == 0 else logging.WARNING,
            self.prefix + "client %s: %s failed (wrong user name or password)%s",
            client,
            what,
            f"; the next login from this address is checked in {delay:g}s" if delay else "",
        )
        return False

    def book_for(self, key: str) -> ConnectionBook:
        """The book a client at `key` counts in (one for all here; the status API keeps
        loopback clients apart)."""
        return self.book

    def handshake_over(self, key: str) -> None:
        self.book_for(key).handshake_over(key)

    def release(self, key: str, *, handshaking: bool) -> None:
        self.book_for(key).release(key, handshaking=handshaking)


def endpoint_admission(
    section: str, config, allow: tuple[IPNetwork, ...], logger: logging.Logger, name: str
) -> Admission:
    """Who may use a phone-facing endpoint (`[whatsapp_proxy]`, `[mtproto_proxy]`,
    `[signal_proxy]`): its own max_connections and max_per_client, the listen allow-list,
    refusals logged at INFO with the endpoint's name."""
    return Admission(
        Limits(
            config.max_connections,
            config.max_per_client,
            0,
            0,
            keys=(f"{section}.max_connections", f"{section}.max_per_client", "", ""),
        ),
        allow,
        logger=logger,
        prefix=f"{name}: ",
        not_allowed_level=logging.INFO,
    )
