"""The `detour` command: argument parsing only; each subcommand calls into the modules
(the headless run: helper/headless.py).

Exit codes: 0 success (and a clean stop on a signal), 1 runtime failure (e.g. the port is
taken), 2 bad config or usage. `detour probe` exits 1 when a service has no working route,
3 when the network is down (helper/probe/run.py OFFLINE_EXIT).

Why this module is long: one parser for every subcommand and its options, and each
command's few lines of glue (load the config, say what is wrong, run it); the commands
themselves live elsewhere.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import ipaddress
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from transports import Endpoint

from . import __version__
from .config import (
    ConfigError,
    check_exposure,
    default_config_text,
    load_config,
    parse_listen_address,
)
from .config_commands import config_check, config_show
from .headless import reload_config, serve, start_problem, with_listen
from .mtproto_commands import mtproto_links, mtproto_secret

log = logging.getLogger("detour")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
DRAIN_TIMEOUT = 10.0  # seconds established connections get to finish on SIGTERM


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # usage errors exit 2 with one clear line
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _listen_arg(text: str) -> Endpoint:
    try:
        return parse_listen_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _listen_text(text: str) -> str:
    """A listen address checked as --listen's, kept as written (the lab writes it out)."""
    _listen_arg(text)
    return text


def _lab_network(text: str) -> str:
    try:
        ipaddress.IPv4Network(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an IPv4 network (CIDR, e.g. 127.77.0.0/16): {exc}"
        ) from None
    return text


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86400 or value != value:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0 to 86400)")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="detour",
        description="A local proxy that finds a working path to WhatsApp, Telegram and Signal "
        "on networks that block them. Point apps at its SOCKS5/HTTP port.",
        epilog="Without a command, detour runs the proxy and its terminal UI with the given (or "
        "built-in) config.",
    )
    parser.add_argument("--version", action="version", version=f"detour {__version__}")
    parser.add_argument("-c", "--config", metavar="FILE", help="config file (default: built-in)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = sub.add_parser(
        "run", help="run the proxy", description="Run the proxy, with the terminal UI."
    )
    run.add_argument("--headless", action="store_true", help="no terminal UI; log to stdout")
    run.add_argument(
        "-c", "--config", metavar="FILE", dest="run_config", help="config file (default: built-in)"
    )
    run.add_argument(
        "--listen", metavar="HOST:PORT", type=_listen_arg, help="override listen.mixed"
    )
    run.add_argument(
        "--log-format", choices=("text", "json"), default="text", help="log line format"
    )
    run.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="log verbosity",
    )
    run.add_argument(
        "--drain-timeout",
        metavar="SECONDS",
        type=_seconds,
        default=DRAIN_TIMEOUT,
        help="headless: on SIGTERM or Ctrl-C (with the UI: when the terminal goes away), how "
        "long established connections may take to finish before they are cut "
        f"(default: {DRAIN_TIMEOUT:g}; 0: cut at once)",
    )

    tui = sub.add_parser(
        "tui",
        help="run the proxy with the terminal UI",
        description="Run the proxy with the terminal UI: which route works for each service, "
        "why the others fail, live connections, and how to set up apps.",
    )
    tui.add_argument(
        "-c", "--config", metavar="FILE", dest="tui_config", help="config file (default: built-in)"
    )
    tui.add_argument(
        "--listen", metavar="HOST:PORT", type=_listen_arg, help="override listen.mixed"
    )

    config = sub.add_parser(
        "config", help="check or print configurations", description="Configuration tools."
    )
    config_sub = config.add_subparsers(
        dest="config_command", metavar="ACTION", parser_class=_Parser, required=True
    )
    check = config_sub.add_parser(
        "check",
        help="validate a config file",
        description="Validate a config file; exit 2 if it has problems.",
    )
    check.add_argument("file", metavar="FILE")
    config_sub.add_parser(
        "default",
        help="print the built-in config",
        description="Print the built-in config (what a config file builds on).",
    )
    show = config_sub.add_parser(
        "show",
        help="print the config detour runs with",
        description="Print the effective config: FILE on the built-in config (or the built-in "
        "config alone), each key marked with where it comes from; secrets hidden.",
    )
    show.add_argument(
        "-c", "--config", metavar="FILE", dest="show_config", help="config file (default: none)"
    )

    from .add_command import add_parser
    from .links_command import add_links_parser
    from .mtproto_commands import add_mtproto_parser

    add_mtproto_parser(sub, _Parser)
    add_links_parser(sub)
    add_parser(sub)
    from .router_rules import add_router_rules_parser

    add_router_rules_parser(sub)

    probe = sub.add_parser(
        "probe",
        help="check every service through every route, once",
        description="Probe every service through every route and say which work and why the "
        "others fail. Exit 0 if every service has a working route, 1 if any has none, 2 on a "
        "bad config or usage, 3 if the network is down (nothing answered, not even the control "
        "targets).",
    )
    probe.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        dest="probe_config",
        help="config file (default: built-in)",
    )
    probe.add_argument(
        "--service", metavar="NAME", action="append", help="only this service (repeat for several)"
    )
    probe.add_argument("--json", action="store_true", help="print the result as JSON")
    probe.add_argument(
        "--search", action="store_true", help="then search strategies (docs/search.md)"
    )
    probe.add_argument("--forget", action="store_true", help="forget what searches found here")

    relay = sub.add_parser(
        "relay",
        help="run the far end of fronted tunnels",
        description="The relay: the far end of domain-fronted tunnels (docs/relay.md). "
        "Without an action it runs; the actions manage its keys and clients.",
    )
    relay.add_argument("-c", "--config", metavar="FILE", dest="relay_config", required=True,
                       help="the relay's config file")  # fmt: skip
    relay_sub = relay.add_subparsers(dest="relay_command", metavar="ACTION", parser_class=_Parser)
    keygen = relay_sub.add_parser(
        "keygen", help="create the relay's keys", description="Create the relay's keys and path."
    )
    keygen.add_argument("--force", action="store_true", help="replace existing keys")
    add = relay_sub.add_parser(
        "add-client",
        help="issue an access key",
        description="Issue a client credential and print its access key (once).",
    )
    add.add_argument("name", metavar="NAME")
    add.add_argument("--qr", action="store_true", help="also print the key as a QR code")
    gone = relay_sub.add_parser(
        "revoke", help="revoke a client", description="Revoke a client's access key."
    )
    gone.add_argument("name", metavar="NAME")
    relay_sub.add_parser("clients", help="list clients", description="List the relay's clients.")

    lab = sub.add_parser(
        "lab",
        help="run the mock blocking network",
        description="Run the lab: mock messaging servers behind a censor that reproduces a "
        "censorship scenario, on loopback addresses. Prints the detour config to use with it.",
    )
    lab.add_argument("--list", action="store_true", help="list the scenarios and exit")
    _lab_arguments(lab)
    lab.add_argument(
        "--write-config", metavar="FILE", type=Path, help="write the detour config to FILE"
    )
    lab.add_argument(
        "--listen",
        metavar="HOST:PORT",
        type=_listen_text,
        default="127.0.0.1:1080",
        help="detour's listener in the written config (default: 127.0.0.1:1080)",
    )
    demo = sub.add_parser(
        "demo",
        help="run the lab and detour against it",
        description="Run a lab scenario and detour against it in one process, with the "
        "terminal UI.",
    )
    _lab_arguments(demo)
    demo.add_argument(
        "--listen",
        metavar="HOST:PORT",
        type=_listen_text,
        default="127.0.0.1:1080",
        help="detour's listener",
    )
    demo.add_argument("--headless", action="store_true", help="no terminal UI; log to stdout")
    return parser


def _lab_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scenario",
        metavar="NAME|FILE",
        default="baseline",
        help="a scenario name (see detour lab --list) or a scenario file (default: baseline)",
    )
    parser.add_argument(
        "--network",
        metavar="CIDR",
        type=_lab_network,
        help="network for the lab's addresses (default: 127.77.0.0/16, or 10.77.0.0/16 with "
        "--netns)",
    )
    parser.add_argument(
        "--netns",
        action="store_true",
        help="Linux, root: put the lab in a network namespace behind nftables, so black-holes "
        "drop SYNs and refusals reset them, as on a real network",
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        return _run(args.config, None, "text", "info", ui=_ui_or_headless())
    if args.command == "run":
        ui = not args.headless and _ui_or_headless()
        return _run(
            args.run_config or args.config,
            args.listen,
            args.log_format,
            args.log_level,
            ui=ui,
            drain_timeout=args.drain_timeout,
        )
    if args.command == "tui":
        if not _is_terminal():
            print("detour tui: needs a terminal (try detour run --headless)", file=sys.stderr)
            return EXIT_USAGE
        return _run(args.tui_config or args.config, args.listen, "text", "info", ui=True)
    if args.command == "config":
        if args.config_command == "check":
            return config_check(args.file)
        if args.config_command == "default":
            sys.stdout.write(default_config_text())
            return EXIT_OK
        if args.config_command == "show":
            return config_show(args.show_config or args.config)
    if args.command == "mtproto":
        if args.mtproto_command == "links":
            return mtproto_links(args.mtproto_config or args.config, args.show_secrets)
        if args.mtproto_command == "secret":
            return mtproto_secret(args.plain, args.tls)
    if args.command in ("lab", "demo"):
        return _lab(args)
    if args.command == "relay":
        return _relay(args)
    if args.command == "add":
        from .add_command import add_command

        return add_command(
            args.add_config or args.config,
            args.link,
            args.name,
            args.service,
            args.dry_run,
            not args.no_reload,
        )
    if args.command == "links":
        from .links_command import links_command

        return links_command(args.links_config or args.config, args.json, args.qr)
    if args.command == "probe":
        return _probe(args)
    if args.command == "router-rules":
        from .router_rules import router_rules_command

        return router_rules_command(args, args.rules_config or args.config)
    parser.print_help()
    return EXIT_USAGE


def _relay(args: argparse.Namespace) -> int:
    from .relay import run

    path, action = args.relay_config, args.relay_command
    if action == "keygen":
        return run.keygen(path, args.force)
    if action == "add-client":
        return run.add_client(path, args.name, args.qr)
    if action == "revoke":
        return run.revoke(path, args.name)
    if action == "clients":
        return run.list_clients(path)
    from .logs import setup_logging

    setup_logging("info", "text")

    async def serve() -> int:
        return await run.serve(path, _stop_event())

    return run_async(serve)


def _probe(args: argparse.Namespace) -> int:
    from .probe.run import forget_strategies, probe_services

    services = args.service
    try:
        config = load_config(args.probe_config or args.config)
    except ConfigError as exc:
        print(f"detour: config problems in {exc}", file=sys.stderr)
        return EXIT_USAGE
    known = [s.name for s in config.services]
    unknown = [name for name in services or () if name not in known]
    if unknown:
        print(
            f"detour probe: no service {unknown[0]!r} (services: {', '.join(known) or 'none'})",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.forget:
        return forget_strategies(services)
    return run_async(
        lambda: probe_services(config, services, as_json=args.json, search=args.search)
    )


def _lab(args: argparse.Namespace) -> int:
    from .lab import runner
    from .logs import setup_logging

    if args.command == "lab" and args.list:
        sys.stdout.write(runner.list_scenarios())
        return EXIT_OK
    log_buffer = None
    if args.command == "demo" and not args.headless and _ui_or_headless():
        from .tui.logbuffer import LogBuffer

        log_buffer = LogBuffer()
    setup_logging("info", "text", handler=log_buffer)

    async def lab() -> int:
        return await runner.serve_lab(
            args.scenario,
            netns=args.netns,
            network=args.network,
            listen=args.listen,
            write_config=args.write_config,
            stop=_stop_event(),
        )

    async def demo() -> int:
        return await runner.serve_demo(
            args.scenario,
            netns=args.netns,
            network=args.network,
            listen=args.listen,
            stop=_stop_event(),
            log_buffer=log_buffer,
        )

    return run_async(lab if args.command == "lab" else demo)


def _is_terminal() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def _ui_or_headless() -> bool:
    """The UI where there is a terminal; headless, with a word, where there is none (a
    service manager, a pipe)."""
    if _is_terminal():
        return True
    print("detour: not a terminal; running headless (Ctrl-C stops).", file=sys.stderr)
    return False


def _run(
    path: str | None,
    listen: Endpoint | None,
    log_format: str,
    log_level: str,
    *,
    ui: bool = False,
    drain_timeout: float = DRAIN_TIMEOUT,
) -> int:
    from .logs import setup_logging

    log_buffer = None
    if ui:
        # While the UI owns the screen, log lines go to its log view, not to stdout.
        from .tui.logbuffer import LogBuffer

        log_buffer = LogBuffer()
    setup_logging(log_level, log_format, handler=log_buffer)
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"detour: config problems in {exc}", file=sys.stderr)
        return EXIT_USAGE
    if listen is not None:
        config = with_listen(config, listen)
        problems: list[str] = []
        check_exposure(config.listen, lambda key, msg: problems.append(f"--listen: {msg}"))
        if problems:
            print(f"detour: {problems[0]}", file=sys.stderr)
            return EXIT_USAGE
    if log_buffer is not None:
        return run_async(lambda: _serve_tui(config, log_buffer, path, listen, drain_timeout))
    return run_async(lambda: serve(config, path, listen, drain_timeout))


async def _serve_tui(
    config: Any, log_buffer: Any, path: str | None, listen: Any, drain_timeout: float
) -> int:
    from .engine import Engine
    from .routing.state import HealthStore
    from .tui import build_app, run_until_stopped

    engine = Engine(config, store=HealthStore())  # memory per network, as headless
    reload = None if path is None else (lambda: reload_config(engine, path, listen))
    # Built before the engine starts: it subscribes to the first probes.
    app = build_app(engine, log_buffer=log_buffer, reload=reload, config_path=path)
    loop = asyncio.get_running_loop()
    with contextlib.suppress(AttributeError, NotImplementedError, RuntimeError):
        # SIGUSR1 reloads (the UI shows what happened). Not SIGHUP as headless: under the UI a
        # hang-up means the terminal is gone, and detour ends with it (tui/terminal.py).
        loop.add_signal_handler(signal.SIGUSR1, lambda: app.call_later(app.action_reload))
    try:
        await engine.start()
    except OSError as exc:
        print(
            f"detour: cannot start: {start_problem(exc)}",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    from .instances import serving

    try:
        with serving(path, "SIGUSR1"):  # `detour add` reloads this file here
            stopped = await run_until_stopped(app, _stop_event())
        if stopped:
            # The terminal went away: connections in flight get the drain timeout to finish.
            await engine.drain(drain_timeout)
    finally:
        await engine.stop()
    return EXIT_OK


def _stop_event() -> asyncio.Event:
    """An event set by Ctrl-C or SIGTERM (call from inside the running loop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows: Ctrl-C arrives as KeyboardInterrupt
            pass
    return stop


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (a faster event loop), unless DETOUR_LOOP=asyncio."""
    if os.environ.get("DETOUR_LOOP", "auto") == "asyncio":
        return None
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_async(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(main())
    except KeyboardInterrupt:
        return EXIT_OK


def _no_broken_pipe(command: Callable[[list[str] | None], int]) -> Callable[..., int]:
    """`detour config show | head`: the reader going away ends the command quietly (exit 1),
    not with a traceback."""

    @functools.wraps(command)
    def guarded(argv: list[str] | None = None) -> int:
        try:
            return command(argv)
        except BrokenPipeError:
            with contextlib.suppress(OSError, ValueError):  # nothing more to flush at exit
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_FAILURE

    return guarded


main = _no_broken_pipe(main)
