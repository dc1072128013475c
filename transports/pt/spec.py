"""What a `pt:` layer says: the transport, the bridge, the bridge's per-connection arguments
and detour's own options; which program runs the transport's client; and how the arguments
travel to it over SOCKS (pt-spec 3.5, "Pluggable Transport Client Per-Connection Arguments").

Two ways to write the layer, both after `pt:`:

    obfs4?addr=192.0.2.3:443&cert=ssH%2B...&iat-mode=0     URL-query form, percent-encoded
    obfs4 192.0.2.3:443 4C331FA9... cert=ssH+... iat-mode=0 a Tor bridge line, as given out
    Bridge obfs4 192.0.2.3:443 ...                           (its leading "Bridge" is fine)

`bin=PATH` (the client program) and `state=DIR` (its state directory) are detour's, in
either form; every other KEY=VALUE goes to the transport. The fingerprint of a bridge line
identifies the Tor relay behind the bridge: detour does not speak Tor, so it is accepted and
not used.

Bridge lines are secrets (a censor that learns one blocks the bridge): nothing here puts one
in an error message, and the chain shows the layer as `pt:NAME ***`.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from ..base import DialError, Endpoint, Failure, Op
from .ipc import TRANSPORT_NAME

__all__ = [
    "CLIENT_PROGRAMS",
    "MAX_ARGS",
    "ClientProgram",
    "PtSpec",
    "PtSpecError",
    "encode_args",
    "find_client",
    "parse_pt",
    "socks5_login",
]

# RFC 1929 gives the username and the password 255 bytes each.
MAX_ARGS = 510
OPTIONS = ("bin", "state")
_FINGERPRINT = re.compile(r"[0-9A-Fa-f]{40}")
# Keys and values of bridge-line arguments never hold spaces or control characters.
_BAD_CHARS = re.compile(r"[\x00-\x20\x7f]")


class PtSpecError(ValueError):
    """A `pt:` layer is not valid; the message names what is wrong, never the bridge."""


@dataclass(frozen=True)
class ClientProgram:
    names: tuple[str, ...]  # looked for on PATH, in this order
    install: str  # completes "install ..."


_OBFS4_FAMILY = ClientProgram(
    ("lyrebird", "obfs4proxy"),
    "the Debian package obfs4proxy (Debian 12) or lyrebird (its successor in newer releases)",
)
CLIENT_PROGRAMS = {
    "obfs4": _OBFS4_FAMILY,
    "meek_lite": _OBFS4_FAMILY,
    "scramblesuit": _OBFS4_FAMILY,
    "webtunnel": ClientProgram(
        ("webtunnel-client", "lyrebird"),
        "the Tor Project's webtunnel-client, or a lyrebird that includes webtunnel",
    ),
    "snowflake": ClientProgram(("snowflake-client",), "the Debian package snowflake-client"),
}


@dataclass(frozen=True)
class PtSpec:
    transport: str
    bridge: Endpoint  # what the PT is asked to connect to (snowflake and webtunnel ignore it)
    args: tuple[tuple[str, str], ...]  # per-connection arguments, in the order given
    fingerprint: str | None = None
    binary: str | None = None  # bin=
    state: str | None = None  # state=

    def __repr__(self) -> str:
        return f"PtSpec({self.transport!r}, ***)"

    __str__ = __repr__


def parse_pt(text: str) -> PtSpec:
    """Parse what follows `pt:` in either form; raise PtSpecError."""
    text = text.strip()
    if not text:
        raise PtSpecError("a pt layer names a transport and its bridge (see docs/transports.md)")
    if any(ch.isspace() for ch in text):
        return _bridge_line(text.split())
    return _query_form(text)


def _query_form(text: str) -> PtSpec:
    transport, mark, query = text.partition("?")
    _check_transport(transport)
    if not mark or not query:
        raise PtSpecError(
            f"pt:{transport}: give the bridge, as {transport}?addr=HOST:PORT&KEY=VALUE... "
            "or as a bridge line"
        )
    fields: list[tuple[str, str]] = []
    for part in query.split("&"):
        key, equals, value = part.partition("=")
        if not equals or not key:
            raise PtSpecError(
                f"pt:{transport}: every parameter is KEY=VALUE (joined with '&'); "
                f"{'an empty one' if not part else 'one without a value'} was given"
            )
        fields.append((unquote(key), unquote(value)))
    address = [value for key, value in fields if key == "addr"]
    if len(address) != 1:
        raise PtSpecError(f"pt:{transport}: give the bridge address once, as addr=HOST:PORT")
    rest = [(key, value) for key, value in fields if key != "addr"]
    return _spec(transport, address[0], None, rest)


def _bridge_line(words: Sequence[str]) -> PtSpec:
    if words[0].lower() == "bridge":
        words = words[1:]
    if any(word.startswith("<") for word in words):
        raise PtSpecError(
            "a pt layer's bridge line still has placeholders (<IP ADDRESS>:<PORT>, "
            "<FINGERPRINT>): put in the server's public address and port, and drop the "
            "fingerprint (detour does not need it)"
        )
    if not words or "=" in words[0]:
        raise PtSpecError(
            "a pt layer's bridge line starts with its transport (obfs4, webtunnel, ...)"
        )
    transport = words[0]
    if ":" in transport:
        raise PtSpecError(
            "a pt layer's bridge line must name a transport; this is a plain Tor bridge, which "
            "only Tor can use; detour needs a pluggable transport's line (obfs4, webtunnel, ...)"
        )
    _check_transport(transport)
    if len(words) < 2 or "=" in words[1]:
        raise PtSpecError(f"pt:{transport}: the bridge line has no IP:PORT after the transport")
    address, rest = words[1], list(words[2:])
    fingerprint = None
    if rest and "=" not in rest[0]:
        if not _FINGERPRINT.fullmatch(rest[0]):
            raise PtSpecError(
                f"pt:{transport}: the word after the address must be the bridge's fingerprint "
                "(40 hex digits) or a KEY=VALUE argument"
            )
        fingerprint = rest.pop(0).upper()
    fields = []
    for position, word in enumerate(rest, start=1):
        key, equals, value = word.partition("=")
        if not equals or not key:
            raise PtSpecError(
                f"pt:{transport}: argument {position} after the address is not KEY=VALUE"
            )
        if key == "addr":
            raise PtSpecError(f"pt:{transport}: a bridge line gives its address as the 2nd word")
        fields.append((key, value))
    return _spec(transport, address, fingerprint, fields)


def _check_transport(transport: str) -> None:
    if not TRANSPORT_NAME.fullmatch(transport):
        raise PtSpecError(
            "a pt layer's transport name is letters, digits and '_' (obfs4, webtunnel, ...)"
        )


def _spec(
    transport: str, address: str, fingerprint: str | None, fields: list[tuple[str, str]]
) -> PtSpec:
    where = f"pt:{transport}"
    invalid = PtSpecError(f"{where}: the bridge address is not HOST:PORT with a port 1-65535")
    try:
        bridge = Endpoint.parse(address)
    except ValueError:
        raise invalid from None
    if bridge.port == 0:
        raise invalid
    seen: set[str] = set()
    options: dict[str, str] = {}
    args: list[tuple[str, str]] = []
    for key, value in fields:
        if key in seen:
            raise PtSpecError(f"{where}: {key}= is given twice")
        seen.add(key)
        if key in OPTIONS:
            if not value or "\0" in value:
                raise PtSpecError(f"{where}: {key}= needs a path")
            options[key] = value
            continue
        if _BAD_CHARS.search(key) or _BAD_CHARS.search(value):
            raise PtSpecError(f"{where}: {key}= holds a space or a control character")
        args.append((key, value))
    _check_known_transport(where, transport, dict(args), options)
    if len(encode_args(args).encode()) > MAX_ARGS:
        raise PtSpecError(
            f"{where}: the bridge's arguments are longer than SOCKS5 can carry "
            f"({MAX_ARGS} bytes once encoded)"
        )
    return PtSpec(
        transport,
        bridge,
        tuple(args),
        fingerprint,
        binary=options.get("bin"),
        state=options.get("state"),
    )


def _check_known_transport(
    where: str, transport: str, args: dict[str, str], options: dict[str, str]
) -> None:
    """What the common transports' clients would refuse anyway, said before they run."""
    if transport == "obfs4":
        if "cert" not in args and not ("node-id" in args and "public-key" in args):
            raise PtSpecError(f"{where}: the bridge needs its cert argument (see its bridge line)")
        if args.get("iat-mode") not in ("0", "1", "2"):
            raise PtSpecError(f"{where}: the bridge needs iat-mode=0, 1 or 2")
    elif transport == "webtunnel":
        if "url" not in args:
            raise PtSpecError(f"{where}: the bridge needs its url argument (see its bridge line)")
    elif transport not in CLIENT_PROGRAMS and "bin" not in options:
        known = ", ".join(sorted(CLIENT_PROGRAMS))
        raise PtSpecError(
            f"{where}: detour knows no client program for {transport} (known: {known}); "
            "give one with bin=PATH"
        )


# --- per-connection arguments (pt-spec 3.5) -------------------------------------------------


def _escape(text: str) -> str:
    return re.sub(r"[\\;=]", lambda m: "\\" + m.group(0), text)


def encode_args(args: Sequence[tuple[str, str]]) -> str:
    """`k=v;k=v`, with backslash, '=' and ';' inside keys and values escaped by a backslash."""
    return ";".join(f"{_escape(key)}={_escape(value)}" for key, value in args)


def socks5_login(encoded: bytes) -> tuple[bytes, bytes] | None:
    """The RFC 1929 username and password that carry encoded arguments, or None for none.

        args fit in 255 bytes   UNAME = all of them    PASSWD = one NUL byte
        longer                  UNAME = first 255      PASSWD = the rest (at most 255)

    (The spec says "less than 255 bytes" for the NUL case; exactly 255 also fit in UNAME,
    and Tor sends them that way.)
    """
    if not encoded:
        return None
    if len(encoded) > MAX_ARGS:
        raise ValueError(f"{len(encoded)} bytes of arguments do not fit in SOCKS5 ({MAX_ARGS})")
    if len(encoded) <= 255:
        return encoded, b"\0"
    return encoded[:255], encoded[255:]


# --- the client program ---------------------------------------------------------------------


def find_client(spec: PtSpec, path: str | None = None) -> str:
    """The program that runs `spec`'s transport: bin= when given, else the first known name
    on PATH. Raises DialError(pt_not_installed) saying what to install."""
    if spec.binary is not None:
        if not os.path.isfile(spec.binary):
            raise DialError(
                Failure.PT_NOT_INSTALLED, Op.CONNECT, f"bin={spec.binary} does not exist"
            )
        if not os.access(spec.binary, os.X_OK):
            raise DialError(
                Failure.PT_NOT_INSTALLED, Op.CONNECT, f"bin={spec.binary} is not executable"
            )
        return spec.binary
    program = CLIENT_PROGRAMS[spec.transport]
    for name in program.names:
        found = shutil.which(name, path=path)
        if found is not None:
            return found
    looked = " or ".join(program.names)
    raise DialError(
        Failure.PT_NOT_INSTALLED,
        Op.CONNECT,
        f"no {spec.transport} client program: {looked} is not on PATH; install "
        f"{program.install}, or give its path with bin=",
    )
