"""NFQUEUE from Python, for the lab's packet censor: packets that an nftables rule queues are
handed to this process, which answers each with a verdict (accept or drop). Netlink messages
are built and read by pure functions here (no libnetfilter_queue, no C extension); `NfQueue`
is the thin socket around them.

    nlmsghdr (host byte order)       nfgenmsg              attributes (TLV, 4-byte aligned)
    +-----+------+-------+-----+-----++--------+---------+--------++-----+------+---------+
    | len | type | flags | seq | pid || family | version | res_id || len | type | payload |
    |  4  |  2   |   2   |  4  |  4  ||   1    |    1    | 2 (BE) ||  2  |  2   |  ...    |
    +-----+------+-------+-----+-----++--------+---------+--------++-----+------+---------+

A message's type is the subsystem << 8 | the message: NFQUEUE is subsystem 3 (packet 0,
verdict 1, config 2; linux/netfilter/nfnetlink_queue.h), nftables 10.

The queueing rule: nftables' own `queue` statement where the kernel has it (nft_queue);
otherwise the xtables NFQUEUE target through nftables' compatibility layer (nft_compat), which
`nft` cannot write without iptables installed, so this module sends that rule itself
(NFT_MSG_NEWRULE in a batch; linux/netfilter/nf_tables.h and nf_tables_compat.h).
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "ACCEPT",
    "DROP",
    "NetlinkError",
    "NfQueue",
    "Queued",
    "attributes",
    "compat_queue_rule",
    "config_messages",
    "messages",
    "queued_packets",
    "verdict_message",
]

NETLINK_NETFILTER = 12
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_CREATE, NLM_F_APPEND = 0x1, 0x4, 0x400, 0x800
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF

SUBSYS_QUEUE, SUBSYS_NFTABLES = 3, 10
QUEUE_PACKET, QUEUE_VERDICT, QUEUE_CONFIG = 0, 1, 2
CFG_CMD, CFG_PARAMS, CFG_QUEUE_MAXLEN = 1, 2, 3
CMD_BIND = 1
COPY_PACKET = 2
ATTR_PACKET_HDR, ATTR_VERDICT_HDR, ATTR_PAYLOAD = 1, 2, 10
DROP, ACCEPT = 0, 1

BATCH_BEGIN, BATCH_END = 0x10, 0x11
NFT_MSG_NEWRULE = 6
NFPROTO_IPV4 = 2
# NFTA_RULE_*, NFTA_LIST_ELEM, NFTA_EXPR_*, NFTA_TARGET_*
RULE_TABLE, RULE_CHAIN, RULE_EXPRESSIONS = 1, 2, 4
LIST_ELEM, EXPR_NAME, EXPR_DATA = 1, 1, 2
TARGET_NAME, TARGET_REV, TARGET_INFO = 1, 2, 3
NFQ_FLAG_BYPASS = 0x01

HEADER = struct.Struct("=IHHII")
NFGEN = struct.Struct("!BBH")


class NetlinkError(OSError):
    """The kernel refused a netlink request (its errno)."""


@dataclass(frozen=True)
class Queued:
    packet_id: int
    payload: bytes


# --- building ---------------------------------------------------------------------------------


def attribute(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + bytes(-length % 4)


def message(kind: int, flags: int, family: int, res_id: int, body: bytes, seq: int = 0) -> bytes:
    payload = NFGEN.pack(family, 0, res_id) + body
    return HEADER.pack(HEADER.size + len(payload), kind, flags, seq, 0) + payload


def config_messages(queue: int, copy_range: int = 0xFFFF, maxlen: int = 4096) -> list[bytes]:
    """Bind this socket to queue `queue` and ask for whole packets."""
    kind = SUBSYS_QUEUE << 8 | QUEUE_CONFIG
    flags = NLM_F_REQUEST | NLM_F_ACK
    return [
        message(kind, flags, 0, queue, attribute(CFG_CMD, struct.pack("!BBH", CMD_BIND, 0, 0))),
        message(
            kind,
            flags,
            0,
            queue,
            attribute(CFG_PARAMS, struct.pack("!IB", copy_range, COPY_PACKET))
            + attribute(CFG_QUEUE_MAXLEN, struct.pack("!I", maxlen)),
        ),
    ]


def verdict_message(queue: int, packet_id: int, verdict: int) -> bytes:
    body = attribute(ATTR_VERDICT_HDR, struct.pack("!II", verdict, packet_id))
    return message(SUBSYS_QUEUE << 8 | QUEUE_VERDICT, NLM_F_REQUEST, 0, queue, body)


def compat_queue_rule(table: str, chain: str, queue: int, *, bypass: bool = False) -> bytes:
    """One nftables transaction that appends `NFQUEUE --queue-num QUEUE` (xt_NFQUEUE
    revision 3, through nft_compat) to an existing chain of an `ip` table."""
    # struct xt_NFQ_info_v3 { u16 queuenum; u16 queues_total; u16 flags; }, 8-byte aligned
    info = struct.pack("=HHH", queue, 1, NFQ_FLAG_BYPASS if bypass else 0) + b"\0\0"
    target = (
        attribute(TARGET_NAME, b"NFQUEUE\0")
        + attribute(TARGET_REV, struct.pack("!I", 3))
        + attribute(TARGET_INFO, info)
    )
    expression = attribute(EXPR_NAME, b"target\0") + attribute(EXPR_DATA | NLA_F_NESTED, target)
    rule = (
        attribute(RULE_TABLE, table.encode() + b"\0")
        + attribute(RULE_CHAIN, chain.encode() + b"\0")
        + attribute(
            RULE_EXPRESSIONS | NLA_F_NESTED, attribute(LIST_ELEM | NLA_F_NESTED, expression)
        )
    )
    new_rule = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_APPEND | NLM_F_ACK
    return b"".join(
        [
            message(BATCH_BEGIN, NLM_F_REQUEST, 0, SUBSYS_NFTABLES, b"", seq=1),
            message(SUBSYS_NFTABLES << 8 | NFT_MSG_NEWRULE, new_rule, NFPROTO_IPV4, 0, rule, 2),
            message(BATCH_END, NLM_F_REQUEST, 0, SUBSYS_NFTABLES, b"", seq=3),
        ]
    )


# --- reading ----------------------------------------------------------------------------------


def messages(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(type, seq, payload) of each whole netlink message in `data`; stops at the first
    length that does not fit."""
    pos = 0
    while pos + HEADER.size <= len(data):
        length, kind, _flags, seq, _pid = HEADER.unpack_from(data, pos)
        if length < HEADER.size or pos + length > len(data):
            return
        yield kind, seq, data[pos + HEADER.size : pos + length]
        pos += (length + 3) & ~3


def attributes(data: bytes) -> dict[int, bytes]:
    """The attributes in `data`, by type (the nested and byte-order flags left out); stops at
    the first length that does not fit."""
    found: dict[int, bytes] = {}
    pos = 0
    while pos + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, pos)
        if length < 4 or pos + length > len(data):
            break
        found[kind & NLA_TYPE_MASK] = data[pos + 4 : pos + length]
        pos += (length + 3) & ~3
    return found


def queued_packets(data: bytes) -> tuple[list[Queued], list[int]]:
    """The packets in what the kernel sent, and the errno of every error message (0 is an
    acknowledgement)."""
    packets: list[Queued] = []
    errors: list[int] = []
    for kind, _seq, payload in messages(data):
        if kind == NLMSG_ERROR:
            if len(payload) >= 4:
                errors.append(-struct.unpack_from("=i", payload)[0])
            continue
        if kind != SUBSYS_QUEUE << 8 | QUEUE_PACKET or len(payload) < NFGEN.size:
            continue
        found = attributes(payload[NFGEN.size :])
        header = found.get(ATTR_PACKET_HDR, b"")
        if len(header) < 4:
            continue
        (packet_id,) = struct.unpack_from("!I", header)
        packets.append(Queued(packet_id, found.get(ATTR_PAYLOAD, b"")))
    return packets, errors


# --- the socket -------------------------------------------------------------------------------


def _request(sock: socket.socket, data: bytes) -> None:
    """Send requests that ask for acknowledgements and raise for the first refusal."""
    sock.send(data)
    wanted = sum(1 for kind, _, _ in messages(data) if kind not in (BATCH_BEGIN, BATCH_END))
    while wanted:
        _, errors = queued_packets(sock.recv(65536))
        for code in errors:
            if code:
                raise NetlinkError(code, errno.errorcode.get(code, str(code)))
            wanted -= 1


def add_compat_queue_rule(table: str, chain: str, queue: int) -> None:
    """Append the xtables NFQUEUE target to a chain, in this process's network namespace."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as sock:
        sock.bind((0, 0))
        sock.settimeout(5)
        _request(sock, compat_queue_rule(table, chain, queue))


class NfQueue:
    """One NFQUEUE queue, bound in this process's network namespace. Every packet received
    must get a verdict; the kernel holds it until then."""

    def __init__(self, queue: int) -> None:
        self.queue = queue
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            self.sock.bind((0, 0))
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            self.sock.settimeout(5)
            for request in config_messages(queue):
                _request(self.sock, request)
            self.sock.setblocking(False)
        except BaseException:
            self.sock.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self) -> list[Queued]:
        """The packets waiting now (none when there are none)."""
        packets: list[Queued] = []
        while True:
            try:
                data = self.sock.recv(1 << 18)
            except BlockingIOError:
                return packets
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    continue  # the kernel dropped some: they were never ours to decide
                raise
            packets += queued_packets(data)[0]

    def verdict(self, packet_id: int, verdict: int) -> None:
        self.sock.send(verdict_message(self.queue, packet_id, verdict))

    def close(self) -> None:
        self.sock.close()
