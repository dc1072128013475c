"""The lab's one BPF program: the client link copies every packet's bytes as it sends them.

Why: a veth hands the sender's memory along by reference. TCP can send from pages it shares
with a file (sendfile), and `fake` relies on that: it sends a decoy from such pages, then
writes the real bytes over them for the retransmission. On a real network interface the card
reads (DMA) the decoy as it sends it. On a veth nothing reads the pages until something on the
other side copies the packet -- the censor's NFQUEUE, a hop later, when its softirq runs --
so on a busy machine the censor could read the real bytes in the decoy's place. This program,
at the client link's egress, pulls every packet into memory of its own as it is sent, like a
card: what a packet carries is fixed when it leaves.

    r2 = skb->len                 (u32 at offset 0 of struct __sk_buff)
    call bpf_skb_pull_data(r1, r2) (helper 39: the whole packet into the linear part)
    r0 = TCX_PASS (0)
    exit

Loaded with bpf(BPF_PROG_LOAD) and attached with bpf(BPF_LINK_CREATE, BPF_TCX_EGRESS) (Linux
6.6 and later); the link lives as long as its file descriptor: closing it detaches the
program, and so does deleting the interface.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct

__all__ = ["PROGRAM", "copy_at_send"]

SYS_BPF = {"x86_64": 321, "aarch64": 280}
BPF_PROG_LOAD, BPF_LINK_CREATE = 5, 28
BPF_PROG_TYPE_SCHED_CLS = 3
BPF_TCX_EGRESS = 47
ATTR_SIZE = 128


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, src << 4 | dst, off, imm)


PROGRAM = b"".join(
    [
        _insn(0x61, dst=2, src=1),  # BPF_LDX | BPF_MEM | BPF_W: r2 = *(u32 *)(r1 + 0)
        _insn(0x85, imm=39),  # BPF_JMP | BPF_CALL: bpf_skb_pull_data
        _insn(0xB7, dst=0, imm=0),  # BPF_ALU64 | BPF_MOV | BPF_K: r0 = 0
        _insn(0x95),  # BPF_JMP | BPF_EXIT
    ]
)


def _bpf(command: int, attr: bytes) -> int:
    number = SYS_BPF.get(os.uname().machine)
    if number is None:
        raise OSError(f"no bpf() system call number for {os.uname().machine}")
    libc = ctypes.CDLL(None, use_errno=True)
    buffer = ctypes.create_string_buffer(attr, ATTR_SIZE)
    fd = libc.syscall(number, command, buffer, ATTR_SIZE)
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return int(fd)


def copy_at_send(interface: str) -> int:
    """Attach the program to `interface`'s egress; the link's file descriptor (close it to
    detach). Raises OSError where the kernel cannot (no BPF, no tcx, not root)."""
    instructions = ctypes.create_string_buffer(PROGRAM)
    licence = ctypes.create_string_buffer(b"GPL")  # bpf_skb_pull_data is for GPL programs
    load = struct.pack(
        "=IIQQIIQII16s",
        BPF_PROG_TYPE_SCHED_CLS,
        len(PROGRAM) // 8,
        ctypes.addressof(instructions),
        ctypes.addressof(licence),
        0, 0, 0, 0, 0,
        b"detour_lab_copy",
    )  # fmt: skip
    program = _bpf(BPF_PROG_LOAD, load)
    try:
        link = struct.pack("=IIII", program, socket.if_nametoindex(interface), BPF_TCX_EGRESS, 0)
        return _bpf(BPF_LINK_CREATE, link)
    finally:
        os.close(program)  # the link holds the program
