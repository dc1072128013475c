"""The set-up screen's QR codes decode to the links they stand for: the text the screen
draws (Unicode half blocks, two rows of modules a line) is turned back into an image and read
by zxing-cpp, a decoder that has nothing to do with the encoder (segno)."""

from __future__ import annotations

import pytest

from helper.tui.appsetup import qr_rows
from transports.mtproto.secret import ProxySecret, SecretMode, proxy_link

zxingcpp = pytest.importorskip("zxingcpp")

SCALE = 4
MODULES = {"█": (1, 1), "▀": (1, 0), "▄": (0, 1), " ": (0, 0)}


def decode(rows: list[str]) -> str:
    matrix: list[list[int]] = []
    for line in rows:
        pairs = [MODULES[ch] for ch in line]
        matrix.append([top for top, _ in pairs])
        matrix.append([bottom for _, bottom in pairs])
    quiet = 4  # the drawn border is the screen's; a decoder wants a wider light margin
    width = len(matrix[0]) + 2 * quiet
    image = bytearray()
    blank = b"\xff" * width * SCALE
    image += blank * quiet * SCALE
    for row in matrix:
        line = b"\xff" * quiet * SCALE
        line += b"".join((b"\x00" if dark else b"\xff") * SCALE for dark in row)
        line += b"\xff" * quiet * SCALE
        image += line * SCALE
    image += blank * quiet * SCALE
    height = len(image) // (width * SCALE)
    found = zxingcpp.read_barcode(memoryview(bytes(image)).cast("B", (height, width * SCALE)))
    assert found is not None, "no QR code found"
    return found.text


@pytest.mark.parametrize(
    "link",
    [
        proxy_link("192.168.1.2", 443, ProxySecret(bytes(range(16)), SecretMode.PADDED)),
        proxy_link(
            "proxy.example.org",
            8443,
            ProxySecret(bytes(range(16)), SecretMode.FAKE_TLS, "www.example.org"),
        ),
        "tg://socks?server=127.0.0.1&port=1080&user=alice&pass=s3cret",
    ],
)
def test_the_drawn_code_reads_back_as_the_link(link: str) -> None:
    assert decode(qr_rows(link)) == link
