"""Property tests for links and the Shadowsocks stream decoder: links are pasted by users
and served by subscriptions, the server's bytes arrive from the network.

- any text given to the link parser gives a layer or a LinkError (one line, no traceback);
  a layer it gives round-trips through link_text and never shows its secret;
- valid links built from parts parse to those parts;
- any bytes fed to either side's Shadowsocks decoder give plaintext or a StreamError, and a
  valid stream decodes the same however it is cut into reads; a stream with one byte
  changed fails in the read that completes the changed chunk and releases nothing from it on;
- an Outline config body of any bytes gives a server or an OutlineKeyError.
"""

from __future__ import annotations

import base64
import functools
from urllib.parse import quote

from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.fuzz.strategies import Choices, split_tail, text_from
from tests.support.seeded import seeded_urandom
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

LINK_HOSTS = ["example.com", "[::1]", "192.0.2.1", "", "a:b", "ex ample"]


def _link_text(raw: bytes) -> str:
    """Pasted text, decoded from one draw (tests/fuzz/strategies.py says why): any text, a
    link scheme and any text, or a scheme with userinfo, host, port (a number from -5 to
    69999, or any text) and query."""
    c = Choices(raw)
    form, scheme = c.byte() % 3, c.pick(LINK_SCHEMES)
    if form == 0:
        return text_from(raw[1:])
    if form == 1:
        return f"{scheme}://{text_from(raw[2:])}"
    host = c.pick(LINK_HOSTS)
    port = str((c.byte() << 16 | c.byte() << 8 | c.byte()) % 70005 - 5)
    if c.chance(30):
        port = text_from(c.take(c.size(6)))
    rest = raw[c.pos :]
    split = c.byte() * len(rest) // 256
    user, query = text_from(rest[:split]), text_from(rest[split:])
    return f"{scheme}://{user}@{host}:{port}?{query}"


link_texts = st.binary(max_size=302).map(_link_text)


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


METHOD_NAMES = sorted(METHODS)


SS_HOSTS = ["example.com", "192.0.2.5", "[2001:db8::1]", "xn--e1afmkfd.xn--p1ai"]


def _ss_link(raw: bytes) -> tuple[str, str]:
    """A valid ss:// link and its password, from one fixed-size draw: a method, a password
    (a 2022 key of the method's size, or text after a marker), host, port, the userinfo's
    form and any fragment."""
    c = Choices(raw)
    name = c.pick(METHOD_NAMES)
    method = METHODS[name]
    if method.edition == 2022:
        password = base64.b64encode(c.take(method.key_size).ljust(method.key_size, b"\0"))
        password = password.decode()
    else:
        password = SECRET + text_from(c.take(c.size(20)))
    host = c.pick(SS_HOSTS)
    port = 1 + (c.byte() << 8 | c.byte()) % 65535
    userinfo = f"{quote(name)}:{quote(password, safe='')}"
    if method.edition == 2017 and c.chance(50):
        userinfo = base64.urlsafe_b64encode(f"{name}:{password}".encode()).decode().rstrip("=")
    fragment = text_from(c.take(c.size(20)))
    return f"ss://{userinfo}@{host}:{port}#{quote(fragment)}", password


ss_links = st.binary(min_size=128, max_size=128).map(_ss_link)


def valid_ss_links_parse_to_their_parts_and_hide_the_password(case) -> None:
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


def any_bytes_from_the_server_decode_or_raise_stream_error(raw: bytes) -> None:
    # The method is the first byte, the rest what the server sent, and the sizes of its
    # reads: the last byte says how many of the bytes before it, each a size from 1 to 100.
    name = METHOD_NAMES[raw[0] % len(METHOD_NAMES)] if raw else METHOD_NAMES[0]
    data, tail = split_tail(raw[1:], 8)
    cuts = [1 + b % 100 for b in tail]
    client = ClientCodec(key(name), TARGET, clock=lambda: NOW, random=seeded_urandom(raw))
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


def any_bytes_from_a_client_decode_or_raise_stream_error(raw: bytes) -> None:
    name, data = METHOD_NAMES[raw[0] % len(METHOD_NAMES)] if raw else METHOD_NAMES[0], raw[1:]
    server = ServerCodec(key(name), clock=lambda: NOW)
    try:
        server.open(data)
    except StreamError as exc:
        reason = exc.reason
        assert reason


# Both decoders' properties share each draw (tests/fuzz/strategies.py: a draw costs more
# than a check): the same method and bytes, from the server (in reads) and from a client.
def any_bytes_from_either_side_decode_or_raise_stream_error(raw: bytes) -> None:
    any_bytes_from_the_server_decode_or_raise_stream_error(raw)
    any_bytes_from_a_client_decode_or_raise_stream_error(raw)


def _stream_case(raw: bytes) -> tuple[str, bytes, list[int]]:
    """A method, a payload of any length up to 1500 (its bytes a repeated pattern: what the
    codecs care about is where chunks and reads end), and 1 to 6 read sizes up to 1200."""
    c = Choices(raw)
    name, payload = c.pick(METHOD_NAMES), c.stretch(1500)
    return name, payload, [1 + c.size(1199) for _ in range(1 + c.byte() % 6)]


def a_valid_stream_decodes_the_same_however_it_is_cut(
    case: tuple[str, bytes, list[int]],
) -> None:
    name, payload, cuts = case
    client = ClientCodec(key(name), TARGET, clock=lambda: NOW, random=seeded_urandom(payload))
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


def an_altered_stream_fails_and_releases_only_what_came_before_the_change(
    case: tuple[str, bytes, list[int]],
) -> None:
    """One byte of the server's stream changed (where the read sizes say): a StreamError in
    the read that completes the changed chunk, nothing of that read or after it released,
    and the stream stays failed."""
    name, payload, cuts = case
    client = ClientCodec(key(name), TARGET, clock=lambda: NOW)
    server = ServerCodec(key(name), clock=lambda: NOW)
    server.open(client.request(b"x"))
    half = len(payload) // 2
    pieces = [payload[:half], payload[half:], b"end"]
    sealed = [server.seal(piece) for piece in pieces]  # under 1500 bytes: one chunk each
    wire = b"".join(sealed)
    at = sum(cuts) * 7919 % len(wire)
    altered = bytearray(wire)
    altered[at] ^= 1 + cuts[0] % 255
    before, end = b"", 0  # the plaintext of the seals that end before the change
    for piece, chunk in zip(pieces, sealed, strict=True):
        end += len(chunk)
        if end <= at:
            before += piece
    got, position, failed = b"", 0, False
    for size in [*cuts, len(altered)]:
        try:
            got += client.open(altered[position : position + size])
        except StreamError:
            failed = True
            break
        position += size
    assert failed
    assert before.startswith(got)
    try:
        client.open(wire[position:])
    except StreamError:
        pass
    else:
        raise AssertionError("a failed stream opened what came after")


def _outline_body(raw: bytes) -> bytes:
    """Any bytes, or (first byte odd) any text in UTF-8."""
    return text_from(raw[1:]).encode() if raw[:1] and raw[0] & 1 else raw[1:]


@FEWER
@given(st.binary(max_size=501).map(_outline_body))
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


# --- the properties above, several to a test -----------------------------------------------
#
# Hypothesis' own work for an example (about 0.8 ms) costs more than most of these checks,
# and CI runs 10,000 examples of each test: properties share a test, and so hypothesis' work,
# each with its own input drawn as it was when it had a test of its own.


@FEWER
@given(
    case=ss_links,
    raw=st.binary(max_size=410),
    case_2=st.binary(min_size=32, max_size=32).map(_stream_case),
)
def test_ss_links_and_streams(case, raw, case_2) -> None:
    valid_ss_links_parse_to_their_parts_and_hide_the_password(case)
    any_bytes_from_either_side_decode_or_raise_stream_error(raw)
    a_valid_stream_decodes_the_same_however_it_is_cut(case_2)
    an_altered_stream_fails_and_releases_only_what_came_before_the_change(case_2)
