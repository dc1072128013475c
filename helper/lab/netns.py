"""The kernel-level lab (`detour lab --netns`, Linux, root): the lab's internet in a network
namespace of its own, two forwarding hops from the client, with address-level censorship done
by nftables in that namespace -- so a black-hole really drops SYNs (a client times out at
connect) and a refusal answers a SYN with a reset, as on a real network. Content rules (server
name, Host, throttling, freezes) stay with the userland censor, which runs in the namespace,
unless the scenario's DPI reads packets: then the packet censor (packetcensor.py) enforces
its name rules on the hop in between, where a packet's TTL matters.

    root namespace       detour-lab-gw-N       detour-lab-isp-N       detour-lab-N
    detour, tests .1 -- .2 the client's  .5 -- .6 the ISP:    .9 -- .10 lo: 10.77.0.0/16,
    (copy at send)         gateway:           packet censor          nftables, the lab
                           hop 1              (NFQUEUE at            process (servers,
                           .14                prerouting): hop 2     resolver, userland
                            |                                        censor)
    detour-lab-client-N .13 +

    (links 169.254.N.0/30, .4/30, .8/30, .12/30; the gateway drops what is not for the lab)

A packet sent with TTL 1 dies at the gateway; with TTL 2 the packet censor reads it and the
ISP's forwarding drops it; with 3 or more it reaches the servers. The root end of the first
link copies each packet as it is sent (bpf.py), as a network card would. The client
namespace is for programs that must run on the censored network with its resolver as their
system resolver (`client_command`).

The lab process in the namespace and the packet censor are this module's children: they read
commands on stdin (`load SCENARIO`, `events`), answer on stdout (`ready`, `scenario NAME`), and
stop when stdin closes, so they never outlive their parent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import shutil
import sys
import tempfile
import zlib
from pathlib import Path

from helper.config import ConfigError
from transports.mtproto import DEFAULT_DCS

from .censor import Policy
from .hosts import PUBLIC_RESOLVERS, HostTable
from .lab import Lab, LabError, helper_config
from .namespaces import NamespaceError, Namespaces, ip_command
from .scenario import Scenario, load_scenario, parse_scenario

__all__ = ["NetnsLab", "nft_ruleset"]

log = logging.getLogger("detour.lab.netns")

DEFAULT_NETNS_NETWORK = "10.77.0.0/16"
NFT_TABLE = "detour_lab"
NAMESPACE_PREFIX = "detour-lab"
GATEWAY_PREFIX, ISP_PREFIX, CLIENT_PREFIX = (
    f"{NAMESPACE_PREFIX}-{r}" for r in ("gw", "isp", "client")
)
# A safety net on a lab process starting (one that exits is seen at once): importing the
# lab alone took 33 s on two cores with a load average of 16 (1.2 s of CPU).
START_TIMEOUT = 120.0


def nft_ruleset(policy: Policy) -> str:
    """nftables rules for the address-level part of a policy: rules that match only
    addresses and ports and drop (silently) or refuse (reset the SYN). Traffic from inside
    the namespace (the lab's own proxies and front, on lo) is never censored here."""
    rules = []
    for rule in policy.rules:
        if rule.content_based or rule.action not in ("drop", "refuse") or rule.probability < 1:
            continue  # the userland censor's business
        v4 = [str(net) for net in rule.cidrs if net.version == 4]
        if rule.cidrs and not v4:
            continue
        match = [f"ip daddr {{ {', '.join(v4)} }}"] if v4 else []
        if rule.ports:
            match.append(f"tcp dport {{ {', '.join(str(p) for p in sorted(rule.ports))} }}")
        else:
            match.append("meta l4proto tcp")
        verdict = "drop" if rule.action == "drop" else "reject with tcp reset"
        rules.append(f"    {' '.join(match)} {verdict}")
    return "\n".join(
        [
            # Create-then-delete makes the replacement one atomic transaction.
            f"table inet {NFT_TABLE}",
            f"delete table inet {NFT_TABLE}",
            f"table inet {NFT_TABLE} {{",
            "  chain input {",
            "    type filter hook input priority 0; policy accept;",
            '    iifname "lo" accept',
            *rules,
            "  }",
            "}",
            "",
        ]
    )


STAND_IN_TABLE = "detour_stand_in"


def stand_in_addresses(table: HostTable) -> dict[str, str]:
    """Real address -> the lab host that stands in for it: Telegram's DCs (every IPv4
    address the built-in DC table knows for DCs 1-5) and the public encrypted resolvers."""
    mapping = {}
    for address, dc in DEFAULT_DCS.addresses.items():
        if ":" not in address and not dc.test and 1 <= dc.id <= 5:
            mapping[address] = table.address(f"telegram-dc{dc.id}")
    for address in PUBLIC_RESOLVERS:
        mapping[address] = table.address("doh")
    return mapping


def stand_in_ruleset(table: HostTable) -> str:
    """nftables for the client namespace of a stand-in lab: connections to the real
    addresses go to the lab's hosts (DNAT as they leave, so every hop after the client --
    the packet censor, the censor, nftables' address rules -- sees the lab's addresses)."""
    lines = [
        f"table ip {STAND_IN_TABLE} {{",
        "  chain output {",
        "    type nat hook output priority -100; policy accept;",
    ]
    lines += [
        f"    ip daddr {real} dnat to {lab}" for real, lab in stand_in_addresses(table).items()
    ]
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def _require_tools() -> tuple[str, str]:
    if sys.platform != "linux":
        raise LabError("--netns needs Linux (network namespaces and nftables)")
    if os.geteuid() != 0:
        raise LabError("--netns needs root (it creates a network namespace and a veth pair)")
    ip, nft = ip_command(), shutil.which("nft") or "/usr/sbin/nft"
    for tool, package in ((ip, "iproute2"), (nft, "nftables")):
        if not os.access(tool, os.X_OK):
            raise LabError(f"--netns needs {Path(tool).name} (Debian package {package!r})")
    return ip, nft


async def _run(*argv: str, stdin: bytes) -> None:
    """Run a command that reads stdin (`nft -f -`) without blocking the event loop."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate(stdin)
    if process.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed: {err.decode(errors='replace').strip()}")


class _CA:
    """The lab CA as the parent sees it: only the certificate file (the key stays with the
    lab process in the namespace)."""

    def __init__(self, ca_path: Path) -> None:
        self.ca_path = ca_path


class NetnsLab:
    """The lab in a network namespace. Same surface as Lab for clients and tests:
    `table`, `dns_address`, `ca.ca_path`, `scenario`, `set_scenario`, `helper_config`."""

    netns = True

    def __init__(
        self,
        scenario: Scenario | str = "baseline",
        *,
        network: str = DEFAULT_NETNS_NETWORK,
        stand_in: bool = False,
    ) -> None:
        # stand_in: the lab stands in for the real internet in the client namespace (see
        # stand_in_ruleset): a public-looking network, and the services' and resolvers' real
        # addresses sent to the lab's hosts, so detour's built-in config works against it.
        self.stand_in = stand_in
        self.table = HostTable(ipaddress.IPv4Network(network), routable=True, stand_in=stand_in)
        self.scenario = (
            load_scenario(scenario, self.table) if isinstance(scenario, str) else scenario
        )
        # Names and link addresses follow from the network, which no two labs share (each
        # routes it into its namespace), so the next start finds what a killed lab left.
        self._tag = str(zlib.crc32(str(self.table.network).encode()) % 254 + 1)
        self.name = f"{NAMESPACE_PREFIX}-{self._tag}"
        self.client_namespace = f"{CLIENT_PREFIX}-{self._tag}"
        self._link = (f"169.254.{self._tag}.1", f"169.254.{self._tag}.2")
        self._packets: asyncio.subprocess.Process | None = None
        self._no_packets = ""  # why the packet censor could not start, if it could not
        self._copy_link: int | None = None  # the BPF link on the client link (bpf.py)
        self.directory: Path | None = None
        self._child: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._tools: tuple[str, str] | None = None
        self._network: Namespaces | None = None

    @property
    def dns_address(self) -> tuple[str, int]:
        return self.table.dns_address, 53

    @property
    def ca(self) -> _CA:
        if self.directory is None:
            raise LabError("the lab is not running")
        return _CA(self.directory / "ca" / "lab-ca.pem")

    def helper_config(self, listen: str = "127.0.0.1:1080") -> str:
        assert self.directory is not None
        front = (self.directory / "front.key").read_text().strip()
        return helper_config(
            self.table, self.ca.ca_path, self.scenario.name, listen, front, packets=True,
            system_resolver=self.scenario.system_resolver,
        )  # fmt: skip

    def client_command(self, *argv: str) -> list[str]:
        """The command line that runs argv on the censored network: in the client
        namespace, with the lab's resolver as the system resolver (its own resolv.conf,
        bound over /etc/resolv.conf in the mount namespace `ip netns exec` makes)."""
        ip, _ = self._tools or _require_tools()
        assert self.directory is not None
        resolv = self.directory / "resolv.conf"
        mount = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
        return [ip, "netns", "exec", self.client_namespace, "sh", "-c", mount, str(resolv), *argv]

    async def packet_events(self) -> list[dict[str, object]]:
        """The flows the packet censor has decided on since the scenario was loaded."""
        async with self._lock:
            if self._packets is None:
                return []
            assert self._packets.stdin is not None
            self._packets.stdin.write(b"events\n")
            await self._packets.stdin.drain()
            line = await self._expect("events", self._packets)
        return json.loads(line.partition(" ")[2])

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._tools = _require_tools()
        self._network = Namespaces(suffix=self._tag)
        try:
            # In a thread: `ip` blocks; if this is cancelled, stop() waits for the step in
            # progress and the build stops there (Namespaces.close).
            await asyncio.to_thread(self._create_network, self._network)
            await self._apply_nft(self.scenario)
            if self.stand_in:
                ip, nft = self._tools
                ruleset = stand_in_ruleset(self.table)
                await _run(ip, "netns", "exec", self.client_namespace, nft, "-f", "-",
                           stdin=ruleset.encode())  # fmt: skip
            self.directory = Path(tempfile.mkdtemp(prefix="detour-lab-netns-"))
            (self.directory / "resolv.conf").write_text(
                f"nameserver {self.table.dns_address}\noptions timeout:2 attempts:2\n"
            )
            await self._start_child()
            await self._start_packet_censor()
            self._copy_at_send()
        except BaseException:
            await self.stop()
            raise
        log.info("lab in namespace %s on %s", self.name, self.table.network)

    def _create_network(self, network: Namespaces) -> None:
        net, link = str(self.table.network), f"169.254.{self._tag}"
        try:
            gateway = network.namespace(GATEWAY_PREFIX, forwarding=True)
            isp = network.namespace(ISP_PREFIX, forwarding=True)
            ns = network.namespace(NAMESPACE_PREFIX)
            client = network.namespace(CLIENT_PREFIX)
            for prefix, a, b, first in (
                ("dlab", None, gateway, 1),  # root - gateway
                ("dlgi", gateway, isp, 5),  # gateway - isp
                ("dlil", isp, ns, 9),  # isp - lab
                ("dlcg", client, gateway, 13),  # client - gateway
            ):
                end_a, end_b = network.veth(prefix, a, b)
                network.address(a, end_a, f"{link}.{first}/30")
                network.address(b, end_b, f"{link}.{first + 1}/30")
            # Every address of the lab network is local in the namespace (like 127.0.0.0/8).
            network.route(ns, "local", net, "dev", "lo")
            network.route(ns, f"{link}.0/28", "via", f"{link}.9")
            network.route(isp, net, "via", f"{link}.10")
            network.route(isp, f"{link}.0/28", "via", f"{link}.5")
            network.route(gateway, net, "via", f"{link}.6")
            network.route(gateway, "blackhole", "default")  # the client sees no other network
            network.route(client, "default", "via", f"{link}.14")
            if not self.stand_in:  # a public-looking network stays inside the namespaces
                network.route(None, net, "via", self._link[1])
        except NamespaceError as exc:
            raise LabError(str(exc)) from None

    async def _start_packet_censor(self) -> None:
        ip, _ = self._tools or _require_tools()
        isp = f"{ISP_PREFIX}-{self._tag}"
        process = await asyncio.create_subprocess_exec(
            ip, "netns", "exec", isp, sys.executable, "-m", "helper.lab.packetcensord",
            "--interface", f"dlgi{self._tag}b", "--network", str(self.table.network),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            await self._expect("ready", process)
        except LabError as exc:  # no NFQUEUE here: the rest of the lab works without it
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            self._no_packets = str(exc)
            log.warning("lab: no packet censor (%s)", exc)
            self._can_run(self.scenario)
            return
        self._packets = process
        await self._load(self._packets, self._write_scenario(self.scenario))

    def _can_run(self, scenario: Scenario) -> None:
        if scenario.level == "packets" and self._no_packets:
            raise LabError(
                f"scenario {scenario.name!r} needs the packet censor: {self._no_packets}"
            )

    def _copy_at_send(self) -> None:
        from .bpf import copy_at_send

        try:
            self._copy_link = copy_at_send(f"dlab{self._tag}a")
        except OSError as exc:  # an old kernel: decoys may be read late on a busy machine
            log.warning("lab: cannot copy packets as they are sent (%s)", exc)

    async def _apply_nft(self, scenario: Scenario) -> None:
        ip, nft = self._tools or _require_tools()
        ruleset = nft_ruleset(scenario.policy(self.table))
        await _run(ip, "netns", "exec", self.name, nft, "-f", "-", stdin=ruleset.encode())

    async def _start_child(self) -> None:
        ip, _ = self._tools or _require_tools()
        assert self.directory is not None
        scenario_file = self._write_scenario(self.scenario)
        self._child = await asyncio.create_subprocess_exec(
            ip, "netns", "exec", self.name, sys.executable, "-m", "helper.lab.netns",
            "--scenario", str(scenario_file), "--network", str(self.table.network),
            "--directory", str(self.directory), *(["--stand-in"] if self.stand_in else []),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await self._expect("ready")

    def _write_scenario(self, scenario: Scenario) -> Path:
        assert self.directory is not None
        path = self.directory / "scenarios" / f"{scenario.name}.toml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(scenario.text)
        return path

    async def _expect(self, word: str, child: asyncio.subprocess.Process | None = None) -> str:
        child = child or self._child
        assert child is not None and child.stdout is not None
        try:
            async with asyncio.timeout(START_TIMEOUT):
                line = (await child.stdout.readline()).decode().strip()
        except TimeoutError:
            raise LabError(f"the lab in namespace {self.name} did not answer") from None
        if not line.startswith(word):
            raise LabError(f"the lab in namespace {self.name} failed: {line or 'it exited'}")
        return line

    async def set_scenario(self, scenario: Scenario | str) -> None:
        if isinstance(scenario, str):
            scenario = load_scenario(scenario, self.table)
        self._can_run(scenario)
        async with self._lock:
            assert self._child is not None
            await self._apply_nft(scenario)
            path = self._write_scenario(scenario)
            await self._load(self._child, path)
            if self._packets is not None:
                await self._load(self._packets, path)
            self.scenario = scenario

    async def _load(self, child: asyncio.subprocess.Process, path: Path) -> None:
        assert child.stdin is not None
        child.stdin.write(f"load {path}\n".encode())
        await child.stdin.drain()
        await self._expect("scenario", child)

    async def stop(self) -> None:
        if self._copy_link is not None:
            os.close(self._copy_link)
            self._copy_link = None
        for child in (self._packets, self._child):
            if child is None:
                continue
            if child.stdin is not None:
                child.stdin.close()  # a child stops when its stdin closes
            try:
                async with asyncio.timeout(10):
                    await child.wait()
            except TimeoutError:
                child.kill()
                await child.wait()
        self._packets = self._child = None
        if self._network is not None:
            await asyncio.to_thread(self._network.close)
            self._network = None
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    async def __aenter__(self) -> NetnsLab:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


# --- the lab process inside the namespace ---------------------------------------------------


async def _child(scenario_path: str, network: str, directory: str, stand_in: bool) -> int:
    table = HostTable(ipaddress.IPv4Network(network), routable=True, stand_in=stand_in)
    lab = Lab(load_scenario(scenario_path, table), network=network, directory=Path(directory),
              routable=True, stand_in=stand_in)  # fmt: skip
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    try:
        await lab.start()
    except (LabError, OSError) as exc:
        print(f"error {exc}", flush=True)
        return 1
    try:
        print("ready", flush=True)
        while line := (await stdin.readline()).decode().strip():
            command, _, argument = line.partition(" ")
            if command != "load":
                print(f"error unknown command {command!r}", flush=True)
                continue
            try:
                path = Path(argument)
                await lab.set_scenario(parse_scenario(path.read_text(), path.stem, lab.table))
            except (ConfigError, OSError) as exc:
                print(f"error {exc}", flush=True)
            else:
                print(f"scenario {lab.scenario.name}", flush=True)
    finally:
        await lab.stop()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m helper.lab.netns")
    parser.add_argument("--scenario", required=True)
    parser.add_argument("--network", required=True)
    parser.add_argument("--directory", required=True)
    parser.add_argument("--stand-in", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="lab(netns) %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_child(args.scenario, args.network, args.directory, args.stand_in))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
