"""`[api]` in the configuration: off unless `listen` is set, a token required (and long
enough) where other machines can reach it, unknown keys named, the token never quoted."""

from __future__ import annotations

import textwrap

import pytest

from helper.config import ApiConfig, ConfigError, default_config_text, parse_config
from transports import Endpoint

ROUTE = '[[route]]\nname = "direct"\nchain = "direct"\n'
TOKEN = "0123456789abcdef-token"


def config(text: str):
    return parse_config(textwrap.dedent(text) + "\n" + ROUTE, "test.toml")


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        config(text)
    return err.value.problems


def test_off_by_default_and_in_the_built_in_config() -> None:
    assert config("").api == ApiConfig()
    assert config("").api.listen is None
    assert parse_config(default_config_text()).api.listen is None


def test_loopback_needs_no_token() -> None:
    api = config('[api]\nlisten = "127.0.0.1:9080"\n').api
    assert api.listen == Endpoint("127.0.0.1", 9080)
    assert api.token is None
    assert api.loopback_token is False


@pytest.mark.parametrize("address", ["0.0.0.0:9080", "192.168.1.1:9080", "[::]:9080"])
def test_an_address_other_machines_reach_needs_a_token(address: str) -> None:
    (problem,) = problems(f'[api]\nlisten = "{address}"\n')
    assert problem.startswith("api.token: required because api.listen")
    api = config(f'[api]\nlisten = "{address}"\ntoken = "{TOKEN}"\n').api
    assert api.token == TOKEN


def test_a_short_or_unprintable_token_is_refused_without_quoting_it() -> None:
    (problem,) = problems('[api]\nlisten = "0.0.0.0:9080"\ntoken = "s3cret"\n')
    assert problem.startswith("api.token: too short (6 characters; at least 16)")
    assert "s3cret" not in problem
    (problem,) = problems('[api]\ntoken = "with a space in it, long"\n')
    assert problem.startswith("api.token: use printable ASCII")
    assert "with a space" not in problem


def test_unknown_keys_and_bad_values_name_the_key() -> None:
    found = problems('[api]\nlisten = "localhost:x"\ntokn = "x"\nloopback_token = "yes"\n')
    assert any(p.startswith("api.listen:") for p in found)
    assert any("api.tokn: unknown key (did you mean 'token'?" in p for p in found)
    assert "api.loopback_token: expected true or false" in found
    assert problems("[api]\nloopback_token = true\n") == ["api.loopback_token: needs api.token"]
    assert problems('[api]\nlisten = "api.example:9080"\n')[0].startswith("api.listen:")


def test_the_token_is_not_in_the_repr() -> None:
    api = config(f'[api]\nlisten = "127.0.0.1:9080"\ntoken = "{TOKEN}"\n').api
    assert TOKEN not in repr(api)
    assert TOKEN not in repr(config(f'[api]\ntoken = "{TOKEN}"\n'))


def test_only_the_pac_and_healthz_can_be_public() -> None:
    api = config('[api]\nlisten = "127.0.0.1:9080"\npublic = ["/proxy.pac", "/healthz"]\n').api
    assert api.public == {"/proxy.pac", "/healthz"}
    (problem,) = problems('[api]\npublic = ["/status"]\n')
    assert problem == (
        'api.public[0]: \'/status\' cannot be public (these can: "/proxy.pac", "/healthz")'
    )
