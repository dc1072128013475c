"""`detour add LINK`: a link people are handed (ss://, vless://, tg://socks, a bridge line,
...) as a named route in the user's config file, and in the detour running from that file.

    detour add -c my.toml 'ss://...#Home'             a route named Home
    detour add -c my.toml --name vps 'vless://...'    a route named vps
    detour add -c my.toml --service telegram '...'    ... tried first for Telegram
    detour add -c my.toml --dry-run '...'             what it is and what would be added

The file is never rewritten: the route is a `[[route]]` block appended at its end (and,
with --service, a `[[service]]` block naming it, or the route's name put at the front of
that service's one-line `routes` list when the file already has that service). The new
text is read as a config before it is written, and written atomically (a new file renamed
over the old, its mode kept; a new file gets 0600: links hold secrets). A detour running
from the file is told to read it again (helper/instances.py), so the route is used at once.

Everything shown hides the link's secrets; the file alone holds them.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transports import redact
from transports.links import LinkError, Recognised, recognise_link

from .config import ConfigError, load_layers
from .config.file import parse_toml
from .config.load import layer_data, read_config_file
from .config.subscription import hide_url
from .config.values import entry_name

__all__ = ["AddError", "Addition", "add_command", "add_parser", "plan_addition", "toml_string"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class AddError(ValueError):
    """Why a link cannot be added: one line, no secret."""


@dataclass(frozen=True)
class Addition:
    """What `detour add` would do to a file: the link recognised, the route's name, the
    file's new text and the block appended (`shown_block`: the same with secrets hidden)."""

    link: Recognised
    name: str
    text: str
    shown_block: str
    service: str | None = None


def toml_string(value: str) -> str:
    """A TOML basic string for any text (control characters escaped)."""
    out = ['"']
    for ch in value:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def plan_addition(
    text: str, path: Path, link_text: str, name: str | None = None, service: str | None = None
) -> Addition:
    """The file's text with the link added as a route (checked as a config); AddError
    names what stands in the way. No I/O."""
    try:
        link = recognise_link(link_text)
    except LinkError as exc:
        raise AddError(str(exc)) from None
    if link.kind == "subscription":
        return _plan_subscription(text, path, link, name, service)
    if link.kind == "mtproxy" and service is None:
        service = "telegram"  # an MTProto proxy carries nothing else
    route_name = name or link.name
    try:
        entry_name(route_name)
    except ValueError as exc:
        raise AddError(f"--name: {exc}") from None
    current = _load(text, path)
    names = [route.name for route in current.config.routes]
    if route_name in names:
        raise AddError(
            f"a route named {route_name!r} exists already (give another with --name NAME)"
        )
    block = (
        f"\n# {link.kind} route added by `detour add`\n"
        f"[[route]]\nname = {toml_string(route_name)}\n"
    )
    chain_line = f"chain = {toml_string(link.chain)}\n"
    shown = block + f"chain = {toml_string(redact(link.chain))}\n"
    block += chain_line
    new_text = _joined(text, block)
    if service is not None:
        new_text, service_shown = _with_service(new_text, current, service, route_name)
        shown += service_shown
    _check(new_text, path, route_name)
    return Addition(link, route_name, new_text, shown, service)


def _plan_subscription(
    text: str, path: Path, link: Recognised, name: str | None, service: str | None
) -> Addition:
    """A subscription URL as a `[[subscription]]` block (docs/subscriptions.md)."""
    pool = name or link.name
    try:
        entry_name(pool)
    except ValueError as exc:
        raise AddError(f"--name: {exc}") from None
    current = _load(text, path)
    taken = [r.name for r in current.config.routes] + [s.name for s in current.config.subscriptions]
    if pool in taken:
        raise AddError(f"a route or subscription named {pool!r} exists already (--name NAME)")
    if service is not None and service not in [s.name for s in current.config.services]:
        known = ", ".join(s.name for s in current.config.services)
        raise AddError(f"--service: no service named {service!r} (services: {known})")
    head = f"\n# subscription added by `detour add`\n[[subscription]]\nname = {toml_string(pool)}\n"
    tail = f"services = [{toml_string(service)}]\n" if service is not None else ""
    block = head + f"url = {toml_string(link.url)}\n" + tail
    shown = head + f"url = {toml_string(hide_url(link.url))}\n" + tail
    new_text = _joined(text, block)
    try:
        layer_data(parse_toml(new_text, str(path)), str(path), path.parent)
    except ConfigError as exc:
        raise AddError(f"the subscription would not fit in {path}: {_first(exc)}") from None
    return Addition(link, pool, new_text, shown, service)


def _joined(text: str, block: str) -> str:
    if text and not text.endswith("\n"):
        text += "\n"
    return text + block


def _load(text: str, path: Path) -> Any:
    try:
        if not text.strip():
            return load_layers(None)
        return layer_data(parse_toml(text, str(path)), str(path), path.parent)
    except ConfigError as exc:
        raise AddError(
            f"{path} has config problems already; fix them first ({_first(exc)})"
        ) from None


def _first(exc: ConfigError) -> str:
    problems = getattr(exc, "problems", None) or [str(exc)]
    return redact(str(problems[0])).splitlines()[0]


def _check(new_text: str, path: Path, route_name: str) -> None:
    """The new text must read as a config that has the route."""
    try:
        loaded = layer_data(parse_toml(new_text, str(path)), str(path), path.parent)
    except ConfigError as exc:
        raise AddError(f"the route would not fit in {path}: {_first(exc)}") from None
    if route_name not in [route.name for route in loaded.config.routes]:
        raise AddError(f"the route {route_name!r} would not be used (its `when` condition)")


_HEADER = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\"' -]+?)\s*\]\]?\s*(#.*)?$")
_ROUTES_LINE = re.compile(r"^(\s*routes\s*=\s*\[)(.*)\]\s*(#.*)?$")


def _with_service(text: str, current: Any, service: str, route_name: str) -> tuple[str, str]:
    """The text with `route_name` first in `service`'s routes: a new `[[service]]` block
    (the built-in service's other routes after it), or the name put at the front of the
    file's own one-line `routes` list of that service."""
    known = [s.name for s in current.config.services]
    if service not in known:
        raise AddError(f"--service: no service named {service!r} (services: {', '.join(known)})")
    lines = text.splitlines(keepends=True)
    start = _service_block(lines, service)
    if start is None:
        block = (
            f"\n[[service]]  # {route_name} first, then the routes it had\n"
            f"name = {toml_string(service)}\n"
            f'routes = [{toml_string(route_name)}, "..."]\n'
        )
        return _joined(text, block), block
    end = start + 1
    while end < len(lines) and not _HEADER.match(lines[end]):
        end += 1
    for index in range(start + 1, end):
        match = _ROUTES_LINE.match(lines[index].rstrip("\n"))
        if match:
            inside = match.group(2).strip()
            # An empty list means every route: the new one first, then the rest.
            joined = toml_string(route_name) + (", " + inside if inside else ', "..."')
            line = f"{match.group(1)}{joined}]" + (f"  {match.group(3)}" if match.group(3) else "")
            lines[index] = line + "\n"
            return "".join(lines), f"(service {service}: {line.strip()})\n"
        if re.match(r"^\s*routes\s*=", lines[index]):
            raise AddError(
                f"--service: the [[service]] {service!r} in the file writes its routes over "
                f"several lines; put {route_name!r} in them yourself"
            )
    # The file's block has no routes key: one is added after its header.
    line = f'routes = [{toml_string(route_name)}, "..."]\n'
    lines.insert(start + 1, line)
    return "".join(lines), f"(service {service}: {line.strip()})\n"


def _service_block(lines: list[str], service: str) -> int | None:
    """The line of the file's `[[service]]` header whose block has `name = SERVICE`."""
    for index, line in enumerate(lines):
        if not re.match(r"^\s*\[\[\s*service\s*\]\]", line):
            continue
        for inner in lines[index + 1 :]:
            if _HEADER.match(inner):
                break
            match = re.match(r"^\s*name\s*=\s*(\"[^\"]*\"|'[^']*')", inner)
            if match and match.group(1)[1:-1] == service:
                return index
    return None


def write_atomically(path: Path, text: str, expected: str | None) -> None:
    """Replace `path` with `text` through a new file in its directory (mode and owner
    kept; 0600 for a new file). `expected`: the text it had when read (None: it did not
    exist); a file changed meanwhile is left alone. A symbolic link's target is the file
    written (the link stays); a device, FIFO or directory is refused, never replaced."""
    path = Path(os.path.realpath(path))
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISREG(path.stat().st_mode):
            raise AddError(f"{path} is not a regular file; nothing written")
    try:
        now = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        now = None
    if now != expected:
        raise AddError(f"{path} changed while detour add ran; nothing written, run it again")
    try:
        info = path.stat()
        mode, owner = info.st_mode & 0o7777, (info.st_uid, info.st_gid)
    except FileNotFoundError:
        mode, owner = 0o600, None
    directory = path.parent
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        if owner is not None and hasattr(os, "chown"):
            with contextlib.suppress(OSError):
                os.chown(temporary, *owner)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    with contextlib.suppress(OSError):
        flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
        fd = os.open(directory, flags)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def add_command(
    path: str | None,
    link_text: str,
    name: str | None = None,
    service: str | None = None,
    dry_run: bool = False,
    reload: bool = True,
) -> int:
    if path is None:
        print(
            "detour add: give the config file to add the route to: detour add -c FILE LINK",
            file=sys.stderr,
        )
        return EXIT_USAGE
    file = Path(path)
    try:
        if os.path.exists(file) and not os.path.isfile(file):  # a device, FIFO, directory
            raise AddError(f"{file} is not a regular file (detour add appends to a config file)")
        try:
            expected: str | None = read_config_file(file)
        except ConfigError as exc:
            if os.path.exists(file):  # (False too where it cannot be looked up)
                raise AddError(_first(exc)) from None
            expected = None
        addition = plan_addition(expected or "", file, link_text, name, service)
    except AddError as exc:
        print(f"detour add: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{addition.link.kind}: {addition.link.shown}")
    if addition.link.note:
        print(f"note: {addition.link.note}")
    verb = "would add to" if dry_run else "adding to"
    print(f"{verb} {file}:")
    print(addition.shown_block.rstrip("\n"))
    if dry_run:
        return EXIT_OK
    try:
        write_atomically(file, addition.text, expected)
    except AddError as exc:
        print(f"detour add: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:
        print(f"detour add: cannot write {file}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILURE
    what = "subscription" if addition.link.kind == "subscription" else "route"
    print(f"added {what} {addition.name!r}")
    if reload:
        from .instances import reload_instances

        pids = reload_instances(file)
        if pids:
            print(f"the detour running from {file} (pid {', '.join(map(str, pids))}) reloads it")
        else:
            print(f"no detour runs from {file} now: the route is used when one starts")
    return EXIT_OK


def add_parser(sub: Any) -> None:
    """`detour add` on the command line's subparsers."""
    add = sub.add_parser(
        "add",
        help="add a link (ss://, vless://, tg://socks, a bridge line, ...) as a route",
        description="Recognise a link (ss://, ssconf://, vless://, vmess://, trojan://, "
        "socks5://, socks4://, http://, tg://socks and t.me/socks, a relay access key, an "
        "obfs4/webtunnel bridge line followed by '| PROXY', a subscription's https:// URL), "
        "show it with its secrets hidden, and append it to the config file as a named route "
        "(or [[subscription]]); a detour running from that file reads it again.",
    )
    add.add_argument("link", metavar="LINK", help="the link (quote it: it holds '&', '#')")
    add.add_argument(
        "-c", "--config", metavar="FILE", dest="add_config", help="config file to add to"
    )
    add.add_argument("--name", metavar="NAME", help="the route's name (default: from the link)")
    add.add_argument(
        "--service",
        metavar="NAME",
        help="try the route (or the subscription's pool) first for this service "
        "(telegram, whatsapp, signal, ...)",
    )
    add.add_argument(
        "--dry-run", action="store_true", help="show what would be added; change nothing"
    )
    add.add_argument(
        "--no-reload", action="store_true", help="do not tell a running detour to reload"
    )
