"""Property tests for what the fronted tunnel parses: WebSocket frames (from the CDN or
anyone on the path), the tunnel's request and reply (the relay reads one from each client,
the client one from the relay), access keys (pasted by users, scanned from QR codes) and
access tokens (a cookie anyone can send to the relay).

For every example: a result, NeedMore or the parser's own error, never anything else; a
verdict never changes when more bytes arrive (the readers re-parse a growing buffer); every
valid message round-trips through its encoder and is NeedMore for each proper prefix.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import zlib
from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.loops import example_loop_fixture, run_example  # noqa: F401 - a fixture
from tests.fuzz.strategies import Choices, mutate, split_tail, text_from
from transports import DialError, Endpoint, Failure, Op
from transports.fronted import mux
from transports.fronted.accesskey import (
    PREFIX,
    AccessKey,
    AccessKeyError,
    access_token,
    check_access_token,
)
from transports.fronted.protocol import (
    MAX_TEXT,
    NeedMore,
    ProtocolError,
    encode_failure,
    encode_request,
    encode_success,
    parse_reply,
    parse_request,
)
from transports.websocket import (
    MAX_FRAME,
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    WebSocketError,
    _apply_mask,
    _apply_mask_python,
    encode_frame,
    parse_frame,
)
from transports.websocket import NeedMore as FrameNeedMore

# --- WebSocket frames ---------------------------------------------------------------------


def _frame_verdict(buf: bytes, masked: bool) -> object:
    try:
        return parse_frame(buf, expect_masked=masked)
    except FrameNeedMore:
        return FrameNeedMore
    except WebSocketError as exc:
        message = str(exc)
        assert message
        return WebSocketError


def _valid_frame(data: bytes) -> tuple[bytes, int, bytes, bool, bool]:
    c = Choices(data)
    opcode = c.pick([OP_BINARY, OP_CONTINUATION, OP_TEXT, OP_PING, OP_PONG, OP_CLOSE])
    control = opcode >= OP_CLOSE
    # Lengths near the 7-bit, 16-bit and 64-bit encodings' edges, cheaply stretched.
    size = c.pick([0, 1, 125, 126, 127, 65535, 65536, 70000]) if not control else c.size(125)
    payload = c.stretch(size, seed=8) if not control else c.take(size)
    payload = (payload * (size // max(1, len(payload)) + 1))[:size] if payload else bytes(size)
    fin = control or not c.chance(20)
    masked = c.chance(50)
    return encode_frame(opcode, payload, mask=masked, fin=fin), opcode, payload, fin, masked


def any_bytes_are_a_frame_needmore_or_an_error(raw: bytes) -> None:
    # The last byte's low bit says whether the frame is expected masked.
    data, masked = raw[:-1], bool(raw[-1:] and raw[-1] & 1)
    first = _frame_verdict(data, masked)
    if isinstance(first, tuple):
        used, frame = first
        assert 2 <= used <= len(data)
        assert len(frame.payload) <= MAX_FRAME
    # More bytes never change a verdict that was reached.
    if first is not FrameNeedMore:
        assert _frame_verdict(data + b"\x00\xff" * 8, masked) == first


def valid_frames_round_trip_and_mutations_stay_contained(raw: bytes) -> None:
    data, edits = split_tail(raw, 30)
    wire, opcode, payload, fin, masked = _valid_frame(data)
    used, frame = parse_frame(wire + b"rest", expect_masked=masked)
    assert used == len(wire)
    assert (frame.opcode, frame.payload, frame.fin) == (opcode, payload, fin)
    for cut in sorted({0, 1, 2, len(wire) // 2, len(wire) - 1}):
        if cut < len(wire):
            assert _frame_verdict(wire[:cut], masked) is FrameNeedMore
    # The other side's framing is refused, not misread.
    assert _frame_verdict(wire, not masked) is WebSocketError
    _frame_verdict(mutate(wire[:300], edits), masked)


# Each parser's properties share one draw (tests/fuzz/strategies.py: a draw costs more than
# the checks): the bytes are any input as they are, and decode a valid message (and its
# edits) too.
def frames_from_any_bytes_and_valid_frames(raw: bytes) -> None:
    any_bytes_are_a_frame_needmore_or_an_error(raw)
    valid_frames_round_trip_and_mutations_stay_contained(raw)


def compiled_and_python_masking_agree(raw: bytes) -> None:
    key, data = raw[:4].ljust(4, b"\0"), raw[4:]
    assert _apply_mask(data, key) == _apply_mask_python(data, key)
    assert _apply_mask(_apply_mask(data, key), key) == data


# --- tunnel request and reply -------------------------------------------------------------


def _tunnel_verdict(parse: Callable[[bytes], object], buf: bytes) -> object:
    """What a parser of the tunnel's messages (protocol.py, mux.py) makes of `buf`: its
    result, NeedMore, or ProtocolError with a message."""
    try:
        return parse(buf)
    except NeedMore:
        return NeedMore
    except ProtocolError as exc:
        message = str(exc)
        assert message
        return ProtocolError


def _request_verdict(buf: bytes) -> object:
    return _tunnel_verdict(parse_request, buf)


def _reply_verdict(buf: bytes) -> object:
    verdict = _tunnel_verdict(parse_reply, buf)
    if not isinstance(verdict, tuple):
        return verdict
    used, error = verdict
    if error is not None:
        assert isinstance(error, DialError)
        assert error.detail.isprintable() and len(error.detail) <= 250
        return used, (error.failure, error.op, error.detail)
    return used, None


def any_bytes_are_a_request_needmore_or_an_error(data: bytes) -> None:
    first = _request_verdict(data)
    if isinstance(first, tuple):
        used, target = first
        assert used <= len(data) and 0 < target.port < 65536 and target.host
    if first is not NeedMore:
        assert _request_verdict(data + b"\x01" * 300) == first


def valid_requests_round_trip(raw: bytes) -> None:
    data, edits = split_tail(raw, 30)
    c = Choices(data)
    target = Endpoint(c.hostname(255), c.port())
    wire = encode_request(target)
    assert parse_request(wire + b"data") == (len(wire), target)
    for cut in range(len(wire)):
        assert _request_verdict(wire[:cut]) is NeedMore
    _request_verdict(mutate(wire, edits))


def requests_from_any_bytes_and_valid_requests(raw: bytes) -> None:
    any_bytes_are_a_request_needmore_or_an_error(raw)
    valid_requests_round_trip(raw)


def any_bytes_are_a_reply_needmore_or_an_error(data: bytes) -> None:
    first = _reply_verdict(data)
    if first is not NeedMore:
        assert _reply_verdict(data + b"\x00" * 600) == first


def valid_replies_round_trip(raw: bytes) -> None:
    data, edits = split_tail(raw, 30)
    c = Choices(data)
    if c.chance(30):
        wire, expected = encode_success(), None
    else:
        failure, op = c.pick(list(Failure)), c.pick(list(Op))
        detail = c.text(700)
        wire = encode_failure(DialError(failure, op, detail))
        expected = (failure, op)
    assert len(wire) <= 4 + MAX_TEXT
    used, error = parse_reply(wire + b"data")
    assert used == len(wire)
    if expected is None:
        assert error is None
    else:
        assert error is not None and (error.failure, error.op) == expected
        assert error.detail.startswith("at the relay:")
    for cut in range(len(wire)):
        assert _reply_verdict(wire[:cut]) is NeedMore
    _reply_verdict(mutate(wire, edits))


def replies_from_any_bytes_and_valid_replies(raw: bytes) -> None:
    any_bytes_are_a_reply_needmore_or_an_error(raw)
    valid_replies_round_trip(raw)


# --- access keys and tokens ---------------------------------------------------------------

NOW = 1_765_000_000.0
_KEY = AccessKey(
    address=Endpoint("cdn.example.net", 443),
    front="cdn.example.net",
    host="relay.example.org",
    path="/t/abc",
    pin="ab" * 32,
    name="alice",
    token=b"t" * 32,
    cert=b"c" * 40,
    key=b"k" * 40,
)
_FIELDS = ["v", "a", "f", "h", "p", "pin", "n", "t", "c", "k"]
_ODD_VALUES: list[object] = [None, 1, 1.5, True, [], {}, "", "x", "a" * 300, "é", "\ud800", "1:2:3"]


def _packed(obj: object) -> str:
    text = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))
    raw = text.encode("utf-8", "surrogatepass")
    return PREFIX + base64.urlsafe_b64encode(zlib.compress(raw)).decode().rstrip("=")


def _decode_verdict(text: str) -> object:
    try:
        key = AccessKey.decode(text)
    except AccessKeyError as exc:
        message = str(exc)
        assert message and "dtr1:" not in message.replace(f"with {PREFIX!r}", "")
        return AccessKeyError
    assert key.path.startswith("/") and len(key.pin) == 64
    return key


def any_text_is_a_key_or_a_clear_error(text: str) -> None:
    _decode_verdict(text)
    _decode_verdict(PREFIX + text)


@functools.cache
def _encoded_key() -> tuple[str, bytes]:
    """The key's text and its JSON document, made once (not per example)."""
    encoded = _KEY.encode()
    assert AccessKey.decode(encoded) == _KEY
    body = encoded[len(PREFIX) :]
    return encoded, zlib.decompress(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


@functools.cache
def _bomb(blocks: int) -> bytes:
    """`blocks` x 4 KiB of spaces and then '{}', compressed: a few sizes, each made once
    (compressing up to 4 MiB per example was most of this property's time)."""
    return zlib.compress(b" " * (blocks << 12) + b"{}")


def damaged_keys_are_refused_clearly(data: bytes) -> None:
    c = Choices(data)
    encoded, document = _encoded_key()
    doc = json.loads(document)
    choice = c.byte() % 6
    if choice == 0:  # a field changed to an odd value or removed
        name = c.pick(_FIELDS)
        if c.chance(30):
            doc.pop(name, None)
        else:
            doc[name] = c.pick(_ODD_VALUES)
        _decode_verdict(_packed(doc))
    elif choice == 1:  # cut short (a copy and paste that missed the end)
        _decode_verdict(encoded[: c.size(len(encoded))])
    elif choice == 2:  # a character changed
        i = c.size(len(encoded) - 1)
        _decode_verdict(encoded[:i] + chr(c.byte()) + encoded[i + 1 :])
    elif choice == 3:  # deeply nested or huge JSON inside a valid envelope
        depth = 1 + c.size(5000)
        _decode_verdict(_packed("[" * depth + "]" * depth))
    elif choice == 4:  # a zip bomb: decompresses far beyond the limit
        bomb = _bomb(1 + c.size(1000) // 100 * 100)
        _decode_verdict(PREFIX + base64.urlsafe_b64encode(bomb).decode())
    else:  # not a JSON object at all
        _decode_verdict(_packed(json.dumps(c.pick(_ODD_VALUES))))


def _skew(raw: bytes) -> int:
    """A clock skew from 2 bytes: mostly within 310 s (the 300 s window's edges, both
    sides), else anywhere within 10**12 s."""
    n = int.from_bytes(raw.rjust(2, b"\0"))
    if n >> 14 < 3:
        k = n % 621  # 0, -1, 1, -2, 2, ... -310, 310
        return -(k + 1) // 2 if k & 1 else k // 2
    return (n & 0x3FFF) * (2 * 10**12 // 0x3FFF) - 10**12


def any_cookie_value_is_a_name_or_none(raw: bytes) -> None:
    value, skew = text_from(raw[:-2]), _skew(raw[-2:])
    tokens = {"alice": b"t" * 32, "": b"e" * 32, "a.b": b"d" * 32}
    now = NOW  # a whole second (the stamp has no fraction), the same in every example
    assert check_access_token(value, tokens, "/t/abc", now) is None
    good = access_token(_KEY, now=now + skew)
    verdict = check_access_token(good, {"alice": _KEY.token}, _KEY.path, now)
    assert verdict == ("alice" if abs(skew) <= 300 else None)
    # Digits Python reads as numbers only in some scripts, and stamps past int()'s limit.
    for stamp in ("\u00b2", "\u0661\u0662", "9" * 5000, "-1", " 1"):
        odd = f"alice.{stamp}.{good.rsplit('.', 1)[1]}"
        assert check_access_token(odd, {"alice": _KEY.token}, _KEY.path, now) is None
    assert check_access_token(good + value, {"alice": _KEY.token}, _KEY.path, now) in (
        None,
        "alice",
    )


# --- the multiplexed tunnel's frames, and a relay session fed anything ---------------------


def _mux_verdict(buf: bytes) -> object:
    return _tunnel_verdict(mux.parse_frame, buf)


def any_bytes_are_a_mux_frame_needmore_or_an_error(data: bytes) -> None:
    first = _mux_verdict(data)
    if isinstance(first, tuple):
        used, frame = first
        assert mux.HEADER.size <= used <= len(data)
        assert frame.kind in mux.NAMES
        assert len(frame.payload) == used - mux.HEADER.size
        assert mux.encode_frame(frame.kind, frame.stream, frame.payload) == data[:used]
    if first is not NeedMore:
        assert _mux_verdict(data + b"\x00\xff" * 8) == first


def a_relay_session_fed_any_bytes_ends_cleanly(
    example_loop: asyncio.AbstractEventLoop, raw: bytes
) -> None:
    """Whatever an authenticated client sends (the relay's only untrusted input inside the
    inner TLS): streams open and close, or the session ends with a protocol error -- no
    other exception, no hang, nothing left running."""
    from tests.support.memory import memory_pipe

    # The last byte cuts the rest in two writes, anywhere from after its first byte to
    # after its last (the whole in the first write).
    data = raw[:-1]
    cut = 1 + (raw[-1] * len(data) // 255 if raw else 0)

    async def run() -> None:
        client_end, relay_end = memory_pipe()
        opened: list[Endpoint] = []

        async def on_open(stream: mux.MuxStream, target: Endpoint) -> None:
            opened.append(target)
            session.accept(stream)
            stream.write(b"hello")

        session = mux.MuxSession(relay_end, on_open=on_open, name="relay")
        # A valid opening so later bytes reach a stream's state, then the fuzz bytes, in
        # two writes (a frame split across reads).
        client_end.write(mux.encode_frame(mux.OPEN, 1, encode_request(Endpoint("a.test", 1))))
        client_end.write(data[:cut])
        client_end.write(data[cut:])
        await asyncio.sleep(0)
        client_end.close()
        async with asyncio.timeout(5):
            await session.ended.wait()
        if session.error is not None:
            assert session.error.failure in (Failure.PROXY_PROTOCOL_ERROR, Failure.EOF)
        await session.aclose()
        assert not session.handlers or all(t.done() for t in session.handlers)

    run_example(example_loop, run())


# --- the properties above, several to a test -----------------------------------------------
#
# Hypothesis' own work for an example (about 0.8 ms) costs more than most of these checks,
# and CI runs 10,000 examples of each test: properties share a test, and so hypothesis' work,
# each with its own input drawn as it was when it had a test of its own.


@given(
    raw=st.binary(max_size=201),
    raw_1=st.binary(max_size=304),
    data=st.binary(max_size=120),
)
def test_frames_masking_and_mux_frames(raw, raw_1, data) -> None:
    frames_from_any_bytes_and_valid_frames(raw)
    compiled_and_python_masking_agree(raw_1)
    any_bytes_are_a_mux_frame_needmore_or_an_error(data)


@given(
    raw=st.binary(max_size=300),
    raw_1=st.binary(max_size=600),
    raw_2=st.binary(max_size=122),
)
def test_requests_replies_and_cookies(raw, raw_1, raw_2) -> None:
    requests_from_any_bytes_and_valid_requests(raw)
    replies_from_any_bytes_and_valid_replies(raw_1)
    any_cookie_value_is_a_name_or_none(raw_2)


@given(
    text=st.binary(max_size=200).map(text_from),
    data=st.binary(max_size=60),
    raw=st.binary(max_size=601),
)
def test_keys_and_a_relay_session(example_loop, text, data, raw) -> None:
    any_text_is_a_key_or_a_clear_error(text)
    damaged_keys_are_refused_clearly(data)
    a_relay_session_fed_any_bytes_ends_cleanly(example_loop, raw)
