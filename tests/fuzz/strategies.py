"""Hypothesis strategies for detour's untrusted inputs: valid SOCKS messages (with the message
the parser should return), near-valid mutations of them, HTTP request heads, and what a
pluggable transport writes on its stdout.

Speed matters: the ci profile runs 10,000 examples per property, and hypothesis spends far
more time generating than the parsers spend parsing. Every structured input here is
therefore decoded from ONE st.binary() draw by a small grammar (`Choices`, in the spirit of
libFuzzer's FuzzedDataProvider): one draw costs ~0.2 ms an example where the equivalent
nest of st.one_of/st.lists/st.text cost 1-2 ms. Hypothesis still mutates and shrinks the
bytes; a zero byte always picks the first, most ordinary option, so shrunk examples read
well. The valid-message builders write wire bytes by hand from the RFCs rather than with
transports.socks.encode_address, so a bug in the encoder cannot hide one in the parser.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import struct
from collections.abc import Sequence
from typing import TypeVar

from hypothesis import strategies as st

from helper.proxy.socks import Credentials, Socks4Request, Socks5Greeting, Socks5Request
from transports import Endpoint

T = TypeVar("T")
NUL = b"\0"


class Choices:
    """Reads decisions from fuzz bytes; past the end every read is zero (the first option)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def pick(self, options: Sequence[T]) -> T:
        return options[self.byte() % len(options)]

    def chance(self, percent: int) -> bool:
        """True with about `percent`% probability (False on a zero byte)."""
        return self.byte() * 100 >= (100 - percent) * 256

    def size(self, limit: int) -> int:
        return (
            (self.byte() << 8 | self.byte()) % (limit + 1)
            if limit > 255
            else self.byte() % (limit + 1)
        )

    def take(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        self.pos += len(chunk)
        return chunk

    def stretch(self, limit: int, seed: int = 12) -> bytes:
        """Bytes of any length up to `limit` from only a few input bytes (a seed, repeated):
        long names and passwords cost no more to generate than short ones."""
        n = self.size(limit)
        pattern = self.take(1 + self.byte() % seed) or b"\0"
        return (pattern * (n // len(pattern) + 1))[:n]

    def port(self) -> int:
        return (self.byte() << 8 | self.byte()) or 443

    def hostname(self, limit: int = 253) -> str:
        return _hostname(self.stretch(limit) or b"a")

    def text(self, limit: int, alphabet: bytes | None = None) -> str:
        raw = self.take(self.size(limit))
        if alphabet is None:
            return raw.decode("latin-1")
        return bytes(alphabet[x % len(alphabet)] for x in raw).decode("latin-1")


_LDH = b"abcdefghijklmnopqrstuvwxyz0123456789-_ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _hostname(raw: bytes) -> str:
    # Bytes -> letters, digits, '-', '_' and dots (every 9th value), then made valid: no
    # empty labels, labels of at most 63, at most 253 characters.
    text = bytes(46 if x % 9 == 8 else _LDH[x % len(_LDH)] for x in raw).decode()
    labels = [label[:63] for label in text.split(".") if label]
    return ".".join(labels)[:253].strip(".") or "a"


ports = st.integers(min_value=1, max_value=65535)
# Valid host names (RFC 1035 lengths); the parsers care about lengths and characters, not TLDs
# (hypothesis.provisional.domains() costs ~2 ms an example).
hostnames = st.binary(min_size=1, max_size=253).map(_hostname)
ipv4s = st.binary(min_size=4, max_size=4).map(ipaddress.IPv4Address)
ipv6s = st.binary(min_size=16, max_size=16).map(ipaddress.IPv6Address)


def _port(port: int) -> bytes:
    return struct.pack("!H", port)


# --- valid SOCKS messages, as (wire bytes, expected message) ------------------------------


def _greeting(methods: bytes) -> tuple[bytes, Socks5Greeting]:
    #   VER NMETHODS METHODS
    return bytes([5, len(methods)]) + methods, Socks5Greeting(frozenset(methods))


def _utf8_text(raw: bytes, max_bytes: int = 255) -> str:
    """Any Unicode text (bytes read as UTF-16, lone surrogates dropped) of at most
    `max_bytes` bytes in UTF-8."""
    text = raw.decode("utf-16-le", "ignore")
    while len(text.encode()) > max_bytes:
        text = text[:-1]
    return text


def _login(data: bytes) -> tuple[bytes, Credentials]:
    #   VER=01 ULEN UNAME PLEN PASSWD
    c = Choices(data)
    username = _utf8_text(c.stretch(300))
    password = _utf8_text(c.stretch(300))
    user, pw = username.encode(), password.encode()
    return bytes([1, len(user)]) + user + bytes([len(pw)]) + pw, Credentials(username, password)


def _socks5_request(data: bytes) -> tuple[bytes, Socks5Request]:
    #   VER CMD=CONNECT RSV ATYP DST.ADDR DST.PORT
    c = Choices(data)
    port = c.port()
    kind = c.pick(["name", "ipv4", "ipv6"])
    if kind == "ipv4":
        ip = ipaddress.IPv4Address(c.take(4).ljust(4, b"\0"))
        address, host = b"\x01" + ip.packed, str(ip)
    elif kind == "ipv6":
        ip6 = ipaddress.IPv6Address(c.take(16).ljust(16, b"\0"))
        address, host = b"\x04" + ip6.packed, str(ip6)
    else:
        host = c.hostname()
        address = bytes([3, len(host)]) + host.encode()
    return b"\x05\x01\x00" + address + _port(port), Socks5Request(1, Endpoint(host, port))


def _socks4_request(data: bytes) -> tuple[bytes, Socks4Request]:
    #   VN=04 CD=01 DSTPORT DSTIP USERID NUL [NAME NUL]
    c = Choices(data)
    port = c.port()
    user = c.stretch(64).replace(b"\0", b"")
    if c.chance(50):
        ip = ipaddress.IPv4Address(c.take(4).ljust(4, b"\0"))
        if ip.packed[:3] == b"\0\0\0":  # 0.0.0.x announces SOCKS4a: move out of that range
            ip = ipaddress.IPv4Address(b"\x01" + ip.packed[1:])
        dstip, name, host = ip.packed, b"", str(ip)
    else:
        host = c.hostname()
        dstip, name = bytes([0, 0, 0, c.byte() or 1]), host.encode() + b"\0"
    wire = b"\x04\x01" + _port(port) + dstip + user + b"\0" + name
    return wire, Socks4Request(Endpoint(host, port), user.decode("utf-8", "replace"))


def _greeting_from(data: bytes) -> tuple[bytes, Socks5Greeting]:
    c = Choices(data)
    return _greeting(c.stretch(254, seed=24) + bytes([c.byte()]))


# Each decoded from a fixed number of bytes: hypothesis picks a variable length one boolean
# per byte, which made these properties 2-3x slower. Lengths come from the bytes instead,
# uniformly up to each field's limit.
socks5_greetings = st.binary(min_size=40, max_size=40).map(_greeting_from)
socks5_logins = st.binary(min_size=48, max_size=48).map(_login)
socks5_requests = st.binary(min_size=40, max_size=40).map(_socks5_request)
socks4_requests = st.binary(min_size=48, max_size=48).map(_socks4_request)


# --- near-valid inputs: a valid message, then mutated --------------------------------------


def mutate(data: bytes, edits: bytes) -> bytes:
    """Apply edits, 3 bytes each (operation, position, value), to a valid message: reaches
    the parsers' deeper branches far more often than uniform random bytes."""
    buf = bytearray(data)
    for k in range(0, len(edits) - 2, 3):
        op, pos, value = edits[k] % 5, edits[k + 1], edits[k + 2]
        i = pos % (len(buf) + 1)
        if op == 0 and buf:
            buf[pos % len(buf)] = value
        elif op == 1:
            del buf[i:]
        elif op == 2:
            buf += bytes([value]) * (1 + pos % 4)
        elif op == 3:
            buf[i:i] = bytes([value])
        elif op == 4 and buf:
            del buf[pos % len(buf)]
    return bytes(buf)


# --- HTTP request heads -------------------------------------------------------------------

TOKEN = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
URL = b"abcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/?%#[]"
HEADER_NAMES = [
    "Host",
    "Connection",
    "Proxy-Connection",
    "Proxy-Authorization",
    "Upgrade",
    "Keep-Alive",
    "TE",
    "Trailer",
    "Content-Length",
    "X-Forwarded-For",
    "Sec-WebSocket-Key",
]
CONNECTION_TOKENS = ["close", "upgrade", "Upgrade", "keep-alive", "host", "x-a", "", " te "]


def _authority(c: Choices, good: bool) -> str:
    kind = c.pick(
        ["name", "ipv4", "ipv6", "bare-name", "broken", "url-chars", "latin1"]
        if not good
        else ["name", "ipv4", "ipv6"]
    )
    port = c.port()
    if kind == "name":
        return f"{c.hostname(60)}:{port}"
    if kind == "ipv4":
        return f"{ipaddress.IPv4Address(c.take(4).ljust(4, NUL))}:{port}"
    if kind == "ipv6":
        return f"[{ipaddress.IPv6Address(c.take(16).ljust(16, NUL))}]:{port}"
    if kind == "bare-name":
        return c.hostname(60)
    if kind == "broken":
        return c.pick(
            ["example.com:0", "[::1", ":80", "a:b:c", "[::1]x", "h:99999", "h:\u00b2", ""]
        )
    if kind == "url-chars":
        return c.text(30, URL)
    return c.text(20)


def _auth_value(c: Choices, good: bool = False) -> str:
    scheme = c.pick(["Basic", "basic", "Bearer", "", "Basic "])
    if c.chance(50):
        token = base64.b64encode(c.take(c.size(40))).decode()
    else:
        token = c.text(40, URL if good else None)
    return f"{scheme} {token}"


def _header(c: Choices, good: bool) -> str:
    shape = "field" if good else c.pick(["field", "field", "latin1-field", "junk"])
    if shape == "junk":
        return c.text(30)  # folds, no colon, anything
    if shape == "latin1-field":
        return f"{c.text(10)}:{c.text(30)}"
    name = c.pick(HEADER_NAMES) if c.chance(70) else c.text(12, TOKEN) or "X"
    kind = c.pick(
        ["url", "auth", "connection", "latin1"] if not good else ["url", "auth", "connection"]
    )
    if kind == "url":
        value = c.text(40, URL)
    elif kind == "auth":
        value = _auth_value(c, good)
    elif kind == "connection":
        value = ",".join(c.pick(CONNECTION_TOKENS) for _ in range(c.size(4)))
    else:
        value = c.text(40)
    return f"{name}: {value}"


def _request_head(data: bytes) -> bytes:
    """A well-formed head, then (two times in five) one or two of its parts made
    anything-goes, so every stage of the parser sees bad input with the rest good."""
    c = Choices(data)
    bad = set() if c.chance(60) else {c.pick(PARTS) for _ in range(1 + c.byte() % 2)}
    if "target" in bad:
        method = c.pick(["GET", "CONNECT", "POST", "OPTIONS"])
        scheme = c.pick(
            ["http://", "", "https://", "ftp://", "http:///", "http://user:pw@", "/", "*"]
        )
        tail = c.pick(["", "/", "/x?y"]) if c.chance(70) else c.text(20)
        target = scheme + _authority(c, good=False) + tail
    elif c.chance(35):
        method, target = "CONNECT", _authority(c, good=True)
    else:
        method = c.pick(["GET", "POST", "HEAD", "PUT", "PROPFIND"])
        scheme = c.pick(["http://", "HTTP://"])
        authority = _authority(c, good=True) if c.chance(50) else c.hostname(60)
        path = "/" + c.text(30, URL) if c.chance(70) else ""
        target = scheme + authority + path
    if "method" in bad:
        method = c.pick(["get", "", "G T", "GET\t"]) if c.chance(50) else c.text(12)
    version = c.pick(["HTTP/1.1", "HTTP/1.0"])
    if "version" in bad:
        version = (
            c.pick(["HTTP/2.0", "http/1.1", "HTTP/1.1 ", "FOO", "", "HTTP/1.10"])
            if c.chance(70)
            else c.text(10)
        )
    line = f"{method} {target} {version}"
    if "line" in bad:
        line = c.text(60)
    lines = [line] + [_header(c, "headers" not in bad) for _ in range(c.size(8))]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


PARTS = ["method", "target", "version", "line", "headers", "headers"]


def _http_head(data: bytes) -> bytes:
    # One head in five is raw bytes (of a length the second byte picks); the rest follow the
    # grammar (60% of them well-formed).
    if data[:1] >= b"\xcd":
        return data[2 : 2 + data[1] * 3 // 2] + b"\r\n\r\n"
    return _request_head(data[1:])


# Request heads as the listener hands them over: anything, ending in CRLF CRLF. (A fixed
# size: hypothesis picks a variable length one boolean per byte, which cost 3x as much.)
request_heads = st.binary(min_size=400, max_size=400).map(_http_head)


# --- HTTP request heads to a server (the status API): origin-form targets ------------------

API_PATHS = ["/status", "/metrics", "/proxy.pac", "/healthz", "/", "//status", "/%73tatus"]
HOST_VALUES = ["127.0.0.1:9080", "[::1]:9080", "router.lan", "[::1", "[]:1", ":80", "", "a:b:c"]


def _server_head(data: bytes) -> bytes:
    """A request as a browser, curl or Prometheus sends it to the status API, then (two
    times in five) one or two of its parts made anything-goes; one head in five is raw."""
    if data[:1] >= b"\xcd":
        return data[2 : 2 + data[1] * 3 // 2] + b"\r\n\r\n"
    c = Choices(data[1:])
    bad = set() if c.chance(60) else {c.pick(SERVER_PARTS) for _ in range(1 + c.byte() % 2)}
    method = c.pick(["GET", "HEAD", "POST", "OPTIONS", "DELETE"])
    target = c.pick(API_PATHS)
    if c.chance(30):
        target += "?" + c.text(20, URL)
    if "target" in bad:
        target = c.pick(["*", "", "http://", "http://h", "HTTP://[::1]:9/x", "x", "/a b"])
        target = target + c.text(20, URL) if c.chance(50) else c.text(30)
    version = c.pick(["HTTP/1.1", "HTTP/1.0"])
    if "version" in bad:
        version = c.pick(["HTTP/2", "HTTP/1.10", "", "http/1.1"]) if c.chance(70) else c.text(8)
    lines = [f"{method} {target} {version}"]
    hosts = c.pick([1, 1, 1, 0, 2]) if "host" in bad else 1
    for _ in range(hosts):
        lines.append(f"Host: {c.pick(HOST_VALUES) if c.chance(80) else c.text(20)}")
    if c.chance(40):
        lines.append(f"Authorization: {_auth_value(c, 'headers' not in bad)}")
    lines += [_header(c, "headers" not in bad) for _ in range(c.size(4))]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


SERVER_PARTS = ["target", "version", "host", "headers"]

# Request heads as the status API's server reads them: anything, ending in CRLF CRLF.
server_heads = st.binary(min_size=300, max_size=300).map(_server_head)


def _auth_only(data: bytes) -> str:
    if data[:1] >= b"\xb4":  # about 30%: any latin-1 text at all
        return data[1:].decode("latin-1")
    return _auth_value(Choices(data[1:]))


# Proxy-Authorization values: real Basic credentials, and anything at all.
auth_values = st.binary(min_size=4, max_size=60).map(_auth_only)


# --- user-supplied text: chains, durations, config files ----------------------------------

# RFC 3986 userinfo characters a password may hold without percent-encoding ('%' included so
# encoded forms appear too). Passwords are at least 8 long so they cannot turn up in an error
# message's own words by chance.
PASSWORD_CHARS = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:%"
USER_CHARS = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=%"
SCHEMES = ["socks5", "http", "socks4a", "socks5h", "https", "sock5", "front", "pt", "x-y.z+1"]
LAYERS = [
    "direct",
    "socks5://127.0.0.1:9050",
    "socks5h://[::1]:1080",
    "socks4a://bob@h:1",
    "http://p:3128",
    "tlsfrag:sni",
    "direct:x",
    "",
    " ",
    "pt:obfs4 192.0.2.3:443 cert=AAAA iat-mode=0",
    "pt:obfs4?addr=192.0.2.3:443&cert=A%2BA&iat-mode=1",
    "pt:snowflake",
]
PORT_TEXTS = ["1080", "", "0", "99999", "x", "-1", "65535", "08"]
SUFFIXES = ["", "/", "/path", "?key=v", "#frag", " ", "/?"]


def password(c: Choices) -> str:
    return c.text(32, PASSWORD_CHARS).rjust(8, c.pick("aZ9~"))


def host_text(c: Choices) -> str:
    kind = c.pick(["name", "ipv4", "ipv6", "chars"])
    if kind == "name":
        return c.hostname(40)
    if kind == "ipv4":
        return str(ipaddress.IPv4Address(c.take(4).ljust(4, NUL)))
    if kind == "ipv6":
        return f"[{ipaddress.IPv6Address(c.take(16).ljust(16, NUL))}]"
    return c.text(20, b"abcdefghijklmnopqrstuvwxyz0123456789.-[]:")


def proxy_url(c: Choices, pw: str) -> str:
    """scheme://user:PASSWORD@host:port with everything around the password possibly wrong."""
    scheme, user = c.pick(SCHEMES), c.text(12, USER_CHARS)
    return f"{scheme}://{user}:{pw}@{host_text(c)}:{c.pick(PORT_TEXTS)}{c.pick(SUFFIXES)}"


def _chain(data: bytes) -> tuple[str, list[str]]:
    """A chain string and the passwords written in it."""
    c = Choices(data)
    if c.chance(15):
        return c.text(60) if c.chance(50) else data.decode("utf-8", "replace"), []
    layers, passwords = [], []
    for _ in range(1 + c.byte() % 4):
        kind = c.pick(["url", "fixed", "url", "text"])
        if kind == "url":
            passwords.append(password(c))
            layers.append(proxy_url(c, passwords[-1]))
        elif kind == "fixed":
            layers.append(c.pick(LAYERS))
        else:
            layers.append(c.text(20))
    return c.pick([" | ", "|", " |", "||"]).join(layers), passwords


# (text, passwords in it)
chains = st.binary(min_size=48, max_size=160).map(_chain)

# Passwords as people paste them: spaces, tabs and '|' written as they are, among the
# characters above ("://" and '@' too, so a '|' can be followed by what looks like a URL).
BLANKS = " \t|"
BLANK_PASSWORD_CHARS = PASSWORD_CHARS + BLANKS.encode() * 8 + b"@/"


def blank_password(c: Choices) -> str:
    """A password of 12-44 characters holding at least one space, tab or '|'."""
    pw = c.text(32, BLANK_PASSWORD_CHARS).rjust(12, c.pick("aZ9~"))
    at = c.byte() % len(pw)
    return pw[:at] + c.pick(BLANKS) + pw[at:]


def _blank_chain(data: bytes) -> tuple[str, list[str]]:
    """A chain whose proxy layers hold blank passwords, mostly well formed around them (so
    that parsed chains are shown as well as errors), and the passwords in it."""
    c = Choices(data)
    layers, passwords = [], []
    for _ in range(1 + c.byte() % 3):
        if c.chance(70):
            passwords.append(blank_password(c))
            if c.chance(70):
                scheme, user = c.pick(["socks5", "http", "socks5h"]), c.text(8, USER_CHARS)
                host = c.pick(["10.0.0.2", "proxy.example", "[2001:db8::2]"])
                layers.append(f"{scheme}://{user or 'u'}:{passwords[-1]}@{host}:1080")
            else:
                layers.append(proxy_url(c, passwords[-1]))
        else:
            layers.append(c.pick(LAYERS))
    return c.pick([" | ", "|", " |"]).join(layers), passwords


# (text, passwords in it)
blank_chains = st.binary(min_size=48, max_size=200).map(_blank_chain)


def _redact_case(data: bytes) -> tuple[str, str, str]:
    """(text holding scheme://user:PASSWORD@..., the password, what redact must show)."""
    c = Choices(data)
    pw = password(c)
    scheme, user, host = c.pick(SCHEMES), c.text(12, USER_CHARS), host_text(c)
    prefix = c.pick(["", "route[0].chain: '", "direct | ", "x "])
    suffix = c.pick(["", ":1080", ":1080/x", " | direct", "?a=b", "' and more text"])
    text = f"{prefix}{scheme}://{user}:{pw}@{host}{suffix}"
    return text, pw, f"{scheme}://{user}:***@"


redact_cases = st.binary(min_size=40, max_size=120).map(_redact_case)


def big_int(c: Choices) -> int:
    """An integer of any size: TOML integers reach detour as unbounded Python ints."""
    digits = c.pick([0, 1, 2, 3, 6, 9, 18, 19, 20, 100, 308, 309, 400])
    return (c.byte() + 1) * 10**digits * c.pick([1, -1]) + c.pick([0, 1, -1])


def _duration(data: bytes) -> object:
    """What TOML can hand to parse_duration: strings, integers of any size, any float
    (inf and nan included), booleans, arrays, tables."""
    c = Choices(data)
    kind = c.pick(["grammar", "text", "int", "float", "bool", "list", "table"])
    if kind == "grammar":
        parts = []
        for _ in range(1 + c.byte() % 4):
            number = str(c.size(10**6)) if c.chance(70) else f"{c.size(10**6)}.{c.byte()}"
            parts.append(number + c.pick(["s", "ms", "m", "h", "", "d", "S", " s"]))
        return c.pick(["", " "]).join(parts)
    if kind == "text":
        return c.text(20)
    if kind == "int":
        return big_int(c)
    if kind == "float":
        return struct.unpack("<d", c.take(8).ljust(8, NUL))[0]
    if kind == "bool":
        return c.chance(50)
    if kind == "list":
        return [c.text(4)]
    return {"s": 5}


durations = st.binary(min_size=16, max_size=220).map(_duration)


PLAUSIBLE = [
    "127.0.0.1:1080",
    "0.0.0.0:1080",
    "[::1]:0",
    "localhost:1",
    "proxy.lan:1080",
    "x",
    "5s",
    "250ms",
    "1m30s",
    "0s",
    "soon",
    "direct",
    "deny",
    "socks5://127.0.0.1:9050",
    "sock5://h:1",
    "system",
    "udp://1.1.1.1:53",
    "192.168.1.0/24",
    "10.0.0.1/8",
    "tls://web.telegram.org:443",
    "tcp://h",
    "tcp://h:0",
    "telegram.org",
    "*.cdn.example",
    "a..b",
    "",
    "::1",
]
SECTION_KEYS = {
    "listen": ["mixed", "users", "allow", "handshake_timeout", "idle_timeout"],
    "dns": ["resolver", "hosts"],
    "probe": ["interval", "timeout", "stagger"],
    "default": ["policy"],
    "route": ["name", "chain", "timeout"],
    "service": ["name", "domains", "cidrs", "ports", "probes", "routes"],
    "users": ["name", "password"],
    "base": ["config", "routes"],
}
ROUTE_NAMES = ["direct", "tor", "a", "deny", "bad name", "", "telegram", "..."]


def _value(c: Choices, depth: int = 0) -> object:
    kind = c.pick(["plausible", "plausible", "text", "int", "float", "bool", "list", "table"])
    if kind == "plausible":
        return c.pick(PLAUSIBLE)
    if kind == "text":
        return c.text(12)
    if kind == "int":
        return big_int(c)
    if kind == "float":
        return struct.unpack("<d", c.take(8).ljust(8, NUL))[0]
    if kind == "bool":
        return c.chance(50)
    if depth >= 2:
        return c.pick(PLAUSIBLE)
    if kind == "list":
        return [_value(c, depth + 1) for _ in range(c.byte() % 4)]
    return {c.text(6): _value(c, depth + 1) for _ in range(c.byte() % 3)}


def _table(c: Choices, section: str, known: dict[str, object] | None = None) -> dict[str, object]:
    table = dict(known or {})
    for _ in range(c.byte() % 4):
        key = c.pick(SECTION_KEYS[section]) if c.chance(80) else c.text(8)
        table[key] = _value(c)
    return table


def _config(data: bytes) -> tuple[dict[str, object], list[str], str]:
    """A config document (as a dict for `toml_document`), the chain passwords in it, and the
    raw bytes as text (for "any text at all")."""
    c = Choices(data)
    doc: dict[str, object] = {}
    passwords: list[str] = []
    if c.chance(60):
        listen = {"mixed": c.pick(PLAUSIBLE)} if c.chance(50) else {}
        if c.chance(30):
            listen["users"] = [
                _table(c, "users", {"name": c.pick(["alice", ""]), "password": c.text(8) or "pw"})
                for _ in range(c.byte() % 3)
            ]
        if c.chance(30):
            listen["allow"] = [c.pick(PLAUSIBLE) for _ in range(c.byte() % 3)]
        doc["listen"] = _table(c, "listen", listen)
    if c.chance(30):
        hosts = {
            c.pick(PLAUSIBLE) if c.chance(50) else c.text(8): _value(c) for _ in range(c.byte() % 3)
        }
        doc["dns"] = _table(c, "dns", {"hosts": hosts} if c.chance(50) else None)
    if c.chance(30):
        doc["probe"] = _table(c, "probe")
    if c.chance(30):
        doc["default"] = _table(c, "default", {"policy": c.pick(ROUTE_NAMES)})
    if c.chance(85):
        routes = []
        for _ in range(c.byte() % 4):
            if c.chance(40):
                passwords.append(password(c))
                chain: object = proxy_url(c, passwords[-1])
            else:
                chain = c.pick(PLAUSIBLE) if c.chance(70) else _value(c)
            routes.append(_table(c, "route", {"name": c.pick(ROUTE_NAMES), "chain": chain}))
        doc["route"] = routes if c.chance(90) else _value(c)
    if c.chance(50):
        services = []
        for _ in range(c.byte() % 3):
            service: dict[str, object] = {"name": c.pick(ROUTE_NAMES)}
            for key in ("domains", "cidrs", "ports", "probes", "routes"):
                if c.chance(40):
                    service[key] = [
                        (c.size(70000) if key == "ports" else c.pick(PLAUSIBLE + ROUTE_NAMES))
                        for _ in range(c.byte() % 3)
                    ]
            services.append(_table(c, "service", service))
        doc["service"] = services if c.chance(90) else _value(c)
    if c.chance(25):
        base = {"config": c.pick(["built-in", "none", "x"]), "routes": c.pick(["after", "before"])}
        doc["base"] = _table(c, "base", base)
    if c.chance(10):
        doc[c.text(8)] = _value(c)
    return doc, passwords, data.decode("utf-8", "replace")


configs = st.binary(min_size=64, max_size=400).map(_config)


def toml_value(value: object) -> str:
    """Python value -> TOML inline syntax (strings as JSON basic strings, which TOML shares)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value in (float("inf"), float("-inf")):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{_toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def _toml_string(text: str) -> str:
    # JSON string escapes are TOML's, except that TOML also wants DEL escaped.
    return json.dumps(text).replace("\x7f", "\\u007f")


def toml_document(doc: dict[str, object]) -> str:
    return "\n".join(f"{_toml_string(k)} = {toml_value(v)}" for k, v in doc.items())


# --- pluggable transports: their stdout, bridge lines, per-connection arguments -------------

PT_TRANSPORTS = ["obfs4", "meek_lite", "snowflake", "webtunnel", "x", "_9", "obfs-4", ""]
PT_PROTOCOLS = ["socks5", "socks4", "SOCKS5", "socks4a", "http", ""]


def _pt_address(c: Choices) -> tuple[str, Endpoint | None]:
    """An address as a PT may print it, and the Endpoint it means (None: not valid)."""
    kind = c.pick(["v4", "v6", "name", "noport"])
    port = c.port()
    if kind == "v4":
        ip = str(ipaddress.IPv4Address(c.take(4).ljust(4, NUL)))
        return f"{ip}:{port}", Endpoint(ip, port)
    if kind == "v6":
        ip = str(ipaddress.IPv6Address(c.take(16).ljust(16, NUL)))
        return f"[{ip}]:{port}", Endpoint(ip, port)
    if kind == "name":
        return f"{c.hostname(20)}:{port}", None
    return str(ipaddress.IPv4Address(c.take(4).ljust(4, NUL))), None


def _kv_value(c: Choices) -> str:
    text = c.text(24, b'abc XYZ=\\"\n\t019')
    if c.chance(50):
        escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return '"' + escaped.replace("\t", "\\t") + '"'
    return text.replace(" ", "_")


def _pt_line(c: Choices) -> bytes:
    kind = c.pick(
        [
            "version", "cmethod", "done", "cmethod", "log", "status", "verror", "cerror",
            "enverror", "proxy", "perror", "unknown", "text",
        ]
    )  # fmt: skip
    transport = c.pick(PT_TRANSPORTS)
    if kind == "version":
        line = f"VERSION {c.pick(['1', '1', '2', '', '1 1'])}"
    elif kind == "cmethod":
        line = f"CMETHOD {transport} {c.pick(PT_PROTOCOLS)} {_pt_address(c)[0]}"
        if c.chance(20):
            line += " ARGS:cert=x,iat-mode=0"
    elif kind == "done":
        line = c.pick(["CMETHODS DONE", "CMETHODS DONE", "CMETHODS", "CMETHODS DONE X"])
    elif kind == "log":
        line = f"LOG SEVERITY={c.pick(['debug', 'error', ''])} MESSAGE={_kv_value(c)}"
    elif kind == "status":
        line = f"STATUS TRANSPORT={transport} {c.text(8, USER_CHARS)}={_kv_value(c)}"
    elif kind == "verror":
        line = f"VERSION-ERROR {c.text(30)}"
    elif kind == "cerror":
        line = f"CMETHOD-ERROR {transport} {c.text(30)}"
    elif kind == "enverror":
        line = f"ENV-ERROR {c.text(30)}"
    elif kind == "proxy":
        line = c.pick(["PROXY DONE", "PROXY", "PROXY done"])
    elif kind == "perror":
        line = f"PROXY-ERROR {c.text(30)}"
    elif kind == "unknown":
        line = f"{c.text(10, USER_CHARS).upper() or 'X'} {c.text(20)}"
    else:
        line = c.text(40)
    raw = line.encode("latin-1")
    if c.chance(15):
        raw = mutate(raw, c.take(6))
    return raw


def _pt_output(data: bytes) -> bytes:
    """What a PT writes on stdout: mostly protocol lines, some mutated, any line ends."""
    c = Choices(data)
    if c.chance(10):
        return data
    lines = [_pt_line(c) for _ in range(1 + c.byte() % 8)]
    return b"".join(line + c.pick([b"\n", b"\n", b"\r\n", b""]) for line in lines)


pt_outputs = st.binary(min_size=16, max_size=300).map(_pt_output)


def _pt_lines(data: bytes) -> list[bytes]:
    c = Choices(data)
    return [_pt_line(c) for _ in range(1 + c.byte() % 10)]


pt_line_lists = st.binary(min_size=24, max_size=300).map(_pt_lines)


def _cmethod_line(data: bytes) -> tuple[bytes, str, str, Endpoint]:
    """A valid CMETHOD line, its transport, protocol (as parsed) and address."""
    c = Choices(data)
    first = c.pick(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
    transport = chr(first) + c.text(20, b"abcdefghijklmnopqrstuvwxyz0123456789_")
    protocol = c.pick(["socks5", "socks4", "SOCKS5", "Socks4a"])
    kind = c.pick(["v4", "v6"])
    port = c.port()
    if kind == "v4":
        host = str(ipaddress.IPv4Address(c.take(4).ljust(4, NUL)))
        address = f"{host}:{port}"
    else:
        host = str(ipaddress.IPv6Address(c.take(16).ljust(16, NUL)))
        address = f"[{host}]:{port}"
    parsed = "socks5" if protocol.lower() == "socks5" else "socks4"
    line = f"CMETHOD {transport} {protocol} {address}".encode()
    return line, transport, parsed, Endpoint(host, port)


cmethod_lines = st.binary(min_size=24, max_size=40).map(_cmethod_line)


def _kv_pairs(data: bytes) -> list[tuple[str, str]]:
    c = Choices(data)
    return [
        (c.text(8, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ_") or "K", c.text(30, KV_CHARS))
        for _ in range(c.byte() % 5)
    ]


KV_CHARS = b'ab Z09=\\"\n\t\r\x00\x7f\xe9/:'
kv_pairs = st.binary(max_size=160).map(_kv_pairs)

ARG_CHARS = b"abz09-_.;=\\,:/+ \x01\xe9"


def _pt_args(data: bytes) -> list[tuple[str, str]]:
    c = Choices(data)
    return [(c.text(12, ARG_CHARS), c.text(30, ARG_CHARS)) for _ in range(c.byte() % 6)]


pt_args = st.binary(min_size=0, max_size=200).map(_pt_args)

B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _bridge_line(data: bytes) -> tuple[str, str]:
    """(a pt layer's text after "pt:", near-valid, in either form; the cert in it)."""
    c = Choices(data)
    cert = "Q" + c.text(60, B64).rjust(20, "Z")
    address = _pt_address(c)[0]
    words = [c.pick(["obfs4", "obfs4", "webtunnel", "meek_lite", "x", "Bridge obfs4"]), address]
    if c.chance(50):
        words.append(c.text(40, b"0123456789ABCDEFabcdefg"))
    words += [f"cert={cert}", f"iat-mode={c.pick(['0', '1', '2', '3', ''])}"]
    for _ in range(c.byte() % 3):
        words.append(c.pick(["url=https://a.example/p", "bin=/x", "state=/y", "k=v", "oops"]))
    if c.chance(30):
        query = "&".join(
            w.replace(" ", "") if "=" in w else f"addr={w}" for w in words[1:] if w != words[2]
        )
        text = f"{words[0]}?{query}"
    else:
        text = c.pick([" ", "  ", "\t"]).join(words)
    if c.chance(20):
        text = mutate(text.encode(), c.take(6)).decode("utf-8", "replace")
    # '|' starts the next layer and a newline the next line, whatever the user meant: past
    # them, text is no longer the bridge (and not hidden as one).
    return text.replace("|", "").replace("\n", ""), cert


bridge_texts = st.binary(min_size=40, max_size=200).map(_bridge_line)


# --- cheap decoders for properties that drew several strategies ---------------------------


def text_from(raw: bytes) -> str:
    """Any text st.text() could draw (every code point but surrogates), from bytes at a
    fraction of its cost: a byte below 0xC0 is that character (ASCII, C0 and C1 controls,
    Latin-1); a byte from 0xC0 and the two after it name a character of the BMP (up to
    0xEF) or of one of the 16 other planes (0xF0 + plane - 1)."""
    if max(raw, default=0) < 0xC0:
        return raw.decode("latin-1")
    out, i = [], 0
    while i < len(raw):
        b = raw[i]
        if b < 0xC0:
            out.append(chr(b))
            i += 1
            continue
        point = int.from_bytes(raw[i + 1 : i + 3].ljust(2, NUL))
        if b >= 0xF0:
            point |= (b - 0xEF) << 16
        elif 0xD800 <= point < 0xE000:
            point += 0x800  # surrogates: st.text() draws none
        out.append(chr(point))
        i += 3
    return "".join(out)


def split_tail(raw: bytes, limit: int) -> tuple[bytes, bytes]:
    """(body, tail): the last byte says how many bytes before it (at most `limit`) are the
    tail, e.g. the cuts of a stream drawn with it in one st.binary()."""
    if not raw:
        return b"", b""
    n = raw[-1] % (limit + 1)
    start = max(0, len(raw) - 1 - n)
    return raw[:start], raw[start:-1]


# --- many bytes in one draw ----------------------------------------------------------------
#
# Hypothesis draws a st.binary() a byte at a time (for a length that is not fixed, a "one
# more?" decision before each byte): at 400 bytes that is 0.6 ms an example more than the
# whole of a 16-byte draw, which is about hypothesis' own floor (0.8 ms). One integer of
# 8 * n bits is the same n uniform bytes for the cost of one draw; shrinking an integer
# towards 0 still zeroes the bytes from the front, so shrunk examples read as they did.


def fixed_bytes(size: int) -> st.SearchStrategy[bytes]:
    """Exactly `size` uniform bytes, as st.binary(min_size=size, max_size=size)."""
    return _uniform(size).map(lambda raw: raw[:size])


def _uniform(size: int) -> st.SearchStrategy[bytes]:
    """At least `size` uniform bytes from one integer. Hypothesis draws an integer of a
    range that a float can hold (below 2**1024) mostly small (its distribution favours
    small numbers); a wider range, uniformly: so never fewer than 129 bytes."""
    width = max(size, 129)
    return st.integers(0, 256**width - 1).map(lambda n: n.to_bytes(width, "big"))


# --- a valid message damaged -------------------------------------------------------------


def edit_bytes(c: Choices, wire: bytearray, count: int, *, wide: bool = False) -> bytearray:
    """`wire` (changed in place, and returned) after up to `count` edits read from `c`: a
    byte set, a byte inserted, or everything from a place on cut (no more edits once
    nothing is left). The place is one byte of `c`, two with `wide` (messages over 256
    bytes)."""
    for _ in range(count):
        if not wire:
            break
        where = ((c.byte() << 8 | c.byte()) if wide else c.byte()) % len(wire)
        action = c.pick(["set", "insert", "cut"])
        if action == "set":
            wire[where] = c.byte()
        elif action == "insert":
            wire.insert(where, c.byte())
        else:
            del wire[where:]
    return wire
