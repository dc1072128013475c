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


# --- who may connect ----------------------------------------------------------------------


def _api(allow: str = "", listen_allow: tuple = ()):
    from helper.api import StatusApi

    api_config = config(f'[api]\nlisten = "127.0.0.1:0"\n{allow}').api
    return StatusApi(lambda: None, api_config, listen_allow)  # type: ignore[arg-type,return-value]


def test_the_api_allow_list_is_its_own_or_listen_allow_and_always_loopback() -> None:
    import ipaddress

    lan = (ipaddress.ip_network("192.168.1.0/24"),)
    assert _api().allow == ()  # nobody listed: everybody (the token decides)
    api = _api(listen_allow=lan)
    assert api.allow[0] == lan[0] and ipaddress.ip_network("127.0.0.0/8") in api.allow
    api = _api('allow = ["10.9.0.7/32"]', lan)
    assert [str(n) for n in api.allow] == ["10.9.0.7/32", "127.0.0.0/8", "::1/128"]
    assert any(p.startswith("api.allow[0]") for p in problems('[api]\nallow = ["x"]\n'))


def test_api_admission_keeps_loopback_apart() -> None:
    """A LAN address may hold API_PER_CLIENT connections; loopback has places of its own
    whatever the LAN holds."""
    import ipaddress

    from helper.api import API_CONNECTIONS, API_PER_CLIENT, ApiAdmission

    admission = ApiAdmission((), "listen.allow")
    lan = [f"10.0.0.{i}" for i in range(1, 20)]
    admitted = sum(
        admission.admit(f"{key}:1", key, ipaddress.ip_address(key))
        for key in lan
        for _ in range(20)
    )
    assert admitted == API_CONNECTIONS  # 8 each from 8 addresses: the total is full
    assert not admission.admit("10.0.0.1:2", "10.0.0.1", ipaddress.ip_address("10.0.0.1"))
    for _ in range(API_CONNECTIONS):
        assert admission.admit("127.0.0.1:3", "127.0.0.1", ipaddress.ip_address("127.0.0.1"))
    admission.release("127.0.0.1", handshaking=True)
    assert admission.book.open["10.0.0.1"] == API_PER_CLIENT
