"""What every UDP association of a listener shares (udp.py, tproxy_udp.py): the limits
(`[listen] udp_*`), the counters of datagrams, bytes and drops by reason, and the book of
associations open, ended, refused and idle, which the status shows (helper/status.py).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Protocol

from ..status import UdpView, frozen_mapping

if TYPE_CHECKING:
    from ..config.listen import ListenConfig

__all__ = ["DROPS", "UdpBudget", "UdpCounters", "UdpLimits"]


@dataclass
class UdpLimits:
    """Each 0 for no limit ([listen] udp_* keys, helper/config/listen.py)."""

    in_flight: int = 256  # datagrams waiting for their route, per association
    in_flight_total: int = 4096  # ... in all, every association of the listener
    destinations: int = 1024  # destinations one association may send to
    per_client: int = 32  # associations open at once from one client address
    idle: float = 120.0  # seconds without a datagram either way before an association ends

    @classmethod
    def from_listen(cls, listen: ListenConfig) -> UdpLimits:
        return cls(
            in_flight=listen.udp_in_flight,
            in_flight_total=listen.udp_in_flight_total,
            per_client=listen.udp_associations_per_client,
            idle=listen.udp_idle_timeout,
        )


# What a datagram can be dropped for (UdpCounters' fields besides the datagrams and bytes).
DROPS = ("malformed", "fragment", "foreign", "refused", "over_limit", "no_route")


@dataclass
class UdpCounters:
    """Datagrams counted by what happened to them."""

    up: int = 0  # client -> destination, sent
    down: int = 0  # destination -> client, sent
    bytes_up: int = 0  # their payloads' bytes
    bytes_down: int = 0
    malformed: int = 0
    fragment: int = 0
    foreign: int = 0
    refused: int = 0
    over_limit: int = 0
    no_route: int = 0

    def add(self, other: UdpCounters) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def dropped(self) -> int:
        return sum(getattr(self, kind) for kind in DROPS)


class _Association(Protocol):
    """An association as the budget sees it (udp.py's UdpAssociation)."""

    counters: UdpCounters
    conn: Any  # its ClientConnection: `key` is the client's address


class UdpBudget:
    """What every association of a listener shares: the limits, the datagrams in flight in
    all, the associations open and the counters of those that ended plus those still open."""

    def __init__(self, limits: UdpLimits | None = None) -> None:
        self.limits = limits or UdpLimits()
        self.in_flight = 0
        self.associations: set[_Association] = set()
        self.ended = UdpCounters()
        self.opened = 0  # associations since start
        self.idle_ended = 0  # ... of them ended for `limits.idle` without a datagram
        self.refused = 0  # associations refused: `limits.per_client` reached

    def open_from(self, key: str) -> int:
        """Associations open now from the client address `key`."""
        return sum(1 for association in self.associations if association.conn.key == key)

    def totals(self) -> UdpCounters:
        total = UdpCounters()
        total.add(self.ended)
        for association in self.associations:
            total.add(association.counters)
        return total

    def view(self, listener: str) -> UdpView:
        """What the status shows of these associations (helper/status.py)."""
        total = self.totals()
        return UdpView(
            listener=listener,
            open=len(self.associations),
            opened=self.opened,
            refused=self.refused,
            idle_ended=self.idle_ended,
            in_flight=self.in_flight,
            datagrams=frozen_mapping({"up": total.up, "down": total.down}),
            bytes=frozen_mapping({"up": total.bytes_up, "down": total.bytes_down}),
            dropped=frozen_mapping({kind: getattr(total, kind) for kind in DROPS}),
        )
