"""`detour router-rules` (helper/router_rules.py): the rules written from a config, without
nftables (tests/router/test_router_rules_netns.py loads them)."""

from __future__ import annotations

import re

import pytest

from helper import __version__
from helper.cli import main
from helper.router_rules import RouterRules, RulesError, interface_name
from tests.unit.test_config import config

LISTEN = """
[listen]
mixed = "192.168.1.1:1080"
allow = ["192.168.1.0/24", "fd00:1::/64"]
transparent = "[::]:1090"
transparent_udp = "[::]:1091"
"""

SERVICES = """
[[service]]
name = "chat"
domains = ["chat.example", "b.example"]
cidrs = ["203.0.113.0/25", "198.51.100.0/24", "203.0.113.128/25", "2001:db8:2::/48",
         "2001:db8:1::/48", "203.0.113.7/32"]

[[service]]
name = "calls"
cidrs = ["192.0.2.0/24"]
ports = [5222, 443, 3478]

[[service]]
name = "quic-only"
cidrs = ["192.0.2.0/24"]
ports = [443]
"""


def rules(listen: str = LISTEN, services: str = SERVICES, **options) -> RouterRules:
    lans = options.pop("lans", ["lan0"])
    return RouterRules.from_config(config(listen + services), lans, **options)


def chain(text: str, name: str) -> list[str]:
    """The lines of one chain's body."""
    body = text.split(f"chain {name} {{\n", 1)[1].split("\n    }", 1)[0]
    return [line.strip() for line in body.splitlines()]


# --- the nftables flavour ---------------------------------------------------------------------


def test_a_whole_table_that_replaces_itself_with_a_header() -> None:
    text = rules().nftables()
    lines = text.splitlines()
    assert lines[0] == (
        f"# nftables rules, written by detour {__version__} (detour router-rules) from test.toml."
    )
    # Loading it again replaces the table (creating it first, so the delete never fails).
    start = lines.index("table inet detour")
    assert lines[start : start + 3] == [
        "table inet detour",
        "delete table inet detour",
        "table inet detour {",
    ]
    assert text.count("\n}\n") == 1  # the table ends once, before the policy-routing note


def test_sets_per_service_and_family_collapsed_and_sorted() -> None:
    text = rules().nftables()
    # Overlapping and adjacent ranges are one interval (nftables refuses overlaps); sorted.
    assert "elements = { 198.51.100.0/24, 203.0.113.0/24 }" in text
    assert "elements = { 2001:db8:1::/48, 2001:db8:2::/48 }" in text
    assert "set chat_v4 {" in text and "set chat_v6 {" in text
    # The name sets dnsmasq fills; a service without names has none.
    assert "set chat_dns4 {\n        type ipv4_addr; flags timeout; timeout 1h;" in text
    assert "set chat_dns6 {" in text and "calls_dns4" not in text
    # No IPv6 ranges: no IPv6 set.
    assert "calls_v6" not in text
    names = re.findall(r"^    set (\S+) \{", text, re.MULTILINE)
    assert names == [
        "calls_v4",
        "chat_v4",
        "chat_v6",
        "chat_dns4",
        "chat_dns6",
        "quic-only_v4",
    ]


def test_tcp_to_the_services_is_redirected_to_the_transparent_port() -> None:
    redirect = chain(rules().nftables(), "detour_redirect")
    assert redirect[0] == "type nat hook prerouting priority dstnat; policy accept;"
    assert (
        'iifname "lan0" ip daddr @calls_v4 tcp dport { 443, 3478, 5222 } redirect to :1090'
        in redirect
    )
    # No ports: any TCP port.
    assert 'iifname "lan0" ip6 daddr @chat_v6 meta l4proto tcp redirect to :1090' in redirect
    assert 'iifname "lan0" ip daddr @chat_dns4 meta l4proto tcp redirect to :1090' in redirect
    assert 'iifname "lan0" ip daddr @quic-only_v4 tcp dport 443 redirect to :1090' in redirect


def test_udp_but_quic_goes_by_tproxy_with_the_mark() -> None:
    calls = chain(rules().nftables(), "detour_calls")
    assert calls[0] == "type filter hook prerouting priority mangle; policy accept;"
    assert (
        'iifname "lan0" ip daddr @calls_v4 udp dport { 3478, 5222 } tproxy ip to :1091 '
        "meta mark set 1 accept" in calls
    )
    assert (
        'iifname "lan0" ip6 daddr @chat_dns6 udp dport != 443 tproxy ip6 to :1091 '
        "meta mark set 1 accept" in calls
    )
    # A service whose only port is QUIC's has no UDP to hand over.
    assert not any("quic-only" in line for line in calls)


def test_quic_to_the_services_is_rejected() -> None:
    noquic = chain(rules().nftables(), "detour_noquic")
    assert noquic[0] == "type filter hook forward priority filter; policy accept;"
    assert 'iifname "lan0" ip daddr @quic-only_v4 udp dport 443 reject' in noquic
    assert 'iifname "lan0" ip6 daddr @chat_dns6 udp dport 443 reject' in noquic
    assert 'iifname "lan0" ip daddr @calls_v4 udp dport 443 reject' in noquic


def test_policy_routing_is_noted_and_printed() -> None:
    built = rules(fwmark=7, route_table=200)
    text = built.nftables()
    assert "#   ip -4 rule add fwmark 7 lookup 200" in text
    script = built.policy_routing().splitlines()
    assert script[0] == "#!/bin/sh"
    assert script[-6:] == [
        "ip -4 rule del fwmark 7 lookup 200 2>/dev/null || true",
        "ip -4 rule add fwmark 7 lookup 200",
        "ip -4 route replace local 0.0.0.0/0 dev lo table 200",
        "ip -6 rule del fwmark 7 lookup 200 2>/dev/null || true",
        "ip -6 rule add fwmark 7 lookup 200",
        "ip -6 route replace local ::/0 dev lo table 200",
    ]
    assert "meta mark set 7 accept" in text


def test_the_same_config_in_another_order_writes_the_same_rules() -> None:
    parts = SERVICES.split("\n[[service]]")
    reordered = "\n[[service]]".join([parts[0], parts[3], parts[1], parts[2]])
    assert rules(services=reordered).nftables() == rules().nftables()
    assert (
        rules(lans=["wlan0", "br-lan", "wlan0"]).nftables()
        == rules(lans=["br-lan", "wlan0"]).nftables()
    )
    assert 'iifname { "br-lan", "wlan0" } ip daddr' in rules(lans=["wlan0", "br-lan"]).nftables()


# --- which families, which addresses ----------------------------------------------------------


def test_an_ipv4_listener_gets_ipv4_rules_only() -> None:
    listen = LISTEN.replace("[::]:1090", "0.0.0.0:1090").replace("[::]:1091", "0.0.0.0:1091")
    text = rules(listen).nftables()
    assert "ip6 daddr" not in chain(text, "detour_redirect")
    assert "ip6 daddr" not in chain(text, "detour_calls")
    assert "ip -6" not in text
    # QUIC is rejected for both families whatever the listener (the fallback is TCP).
    assert any("ip6 daddr" in line for line in chain(text, "detour_noquic"))


def test_a_listener_on_one_address_gets_dnat_and_tproxy_to_it() -> None:
    listen = LISTEN.replace("[::]:1090", "192.168.1.1:1090").replace(
        "[::]:1091", "[fd00:1::1]:1091"
    )
    text = rules(listen).nftables()
    assert "ip daddr @calls_v4 tcp dport { 443, 3478, 5222 } dnat ip to 192.168.1.1:1090" in text
    assert "ip6 daddr @chat_v6 udp dport != 443 tproxy ip6 to [fd00:1::1]:1091" in text
    assert "ip6 daddr @chat_v6 meta l4proto tcp" not in text
    assert "tproxy ip to" not in text


def test_tcp_alone_or_udp_alone() -> None:
    tcp_only = rules(LISTEN.replace('transparent_udp = "[::]:1091"\n', "")).nftables()
    assert "detour_calls" not in tcp_only and "fwmark" not in tcp_only
    assert "detour_redirect" in tcp_only and "detour_noquic" in tcp_only
    udp_only = rules(LISTEN.replace('transparent = "[::]:1090"\n', "")).nftables()
    assert "detour_redirect" not in udp_only and "detour_noquic" not in udp_only
    assert "detour_calls" in udp_only
    with pytest.raises(RulesError, match=r"^listen\.transparent_udp: not set"):
        rules(LISTEN.replace('transparent_udp = "[::]:1091"\n', "")).policy_routing()


def test_a_service_name_that_starts_with_a_digit_gets_a_prefix() -> None:
    text = rules(services='[[service]]\nname = "1x"\ncidrs = ["192.0.2.0/24"]\n').nftables()
    assert "set svc_1x_v4 {" in text


# --- the OpenWrt flavour and dnsmasq ----------------------------------------------------------


def test_openwrt_is_sets_and_chains_with_prefixed_names() -> None:
    text = rules(flavour="openwrt").nftables()
    rules_only = [line for line in text.splitlines() if not line.startswith("#")]
    assert not any("table" in line for line in rules_only)  # fw4 puts them in its own table
    assert re.search(r"^set detour_chat_v4 \{$", text, re.MULTILINE)
    assert "type nat hook prerouting priority dstnat - 5; policy accept;" in text
    assert "type filter hook forward priority filter - 5; policy accept;" in text
    assert 'iifname "lan0" ip daddr @detour_calls_v4 udp dport { 3478, 5222 } tproxy' in text
    assert text.startswith("# fw4 include (/etc/nftables.d/20-detour.nft), written by detour")


def test_dnsmasq_lines_fill_the_name_sets() -> None:
    lines = rules().dnsmasq().splitlines()
    assert lines[-1] == (
        "nftset=/b.example/chat.example/4#inet#detour#chat_dns4,6#inet#detour#chat_dns6"
    )
    assert sum(line.startswith("nftset=") for line in lines) == 1
    openwrt = rules(flavour="openwrt").dnsmasq()
    assert "4#inet#fw4#detour_chat_dns4,6#inet#fw4#detour_chat_dns6" in openwrt
    unnamed = rules(services='[[service]]\nname = "x"\ncidrs = ["192.0.2.0/24"]\n').dnsmasq()
    assert "nothing to add" in unnamed and "nftset=" not in unnamed


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("listen", "key", "says"),
    [
        ('[listen]\nmixed = "127.0.0.1:1080"\n', "listen.transparent", "not set"),
        ('[listen]\ntransparent = "127.0.0.1:1090"\n', "listen.transparent", "loopback"),
        (
            '[listen]\nallow = ["10.0.0.0/8"]\ntransparent_udp = "[::]:0"\n',
            "listen.transparent_udp",
            "port 0",
        ),
    ],
    ids=["none", "loopback", "port-0"],
)
def test_a_listener_the_firewall_cannot_use_is_refused_by_key(listen, key, says) -> None:
    with pytest.raises(RulesError) as err:
        rules(listen)
    assert err.value.key == key and says in str(err.value)


@pytest.mark.parametrize(
    "name", ["", "a b", 'lan"0', "x" * 16, "eth0/1", ".", "..", "lan0:1", "lan+", "é"]
)
def test_bad_interface_names_are_refused(name: str) -> None:
    with pytest.raises(RulesError, match=r"^--lan: "):
        interface_name(name)


@pytest.mark.parametrize("name", ["br-lan", "eth0.2", "wlan0", "x" * 15, "lan_1"])
def test_interface_names(name: str) -> None:
    assert interface_name(name) == name


def test_no_lan_and_no_flavour() -> None:
    with pytest.raises(RulesError, match=r"^--lan: required"):
        rules(lans=[])
    with pytest.raises(RulesError, match=r"^--flavour: "):
        rules(flavour="iptables")


# --- the command ------------------------------------------------------------------------------


def _write(tmp_path, text: str) -> str:
    path = tmp_path / "router.toml"
    path.write_text(text)
    return str(path)


def test_the_command_prints_the_rules_from_the_file(tmp_path, capsys) -> None:
    path = _write(tmp_path, LISTEN + SERVICES)
    assert main(["router-rules", "-c", path, "--lan", "br-lan"]) == 0
    out = capsys.readouterr().out
    assert f"from {path}." in out.splitlines()[0]
    assert "table inet detour {" in out and "telegram_v4" in out  # the built-in services too
    assert main(["-c", path, "router-rules", "--lan", "br-lan", "--dnsmasq"]) == 0
    assert "nftset=/b.example/chat.example/" in capsys.readouterr().out
    assert main(["router-rules", "-c", path, "--lan", "br-lan", "--policy-routing"]) == 0
    assert capsys.readouterr().out.startswith("#!/bin/sh\n")


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        ([], "detour router-rules: --lan: required"),
        (["--lan", "a b"], "detour router-rules: --lan: 'a b' is not an interface name"),
        (["--lan", "x", "--fwmark", "0"], "detour router-rules: --fwmark: '0' is not a number"),
        (["--lan", "x", "--route-table", "255"], "--route-table: '255' is not a number"),
        (["--lan", "x", "--route-table", "x"], "--route-table: 'x' is not a number"),
    ],
    ids=["no-lan", "bad-lan", "fwmark-0", "table-local", "table-text"],
)
def test_bad_options_exit_2_with_one_line(tmp_path, capsys, argv, says) -> None:
    path = _write(tmp_path, LISTEN)
    assert main(["router-rules", "-c", path, *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and says in captured.err


def test_the_config_name_stays_in_its_comment(tmp_path, capsys) -> None:
    path = tmp_path / "a\nflush ruleset\n.toml"
    path.write_text(LISTEN)
    assert main(["router-rules", "-c", str(path), "--lan", "br-lan"]) == 0
    out = capsys.readouterr().out
    assert "\nflush ruleset" not in out and "a?flush ruleset?.toml." in out.splitlines()[0]


def test_the_built_in_config_has_no_transparent_listener(capsys) -> None:
    assert main(["router-rules", "--lan", "br-lan"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("detour router-rules: listen.transparent: not set")


def test_a_malformed_cidr_is_a_config_problem_naming_the_key(tmp_path, capsys) -> None:
    path = _write(
        tmp_path, LISTEN + '[[service]]\nname = "x"\ncidrs = ["10.0.0.1/8", "300.0.0.0/8"]\n'
    )
    assert main(["router-rules", "-c", path, "--lan", "br-lan"]) == 2
    err = capsys.readouterr().err
    assert "service[0].cidrs[0]: '10.0.0.1/8' has host bits set" in err
    assert "service[0].cidrs[1]: '300.0.0.0/8' is not an address or CIDR range" in err
