"""The relay's `[limits] carriers_per_session` (helper/relay/config.py): its default, a value
read, and bad values named by their key."""

from __future__ import annotations

import pytest

from helper.config import ConfigError
from helper.relay.carriers import PER_SESSION
from helper.relay.config import parse_relay_config

BASE = '[relay]\nlisten = "127.0.0.1:8080"\nstate = "state"\n[destinations]\nallow = "any"\n'


def test_the_default_and_a_value() -> None:
    assert parse_relay_config(BASE).carriers_per_session == PER_SESSION == 16
    text = BASE + "[limits]\ncarriers_per_session = 40\n"
    assert parse_relay_config(text).carriers_per_session == 40


@pytest.mark.parametrize("value", ["2", "1001", '"many"', "true", "8.5"])
def test_bad_values_are_named(value: str) -> None:
    with pytest.raises(ConfigError, match=r"limits\.carriers_per_session: .* count of carriers"):
        parse_relay_config(BASE + f"[limits]\ncarriers_per_session = {value}\n")
