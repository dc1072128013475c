"""A subscription served over HTTPS by a local server (the lab CA's certificate for
sub.test, on loopback): the running engine fetches it through a route, its nodes (real
SOCKS5 proxies, microsocks) become a pool the service uses; a node that dies is left
within one probe interval; a refresh that fails keeps the last good list; the URL's path
and the nodes' passwords appear in no log line, status document or shown chain."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
import stat

import pytest

from helper.api import status_document
from helper.lab.ca import LabCA
from helper.subscriptions import store
from tests.conftest import config_text
from tests.support import peers
from tests.support.clients import open_socks5
from tests.support.waiting import until

SECRET_PATH = "s/TOPSECRETPATH"
INTERVAL = 1.0  # the probe interval: a dead node is left within it (and a probe's time)


class ListServer:
    """An HTTPS server that answers every GET with `status` and `body`."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.status, self.body = 200, b""
        self.requests = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._answer, "127.0.0.1", 0, ssl=self.context)
        return self.server.sockets[0].getsockname()[1]

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            reason = "OK" if self.status == 200 else "Error"
            writer.write(
                f"HTTP/1.1 {self.status} {reason}\r\nContent-Length: {len(self.body)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + self.body
            )
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def list_server(tmp_path):
    ca = LabCA(tmp_path / "ca")
    server = ListServer(ca.server_context("sub.test"))
    port = await server.start()
    yield server, port, ca
    await server.close()


def node_list(*nodes: tuple[str, int, str]) -> bytes:
    lines = "\n".join(
        f"socks5://u:NODESECRET{i}@127.0.0.1:{port}#{name}"
        for i, (name, port, _) in enumerate(nodes)
    )
    return base64.b64encode(lines.encode())


def config(port: int, ca: LabCA, echo_port: int, extra: str = "") -> str:
    return config_text(
        extra=f"""
[tls]
extra_ca = ["{ca.ca_path}"]
[dns]
hosts = {{ "origin.test" = ["127.0.0.1"], "sub.test" = ["127.0.0.1"] }}
[probe]
interval = "{INTERVAL}s"
stagger = "20s"
[[service]]
name = "local"
cidrs = ["127.0.0.0/8"]
probes = ["tcp://127.0.0.1:{echo_port}"]
routes = ["pool"]
[[subscription]]
name = "pool"
url = "https://sub.test:{port}/{SECRET_PATH}"
refresh = "1h"
via = ["direct"]
allow_private = true
{extra}
"""
    ).replace('[dns]\nhosts = { "origin.test" = ["127.0.0.1"] }\n', "")


def pool_routes(engine) -> list[str]:
    return [r.name for r in engine.router.routes if r.name.startswith("pool.")]


def active(engine) -> str | None:
    return next(s.active for s in engine.snapshot().services if s.name == "local")


async def echo(engine, port: int) -> None:
    reader, writer = await open_socks5(engine.mixed_address, "127.0.0.1", port)
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.readexactly(4), 10) == b"ping"
    writer.close()


async def test_a_pool_from_a_subscription_fails_over_and_survives_a_broken_refresh(
    start_engine, list_server, echo_origin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server, port, ca = list_server
    with peers.microsocks() as one, peers.microsocks() as two:
        server.body = node_list(("one", one.port, ""), ("two", two.port, ""))
        engine = await start_engine(config(port, ca, echo_origin.port))
        # Fetched at start (no list yet), through `direct`; the nodes are the pool.
        await until(lambda: pool_routes(engine) == ["pool.one", "pool.two"])
        stored = store.load("pool")
        assert stored is not None and [n.slug for n in stored.nodes] == ["one", "two"]
        path = store._path("pool", None)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        service = next(s for s in engine.router.services if s.name == "local")
        assert service.routes == ("pool.one", "pool.two")
        # Ranked by the probes: the faster node is the active one.
        await until(lambda: active(engine) in ("pool.one", "pool.two"))
        first = active(engine)
        (dying, _), (other, other_name) = sorted(
            [(one, "pool.one"), (two, "pool.two")], key=lambda pair: pair[1] != first
        )
        await echo(engine, echo_origin.port)
        assert f"connected to 127.0.0.1:{echo_origin.port}" in dying.logs()

        # A node dies: within one probe interval (and the probe's own time) the pool's
        # other node is the active one.
        dying.process.kill()
        dying.process.wait()
        await until(lambda: active(engine) == other_name, timeout=INTERVAL + 15)
        await echo(engine, echo_origin.port)
        assert f"connected to 127.0.0.1:{echo_origin.port}" in other.logs()

        # A refresh that fails (an error answer, then a list that is no list) keeps the
        # last good list, in the router and in the store.
        before = path.read_bytes()
        server.status, server.body = 500, b"oops"
        result = await engine.subscriptions.refresh("pool")
        assert (
            not result.ok
            and "HTTP 500" in result.line
            and "keeping the last good list" in result.line
        )
        server.status, server.body = 200, b"%%% not a list %%%"
        result = await engine.subscriptions.refresh("pool")
        assert not result.ok and "none of the formats" in result.line
        assert pool_routes(engine) == ["pool.one", "pool.two"] and path.read_bytes() == before

        # A good refresh with one node less: the pool follows.
        alive = other_name.removeprefix("pool.")
        server.status, server.body = 200, node_list((alive, other.port, ""))
        result = await engine.subscriptions.refresh("pool")
        assert result.ok and result.nodes == 1
        await until(lambda: pool_routes(engine) == [other_name])

        # No secret anywhere it could be seen.
        shown = [
            caplog.text,
            json.dumps(status_document(engine.snapshot())),
            " ".join(str(r.chain) for r in engine.router.routes),
            repr(engine.config),
        ]
        for text in shown:
            assert "TOPSECRETPATH" not in text
            assert "NODESECRET" not in text


async def test_overrides_survive_a_refresh_and_private_nodes_are_refused(
    start_engine, list_server, echo_origin
) -> None:
    server, port, ca = list_server
    server.body = node_list(("one", 1081, ""), ("two", 1082, ""), ("three", 1083, ""))
    text = config(
        port,
        ca,
        echo_origin.port,
        'nodes = { "two" = { enabled = false }, "three" = { timeout = "2s" } }',
    )
    engine = await start_engine(text, probe_on_start=False)
    await until(lambda: pool_routes(engine) == ["pool.one", "pool.three"])
    assert engine.config.route("pool.three").timeout == 2.0
    result = await engine.subscriptions.refresh("pool")
    assert result.ok and pool_routes(engine) == ["pool.one", "pool.three"]
    assert engine.config.route("pool.three").timeout == 2.0
    # Without allow_private, loopback nodes are refused, each with the reason.
    refused = config(port, ca, echo_origin.port).replace("allow_private = true", "")
    engine2 = await start_engine(refused, probe_on_start=False)
    result = await engine2.subscriptions.refresh("pool")
    assert not result.ok and "private, loopback or link-local" in result.line
    # The last good list stays stored, and its private nodes are not used here either.
    assert pool_routes(engine2) == []
    assert len(store.load("pool").nodes) == 3


def raced(engine) -> list[str]:
    service = next(s for s in engine.router.services if s.name == "local")
    return [r.name for r in engine.router.candidates(service)]


async def test_only_the_best_few_nodes_are_raced_and_a_dead_one_is_replaced(
    start_engine, list_server, echo_origin
) -> None:
    server, port, ca = list_server
    with peers.microsocks() as one, peers.microsocks() as two, peers.microsocks() as three:
        nodes = {"one": one, "two": two, "three": three}
        server.body = node_list(*((name, p.port, "") for name, p in nodes.items()))
        engine = await start_engine(config(port, ca, echo_origin.port, "keep = 2"))
        await until(lambda: len(pool_routes(engine)) == 3)
        # Every node is probed (ranked); two are raced, the fastest first.
        await until(lambda: active(engine) is not None and len(raced(engine)) == 2)
        first = active(engine)
        assert raced(engine)[0] == first
        standby = next(n for n in pool_routes(engine) if n not in raced(engine))
        await echo(engine, echo_origin.port)
        # The active node dies: within one probe interval (and the probe's own time) it is
        # out of the raced few, and the standby node is in.
        dead = nodes[first.removeprefix("pool.")]
        dead.process.kill()
        dead.process.wait()
        await until(lambda: first not in raced(engine), timeout=INTERVAL + 15)
        assert standby in raced(engine) and len(raced(engine)) == 2
        await until(lambda: active(engine) not in (None, first))
        await echo(engine, echo_origin.port)


async def test_a_pool_without_nodes_leaves_the_service_on_its_other_routes(
    start_engine, list_server, echo_origin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server, port, ca = list_server
    server.status, server.body = 500, b"down"
    engine = await start_engine(config(port, ca, echo_origin.port), probe_on_start=False)
    assert pool_routes(engine) == []
    # Not every route: the file's own (the pool named alone has no node to give).
    own = [r.name for r in engine.config.routes]
    assert raced(engine) == own
    assert "pool pool has no nodes: local use their other routes" in caplog.text
    await echo(engine, echo_origin.port)


async def test_a_long_list_is_read_whole_and_one_too_large_is_refused(
    start_engine, list_server, echo_origin
) -> None:
    server, port, ca = list_server
    # Far more than Outline's 64 KiB (comment lines, as long lists carry), read whole.
    padding = "".join(f"# {'x' * 100} {i}\n" for i in range(3000)).encode()
    server.body = padding + b"socks5://u:NODESECRET@127.0.0.1:1081#last\n"
    engine = await start_engine(config(port, ca, echo_origin.port), probe_on_start=False)
    await until(lambda: pool_routes(engine) == ["pool.last"])
    # Over the limit: refused as too large, not read as a shorter list; the last good stays.
    server.body = b"socks5://127.0.0.1:1082#first\n" + b"#" * (5 * 1024 * 1024)
    result = await engine.subscriptions.refresh("pool")
    assert not result.ok and "the list is too large" in result.line
    assert "keeping the last good list (1 nodes)" in result.line
    assert pool_routes(engine) == ["pool.last"]


async def test_a_node_whose_name_resolves_to_this_machine_is_refused_when_dialed(
    start_engine, list_server, echo_origin
) -> None:
    server, port, ca = list_server
    with peers.microsocks() as node:
        # A name, so the list's address check cannot see it; it resolves to loopback.
        server.body = f"socks5://node.test:{node.port}#sneaky\n".encode()
        text = (
            config(port, ca, echo_origin.port)
            .replace("allow_private = true", "")
            .replace(
                '"sub.test" = ["127.0.0.1"]',
                '"sub.test" = ["127.0.0.1"], "node.test" = ["127.0.0.1"]',
            )
        )
        engine = await start_engine(text)
        await until(lambda: pool_routes(engine) == ["pool.sneaky"])

        def diagnosis() -> str:
            result = engine.monitor.results.get(("local", "pool.sneaky"))
            return result.diagnosis if result is not None else ""

        await until(lambda: "resolves to a private, loopback or link-local" in diagnosis())
        assert "allow_private = true allows it" in diagnosis()
        result = engine.monitor.results[("local", "pool.sneaky")]
        assert "node.test resolves to 127.0.0.1" in result.failed.detail
        with pytest.raises((OSError, asyncio.IncompleteReadError, ConnectionError)):
            await echo(engine, echo_origin.port)
        assert "connected to" not in node.logs()


async def test_no_node_secret_of_any_kind_shows_in_logs_status_or_config_show(
    start_engine, list_server, echo_origin, caplog: pytest.LogCaptureFixture, tmp_path
) -> None:
    from helper.config import load_layers
    from helper.config.show import show

    caplog.set_level(logging.DEBUG)
    server, port, ca = list_server
    uuid = "3b5e2f4c-8a1d-4e6f-9b2a-7c8d9e0f1a2b"
    vmess = {"v": "2", "ps": "vm", "add": "127.0.0.1", "port": "9", "id": uuid, "net": "tcp"}
    clash = f"""\
proxies:
  - {{name: ss, type: ss, server: 127.0.0.1, port: 9, cipher: aes-256-gcm, password: NODESECRETss}}
  - {{name: tr, type: trojan, server: 127.0.0.1, port: 9, password: NODESECRETtr, sni: a.test}}
  - {{name: vl, type: vless, server: 127.0.0.1, port: 9, uuid: {uuid}, tls: true}}
  - {{name: bad, type: ss, server: 127.0.0.1, port: 9, cipher: aes-999, password: NODESECRETbad}}
"""
    server.body = clash.encode()
    text = config(port, ca, echo_origin.port)
    engine = await start_engine(text)
    await until(lambda: pool_routes(engine) == ["pool.ss", "pool.tr", "pool.vl"])
    # The same nodes as plain links (vmess as v2rayN's base64 JSON) in a refresh.
    server.body = "\n".join(
        [
            "ss://aes-256-gcm:NODESECRETss@127.0.0.1:9#ss",
            "vmess://" + base64.b64encode(json.dumps(vmess).encode()).decode(),
            f"vless://{uuid}@127.0.0.1:9?security=tls#vl",
            "trojan://NODESECRETtr@127.0.0.1:9#tr",
        ]
    ).encode()
    assert (await engine.subscriptions.refresh("pool")).ok
    await until(lambda: len(pool_routes(engine)) == 4)
    # Connections through every node fail (nothing listens): their errors are logged.
    with pytest.raises((OSError, asyncio.IncompleteReadError, ConnectionError)):
        await echo(engine, echo_origin.port)
    await until(lambda: len(engine.monitor.results) >= 4)
    path = tmp_path / "detour.toml"
    path.write_text(text)
    path.chmod(0o600)
    shown = [
        caplog.text,
        json.dumps(status_document(engine.snapshot())),
        " ".join(str(r.chain) for r in engine.router.routes),
        repr(engine.config),
        show(load_layers(str(path))),
    ]
    for seen in shown:
        assert "NODESECRET" not in seen and uuid not in seen and "TOPSECRETPATH" not in seen
