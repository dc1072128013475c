"""Configuration (helper/config.py): the built-in file, values, and errors that name the key
path and what would be valid, all reported at once, never quoting a password."""

from __future__ import annotations

import ipaddress
import textwrap

import pytest

from helper.config import (
    ConfigError,
    default_config_text,
    load_config,
    parse_config,
    parse_duration,
)
from helper.services import ProbeTarget
from tests.support.origins import TestCA
from transports import Endpoint
from transports.chain import known_layers
from transports.resolver import ResolverSpec

ROUTE = '[[route]]\nname = "direct"\nchain = "direct"\n'


def config(text: str, *, route: bool = True):
    body = textwrap.dedent(text)
    return parse_config(body + ("\n" + ROUTE if route else ""), "test.toml")


def problems(text: str, *, route: bool = True) -> list[str]:
    with pytest.raises(ConfigError) as err:
        config(text, route=route)
    return err.value.problems


# --- the built-in config ------------------------------------------------------------------


def test_default_config_parses() -> None:
    cfg = parse_config(default_config_text(), "built-in")
    assert cfg.listen.mixed == Endpoint("127.0.0.1", 1080)
    assert cfg.listen.handshake_timeout == 10.0
    assert cfg.listen.idle_timeout == 600.0
    assert cfg.dns.resolver == ResolverSpec("system")
    assert (cfg.probe.interval, cfg.probe.timeout, cfg.probe.stagger) == (300.0, 5.0, 0.25)
    assert cfg.default_policy == "direct"
    assert cfg.routes[0].name == "direct"  # the cascade: tests/unit/test_cascade.py
    tgws = [r.name for r in cfg.routes if str(r.chain).split(" | ")[-1] == "tgws"]
    assert tgws == ["tgws", "tgws-doh", "tgws-fragment"]
    assert [s.name for s in cfg.services] == ["telegram", "whatsapp", "signal"]
    telegram = cfg.services[0]
    assert "telegram.org" in telegram.domains
    assert ipaddress.ip_network("149.154.160.0/20") in telegram.cidrs
    assert ProbeTarget.parse("tls://web.telegram.org:443") in telegram.probes


def test_load_config_without_a_path_is_the_built_in() -> None:
    cfg = load_config()
    assert cfg.source == "built-in config"
    assert [s.name for s in cfg.services] == ["telegram", "whatsapp", "signal"]


def test_load_config_missing_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.toml")


def test_load_config_not_utf8(tmp_path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[listen]\nmixed = "\xff"\n')
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 0xff on line 2\)"):
        load_config(path)


def test_minimal_config_and_defaults() -> None:
    cfg = config("")
    assert cfg.listen.mixed == Endpoint("127.0.0.1", 1080)
    assert cfg.default_policy == "direct"
    assert cfg.services == ()
    assert cfg.route("direct").timeout == 10.0
    with pytest.raises(KeyError):
        cfg.route("nope")


def test_implicit_default_policy_is_the_first_route_without_direct() -> None:
    cfg = parse_config('[[route]]\nname = "tor"\nchain = "socks5://127.0.0.1:9050"\n')
    assert cfg.default_policy == "tor"


def test_full_config() -> None:
    cfg = config(
        """
        [listen]
        mixed = "0.0.0.0:1080"
        users = [{ name = "alice", password = "s3cret" }]
        allow = ["192.168.1.0/24", "fd00::/8"]
        handshake_timeout = "2s"
        idle_timeout = "1h"

        [dns]
        resolver = "system"
        hosts = { "origin.test" = ["127.0.0.1", "::1"], "one.test" = "10.0.0.1" }

        [probe]
        interval = "1m30s"
        timeout = 3
        stagger = "100ms"

        [default]
        policy = "deny"

        [[route]]
        name = "tor"
        chain = "socks5://127.0.0.1:9050"
        timeout = "20s"

        [[service]]
        name = "chat"
        domains = ["Chat.Example.", "*.cdn.example"]
        cidrs = ["198.51.100.0/24"]
        ports = [443, 5222]
        probes = ["tcp://chat.example:5222"]
        routes = ["tor", "direct"]
        """
    )
    assert cfg.listen.mixed == Endpoint("0.0.0.0", 1080)
    assert [u.name for u in cfg.listen.users] == ["alice"]
    assert cfg.listen.allow == (
        ipaddress.ip_network("192.168.1.0/24"),
        ipaddress.ip_network("fd00::/8"),
    )
    assert (cfg.listen.handshake_timeout, cfg.listen.idle_timeout) == (2.0, 3600.0)
    assert cfg.dns.hosts == {"origin.test": ("127.0.0.1", "::1"), "one.test": ("10.0.0.1",)}
    assert (cfg.probe.interval, cfg.probe.timeout, cfg.probe.stagger) == (90.0, 3.0, 0.1)
    assert cfg.default_policy == "deny"
    assert cfg.route("tor").timeout == 20.0
    assert str(cfg.route("tor").chain) == "socks5://127.0.0.1:9050"
    chat = cfg.services[0]
    assert chat.domains == ("chat.example", "cdn.example")
    assert chat.ports == frozenset({443, 5222})
    assert chat.routes == ("tor", "direct")


def test_user_password_is_not_in_repr() -> None:
    cfg = config('[listen]\nusers = [{ name = "alice", password = "s3cretPW" }]\n')
    assert "s3cretPW" not in repr(cfg.listen)


# --- durations ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        pytest.param("250ms", 0.25, id="ms"),
        pytest.param("5s", 5.0, id="s"),
        pytest.param("1m30s", 90.0, id="m-s"),
        pytest.param("1m 30s", 90.0, id="m-space-s"),
        pytest.param("2h", 7200.0, id="h"),
        pytest.param("1h1m1s1ms", 3661.001, id="all-units"),
        pytest.param("1.5s", 1.5, id="fraction"),
        pytest.param(" 10s ", 10.0, id="padded"),
        pytest.param("168h", 7 * 86400.0, id="a-week"),
        pytest.param(5, 5.0, id="int-seconds"),
        pytest.param(0.25, 0.25, id="float-seconds"),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("5", id="no-unit"),
        pytest.param("5x", id="unknown-unit"),
        pytest.param("5sec", id="long-unit"),
        pytest.param("s", id="unit-only"),
        pytest.param("-1s", id="negative"),
        pytest.param("0s", id="zero"),
        pytest.param("1s-", id="trailing-junk"),
        pytest.param("1.s", id="dot-without-fraction"),
        pytest.param("1w", id="weeks"),
        pytest.param("169h", id="over-a-week"),
        pytest.param("5S", id="upper-case-unit"),
        pytest.param(0, id="int-zero"),
        pytest.param(-3, id="int-negative"),
        pytest.param(float("nan"), id="nan"),
        pytest.param(float("inf"), id="inf"),
        pytest.param(True, id="bool"),
        pytest.param(None, id="none"),
        pytest.param(["5s"], id="list"),
    ],
)
def test_parse_duration_errors(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


def test_parse_duration_huge_integer_is_a_value_error() -> None:
    """TOML integers reach parse_duration unbounded (tomllib returns Python ints); float()
    of a 400-digit int raises OverflowError, which escapes parse_config as a traceback."""
    with pytest.raises(ValueError):
        parse_duration(10**400)


def test_huge_integer_duration_in_a_file_is_a_config_error() -> None:
    assert problems("[probe]\ntimeout = " + "9" * 400 + "\n")[0].startswith("probe.timeout: ")


# --- errors name their key path -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            '[[route]]\nname = "a"\nchain = "direct"\n[[route]]\nname = "b"\nchain = "direct"\n'
            '[[route]]\nname = "c"\nchain = "sock5://127.0.0.1:9050"\n',
            f"route[2].chain: unknown layer 'sock5' (known: {', '.join(known_layers())})",
            id="chain-unknown-layer",
        ),
        pytest.param(
            '[listen]\nmixd = "127.0.0.1:1080"\n',
            "listen.mixd: unknown key (did you mean 'mixed'? valid: mixed, users, allow, "
            "handshake_timeout, idle_timeout, transparent",
            id="unknown-key-did-you-mean",
        ),
        pytest.param("rout = 1\n", "rout: unknown key (did you mean 'route'?", id="top-level-typo"),
        pytest.param(
            "[tunnel]\nx = 1\n", "tunnel: unknown key (valid: listen, dns", id="no-close-match"
        ),
        pytest.param(
            '[probe]\ninterval = "5 minutes"\n',
            "probe.interval: '5 minutes' is not a duration",
            id="duration",
        ),
        pytest.param(
            '[probe]\nstagger = "0ms"\n', "probe.stagger: '0ms' is out of range", id="zero-duration"
        ),
        pytest.param(
            '[listen]\nmixed = "127.0.0.1"\n',
            "listen.mixed: '127.0.0.1': expected HOST:PORT",
            id="listen-no-port",
        ),
        pytest.param(
            '[listen]\nmixed = "proxy.lan:1080"\n',
            "listen.mixed: 'proxy.lan:1080': listen on an IP address",
            id="listen-name",
        ),
        pytest.param(
            "[listen]\nmixed = 1080\n", 'listen.mixed: expected "HOST:PORT"', id="listen-int"
        ),
        pytest.param(
            '[listen]\nallow = ["192.168.1.1/24"]\n',
            "listen.allow[0]: '192.168.1.1/24' has host bits set; did you mean \"192.168.1.0/24\"?",
            id="allow-host-bits",
        ),
        pytest.param(
            '[listen]\nallow = ["lan"]\n',
            "listen.allow[0]: 'lan' is not an address or CIDR range",
            id="allow-junk",
        ),
        pytest.param(
            '[listen]\nallow = "192.168.1.0/24"\n',
            "listen.allow: expected a list",
            id="allow-not-list",
        ),
        pytest.param(
            '[listen]\nusers = [{ name = "alice" }]\n',
            "listen.users[0].password: is required",
            id="user-no-password",
        ),
        pytest.param(
            '[listen]\nusers = [{ name = "alice", password = "" }]\n',
            "listen.users[0].password: a password is 1-255 bytes",
            id="empty-password",
        ),
        pytest.param(
            '[listen]\nusers = [{ name = "a", password = "x", passwrd = "y" }]\n',
            "listen.users[0].passwrd: unknown key (did you mean 'password'?",
            id="user-typo",
        ),
        pytest.param(
            '[listen]\nusers = [{ name = "a", password = "x" }, { name = "a", password = "y" }]\n',
            "listen.users[1].name: user 'a' is listed twice",
            id="dup-user",
        ),
        pytest.param(
            '[dns]\nresolver = "8.8.8.8"\n',
            "dns.resolver: unknown resolver '8.8.8.8' (known: system, udp=IP[:PORT], ",
            id="resolver",
        ),
        pytest.param(
            '[dns]\nhosts = { "origin.test" = ["not-an-ip"] }\n',
            "dns.hosts.\"origin.test\"[0]: 'not-an-ip' is not an IP address",
            id="hosts-bad-ip",
        ),
        pytest.param(
            '[dns]\nhosts = { "origin.test" = [] }\n',
            'dns.hosts."origin.test": expected a list of IP addresses',
            id="hosts-empty",
        ),
        pytest.param(
            '[dns]\nhosts = { "bad name" = ["127.0.0.1"] }\n',
            "dns.hosts.\"bad name\": 'bad name' is not a domain name",
            id="hosts-bad-name",
        ),
        pytest.param('[dns]\nhosts = ["x"]\n', "dns.hosts: expected a table", id="hosts-not-table"),
        pytest.param(
            '[default]\npolicy = "tor"\n',
            "default.policy: no route named 'tor' (routes: direct; or \"deny\")",
            id="policy-unknown",
        ),
        pytest.param(
            '[default]\npolicy = "direct"\nfallback = 1\n',
            "default.fallback: unknown key",
            id="default-typo",
        ),
        pytest.param(
            '[[route]]\nname = "direct"\nchain = "direct"\n',
            "route[1].name: route 'direct' is defined twice",
            id="dup-route",
        ),
        pytest.param(
            '[[route]]\nname = "deny"\nchain = "direct"\n',
            "route[0].name: 'deny' is reserved",
            id="route-deny",
        ),
        pytest.param(
            '[[route]]\nname = "my route"\nchain = "direct"\n',
            "route[0].name: 'my route': names are 1-64 letters",
            id="route-name-space",
        ),
        pytest.param('[[route]]\nname = "x"\n', "route[0].chain: is required", id="route-no-chain"),
        pytest.param(
            '[[route]]\nname = "x"\nchain = "direct"\ntimout = "5s"\n',
            "route[0].timout: unknown key (did you mean 'timeout'?",
            id="route-typo",
        ),
        pytest.param(
            '[[route]]\nname = "x"\nchain = ["direct"]\n',
            "route[0].chain: expected a string, got list",
            id="chain-not-string",
        ),
        pytest.param(
            '[[service]]\nname = "x"\ndomains = ["x.example"]\nroutes = ["tor"]\n',
            "service[0].routes[0]: no route named 'tor' (routes: direct)",
            id="service-unknown-route",
        ),
        pytest.param(
            '[[service]]\nname = "x"\ndomains = ["x.example"]\n'
            '[[service]]\nname = "x"\ndomains = ["y.example"]\n',
            "service[1].name: service 'x' is defined twice",
            id="dup-service",
        ),
        pytest.param(
            '[[service]]\nname = "x"\n',
            "service[0]: service 'x' needs domains or cidrs",
            id="service-matches-nothing",
        ),
        pytest.param(
            '[[service]]\nname = "x"\ndomains = ["x.example"]\nports = [0, 70000, "443", true]\n',
            "service[0].ports[0]: 0 is not a port (1-65535)",
            id="ports",
        ),
        pytest.param(
            '[[service]]\nname = "x"\ndomains = ["x.example"]\nprobes = ["ftp://x.example"]\n',
            "service[0].probes[0]: 'ftp://x.example': unknown probe kind 'ftp'",
            id="probe-kind",
        ),
        pytest.param(
            '[[service]]\nname = "x"\ndomains = ["x.example"]\nprobes = ["tcp://x.example"]\n',
            "service[0].probes[0]: 'tcp://x.example': tcp:// probes need a port",
            id="probe-no-port",
        ),
        pytest.param(
            '[[service]]\nname = "x"\ndomains = ["x..example"]\n',
            "service[0].domains[0]: 'x..example' is not a domain name",
            id="bad-domain",
        ),
        pytest.param(
            '[[service]]\nname = "x"\ncidrs = ["10.0.0.1/8"]\n',
            "service[0].cidrs[0]: '10.0.0.1/8' has host bits set; did you mean \"10.0.0.0/8\"?",
            id="bad-cidr",
        ),
        pytest.param(
            '[[service]]\nname = "x"\ndomain = ["x.example"]\n',
            "service[0].domain: unknown key (did you mean 'domains'?",
            id="service-typo",
        ),
        pytest.param(
            '[dns]\nresolver = "doh=https://dns.google/dns-query"\n',
            "dns.resolver: 'doh=https://dns.google/dns-query': dns.google is a name; add its "
            "addresses with ;bootstrap=IP[,IP...]",
            id="doh-without-bootstrap",
        ),
        pytest.param(
            '[dns]\nresolver = "udp=1.1.1.1;allow_private=yes"\n',
            "dns.resolver: 'udp=1.1.1.1;allow_private=yes': unknown option 'allow_private=yes' "
            "(valid: allow_private=true|false, public=CIDR[,CIDR...])",
            id="allow-private-value",
        ),
        pytest.param(
            "[dns]\nresolver = 53\n", "dns.resolver: expected a string, got int", id="resolver-int"
        ),
        pytest.param(
            '[tls]\nextra_ca = ["/nonexistent/ca.pem"]\n',
            "tls.extra_ca[0]: '/nonexistent/ca.pem': no such file",
            id="extra-ca-missing",
        ),
        pytest.param(
            '[tls]\nextra_ca = "ca.pem"\n', "tls.extra_ca: expected a list", id="extra-ca-string"
        ),
        pytest.param(
            "[tls]\nextra-ca = []\n",
            "tls.extra-ca: unknown key (did you mean 'extra_ca'?",
            id="tls-typo",
        ),
    ],
)
def test_errors_name_the_key_path(text: str, expected: str) -> None:
    found = problems(text)
    assert any(p.startswith(expected) for p in found), found


def test_every_bad_port_is_reported() -> None:
    found = problems(
        '[[service]]\nname = "x"\ndomains = ["x.example"]\nports = [0, 70000, "443", true]\n'
    )
    assert [p.split(":")[0] for p in found] == [f"service[0].ports[{i}]" for i in range(4)]


def test_route_must_be_an_array_of_tables() -> None:
    assert problems('route = { name = "x" }\n', route=False) == [
        "route: expected [[route]] tables",
        'route: at least one [[route]] is needed (e.g. name = "direct", chain = "direct")',
    ]


def test_no_routes() -> None:
    assert problems("", route=False) == [
        'route: at least one [[route]] is needed (e.g. name = "direct", chain = "direct")'
    ]


def test_several_problems_are_reported_at_once() -> None:
    found = problems(
        """
        [listen]
        mixd = "127.0.0.1:1080"
        handshake_timeout = "soon"

        [probe]
        interval = "5x"

        [[route]]
        name = "tor"
        chain = "sock5://127.0.0.1:9050"
        """
    )
    keys = [p.split(":")[0] for p in found]
    assert keys == ["listen.handshake_timeout", "listen.mixd", "probe.interval", "route[0].chain"]


def test_config_error_text_lists_problems_under_the_source() -> None:
    with pytest.raises(ConfigError) as err:
        config('[probe]\ninterval = "5x"\ntimeout = "x"\n')
    text = str(err.value)
    assert text.splitlines()[0] == "test.toml:"
    assert all(line.startswith("  probe.") for line in text.splitlines()[1:])
    assert err.value.source == "test.toml"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("[listen\nmixed = 1", id="unclosed-table"),
        pytest.param('mixed = "unterminated\n', id="unterminated-string"),
        pytest.param("a = 1\na = 2\n", id="duplicate-key"),
        pytest.param("= 1\n", id="no-key"),
    ],
)
def test_toml_syntax_errors(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(text, "bad.toml")
    assert len(err.value.problems) == 1
    assert err.value.problems[0].startswith("not valid TOML: ")
    assert "line" in err.value.problems[0]


def test_deeply_nested_toml_is_a_config_error() -> None:
    """A pathological file must give a ConfigError, not a RecursionError traceback
    (tomllib recurses once per nesting level)."""
    with pytest.raises(ConfigError):
        parse_config("x = " + "[" * 5000)


@pytest.mark.parametrize(
    "listen",
    [
        pytest.param('mixed = "0.0.0.0:1080"', id="any-ipv4"),
        pytest.param('mixed = "[::]:1080"', id="any-ipv6"),
        pytest.param('mixed = "192.168.1.10:1080"', id="lan"),
    ],
)
def test_exposed_listener_needs_users_or_allow(listen: str) -> None:
    found = problems(f"[listen]\n{listen}\n")
    assert len(found) == 1
    assert found[0].startswith("listen.mixed: ")
    assert "reachable from other machines; set listen.users" in found[0]
    assert "listen.allow" in found[0]


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param('users = [{ name = "alice", password = "pw" }]', id="users"),
        pytest.param('allow = ["192.168.1.0/24"]', id="allow"),
    ],
)
def test_exposed_listener_with_users_or_allow_is_fine(extra: str) -> None:
    assert config(f'[listen]\nmixed = "0.0.0.0:1080"\n{extra}\n').listen.mixed.host == "0.0.0.0"


@pytest.mark.parametrize(
    "mixed", ["127.0.0.1:1080", "127.0.0.2:1080", "[::1]:1080", "localhost:1080", "127.0.0.1:0"]
)
def test_loopback_listener_needs_nothing(mixed: str) -> None:
    config(f'[listen]\nmixed = "{mixed}"\n')


# --- secrets never appear in errors -------------------------------------------------------


@pytest.mark.parametrize(
    "chain",
    [
        pytest.param("socks5://alice:s3cr3tPW@127.0.0.1", id="missing-port"),
        pytest.param("socks5://alice:s3cr3tPW@127.0.0.1:1080/x", id="path"),
        pytest.param("socks5://alice:s3cr3tPW@127.0.0.1:0", id="port-0"),
        pytest.param("socks4a://alice:s3cr3tPW@127.0.0.1:1080", id="socks4a-password"),
        pytest.param("sock5://alice:s3cr3tPW@127.0.0.1:1080", id="unknown-layer"),
        pytest.param("socks5://alice:s3cr3tPW@127.0.0.1:1080 | direct", id="direct-not-first"),
    ],
)
def test_config_errors_never_contain_a_chain_password(chain: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(f'[[route]]\nname = "r"\nchain = "{chain}"\n', "test.toml")
    assert "s3cr3tPW" not in str(err.value)
    assert all("s3cr3tPW" not in p for p in err.value.problems)
    assert "route[0].chain: " in str(err.value)


def test_config_errors_elsewhere_do_not_quote_a_valid_chain_password() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(
            '[[route]]\nname = "r"\nchain = "socks5://alice:s3cr3tPW@127.0.0.1:1080"\ntimout = 1\n'
        )
    assert "s3cr3tPW" not in str(err.value)


def test_route_repr_does_not_show_the_chain_password() -> None:
    cfg = parse_config('[[route]]\nname = "r"\nchain = "socks5://alice:s3cr3tPW@127.0.0.1:1080"\n')
    assert "s3cr3tPW" not in repr(cfg.routes[0])


# --- [dns] resolver and [tls] -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "spec"),
    [
        pytest.param("system", ResolverSpec("system"), id="system"),
        pytest.param("udp=1.1.1.1", ResolverSpec("udp", Endpoint("1.1.1.1", 53)), id="udp"),
        pytest.param(
            "udp://1.1.1.1:53", ResolverSpec("udp", Endpoint("1.1.1.1", 53)), id="udp-url-form"
        ),
        pytest.param("tcp://[::1]:53", ResolverSpec("tcp", Endpoint("::1", 53)), id="tcp"),
        pytest.param(
            "doh:https://1.1.1.1/dns-query",
            ResolverSpec("doh", Endpoint("1.1.1.1", 443), "https://1.1.1.1/dns-query"),
            id="doh-as-in-the-design",
        ),
        pytest.param(
            "dot://127.0.0.1:8853;allow_private=true",
            ResolverSpec("dot", Endpoint("127.0.0.1", 8853), allow_private=True),
            id="dot-lab",
        ),
        pytest.param(
            "udp://127.77.0.53:53;public=127.77.0.0/16",
            ResolverSpec(
                "udp", Endpoint("127.77.0.53", 53), public=(ipaddress.ip_network("127.77.0.0/16"),)
            ),
            id="udp-lab-network-public",
        ),
    ],
)
def test_resolver_forms(value: str, spec: ResolverSpec) -> None:
    """`[dns] resolver` takes what follows `resolve:` in a chain, and the URL-like spellings
    of the design document."""
    assert config(f'[dns]\nresolver = "{value}"\n').dns.resolver == spec


def test_extra_ca_is_loaded(tmp_path) -> None:
    ca = TestCA(tmp_path)
    cfg = config(f'[tls]\nextra_ca = ["{ca.ca_path}"]\n')
    assert cfg.tls.extra_ca == (ca.ca_path,)
    subjects = [entry["subject"] for entry in cfg.tls.client_context().get_ca_certs()]
    assert ((("commonName", "detour test CA"),),) in subjects


def test_extra_ca_that_is_not_a_certificate(tmp_path) -> None:
    path = tmp_path / "ca.pem"
    path.write_text("not a certificate")
    [problem] = problems(f'[tls]\nextra_ca = ["{path}"]\n')
    assert problem.startswith(f"tls.extra_ca[0]: '{path}' is not a PEM CA certificate file")


def test_a_pipe_without_a_writer_and_a_terminal_are_refused_not_waited_on(tmp_path) -> None:
    """A named pipe nothing writes to made `detour run -c FIFO` (and `config check`, and a
    reload) wait for ever; a pipe a program writes to is read as before."""
    import os
    import pty
    import threading

    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="is a pipe that nothing writes to") as err:
        load_config(fifo)
    assert err.value.source == str(fifo)
    controller, terminal = pty.openpty()
    try:
        with pytest.raises(ConfigError, match="is a terminal, not a config file"):
            load_config(os.ttyname(terminal))
    finally:
        os.close(controller)
        os.close(terminal)
    # a pipe with its writer running, its first bytes not yet written (`-c <(slow)`)
    read, write = os.pipe()
    go = threading.Event()

    def writer() -> None:
        go.wait(10)
        os.write(write, b'[probe]\ninterval = "1m"\n' + ROUTE.encode())
        os.close(write)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        timer = threading.Timer(0.2, go.set)
        timer.start()
        cfg = load_config(f"/proc/self/fd/{read}")
        assert cfg.probe.interval == 60.0
    finally:
        go.set()
        thread.join()
        os.close(read)
