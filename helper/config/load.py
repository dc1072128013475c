"""Loading a config: the built-in one, or a file layered on it.

A file given with `-c` builds on the built-in config unless it says `[base] config = "none"`
(docs/configuration.md, "Layering"): the built-in config is read first, then the file with
the built-in values as its defaults (file.py, `below`). Both are read again on every load, so
a reload (SIGHUP, ctrl+r) layers the edited file on the built-in config again.
"""

from __future__ import annotations

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
    """The text of a config file: UTF-8, at most MAX_CONFIG_FILE bytes (a pipe, as `-c
    <(...)` gives, and /dev/null are read too); ConfigError says why not."""
    try:
        with open(file, "rb") as handle:
            data = handle.read(MAX_CONFIG_FILE + 1)
    except FileNotFoundError:
        raise ConfigError([f"no such file: {file}"], str(file)) from None
    except IsADirectoryError:
        raise ConfigError(["is a directory, not a config file"], str(file)) from None
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
