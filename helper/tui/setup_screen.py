"""Pointing applications at detour: the proxy address, Telegram's settings with its
`tg://socks` link and a QR code of it, the MTProto proxy endpoint's `tg://proxy` links (the
QR code is then of the first user's: a phone scans it and Telegram offers to add the proxy),
the Signal proxy's link and its QR code (when `[signal_proxy]` is on), browsers and the
command line.

A listener with users puts a password in the link, and an MTProto link always holds its
secret. They are shown (in the text and in the QR code, which carries them too) only after
the user presses v, and hidden again with v."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from .appsetup import HIDDEN, pac_url, qr_rows, telegram_link

if TYPE_CHECKING:
    from .front import Front

__all__ = ["SetupScreen"]


class SetupScreen(Screen[None]):
    BINDINGS = [  # noqa: RUF012 - Textual's declaration style
        Binding("escape,s", "app.pop_screen", "back"),
        Binding("v", "reveal", "password"),
    ]

    app: Front  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.revealed = False

    def compose(self) -> ComposeResult:
        yield Static("Set up your apps", id="setup-title")
        with Horizontal(id="setup-body"):
            yield Static(id="qr")
            with VerticalScroll(id="setup-scroll"):
                yield Static(id="setup-text")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self._redraw()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "reveal":
            return self.app.proxy.user is not None or bool(self.app.mtproto_links)
        return True

    def action_reveal(self) -> None:
        self.revealed = not self.revealed
        self._redraw()

    def _redraw(self) -> None:
        proxy = self.app.proxy
        links = self.app.mtproto_links
        secret = proxy.user is not None or bool(links)
        qr = self.query_one("#qr", Static)
        if secret and not self.revealed:
            what = "secret" if links else "password"
            qr.update(Text(f"\n QR code hidden: it holds \n the {what}. v shows it. \n"))
            qr.add_class("hidden")
        else:
            shown = links[0].link(reveal=True) if links else telegram_link(proxy, reveal=True)
            qr.update("\n".join(qr_rows(shown)))
            qr.remove_class("hidden")
        self.query_one("#setup-text", Static).update(self._text())

    def _text(self) -> Group:
        proxy = self.app.proxy
        link = telegram_link(proxy, reveal=self.revealed)
        parts: list[RenderableType] = []

        def heading(words: str) -> None:
            parts.append(Text(words, "bold"))

        def para(words: str, style: str = "") -> None:
            parts.append(Padding(Text(words, style), (0, 0, 0, 2)))

        heading("Proxy")
        para(f"{proxy.address}  SOCKS5, SOCKS4a and HTTP on one port")
        if proxy.user is not None:
            password = proxy.password if self.revealed else HIDDEN
            para(f"user {proxy.user}, password {password}" + ("" if self.revealed else "  (v)"))
        if proxy.only_this_machine:
            para("Only apps on this computer can use it (a loopback address).", "dim")
        if proxy.unknown_host:
            para("detour listens on every address: use one of this computer's.", "dim")
        heading("\nTelegram")
        para("Open this link in Telegram, or scan the code with the phone's camera:")
        para(link)
        login = ", with the login above" if proxy.user else ""
        para(
            "or Settings → Advanced → Connection type → Use custom proxy → SOCKS5, "
            f"server {proxy.host}, port {proxy.port}{login}."
        )
        if proxy.only_this_machine:
            para(
                "A phone reaches detour only on your network's address: listen.mixed on "
                "that address, with users or an allow-list (docs/configuration.md).",
                "dim",
            )
        links = self.app.mtproto_links
        if links:
            heading("\nTelegram: MTProto proxy (phones)")
            para(
                "Open a user's link on the phone, or scan the code (the first user's): "
                "Telegram offers to add detour as its proxy."
            )
            for link in links:
                para(f"{link.user} ({link.mode}): {link.link(reveal=self.revealed)}")
            if not self.revealed:
                para("The secrets are hidden: v shows them.", "dim")
            first = links[0]
            para(
                "Or Settings → Data and Storage → Proxy → Add proxy → MTProto, server "
                f"{first.host}, port {first.port}, and the user's secret.",
                "dim",
            )
        for link in self.app.status.links:
            if link.kind != "signal":
                continue
            heading("\nSignal")
            para("Open this link on the phone, or scan the code with its camera:")
            para(link.urls[0])
            parts.append(Padding(Text("\n".join(qr_rows(link.urls[0]))), (0, 0, 0, 2)))
            para(
                "or Settings → Data and storage → Proxy → Use proxy, address "
                f"{link.host}{'' if link.port == 443 else f':{link.port}'}. The phone must "
                f"resolve {link.host} to this router (docs/router.md, Signal proxy).",
            )
        heading("\nBrowsers")
        para(
            f"Firefox: Settings → Network Settings → Manual proxy → SOCKS Host {proxy.host}, "
            f"port {proxy.port}, SOCKS v5, “Proxy DNS when using SOCKS v5” on."
        )
        self._pac(para)
        heading("\nCommand line")
        para(f"curl --socks5-hostname {proxy.address} https://web.telegram.org/")
        para(f"export https_proxy=http://{proxy.address} http_proxy=http://{proxy.address}")
        if self.app.notes:
            heading("\nThis run")
            for note in self.app.notes:
                para(note)
        return Group(*parts)

    def _pac(self, para: Callable[..., None]) -> None:
        """The status API's PAC file: its URL when the API runs, how to turn it on if not."""
        api = self.app.status.listening("api")
        if not api:
            para(
                "Or a PAC file (only the services through detour): turn on the status API, "
                '[api] listen = "127.0.0.1:9080" in your config, then use '
                "http://127.0.0.1:9080/proxy.pac (docs/status-api.md).",
                "dim",
            )
            return
        url = pac_url(api[0].host, api[0].port, self.app.proxy)
        para(f"Or automatic proxy configuration (only the services through detour): {url}")
        config = self.app.engine.config.api
        if "/proxy.pac" not in config.public and not self.app.proxy.only_this_machine:
            para(
                'Other machines need [api] public = ["/proxy.pac"]: browsers send no token.',
                "dim",
            )
