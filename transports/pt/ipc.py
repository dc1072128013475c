"""What a managed pluggable transport and detour say to each other, without processes:
the environment detour starts it with, and the lines it writes to stdout (PT 1.0, "Pluggable
Transport Specification (Version 1)", section 3: configuration environment variables, and
the PT-to-parent messages).

The PT's output is untrusted bytes: every line parses into a message, `Malformed` when it is
not what the spec allows, never an exception. `Launch` is the client launch as a state
machine fed with those messages; `LineReader` cuts a byte stream into lines of bounded length.

    PT stdout (client, one transport asked for):

        VERSION 1                                  or  VERSION-ERROR <message>
        [PROXY DONE | PROXY-ERROR <message>]           (only with TOR_PT_PROXY)
        CMETHOD <transport> socks5 127.0.0.1:PORT  or  CMETHOD-ERROR <transport> <message>
        CMETHODS DONE
        ... then any time:  LOG SEVERITY=<s> MESSAGE="<m>"  |  STATUS TRANSPORT=<t> <k>=<v>...

    ENV-ERROR <message> may come instead of anything after VERSION; unknown keywords are
    ignored (the spec says the parent MUST ignore them).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..base import Endpoint

__all__ = [
    "MAX_LINE",
    "CMethod",
    "CMethodError",
    "CMethodsDone",
    "EnvError",
    "Launch",
    "LaunchFailed",
    "LineReader",
    "Log",
    "Malformed",
    "Message",
    "ProxyDone",
    "ProxyError",
    "Status",
    "Unknown",
    "Version",
    "VersionError",
    "client_environment",
    "parse_kvline",
    "parse_line",
    "printable",
]

SPEC_VERSION = "1"
# Longer lines are not messages any PT sends; they are cut off and reported as Malformed.
MAX_LINE = 8192
# What detour shows of a PT's free-form text (messages, logs, stderr).
_SHOWN = 300


# --- messages -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Version:
    version: str


@dataclass(frozen=True)
class VersionError:
    message: str


@dataclass(frozen=True)
class EnvError:
    message: str


@dataclass(frozen=True)
class ProxyDone:
    pass


@dataclass(frozen=True)
class ProxyError:
    message: str


@dataclass(frozen=True)
class CMethod:
    transport: str
    protocol: str  # "socks5" or "socks4" (lower case)
    address: Endpoint  # an IP literal and port


@dataclass(frozen=True)
class CMethodError:
    transport: str
    message: str


@dataclass(frozen=True)
class CMethodsDone:
    pass


@dataclass(frozen=True)
class Log:
    severity: str
    message: str


@dataclass(frozen=True)
class Status:
    transport: str
    fields: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Unknown:
    keyword: str


@dataclass(frozen=True)
class Malformed:
    reason: str  # says what was wrong; quotes nothing longer than _SHOWN


Message = (
    Version
    | VersionError
    | EnvError
    | ProxyDone
    | ProxyError
    | CMethod
    | CMethodError
    | CMethodsDone
    | Log
    | Status
    | Unknown
    | Malformed
)

# <KeywordChar> ::= <any US-ASCII alphanumeric, dash, and underscore>
_KEYWORD = re.compile(r"[A-Za-z0-9_-]+")
# Transport names are C identifiers (pt-spec 3.2.2).
TRANSPORT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str, limit: int = _SHOWN) -> str:
    """A PT's text made safe for one log line: control characters escaped, length capped."""
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group(0)):02x}", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_line(line: bytes) -> Message:
    """One line of a PT's stdout, without its newline (a trailing CR is dropped)."""
    if line.endswith(b"\r"):
        line = line[:-1]
    if len(line) > MAX_LINE:
        return Malformed(f"line longer than {MAX_LINE} bytes")
    if b"\0" in line:
        return Malformed("line contains NUL")
    # <ArgChar> is US-ASCII; a PT printing UTF-8 in a message is forgiven, not the keyword.
    text = line.decode("utf-8", errors="replace")
    keyword, _, rest = text.partition(" ")
    if not _KEYWORD.fullmatch(keyword):
        return Malformed(f"no keyword at the start of {printable(text, 60)!r}")
    words = rest.split(" ") if rest else []
    if keyword == "VERSION":
        if len(words) != 1 or not words[0]:
            return Malformed("VERSION needs exactly one argument")
        return Version(words[0])
    if keyword == "VERSION-ERROR":
        return VersionError(printable(rest))
    if keyword == "ENV-ERROR":
        return EnvError(printable(rest))
    if keyword == "PROXY":
        if words != ["DONE"]:
            return Malformed("PROXY is only followed by DONE")
        return ProxyDone()
    if keyword == "PROXY-ERROR":
        return ProxyError(printable(rest))
    if keyword == "CMETHOD":
        return _cmethod(words)
    if keyword == "CMETHOD-ERROR":
        transport, _, message = rest.partition(" ")
        if not TRANSPORT_NAME.fullmatch(transport):
            return Malformed("CMETHOD-ERROR without a transport name")
        return CMethodError(transport, printable(message))
    if keyword == "CMETHODS":
        if words != ["DONE"]:
            return Malformed("CMETHODS is only followed by DONE")
        return CMethodsDone()
    if keyword == "LOG":
        fields = dict(parse_kvline(rest))
        return Log(printable(fields.get("SEVERITY", "")), printable(fields.get("MESSAGE", "")))
    if keyword == "STATUS":
        pairs = parse_kvline(rest)
        transport = dict(pairs).get("TRANSPORT", "")
        fields = tuple((printable(k, 60), printable(v)) for k, v in pairs if k != "TRANSPORT")
        return Status(printable(transport, 60), fields[:32])
    return Unknown(keyword)


def _cmethod(words: list[str]) -> Message:
    # CMETHOD <transport> <'socks4','socks5'> <address:port>; older PTs append ARGS:/OPT-ARGS:
    if len(words) < 3:
        return Malformed("CMETHOD needs a transport, a protocol and an address")
    transport, protocol, address = words[:3]
    if not TRANSPORT_NAME.fullmatch(transport):
        return Malformed("CMETHOD transport is not a name")
    protocol = protocol.lower()
    if protocol == "socks4a":
        protocol = "socks4"
    if protocol not in ("socks4", "socks5"):
        shown = printable(protocol, 20)
        return Malformed(f"CMETHOD protocol {shown!r} is neither socks4 nor socks5")
    try:
        endpoint = Endpoint.parse(address)
    except ValueError:
        return Malformed(f"CMETHOD address {printable(address, 60)!r} is not IP:PORT")
    if endpoint.ip is None or not 0 < endpoint.port < 65536:
        return Malformed(f"CMETHOD address {printable(address, 60)!r} is not IP:PORT")
    return CMethod(transport, protocol, endpoint)


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "'": "'"}


def parse_kvline(text: str) -> list[tuple[str, str]]:
    """KEY=VALUE pairs separated by spaces, values optionally double-quoted with C escapes
    (the format of LOG and STATUS). Whatever does not fit is skipped, never an error."""
    pairs: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] == " ":
            i += 1
        start = i
        while i < n and text[i] not in " =":
            i += 1
        key = text[start:i]
        if i >= n or text[i] != "=":
            continue  # a bare word: nothing to record
        i += 1
        if i < n and text[i] == '"':
            value, i = _quoted(text, i + 1)
        else:
            start = i
            while i < n and text[i] != " ":
                i += 1
            value = text[start:i]
        if key:
            pairs.append((key, value))
    return pairs


def _quoted(text: str, i: int) -> tuple[str, int]:
    """The value of a quoted string starting after its opening quote, and where it ends.
    An unterminated string runs to the end of the line."""
    out: list[str] = []
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            return "".join(out), i + 1
        if ch == "\\" and i + 1 < n:
            nxt = text[i + 1]
            octal = re.match(r"[0-7]{1,3}", text[i + 1 : i + 4])
            if octal:
                out.append(chr(int(octal.group(0), 8)))
                i += 1 + len(octal.group(0))
                continue
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out), i


class LineReader:
    """Cuts bytes into lines of at most MAX_LINE bytes; an overlong line is reported once as
    Malformed and skipped up to its newline, so a PT cannot make detour buffer without end."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._skipping = False

    def feed(self, data: bytes) -> list[Message]:
        messages: list[Message] = []
        self._buffer += data
        while True:
            newline = self._buffer.find(b"\n")
            if newline < 0:
                if len(self._buffer) > MAX_LINE:
                    if not self._skipping:
                        messages.append(Malformed(f"line longer than {MAX_LINE} bytes"))
                    self._skipping = True
                    self._buffer.clear()
                return messages
            line = bytes(self._buffer[:newline])
            del self._buffer[: newline + 1]
            if self._skipping:
                self._skipping = False
                continue
            messages.append(parse_line(line))

    def eof(self) -> list[Message]:
        """The last line when the output ended without a newline."""
        rest, skipping = bytes(self._buffer), self._skipping
        self._buffer.clear()
        self._skipping = False
        return [parse_line(rest)] if rest and not skipping else []


# --- the client launch ----------------------------------------------------------------------


@dataclass(frozen=True)
class LaunchFailed:
    reason: str  # completes "the obfs4 client ...": "answered VERSION-ERROR: no-version"


@dataclass
class Launch:
    """A client PT's launch for one transport, from its first line to CMETHODS DONE.

    Feed it every message; `outcome` becomes a CMethod (where to send SOCKS requests) or a
    LaunchFailed, and never changes after that. With an upstream proxy the PT must confirm
    it (PROXY DONE) before CMETHODS DONE: a PT that ignores TOR_PT_PROXY would connect
    directly, which is exactly what the user asked it not to do.
    """

    transport: str
    proxy: bool = False
    outcome: CMethod | LaunchFailed | None = None
    version: str | None = None
    proxy_done: bool = False
    method: CMethod | None = None
    error: str | None = None
    offered: list[str] = field(default_factory=list)

    def feed(self, message: Message) -> CMethod | LaunchFailed | None:
        if self.outcome is None:
            self.outcome = self._step(message)
        return self.outcome

    def _step(self, message: Message) -> CMethod | LaunchFailed | None:
        match message:
            case VersionError(text):
                return LaunchFailed(f"answered VERSION-ERROR: {text or 'no version in common'}")
            case EnvError(text):
                return LaunchFailed(f"answered ENV-ERROR: {text}")
            case Version(version):
                if self.version is not None:
                    return LaunchFailed("said VERSION twice")
                if version != SPEC_VERSION:
                    return LaunchFailed(f"chose protocol version {printable(version, 20)!r}")
                self.version = version
                return None
            case Log() | Status() | Unknown() | Malformed():
                return None  # logged by the caller; not part of the launch
        if self.version is None:
            return LaunchFailed("did not start with a VERSION line")
        match message:
            case ProxyDone():
                if not self.proxy:
                    return LaunchFailed("said PROXY DONE without being given a proxy")
                self.proxy_done = True
            case ProxyError(text):
                return LaunchFailed(f"cannot use the upstream proxy: PROXY-ERROR {text}")
            case CMethod(transport=name):
                if len(self.offered) < 16:  # for the message; a PT could send thousands
                    self.offered.append(name)
                if name == self.transport and self.method is None:
                    self.method = message
            case CMethodError(transport=name, message=text):
                if name == self.transport:
                    self.error = text
            case CMethodsDone():
                return self._done()
        return None

    def _done(self) -> CMethod | LaunchFailed:
        if self.method is not None:
            if self.proxy and not self.proxy_done:
                return LaunchFailed(
                    "did not confirm the upstream proxy (no PROXY DONE): it cannot use one "
                    "and would connect directly"
                )
            return self.method
        if self.error is not None:
            return LaunchFailed(f"answered CMETHOD-ERROR: {self.error}")
        offered = ", ".join(self.offered) or "none"
        return LaunchFailed(f"does not offer the transport {self.transport} (offered: {offered})")


# --- environment --------------------------------------------------------------------------


def client_environment(
    transport: str,
    state: Path,
    proxy_url: str | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment a client PT starts with (pt-spec 3.2): detour's own, without any
    TOR_PT_* variables it may have inherited, plus the managed-proxy settings."""
    env = {
        key: value
        for key, value in (os.environ if base is None else base).items()
        if not key.startswith("TOR_PT_")
    }
    env.update(
        TOR_PT_MANAGED_TRANSPORT_VER=SPEC_VERSION,
        TOR_PT_STATE_LOCATION=str(state),
        # Closing the PT's stdin ends it, also when detour dies without cleaning up.
        TOR_PT_EXIT_ON_STDIN_CLOSE="1",
        TOR_PT_CLIENT_TRANSPORTS=transport,
    )
    if proxy_url is not None:
        env["TOR_PT_PROXY"] = proxy_url
    return env


def iter_lines(data: bytes) -> Iterator[Message]:
    """Every message in a complete output (tests and one-shot uses)."""
    reader = LineReader()
    yield from reader.feed(data)
    yield from reader.eof()
