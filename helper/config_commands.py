"""`detour config check` and `detour config show`: what they print, and their exit codes
(0, or 2 for a config with problems, as the rest of the command line)."""

from __future__ import annotations

import sys
from pathlib import Path

from .config import Config, ConfigError, load_layers, warn_if_readable

__all__ = ["config_check", "config_show"]

EXIT_OK, EXIT_USAGE = 0, 2


def config_check(path: str) -> int:
    try:
        loaded = load_layers(path)
    except ConfigError as exc:
        print(f"detour: config problems in {exc}", file=sys.stderr)
        return EXIT_USAGE
    config = loaded.config
    warn_if_readable(Path(path), config)
    cannot_run = _routes_this_computer_cannot_run(config)
    if cannot_run:
        lines = "\n".join(f"  {line}" for line in cannot_run)
        print(f"detour: config problems in {path}:\n{lines}", file=sys.stderr)
        return EXIT_USAGE
    # The file's routes; a subscription's nodes are listed with it.
    routes = ", ".join(f"{r.name} ({r.chain})" for r in (config.pool_base or config).routes)
    services = ", ".join(s.name for s in config.services) or "none"
    print(f"{path}: ok")
    print(f"  base:     {'built-in config' if len(loaded.layers) > 1 else 'none'}")
    print(f"  listen:   {config.listen.mixed}")
    if config.listen.transparent is not None:
        print(f"  transparent: {config.listen.transparent}")
    if config.whatsapp_proxy is not None:
        wa = config.whatsapp_proxy
        ports = [wa.tls_port, wa.chat_port, wa.http_port, *wa.media_ports]
        shown = ", ".join(str(p) for p in ports if p is not None)
        print(f"  whatsapp proxy: {wa.listen} ports {shown}")
    if config.mtproto_proxy is not None:
        mt = config.mtproto_proxy
        modes = ", ".join(sorted({secret.mode.value for secret in mt.secrets.values()}))
        print(f"  mtproto proxy: {mt.listen}, {len(mt.secrets)} user(s), secrets {modes}")
    if config.signal_proxy is not None:
        sp = config.signal_proxy
        print(f"  signal proxy: {sp.listen} as {sp.link_host}")
    if config.api.listen is not None:
        print(f"  status API: {config.api.listen}")
    print(f"  routes:   {routes}")
    core = _core_line(config)
    if core is not None:
        print(f"  core:     {core}")
    print(f"  udp:      {_udp_line(config)}")
    print(f"  services: {services}")
    print(f"  default:  {config.default_policy}")
    if config.subscriptions:
        from .subscriptions.describe import pool_lines

        print("  subscriptions:")
        for line in pool_lines(config, comment="    ", check=_node_check(config)):
            print(line)
    return EXIT_OK


def _routes_this_computer_cannot_run(config: Config) -> list[str]:
    """Routes whose links need a proxy core that is missing here, cannot do them, or
    rejects the config detour would give it (transports/core/check.py)."""
    from transports.core.check import check_link

    problems = []
    for route in (config.pool_base or config).routes:  # a node's problem is said with its pool
        for layer in route.chain.layers:
            if layer.name in ("vless", "vmess", "trojan"):
                reason = check_link(layer.params["link"], config.core.program or None)
                if reason is not None:
                    problems.append(f"route[{route.name}].chain: {layer.name}: {reason}")
    return problems


def _core_line(config: Config) -> str | None:
    """Which proxy core the vless/vmess/trojan routes run, and from where (docs/cores.md);
    None when no route needs one."""
    layers = (
        layer for route in (config.pool_base or config).routes for layer in route.chain.layers
    )
    if not any(layer.name in ("vless", "vmess", "trojan") for layer in layers):
        return None
    from transports.core.check import which_core

    return which_core(config.core.program or None)


def _udp_line(config: Config) -> str:
    """Which routes carry UDP (docs/udp.md "Which routes carry UDP"), and why the others do
    not, from the chains alone."""
    from transports.datagram import udp_refusal

    carried, not_carried = [], []
    for route in (config.pool_base or config).routes:
        why = udp_refusal(route.chain, off=not route.udp)
        if why is None:
            carried.append(route.name)
        else:
            not_carried.append(f"{route.name} ({why})")
    line = ", ".join(carried) or "no route"
    if not_carried:
        line += "; not: " + ", ".join(not_carried)
    return line


def _node_check(config: Config):
    """Why a subscription node's chain cannot run on this computer (a proxy core missing or
    unable to do it; the core's own test of the config is left to the dial), or None."""
    from transports.core.check import check_link

    def check(chain) -> str | None:
        for layer in chain.layers:
            if layer.name in ("vless", "vmess", "trojan"):
                # No test run per node (a list may hold hundreds): installed and able.
                return check_link(layer.params["link"], config.core.program or None, run_test=False)
        return None

    return check


def config_show(path: str | None) -> int:
    from .config.show import show

    try:
        loaded = load_layers(path)
    except ConfigError as exc:
        print(f"detour: config problems in {exc}", file=sys.stderr)
        return EXIT_USAGE
    sys.stdout.write(show(loaded))
    return EXIT_OK
