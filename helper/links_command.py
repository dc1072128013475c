"""`detour links`: where each of detour's endpoints is and the links that set apps up for it,
for a router without a screen (the terminal UI's set-up screen shows the same). Read from the
config, as `detour config check` is: a port written as 0 ("any") is shown as 0.

    mixed      SOCKS5/SOCKS4a/HTTP proxy: its address and Telegram's tg://socks link
    whatsapp   the WhatsApp proxy's address and ports (the app takes a host, no link)
    mtproto    the MTProto proxy endpoint: each user's tg://proxy and t.me links, the secret
               hidden (`detour mtproto links --show-secrets` prints them whole)
    signal     the Signal proxy: https://signal.tube/#HOST and sgnl://signal.tube/#HOST
    api        the status API's /status (listening on 0.0.0.0: at each of this machine's
               LAN addresses, as the mixed proxy's link is)

`--json` prints the same as a list of objects; `--qr` draws each link as a QR code in text.
A listener with users gets its link with the password hidden, as the set-up screen does."""

from __future__ import annotations

import ipaddress
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from transports import Endpoint

from .config import Config, ConfigError, load_config

__all__ = ["Entry", "add_links_parser", "entries", "links_command"]

EXIT_OK, EXIT_USAGE = 0, 2


@dataclass(frozen=True)
class Entry:
    kind: str
    address: str  # HOST:PORT, or HOST and the ports
    urls: tuple[str, ...] = ()
    note: str = ""


def entries(config: Config) -> list[Entry]:
    # Imported here: the command line builds this command's options on every run, and a
    # headless detour never loads the UI's modules (tests/integration/test_imports.py).
    from .proxy.signal import links as signal_links
    from .tui.appsetup import proxy_settings, telegram_link

    found: list[Entry] = []
    mixed = config.listen.mixed
    proxy = proxy_settings(mixed.host, mixed.port, config.listen.users)
    found.append(
        Entry(
            "mixed",
            proxy.address,
            (telegram_link(proxy),),
            "SOCKS5, SOCKS4a and HTTP on one port"
            + ("; only this machine (loopback)" if proxy.only_this_machine else ""),
        )
    )
    wa = config.whatsapp_proxy
    if wa is not None:
        ports = [
            f"{number} ({label})"
            for number, label in (
                (wa.tls_port, "TLS"),
                (wa.chat_port, "chat"),
                (wa.http_port, "chat over 80"),
                *((p, "media") for p in wa.media_ports),
            )
            if number is not None
        ]
        found.append(
            Entry(
                "whatsapp",
                wa.listen,
                (),
                "Settings > Storage and data > Proxy; ports " + ", ".join(ports),
            )
        )
    mt = config.mtproto_proxy
    if mt is not None:
        from .proxy.mtproto_links import proxy_links

        for link in proxy_links(mt):
            found.append(
                Entry(
                    "mtproto",
                    str(Endpoint(link.host, link.port)),
                    (link.link(reveal=False), link.link(web=True, reveal=False)),
                    f"user {link.user}, {link.mode} secret (hidden: detour mtproto links "
                    "--show-secrets prints it)",
                )
            )
    sp = config.signal_proxy
    if sp is not None:
        found.append(
            Entry(
                "signal",
                str(Endpoint(sp.link_host, sp.listen.port)),
                signal_links(sp.link_host, sp.listen.port),
                f"listens on {sp.listen}; open a link on the phone, or Settings > Data and "
                "storage > Proxy",
            )
        )
    if config.api.listen is not None:
        found.append(api_entry(config.api.listen))
    return found


def api_entry(api: Endpoint, addresses: Callable[[], list[str]] | None = None) -> Entry:
    """The status API's link. 0.0.0.0 or :: is where it listens, not an address another
    machine can open: 0.0.0.0 is shown as this machine's LAN addresses (found as the mixed
    proxy's link finds its own); where there are none, or for :: (IPv6 only), the note says
    what to put in its place."""
    if not _is_unspecified(api.host):
        return Entry("api", str(api), (f"http://{api}/status",), "the status API")
    if addresses is None:
        from .tui.appsetup import lan_addresses as addresses
    found = addresses() if ":" not in api.host else []
    if found:
        urls = tuple(f"http://{Endpoint(host, api.port)}/status" for host in found)
        return Entry("api", str(api), urls, "the status API, at this machine's LAN addresses")
    return Entry(
        "api",
        str(api),
        (f"http://{api}/status",),
        f"the status API; {api.host} means every address of this machine, which no other "
        f"machine can open: replace {api.host} with this machine's LAN address",
    )


def _is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def links_command(path: str | None, as_json: bool, qr: bool) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"detour: config problems in {exc}", file=sys.stderr)
        return EXIT_USAGE
    from .tui.appsetup import qr_rows

    found = entries(config)
    if as_json:
        print(json.dumps([asdict(entry) for entry in found], indent=2))
        return EXIT_OK
    for entry in found:
        print(f"{entry.kind:<9} {entry.address}" + (f"  ({entry.note})" if entry.note else ""))
        for url in entry.urls:
            print(f"          {url}")
            if qr and not url.startswith("http://") and not _hidden(url):
                print("\n".join(qr_rows(url)))
    return EXIT_OK


def _hidden(url: str) -> bool:
    """A link shown with its password or secret hidden: no use as a QR code."""
    from transports.mtproto.secret import HIDDEN_SECRET

    return "••" in url or f"secret={HIDDEN_SECRET}" in url


def add_links_parser(sub: Any) -> None:
    """`detour links` on the command line's subparsers."""
    links = sub.add_parser(
        "links",
        help="print each endpoint's address and the links that set apps up",
        description="Print where each endpoint listens and its links (Telegram's tg://socks, "
        "the Signal proxy's signal.tube links), from the config; for a router without a screen.",
    )
    links.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        dest="links_config",
        help="config file (default: built-in)",
    )
    links.add_argument("--json", action="store_true", help="print them as JSON")
    links.add_argument("--qr", action="store_true", help="draw each link as a QR code")
