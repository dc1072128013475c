"""What a managed pluggable transport and detour say to each other (transports/pt/ipc.py):
each stdout line the spec defines, the LOG/STATUS key=value format, lines cut from a byte
stream, the launch from VERSION to CMETHODS DONE, and the environment a client starts with."""

from __future__ import annotations

from pathlib import Path

import pytest

from transports import Endpoint
from transports.pt.ipc import (
    MAX_LINE,
    CMethod,
    CMethodError,
    CMethodsDone,
    EnvError,
    Launch,
    LaunchFailed,
    LineReader,
    Log,
    Malformed,
    ProxyDone,
    ProxyError,
    Status,
    Unknown,
    Version,
    VersionError,
    client_environment,
    iter_lines,
    parse_kvline,
    parse_line,
)

LOCAL = Endpoint("127.0.0.1", 37347)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"VERSION 1", Version("1")),
        (b"VERSION 1\r", Version("1")),
        (b"VERSION-ERROR no-version", VersionError("no-version")),
        (b"VERSION-ERROR", VersionError("")),
        (b"ENV-ERROR No TOR_PT_STATE_LOCATION", EnvError("No TOR_PT_STATE_LOCATION")),
        (b"PROXY DONE", ProxyDone()),
        (b"PROXY-ERROR bad scheme", ProxyError("bad scheme")),
        (b"CMETHOD obfs4 socks5 127.0.0.1:37347", CMethod("obfs4", "socks5", LOCAL)),
        (b"CMETHOD obfs3 SOCKS4 127.0.0.1:37347", CMethod("obfs3", "socks4", LOCAL)),
        (b"CMETHOD obfs3 socks4a 127.0.0.1:37347", CMethod("obfs3", "socks4", LOCAL)),
        (
            b"CMETHOD trebuchet socks5 [::1]:19999",
            CMethod("trebuchet", "socks5", Endpoint("::1", 19999)),
        ),
        (
            b"CMETHOD obfs2 socks5 127.0.0.1:37347 ARGS:shared-secret=x",
            CMethod("obfs2", "socks5", LOCAL),
        ),
        (b"CMETHOD-ERROR obfs4 no such transport", CMethodError("obfs4", "no such transport")),
        (b"CMETHOD-ERROR obfs4", CMethodError("obfs4", "")),
        (b"CMETHODS DONE", CMethodsDone()),
        (
            b'LOG SEVERITY=debug MESSAGE="Connected to bridge A"',
            Log("debug", "Connected to bridge A"),
        ),
        (b"LOG SEVERITY=error MESSAGE=oops", Log("error", "oops")),
        (b'LOG MESSAGE="a \\"quoted\\" \\\\ word\\n"', Log("", 'a "quoted" \\ word\\x0a')),
        (
            b"STATUS TRANSPORT=obfs4 ADDRESS=198.51.100.123:1234 CONNECT=Success",
            Status("obfs4", (("ADDRESS", "198.51.100.123:1234"), ("CONNECT", "Success"))),
        ),
        (b"SMETHOD obfs4 127.0.0.1:1 ARGS:cert=x", Unknown("SMETHOD")),
        (b"SOMETHING-NEW with args", Unknown("SOMETHING-NEW")),
    ],
)
def test_lines(line: bytes, message: object) -> None:
    assert parse_line(line) == message


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"", "no keyword"),
        (b" VERSION 1", "no keyword"),
        (b"VERSION", "exactly one"),
        (b"VERSION 1 2", "exactly one"),
        (b"VERSION\x001", "NUL"),
        (b"\xffVERSION 1", "no keyword"),
        (b"PROXY NOT-DONE", "only followed by DONE"),
        (b"CMETHODS", "only followed by DONE"),
        (b"CMETHOD obfs4 socks5", "needs a transport"),
        (b"CMETHOD obfs4 http 127.0.0.1:1", "neither socks4 nor socks5"),
        (b"CMETHOD obfs4 socks5 localhost:1080", "not IP:PORT"),
        (b"CMETHOD obfs4 socks5 127.0.0.1", "not IP:PORT"),
        (b"CMETHOD obfs4 socks5 127.0.0.1:0", "not IP:PORT"),
        (b"CMETHOD obfs4 socks5 127.0.0.1:99999", "not IP:PORT"),
        (b"CMETHOD 4obfs socks5 127.0.0.1:1", "not a name"),
        (b"CMETHOD-ERROR", "without a transport"),
        (b"VERSION " + b"1" * MAX_LINE, "longer than"),
    ],
)
def test_malformed_lines(line: bytes, reason: str) -> None:
    message = parse_line(line)
    assert isinstance(message, Malformed)
    assert reason in message.reason


def test_texts_are_made_printable_and_short() -> None:
    message = parse_line(b"VERSION-ERROR \x1b[31mred\x7f " + b"x" * 1000)
    assert isinstance(message, VersionError)
    assert message.message.startswith("\\x1b[31mred\\x7f x")
    assert len(message.message) <= 300


@pytest.mark.parametrize(
    ("text", "pairs"),
    [
        ("", []),
        ("A=1 B=2", [("A", "1"), ("B", "2")]),
        ('A="two words" B=x', [("A", "two words"), ("B", "x")]),
        ('A="esc \\" \\\\ \\t \\101"', [("A", 'esc " \\ \t A')]),
        ('A="unterminated', [("A", "unterminated")]),
        ("bare A=1 =x B=", [("A", "1"), ("B", "")]),
        ("  A=1   ", [("A", "1")]),
        ("A=x=y", [("A", "x=y")]),
    ],
)
def test_kvline(text: str, pairs: list[tuple[str, str]]) -> None:
    assert parse_kvline(text) == pairs


def test_line_reader_takes_any_chunks_and_the_unterminated_last_line() -> None:
    data = b"VERSION 1\nCMETHOD obfs4 socks5 127.0.0.1:37347\r\nCMETHODS DONE\nVERSION-ERROR x"
    whole = list(iter_lines(data))
    assert whole == [
        Version("1"),
        CMethod("obfs4", "socks5", LOCAL),
        CMethodsDone(),
        VersionError("x"),
    ]
    reader = LineReader()
    bytewise = [m for i in range(len(data)) for m in reader.feed(data[i : i + 1])]
    assert bytewise + reader.eof() == whole


def test_line_reader_skips_an_overlong_line_once() -> None:
    reader = LineReader()
    messages = reader.feed(b"VERSION 1\n" + b"x" * (MAX_LINE + 1))
    messages += reader.feed(b"x" * 100_000)
    messages += reader.feed(b"still the same line\nCMETHODS DONE\n")
    assert messages == [
        Version("1"),
        Malformed(f"line longer than {MAX_LINE} bytes"),
        CMethodsDone(),
    ]
    assert reader.eof() == []


# --- the launch ---------------------------------------------------------------------------


def launch(lines: list[bytes], transport: str = "obfs4", proxy: bool = False):
    state = Launch(transport, proxy=proxy)
    outcome = None
    for line in lines:
        outcome = state.feed(parse_line(line))
    return outcome


OBFS4_UP = [b"VERSION 1", b"CMETHOD obfs4 socks5 127.0.0.1:37347", b"CMETHODS DONE"]


def test_launch_reports_the_transports_socks_address() -> None:
    assert launch(OBFS4_UP) == CMethod("obfs4", "socks5", LOCAL)


def test_launch_ignores_logs_and_unknown_lines_and_other_transports() -> None:
    lines = [
        b'LOG SEVERITY=notice MESSAGE="starting"',
        b"VERSION 1",
        b"FUTURE-THING 1 2 3",
        b"CMETHOD meek_lite socks5 127.0.0.1:1",
        b"this is not protocol",
        b"CMETHOD obfs4 socks5 127.0.0.1:37347",
        b"STATUS TRANSPORT=obfs4 X=1",
        b"CMETHODS DONE",
    ]
    assert launch(lines) == CMethod("obfs4", "socks5", LOCAL)


def test_launch_waits_for_cmethods_done() -> None:
    assert launch(OBFS4_UP[:2]) is None


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        ([b"VERSION-ERROR no-version"], "answered VERSION-ERROR: no-version"),
        ([b"VERSION-ERROR"], "answered VERSION-ERROR: no version in common"),
        ([b"VERSION 1", b"ENV-ERROR no state location"], "answered ENV-ERROR: no state location"),
        ([b"ENV-ERROR early"], "answered ENV-ERROR: early"),
        ([b"VERSION 2"], "chose protocol version '2'"),
        ([b"VERSION 1", b"VERSION 1"], "said VERSION twice"),
        ([b"CMETHOD obfs4 socks5 127.0.0.1:37347"], "did not start with a VERSION line"),
        ([b"CMETHODS DONE"], "did not start with a VERSION line"),
        (
            [b"VERSION 1", b"CMETHOD-ERROR obfs4 broken transport", b"CMETHODS DONE"],
            "answered CMETHOD-ERROR: broken transport",
        ),
        (
            [b"VERSION 1", b"CMETHOD meek_lite socks5 127.0.0.1:1", b"CMETHODS DONE"],
            "does not offer the transport obfs4 (offered: meek_lite)",
        ),
        ([b"VERSION 1", b"CMETHODS DONE"], "(offered: none)"),
        ([b"VERSION 1", b"PROXY DONE"], "without being given a proxy"),
    ],
)
def test_launch_failures(lines: list[bytes], reason: str) -> None:
    outcome = launch(lines)
    assert isinstance(outcome, LaunchFailed)
    assert reason in outcome.reason


def test_launch_with_a_proxy_needs_proxy_done() -> None:
    confirmed = [b"VERSION 1", b"PROXY DONE", *OBFS4_UP[1:]]
    assert launch(confirmed, proxy=True) == CMethod("obfs4", "socks5", LOCAL)
    ignored = launch(OBFS4_UP, proxy=True)
    assert isinstance(ignored, LaunchFailed)
    assert "no PROXY DONE" in ignored.reason
    refused = launch([b"VERSION 1", b"PROXY-ERROR cannot parse it"], proxy=True)
    assert refused == LaunchFailed("cannot use the upstream proxy: PROXY-ERROR cannot parse it")


def test_launch_outcome_never_changes() -> None:
    state = Launch("obfs4")
    for line in OBFS4_UP:
        state.feed(parse_line(line))
    assert state.feed(parse_line(b"VERSION-ERROR late")) == CMethod("obfs4", "socks5", LOCAL)


# --- environment --------------------------------------------------------------------------


def test_client_environment(tmp_path: Path) -> None:
    base = {"PATH": "/usr/bin", "TOR_PT_SERVER_TRANSPORTS": "obfs4", "TOR_PT_PROXY": "x://y"}
    env = client_environment("obfs4", tmp_path / "pt", None, base)
    assert env == {
        "PATH": "/usr/bin",
        "TOR_PT_MANAGED_TRANSPORT_VER": "1",
        "TOR_PT_STATE_LOCATION": str(tmp_path / "pt"),
        "TOR_PT_EXIT_ON_STDIN_CLOSE": "1",
        "TOR_PT_CLIENT_TRANSPORTS": "obfs4",
    }
    proxied = client_environment("obfs4", tmp_path, "socks5://u:p@10.0.0.2:1080", base)
    assert proxied["TOR_PT_PROXY"] == "socks5://u:p@10.0.0.2:1080"
