"""The kernel-level lab (`detour lab --netns`, Linux, root): the lab's internet in a network
namespace of its own, reached over a veth pair, with address-level censorship done by
nftables in that namespace -- so a black-hole really drops SYNs (a client times out at
connect) and a refusal answers a SYN with a reset, as on a real network. Content rules (server
name, Host, throttling, freezes) stay with the userland censor, which runs in the namespace.

    root namespace                         namespace detour-lab-N
    detour / tests  --- veth 169.254.N.1 <-> 169.254.N.2 ---  lo: 10.77.0.0/16 (local route)
    route 10.77.0.0/16 via 169.254.N.2                        nftables: drop / reject rules
                                                              the lab process (userland censor,
                                                              servers, resolver)

The lab process in the namespace is this module's child: it reads commands on stdin (`load
SCENARIO`), answers on stdout (`ready`, `scenario NAME`), and stops when stdin closes, so it
never outlives its parent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import shutil
import sys
import tempfile
import zlib
from pathlib import Path

from helper.config import ConfigError

from .censor import Policy
from .hosts import HostTable
from .lab import Lab, LabError, helper_config
from .namespaces import NamespaceError, Namespaces, ip_command
from .scenario import Scenario, load_scenario, parse_scenario

__all__ = ["NetnsLab", "nft_ruleset"]

log = logging.getLogger("detour.lab.netns")

DEFAULT_NETNS_NETWORK = "10.77.0.0/16"
NFT_TABLE = "detour_lab"
NAMESPACE_PREFIX = "detour-lab"
START_TIMEOUT = 30.0


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
        self, scenario: Scenario | str = "baseline", *, network: str = DEFAULT_NETNS_NETWORK
    ) -> None:
        self.table = HostTable(ipaddress.IPv4Network(network), routable=True)
        self.scenario = (
            load_scenario(scenario, self.table) if isinstance(scenario, str) else scenario
        )
        # Names and link addresses follow from the network, which no two labs share (each
        # routes it into its namespace), so the next start finds what a killed lab left.
        self._tag = str(zlib.crc32(str(self.table.network).encode()) % 254 + 1)
        self.name = f"{NAMESPACE_PREFIX}-{self._tag}"
        self._link = (f"169.254.{self._tag}.1", f"169.254.{self._tag}.2")
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
        return helper_config(self.table, self.ca.ca_path, self.scenario.name, listen, front)

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._tools = _require_tools()
        self._network = Namespaces(suffix=self._tag)
        try:
            # In a thread: `ip` blocks; if this is cancelled, stop() waits for the step in
            # progress and the build stops there (Namespaces.close).
            await asyncio.to_thread(self._create_network, self._network)
            await self._apply_nft(self.scenario)
            self.directory = Path(tempfile.mkdtemp(prefix="detour-lab-netns-"))
            await self._start_child()
        except BaseException:
            await self.stop()
            raise
        log.info("lab in namespace %s on %s", self.name, self.table.network)

    def _create_network(self, network: Namespaces) -> None:
        net, host_side, ns_side = str(self.table.network), *self._link
        try:
            ns = network.namespace(NAMESPACE_PREFIX)
            host_if, ns_if = network.veth("dlab", None, ns)
            network.address(None, host_if, f"{host_side}/30")
            network.address(ns, ns_if, f"{ns_side}/30")
            # Every address of the lab network is local in the namespace (like 127.0.0.0/8).
            network.route(ns, "local", net, "dev", "lo")
            network.route(None, net, "via", ns_side)
        except NamespaceError as exc:
            raise LabError(str(exc)) from None

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
            "--directory", str(self.directory),
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

    async def _expect(self, word: str) -> str:
        assert self._child is not None and self._child.stdout is not None
        try:
            async with asyncio.timeout(START_TIMEOUT):
                line = (await self._child.stdout.readline()).decode().strip()
        except TimeoutError:
            raise LabError(f"the lab in namespace {self.name} did not answer") from None
        if not line.startswith(word):
            raise LabError(f"the lab in namespace {self.name} failed: {line or 'it exited'}")
        return line

    async def set_scenario(self, scenario: Scenario | str) -> None:
        if isinstance(scenario, str):
            scenario = load_scenario(scenario, self.table)
        async with self._lock:
            assert self._child is not None and self._child.stdin is not None
            await self._apply_nft(scenario)
            path = self._write_scenario(scenario)
            self._child.stdin.write(f"load {path}\n".encode())
            await self._child.stdin.drain()
            await self._expect("scenario")
            self.scenario = scenario

    async def stop(self) -> None:
        if self._child is not None:
            if self._child.stdin is not None:
                self._child.stdin.close()  # the child stops when its stdin closes
            try:
                async with asyncio.timeout(10):
                    await self._child.wait()
            except TimeoutError:
                self._child.kill()
                await self._child.wait()
            self._child = None
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


async def _child(scenario_path: str, network: str, directory: str) -> int:
    table = HostTable(ipaddress.IPv4Network(network), routable=True)
    lab = Lab(load_scenario(scenario_path, table), network=network, directory=Path(directory),
              routable=True)  # fmt: skip
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
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="lab(netns) %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_child(args.scenario, args.network, args.directory))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
