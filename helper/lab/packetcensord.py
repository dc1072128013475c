"""The packet censor's process in the kernel-level lab's isp namespace (netns.py starts it
as `python -m helper.lab.packetcensord`): the nftables rules that queue the clients' packets
to it, the queue (nfqueue.py), the state machine that decides (packetcensor.py), a raw socket
for resets, and commands on stdin (`load FILE`: a scenario's packet policy; `events`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import socket
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from helper.config import ConfigError

from .hosts import HostTable
from .nfqueue import ACCEPT as NF_ACCEPT
from .nfqueue import DROP as NF_DROP
from .nfqueue import NfQueue, add_compat_queue_rule
from .packetcensor import ACCEPT, PacketCensor
from .packets import parse
from .scenario import parse_scenario

__all__ = ["main"]

TABLE = "detour_lab_dpi"


def _nft(*commands: str) -> None:
    text = "\n".join(commands) + "\n"
    done = subprocess.run(["nft", "-f", "-"], input=text, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"nft failed: {done.stderr.strip()}")


def _set_up_queue(queue: int) -> str:
    """The table whose `inspect` chain queues every packet it gets; which of the kernel's
    two ways of queueing it took."""
    _nft(
        f"table ip {TABLE}",
        f"delete table ip {TABLE}",
        f"table ip {TABLE} {{",
        "  chain prerouting { type filter hook prerouting priority -300; policy accept; }",
        "  chain inspect { }",
        "}",
    )
    try:
        _nft(f"add rule ip {TABLE} inspect queue num {queue}")
        return "nft_queue"
    except RuntimeError:
        add_compat_queue_rule(TABLE, "inspect", queue)  # the kernel lacks nft_queue
        return "xt_NFQUEUE"


def _steer(interface: str, network: str, on: bool) -> None:
    """Send the clients' TCP packets through the censor, or let them pass untouched."""
    commands = [f"flush chain ip {TABLE} prerouting"]
    if on:
        commands.append(
            f'add rule ip {TABLE} prerouting iifname "{interface}" ip daddr {network} '
            "meta l4proto tcp jump inspect"
        )
    _nft(*commands)


async def _serve(queue_number: int, interface: str, network: str) -> int:
    lab_network = ipaddress.IPv4Network(network)
    # A lab standing in for the internet (netns.py) lives on a public-looking network.
    table = HostTable(lab_network, routable=True, stand_in=not lab_network.is_private)
    try:
        how = _set_up_queue(queue_number)
        queue = NfQueue(queue_number)
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    except (OSError, RuntimeError) as exc:
        print(f"error {exc}", flush=True)
        return 1
    censor = PacketCensor()

    def on_packets() -> None:
        for queued in queue.receive():
            pkt = parse(queued.payload)
            decision = censor.packet(pkt) if pkt is not None else ACCEPT
            for address, packet in decision.inject:
                with contextlib.suppress(OSError):
                    raw.sendto(packet, (address, 0))
            queue.verdict(queued.packet_id, NF_ACCEPT if decision.accept else NF_DROP)

    loop = asyncio.get_running_loop()
    loop.add_reader(queue.fileno(), on_packets)
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    print(f"ready {how}", flush=True)
    try:
        while line := (await stdin.readline()).decode().strip():
            command, _, argument = line.partition(" ")
            if command == "events":
                print("events " + json.dumps([asdict(e) for e in censor.events]), flush=True)
            elif command == "load":
                try:
                    path = Path(argument)
                    scenario = parse_scenario(path.read_text(), path.stem, table)
                    policy = scenario.packet_policy(table)
                    _steer(interface, network, policy is not None)
                except (ConfigError, OSError, RuntimeError) as exc:
                    print(f"error {exc}", flush=True)
                    continue
                censor.load(policy)
                print(f"scenario {scenario.name}", flush=True)
            else:
                print(f"error unknown command {command!r}", flush=True)
    finally:
        loop.remove_reader(queue.fileno())
        queue.close()
        raw.close()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m helper.lab.packetcensord")
    parser.add_argument("--queue", type=int, default=0)
    parser.add_argument("--interface", required=True, help="where the clients' packets come in")
    parser.add_argument("--network", required=True, help="the lab network")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="lab(packets) %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_serve(args.queue, args.interface, args.network))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
