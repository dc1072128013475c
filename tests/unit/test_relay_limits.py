"""The relay's `[limits] carriers_per_session` (helper/relay/config.py): its default, a value
read, bad values named by their key; and how a session at its limit makes room
(helper/relay/carriers.py): the oldest carriers the relay has ended are closed, and a carrier is
refused only when every open one is in use."""

from __future__ import annotations

import pytest

from helper.config import ConfigError
from helper.relay.carriers import PER_SESSION, _Link, _Session
from helper.relay.config import parse_relay_config

BASE = '[relay]\nlisten = "127.0.0.1:8080"\nstate = "state"\n[destinations]\nallow = "any"\n'


def test_the_default_and_a_value() -> None:
    assert parse_relay_config(BASE).carriers_per_session == PER_SESSION == 32
    text = BASE + "[limits]\ncarriers_per_session = 40\n"
    assert parse_relay_config(text).carriers_per_session == 40


@pytest.mark.parametrize("value", ["2", "1001", '"many"', "true", "8.5"])
def test_bad_values_are_named(value: str) -> None:
    with pytest.raises(ConfigError, match=r"limits\.carriers_per_session: .* count of carriers"):
        parse_relay_config(BASE + f"[limits]\ncarriers_per_session = {value}\n")


class _Ws:
    def __init__(self) -> None:
        self.aborted = False

    def write(self, data: bytes) -> None:
        pass

    def abort(self) -> None:
        self.aborted = True


async def test_a_session_at_its_limit_closes_the_oldest_ended_carriers() -> None:
    session = _Session(b"x" * 16, "alice")
    try:
        links = [_Link(_Ws(), 8192) for _ in range(4)]  # type: ignore[arg-type]
        for link in links:
            session.attach(link)
        links[1].ended = links[2].ended = True
        assert session.make_room(4)
        assert links[1].ws.aborted and not links[2].ws.aborted  # the oldest ended one only
        assert session.links == [links[0], links[2], links[3]]
        session.attach(_Link(_Ws(), 8192))  # type: ignore[arg-type]
        assert session.make_room(4) and len(session.links) == 3 and links[2].ws.aborted
        for link in session.links:
            link.ended = False
        session.attach(_Link(_Ws(), 8192))  # type: ignore[arg-type]
        assert not session.make_room(4)  # every one in use: the next is refused
        assert len(session.links) == 4
    finally:
        session.writer.cancel()
