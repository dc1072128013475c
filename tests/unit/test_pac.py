"""The proxy auto-config file (helper/pac.py), evaluated by a real JavaScript engine (Node) in
an empty context: no PAC helper functions exist there, so a PAC that needed one fails. Every
answer is checked against detour's own matching (ServiceTable.match)."""

from __future__ import annotations

import ipaddress
import json
import random
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from helper.config import parse_config
from helper.pac import proxy_pac
from helper.services import ServiceTable
from tests.support.peers import require_peer
from transports import Endpoint

CONFIG = """
[[route]]
name = "direct"
chain = "direct"

[[service]]
name = "telegram"
domains = ["telegram.org", "t.me"]
cidrs = ["149.154.160.0/20", "91.108.56.0/22", "2001:67c:4e8::/48"]

[[service]]
name = "chat"
domains = ["chat.example"]
cidrs = ["10.1.2.3/32", "0.0.0.0/0"]
ports = [5222, 443]

[[service]]
name = "v6only"
cidrs = ["2001:db8:1234:5600::/55", "::ffff:0:0/96"]
"""

# Loads the PAC into an empty context and prints FindProxyForURL for each (url, host).
HARNESS = """
const fs = require("fs");
const vm = require("vm");
const context = vm.createContext({});
vm.runInContext(fs.readFileSync(process.argv[2], "utf8"), context, {filename: "proxy.pac"});
const cases = JSON.parse(fs.readFileSync(process.argv[3], "utf8"));
console.log(JSON.stringify(cases.map(([url, host]) => context.FindProxyForURL(url, host))));
"""

PROXY = "SOCKS5 192.0.2.1:1080; SOCKS 192.0.2.1:1080"


def evaluate(pac: str, cases: list[tuple[str, str]], tmp_path: Path) -> list[str]:
    node = require_peer("node", "nodejs")
    (tmp_path / "proxy.pac").write_text(pac)
    (tmp_path / "harness.js").write_text(HARNESS)
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    result = subprocess.run(
        [node, tmp_path / "harness.js", tmp_path / "proxy.pac", tmp_path / "cases.json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def expected(table: ServiceTable, url: str, host: str) -> str:
    port = urlsplit(url).port or (443 if url.startswith("https") else 80)
    bare = host.strip("[]").rstrip(".").lower()
    return PROXY if table.match(Endpoint(bare, port)) is not None else "DIRECT"


def test_service_names_addresses_and_ports(tmp_path: Path) -> None:
    services = parse_config(CONFIG).services
    pac = proxy_pac(services, "192.0.2.1", 1080)
    cases = [
        ("https://telegram.org/", "telegram.org"),
        ("https://web.telegram.org/", "web.telegram.org"),
        ("https://a.b.web.telegram.org/x", "a.b.web.telegram.org"),
        ("https://WEB.Telegram.ORG/", "WEB.Telegram.ORG"),
        ("https://telegram.org./", "telegram.org."),
        ("https://eviltelegram.org/", "eviltelegram.org"),
        ("https://telegram.org.evil.example/", "telegram.org.evil.example"),
        ("https://t.me/", "t.me"),
        ("https://149.154.167.51/", "149.154.167.51"),
        ("https://149.154.176.1/", "149.154.176.1"),
        ("http://91.108.56.130:80/", "91.108.56.130"),
        ("https://[2001:67c:4e8:f004::a]/", "2001:67c:4e8:f004::a"),
        ("https://[2001:67c:4e8:f004::a]/", "[2001:67c:4e8:f004::a]"),
        ("https://[2001:67c:4e9::1]/", "2001:67c:4e9::1"),
        ("https://[::ffff:149.154.167.51]/", "::ffff:149.154.167.51"),
        ("https://chat.example/", "chat.example"),
        ("http://chat.example/", "chat.example"),
        ("http://chat.example:5222/", "chat.example"),
        ("https://user:pw@chat.example:8443/", "chat.example"),
        ("https://8.8.8.8/", "8.8.8.8"),
        ("http://8.8.8.8/", "8.8.8.8"),
        ("https://[2001:db8:1234:5700::1]/", "2001:db8:1234:5700::1"),
        ("https://[2001:db8:1234:5800::1]/", "2001:db8:1234:5800::1"),
        ("https://example.org/", "example.org"),
        ("https://localhost/", "localhost"),
        ("https://999.1.1.1/", "999.1.1.1"),
    ]
    answers = evaluate(pac, cases, tmp_path)
    table = ServiceTable(services)
    for (url, host), answer in zip(cases, answers, strict=True):
        assert answer == expected(table, url, host), (url, host)
    # and the verdicts meant, not just agreement with ServiceTable
    verdict = dict(zip([c[1] for c in cases], answers, strict=False))
    assert verdict["web.telegram.org"] == PROXY
    assert verdict["eviltelegram.org"] == "DIRECT"
    assert verdict["example.org"] == "DIRECT"
    assert verdict["2001:67c:4e8:f004::a"] == PROXY
    assert answers[cases.index(("https://8.8.8.8/", "8.8.8.8"))] == PROXY  # chat: 0/0 on 443
    assert answers[cases.index(("http://8.8.8.8/", "8.8.8.8"))] == "DIRECT"  # not port 80


def test_random_addresses_around_the_ranges_agree_with_detour(tmp_path: Path) -> None:
    services = parse_config(CONFIG).services
    table = ServiceTable([s for s in services if s.name != "chat"])  # no catch-all
    rng = random.Random(20261128)
    hosts = []
    for service in table:
        for net in service.cidrs:
            for edge in (net.network_address, net.broadcast_address):
                for delta in (-1, 0, 1):
                    value = int(edge) + delta
                    if 0 <= value < 2**net.max_prefixlen:
                        hosts.append(str(ipaddress.ip_address(value)))
            for _ in range(20):
                bits = net.max_prefixlen - max(0, net.prefixlen - 2)
                base = int(net.network_address) & ~((1 << bits) - 1)
                hosts.append(str(ipaddress.ip_address(base + rng.getrandbits(bits))))
    cases = [(f"https://{h}/" if ":" not in h else f"https://[{h}]/", h) for h in hosts]
    answers = evaluate(proxy_pac(list(table), "192.0.2.1", 1080), cases, tmp_path)
    for (url, host), answer in zip(cases, answers, strict=True):
        assert answer == expected(table, url, host), host


def test_an_ipv6_proxy_address_is_bracketed_and_nothing_escapes_the_strings() -> None:
    services = parse_config(CONFIG).services
    pac = proxy_pac(services, "fd00::1", 1080)
    assert 'var DETOUR = "SOCKS5 [fd00::1]:1080; SOCKS [fd00::1]:1080";' in pac
    assert "dnsResolve" not in pac and "isInNet" not in pac
