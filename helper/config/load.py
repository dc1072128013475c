"""Loading a config: the built-in one, or a file layered on it.

A file given with `-c` builds on the built-in config unless it says `[base] config = "none"`
(docs/configuration.md, "Layering"): the built-in config is read first, then the file with
the built-in values as its defaults (file.py, `below`). Both are read again on every load, so
a reload (SIGHUP, ctrl+r) layers the edited file on the built-in config again.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .base import BUILT_IN, NONE
from .file import Config, parse_config_data, parse_toml
from .schema import ConfigError
from .secrets import warn_if_readable

BUILT_IN_SOURCE = "built-in config"


@dataclass(frozen=True)
class Layer:
    """One file of a config, as read."""

    name: str  # "built-in", or the file's path as given
    data: dict[str, Any]  # its TOML


@dataclass(frozen=True)
class Loaded:
    """A config and the files it was made from, the lowest first."""

    config: Config
    layers: tuple[Layer, ...]


def default_config_text() -> str:
    """The built-in configuration: packaged as helper/_config/default.toml, or read from
    config/default.toml when running from a source checkout."""
    packaged = resources.files("helper").joinpath("_config", "default.toml")
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    source = Path(__file__).resolve().parents[2] / "config" / "default.toml"
    return source.read_text(encoding="utf-8")


# A config is a few KiB; what is larger is no config (`-c /dev/zero` would fill the memory).
MAX_CONFIG_FILE = 4 * 1024 * 1024


def read_config_file(file: Path) -> str:
    """The text of a config file: UTF-8, at most MAX_CONFIG_FILE bytes; ConfigError says why
    not. A pipe a program writes to (`-c <(...)`) and a device such as /dev/null are read
    too; a named pipe nothing writes to and a terminal, which would wait for ever, are not.
    """
    try:
        data = _read_at_most(file, MAX_CONFIG_FILE + 1)
    except FileNotFoundError:
        raise ConfigError([f"no such file: {file}"], str(file)) from None
    except IsADirectoryError:
        raise ConfigError(["is a directory, not a config file"], str(file)) from None
    except _NotAConfig as exc:
        raise ConfigError([str(exc)], str(file)) from None
    except OSError as exc:
        raise ConfigError([f"cannot read: {exc}"], str(file)) from None
    if len(data) > MAX_CONFIG_FILE:
        limit = MAX_CONFIG_FILE // (1024 * 1024)
        raise ConfigError([f"larger than {limit} MiB: not a config file"], str(file))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        byte = data[exc.start]
        raise ConfigError(
            [f"not UTF-8 text (byte 0x{byte:02x} on line {line}): not a TOML config file"],
            str(file),
        ) from None
    # Line ends as a text read has them (CRLF and CR as LF), as `detour add` compares them.
    return text.replace("\r\n", "\n").replace("\r", "\n")


class _NotAConfig(OSError):
    """A file that is no config whatever it holds (the message says what it is)."""


def _read_at_most(file: Path, limit: int) -> bytes:
    """Up to `limit` bytes of `file`. Opened without waiting: opening a named pipe waits for a
    program to write to it, which may never come. A pipe without a writer, or one whose writer
    ended having written nothing (a reload of `-c <(...)`), is refused rather than read as an
    empty config; a terminal is refused rather than waited on."""
    nonblocking = getattr(os, "O_NONBLOCK", 0)  # (not on Windows, which has no named pipes)
    fd = os.open(file, os.O_RDONLY | nonblocking | getattr(os, "O_CLOEXEC", 0))
    with open(fd, "rb", buffering=0, closefd=True) as handle:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(file)
        if os.isatty(fd):
            raise _NotAConfig("is a terminal, not a config file")
        first = b""
        if stat.S_ISFIFO(mode) and nonblocking:
            try:
                first = os.read(fd, min(limit, 65536))
            except BlockingIOError:  # a program writes to it, not yet: wait for it
                pass
            else:
                if not first:
                    raise _NotAConfig(
                        "is a pipe that nothing writes to: not a config file (a program "
                        "must be writing to it already, as with -c <(...))"
                    )
        if nonblocking:
            os.set_blocking(fd, True)
        chunks = [first]
        size = len(first)
        while size < limit:
            chunk = handle.read(limit - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)


def load_layers(path: str | Path | None = None) -> Loaded:
    """The built-in config when `path` is None; else the file at `path`, on the built-in
    config unless it says `[base] config = "none"`."""
    built_in = Layer(BUILT_IN, parse_toml(default_config_text(), BUILT_IN_SOURCE))
    below = parse_config_data(built_in.data, BUILT_IN_SOURCE)
    if path is None:
        return Loaded(below, (built_in,))
    if not str(path).strip():
        raise ConfigError(["the config file's name is empty"], "-c")
    file = Path(path)
    return layer_data(parse_toml(read_config_file(file), str(file)), str(file), file.parent)


def layer_data(
    data: dict[str, Any], source: str, base: Path | None = None, built_in: Loaded | None = None
) -> Loaded:
    """A file's TOML (already read) on the built-in config, unless it says `[base] config =
    "none"`. Relative paths in it are taken from `base`."""
    layer = Layer(source, data)
    if not builds_on_built_in(data):
        return Loaded(parse_config_data(data, source, base), (layer,))
    built_in = built_in or load_layers()
    config = parse_config_data(data, source, base, below=built_in.config)
    return Loaded(config, (*built_in.layers, layer))


def builds_on_built_in(data: dict[str, Any]) -> bool:
    """What the file's `[base] config` says: anything but "none" builds on the built-in
    config (a value that is not a choice is reported by the reader)."""
    table = data.get("base")
    return not (isinstance(table, dict) and table.get("config") == NONE)


def load_config(path: str | Path | None = None) -> Config:
    """Load a config file (layered as `load_layers` says), or the built-in one when `path`
    is None."""
    loaded = load_layers(path)
    if path is not None:
        warn_if_readable(Path(path), loaded.config)
    return loaded.config
