"""`front:KEY;carrier=...;budget=...`: the capped mode's options, parsed and refused."""

from __future__ import annotations

import pytest

from transports.chain import ChainError, parse_chain
from transports.fronted.capped import DEFAULT_BUDGET


@pytest.fixture
def key_text(tmp_path) -> str:
    from helper.relay.keys import RelayKeys
    from transports import Endpoint

    keys = RelayKeys(tmp_path / "state")
    keys.generate()
    return keys.add_client("alice", Endpoint("127.0.0.1", 443), "cdn.test", "relay.test").encode()


def _params(text: str) -> dict:
    chain = parse_chain(text)
    return chain.layers[-1].params


def test_carrier_and_budget_are_read(key_text: str) -> None:
    params = _params(f"front:{key_text};carrier=capped;budget=8192")
    assert params["carrier"] == "capped" and params["budget"] == 8192
    assert "carrier" not in _params(f"front:{key_text}")  # auto, the dialer's default
    assert DEFAULT_BUDGET < 16 * 1024


@pytest.mark.parametrize(
    ("option", "says"),
    [
        ("carrier=short", "carrier='short'"),
        ("budget=100", "at least"),
        ("budget=lots", "budget='lots'"),
    ],
)
def test_bad_values_are_named(key_text: str, option: str, says: str) -> None:
    with pytest.raises(ChainError, match=says):
        parse_chain(f"front:{key_text};{option}")
