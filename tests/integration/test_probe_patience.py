"""A route is not declared dead because the machine was slow (helper/probe/patience.py): a
probe whose event loop is held by a blocking callback past the probe's timeout -- while the
server on loopback answered at once -- passes, where a prober without patience times out;
and a server that never answers still fails, after one more try.

The lag is made deterministically: a callback that blocks the loop (time.sleep), not CPU
load. The server runs in a thread of its own, so it answers while the loop is blocked."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from helper.probe.probe import Prober
from helper.routing import Route
from helper.services import ProbeTarget
from transports import Failure, parse_chain
from transports.direct import DirectDialer

TIMEOUT = 0.5
BLOCK = 1.0  # the loop is held this long, from just after the probe starts
DELAY = 0.2  # the server answers this long after the request, while the loop is held
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"


class Server:
    """A loopback HTTP server in a thread: answers each request DELAY after it came (or
    never, when `answer` is False); counts the connections it accepted."""

    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.accepted = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            self.open.append(conn)
            if self.answer:
                try:
                    conn.recv(65536)
                    time.sleep(DELAY)  # the loop is held by then
                    conn.sendall(ANSWER)
                except OSError:
                    pass  # the probe gave up and closed first

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the thread's accept (Linux)
        self.listener.close()
        self.thread.join(5)
        for conn in self.open:
            conn.close()


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    s = Server(request.param)
    yield s
    s.close()


def service(port: int) -> SimpleNamespace:
    return SimpleNamespace(name="web", probes=[ProbeTarget.parse(f"http://127.0.0.1:{port}/")])


ROUTE = Route("direct", parse_chain("direct"), DirectDialer())


async def probe_while_blocked(prober: Prober, port: int):
    # The loop is held from 50 ms in (the request sent by then, on loopback) until past the
    # probe's timeout: the answer comes into the kernel meanwhile; when the loop runs
    # again, the probe's deadline is due before the task that would read the answer runs.
    asyncio.get_running_loop().call_later(0.05, time.sleep, BLOCK)
    return await prober.probe(service(port), ROUTE)  # type: ignore[arg-type]


@pytest.mark.parametrize("server", [True], indirect=True)
async def test_a_route_that_answered_while_the_loop_was_held_passes(server: Server) -> None:
    result = await probe_while_blocked(Prober(timeout=TIMEOUT), server.port)
    assert result.ok, result.targets[0].detail
    assert server.accepted == 1


@pytest.mark.parametrize("server", [True], indirect=True)
async def test_without_patience_the_same_probe_times_out(server: Server) -> None:
    # What the prober did before: the timeout counted the time the loop could not run.
    result = await probe_while_blocked(Prober(timeout=TIMEOUT, patience=1.0), server.port)
    assert not result.ok and result.failure is Failure.TIMEOUT


@pytest.mark.parametrize("server", [False], indirect=True)
async def test_a_server_that_never_answers_still_fails_after_one_more_try(
    server: Server,
) -> None:
    result = await probe_while_blocked(Prober(timeout=TIMEOUT), server.port)
    assert not result.ok and result.failure is Failure.TIMEOUT
    assert server.accepted == 2  # timed out while the loop lagged: once more, not again
