"""Loading a config: the built-in one, or a file."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .file import Config, parse_config
from .schema import ConfigError
from .secrets import warn_if_readable


def default_config_text() -> str:
    """The built-in configuration: packaged as helper/_config/default.toml, or read from
    config/default.toml when running from a source checkout."""
    packaged = resources.files("helper").joinpath("_config", "default.toml")
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    source = Path(__file__).resolve().parents[2] / "config" / "default.toml"
    return source.read_text(encoding="utf-8")


def read_config_file(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"no such file: {file}"], str(file)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"cannot read: {exc}"], str(file)) from None


def load_config(path: str | Path | None = None) -> Config:
    """Load a config file, or the built-in one when `path` is None."""
    if path is None:
        return parse_config(default_config_text(), "built-in config")
    file = Path(path)
    config = parse_config(read_config_file(file), str(file), file.parent)
    warn_if_readable(file, config)
    return config
