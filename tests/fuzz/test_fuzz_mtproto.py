"""Property tests for everything that reads MTProto's outer layers from the network: a
client's first bytes (classify, the obfuscated2 init), transport packets (the splitter tgws
cuts a client's stream with, the reader the lab's DC and the probe use), the first messages
of a key exchange (the probe reads a DC's answer, the lab's DC a client's request), the
`tgws:` layer's options, the web endpoint names the lab maps, and the tgws stream itself.

For every example: a result or the parser's own error, never anything else; a verdict never
changes when more bytes arrive; packets come out the same however the bytes are cut; valid
input round-trips.
"""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from helper.lab.telegram import DcLog, _MTProtoSession, web_dc
from helper.probe.mtproto import request_pq
from tests.fuzz.loops import example_loop_fixture, run_example  # noqa: F401 - a fixture
from tests.fuzz.strategies import Choices, mutate, text_from
from tests.support.seeded import seeded_urandom
from tests.unit.scripted import ScriptedStream
from tests.unit.test_tgws import FakeWebSocket, stream_for
from transports import DialError, Op
from transports.mtproto import (
    INIT_LEN,
    FramingError,
    InitError,
    PacketReader,
    PacketSplitter,
    Tag,
    TransportKind,
    accept,
    classify,
    encode_packet,
    initiate,
)
from transports.mtproto import messages as tl
from transports.tgws import TgWsOptions, parse_options

tags = st.sampled_from(list(Tag))
# The properties that run AES or an event loop for every example get a tenth of the
# profile's examples (1,000 in the ci profile); the parsers alone get them all.
CRYPTO = settings(max_examples=max(20, settings().max_examples // 10))


def _cuts(data: bytes, c: Choices) -> list[int]:
    """Up to 5 places to cut `data`, in order."""
    return sorted(c.byte() * len(data) // 255 for _ in range(c.size(5)))


# --- first bytes and the init ---------------------------------------------------------------


def classify_decides_once(data: bytes) -> None:
    kind = classify(data)
    assert kind is None or isinstance(kind, TransportKind)
    if len(data) >= 8:
        assert kind is not None
    if kind is not None:
        assert classify(data + b"\x00\xff\x10") is kind


def any_64_bytes_are_an_init_or_an_error(raw: bytes) -> None:
    data, secret = raw[:INIT_LEN], raw[INIT_LEN + 1 :] if raw[INIT_LEN] & 1 else None
    try:
        header, _ = accept(data, secret=secret)
    except InitError as exc:
        message = str(exc)
        assert message
        return
    assert header.tag in Tag
    assert classify(data) is TransportKind.OBFUSCATED2


def inits_round_trip_and_mutations_stay_contained(raw: bytes) -> None:
    tag, dc, edits = list(Tag)[raw[0] % 3], int.from_bytes(raw[1:3], "little", signed=True), raw[3:]
    init, _ = initiate(tag, dc, urandom=seeded_urandom(raw))
    header, _ = accept(init)
    assert (header.tag, header.dc_field) == (tag, dc)
    mutated = mutate(init, edits)[:INIT_LEN]
    try:
        accept(mutated.ljust(INIT_LEN, b"\0"))
    except InitError:
        pass


# --- packets ---------------------------------------------------------------------------------


def _split_all(tag: Tag, data: bytes, cuts: list[int], limit: int) -> object:
    """The packets, and what is held back; or FramingError (the packets found in the feed
    that meets a bad length are not handed out: the stream is refused at that point)."""
    splitter = PacketSplitter(tag, limit=limit)
    out: list[bytes] = []
    pos = 0
    try:
        for cut in [*cuts, len(data)]:
            out += [bytes(p) for p in splitter.feed(data[pos:cut])]
            pos = max(pos, cut)
    except FramingError as exc:
        message = str(exc)
        assert message
        return FramingError
    assert b"".join(out) + data[len(b"".join(out)) :] == data  # cut in order, nothing lost
    return out, splitter.pending


def any_bytes_split_the_same_however_they_are_cut(raw: bytes) -> None:
    c = Choices(raw[:8])
    tag, data = c.pick(list(Tag)), raw[8:]
    whole = _split_all(tag, data, [], 256)
    assert _split_all(tag, data, _cuts(data, c), 256) == whole


def valid_packets_come_back_whole(raw: bytes) -> None:
    c = Choices(raw)
    tag = c.pick(list(Tag))
    # 127 words and more take abridged's long length field; small steps cut fields apart.
    payloads = [c.stretch(c.pick([40, 600]), seed=6) or b"\x01" for _ in range(1 + c.size(3))]
    step = c.pick([1, 3, 7, 64, 4096] if sum(map(len, payloads)) < 200 else [7, 64, 4096])
    if tag is Tag.ABRIDGED:
        payloads = [p + b"\0" * (-len(p) % 4) for p in payloads]
    padding = lambda n: b"\x07" * n  # noqa: E731 - 7 bytes of padding, always the same
    stream = b"".join(encode_packet(tag, p, urandom=padding) for p in payloads)
    reader = PacketReader(tag)
    got: list[bytes] = []
    for i in range(0, len(stream), step):
        got += reader.feed(stream[i : i + step])
    if tag is Tag.PADDED:
        got = [g[: len(p)] for g, p in zip(got, payloads, strict=True)]
    assert got == payloads
    assert reader.pending == 0


# --- messages --------------------------------------------------------------------------------


def any_bytes_are_a_message_or_an_error(data: bytes) -> None:
    for parse in (
        tl.parse_unencrypted,
        tl.parse_res_pq,
        tl.parse_req_dh_params,
        tl.parse_req_pq,
    ):
        try:
            parse(data)
        except tl.MessageError as exc:
            message = str(exc)
            assert message
    code = tl.transport_error(data)
    assert code is None or code < 0


def res_pq_round_trips_and_mutations_stay_contained(raw: bytes) -> None:
    # pq and the edits from the front; the nonce (any 16 bytes) from the last ones.
    c = Choices(raw)
    nonce, pq, edits = raw[-16:].rjust(16, b"\0"), c.stretch(300), c.take(30)
    answer = tl.ResPQ(nonce, nonce[::-1], pq, (1, -2, 3))
    body = tl.res_pq(answer)
    assert tl.parse_res_pq(body) == answer
    try:
        tl.parse_res_pq(mutate(body, edits))
    except tl.MessageError:
        pass


# The message parsers' two properties share each draw (tests/fuzz/strategies.py: a draw
# costs more than the checks): the bytes as they are, and a resPQ built from them.
def messages_from_any_bytes_and_valid_res_pq(raw: bytes) -> None:
    any_bytes_are_a_message_or_an_error(raw)
    res_pq_round_trips_and_mutations_stay_contained(raw)


def the_mock_dc_answers_anything_without_failing(payload: bytes) -> None:
    session = _MTProtoSession(2, DcLog(), 12345)
    reply, _ = session.answer(payload)
    if reply is not None:
        assert tl.parse_res_pq(reply).fingerprints == (12345,)


def the_probe_reads_any_answer_as_respq_or_a_failure(
    example_loop: asyncio.AbstractEventLoop, raw: bytes
) -> None:
    chunk, answer = 1 + (raw[0] if raw else 0) % 64, raw[1:]
    chunks = [answer[i : i + chunk] for i in range(0, len(answer), chunk)]

    async def probe() -> None:
        try:
            await request_pq(ScriptedStream(chunks), "149.154.167.51")
        except DialError as exc:
            failed = exc
            assert failed.op is Op.MTPROTO_ROUND_TRIP and failed.detail
        else:
            raise AssertionError("random bytes made a valid resPQ for a fresh nonce")

    run_example(example_loop, probe())


# --- tgws --------------------------------------------------------------------------------------


def any_text_is_tgws_options_or_an_error(text: str) -> None:
    try:
        options = parse_options(text)
    except ValueError as exc:
        message = str(exc)
        assert message
        return
    assert isinstance(options, TgWsOptions)


def options_from_grammar(data: bytes) -> None:
    c = Choices(data)
    parts = []
    for _ in range(c.size(3)):
        key = c.pick(["dc2", "dc0", "dc99999", "addr", "x", "DC5"])
        value = c.pick(["10.0.0.1", "::1", "host", "", "10.0.0.1,10.0.0.2", "[::1]:8443"])
        parts.append(f"{key}={value}")
    try:
        parse_options(";".join(parts))
    except ValueError as exc:
        message = str(exc)
        assert message


# parse_options' two properties share each draw: the bytes as any text, and as choices in
# its grammar.
def tgws_options_from_any_text_and_from_grammar(raw: bytes) -> None:
    any_text_is_tgws_options_or_an_error(text_from(raw))
    options_from_grammar(raw)


def any_host_is_a_web_dc_or_none(host: str) -> None:
    dc = web_dc(host)
    assert dc is None or 1 <= dc <= 5


def the_tgws_stream_carries_or_refuses_any_client(raw: bytes) -> None:
    c = Choices(raw[:7])
    obfuscate, data = c.chance(50), raw[7:]
    cuts = _cuts(data, c)
    if obfuscate:  # a valid start, then anything: reaches the packet splitter's checks
        init, client = initiate(Tag.INTERMEDIATE, urandom=seeded_urandom(raw))
        data = init + client.encrypt(data)
    ws = FakeWebSocket()
    stream = stream_for(ws)
    pos = 0
    try:
        for cut in [*cuts, len(data)]:
            stream.write(data[pos:cut])
            pos = max(pos, cut)
        stream.write_eof()
    except ConnectionResetError as exc:
        message = str(exc)
        assert "tgws to" in message and ws.closed
        return
    # Whatever was carried went out as sent, the init alone first.
    assert b"".join(ws.messages) == data[: len(b"".join(ws.messages))] or not obfuscate
    if ws.messages and obfuscate:
        assert ws.messages[0] == data[:INIT_LEN]


# --- the properties above, several to a test -----------------------------------------------
#
# Hypothesis' own work for an example (about 0.8 ms) costs more than most of these checks,
# and CI runs 10,000 examples of each test: properties share a test, and so hypothesis' work,
# each with its own input drawn as it was when it had a test of its own.


@given(
    data=st.binary(max_size=12),
    raw=st.binary(max_size=600),
    raw_2=st.binary(min_size=3, max_size=80),
)
def test_first_bytes_and_packets(data, raw, raw_2) -> None:
    classify_decides_once(data)
    any_bytes_split_the_same_however_they_are_cut(raw)
    valid_packets_come_back_whole(raw_2)


@given(
    raw=st.binary(max_size=200),
    payload=st.binary(max_size=120),
    raw_2=st.binary(max_size=80),
    host=st.binary(max_size=60).map(text_from),
)
def test_messages_the_mock_dc_and_tgws_text(raw, payload, raw_2, host) -> None:
    messages_from_any_bytes_and_valid_res_pq(raw)
    the_mock_dc_answers_anything_without_failing(payload)
    tgws_options_from_any_text_and_from_grammar(raw_2)
    any_host_is_a_web_dc_or_none(host)


@CRYPTO
@given(
    raw=st.binary(min_size=INIT_LEN + 17, max_size=INIT_LEN + 17),
    raw_1=st.binary(min_size=3, max_size=33),
    raw_2=st.binary(max_size=300),
    raw_3=st.binary(max_size=400),
)
def test_inits_the_probe_and_the_tgws_stream(example_loop, raw, raw_1, raw_2, raw_3) -> None:
    any_64_bytes_are_an_init_or_an_error(raw)
    inits_round_trip_and_mutations_stay_contained(raw_1)
    the_probe_reads_any_answer_as_respq_or_a_failure(example_loop, raw_2)
    the_tgws_stream_carries_or_refuses_any_client(raw_3)
