"""`detour relay`s on loopback for the fronted tunnel's tests: one serving TLS itself (the
client "alice" added), one behind a CDN edge (plain HTTP: nginx is the front, `nginx_front`),
and a censor that freezes every flow to the edge after some bytes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from helper.relay.config import RelayConfig, parse_relay_config
from helper.relay.keys import RelayKeys
from helper.relay.server import RelayServer
from tests.support import origins, peers
from transports import DialOptions, Endpoint, parse_chain
from transports.fronted import client as front_client
from transports.fronted.accesskey import AccessKey

# Any destination, loopback counted as public: the tests' origins are on 127.0.0.1.
ANY = '[destinations]\nallow = "any"\npublic = ["127.0.0.0/8"]\n'


@dataclasses.dataclass
class Relay:
    server: RelayServer
    keys: RelayKeys
    port: int
    key: AccessKey
    ca: origins.TestCA

    def dialer(self, key: AccessKey | None = None):
        chain = parse_chain("front:" + (key or self.key).encode())
        return chain.build(DialOptions(tls=self.ca.client_context(), handshake_timeout=5))


def relay_config(directory: Path, ca: origins.TestCA, extra: str = "") -> RelayConfig:
    """A relay serving TLS for relay.test itself; `extra`: more sections and keys (after
    [limits], so bare keys are limits)."""
    cert, key = ca.issue("relay.test", "127.0.0.1")
    return parse_relay_config(
        f"""
[relay]
listen = "127.0.0.1:0"
state = "{directory}/state"
tls_cert = "{cert}"
tls_key = "{key}"
[public]
address = "127.0.0.1:1"
front = "relay.test"
host = "relay.test"
[limits]
handshake_timeout = "3s"
{extra}
""",
        "test relay config",
    )


@contextlib.asynccontextmanager
async def running_relay(
    tmp_path: Path,
    ca: origins.TestCA,
    extra: str = ANY,
    *,
    multiplex: bool = True,
    **server_options: Any,
) -> AsyncIterator[Relay]:
    """relay_config()'s relay, started, with the client "alice"; `multiplex=False`: one
    that does not multiplex (as one from before multiplexing); `server_options` go to
    RelayServer (`recheck=`)."""
    config = dataclasses.replace(relay_config(tmp_path, ca, extra), multiplex=multiplex)
    keys = RelayKeys(config.state)
    keys.generate()
    server = RelayServer(config, keys, **server_options)
    _, port = await server.start()
    key = keys.add_client("alice", Endpoint("127.0.0.1", port), "relay.test", "relay.test")
    try:
        yield Relay(server, keys, port, key, ca)
    finally:
        await server.stop(grace=0.5)


@contextlib.asynccontextmanager
async def front_dialer(
    relay: Relay, key: AccessKey | None = None, options: str = ""
) -> AsyncIterator[front_client.FrontDialer]:
    """A `front:` dialer to the relay (its key, or `key`; `options`: `;name=value`...),
    closed with its resources at the end."""
    async with contextlib.AsyncExitStack() as resources:
        chain = parse_chain("front:" + (key or relay.key).encode() + options)
        dialer = chain.build(
            DialOptions(tls=relay.ca.client_context(), handshake_timeout=3, resources=resources)
        )
        assert isinstance(dialer, front_client.FrontDialer)
        yield dialer


async def echo(stream, data: bytes) -> bytes:
    """`data` written to the stream and as many bytes read back (through an echo origin)."""
    stream.write(data)
    await stream.drain()
    return await stream.readexactly(len(data))


@contextlib.asynccontextmanager
async def relay_behind_a_front(
    tmp_path: Path,
    extra: str = "",
    *,
    before_start: Callable[[RelayServer], None] | None = None,
) -> AsyncIterator[tuple[RelayServer, RelayKeys, int]]:
    """A relay without TLS of its own (a CDN edge in front of it speaks TLS), any loopback
    destination; `extra`: more sections; `before_start(server)` changes it before it
    listens. Yields (server, keys, its port)."""
    config = parse_relay_config(
        f'[relay]\nlisten = "127.0.0.1:0"\nstate = "{tmp_path}/state"\n' + ANY + extra
    )
    keys = RelayKeys(config.state)
    keys.generate()
    server = RelayServer(config, keys)
    if before_start is not None:
        before_start(server)
    _, port = await server.start()
    try:
        yield server, keys, port
    finally:
        await server.stop(grace=0.5)


@contextlib.contextmanager
def nginx_front(test_ca: origins.TestCA, relay_port: int) -> Iterator[peers.Peer]:
    """nginx as the CDN edge: TLS for the front name cdn.test, requests for relay.test
    (WebSocket upgrades included) passed on to the relay at `relay_port`."""
    cert = test_ca.issue("cdn.test", "relay.test")
    with peers.nginx_front(["cdn.test"], cert, {"relay.test": ("127.0.0.1", relay_port)}) as edge:
        yield edge


@contextlib.asynccontextmanager
async def freezing_censor(upstream: int, after: int) -> AsyncIterator[int]:
    """A censor in front of 127.0.0.1:`upstream` that freezes every flow after `after`
    bytes; yields the port to dial."""
    from helper.lab.censor import Censor, Policy, Rule

    port = peers.free_port()
    censor = Censor(
        {("127.0.0.1", port): ("127.0.0.1", upstream)},
        Policy(rules=(Rule("freeze", after=after),), name="freeze"),
    )
    await censor.start()
    try:
        yield port
    finally:
        await censor.stop()


@contextlib.asynccontextmanager
async def censored_front(
    test_ca: origins.TestCA, relay_port: int, freeze_after: int
) -> AsyncIterator[tuple[peers.Peer, int]]:
    """nginx_front(), and a freezing_censor() in front of it: (the edge, the censored port)."""
    with nginx_front(test_ca, relay_port) as edge:
        async with freezing_censor(edge.port, freeze_after) as port:
            yield edge, port


@contextlib.asynccontextmanager
async def serving(handle: Callable[[Any, Any], Awaitable[None]]) -> AsyncIterator[int]:
    """An asyncio stream server on 127.0.0.1 calling `handle(reader, writer)`; yields its
    port."""
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def forward_reading_tls(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    upstream: int,
    on_record: Callable[[bytes], bool],
    on_answer: Callable[[bytes], None] | None = None,
) -> None:
    """A connection's handler for a TCP forwarder to 127.0.0.1:`upstream` that watches the
    client's TLS: each whole record the client sends goes to `on_record` (the record with
    its header) until it returns True (the handshake seen: the rest is only forwarded);
    each chunk upstream answers, to `on_answer`."""
    try:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream)
    except OSError:
        writer.close()
        return
    watching = True

    async def client_to_upstream() -> None:
        nonlocal watching
        buffered = b""
        while data := await reader.read(65536):
            if watching:
                buffered += data
                while len(buffered) >= 5:
                    length = int.from_bytes(buffered[3:5], "big")
                    if len(buffered) < 5 + length:
                        break
                    record, buffered = buffered[: 5 + length], buffered[5 + length :]
                    if on_record(record):
                        watching, buffered = False, b""
                        break
            up_writer.write(data)
            await up_writer.drain()
        up_writer.close()

    async def upstream_to_client() -> None:
        while data := await up_reader.read(65536):
            if on_answer is not None:
                on_answer(data)
            writer.write(data)
            await writer.drain()
        writer.close()

    with contextlib.suppress(OSError):
        await asyncio.gather(client_to_upstream(), upstream_to_client())
    writer.close()
    up_writer.close()
