"""Property tests for the TLS client handshake (transports/tls.py). What comes back after a
ClientHello is written by whoever answers — the server, a censor's middlebox, a captive
portal — so whatever the bytes are, tls_connect must end in a DialError during tls_handshake
(never another exception, never a hang) and leave the inner stream closed.

Answers are raw bytes and mutations of real servers' first flights (TLS 1.2: ServerHello,
Certificate, ServerKeyExchange, ServerHelloDone in the clear, so mutations reach the
certificate parser; TLS 1.3: ServerHello and the encrypted rest), delivered in pieces over the
in-memory pipe, then followed by the server closing or by silence (with a short timeout)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from itertools import pairwise

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from tests.fuzz.strategies import Choices, edit_bytes
from tests.support.memory import memory_pipe
from tests.support.origins import TestCA
from transports.base import DialError, Failure, Op
from transports.tls import tls_connect

NAME = "server.test"


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as runner:
        yield runner


@pytest.fixture(scope="module")
def client_context(test_ca: TestCA) -> ssl.SSLContext:
    return test_ca.client_context()  # trusts the flights' certificate: mutations go deeper


@pytest.fixture(scope="module")
def flights(test_ca: TestCA) -> list[bytes]:
    """What a real server sends first, for TLS 1.2 and for TLS 1.3."""
    server_context = test_ca.server_context(NAME)
    answers = []
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        client_context = test_ca.client_context()
        client_context.maximum_version = version
        to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
        client = client_context.wrap_bio(ssl.MemoryBIO(), to_server, server_hostname=NAME)
        server = server_context.wrap_bio(to_server, to_client, server_side=True)
        for tls in (client, server):
            with pytest.raises(ssl.SSLWantReadError):
                tls.do_handshake()
        answers.append(to_client.read())
    return answers


def answer_pieces(data: bytes, flights: list[bytes]) -> list[bytes]:
    """Decode fuzz bytes into an answer (raw, or a mutated flight) cut into pieces."""
    c = Choices(data)
    if c.chance(25):
        wire = bytearray(c.take(c.size(400)))
    else:
        wire = edit_bytes(c, bytearray(c.pick(flights)), c.size(4), wide=True)
    cuts = sorted({(c.byte() << 8 | c.byte()) % (len(wire) + 1) for _ in range(c.size(3))})
    bounds = [0, *cuts, len(wire)]
    return [bytes(wire[a:b]) for a, b in pairwise(bounds) if b > a]


async def handshake_against(
    pieces: list[bytes], then_close: bool, client_context: ssl.SSLContext, timeout: float
) -> tuple[DialError, bool]:
    a, b = memory_pipe()

    async def answer() -> None:
        await b.read()  # the ClientHello
        for piece in pieces:
            b.write(piece)
            await asyncio.sleep(0)  # the client may read each piece on its own
        if then_close:
            b.close()

    server = asyncio.ensure_future(answer())
    try:
        await tls_connect(a, client_context, NAME, timeout=timeout)
    except DialError as exc:
        error = exc
    else:
        raise AssertionError(f"a handshake succeeded against {pieces!r}")
    finally:
        await server
    return error, a.closed


@given(st.binary(max_size=64))
def test_any_answer_then_close_is_a_dial_error(runner, client_context, flights, data) -> None:
    pieces = answer_pieces(data, flights)
    error, inner_closed = runner.run(handshake_against(pieces, True, client_context, 5.0))
    event(error.failure.value)  # shown by --hypothesis-show-statistics
    assert error.op is Op.TLS_HANDSHAKE
    assert error.failure is not Failure.TIMEOUT, "waited although the server had closed"
    assert error.failure is not Failure.UNKNOWN
    assert error.detail
    assert inner_closed


# Each silent example waits for the timeout, so this property gets a hundredth of the
# profile's examples (100 in the ci profile).
@settings(max_examples=max(20, settings().max_examples // 100))
@given(st.binary(max_size=64))
def test_any_answer_then_silence_is_a_dial_error(runner, client_context, flights, data) -> None:
    pieces = answer_pieces(data, flights)
    error, inner_closed = runner.run(handshake_against(pieces, False, client_context, 0.02))
    assert error.op is Op.TLS_HANDSHAKE
    assert error.failure is not Failure.UNKNOWN
    assert inner_closed
