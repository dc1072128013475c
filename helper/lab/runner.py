"""`detour lab` and `detour demo`: the lab as a program a tester runs, until Ctrl-C.

`detour lab` starts the mock network and prints (or writes) the detour config to use with
it; the scenario can be switched while it runs (SIGHUP re-reads it; a scenario given as a
file is re-read when the file changes). `detour demo` runs a scenario and detour against it
in one process, so a newcomer sees every route's fate with one command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from helper.config import ConfigError, parse_config
from helper.files import write_private

from .hosts import DEFAULT_NETWORK
from .lab import Lab, LabError
from .scenario import load_scenario, scenario_names

__all__ = ["list_scenarios", "serve_demo", "serve_lab"]

if TYPE_CHECKING:
    from helper.tui.logbuffer import LogBuffer

    from .netns import NetnsLab

log = logging.getLogger("detour.lab")

WATCH_INTERVAL = 1.0


def list_scenarios() -> str:
    lines = []
    for name in scenario_names():
        scenario = load_scenario(name)
        netns = " (--netns)" if scenario.needs_netns else ""
        lines.append(f"{name:24} {scenario.summary}{netns}")
    return "\n".join(lines) + "\n"


def _usage(lab: Lab | NetnsLab, config_path: Path | None, listen: str) -> str:
    host, port = listen.rsplit(":", 1)
    where = f"written to {config_path}" if config_path else "printed above"
    return (
        f"lab running on {lab.table.network}{' in a network namespace' if lab.netns else ''}, "
        f"scenario {lab.scenario.name!r} "
        f"({lab.scenario.summary})\n"
        f"  resolver   udp/tcp {lab.table.dns_address}:53 (lies as the scenario says), "
        f"DoH {lab.table.doh_url} (honest)\n"
        f"  lab CA     {lab.ca.ca_path}\n"
        f"  routes     {lab.table.socks_url} and {lab.table.http_proxy_url} (outside the censor)\n"
        f"  config     {where}; run detour with it:\n"
        f"               detour run --headless -c {config_path or 'FILE'}\n"
        f"  then try   curl --socks5-hostname {host}:{port} --cacert {lab.ca.ca_path} "
        "https://web.telegram.org/\n"
        "Ctrl-C stops the lab; SIGHUP re-reads the scenario.\n"
    )


async def _watch(lab: Lab | NetnsLab, source: str, reload: asyncio.Event) -> None:
    """Re-read the scenario on SIGHUP, or when its file changes."""
    path = Path(source)
    mtime = path.stat().st_mtime if path.suffix and path.exists() else None
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reload.wait(), WATCH_INTERVAL)
        changed = reload.is_set()
        if mtime is not None and path.exists() and path.stat().st_mtime != mtime:
            mtime = path.stat().st_mtime
            changed = True
        if not changed:
            continue
        reload.clear()
        try:
            await lab.set_scenario(load_scenario(source, lab.table))
        except (ConfigError, LabError) as exc:
            log.error("scenario not changed: %s", exc)
        else:
            log.info("scenario is now %s", lab.scenario.name)


def _demo_notes(lab: Lab | NetnsLab, listen: str) -> list[str]:
    return [
        f"Lab scenario {lab.scenario.name!r}: {lab.scenario.summary}.",
        f"Try: curl --socks5-hostname {listen} --cacert {lab.ca.ca_path} https://web.telegram.org/",
    ]


def _make_lab(scenario: str, netns: bool, network: str | None) -> Lab | NetnsLab:
    if netns:
        from .netns import DEFAULT_NETNS_NETWORK, NetnsLab

        return NetnsLab(scenario, network=network or DEFAULT_NETNS_NETWORK)
    return Lab(scenario, network=network or str(DEFAULT_NETWORK))


async def serve_lab(
    scenario: str,
    *,
    netns: bool = False,
    network: str | None,
    listen: str,
    write_config: Path | None,
    stop: asyncio.Event,
) -> int:
    try:
        lab = _make_lab(scenario, netns, network)
        await lab.start()
    except (ConfigError, LabError, ValueError) as exc:
        print(f"detour lab: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError | ValueError) else 1
    try:
        text = lab.helper_config(listen=listen)
        if write_config is not None:
            try:
                write_private(write_config, text)  # it holds the lab front's access key
            except OSError as exc:
                print(
                    f"detour lab: cannot write {write_config}: {exc.strerror or exc}",
                    file=sys.stderr,
                )
                return 1
        else:
            print(text)
        print(_usage(lab, write_config, listen), file=sys.stderr, flush=True)
        reload = asyncio.Event()
        with contextlib.suppress(NotImplementedError, RuntimeError, AttributeError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload.set)
        watcher = asyncio.ensure_future(_watch(lab, scenario, reload))
        await stop.wait()
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    finally:
        log.info("stopping the lab")
        await lab.stop()
    return 0


async def serve_demo(
    scenario: str,
    *,
    netns: bool = False,
    network: str | None,
    listen: str,
    stop: asyncio.Event,
    log_buffer: LogBuffer | None = None,
) -> int:
    """The lab and detour against it, in one process; with the terminal UI when given the
    log buffer it shows (logging already goes there), headless otherwise."""
    from helper.engine import Engine

    try:
        lab = _make_lab(scenario, netns, network)
        await lab.start()
    except (ConfigError, LabError, ValueError) as exc:
        print(f"detour demo: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError | ValueError) else 1
    try:
        config = parse_config(lab.helper_config(listen=listen), "lab config")
        engine = Engine(config)
        app = None
        if log_buffer is not None:
            from helper.tui import build_app, run_until_stopped

            # Built before the engine starts, so it sees the first probes begin.
            app = build_app(
                engine,
                log_buffer=log_buffer,
                title=f"detour demo · {lab.scenario.name}",
                notes=_demo_notes(lab, listen),
            )
        try:
            await engine.start()
        except OSError as exc:
            print(f"detour demo: cannot start: {exc.strerror or exc}", file=sys.stderr)
            return 1
        if app is not None:
            try:
                await run_until_stopped(app, stop)
            finally:
                await engine.stop()
            return 0
        host, port = engine.mixed_address
        print(
            f"demo: scenario {lab.scenario.name!r} ({lab.scenario.summary}); detour on "
            f"{host}:{port}.\n  try: curl --socks5-hostname {host}:{port} --cacert "
            f"{lab.ca.ca_path} https://web.telegram.org/\nCtrl-C stops.",
            file=sys.stderr,
            flush=True,
        )
        try:
            await stop.wait()
        finally:
            await engine.stop()
    finally:
        await lab.stop()
    return 0
