"""The packet censor: a DPI box that reads TCP packets, as a censor's middlebox on the path
does, for the kernel-level lab (netns.py). It runs in the lab's "isp" namespace, one
forwarding hop after the client's gateway, and sees each packet from a client before that
namespace forwards it (NFQUEUE at prerouting), so it sees what survives the first hop and
nothing that expires at its own: exactly where TTL tricks (`fake`, `disorder`) play.

How it reads a flow is the scenario's `[dpi]` model (level = "packets"):

    depth      first-segment | first-record | full: as the stream censor's (dpi.py), where a
               segment is now a real TCP segment
    reorder    true: segments are put in sequence order before reading (a later copy of
               bytes already read changes nothing: the first wins); false: payloads are
               read in the order they arrive, from the first one on
    urgent     inline: the urgent byte of a segment with URG stays in the bytes read (most
               boxes); skip: it is taken out, as the server's TCP does
    check_ttl  true: a segment whose TTL is lower than the flow's SYN had is not read (it
               will expire before the server); false: every segment counts

It decides once per flow, on the first ClientHello (or HTTP head) it reads, by the
scenario's name rules; `reset` drops the packet and sends a TCP reset to both ends, `drop`
drops this and every later packet of the flow. Either verdict holds for the flow's life.

The state machine (`PacketCensor`) is fed packets and answers decisions, without sockets;
packetcensord.py is the process around it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field

from .censor import PASS, Policy, Rule, Verdict, decide
from .dpi import Depth, Seen, inspect
from .packets import ACK, RST, SYN, TcpPacket, reset

__all__ = ["Decision", "PacketCensor", "PacketEvent", "PacketModel", "PacketPolicy"]

log = logging.getLogger("detour.lab.packets")

URGENT_MODES = ("inline", "skip")
PACKET_ACTIONS = ("reset", "drop")
MAX_PACKETS = 10  # data packets read before the box decides on what it has
MAX_FLOWS = 4096
MAX_EVENTS = 1000


@dataclass(frozen=True)
class PacketModel:
    depth: Depth = Depth.FULL
    reorder: bool = True
    urgent: str = "inline"
    check_ttl: bool = False

    def __post_init__(self) -> None:
        if self.urgent not in URGENT_MODES:
            raise ValueError(f"urgent must be one of {', '.join(URGENT_MODES)}")


@dataclass(frozen=True)
class PacketPolicy:
    """What the packet censor enforces: name rules (reset or drop) read the model's way."""

    rules: tuple[Rule, ...] = ()
    model: PacketModel = PacketModel()
    name: str = "none"

    def __post_init__(self) -> None:
        for rule in self.rules:
            if rule.action not in PACKET_ACTIONS or rule.probability < 1.0:
                raise ValueError(
                    f"rule {rule.name or rule.action!r}: a packet-level DPI resets or drops "
                    "every matching flow (action reset or drop, probability 1)"
                )


@dataclass(frozen=True)
class Decision:
    accept: bool
    inject: tuple[tuple[str, bytes], ...] = ()  # (destination address, IPv4 packet)


ACCEPT = Decision(True)
DROP = Decision(False)


@dataclass
class PacketEvent:
    """One flow as the packet censor read it (for tests and the lab's log)."""

    client: str
    server: str
    protocol: str
    sni: str | None
    host: str | None
    verdict: str
    packets: int  # data packets it read before deciding
    ignored: int  # data packets it did not read (low TTL)
    urgent: int  # urgent bytes it took out


@dataclass
class _Flow:
    client: str
    server: str
    start: int | None = None  # sequence number of the flow's first byte, once known
    syn_ttl: int | None = None
    data: bytearray = field(default_factory=bytearray)
    pending: dict[int, bytes] = field(default_factory=dict)  # reorder: beyond a gap
    urgent: set[int] = field(default_factory=set)  # offsets in `data` to leave out
    first: bytes | None = None  # the first segment of the flow, as read
    packets: int = 0
    ignored: int = 0
    verdict: Verdict | None = None


class PacketCensor:
    """Decides, packet by packet, what happens to a client's packets under a policy."""

    def __init__(self, policy: PacketPolicy | None = None) -> None:
        self.policy = policy
        self.events: list[PacketEvent] = []
        self._flows: OrderedDict[tuple[str, int, str, int], _Flow] = OrderedDict()

    def load(self, policy: PacketPolicy | None) -> None:
        """A new policy for new flows: what was decided is forgotten."""
        self.policy = policy
        self._flows.clear()
        self.events.clear()

    def packet(self, pkt: TcpPacket) -> Decision:
        if self.policy is None:
            return ACCEPT
        key = (str(pkt.src), pkt.sport, str(pkt.dst), pkt.dport)
        if pkt.has(SYN) and not pkt.has(ACK):
            self._remember(key, _Flow(pkt.client, pkt.server, pkt.seq + 1, pkt.ttl))
            return ACCEPT
        flow = self._flows.get(key)
        if flow is None:
            if not pkt.payload:
                return ACCEPT
            flow = self._remember(key, _Flow(pkt.client, pkt.server))
        if flow.verdict is not None:
            return ACCEPT if flow.verdict.action == "pass" else DROP
        if not pkt.payload or pkt.has(RST):
            return ACCEPT
        model = self.policy.model
        if model.check_ttl and flow.syn_ttl is not None and pkt.ttl < flow.syn_ttl:
            flow.ignored += 1
            return ACCEPT
        flow.packets += 1
        self._read(flow, pkt, model)
        seen = self._inspect(flow, model)
        if seen is None:
            return ACCEPT
        return self._decide(flow, pkt, seen)

    # reading ---------------------------------------------------------------------------

    def _remember(self, key: tuple[str, int, str, int], flow: _Flow) -> _Flow:
        self._flows[key] = flow
        self._flows.move_to_end(key)
        while len(self._flows) > MAX_FLOWS:
            self._flows.popitem(last=False)
        return flow

    def _read(self, flow: _Flow, pkt: TcpPacket, model: PacketModel) -> None:
        payload = pkt.payload
        urgent = pkt.urgent_offset if model.urgent == "skip" else None
        if not model.reorder:
            if urgent is not None:
                flow.urgent.add(len(flow.data) + urgent)
            if flow.first is None:
                flow.first = _without(payload, urgent)
            flow.data += payload
            return
        if flow.start is None:
            flow.start = pkt.seq
        offset = (pkt.seq - flow.start) & 0xFFFFFFFF
        if offset >= 1 << 31:  # before the start: bytes from before we looked
            return
        if urgent is not None:
            flow.urgent.add(offset + urgent)
        if offset == 0 and not flow.data and flow.first is None:
            flow.first = _without(payload, urgent)
        self._place(flow, offset, payload)

    @staticmethod
    def _place(flow: _Flow, offset: int, payload: bytes) -> None:
        """Put a segment where it belongs; bytes already placed stay (the first copy wins)."""
        if offset > len(flow.data):
            flow.pending.setdefault(offset, payload)
            return
        flow.data += payload[len(flow.data) - offset :]
        while ready := sorted(o for o in flow.pending if o <= len(flow.data)):
            for at in ready:
                segment = flow.pending.pop(at)
                if at + len(segment) > len(flow.data):
                    flow.data += segment[len(flow.data) - at :]

    def _inspect(self, flow: _Flow, model: PacketModel) -> Seen | None:
        final = flow.packets >= MAX_PACKETS
        if model.depth is Depth.FIRST_SEGMENT:
            if flow.first is None:
                return Seen("other") if final else None
            return inspect(flow.first, Depth.FIRST_SEGMENT)
        view = bytes(flow.data)
        for at in sorted(flow.urgent, reverse=True):
            view = view[:at] + view[at + 1 :]
        if not view:
            return Seen("other") if final else None
        return inspect(view, model.depth, final=final)

    # deciding --------------------------------------------------------------------------

    def _decide(self, flow: _Flow, pkt: TcpPacket, seen: Seen) -> Decision:
        assert self.policy is not None
        policy = Policy(self.policy.rules, name=self.policy.name)
        verdict = decide(policy, pkt.dst, pkt.dport, seen)
        flow.verdict = verdict
        self.events.append(
            PacketEvent(
                flow.client, flow.server, seen.protocol, seen.sni, seen.host, str(verdict),
                flow.packets, flow.ignored, len(flow.urgent),
            )
        )  # fmt: skip
        del self.events[:-MAX_EVENTS]
        log.info("packets: %s -> %s sni=%s: %s", flow.client, flow.server, seen.sni, verdict)
        if verdict is PASS or verdict.action == "pass":
            return ACCEPT
        if verdict.action == "reset":
            # Reset both ends where each expects the next byte: the client at what the
            # server has acknowledged, the server at this packet's sequence number.
            to_client = reset(pkt.dst, pkt.dport, pkt.src, pkt.sport, pkt.ack,
                              (pkt.seq + len(pkt.payload)) & 0xFFFFFFFF)  # fmt: skip
            to_server = reset(pkt.src, pkt.sport, pkt.dst, pkt.dport, pkt.seq)
            return Decision(False, ((str(pkt.src), to_client), (str(pkt.dst), to_server)))
        return DROP


def _without(payload: bytes, offset: int | None) -> bytes:
    return payload if offset is None else payload[:offset] + payload[offset + 1 :]
