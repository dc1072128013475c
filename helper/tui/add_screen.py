"""`a`: paste a link, see what it is (secrets hidden), confirm, and it is a route in the
config file detour runs from, which is then read again (as `detour add` does:
helper/add_command.py, docs/add.md)."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from ..add_command import AddError, Addition, plan_addition, write_atomically
from ..config import ConfigError
from ..config.load import read_config_file

__all__ = ["AddScreen"]

PROMPT = "Paste a link (ss://, vless://, vmess://, trojan://, socks5://, tg://socks, ...)"


class AddScreen(ModalScreen[bool]):
    """Dismissed with True when a route was added (the app then reloads)."""

    BINDINGS = [  # noqa: RUF012 - Textual's declaration style
        Binding("escape", "cancel", "cancel"),
    ]

    def __init__(self, config_path: str) -> None:
        super().__init__()
        self.path = Path(config_path)
        self.addition: Addition | None = None
        self._expected: str | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="add"):
            yield Static(PROMPT, id="add-prompt")
            # Masked: a link holds its secret; what it is shows below, the secret hidden.
            yield Input(placeholder="link (hidden as you paste it)", password=True, id="add-link")
            yield Input(placeholder="route name (default: from the link)", id="add-name")
            yield Static("", id="add-result")

    def on_mount(self) -> None:
        self.query_one("#add").border_title = "Add a route (escape cancels)"
        self.query_one("#add-link", Input).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        # What was shown for the link before is not what will be added any more.
        self.addition = None

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if self.addition is not None:
            self._add(self.addition)
            return
        link = self.query_one("#add-link", Input).value
        name = self.query_one("#add-name", Input).value.strip() or None
        try:
            try:
                self._expected = read_config_file(self.path)
            except ConfigError:
                self._expected = None if not self.path.exists() else ""
                if self._expected == "":
                    raise AddError(f"cannot read {self.path}") from None
            self.addition = plan_addition(self._expected or "", self.path, link, name)
        except AddError as exc:
            self._say(Text(str(exc), style="bold red"))
            return
        lines = Text()
        lines.append(f"{self.addition.link.kind}: ", style="bold")
        lines.append(self.addition.link.shown + "\n")
        if self.addition.link.note:
            lines.append(f"note: {self.addition.link.note}\n", style="yellow")
        lines.append(f"\nto be added to {self.path}:\n", style="dim")
        lines.append(self.addition.shown_block.strip("\n") + "\n\n")
        lines.append("enter: add it and reload   escape: cancel", style="bold")
        self._say(lines)

    def _add(self, addition: Addition) -> None:
        try:
            write_atomically(self.path, addition.text, self._expected)
        except (AddError, OSError) as exc:
            self.addition = None
            self._say(Text(f"not added: {exc}", style="bold red"))
            return
        self.app.notify(f"added route {addition.name!r} to {self.path}")
        self.dismiss(True)

    def _say(self, text: Text) -> None:
        self.query_one("#add-result", Static).update(text)

    def action_cancel(self) -> None:
        self.dismiss(False)
