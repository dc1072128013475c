"""Many connections in one fronted tunnel (transports/fronted/mux.py) against a real
`detour relay` on loopback: sharing, limits, the fallback to one tunnel per connection
(an older relay, or `;mux=off`), a tunnel that dies silently, idle tunnels, integrity."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from tests.support.integrity import run_integrity
from tests.support.relays import ANY, echo, front_dialer, running_relay
from tests.support.waiting import until
from transports import DialError, Endpoint, Failure
from transports.fronted import client as front_client


async def test_connections_share_one_tunnel(tmp_path: Path, test_ca, echo_origin) -> None:
    async with running_relay(tmp_path, test_ca) as relay, front_dialer(relay) as dialer:
        target = Endpoint("127.0.0.1", echo_origin.port)
        streams = await asyncio.gather(*(dialer.dial(target) for _ in range(20)))
        replies = await asyncio.gather(*(echo(s, b"n%d" % i) for i, s in enumerate(streams)))
        assert replies == [b"n%d" % i for i in range(20)]
        assert len(dialer.sessions) == 1
        assert relay.server.per_client["alice"] == 1  # one WebSocket
        assert relay.server.streams_of["alice"] == 20
        for stream in streams:
            stream.close()
        await until(lambda: relay.server.streams_of["alice"] == 0)
        # The next connection reuses the open tunnel: no new handshakes.
        stream = await dialer.dial(target)
        assert await echo(stream, b"again") == b"again"
        assert relay.server.per_client["alice"] == 1
        stream.close()


@pytest.mark.parametrize("how", ["relay-without-multiplex", "mux=off"])
async def test_one_tunnel_per_connection_without_multiplexing(
    tmp_path: Path, test_ca, echo_origin, how: str
) -> None:
    multiplex = how != "relay-without-multiplex"
    options = ";mux=off" if how == "mux=off" else ""
    async with (
        running_relay(tmp_path, test_ca, multiplex=multiplex) as relay,
        front_dialer(relay, options=options) as dialer,
    ):
        target = Endpoint("127.0.0.1", echo_origin.port)
        streams = [await dialer.dial(target) for _ in range(3)]
        for i, stream in enumerate(streams):
            assert await echo(stream, b"x%d" % i) == b"x%d" % i
        assert relay.server.per_client["alice"] == 3
        assert not dialer.sessions
        for stream in streams:
            stream.close()


async def test_the_connection_limit_is_a_clear_refusal(
    tmp_path: Path, test_ca, echo_origin
) -> None:
    async with (
        running_relay(tmp_path, test_ca, "connections_per_client = 3\n" + ANY) as relay,
        front_dialer(relay) as dialer,
    ):
        target = Endpoint("127.0.0.1", echo_origin.port)
        streams = [await dialer.dial(target) for _ in range(3)]
        with pytest.raises(DialError) as caught:
            await dialer.dial(target)
        assert caught.value.failure is Failure.PROXY_REFUSED
        assert "limit" in caught.value.detail
        streams[0].close()
        await until(lambda: relay.server.streams_of["alice"] == 2)
        fourth = await dialer.dial(target)  # room again
        assert await echo(fourth, b"ok") == b"ok"
        for stream in (*streams[1:], fourth):
            stream.close()


async def test_many_transfers_at_once_arrive_intact(
    tmp_path: Path, test_ca, start_engine, integrity_origin
) -> None:
    from tests.conftest import config_text
    from tests.support.clients import open_socks5

    async with running_relay(tmp_path, test_ca) as relay:
        text = config_text(routes={"front": "front:" + relay.key.encode()}, default="front")
        text += f'\n[tls]\nextra_ca = ["{relay.ca.ca_path}"]\n'
        engine = await start_engine(text)
        size = 4 * 1024 * 1024

        async def one() -> None:
            reader, writer = await open_socks5(
                engine.mixed_address, "127.0.0.1", integrity_origin.port
            )
            result = await run_integrity(reader, writer, up=size, down=size, half_close=True)
            assert result.received == size
            assert result.ok_down and result.ok_up

        await asyncio.gather(*(one() for _ in range(10)))
        assert len(relay.server.sessions) == 1


class PausableForwarder:
    """A TCP forwarder standing in for the path to the front; `pause()` makes it a black
    hole (bytes taken, nothing delivered, nothing closed), as a NAT that forgot the flow."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader, writer) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writers += [writer, up_writer]

        async def pipe(src, dst) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    if not self.flowing.is_set():
                        continue  # swallowed
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()


async def test_a_silently_dead_tunnel_is_replaced(
    tmp_path: Path, test_ca, echo_origin, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(front_client, "KEEPALIVE", 0.3)
    async with running_relay(tmp_path, test_ca) as relay:
        forwarder = PausableForwarder(relay.port)
        port = await forwarder.start()
        try:
            key = relay.key.with_overrides(address=Endpoint("127.0.0.1", port))
            async with front_dialer(relay, key) as dialer:
                target = Endpoint("127.0.0.1", echo_origin.port)
                stream = await dialer.dial(target)
                assert await echo(stream, b"before") == b"before"
                first = dialer.sessions[0]
                forwarder.flowing.clear()
                # The keepalive finds it dead; its connection learns it.
                await asyncio.wait_for(first.ended.wait(), 5)
                assert first.error is not None and first.error.failure is Failure.TIMEOUT
                with pytest.raises(ConnectionResetError):
                    await stream.read()
                forwarder.flowing.set()
                stream = await dialer.dial(target)  # a new tunnel
                assert await echo(stream, b"after") == b"after"
                assert stream.session is not first
                stream.close()
        finally:
            await forwarder.close()


async def test_idle_tunnels_are_closed_at_both_ends(
    tmp_path: Path, test_ca, echo_origin, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(front_client, "IDLE_CLOSE", 0.3)
    async with running_relay(tmp_path, test_ca) as relay, front_dialer(relay) as dialer:
        stream = await dialer.dial(Endpoint("127.0.0.1", echo_origin.port))
        assert await echo(stream, b"hi") == b"hi"
        stream.close()
        await until(lambda: not dialer.sessions)
        await until(lambda: not relay.server.sessions and not relay.server.per_client["alice"])


async def test_closing_the_dialer_closes_its_tunnels(tmp_path: Path, test_ca, echo_origin) -> None:
    async with running_relay(tmp_path, test_ca) as relay:
        async with front_dialer(relay) as dialer:
            stream = await dialer.dial(Endpoint("127.0.0.1", echo_origin.port))
            assert await echo(stream, b"hi") == b"hi"
        with pytest.raises(ConnectionResetError):
            await stream.read()
        await until(lambda: not relay.server.sessions)


async def test_a_stopping_relay_lets_open_connections_finish(
    tmp_path: Path, test_ca, echo_origin
) -> None:
    async with running_relay(tmp_path, test_ca) as relay, front_dialer(relay) as dialer:
        stream = await dialer.dial(Endpoint("127.0.0.1", echo_origin.port))
        stopping = asyncio.ensure_future(relay.server.stop(grace=30))
        await until(lambda: dialer.sessions[0].going_away)  # GOAWAY: no new connections here
        assert not dialer.sessions[0].usable(100)
        assert await echo(stream, b"still here") == b"still here"
        stream.close()
        # The stop ends when its last connection does, well inside the grace period.
        await asyncio.wait_for(stopping, 20)
        assert not relay.server.sessions


async def test_a_tunnel_that_ends_under_a_request_is_replaced_at_once(
    tmp_path: Path, test_ca, echo_origin, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The relay (or the CDN) ends a tunnel just as a request goes out on it: the dial goes
    through on a new tunnel instead of failing (which would count against the route)."""
    async with running_relay(tmp_path, test_ca) as relay, front_dialer(relay) as dialer:
        target = Endpoint("127.0.0.1", echo_origin.port)
        first = await dialer.dial(target)
        assert await echo(first, b"one") == b"one"
        first.close()
        old = dialer.sessions[0]
        serve_stream = relay.server._serve_stream
        calls = 0

        async def recycle(name, stream, target):
            nonlocal calls
            calls += 1
            if calls == 1:
                stream.session.close()  # the tunnel goes away under the request
                return
            await serve_stream(name, stream, target)

        monkeypatch.setattr(relay.server, "_serve_stream", recycle)
        second = await dialer.dial(target)
        assert second.session is not old and not old.alive
        assert await echo(second, b"two") == b"two"
        second.close()
