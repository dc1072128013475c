"""The relay against a client it no longer wants and against a prober who saw a request:
revocation reaches open tunnels (a busy one included), a token opens one tunnel only (also
across relays sharing a state directory), and the state directory is kept private. Through
real sockets: detour's `front:` dialer, or raw upgrade requests."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import stat
import time
from pathlib import Path

import pytest

from helper.relay.keys import RelayKeys, RelayKeysError
from helper.relay.server import RelayServer
from tests.support import origins, relays
from tests.support.relays import ANY, Relay, echo, front_dialer, relay_config
from tests.support.waiting import until
from transports import DialError, Endpoint
from transports.fronted.accesskey import access_token


def running_relay(
    tmp_path: Path, ca: origins.TestCA, *, multiplex: bool = True, recheck: float = 30
) -> contextlib.AbstractAsyncContextManager[Relay]:
    """The relay of tests/support/relays.py, its clients rechecked every `recheck` s."""
    return relays.running_relay(tmp_path, ca, multiplex=multiplex, recheck=recheck)


class Busy:
    """A connection kept busy: echoes round trips through it until it breaks."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.trips = 0
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> BaseException | None:
        try:
            while True:
                if await echo(self.stream, b"x" * 4096) != b"x" * 4096:
                    return None
                self.trips += 1
        except (ConnectionError, asyncio.IncompleteReadError, OSError) as exc:
            return exc


# --- revocation -----------------------------------------------------------------------------


async def test_a_revoked_client_loses_its_busy_tunnel_at_its_next_connection(
    tmp_path: Path, test_ca, echo_origin
) -> None:
    async with running_relay(tmp_path, test_ca) as relay, front_dialer(relay) as dialer:
        target = Endpoint("127.0.0.1", echo_origin.port)
        busy = Busy(await dialer.dial(target))
        other = await dialer.dial(target)
        assert await echo(other, b"before") == b"before"
        await until(lambda: busy.trips > 10)
        relay.keys.revoke("alice")  # what `detour relay revoke alice` does
        assert busy.trips > 10 and not busy.task.done()  # busy, so no idle timeout saves us
        with pytest.raises(DialError):
            await dialer.dial(target)
        # The tunnel is gone, with every connection in it.
        assert isinstance(await asyncio.wait_for(busy.task, 10), BaseException)
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await echo(other, b"after")
        await until(lambda: not relay.server.sessions and not relay.server.per_client["alice"])
        # And later, a new tunnel: the website.
        with pytest.raises(DialError, match="instead of a WebSocket"):
            await dialer.dial(target)


@pytest.mark.parametrize("multiplex", [True, False], ids=["mux", "one-per-tunnel"])
async def test_a_revoked_clients_busy_connection_is_closed_without_a_new_one(
    tmp_path: Path, test_ca, echo_origin, multiplex: bool
) -> None:
    """A tunnel that opens nothing new (one long busy connection) is found by the relay's
    periodic check."""
    async with (
        running_relay(tmp_path, test_ca, multiplex=multiplex, recheck=0.2) as relay,
        front_dialer(relay) as dialer,
    ):
        busy = Busy(await dialer.dial(Endpoint("127.0.0.1", echo_origin.port)))
        await until(lambda: busy.trips > 10)
        relay.keys.revoke("alice")
        assert isinstance(await asyncio.wait_for(busy.task, 10), BaseException)
        await until(lambda: not relay.server.holders and not relay.server.per_client["alice"])


async def test_a_reissued_client_name_does_not_reopen_the_old_key(
    tmp_path: Path, test_ca, echo_origin
) -> None:
    """Revoked, then added again under the same name: the old key's certificate no longer
    matches, so its open tunnel closes all the same."""
    async with running_relay(tmp_path, test_ca) as relay, front_dialer(relay) as dialer:
        target = Endpoint("127.0.0.1", echo_origin.port)
        busy = Busy(await dialer.dial(target))
        await until(lambda: busy.trips > 3)
        relay.keys.revoke("alice")
        relay.keys.add_client("alice", Endpoint("127.0.0.1", relay.port), "r.test", "r.test")
        with pytest.raises(DialError):
            await dialer.dial(target)
        assert isinstance(await asyncio.wait_for(busy.task, 10), BaseException)


async def test_other_clients_tunnels_stay_open(tmp_path: Path, test_ca, echo_origin) -> None:
    async with running_relay(tmp_path, test_ca, recheck=0.1) as relay:
        bob = relay.keys.add_client(
            "bob", Endpoint("127.0.0.1", relay.port), "relay.test", "relay.test"
        )
        async with front_dialer(relay) as alice_dialer, front_dialer(relay, bob) as bob_dialer:
            target = Endpoint("127.0.0.1", echo_origin.port)
            alice = Busy(await alice_dialer.dial(target))
            bob_stream = await bob_dialer.dial(target)
            relay.keys.revoke("alice")
            await asyncio.wait_for(alice.task, 10)
            assert await echo(bob_stream, b"still") == b"still"
            second = await bob_dialer.dial(target)
            assert await echo(second, b"new") == b"new"


# --- replays --------------------------------------------------------------------------------


def upgrade(relay: Relay, token: str) -> bytes:
    return (
        f"GET {relay.keys.path} HTTP/1.1\r\nHost: relay.test\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\nCookie: __session={token}\r\n\r\n"
    ).encode()


async def first_answer(port: int, ca: origins.TestCA, data: bytes) -> bytes:
    """The head the relay (serving TLS) answers `data` with."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ca.client_context(), server_hostname="relay.test"
    )
    try:
        writer.write(data)
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()


def status(head: bytes) -> bytes:
    return head.split(b"\r\n", 1)[0]


async def test_a_replayed_upgrade_gets_the_website(tmp_path: Path, test_ca) -> None:
    async with running_relay(tmp_path, test_ca) as relay:
        token = access_token(relay.key)
        first = await first_answer(relay.port, relay.ca, upgrade(relay, token))
        assert status(first) == b"HTTP/1.1 101 Switching Protocols"
        names = [line.split(b":")[0] for line in first.split(b"\r\n")[1:] if line]
        assert names == [b"Server", b"Date", b"Connection", b"Upgrade", b"Sec-WebSocket-Accept"]
        assert b"\r\nServer: nginx\r\n" in first
        website = await first_answer(relay.port, relay.ca, upgrade(relay, "nothing"))
        for _ in range(3):
            again = await first_answer(relay.port, relay.ca, upgrade(relay, token))
            assert status(again) == status(website) == b"HTTP/1.1 404 Not Found"
            assert again.split(b"\r\nDate:")[0] == website.split(b"\r\nDate:")[0]


async def test_replays_do_not_fill_the_owners_tunnel_limit(
    tmp_path: Path, test_ca, echo_origin
) -> None:
    async with running_relay(tmp_path, test_ca) as relay:
        token = access_token(relay.key)
        answers = [
            status(await first_answer(relay.port, relay.ca, upgrade(relay, token)))
            for _ in range(70)
        ]
        assert answers.count(b"HTTP/1.1 101 Switching Protocols") == 1
        async with front_dialer(relay) as dialer:
            stream = await dialer.dial(Endpoint("127.0.0.1", echo_origin.port))
            assert await echo(stream, b"mine") == b"mine"


async def test_two_relays_sharing_a_state_directory_share_the_replay_cache(
    tmp_path: Path, test_ca
) -> None:
    async with running_relay(tmp_path, test_ca) as relay:
        config = dataclasses.replace(relay.server.config)
        twin = RelayServer(config, RelayKeys(config.state))
        _, twin_port = await twin.start()
        try:
            token = access_token(relay.key)
            first = await first_answer(twin_port, relay.ca, upgrade(relay, token))
            again = await first_answer(relay.port, relay.ca, upgrade(relay, token))
            assert status(first).startswith(b"HTTP/1.1 101")
            assert status(again) == b"HTTP/1.1 404 Not Found"
            # Two fresh tokens of one second are two tunnels, not a replay.
            now = time.time()
            one, two = access_token(relay.key, now), access_token(relay.key, now)
            for port, token in ((relay.port, one), (twin_port, two)):
                head = await first_answer(port, relay.ca, upgrade(relay, token))
                assert status(head).startswith(b"HTTP/1.1 101")
        finally:
            await twin.stop(grace=0.5)


# --- the state directory --------------------------------------------------------------------


async def test_a_state_directory_others_can_read_is_made_private(
    tmp_path: Path, test_ca, caplog: pytest.LogCaptureFixture
) -> None:
    config = relay_config(tmp_path, test_ca, ANY)
    keys = RelayKeys(config.state)
    keys.generate()
    # As an older relay left it, or a directory made by hand: 0755, `path` 0644.
    os.chmod(config.state, 0o755)
    os.chmod(keys.path_file, 0o644)
    os.chmod(keys.clients_file, 0o644)
    caplog.set_level(logging.WARNING)
    server = RelayServer(config, keys)
    await server.start()
    try:
        assert stat.S_IMODE(os.stat(config.state).st_mode) == 0o700
        for path in (keys.path_file, keys.clients_file, keys.relay_key, keys.ca_key):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
        replay = config.state / "replay.db"
        assert stat.S_IMODE(os.stat(replay).st_mode) == 0o600
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any(f"{config.state} was readable by others (mode 0755)" in w for w in warnings)
        assert any(f"{keys.path_file} was readable by others (mode 0644)" in w for w in warnings)
    finally:
        await server.stop(grace=0.5)


def test_a_secret_that_cannot_be_made_private_is_refused(
    tmp_path: Path, test_ca, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = relay_config(tmp_path, test_ca, ANY)
    keys = RelayKeys(config.state)
    keys.generate()
    os.chmod(keys.path_file, 0o644)

    def refuse(path, mode):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "chmod", refuse)
    with pytest.raises(RelayKeysError, match=r"path was readable by others \(mode 0644\)"):
        RelayServer(config, keys)


async def test_keygen_into_an_existing_open_directory(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    keys = RelayKeys(state)
    keys.generate()
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(keys.path_file).st_mode) == 0o600


async def test_a_relay_from_before_the_nonce_still_lets_clients_in(
    tmp_path: Path, test_ca, echo_origin, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relay that reads only NAME.STAMP.MAC tokens answers the new form with its website;
    the client tries the older form once and keeps to it."""
    from helper.relay import server as relay_server
    from transports.fronted import accesskey

    seen: list[str] = []

    def old_reader(value, tokens, path, now=None):
        seen.append(value)
        if value.count(".") != 2:  # (the names here have no dots)
            return None
        return accesskey.read_access_token(value, tokens, path, now)

    monkeypatch.setattr(relay_server, "read_access_token", old_reader)
    async with (
        running_relay(tmp_path, test_ca) as relay,
        front_dialer(relay, options=";mux=off") as dialer,
    ):
        monkeypatch.setattr(relay.server.replays, "first_use", lambda *args: True)  # (none then)
        target = Endpoint("127.0.0.1", echo_origin.port)
        for word in (b"one", b"two"):
            stream = await dialer.dial(target)
            assert await echo(stream, word) == word
            stream.close()
        assert [token.count(".") for token in seen] == [3, 2, 2]


async def test_a_refusal_after_a_tunnel_opened_is_not_tried_again(
    tmp_path: Path, test_ca, echo_origin
) -> None:
    async with (
        running_relay(tmp_path, test_ca) as relay,
        front_dialer(relay, options=";mux=off") as dialer,
    ):
        target = Endpoint("127.0.0.1", echo_origin.port)
        stream = await dialer.dial(target)
        stream.close()
        relay.keys.revoke("alice")
        with pytest.raises(DialError, match="instead of a WebSocket"):
            await dialer.dial(target)
        assert dialer._nonce is True
