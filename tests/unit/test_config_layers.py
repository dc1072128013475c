"""A config file on the built-in config (helper/config/load.py, docs/configuration.md
"Layering"): keys replace the built-in ones, services and routes merge by name, new routes go
after (or before) the built-in ones, `"..."` keeps a service's other routes, `[base] config =
"none"` starts from nothing; problems name the file's own key paths."""

from __future__ import annotations

import dataclasses
import textwrap
import tomllib
from pathlib import Path

import pytest

from helper.config import ConfigError, Loaded, layer_data, load_config, parse_config
from helper.relay.config import parse_relay_config
from tests.support.origins import TestCA
from transports import Endpoint

BUILT_IN = load_config()
BUILT_IN_SERVICES = [s.name for s in BUILT_IN.services]
# The built-in routes grow (a cascade of serverless routes); the rules hold for any list.
BUILT_IN_ROUTES = [r.name for r in BUILT_IN.routes]

ROOT = Path(__file__).resolve().parents[2]


def toml_example(page: Path, after: str) -> str:
    """The first ```toml block on `page` after the line `after`."""
    text = page.read_text(encoding="utf-8")
    return text.split(after, 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]


README_EXAMPLE = toml_example(ROOT / "README.md", "## Your own configuration")


def layered(text: str, base: Path | None = None) -> Loaded:
    return layer_data(tomllib.loads(textwrap.dedent(text)), "my.toml", base)


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        layered(text)
    assert err.value.source == "my.toml"
    return err.value.problems


def test_the_built_in_config_is_what_a_file_builds_on() -> None:
    assert BUILT_IN_SERVICES == ["telegram", "whatsapp", "signal"]
    assert BUILT_IN_ROUTES[0] == "direct"


def test_a_file_with_only_listen_keeps_everything_else() -> None:
    loaded = layered('[listen]\nmixed = "127.0.0.1:1081"\nidle_timeout = "1m"\n')
    config = loaded.config
    assert config.listen.mixed == Endpoint("127.0.0.1", 1081)
    assert config.listen.idle_timeout == 60.0
    assert config.listen.handshake_timeout == BUILT_IN.listen.handshake_timeout
    assert config.routes == BUILT_IN.routes
    assert config.services == BUILT_IN.services
    assert (config.dns, config.probe, config.default_policy) == (
        BUILT_IN.dns,
        BUILT_IN.probe,
        BUILT_IN.default_policy,
    )
    assert config.source == "my.toml"
    assert [layer.name for layer in loaded.layers] == ["built-in", "my.toml"]


def test_an_empty_file_is_the_built_in_config() -> None:
    assert layered("").config == dataclasses.replace(BUILT_IN, source="my.toml")


def test_the_readme_example_keeps_whatsapp_and_signal() -> None:
    config = layered(README_EXAMPLE).config
    assert [s.name for s in config.services] == BUILT_IN_SERVICES
    telegram, whatsapp, signal = config.services
    # The file's keys replace the built-in telegram's; the keys it does not give stay.
    assert telegram.domains == ("telegram.org", "t.me", "web.telegram.org")
    assert len(telegram.cidrs) == 2
    assert telegram.probes == BUILT_IN.services[0].probes
    assert telegram.routes == ("my-vps", "direct")
    assert (whatsapp, signal) == BUILT_IN.services[1:]
    # "direct" is a built-in route (same name: it keeps its place); my-vps joins after them.
    assert [r.name for r in config.routes] == [*BUILT_IN_ROUTES, "my-vps"]
    assert config.default_policy == "direct"


def test_the_configuration_pages_first_example() -> None:
    example = toml_example(ROOT / "docs" / "configuration.md", "# Configuration")
    config = layered(example).config
    assert [r.name for r in config.routes] == [*BUILT_IN_ROUTES, "my-vps"]
    assert [s.name for s in config.services] == BUILT_IN_SERVICES
    assert config.services[0].routes == ("my-vps", *BUILT_IN_ROUTES)
    assert config.services[0].domains == BUILT_IN.services[0].domains


def test_new_routes_go_before_the_built_in_ones_when_the_file_says_so() -> None:
    text = '[[route]]\nname = "my-vps"\nchain = "socks5://203.0.113.7:1080"\n'
    assert [r.name for r in layered(text).config.routes] == [*BUILT_IN_ROUTES, "my-vps"]
    before = layered('[base]\nroutes = "before"\n' + text).config
    assert [r.name for r in before.routes] == ["my-vps", *BUILT_IN_ROUTES]
    assert before.default_policy == "direct"  # the built-in's [default] policy


def test_a_route_with_a_built_in_name_changes_only_the_keys_it_gives() -> None:
    config = layered('[[route]]\nname = "direct"\ntimeout = "20s"\n').config
    assert [r.name for r in config.routes] == BUILT_IN_ROUTES
    direct = config.route("direct")
    assert direct.timeout == 20.0
    assert direct.chain == BUILT_IN.routes[0].chain  # no chain needed: the built-in's


def test_a_service_with_a_built_in_name_changes_only_the_keys_it_gives() -> None:
    config = layered('[[service]]\nname = "signal"\nports = [443]\n').config
    signal = config.services[2]
    assert signal.ports == frozenset({443})
    assert signal.domains == BUILT_IN.services[2].domains
    assert [s.name for s in config.services] == BUILT_IN_SERVICES


def test_new_services_go_first_so_they_win_over_the_built_in_ones() -> None:
    config = layered('[[service]]\nname = "telegram-web"\ndomains = ["web.telegram.org"]\n').config
    assert [s.name for s in config.services] == ["telegram-web", *BUILT_IN_SERVICES]


@pytest.mark.parametrize(
    ("routes", "expected"),
    [
        pytest.param('["my-vps", "..."]', ("my-vps", *BUILT_IN_ROUTES, "tor"), id="mine-first"),
        pytest.param('["...", "my-vps"]', (*BUILT_IN_ROUTES, "tor", "my-vps"), id="mine-last"),
        pytest.param('["tor", "...", "my-vps"]', ("tor", *BUILT_IN_ROUTES, "my-vps"), id="around"),
        pytest.param('["my-vps"]', ("my-vps",), id="only-mine"),
    ],
)
def test_dots_stand_for_the_routes_a_service_would_have(routes: str, expected: tuple) -> None:
    text = (
        '[[route]]\nname = "my-vps"\nchain = "socks5://203.0.113.7:1080"\n'
        '[[route]]\nname = "tor"\nchain = "socks5://127.0.0.1:9050"\n'
        f'[[service]]\nname = "telegram"\nroutes = {routes}\n'
    )
    assert layered(text).config.services[0].routes == expected


def test_dots_keep_the_routes_the_built_in_service_chose() -> None:
    below = parse_config(
        '[[route]]\nname = "direct"\nchain = "direct"\n'
        '[[route]]\nname = "frag"\nchain = "tlsfrag:sni"\n'
        '[[service]]\nname = "chat"\ndomains = ["chat.example"]\nroutes = ["frag"]\n'
    )
    data = tomllib.loads(
        '[[route]]\nname = "my-vps"\nchain = "socks5://203.0.113.7:1080"\n'
        '[[service]]\nname = "chat"\nroutes = ["my-vps", "..."]\n'
    )
    built_in = Loaded(below, ())
    assert layer_data(data, "my.toml", built_in=built_in).config.services[0].routes == (
        "my-vps",
        "frag",
    )


def test_dots_in_a_whole_config_are_every_other_route() -> None:
    config = parse_config(
        '[[route]]\nname = "a"\nchain = "direct"\n[[route]]\nname = "b"\nchain = "direct"\n'
        '[[service]]\nname = "x"\ndomains = ["x.example"]\nroutes = ["b", "..."]\n'
    )
    assert config.services[0].routes == ("b", "a")


def test_start_from_nothing() -> None:
    text = '[base]\nconfig = "none"\n[[route]]\nname = "only"\nchain = "direct"\n'
    loaded = layered(text)
    assert [r.name for r in loaded.config.routes] == ["only"]
    assert loaded.config.services == ()
    assert [layer.name for layer in loaded.layers] == ["my.toml"]
    assert problems('[base]\nconfig = "none"\n[listen]\nmixed = "127.0.0.1:1081"\n') == [
        'route: at least one [[route]] is needed (e.g. name = "direct", chain = "direct")'
    ]


def test_a_whole_config_is_parse_configs_meaning() -> None:
    """parse_config reads its text as a whole, [base] or not (the loader layers files)."""
    config = parse_config('[base]\nconfig = "none"\n[[route]]\nname = "x"\nchain = "direct"\n')
    assert config.services == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            '[base]\nconfig = "nothing"\n',
            "base.config: 'nothing' is not one of: built-in, none",
            id="base-config",
        ),
        pytest.param(
            '[base]\nroutes = "first"\n',
            "base.routes: 'first' is not one of: after, before",
            id="base-routes",
        ),
        pytest.param(
            '[base]\nconfg = "none"\n',
            "base.confg: unknown key (did you mean 'config'? valid: config, routes, remove_routes",
            id="base-typo",
        ),
        pytest.param('base = "none"\n', "base: expected a table", id="base-not-a-table"),
        pytest.param(
            '[[service]]\nname = "telegram"\nroutes = ["my-vps"]\n',
            "service[0].routes[0]: no route named 'my-vps' (routes: direct, ",
            id="service-route-unknown",
        ),
        pytest.param(
            '[[service]]\nname = "telegram"\nroutes = ["...", "direct", "..."]\n',
            "service[0].routes[2]: '...' may appear once",
            id="dots-twice",
        ),
        pytest.param(
            '[[route]]\nname = "x"\nchain = "direct"\n[[route]]\nname = "x"\nchain = "direct"\n',
            "route[1].name: route 'x' is defined twice",
            id="route-twice-in-the-file",
        ),
        pytest.param(
            '[[route]]\nname = "direct"\nchain = "direct"\n'
            '[[route]]\nname = "direct"\ntimeout = "1s"\n',
            "route[1].name: route 'direct' is defined twice",
            id="built-in-route-twice-in-the-file",
        ),
        pytest.param(
            '[[route]]\nname = "mine"\n', "route[0].chain: is required", id="new-route-no-chain"
        ),
        pytest.param(
            '[[service]]\nname = "new"\n',
            "service[0]: service 'new' needs domains or cidrs",
            id="new-service-matches-nothing",
        ),
        pytest.param(
            '[[service]]\nname = "signal"\ndomains = []\n',
            "service[0]: service 'signal' needs domains or cidrs",
            id="built-in-service-emptied",
        ),
        pytest.param(
            '[listen]\nmixed = "0.0.0.0:1080"\n',
            "listen.mixed: 0.0.0.0:1080 is reachable from other machines",
            id="exposure",
        ),
        pytest.param(
            '[default]\npolicy = "tor"\n',
            "default.policy: no route named 'tor' (routes: direct, ",
            id="policy",
        ),
        pytest.param(
            '[whatsapp_proxy]\nlisten = "192.168.1.1"\n',
            "whatsapp_proxy.listen: 192.168.1.1 is reachable from other machines",
            id="whatsapp-exposure",
        ),
    ],
)
def test_problems_name_the_files_own_keys(text: str, expected: str) -> None:
    found = problems(text)
    assert any(p.startswith(expected) for p in found), found


def test_the_files_keys_reach_the_checks_across_sections() -> None:
    """The exposure rule sees the merged [listen]: the file's allow-list with the built-in
    address, and the file's address with an allow-list it gives."""
    config = layered('[listen]\nmixed = "0.0.0.0:1080"\nallow = ["192.168.1.0/24"]\n').config
    assert config.listen.mixed == Endpoint("0.0.0.0", 1080)
    wa = layered('[listen]\nallow = ["192.168.1.0/24"]\n[whatsapp_proxy]\nlisten = "192.168.1.1"\n')
    assert wa.config.whatsapp_proxy.listen == "192.168.1.1"
    assert wa.config.listen.mixed == BUILT_IN.listen.mixed


def test_relative_paths_are_the_files(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "ca")
    path = tmp_path / "my.toml"
    path.write_text(f'[tls]\nextra_ca = ["{ca.ca_path.relative_to(tmp_path)}"]\n')
    config = load_config(path)
    assert config.tls.extra_ca == (ca.ca_path,)
    assert config.services == BUILT_IN.services


def test_loading_again_layers_the_edited_file_again(tmp_path: Path) -> None:
    """What a reload (SIGHUP, ctrl+r) does: the file read again, on the built-in config."""
    path = tmp_path / "my.toml"
    path.write_text('[probe]\ninterval = "1m"\n')
    assert load_config(path).probe.interval == 60.0
    path.write_text('[[route]]\nname = "tor"\nchain = "socks5://127.0.0.1:9050"\n')
    again = load_config(path)
    assert again.probe == BUILT_IN.probe
    assert [r.name for r in again.routes] == [*BUILT_IN_ROUTES, "tor"]
    assert [s.name for s in again.services] == BUILT_IN_SERVICES


def test_a_copy_of_the_built_in_config_stands_alone(tmp_path: Path) -> None:
    """`detour config default > my.toml`, then a service removed: it stays removed."""
    text = (ROOT / "config" / "default.toml").read_text()
    start = text.index('[[service]]\nname = "signal"')
    path = tmp_path / "my.toml"
    path.write_text(text[:start])
    assert [s.name for s in load_config(path).services] == ["telegram", "whatsapp"]


# --- taking built-in routes and services out: [base] remove_routes, remove_services -----


def test_a_file_removes_built_in_routes_and_services() -> None:
    config = layered(
        '[base]\nremove_routes = ["local-tor", "fake"]\nremove_services = ["signal"]\n'
    ).config
    assert [r.name for r in config.routes] == [
        name for name in BUILT_IN_ROUTES if name not in ("local-tor", "fake")
    ]
    assert [s.name for s in config.services] == [n for n in BUILT_IN_SERVICES if n != "signal"]
    assert config.default_policy == BUILT_IN.default_policy


def test_a_removed_route_leaves_the_services_that_listed_it() -> None:
    built_in_with_lists = layered(
        '[[service]]\nname = "telegram"\nroutes = ["tgws", "direct"]\n'
    ).config
    loaded = layer_data(
        tomllib.loads('[base]\nremove_routes = ["tgws"]\n'),
        "my.toml",
        built_in=Loaded(built_in_with_lists, ()),
    )
    telegram = next(s for s in loaded.config.services if s.name == "telegram")
    assert telegram.routes == ("direct",)


def test_removing_the_default_policys_route_chooses_it_again() -> None:
    config = layered('[base]\nremove_routes = ["direct"]\n').config
    assert "direct" not in [r.name for r in config.routes]
    assert config.default_policy == config.routes[0].name


def test_the_files_own_routes_and_services_can_use_what_is_left() -> None:
    config = layered(
        '[base]\nremove_services = ["telegram"]\n'
        '[[service]]\nname = "telegram"\ndomains = ["t.me"]\n'
    ).config
    assert [s.name for s in config.services] == ["telegram", "whatsapp", "signal"]
    assert config.services[0].domains == ("t.me",)  # a new service, nothing built-in kept


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[base]\nremove_routes = ["nope"]\n',
            "base.remove_routes[0]: no built-in route named 'nope' (routes: direct,",
        ),
        (
            '[base]\nremove_services = ["icq"]\n',
            "base.remove_services[0]: no built-in service named 'icq' (services: ",
        ),
        (
            '[base]\nremove_routes = ["fake"]\n[[service]]\nname = "x"\n'
            'domains = ["x.test"]\nroutes = ["fake"]\n',
            "service[0].routes[0]: no route named 'fake'",
        ),
        (
            '[base]\nconfig = "none"\nremove_routes = ["direct"]\n'
            '[[route]]\nname = "a"\nchain = "direct"\n',
            'base.remove_routes: nothing to remove: the file stands alone ([base] config = "none")',
        ),
        ('[base]\nremove_routes = "direct"\n', "base.remove_routes: expected a list"),
    ],
)
def test_removing_what_is_not_there_names_the_key(text: str, expected: str) -> None:
    assert any(problem.startswith(expected) for problem in problems(text)), problems(text)


def test_show_says_what_a_file_removed() -> None:
    from helper.config.show import show

    text = show(layered('[base]\nremove_routes = ["fake"]\nremove_services = ["signal"]\n'))
    assert '# [[route]] "fake" (built-in): removed by my.toml ([base] remove_routes)' in text
    assert '# [[service]] "signal" (built-in): removed by my.toml ([base] remove_services)' in text
    assert 'name = "fake"' not in text and 'name = "signal"' not in text


def test_a_relay_can_remove_a_built_in_service(tmp_path: Path) -> None:
    config = relay('[base]\nremove_services = ["telegram"]\n', tmp_path)
    assert [s.name for s in config.services] == [n for n in BUILT_IN_SERVICES if n != "telegram"]


# --- the relay's [[service]] tables -------------------------------------------------------


def relay(extra: str, tmp_path: Path):
    return parse_relay_config(
        f'[relay]\nstate = "{tmp_path}"\n' + textwrap.dedent(extra), "relay.toml", tmp_path
    )


def test_the_relays_services_build_on_the_built_in_ones(tmp_path: Path) -> None:
    assert [s.name for s in relay("", tmp_path).services] == BUILT_IN_SERVICES
    added = relay('[[service]]\nname = "matrix"\ndomains = ["matrix.org"]\n', tmp_path)
    assert [s.name for s in added.services] == ["matrix", *BUILT_IN_SERVICES]
    alone = relay(
        '[base]\nconfig = "none"\n[[service]]\nname = "matrix"\ndomains = ["matrix.org"]\n',
        tmp_path,
    )
    assert [s.name for s in alone.services] == ["matrix"]
    with pytest.raises(ConfigError) as err:
        relay('[base]\nconfig = "none"\n', tmp_path)
    assert err.value.problems == [
        'service: destinations.allow = "services" needs a [[service]] table'
    ]


@pytest.mark.parametrize(
    "public", ["169.254.0.0/15", "0.0.0.0/0", "224.0.0.0/3", "fe80::/9", "64:ff9b::a9fe:0/112"]
)
def test_a_relay_never_lets_link_local_or_multicast_stand_for_the_internet(
    public: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as err:
        relay(f'[destinations]\npublic = ["{public}"]\n', tmp_path)
    assert "destinations.public" in str(err.value) and "cannot stand for the internet" in str(
        err.value
    )


def test_a_relay_lets_loopback_and_private_ranges_stand_for_the_internet(tmp_path: Path) -> None:
    config = relay('[destinations]\npublic = ["127.0.0.0/8", "10.77.0.0/16"]\n', tmp_path)
    assert [str(n) for n in config.public_networks] == ["127.0.0.0/8", "10.77.0.0/16"]
