"""The status API (helper/api.py) on a running engine, after real traffic through the mixed
listener to a local echo server: /status against the field table in docs/status-api.md,
/metrics parsed by prometheus_client, /proxy.pac, /healthz, authentication, and no secret in
any answer."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helper import __version__
from helper.engine import Engine
from helper.lab.ca import LabCA
from helper.relay.keys import RelayKeys
from helper.routing.progress import record_stall
from helper.search.search import Outcome, ServiceSearch
from helper.status import SearchView
from tests.conftest import ROOT, config_text
from tests.support.clients import open_socks5
from tests.support.peers import free_port
from transports import Endpoint

DOC = ROOT / "docs" / "status-api.md"
TOKEN = "api-token-3f9c1a7e5b2d4c6e8a0b"

# A service's UDP health: only for services with udp_probes (tests/integration/test_udp_status.py)
UDP_HEALTH = "services[].udp"
UDP_PROBED = "udp_routes[].services[]"  # (test_udp_status.py shows UDP probes)

TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}


def echo_config(echo_port: int, extra: str = "") -> str:
    return config_text(
        extra=f"""
        [api]
        listen = "127.0.0.1:0"

        [[service]]
        name = "echo"
        cidrs = ["127.0.0.0/8"]
        probes = ["tcp://127.0.0.1:{echo_port}"]
        {extra}
        """
    )


async def get(
    engine: Engine, path: str, *, token: str | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], str]:
    assert engine.api is not None and engine.api.address is not None
    host, port = engine.api.address
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"http://{host}:{port}{path}", headers=headers) as response,
    ):
        return response.status, dict(response.headers), await response.text()


async def wait_closed(engine: Engine) -> None:
    async with asyncio.timeout(10):  # a safety net, not a measurement
        while engine.server.connections:  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.01)


# --- the documented /status schema ----------------------------------------------------------


def documented_fields() -> dict[str, set[str]]:
    """The field table after the status-schema marker: path -> allowed types."""
    text = DOC.read_text()
    table = text.split("<!-- status-schema", 1)[1].split("\n\n", 1)[0]
    fields = {}
    for line in table.splitlines():
        match = re.match(r"\| `([^`]+)` \| ([a-z\\|]+) \|", line)
        if match:
            types = set(match.group(2).replace("\\|", "|").split("|"))
            if "number" in types:
                types.add("integer")
            fields[match.group(1)] = types
    assert len(fields) > 20, "the field table in docs/status-api.md was not found"
    return fields


def walk(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        if path and not path.endswith("[]"):  # list items are described by their fields
            yield path, "object"
        for key, item in value.items():
            yield from walk(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        yield path, "array"
        for item in value:
            yield from walk(item, f"{path}[]")
    else:
        yield path, TYPES[type(value)]


def check_schema(document: dict[str, Any], absent: str | tuple[str, ...] = "") -> None:
    """`absent`: documented paths under it may be missing (a state the test shows apart)."""
    fields = documented_fields()
    seen: set[str] = set()
    for path, kind in walk(document):
        assert path in fields, f"/status has {path}, which docs/status-api.md does not list"
        assert kind in fields[path], f"{path} is {kind}; documented: {fields[path]}"
        seen.add(path)
    missing = {f for f in set(fields) - seen if not (absent and f.startswith(absent))}
    assert not missing, f"documented but not served (or the test made no such state): {missing}"


# --- metrics --------------------------------------------------------------------------------


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(metrics: dict, name: str, **labels: str) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


def documented_metrics() -> list[str]:
    table = DOC.read_text().split("<!-- metrics", 1)[1].split("\n\n", 1)[0]
    names = re.findall(r"^\| `(detour_[a-z_]+)` \|", table, re.MULTILINE)
    assert len(names) > 5
    return names


# --- tests ----------------------------------------------------------------------------------


MTPROTO_SECRET = "dd" + "5a" * 16
MTPROTO = f"""
        [mtproto_proxy]
        listen = "127.0.0.1:0"
        secrets = {{ alice = "{MTPROTO_SECRET}" }}
"""


def signal_section(directory: Path, name: str = "signal.example.org") -> str:
    cert, key = LabCA(directory).issue(name)
    return f'[signal_proxy]\nlisten = "127.0.0.1:0"\ncertificate = "{cert}"\nkey = "{key}"\n'


def a_search_that_found(service: str) -> SearchView:
    """What the status shows after a search found a strategy (its fields, for the schema:
    the echo service's direct route works, so no real search would try anything)."""
    search = ServiceSearch(
        service, ["tls://a.example:443"], direct=Outcome(False, "connection_reset", "tls_handshake")
    )
    for outcome in (Outcome(False, "connection_reset", "tls_handshake"), Outcome(True)):
        attempt = search.next()
        assert attempt is not None
        search.record(attempt, outcome)
    attempt = search.next()  # oob screened: confirm it through every target
    assert attempt is not None
    search.record(attempt, Outcome(True, latency_ms=12.0))
    assert search.winner is not None
    return SearchView(False, 1.0, 2.0, {service: search.to_json()})


async def test_status_and_metrics_after_real_traffic(
    start_engine, echo_origin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await start_engine(
        echo_config(echo_origin.port, MTPROTO + signal_section(tmp_path)), probe_on_start=False
    )
    (service,) = engine.router.services
    await engine.monitor.probe_now(service)
    monkeypatch.setattr(engine.searches, "view", lambda: a_search_that_found(service.name))

    reader, writer = await open_socks5(engine.mixed_address, "127.0.0.1", echo_origin.port)
    writer.write(b"x" * 1000)
    assert await reader.readexactly(1000) == b"x" * 1000

    status, headers, body = await get(engine, "/metrics")
    assert status == 200
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    metrics = samples(body)
    echo = {"service": "echo", "route": "direct"}
    assert value(metrics, "detour_connections_open", **echo) == 1
    assert value(metrics, "detour_connections_total", **echo) == 1
    assert value(metrics, "detour_relayed_bytes_total", **echo, direction="up") == 1000
    assert value(metrics, "detour_relayed_bytes_total", **echo, direction="down") == 1000
    assert value(metrics, "detour_route_healthy", **echo) == 1
    assert value(metrics, "detour_route_active", **echo) == 1
    assert value(metrics, "detour_probe_duration_seconds_count", **echo) == 1
    assert value(metrics, "detour_probe_duration_seconds_bucket", **echo, le="+Inf") == 1

    # /status while the connection is open: every documented field is there, and only those
    status, headers, body = await get(engine, "/status")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    document = parse_json(body)
    check_schema(document, absent=("services[].stalled[]", UDP_HEALTH, UDP_PROBED))  # shown below
    (entry,) = document["services"]
    assert entry["name"] == "echo" and entry["reachable"] and entry["best_route"] == "direct"
    assert entry["active_route"] == "direct" and entry["routes"][0]["ok"]
    (conn,) = document["connections"]
    assert conn["target"] == f"127.0.0.1:{echo_origin.port}"
    assert (conn["service"], conn["route"], conn["protocol"]) == ("echo", "direct", "socks5")
    assert (conn["bytes_up"], conn["bytes_down"], conn["state"]) == (1000, 1000, "relaying")
    host, port = engine.mixed_address
    assert {"kind": "mixed", "address": f"{host}:{port}"} in document["listeners"]
    assert {"kind": "api", "address": "{}:{}".format(*engine.api.address)} in document["listeners"]
    assert engine.mtproto is not None
    mt_host, mt_port = engine.mtproto.address_bound
    assert {"kind": "mtproto", "address": f"{mt_host}:{mt_port}"} in document["listeners"]
    # The MTProto proxy's links: the secret hidden in /status, given by /mtproto/links.
    (user,) = document["mtproto_proxy"]["users"]
    assert user["link"] == f"tg://proxy?server={mt_host}&port={mt_port}&secret=***"
    assert MTPROTO_SECRET not in body
    status, _, links = await get(engine, "/mtproto/links")
    assert status == 200
    (revealed,) = parse_json(links)["users"]
    assert revealed["link"].endswith(f"secret={MTPROTO_SECRET}")
    assert revealed["web_link"].startswith(f"https://t.me/proxy?server={mt_host}&")

    writer.write(b"y" * 500)
    assert await reader.readexactly(500) == b"y" * 500
    writer.close()
    await wait_closed(engine)

    # a connection that fails: refused through the service's only route
    closed = free_port()
    with pytest.raises(ConnectionError):
        await open_socks5(engine.mixed_address, "127.0.0.1", closed)
    await wait_closed(engine)

    metrics = samples((await get(engine, "/metrics"))[2])
    assert value(metrics, "detour_connections_open", **echo) == 0
    assert value(metrics, "detour_connections_total", **echo) == 1
    assert value(metrics, "detour_relayed_bytes_total", **echo, direction="up") == 1500
    assert value(metrics, "detour_relayed_bytes_total", **echo, direction="down") == 1500
    failure = {"source": "connection", **echo, "failure": "connection_refused", "op": "connect"}
    assert value(metrics, "detour_failures_total", **failure) == 1
    (build,) = [labels for name, labels in metrics if name == "detour_build_info"]
    assert dict(build)["version"] == __version__
    body = (await get(engine, "/metrics"))[2]
    families = {family.name for family in text_string_to_metric_families(body)}
    for name in documented_metrics():  # counters' family names lose their _total
        assert name.removesuffix("_total") in families, f"{name} is documented, not served"
    assert not parse_json((await get(engine, "/status"))[2])["connections"]

    # a live connection that froze on its route (helper/routing/progress.py)
    record_stall(engine.router, service, engine.router.route("direct"), "frozen_after_16KB", "")
    document = parse_json((await get(engine, "/status"))[2])
    check_schema(document, absent=("connections[]", UDP_HEALTH, UDP_PROBED))  # (none open now)
    (stalled,) = document["services"][0]["stalled"]
    assert (stalled["route"], stalled["diagnosis"]) == ("direct", "frozen_after_16KB")


def parse_json(body: str) -> dict[str, Any]:
    return json.loads(body)


async def test_probe_failures_are_counted_by_failure_and_op(start_engine) -> None:
    closed = free_port()
    text = config_text(
        extra=f"""
        [api]
        listen = "127.0.0.1:0"

        [[service]]
        name = "gone"
        cidrs = ["127.0.0.0/8"]
        probes = ["tcp://127.0.0.1:{closed}"]

        [[service]]
        name = "later"
        domains = ["later.test"]
        probes = ["tcp://127.0.0.1:{closed}"]
        """
    )
    engine = await start_engine(text, probe_on_start=False)
    service, later = engine.router.services
    await engine.monitor.probe_now(service)
    # one service failing, the other not checked yet: it may still work
    assert await get(engine, "/healthz") == (200, ANY, "ok\n")
    metrics = samples((await get(engine, "/metrics"))[2])
    labels = {"service": "gone", "route": "direct"}
    assert value(metrics, "detour_route_healthy", **labels) == 0
    failure = {"source": "probe", **labels, "failure": "connection_refused", "op": "connect"}
    assert value(metrics, "detour_failures_total", **failure) == 1
    document = parse_json((await get(engine, "/status"))[2])
    route = document["services"][0]["routes"][0]
    assert document["services"][1]["routes"] == []
    assert (route["ok"], route["failure"], route["op"]) == (False, "connection_refused", "connect")
    assert not document["services"][0]["reachable"]
    # every service checked and none works: unhealthy, and says why
    await engine.monitor.probe_now(later)
    status, _, body = await get(engine, "/healthz")
    assert (status, body) == (503, "no service has a working route\n")


async def test_healthz_pac_errors_and_methods(start_engine, echo_origin) -> None:
    engine = await start_engine(echo_config(echo_origin.port), probe_on_start=False)
    status, _, body = await get(engine, "/healthz")
    assert (status, body) == (200, "ok\n")  # nothing probed yet

    status, headers, pac = await get(engine, "/proxy.pac")
    assert status == 200
    assert headers["Content-Type"] == "application/x-ns-proxy-autoconfig; charset=utf-8"
    host, port = engine.mixed_address
    assert f'var DETOUR = "SOCKS5 {host}:{port}; SOCKS {host}:{port}";' in pac

    status, headers, body = await get(engine, "/nothing-here")
    assert status == 404 and "Traceback" not in body
    assert headers["Cache-Control"] == "no-store"
    status, _, body = await get(engine, "/status", method="POST")
    assert status == 405
    status, headers, body = await get(engine, "/status", method="HEAD")
    assert status == 200 and headers["Cache-Control"] == "no-store"


def test_healthz_without_a_running_listener(echo_origin) -> None:
    from helper.api import health
    from helper.config import parse_config

    engine = Engine(parse_config(echo_config(echo_origin.port)))  # never started
    assert health(engine.snapshot()) == (False, "listener not running")


async def test_a_bug_answers_500_without_a_traceback(
    start_engine, echo_origin, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    engine = await start_engine(echo_config(echo_origin.port), probe_on_start=False)

    def broken(_snapshot) -> tuple[bool, str]:
        raise RuntimeError("internal detail /etc/secret-path")

    monkeypatch.setattr("helper.api.health", broken)
    status, _, body = await get(engine, "/healthz")
    assert status == 500
    assert body == "internal error; see detour's log\n"
    assert "internal detail" in caplog.text  # the log has it


async def test_loopback_token_requires_the_token_from_loopback_too(
    start_engine, echo_origin
) -> None:
    extra = f'\n[api]\nlisten = "127.0.0.1:0"\ntoken = "{TOKEN}"\nloopback_token = true\n'
    text = config_text(extra=extra)
    engine = await start_engine(text, probe_on_start=False)
    for path in ("/status", "/metrics", "/proxy.pac", "/healthz", "/nothing-here"):
        status, headers, body = await get(engine, path)
        assert status == 401, path
        assert headers["WWW-Authenticate"] == 'Bearer realm="detour"'
        assert (await get(engine, path, token=TOKEN + "x"))[0] == 401
        assert (await get(engine, path, token=TOKEN[:-1]))[0] == 401
    assert (await get(engine, "/status", token=TOKEN))[0] == 200
    assert (await get(engine, "/nothing-here", token=TOKEN))[0] == 404


async def test_an_api_port_in_use_is_named(start_engine) -> None:
    blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = blocker.sockets[0].getsockname()[1]
    try:
        text = config_text(extra=f'\n[api]\nlisten = "127.0.0.1:{port}"\n')
        with pytest.raises(
            OSError, match=rf"status API on 127\.0\.0\.1:{port}: Address already in use"
        ):
            await start_engine(text, probe_on_start=False)
    finally:
        blocker.close()
        await blocker.wait_closed()


async def test_no_secret_in_any_answer(start_engine, echo_origin, tmp_path: Path) -> None:
    listener_password = "listener-pass-7d1e9"
    upstream_password = "upstream-pass-2b8c4"
    keys = RelayKeys(tmp_path / "relay")
    keys.generate()
    access_key = keys.add_client(
        "alice", Endpoint("127.0.0.1", free_port()), "front.test", "relay.test"
    ).encode()
    closed = free_port()
    text = config_text(
        routes={
            "direct": "direct",
            "upstream": f"socks5://bob:{upstream_password}@127.0.0.1:{closed}",
            "front": f"front:{access_key}",
        },
        default="direct",
        extra=f"""
        [api]
        listen = "127.0.0.1:0"
        token = "{TOKEN}"
        loopback_token = true

        [probe]
        timeout = "3s"

        [[service]]
        name = "echo"
        cidrs = ["127.0.0.0/8"]
        probes = ["tcp://127.0.0.1:{echo_origin.port}"]
        """,
    )
    users = f'users = [{{ name = "alice", password = "{listener_password}" }}]'
    text = text.replace('handshake_timeout = "2s"\n', f'handshake_timeout = "2s"\n{users}\n')
    engine = await start_engine(text, probe_on_start=False)
    (service,) = engine.router.services
    await engine.monitor.probe_now(service)
    reader, writer = await open_socks5(
        engine.mixed_address, "127.0.0.1", echo_origin.port, "alice", listener_password
    )
    writer.write(b"hello")
    assert await reader.readexactly(5) == b"hello"

    secrets = [listener_password, upstream_password, access_key, access_key.split(":", 1)[1]]
    secrets.append(TOKEN)
    answers = []
    for path in ("/status", "/metrics", "/proxy.pac", "/healthz", "/nothing-here"):
        for token in (TOKEN, None, "wrong-token-0123456789"):
            status, headers, body = await get(engine, path, token=token)
            answers.append(f"{status} {headers} {body}")
    writer.close()
    everything = "\n".join(answers)
    assert "front:dtr1:***" in everything and "socks5://bob:***@127.0.0.1" in everything
    for secret in secrets:
        assert secret not in everything


async def test_the_whatsapp_proxy_ports_are_listed(start_engine, echo_origin) -> None:
    section = """
    [whatsapp_proxy]
    listen = "127.0.0.1"
    tls_port = false
    chat_port = 0
    http_port = false
    media_ports = [0]
    """
    engine = await start_engine(echo_config(echo_origin.port, section), probe_on_start=False)
    document = parse_json((await get(engine, "/status"))[2])
    kinds = [listener["kind"] for listener in document["listeners"]]
    assert kinds == ["mixed", "whatsapp-chat", "whatsapp-media", "api"]
    chat = document["listeners"][1]["address"]
    assert chat == f"127.0.0.1:{engine.whatsapp.port('chat')}"


async def test_the_signal_proxy_and_its_links_are_listed(
    start_engine, echo_origin, tmp_path: Path
) -> None:
    engine = await start_engine(
        echo_config(echo_origin.port, signal_section(tmp_path)), probe_on_start=False
    )
    document = parse_json((await get(engine, "/status"))[2])
    kinds = [listener["kind"] for listener in document["listeners"]]
    assert kinds == ["mixed", "signal-tls", "api"]
    port = engine.signal.port
    assert document["listeners"][1]["address"] == f"127.0.0.1:{port}"
    assert document["links"] == [
        {
            "kind": "signal",
            "host": "signal.example.org",
            "port": port,
            "urls": [
                f"https://signal.tube/#signal.example.org:{port}",
                f"sgnl://signal.tube/#signal.example.org:{port}",
            ],
        }
    ]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")
async def test_the_transparent_listener_is_listed(start_engine, echo_origin) -> None:
    text = echo_config(echo_origin.port).replace(
        'mixed = "127.0.0.1:0"\n', 'mixed = "127.0.0.1:0"\ntransparent = "127.0.0.1:0"\n', 1
    )
    engine = await start_engine(text, probe_on_start=False)
    document = parse_json((await get(engine, "/status"))[2])
    assert engine.transparent is not None
    host, port = engine.transparent.sockets[0]
    assert {"kind": "transparent", "address": f"{host}:{port}"} in document["listeners"]
