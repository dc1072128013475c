"""Property tests for links and the Shadowsocks stream decoder: links are pasted by users
and served by subscriptions, the server's bytes arrive from the network.

- any text given to the link parser gives a layer or a LinkError (one line, no traceback);
  a layer it gives round-trips through link_text and never shows its secret;
- valid links built from parts parse to those parts;
- any bytes fed to either side's Shadowsocks decoder give plaintext or a StreamError, and a
  valid stream decodes the same however it is cut into reads;
- an Outline config body of any bytes gives a server or an OutlineKeyError.
"""

from __future__ import annotations

import base64
import functools
from urllib.parse import quote

from hypothesis import example, given, settings
from hypothesis import strategies as st

from transports import Endpoint
from transports.links import LINK_SCHEMES, LinkError, link_text, parse_link, parse_ss
from transports.shadowsocks import (
    METHODS,
    ClientCodec,
    OutlineKeyError,
    ServerCodec,
    ShadowsocksKey,
    StreamError,
    parse_outline_config,
)
from transports.shadowsocks.methods import parse_psks, password_key

# Each example derives keys and runs AEADs: a fifth of the profile's examples keeps this
# module near a minute on the CI profile (and scales with --long).
FEWER = settings(max_examples=max(20, settings.default.max_examples // 5))
NOW = 1_700_000_000.0
TARGET = Endpoint("example.com", 443)
SECRET = "Zq9-secret"

link_texts = st.one_of(
    st.text(max_size=300),
    st.builds(
        lambda scheme, body: f"{scheme}://{body}",
        st.sampled_from(LINK_SCHEMES),
        st.text(max_size=200),
    ),
    st.builds(
        lambda scheme, user, host, port, query: f"{scheme}://{user}@{host}:{port}?{query}",
        st.sampled_from(LINK_SCHEMES),
        st.text(max_size=60),
        st.sampled_from(["example.com", "[::1]", "192.0.2.1", "", "a:b", "ex ample"]),
        st.one_of(st.integers(-5, 70000).map(str), st.text(max_size=6)),
        st.text(max_size=80),
    ),
)


@FEWER
@given(link_texts)
@example("ss://YWVzLTEyOC1nY206dGVzdA@192.168.100.1:8888#Example1")
@example("vmess://eyJ2IjoiMiJ9")
@example("vless://b831381d-6324-4d53-ad4f-8cda48b30811@h:1?type=ws&path=%00")
@example("ss://" + "=" * 40)
def test_any_text_is_a_layer_or_one_line_error(text: str) -> None:
    try:
        layer = parse_link(text)
    except LinkError as exc:
        message = str(exc)
    else:
        message = ""
    if message:
        assert "\n" not in message
        return
    again = parse_link(link_text(layer))
    assert again.params == layer.params
    assert link_text(again) == link_text(layer)


methods = st.sampled_from(sorted(METHODS))


@st.composite
def ss_links(draw) -> tuple[str, str]:
    name = draw(methods)
    method = METHODS[name]
    if method.edition == 2022:
        password = base64.b64encode(
            draw(st.binary(min_size=method.key_size, max_size=method.key_size))
        ).decode()
    else:
        password = SECRET + draw(st.text(min_size=0, max_size=20))
    host = draw(
        st.sampled_from(["example.com", "192.0.2.5", "[2001:db8::1]", "xn--e1afmkfd.xn--p1ai"])
    )
    port = draw(st.integers(1, 65535))
    userinfo = f"{quote(name)}:{quote(password, safe='')}"
    if method.edition == 2017 and draw(st.booleans()):
        userinfo = base64.urlsafe_b64encode(f"{name}:{password}".encode()).decode().rstrip("=")
    fragment = draw(st.text(max_size=20))
    return f"ss://{userinfo}@{host}:{port}#{quote(fragment)}", password


@FEWER
@given(ss_links())
def test_valid_ss_links_parse_to_their_parts_and_hide_the_password(case) -> None:
    text, password = case
    layer = parse_link(text)
    server = layer.params["server"]
    assert server.password == password
    assert parse_ss(link_text(layer)) == server
    if len(password) > 3:
        assert password not in str(layer) and password not in repr(server)


@functools.cache
def key(name: str) -> ShadowsocksKey:
    method = METHODS[name]
    if method.edition == 2022:
        return ShadowsocksKey(
            method, parse_psks(method, base64.b64encode(bytes(method.key_size)).decode())
        )
    return ShadowsocksKey(method, (password_key(method, "pw"),))


@FEWER
@given(methods, st.binary(max_size=400), st.lists(st.integers(1, 100), max_size=8))
def test_any_bytes_from_the_server_decode_or_raise_stream_error(
    name: str, data: bytes, cuts: list[int]
) -> None:
    client = ClientCodec(key(name), TARGET, clock=lambda: NOW)
    client.request(b"hello")
    position = 0
    try:
        for size in [*cuts, len(data)]:
            client.open(data[position : position + size])
            position += size
    except StreamError as exc:
        reason = exc.reason
        assert reason
    client.truncated()


@FEWER
@given(methods, st.binary(max_size=400))
def test_any_bytes_from_a_client_decode_or_raise_stream_error(name: str, data: bytes) -> None:
    server = ServerCodec(key(name), clock=lambda: NOW)
    try:
        server.open(data)
    except StreamError as exc:
        reason = exc.reason
        assert reason


@FEWER
@given(methods, st.binary(max_size=1500), st.lists(st.integers(1, 1200), min_size=1, max_size=6))
def test_a_valid_stream_decodes_the_same_however_it_is_cut(
    name: str, payload: bytes, cuts: list[int]
) -> None:
    client = ClientCodec(key(name), TARGET, clock=lambda: NOW)
    server = ServerCodec(key(name), clock=lambda: NOW)
    server.open(client.request(b"x"))
    wire = server.seal(payload) + server.seal(b"end")
    got = b""
    position = 0
    for size in [*cuts, len(wire)]:
        got += client.open(wire[position : position + size])
        position += size
    assert got == payload + b"end"
    assert not client.truncated()


@FEWER
@given(st.one_of(st.binary(max_size=500), st.text(max_size=500).map(str.encode)))
@example(b"error: {message: quota}")
@example(b"transport: {$type: tcpudp, tcp: {$type: shadowsocks, endpoint: [1,2]}}")
@example(b'{"server": "h", "server_port": 1, "method": "aes-256-gcm", "password": 5}')
@example(b"a: &a [*a]")
def test_any_outline_config_is_a_server_or_a_clear_error(body: bytes) -> None:
    try:
        parse_outline_config(body, _parse_ss)
    except OutlineKeyError as exc:
        message = str(exc)
        assert "\n" not in message


def _parse_ss(text: str):
    try:
        return parse_ss(text)
    except LinkError as exc:
        raise OutlineKeyError(str(exc)) from None
