#!/usr/bin/env python3
"""Time to first byte of a new connection when k routes ahead of the working one are
black-holed: detour's staggered race against trying the routes one by one.

    .venv/bin/python benchmarks/routing.py                      # k = 0..3, 10 s route timeout
    .venv/bin/python benchmarks/routing.py --timeout 3          # quicker
    .venv/bin/python benchmarks/routing.py --netns              # root: a real SYN black hole
    .venv/bin/python benchmarks/routing.py --json out.json      # also write the raw numbers

The routes are built by detour's own config code (`parse_config` on a TOML text, then
`Router.from_config`): k black-holed routes, then `working` (`direct`), all listed in that
order by a service covering 127.0.0.0/8. The destination is an echo server on 127.0.0.1.

* staggered: `Router.connect`, detour's race (`[probe] stagger`, 250 ms by default);
* sequential: each route's `dialer.dial` in turn, each with its full timeout, as a proxy
  without racing (or mihomo's `fallback` group on first use) does.

Time to first byte runs from the start of the connect until one byte, written through the
returned stream, has come back from the echo server. A fresh Router is built for every
sample, so no health memory moves the working route to the front.

A black-holed route is a route whose first hop never answers. By default it is
`socks5://127.0.0.1:PORT` to a listener that accepts and then says nothing, so the dial
fails when the SOCKS5 handshake times out (the route's `timeout`). With `--netns` (Linux,
root, `ip` and `nft`) it is `socks5://203.0.113.1:1080`, an address routed into a network
namespace whose nftables rule drops every packet: the connect times out at SYN level, as
with a real black hole. The namespace, its veth pair and the route are removed on exit,
errors, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from helper.config import parse_config  # noqa: E402
from helper.lab.namespaces import Namespaces, ip_command  # noqa: E402
from helper.routing import Router  # noqa: E402
from transports import DialError, Endpoint, Stream  # noqa: E402

HOST = "127.0.0.1"
NETNS_NET = "203.0.113.0/24"  # TEST-NET-3: routed into the namespace, where it is dropped
NETNS_PROXY = "203.0.113.1:1080"
NETNS_LINK = ("169.254.255.1", "169.254.255.2")  # outside the lab's 169.254.1-254.x range


# ------------------------------------------------------------------------------------------
# the peers: an echo server and a listener that never answers
# ------------------------------------------------------------------------------------------


_HANDLERS: dict[asyncio.Task, asyncio.StreamWriter] = {}  # connections still open


def peer(echo: bool):
    """A connection handler that echoes, or that swallows what it gets and never answers."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        _HANDLERS[task] = writer
        try:
            while data := await reader.read(65536):
                if echo:
                    writer.write(data)  # a byte: no drain needed
        except OSError:
            pass
        finally:
            writer.close()
            del _HANDLERS[task]

    return handle


# ------------------------------------------------------------------------------------------
# --netns: an address whose packets are dropped
# ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def blackhole_netns() -> Iterator[None]:
    """A network namespace reached over a veth pair, where NETNS_NET is local and dropped by
    nftables (as in the kernel-level lab, helper/lab/netns.py). Everything is removed on
    exit."""
    if sys.platform != "linux" or os.geteuid() != 0:
        raise RuntimeError("--netns needs Linux and root")
    nft = shutil.which("nft") or "/usr/sbin/nft"
    for tool in (ip_command(), nft):
        if not os.access(tool, os.X_OK):
            raise RuntimeError(f"--netns needs {Path(tool).name} (iproute2, nftables)")
    ruleset = (
        "table inet detour_bench {\n  chain input {\n"
        "    type filter hook input priority 0; policy accept;\n"
        f"    ip daddr {NETNS_NET} drop\n  }}\n}}\n"
    )
    with Namespaces() as net:
        ns = net.namespace("detour-bench")
        host_if, ns_if = net.veth("dbench", None, ns)
        net.address(None, host_if, f"{NETNS_LINK[0]}/30")
        net.address(ns, ns_if, f"{NETNS_LINK[1]}/30")
        net.route(ns, "local", NETNS_NET, "dev", "lo")
        net.route(None, NETNS_NET, "via", NETNS_LINK[1])
        net.run(ns, nft, "-f", "-", stdin=ruleset)
        yield


# ------------------------------------------------------------------------------------------
# one sample
# ------------------------------------------------------------------------------------------


def config_text(k: int, blocked_proxy: str, timeout: float, stagger: float) -> str:
    names = [f"blocked-{i}" for i in range(1, k + 1)] + ["working"]
    chains = [f"socks5://{blocked_proxy}"] * k + ["direct"]
    lines = ["[probe]", f'stagger = "{stagger * 1000:g}ms"', "", "[default]", 'policy = "deny"']
    for name, chain in zip(names, chains, strict=True):
        lines += ["", "[[route]]", f'name = "{name}"', f'chain = "{chain}"']
        lines.append(f'timeout = "{timeout:g}s"')
    lines += ["", "[[service]]", 'name = "bench"', 'cidrs = ["127.0.0.0/8"]']
    lines.append(f"routes = {json.dumps(names)}")
    return "\n".join(lines) + "\n"


async def first_byte(stream: Stream) -> None:
    try:
        stream.write(b"x")
        await stream.drain()
        if await stream.read(1) != b"x":
            raise RuntimeError("the echo server did not echo")
    finally:
        stream.abort()


async def sample(strategy: str, text: str, target: Endpoint) -> tuple[float, list[str]]:
    """Milliseconds to first byte, and the failures of the routes that failed first."""
    router = Router.from_config(parse_config(text, "benchmarks/routing.py"))
    failures: list[str] = []
    start = time.perf_counter()
    if strategy == "staggered":
        connection = await router.connect(target)
        stream, route = connection.stream, connection.route
    else:
        _, ordered = router.plan(target)
        for route in ordered:
            try:
                stream = await route.dialer.dial(target)
                break
            except DialError as exc:
                failures.append(f"{route.name}: {exc.failure.value} / {exc.op.value}")
        else:
            raise RuntimeError(f"every route failed: {failures}")
    await first_byte(stream)
    elapsed = (time.perf_counter() - start) * 1000
    if route.name != "working":
        raise RuntimeError(f"{strategy}: connected via {route.name}, not via working")
    return elapsed, failures


# ------------------------------------------------------------------------------------------
# the run and the report
# ------------------------------------------------------------------------------------------


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def run(args: argparse.Namespace) -> list[dict[str, object]]:
    echo = await asyncio.start_server(peer(echo=True), HOST, 0)
    silent = await asyncio.start_server(peer(echo=False), HOST, 0)
    target = Endpoint(HOST, echo.sockets[0].getsockname()[1])
    blocked = NETNS_PROXY if args.netns else f"{HOST}:{silent.sockets[0].getsockname()[1]}"
    results = []
    try:
        for k in args.k:
            text = config_text(k, blocked, args.timeout, args.stagger)
            row: dict[str, object] = {"k": k}
            for strategy, repeat in (
                ("staggered", args.repeat),
                ("sequential", args.repeat_sequential),
            ):
                samples, failures = [], []
                for i in range(repeat):
                    ms, failed = await sample(strategy, text, target)
                    samples.append(round(ms, 2))
                    failures = failures or failed
                    log(f"k={k} {strategy} {i + 1}/{repeat}: {ms:.1f} ms")
                row[strategy] = {
                    "samples_ms": samples,
                    "median_ms": statistics.median(samples),
                    "max_ms": max(samples),
                }
                if failures:
                    row["blocked_failures"] = failures
            results.append(row)
    finally:
        echo.close()
        silent.close()
        for writer in list(_HANDLERS.values()):
            writer.close()  # their handlers then read EOF and end
        await asyncio.gather(*_HANDLERS, return_exceptions=True)
    return results


def machine() -> dict[str, object]:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
    }


def markdown(report: dict) -> str:
    lines = [
        f"Time to first byte, route timeout {report['timeout_s']:g} s, stagger "
        f"{report['stagger_ms']:g} ms, black hole: {report['blackhole']}. Staggered: median "
        f"and max of {report['repeat']} samples; sequential: of {report['repeat_sequential']}.",
        "",
        "| k blocked ahead | staggered median ms | staggered max ms "
        "| sequential median ms | sequential max ms | sequential / staggered |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["results"]:
        st, sq = row["staggered"], row["sequential"]
        # k = 0: both dial the one route, the ratio of two sub-millisecond times is noise
        ratio = f"{sq['median_ms'] / st['median_ms']:.1f}x" if row["k"] else "–"
        lines.append(
            f"| {row['k']} | {st['median_ms']:.1f} | {st['max_ms']:.1f} "
            f"| {sq['median_ms']:.1f} | {sq['max_ms']:.1f} | {ratio} |"
        )
    failures = next(r["blocked_failures"] for r in report["results"] if "blocked_failures" in r)
    m = report["machine"]
    lines += [
        "",
        f"Each black-holed route failed with: {failures[0].split(': ', 1)[1]}.",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['kernel']}, {m['python']}, "
        f"event loop {report['loop']}; {report['date']}.",
        f"Command: `{report['command']}`",
    ]
    return "\n".join(lines)


def loop_factory():
    """detour's choice: uvloop where installed, unless DETOUR_LOOP=asyncio."""
    if os.environ.get("DETOUR_LOOP", "auto") != "asyncio":
        try:
            import uvloop  # type: ignore[import-not-found]

            return uvloop.new_event_loop
        except ImportError:
            pass
    return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/routing.py",
        description="Time to first byte with k black-holed routes ahead of the working one: "
        "detour's staggered race vs trying routes one by one.",
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="route timeout in seconds (default 10)"
    )
    parser.add_argument(
        "--stagger", type=float, default=0.25, help="[probe] stagger in seconds (default 0.25)"
    )
    parser.add_argument(
        "--repeat", type=int, default=5, help="samples per k, staggered (default 5)"
    )
    parser.add_argument(
        "--repeat-sequential", type=int, default=3, metavar="N",
        help="samples per k, sequential (default 3: at k=3 one sample takes 3 timeouts)",
    )  # fmt: skip
    parser.add_argument(
        "--k", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2, 3],
        help="comma-separated numbers of black-holed routes ahead (default 0,1,2,3)",
    )  # fmt: skip
    parser.add_argument(
        "--netns", action="store_true",
        help="black-hole a real address with nftables in a network namespace (root)",
    )  # fmt: skip
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.repeat_sequential < 1 or args.timeout <= 0 or args.stagger <= 0:
        parser.error("--repeat and --repeat-sequential must be >= 1, --timeout/--stagger > 0")
    if any(k < 0 for k in args.k) or not any(k > 0 for k in args.k):
        parser.error("--k: numbers >= 0, at least one of them > 0")
    return args


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through every finally: the netns is removed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    factory = loop_factory()
    try:
        with (
            blackhole_netns() if args.netns else contextlib.nullcontext(),
            asyncio.Runner(loop_factory=factory) as runner,
        ):
            results = runner.run(run(args))
    except KeyboardInterrupt:
        log("interrupted; everything this benchmark created has been removed")
        return 130
    except RuntimeError as exc:  # --netns could not be set up, or a sample went wrong
        log(f"error: {exc}")
        return 1
    report = {
        "date": datetime.date.today().isoformat(),
        "command": shlex.join([".venv/bin/python", "benchmarks/routing.py", *sys.argv[1:]]),
        "machine": machine(),
        "loop": "asyncio" if factory is None else "uvloop",
        "blackhole": "nftables drop in a netns (SYN)" if args.netns else "silent SOCKS5 proxy",
        "timeout_s": args.timeout,
        "stagger_ms": args.stagger * 1000,
        "repeat": args.repeat,
        "repeat_sequential": args.repeat_sequential,
        "results": results,
    }
    print(markdown(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        log(f"JSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
