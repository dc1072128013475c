#!/usr/bin/env python3
"""Side-by-side Shadowsocks benchmark: detour's own `ss://` against shadowsocks-libev's
`ss-local` (C) on the same `ss-server`, and detour's `vless://` through its managed core
(v2ray) to a v2ray server, in one run.

    .venv/bin/python benchmarks/shadowsocks.py                  # 512 MiB each way, 3 rounds
    .venv/bin/python benchmarks/shadowsocks.py --size 256M --rounds 5
    .venv/bin/python benchmarks/shadowsocks.py --cipher aes-256-gcm --json out.json

The client, the sink/source servers, the rounds and the CPU accounting are relay.py's (see
its docstring): a SOCKS5 client in this process, a server process, each contestant in its
own process, rounds interleaved. What differs:

* ss-server (one process, shared by both Shadowsocks contestants) listens on loopback with
  the chosen cipher;
* "detour ss://" is detour headless with one route `ss://CIPHER:PASSWORD@ss-server`;
* "ss-local" is `ss-local -s ss-server -l PORT` (its SOCKS5 port);
* "detour vless:// (v2ray core)" is detour with one `vless://` route over TLS to a v2ray
  server; its CPU column adds the core child's CPU to detour's.

Reported per direction: median MB/s, the ratio of detour's ss:// to ss-local, and CPU
seconds per GiB of each client-side proxy (ss-server's and v2ray server's CPU are not in
it). The goal for detour's Shadowsocks is at least 0.8x of ss-local's throughput.

`--codec` measures the client's stream codec alone, without sockets or other processes, for
every cipher (the 2022 ones too, which Debian's ss-server does not speak): CPU seconds per
GiB to seal 256 KiB writes and to open a server's stream (chunks of the method's largest
size) read in 256 KiB pieces, in child processes from this tree and from `--baseline`,
alternating, best of `--rounds` each:

    .venv/bin/python benchmarks/shadowsocks.py --codec --baseline /tmp/before --rounds 5
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import relay as bench  # noqa: E402  (benchmarks/relay.py: client, servers, CPU)

GIB = 1 << 30
PASSWORD = "benchmark password"


def tree_cpu_seconds(pid: int | None) -> float | None:
    """CPU of a process and its children (detour and its core)."""
    if pid is None:
        return None
    total = bench.process_cpu_seconds(pid)
    if total is None:
        return None
    for child in _children(pid):
        total += bench.process_cpu_seconds(child) or 0.0
    return total


def _children(pid: int) -> list[int]:
    found = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                text = Path(f"/proc/{pid}/task/{task}/children").read_text()
                found += [int(p) for p in text.split()]
    return found


@contextlib.contextmanager
def ss_server(tmp: Path, cipher: str) -> Iterator[int]:
    port = bench.free_port()
    log = tmp / "ss-server.log"
    argv = ["ss-server", "-s", bench.HOST, "-p", str(port), "-k", PASSWORD, "-m", cipher]
    with log.open("wb") as out, bench.started(argv, stdout=out, stderr=subprocess.STDOUT) as p:
        bench.wait_accepting(p, (bench.HOST, port), "ss-server", log)
        yield port


@contextlib.contextmanager
def ss_local(tmp: Path, server: int, cipher: str):
    port = bench.free_port()
    log = tmp / "ss-local.log"
    argv = [
        "ss-local", "-s", bench.HOST, "-p", str(server), "-l", str(port), "-b", bench.HOST,
        "-k", PASSWORD, "-m", cipher,
    ]  # fmt: skip
    with log.open("wb") as out, bench.started(argv, stdout=out, stderr=subprocess.STDOUT) as p:
        bench.wait_accepting(p, (bench.HOST, port), "ss-local", log)
        yield (bench.HOST, port), p.pid, {"command": " ".join(argv[:1] + argv[1:6] + ["..."])}


@contextlib.contextmanager
def v2ray_vless(tmp: Path):
    """A v2ray VLESS-over-TLS server and detour with a vless:// route through its core."""
    from helper.lab.ca import LabCA

    ca = LabCA(tmp / "ca")
    cert, key = ca.issue("vpn.bench.test")
    user = str(uuid.uuid4())
    port = bench.free_port()
    config = {
        "log": {"loglevel": "warning"},
        "inbounds": [
            {
                "listen": bench.HOST, "port": port, "protocol": "vless",
                "settings": {"clients": [{"id": user}], "decryption": "none"},
                "streamSettings": {
                    "network": "tcp", "security": "tls",
                    "tlsSettings": {
                        "certificates": [{"certificateFile": str(cert), "keyFile": str(key)}]
                    },
                },
            }
        ],
        "outbounds": [{"protocol": "freedom"}],
    }  # fmt: skip
    path = tmp / "v2ray-server.json"
    path.write_text(json.dumps(config))
    log = tmp / "v2ray-server.log"
    argv = ["v2ray", "-config", str(path)]
    with log.open("wb") as out, bench.started(argv, stdout=out, stderr=subprocess.STDOUT) as p:
        bench.wait_accepting(p, (bench.HOST, port), "v2ray server", log)
        link = f"vless://{user}@{bench.HOST}:{port}?type=tcp&security=tls&sni=vpn.bench.test"
        extra = f'[tls]\nextra_ca = ["{ca.ca_path}"]\n[core]\nprogram = "v2ray"\n'
        with bench.run_detour(tmp, "uvloop", chain=link, extra=extra, label="vless") as c:
            yield c


def measure(proxy, servers, size: int, pid: int | None, timeout: float) -> dict[str, float]:
    out = {}
    for direction, run in (("upload", bench.upload), ("download", bench.download)):
        before = tree_cpu_seconds(pid)
        transfer = run(proxy, servers, size, None, timeout)
        after = tree_cpu_seconds(pid)
        out[f"{direction}_mbps"] = transfer.mbps(size)
        if before is not None and after is not None:
            out[f"{direction}_cpu_per_gib"] = (after - before) * GIB / size
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="512M", type=bench.parse_size)
    parser.add_argument("--rounds", default=3, type=int)
    parser.add_argument("--cipher", default="chacha20-ietf-poly1305")
    parser.add_argument("--no-core", action="store_true", help="skip the vless:// contestant")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="DIR",
        help="also run the ss:// contestant from the source tree DIR (e.g. `git archive main "
        "| tar -x -C DIR`): before and after in one run",
    )
    parser.add_argument(
        "--codec", action="store_true", help="the client's codec alone, for every cipher"
    )
    args = parser.parse_args()
    if args.codec:
        return codec_main(args)
    for program in ("ss-server", "ss-local"):
        if shutil.which(program) is None:
            print(f"{program} is not installed (Debian package shadowsocks-libev)")
            return 2
    with_core = not args.no_core and shutil.which("v2ray") is not None
    timeout = max(120.0, args.size / (5 * bench.MB))
    results: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="detour-bench-ss-") as name:
        tmp = Path(name)
        with contextlib.ExitStack() as stack:
            servers = stack.enter_context(bench.run_servers())
            server_port = stack.enter_context(ss_server(tmp, args.cipher))
            link = f"ss://{args.cipher}:{PASSWORD.replace(' ', '%20')}@{bench.HOST}:{server_port}"
            contestants = {
                "detour ss://": stack.enter_context(
                    bench.run_detour(tmp, "uvloop", chain=link, label="ss")
                ),
                "ss-local": stack.enter_context(ss_local(tmp, server_port, args.cipher)),
            }
            if args.baseline:
                contestants["detour ss:// (baseline)"] = stack.enter_context(
                    bench.run_detour(tmp, "uvloop", chain=link, label="ss-b", root=args.baseline)
                )
            if with_core:
                contestants["detour vless:// (v2ray core)"] = stack.enter_context(v2ray_vless(tmp))
            names = list(contestants)
            for round_ in range(args.rounds):
                order = names[round_ % len(names) :] + names[: round_ % len(names)]
                for contestant in order:
                    address, pid, _ = contestants[contestant]
                    results.setdefault(contestant, []).append(
                        measure(address, servers, args.size, pid, timeout)
                    )
    report(results, args)
    if args.json:
        args.json.write_text(
            json.dumps({"args": vars(args), "results": results}, indent=2, default=str)
        )
    return 0


def report(results: dict[str, list[dict[str, float]]], args) -> None:
    def median(name: str, key: str) -> float | None:
        values = [r[key] for r in results.get(name, []) if key in r]
        return statistics.median(values) if values else None

    size = bench.human_size(args.size)
    print(f"\nShadowsocks ({args.cipher}), {size} each way, {args.rounds} rounds, medians\n")
    print(f"{'contestant':32} {'up MB/s':>9} {'down MB/s':>10} {'CPU s/GiB up':>13} {'down':>6}")
    for name in results:
        cells = [
            median(name, k)
            for k in ("upload_mbps", "download_mbps", "upload_cpu_per_gib", "download_cpu_per_gib")
        ]
        shown = [f"{c:.1f}" if c is not None else "n/a" for c in cells]
        print(f"{name:32} {shown[0]:>9} {shown[1]:>10} {shown[2]:>13} {shown[3]:>6}")
    for direction in ("upload", "download"):
        ours, theirs = (
            median("detour ss://", f"{direction}_mbps"),
            median("ss-local", f"{direction}_mbps"),
        )
        if ours and theirs:
            print(f"detour ss:// / ss-local, {direction}: {ours / theirs:.2f}x (goal: >= 0.8x)")


CODEC_READ = 256 * 1024
CODEC_BYTES = 32 << 20
CODEC_CIPHERS = (
    "chacha20-ietf-poly1305",
    "aes-256-gcm",
    "aes-128-gcm",
    "2022-blake3-aes-128-gcm",
    "2022-blake3-aes-256-gcm",
    "2022-blake3-chacha20-poly1305",
)


def codec_main(args) -> int:
    roots = {"detour": HERE.parent}
    if args.baseline:
        roots["baseline"] = args.baseline.resolve()
    best: dict[tuple[str, str], dict[str, float]] = {}
    for _ in range(args.rounds):
        for cipher in CODEC_CIPHERS:
            for label, root in roots.items():
                out = subprocess.run(
                    [sys.executable, str(Path(__file__).resolve()), "--codec-child", str(root),
                     cipher],
                    check=True, capture_output=True, text=True, cwd=root,
                )  # fmt: skip
                got = json.loads(out.stdout)
                kept = best.setdefault((cipher, label), got)
                for key in ("seal", "open"):
                    kept[key] = min(kept[key], got[key])
    print(f"\nThe client's codec alone, CPU s/GiB, best of {args.rounds}\n")
    print(
        f"{'cipher':32} {'seal':>7} {'open':>7}" + ("  baseline seal   open" * bool(args.baseline))
    )
    for cipher in CODEC_CIPHERS:
        ours = best[(cipher, "detour")]
        line = f"{cipher:32} {ours['seal']:7.3f} {ours['open']:7.3f}"
        if args.baseline:
            theirs = best[(cipher, "baseline")]
            line += f"  {theirs['seal']:13.3f} {theirs['open']:6.3f}"
        print(line)
    if args.json:
        rows = [{"cipher": c, "tree": t, **v} for (c, t), v in best.items()]
        args.json.write_text(json.dumps({"args": vars(args), "codec": rows}, indent=2, default=str))
    return 0


def codec_child(root: str, cipher: str) -> None:
    """One cipher's codec from the tree `root`: prints {"seal": s/GiB, "open": s/GiB}."""
    import base64
    import time

    sys.path.insert(0, root)
    for name in [m for m in sys.modules if m == "transports" or m.startswith("transports.")]:
        del sys.modules[name]
    from transports import Endpoint
    from transports.heap import keep_large_buffers
    from transports.shadowsocks import METHODS, ClientCodec, ServerCodec, ShadowsocksKey
    from transports.shadowsocks.methods import parse_psks, password_key

    assert Path(sys.modules["transports"].__file__).is_relative_to(root)
    keep_large_buffers()  # as every detour process does
    method = METHODS[cipher]
    if method.edition == 2022:
        psk = base64.b64encode(bytes(range(method.key_size))).decode()
        key = ShadowsocksKey(method, parse_psks(method, psk))
    else:
        key = ShadowsocksKey(method, (password_key(method, PASSWORD),))

    def client() -> ClientCodec:  # the same salt each time: the server's response fits all
        codec = ClientCodec(
            key, Endpoint("example.com", 443), random=lambda n: bytes(n), clock=lambda: 1e9
        )
        codec.request(b"x")
        return codec

    server = ServerCodec(key, clock=lambda: 1e9)
    server.open(ClientCodec(key, Endpoint("example.com", 443), random=lambda n: bytes(n),
                            clock=lambda: 1e9).request(b"x"))  # fmt: skip
    block = bytes(range(256)) * (CODEC_READ // 256)
    piece = block[: method.max_payload]
    wire = b"".join(server.seal(piece) for _ in range(CODEC_BYTES // len(piece)))
    reads = [wire[i : i + CODEC_READ] for i in range(0, len(wire), CODEC_READ)]
    plain = len(piece) * (CODEC_BYTES // len(piece))
    sealer = client()
    started = time.process_time()
    for _ in range(CODEC_BYTES // CODEC_READ):
        sealer.seal(block)
    seal = time.process_time() - started
    opener = client()
    started = time.process_time()
    got = sum(len(opener.open(read)) for read in reads)
    opened = time.process_time() - started
    assert got == plain, (got, plain)
    print(json.dumps({"seal": seal * GIB / CODEC_BYTES, "open": opened * GIB / plain}))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        bench.serve_main()
    elif sys.argv[1:2] == ["--codec-child"]:
        codec_child(sys.argv[2], sys.argv[3])
    else:
        sys.exit(main())
