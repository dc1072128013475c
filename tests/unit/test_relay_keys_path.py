"""RelayKeys.current_path(): the secret path the relay checks at every request, read from its
file only when the file has changed."""

from __future__ import annotations

import os

import pytest

from helper.relay.keys import RelayKeys, RelayKeysError


def test_the_path_is_read_again_only_when_the_file_changes(tmp_path) -> None:
    keys = RelayKeys(tmp_path / "state")
    keys.generate()
    first = keys.current_path()
    assert first == keys.path and first.startswith("/")
    keys.path_file.write_text("/elsewhere\n")  # a new size: read again
    assert keys.current_path() == "/elsewhere"
    info = os.stat(keys.path_file)
    keys._path_seen = ((info.st_ino, info.st_mtime_ns, info.st_size), "/cached")
    assert keys.current_path() == "/cached"  # unchanged file: one stat, no read


def test_no_keys_is_said(tmp_path) -> None:
    with pytest.raises(RelayKeysError, match="keygen"):
        RelayKeys(tmp_path / "none").current_path()


@pytest.mark.parametrize("text", ["[1, 2]\n", '{"x": 5}\n', '{"x": {"token": "00"}}\n'])
def test_a_clients_file_of_the_wrong_shape_is_said_damaged(tmp_path, text: str) -> None:
    keys = RelayKeys(tmp_path / "state")
    keys.generate()
    keys.clients_file.write_text(text)
    with pytest.raises(RelayKeysError, match="is damaged: not a table of clients"):
        keys.clients()


def test_a_relay_config_that_is_not_text_is_a_config_error(tmp_path) -> None:
    from helper.config import ConfigError
    from helper.relay.config import load_relay_config

    path = tmp_path / "relay.toml"
    path.write_bytes(b"\x8a\xff\x00garbage")
    with pytest.raises(ConfigError, match="cannot read"):
        load_relay_config(path)
