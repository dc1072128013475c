"""Two hops through real nginx fronts: detour -> front A -> entry relay -> front B -> exit
relay -> the destination. The entry relay reaches its destinations through the exit relay's
access key (`[upstream] chain`); bytes arrive intact (sha256 both ways), the entry checks its
second hop at start, and with the exit gone a probe's diagnosis names the second hop."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helper.relay.config import parse_relay_config
from helper.relay.keys import RelayKeys
from helper.relay.run import serve
from helper.relay.server import RelayServer
from tests.conftest import config_text
from tests.integration.test_fronted_cdn import _as_asyncio_streams
from tests.support import origins, peers
from tests.support.integrity import run_integrity
from tests.support.sizes import transfer_size
from transports import DialError, DialOptions, Endpoint, parse_chain
from transports.fronted.accesskey import AccessKey

pytestmark = pytest.mark.peer

ANY = '[destinations]\nallow = "any"\npublic = ["127.0.0.0/8"]\n'
HOP = "relay-b.test through cdn-b.test"


def relay_text(state: Path, extra: str = "") -> str:
    return f'[relay]\nlisten = "127.0.0.1:0"\nstate = "{state}"\n{ANY}{extra}'


@contextlib.contextmanager
def edge(test_ca: origins.TestCA, front: str, host: str, port: int) -> Iterator[peers.Peer]:
    cert = test_ca.issue(front, host)
    with peers.nginx_front([front], cert, {host: ("127.0.0.1", port)}) as peer:
        yield peer


@dataclass
class TwoHops:
    exit: RelayServer
    entry: RelayServer
    exit_key: AccessKey  # the entry's key to the exit
    key: AccessKey  # a client's key to the entry
    entry_text: str  # the entry's config


@contextlib.asynccontextmanager
async def two_hops(tmp_path: Path, test_ca: origins.TestCA) -> AsyncIterator[TwoHops]:
    exit_config = parse_relay_config(relay_text(tmp_path / "exit"))
    exit_keys = RelayKeys(exit_config.state)
    exit_keys.generate()
    exit_relay = RelayServer(exit_config, exit_keys)
    _, exit_port = await exit_relay.start()
    try:
        with edge(test_ca, "cdn-b.test", "relay-b.test", exit_port) as edge_b:
            exit_key = exit_keys.add_client(
                "entry", Endpoint("127.0.0.1", edge_b.port), "cdn-b.test", "relay-b.test"
            )
            entry_text = relay_text(
                tmp_path / "entry",
                f'[upstream]\nchain = "front:{exit_key.encode()}"\n'
                f'extra_ca = ["{test_ca.ca_path}"]\n',
            )
            entry_config = parse_relay_config(entry_text)
            entry_keys = RelayKeys(entry_config.state)
            entry_keys.generate()
            entry = RelayServer(entry_config, entry_keys)
            assert entry.upstream is not None
            await entry.upstream.check()  # as `detour relay` does at start
            _, entry_port = await entry.start()
            try:
                with edge(test_ca, "cdn-a.test", "relay-a.test", entry_port) as edge_a:
                    key = entry_keys.add_client(
                        "alice", Endpoint("127.0.0.1", edge_a.port), "cdn-a.test", "relay-a.test"
                    )
                    yield TwoHops(exit_relay, entry, exit_key, key, entry_text)
            finally:
                await entry.stop(grace=0.5)
    finally:
        await exit_relay.stop(grace=0.5)


async def through(hops: TwoHops, test_ca: origins.TestCA, size: int, integrity_origin) -> None:
    async with contextlib.AsyncExitStack() as resources:
        dialer = parse_chain("front:" + hops.key.encode()).build(
            DialOptions(tls=test_ca.client_context(), resources=resources)
        )
        stream = await dialer.dial(Endpoint("127.0.0.1", integrity_origin.port))
        reader, writer = await _as_asyncio_streams(stream)
        result = await run_integrity(reader, writer, up=size, down=size, half_close=False)
        assert result.ok_up and result.ok_down
        writer.close()


async def test_two_hops_carry_bytes_intact(
    tmp_path: Path, test_ca: origins.TestCA, integrity_origin, echo_origin
) -> None:
    async with two_hops(tmp_path, test_ca) as hops:
        await through(hops, test_ca, 1 << 20, integrity_origin)
        assert hops.exit.per_client["entry"] == 1  # the entry's one multiplexed tunnel
        # The entry's own policy still holds: a private address never leaves it.
        async with contextlib.AsyncExitStack() as resources:
            dialer = parse_chain("front:" + hops.key.encode()).build(
                DialOptions(tls=test_ca.client_context(), resources=resources)
            )
            with pytest.raises(DialError) as raised:
                await dialer.dial(Endpoint("10.1.2.3", 443))
            assert "second hop" not in raised.value.detail
            assert "not reachable here" in raised.value.detail


@pytest.mark.slow
async def test_two_hops_carry_64_mib_intact(
    tmp_path: Path, test_ca: origins.TestCA, integrity_origin
) -> None:
    async with two_hops(tmp_path, test_ca) as hops:
        # 16 MiB in make test: tests/support/sizes.py
        await through(hops, test_ca, transfer_size(64 << 20), integrity_origin)


async def test_without_the_exit_the_diagnosis_names_the_second_hop(
    tmp_path: Path, test_ca: origins.TestCA, echo_origin, start_engine
) -> None:
    async with two_hops(tmp_path, test_ca) as hops:
        text = config_text(
            routes={"front": f"front:{hops.key.encode()}"},
            extra=f"""
            [tls]
            extra_ca = ["{test_ca.ca_path}"]
            [[service]]
            name = "echo"
            cidrs = ["127.0.0.0/8"]
            probes = ["tcp://127.0.0.1:{echo_origin.port}"]
            """,
        )
        engine = await start_engine(text, probe_on_start=False)
        service = engine.router.services.services[0]
        await engine.monitor.probe_now(service)
        (result,) = engine.monitor.probe_status()[0].values()
        assert result.ok, result.diagnosis

        await hops.exit.stop(grace=0)  # the exit relay is gone (its front stays)
        with pytest.raises(DialError) as raised:
            await engine.router.route("front").dial(Endpoint("127.0.0.1", echo_origin.port))
        assert f"second hop {HOP}" in raised.value.detail

        await engine.monitor.probe_now(service)
        (result,) = engine.monitor.probe_status()[0].values()
        assert not result.ok
        assert result.diagnosis.startswith(f"the relay's second hop {HOP} failed: ")


async def test_a_relay_whose_second_hop_is_down_says_so_at_start(
    tmp_path: Path, test_ca: origins.TestCA, capsys: pytest.CaptureFixture[str]
) -> None:
    async with two_hops(tmp_path, test_ca) as hops:
        await hops.exit.stop(grace=0)
        config = tmp_path / "entry.toml"
        config.write_text(hops.entry_text.replace(str(tmp_path / "entry"), "entry-2"))
        RelayKeys(tmp_path / "entry-2").generate()
        code = await serve(str(config), stop=None)  # type: ignore[arg-type]  # never waited on
        assert code == 1
        err = capsys.readouterr().err
        assert f"detour relay: the second hop {HOP} cannot be reached" in err
        assert "Traceback" not in err


def test_the_upstream_keys_are_checked() -> None:
    from helper.config import ConfigError

    with pytest.raises(ConfigError) as raised:
        parse_relay_config(
            relay_text(Path("/nonexistent"), '[upstream]\nchain = "front:nope"\nca = 1\n')
        )
    text = str(raised.value)
    assert "upstream.chain: front: an access key starts with 'dtr1:'" in text
    assert "upstream.ca: unknown key" in text


def test_an_upstream_failure_reads_as_its_hop() -> None:
    from helper.probe.diagnose import second_hop

    assert second_hop(f"at the relay: second hop {HOP}: front 127.0.0.1:1: refused") == HOP
    assert second_hop("at the relay: 10.0.0.1:443 is not reachable here") is None
    assert second_hop("at the relay: second hop ") is None
