"""The status API's refused requests in the log (helper/api.py, StatusApi.handle): 401, 404
and 405 each leave one line naming the client, the method, the path and why, throttled, and
never a token, a query or a header; and the PAC's proxy address from a Host header --
without sockets (the handler is called directly)."""

from __future__ import annotations

import logging

import pytest

from helper.api import StatusApi
from helper.config import load_config, parse_config
from helper.http_server import Request

TOKEN = "api-token-3f9c1a7e5b2d4c6e8a0b"


def api(loopback_token: bool = True) -> StatusApi:
    text = (
        f'[api]\nlisten = "127.0.0.1:0"\ntoken = "{TOKEN}"\n'
        f"loopback_token = {'true' if loopback_token else 'false'}\n"
    )
    config = parse_config(text, "test.toml", below=load_config(None))

    def snapshot():  # the refusals come before any endpoint needs one
        raise AssertionError("no snapshot expected")

    return StatusApi(snapshot, config.api)


def request(path: str, method: str = "GET", headers=(), query: str = "") -> Request:
    return Request(
        method, path, "HTTP/1.1", list(headers), path, query, "127.0.0.1", ("192.0.2.7", 4321)
    )


@pytest.mark.parametrize(
    ("sent", "status", "says"),
    [
        (request("/status"), 401, "GET /status: no token (Authorization: Bearer TOKEN)"),
        (
            request("/status", headers=[("Authorization", f"Bearer {TOKEN}x")]),
            401,
            "GET /status: a wrong token",
        ),
        (
            request("/metrics", headers=[("Authorization", TOKEN)]),
            401,
            "GET /metrics: an Authorization header that is not Bearer",
        ),
        (
            request(f"/{TOKEN}", query=f"token={TOKEN}"),
            401,
            "GET an unknown path: no token (Authorization: Bearer TOKEN)",
        ),
        (
            request("/nope\n2026 forged line", headers=[("Authorization", f"Bearer {TOKEN}")]),
            404,
            "GET /nope\\x0a2026 forged line: no such endpoint",
        ),
        (
            request("/status", "POST", [("Authorization", f"Bearer {TOKEN}")], f"t={TOKEN}"),
            405,
            "POST /status: only GET and HEAD are served",
        ),
        (  # two logins: neither is taken, whichever is right
            request(
                "/status",
                headers=[("Authorization", f"Bearer {TOKEN}"), ("authorization", "Bearer x")],
            ),
            400,
            "GET /status: more than one Authorization field",
        ),
    ],
)
async def test_a_refused_request_is_logged_without_secrets(
    sent: Request, status: int, says: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "detour.api")
    answer = await api().handle(sent)
    assert answer.status == status
    lines = [r.getMessage() for r in caplog.records if r.name == "detour.api"]
    assert lines == [f"status API: refused client 192.0.2.7:4321: {says}"], lines
    assert TOKEN not in caplog.text and TOKEN[:12] not in caplog.text
    level = logging.WARNING if status in (400, 401) else logging.INFO
    assert caplog.records[-1].levelno == level


async def test_refusals_are_throttled(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "detour.api")
    server = api()
    for _ in range(50):
        assert (await server.handle(request("/status"))).status == 401
    lines = [r.getMessage() for r in caplog.records if r.name == "detour.api"]
    assert len(lines) == 20  # ThrottledLog's burst per 10 s; the rest told with the next


@pytest.mark.parametrize(
    ("host", "named"),
    [
        ("router.lan", "router.lan"),
        ("fd00::1", "fd00::1"),
        ("evil:::", "::1"),  # from Host: [evil:::]
        ('a"b', "::1"),
        ("", "::1"),
    ],
)
def test_the_pac_takes_the_host_header_only_when_it_is_a_name_or_an_address(
    host: str, named: str
) -> None:
    """A mixed listener on "::" asked over IPv4: the PAC names the host the request used,
    when that is a host name or an IP address; anything else gets loopback (::1, as the
    listener is IPv6)."""
    from types import SimpleNamespace

    from helper.api import _proxy_address

    mixed = SimpleNamespace(host="::", port=1080)
    snapshot = SimpleNamespace(listening=lambda kind: [mixed])
    sent = Request("GET", "/proxy.pac", "HTTP/1.1", [], "/proxy.pac", "", host, None, None)
    assert _proxy_address(snapshot, sent) == (named, 1080)
