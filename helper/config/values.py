"""Converters: one value as written in the config file -> what detour uses, or a ValueError
whose message tells the user what would be valid (the reader puts the key path in front)."""

from __future__ import annotations

import ipaddress
import re
import ssl
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from transports import Chain, ChainError, Endpoint, parse_chain, redact
from transports.base import IPNetwork
from transports.guard import NEVER_PUBLIC_RANGES, embedded_ipv4_networks
from transports.resolver import ResolverSpec, parse_resolver

from ..services import ProbeTarget, normalize_domain

# --- text and numbers ---------------------------------------------------------------------


def string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return value


def choice(options: Iterable[str]) -> Callable[[Any], str]:
    """A converter that takes one of `options` (strings)."""
    options = tuple(options)

    def convert(value: Any) -> str:
        text = string(value)
        if text not in options:
            raise ValueError(f"{text!r} is not one of: {', '.join(options)}")
        return text

    return convert


def flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def count(value: Any) -> int:
    """A whole number of at least 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{value!r} is not a positive whole number")
    return value


def limit(value: Any) -> int:
    """A whole number of at least 0, where 0 means no limit."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("expected a whole number >= 0 (0: no limit)")
    return value


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def entry_name(value: Any) -> str:
    """A route's or a service's name."""
    text = string(value)
    if not _NAME.match(text):
        raise ValueError(
            f"{text!r}: names are 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return text


def credential(what: str) -> Callable[[Any], str]:
    """A user name or password for SOCKS5 (RFC 1929) and HTTP proxy logins."""

    def convert(value: Any) -> str:
        text = string(value)
        if not 0 < len(text.encode()) < 256:
            raise ValueError(f"a {what} is 1-255 bytes (SOCKS5 limit)")
        return text

    return convert


# --- durations and sizes ------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> float:
    """'250ms', '5s', '1m30s', '2h', or a number of seconds -> seconds (> 0)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like '5s' or '250ms'")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            raise ValueError(f"{value!r} is out of range (more than 0, at most a week)") from None
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        pos, seconds = 0, 0.0
        for match in _DURATION.finditer(text):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if not text or pos != len(text):
            raise ValueError(f"{value!r} is not a duration (like '5s', '250ms', '1m30s')")
    else:
        raise ValueError("expected a duration like '5s' or '250ms'")
    if not 0 < seconds <= 7 * 86400:
        raise ValueError(f"{value!r} is out of range (more than 0, at most a week)")
    return seconds


def duration_or_off(value: Any) -> float:
    """A duration, or 0 (or "off") to turn the feature off."""
    if value == 0 or value == "off":
        return 0.0
    return parse_duration(value)


_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|KB|MB)?\s*$")
_SIZE_UNITS = {None: 1, "B": 1, "KiB": 1024, "KB": 1000, "MiB": 1 << 20, "MB": 1_000_000}


def parse_size(value: Any) -> int:
    """Bytes: an integer, or a string like '16KiB', '64KB', '1MiB' (more than 0)."""
    if isinstance(value, bool):
        raise ValueError("expected a size in bytes, like 16384 or '16KiB'")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE.match(value)):
        size = int(m.group(1)) * _SIZE_UNITS[m.group(2)]
    else:
        raise ValueError(f"{value!r} is not a size (like 16384, '16KiB' or '64KB')")
    if size <= 0:
        raise ValueError("a size must be more than 0")
    return size


def rate(value: Any) -> int:
    """Bytes per second, written as a size ('32KB' is 32 KB/s); 0 turns the check off."""
    if value == 0:
        return 0
    return parse_size(value)


# --- addresses ----------------------------------------------------------------------------


def parse_listen_address(value: Any) -> Endpoint:
    if not isinstance(value, str):
        raise ValueError('expected "HOST:PORT", e.g. "127.0.0.1:1080"')
    try:
        endpoint = Endpoint.parse(value)
    except ValueError as exc:
        raise ValueError(f'{exc} (e.g. "127.0.0.1:1080" or "[::1]:1080")') from None
    if endpoint.host != "localhost" and endpoint.ip is None:
        raise ValueError(f"{value!r}: listen on an IP address (or localhost), not a name")
    return endpoint


def is_loopback(endpoint: Endpoint) -> bool:
    ip = endpoint.ip
    return endpoint.host == "localhost" or (ip is not None and ip.is_loopback)


def listen_ip(value: Any) -> str:
    """An IP address to listen on, without a port."""
    text = string(value).strip()
    if text == "localhost":
        return "127.0.0.1"
    try:
        return str(ipaddress.ip_address(text.removeprefix("[").removesuffix("]")))
    except ValueError:
        raise ValueError(
            f'{value!r} is not an IP address (the ports are set apart, e.g. "192.168.1.1")'
        ) from None


def port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ValueError(f"{value!r} is not a port (1-65535)")
    return value


def port_or_off(value: Any) -> int | None:
    """A port, 0 for any free port, or false to turn this endpoint off."""
    if value is False:
        return None
    if value == 0 and not isinstance(value, bool):
        return 0
    try:
        return port(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a port (1-65535), 0 (any) or false (off)") from None


def network(value: Any) -> IPNetwork:
    if not isinstance(value, str):
        raise ValueError('expected a CIDR string like "192.168.1.0/24"')
    try:
        return ipaddress.ip_network(value.strip())
    except ValueError:
        try:
            net = ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            raise ValueError(f"{value!r} is not an address or CIDR range") from None
        raise ValueError(f'{value!r} has host bits set; did you mean "{net}"?') from None


def public_network(value: Any, *, loopback: bool = False) -> IPNetwork:
    """A private range that may stand for the internet (a lab network). It may not overlap
    loopback, link-local, multicast or unspecified addresses at all (a supernet such as
    0.0.0.0/1 or 169.254.0.0/15 would let remote clients reach them); an IPv6 range that
    carries IPv4 addresses (NAT64, SIIT, 6to4) is judged by the IPv4 range it carries.
    `loopback`: loopback ranges may (a relay's tests stand them in for the internet)."""
    net = network(value)
    carried = [(inner, True) for inner in embedded_ipv4_networks(net)]
    for candidate, inside in [(net, False), *carried]:
        for kind, ranges in NEVER_PUBLIC_RANGES.items():
            if loopback and kind == "loopback":
                continue
            hit = next(
                (r for r in ranges if r.version == candidate.version and candidate.overlaps(r)),
                None,
            )
            if hit is not None:
                held = (
                    f"IPv6 addresses that carry IPv4 {kind} addresses"
                    if inside
                    else f"{kind} addresses"
                )
                raise ValueError(
                    f"{net} cannot stand for the internet: it holds {held} ({hit}), which "
                    "remote clients never reach; list only the ranges that stand for the internet"
                )
    return net


# An allow-list entry wider than this, holding internet addresses, lets in more than any one
# organisation's network (the largest IPv4 blocks ever assigned are /8s; IPv6 registries
# hand ISPs /19 to /32): without passwords, such a listener is an open proxy.
WIDEST_CLIENT_RANGE = {4: 8, 6: 16}
_GLOBAL_V6 = ipaddress.IPv6Network("2000::/3")  # IANA: global unicast


def internet_wide(net: IPNetwork) -> bool:
    """Whether a client range lets in a large part of the internet: global addresses under a
    prefix shorter than /8 (IPv4) or /16 (IPv6), or an IPv6 range that carries such IPv4
    ranges (NAT64, SIIT, 6to4)."""
    if any(internet_wide(v4) for v4 in embedded_ipv4_networks(net)):
        return True  # a translator's clients: the IPv4 internet behind it
    if net.prefixlen >= WIDEST_CLIENT_RANGE[net.version]:
        return False
    if isinstance(net, ipaddress.IPv4Network):
        # Any /8 in it with a global address (x.1.2.3 stands for its /8: the non-global
        # ranges inside a /8 that holds global ones are all smaller and elsewhere).
        return any(
            ipaddress.IPv4Address(int(eight.network_address) | 0x010203).is_global
            for eight in net.subnets(new_prefix=8)
        )
    return net.overlaps(_GLOBAL_V6)


def domain(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a domain name string")
    name = normalize_domain(value)
    if name.startswith("*."):
        name = name[2:]  # suffix matching already covers subdomains
    labels = name.split(".")
    if (
        not name
        or len(name) > 253
        or any(
            not label or len(label) > 63 or not re.fullmatch(r"[a-z0-9_-]+", label)
            for label in labels
        )
    ):
        raise ValueError(f"{value!r} is not a domain name")
    return name


# --- what other modules parse -------------------------------------------------------------


def chain(value: Any) -> Chain:
    try:
        return parse_chain(string(value))
    except ChainError as exc:
        raise ValueError(str(exc)) from None


def resolver(value: Any) -> ResolverSpec:
    try:
        return parse_resolver(string(value))
    except ValueError as exc:
        raise ValueError(redact(str(exc))) from None


def probe_target(value: Any) -> ProbeTarget:
    return ProbeTarget.parse(string(value))


# --- files --------------------------------------------------------------------------------


def ca_file(path: Path) -> Path:
    """A PEM file of CA certificates that OpenSSL loads."""
    try:
        ssl.create_default_context(cafile=str(path))
    except FileNotFoundError:
        raise ValueError(f"{str(path)!r}: no such file") from None
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ValueError(f"{str(path)!r} is not a PEM CA certificate file ({exc})") from None
    return path


def existing_file(path: Path) -> Path:
    try:
        found = path.is_file()
    except OSError as exc:  # a name too long, a directory on the way not searchable, ...
        raise ValueError(f"{str(path)[:200]!r}: cannot be read ({exc.strerror})") from None
    if not found:
        if path.exists():  # a directory, a device, a pipe: never a certificate or a key
            raise ValueError(f"{str(path)!r}: not a regular file")
        raise ValueError(f"{str(path)!r}: no such file")
    return path


def _no_pass_phrase() -> bytes:
    # Given as load_cert_chain's password, so that OpenSSL never asks for one on the
    # terminal (an encrypted key then fails, and says so, instead of waiting for input).
    return b""


def load_certificate(context: ssl.SSLContext, certificate: Path, key: Path) -> None:
    """context.load_cert_chain(certificate, key), never prompting for a pass phrase; raises
    ValueError saying which file is wrong and how (OpenSSL's own "PEM lib" names neither)."""
    try:
        context.load_cert_chain(certificate, key, password=_no_pass_phrase)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(certificate_problem(certificate, key, exc)) from None


def certificate_problem(certificate: Path, key: Path, exc: Exception) -> str:
    """Why a certificate and key could not be loaded together (`exc`: what OpenSSL said)."""
    cert, private = repr(str(certificate)), repr(str(key))
    if isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError):
        return f"cannot read {cert} or {private} ({exc.strerror or exc})"
    try:
        ssl.create_default_context(cafile=str(certificate))
    except (ssl.SSLError, OSError, ValueError):
        return f"{cert} is not a PEM certificate"
    if "KEY_VALUES_MISMATCH" in str(exc):
        return f"{private} is not the private key of the certificate {cert}"
    try:
        head = key.read_bytes()[:4096]
    except OSError as error:
        return f"cannot read {private} ({error.strerror or error})"
    if b"ENCRYPTED" in head:
        return (
            f"{private} is encrypted with a pass phrase; detour needs the key unencrypted "
            "(openssl pkey -in KEY -out PLAIN-KEY, then chmod 600 PLAIN-KEY)"
        )
    return f"{private} is not a PEM private key"
