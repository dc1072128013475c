"""`detour config show` (helper/config/show.py): the effective config as TOML, each key
marked with where it comes from, secrets hidden, and meaning what the config means."""

from __future__ import annotations

import dataclasses

from helper.config import load_config, load_layers, parse_config
from helper.config.show import show
from tests.unit.test_config_layers import README_EXAMPLE, layered

BUILT_IN = load_config()


def shown(text: str) -> str:
    return show(layered(text))


def test_show_marks_where_each_key_comes_from() -> None:
    text = shown(README_EXAMPLE + '[listen]\nidle_timeout = "1m"\n')
    lines = text.splitlines()
    assert lines[0] == "# The configuration detour runs with: my.toml on the built-in config."
    assert 'idle_timeout = "1m"' in text and _mark(lines, 'idle_timeout = "1m"') == "my.toml"
    assert _mark(lines, 'mixed = "127.0.0.1:1080"') == "built-in"
    assert _mark(lines, "max_connections = 1024") == "default"
    assert "[[route]]  # built-in, changed in my.toml" in lines
    assert "[[route]]  # my.toml" in lines
    assert "[[service]]  # built-in, changed in my.toml" in lines
    assert lines.count("[[service]]  # built-in") == 2  # whatsapp, signal
    assert _mark(lines, 'routes = ["my-vps", "direct"]') == "my.toml"
    assert _mark(lines, "probes = [") == "built-in"  # telegram's (the first), kept
    assert "# [api]: off (no listen address)" in lines


def test_show_hides_secrets() -> None:
    token = "0123456789abcdef-token"
    text = shown(
        README_EXAMPLE
        + '[listen]\nusers = [{ name = "alice", password = "pw-listener" }]\n'
        + f'[api]\nlisten = "127.0.0.1:9080"\ntoken = "{token}"\n'
    )
    assert "secret" not in text and "pw-listener" not in text and token not in text
    assert 'chain = "socks5://alice:***@203.0.113.7:1080"' in text
    assert 'users = [{ name = "alice", password = "***" }]' in text
    assert 'token = "***"' in text


def test_show_prints_a_config_that_means_the_same() -> None:
    loaded = layered(
        '[listen]\nmixed = "127.0.0.1:1081"\n'
        '[[service]]\nname = "x"\ncidrs = ["10.0.0.0/8"]\nroutes = ["..."]\n'
    )
    again = parse_config(show(loaded), "shown")
    assert again == dataclasses.replace(loaded.config, source="shown")


def test_show_without_a_file_is_the_built_in_config() -> None:
    text = show(load_layers())
    assert text.startswith("# The configuration detour runs with: the built-in config.")
    assert "my.toml" not in text
    assert parse_config(text) == dataclasses.replace(BUILT_IN, source="config")


def test_show_a_file_that_stands_alone() -> None:
    text = shown('[base]\nconfig = "none"\n[[route]]\nname = "x"\nchain = "direct"\n')
    assert 'my.toml alone ([base] config = "none")' in text.splitlines()[0]
    assert "built-in" not in text


def _mark(lines: list[str], start: str) -> str:
    """The origin marked on the first line that starts with `start`."""
    line = next(line for line in lines if line.startswith(start))
    return line.rsplit("  # ", 1)[1]
