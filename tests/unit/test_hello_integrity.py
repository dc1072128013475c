"""Why the strategy search changes how a ClientHello is framed (records, segments) and never
its bytes (docs/search.md "What is not searched"): the TLS transcript covers the ClientHello
as the server received it, so a relay that rewrites it -- the server name's letter case, a
padding extension -- breaks the handshake of the application's own TLS, while cutting it
into records keeps it. Memory BIOs, no sockets."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

from helper.lab.ca import LabCA
from transports.tlsfrag import Fragmenting, fragment_client_hello

NAME = "web.example.org"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LabCA:
    return LabCA(Path(tmp_path_factory.mktemp("ca")))


def handshake(ca: LabCA, rewrite: Callable[[bytes], bytes], tls12: bool = False) -> bool:
    """A client and a server over memory BIOs, the client's first flight through `rewrite`;
    whether the handshake completes."""
    client_ctx = ca.client_context()
    if tls12:
        client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=NAME)
    server = ca.server_context(NAME).wrap_bio(s_in, s_out, server_side=True)
    first = True
    done = [False, False]
    for _ in range(8):
        for i, end in enumerate((client, server)):
            try:
                end.do_handshake()
                done[i] = True
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError:
                return False
        data = c_out.read()
        if first and data:
            data, first = rewrite(data), False
        s_in.write(data)
        c_in.write(s_out.read())
        if all(done):
            return True
    return False


def records(data: bytes) -> bytes:
    return b"".join(fragment_client_hello(data, Fragmenting(offsets=(1, 7), sni=True)) or [])


@pytest.mark.parametrize("tls12", [False, True], ids=["tls13", "tls12"])
def test_records_keep_the_handshake_a_rewritten_name_breaks_it(ca: LabCA, tls12: bool) -> None:
    assert handshake(ca, lambda d: d, tls12)
    assert handshake(ca, records, tls12)
    mixed = NAME.encode().swapcase()
    assert not handshake(ca, lambda d: d.replace(NAME.encode(), mixed), tls12)
