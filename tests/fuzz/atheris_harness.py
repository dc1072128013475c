"""Coverage-guided fuzzing of detour's parsers of untrusted bytes with atheris (libFuzzer),
for runs longer than the hypothesis properties next to this file (which run in CI).

    pip install atheris
    python -m tests.fuzz.atheris_harness --list
    mkdir -p corpus/socks5   # libFuzzer wants the corpus directory to exist
    python -m tests.fuzz.atheris_harness socks5_request -max_total_time=600 corpus/socks5/
    python -m tests.fuzz.atheris_harness all -runs=200000

The first argument names the target (or `all`, which feeds every input to every target);
the rest go to libFuzzer (-max_total_time, -runs, -jobs, a corpus directory, a crash file
to replay, ...). Each target accepts the parser's own documented errors and nothing else:
any other exception is a crash, and libFuzzer writes the input that caused it to
crash-<sha1> in the working directory. Replay it with the same command and the file instead
of the corpus; then add it as an explicit example to the property test of that parser.

The file's name does not start with test_, so pytest does not collect it; atheris is not a
test dependency.
"""

from __future__ import annotations

import asyncio
import base64
import sys
import zlib
from collections.abc import Callable

Target = Callable[[bytes], None]


def _targets() -> dict[str, Target]:
    import dns.message

    from helper import http_server
    from helper.config import ConfigError, parse_config
    from helper.proxy import http as proxy_http
    from helper.proxy import socks as proxy_socks
    from helper.proxy.handshake import NeedMore, ProtocolError
    from helper.proxy.transparent import first_bytes_complete, name_in_first_bytes
    from tests.unit.scripted import ScriptedStream
    from transports import ChainError, DialError, Endpoint, parse_chain
    from transports import websocket as ws
    from transports.dns import read_answer
    from transports.fronted import mux
    from transports.fronted import protocol as tunnel
    from transports.fronted.accesskey import AccessKey, AccessKeyError
    from transports.http_connect import HttpConnectDialer
    from transports.pt.ipc import LineReader
    from transports.socks import Socks4aDialer, Socks5Dialer
    from transports.tlsfrag import (
        Fragmenting,
        fragment_client_hello,
        read_client_hello,
        server_name,
        server_name_span,
    )

    def listener(parse) -> Target:
        def target(data: bytes) -> None:
            try:
                parse(data)
            except (NeedMore, ProtocolError):
                pass

        return target

    def http_head(data: bytes) -> None:
        # The bytes as a head, and in the places of a valid head that hold the client's text:
        # libFuzzer alone rarely builds a whole request line.
        for head in (
            data,
            b"CONNECT " + data + b" HTTP/1.1\r\n\r\n",
            b"GET http://" + data + b" HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET http://h/ HTTP/1.1\r\nProxy-Authorization: " + data + b"\r\n\r\n",
        ):
            try:
                request = proxy_http.parse_request_head(head)
            except ProtocolError:
                continue
            proxy_http.check_basic_auth(request)
            if not request.is_connect:
                proxy_http.forwarded_head(request)

    def api_request(data: bytes) -> None:
        # The status API's server: the same head parser, then its origin-form target and
        # Host checks.
        for head in (
            data,
            b"GET " + data + b" HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET /status HTTP/1.1\r\nHost: " + data + b"\r\n\r\n",
        ):
            try:
                http_server.request_from_head(proxy_http.parse_head(head))
            except ProtocolError:
                continue

    def transparent_first_bytes(data: bytes) -> None:
        for first in (data, b"\x16" + data, b"GET / HTTP/1.1\r\n" + data):
            first_bytes_complete(first)
            name_in_first_bytes(first)

    def tlsfrag(data: bytes) -> None:
        server_name_span(data)
        how = Fragmenting(offsets=(1 + (data[0] if data else 0),), sni=True)
        fragment_client_hello(data, how)

    def signal_inner_hello(data: bytes) -> None:
        read = read_client_hello(data, 4096)
        if read.state == "complete":
            server_name(read.message)

    query = dns.message.make_query("web.telegram.org", "A", use_edns=0, payload=1232)

    def dns_answer(data: bytes) -> None:
        try:
            read_answer(query, data, "fuzz")
        except DialError:
            pass

    def tunnel_message(data: bytes) -> None:
        for parse in (tunnel.parse_request, tunnel.parse_reply):
            try:
                parse(data)
            except (tunnel.NeedMore, tunnel.ProtocolError):
                pass

    def mux_frame(data: bytes) -> None:
        start = 0
        try:
            while True:
                used, _ = mux.parse_frame(data, start)
                start += used
        except (tunnel.NeedMore, tunnel.ProtocolError):
            pass

    def websocket_frame(data: bytes) -> None:
        for masked in (False, True):
            try:
                ws.parse_frame(data, expect_masked=masked)
            except (ws.NeedMore, ws.WebSocketError):
                pass

    def text(data: bytes) -> str:
        return data.decode("utf-8", errors="replace")

    def pt_stdout(data: bytes) -> None:
        reader = LineReader()
        half = len(data) // 2
        reader.feed(data[:half])
        reader.feed(data[half:])
        reader.eof()

    def config(data: bytes) -> None:
        try:
            parse_config(text(data), "fuzz.toml")
        except ConfigError:
            pass

    def chain(data: bytes) -> None:
        try:
            str(parse_chain(text(data)))
        except ChainError:
            pass

    def access_key(data: bytes) -> None:
        # As text, and as the compressed JSON inside a key (past the prefix and base64).
        packed = base64.urlsafe_b64encode(zlib.compress(data)).decode()
        for candidate in (text(data), "dtr1:" + packed):
            try:
                AccessKey.decode(candidate)
            except AccessKeyError:
                pass

    loop = asyncio.new_event_loop()
    proxy, destination = Endpoint("192.0.2.1", 1080), Endpoint("web.telegram.org", 443)

    class Scripted:
        def __init__(self, data: bytes) -> None:
            self.data = data

        async def dial(self, target: Endpoint) -> ScriptedStream:
            return ScriptedStream([self.data])

    def upstream_reply(data: bytes) -> None:
        for dialer in (
            Socks5Dialer(Scripted(data), proxy),
            Socks5Dialer(Scripted(data), proxy, "alice", "s3cret"),
            Socks4aDialer(Scripted(data), proxy),
            HttpConnectDialer(Scripted(data), proxy),
        ):
            try:
                loop.run_until_complete(dialer.dial(destination))
            except DialError:
                pass

    def websocket_upgrade(data: bytes) -> None:
        try:
            loop.run_until_complete(
                ws.websocket_connect(ScriptedStream([data]), "relay.test", "/", timeout=5)
            )
        except DialError:
            pass

    return {
        "socks5_greeting": listener(proxy_socks.parse_socks5_greeting),
        "socks5_auth": listener(proxy_socks.parse_socks5_auth),
        "socks5_request": listener(proxy_socks.parse_socks5_request),
        "socks4_request": listener(proxy_socks.parse_socks4_request),
        "http_request": http_head,
        "api_request": api_request,
        "transparent_first_bytes": transparent_first_bytes,
        "tlsfrag_client_hello": tlsfrag,
        "signal_inner_hello": signal_inner_hello,
        "dns_answer": dns_answer,
        "tunnel_message": tunnel_message,
        "mux_frame": mux_frame,
        "websocket_frame": websocket_frame,
        "websocket_upgrade": websocket_upgrade,
        "upstream_reply": upstream_reply,
        "pt_stdout": pt_stdout,
        "config": config,
        "chain": chain,
        "access_key": access_key,
    }


def main(argv: list[str]) -> None:
    targets = _targets()
    if len(argv) < 2 or argv[1] in ("-h", "--help", "--list"):
        print(__doc__)
        print("targets:", ", ".join(["all", *targets]))
        return
    name = argv[1]
    if name == "all":

        def one(data: bytes) -> None:
            for target in targets.values():
                target(data)
    elif name in targets:
        one = targets[name]
    else:
        sys.exit(f"unknown target {name!r}; targets: all, {', '.join(targets)}")

    import atheris  # not a test dependency: pip install atheris

    # Coverage feedback: instrument the bytecode of everything imported so far (detour's
    # parsers, and the libraries they call), so libFuzzer keeps inputs that reach new code.
    atheris.instrument_all()
    atheris.Setup([argv[0], *argv[2:]], one)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
