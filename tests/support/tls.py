"""TLS ClientHellos for tests, built by hand from RFC 8446 (so a test knows every offset) or by
OpenSSL (so a test sees what real clients send), and an independent record reader for
asserting what went over the wire."""

from __future__ import annotations

import ssl
import struct


def vector(width: int, data: bytes) -> bytes:
    return len(data).to_bytes(width, "big") + data


def server_name_extension(host: bytes) -> bytes:
    # type 0x0000, then server_name_list { name_type 0 = host_name, host_name<2> }
    return b"\x00\x00" + vector(2, vector(2, b"\x00" + vector(2, host)))


def client_hello(host: bytes | None = b"example.com", extra: bytes = b"") -> bytes:
    """A minimal ClientHello handshake message (no record header). `extra` extensions come
    before the server name."""
    extensions = extra + (server_name_extension(host) if host is not None else b"")
    body = (
        b"\x03\x03"  # legacy_version TLS 1.2
        + bytes(range(32))  # random
        + vector(1, b"")  # session id: empty
        + vector(2, b"\x13\x01")  # cipher suites: TLS_AES_128_GCM_SHA256
        + vector(1, b"\x00")  # compression methods: null
        + vector(2, extensions)
    )
    return b"\x01" + vector(3, body)  # msg_type ClientHello


def record(fragment: bytes, version: bytes = b"\x03\x01") -> bytes:
    """One handshake record (type 0x16) around `fragment`."""
    return b"\x16" + version + struct.pack("!H", len(fragment)) + fragment


def openssl_client_hello(server_name: str) -> bytes:
    """The first flight of Python's ssl module (OpenSSL) for `server_name`: a whole record."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def read_records(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """Split a byte stream into TLS records: (type, version, fragment); asserts that the
    stream is whole records and nothing else."""
    records = []
    pos = 0
    while pos < len(data):
        assert pos + 5 <= len(data), f"partial record header at {pos}"
        content_type, version, length = data[pos], data[pos + 1 : pos + 3], data[pos + 3 : pos + 5]
        size = int.from_bytes(length, "big")
        assert pos + 5 + size <= len(data), f"record at {pos} claims {size} bytes"
        records.append((content_type, version, data[pos + 5 : pos + 5 + size]))
        pos += 5 + size
    return records
