"""How applications reach detour: the address to type into them, Telegram's proxy link
(`tg://socks?...`, which Telegram opens as "add this proxy") and that link as a QR code drawn
with Unicode half blocks, two rows of modules per line of text.

When the listener has users, the link carries a password. The screen hides it until the user
asks; nothing here logs anything.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlencode

import segno

from ..config import User

__all__ = [
    "ProxySettings",
    "lan_addresses",
    "pac_url",
    "proxy_settings",
    "qr_rows",
    "telegram_link",
]

HIDDEN = "••••••••"


@dataclass(frozen=True)
class ProxySettings:
    host: str  # what to type into an application
    port: int
    user: str | None = None
    password: str | None = None
    only_this_machine: bool = True  # a loopback listener
    unknown_host: bool = False  # listening on every address, and none could be found

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def lan_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback, as its host name resolves (no
    packets sent)."""
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
    except OSError:
        return []
    found: list[str] = []
    for *_, sockaddr in infos:
        address = str(sockaddr[0])
        if not ipaddress.ip_address(address).is_loopback and address not in found:
            found.append(address)
    return found


def proxy_settings(
    host: str,
    port: int,
    users: Sequence[User] = (),
    *,
    addresses: Callable[[], list[str]] = lan_addresses,
) -> ProxySettings:
    """What applications should use for a listener on host:port."""
    user = users[0] if users else None
    login = {"user": user.name, "password": user.password} if user else {}
    ip = ipaddress.ip_address(host) if _is_ip(host) else None
    if ip is not None and ip.is_unspecified:
        # 0.0.0.0 is where detour listens, not an address a client can dial.
        found = addresses()
        return ProxySettings(
            found[0] if found else host,
            port,
            only_this_machine=False,
            unknown_host=not found,
            **login,  # type: ignore[arg-type]
        )
    loopback = ip.is_loopback if ip is not None else host == "localhost"
    return ProxySettings(host, port, only_this_machine=loopback, **login)  # type: ignore[arg-type]


def pac_url(api_host: str, api_port: int, proxy: ProxySettings) -> str:
    """Where browsers find the status API's PAC file (`GET /proxy.pac`). An API listening on
    every address is reached where the proxy is (the address the screen shows for it)."""
    host = api_host
    if _is_ip(host) and ipaddress.ip_address(host).is_unspecified:
        host = proxy.host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{api_port}/proxy.pac"


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def telegram_link(settings: ProxySettings, *, reveal: bool = False) -> str:
    """Telegram's deep link that adds a SOCKS5 proxy. Unless `reveal`, the password is
    replaced by dots: that form is for showing, not for using."""
    params = {"server": settings.host, "port": str(settings.port)}
    if settings.user is None:
        return "tg://socks?" + urlencode(params, quote_via=quote)
    params["user"] = settings.user
    if reveal:
        params["pass"] = settings.password or ""
        return "tg://socks?" + urlencode(params, quote_via=quote)
    return "tg://socks?" + urlencode(params, quote_via=quote) + "&pass=" + HIDDEN


def qr_rows(data: str, border: int = 2) -> list[str]:
    """`data` as a QR code in text: "█" both modules dark, "▀" the upper, "▄" the lower.
    Draw it dark on light (scanners expect dark modules); `border` is the quiet zone."""
    matrix = [list(row) for row in segno.make(data, micro=False).matrix_iter(border=border)]
    if len(matrix) % 2:
        matrix.append([0] * len(matrix[0]))
    chars = {(1, 1): "█", (1, 0): "▀", (0, 1): "▄", (0, 0): " "}
    return [
        "".join(chars[(bool(a), bool(b))] for a, b in zip(top, bottom, strict=True))
        for top, bottom in zip(matrix[0::2], matrix[1::2], strict=True)
    ]
