"""`[signal_proxy]`: the endpoint the Signal apps' own proxy setting connects to (see
helper/proxy/signal.py). Off unless the section is there."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transports import Endpoint

from .listen import ListenConfig
from .schema import Problems, read_section, setting
from .values import (
    count,
    domain,
    existing_file,
    is_loopback,
    load_certificate,
    parse_duration,
    parse_listen_address,
    parse_size,
)

# The names Signal's reference proxy routes (github.com/signalapp/Signal-TLS-Proxy,
# data/nginx-relay/nginx.conf: its `map $ssl_preread_server_name`), each to itself on port
# 443. Everything else is refused there, and here.
SIGNAL_HOSTS: tuple[str, ...] = (
    "chat.signal.org",
    "storage.signal.org",
    "cdn.signal.org",
    "cdn2.signal.org",
    "cdn3.signal.org",
    "cdsi.signal.org",
    "contentproxy.signal.org",
    "grpc.chat.signal.org",
    "sfu.voip.signal.org",
    "svr2.signal.org",
    "svrb.signal.org",
    "updates.signal.org",
    "updates2.signal.org",
)

MAX_HELLO = 16 << 10  # the largest ClientHello accepted by default: one full TLS record


def _hello_limit(value: Any) -> int:
    size = parse_size(value)
    if not 512 <= size <= 64 << 10:
        raise ValueError(f"{value!r}: the limit must be from 512 bytes to 64KiB")
    return size


def certificate_names(path: Path) -> list[str]:
    """The DNS names a PEM certificate is for (its subjectAltName), [] if unreadable."""
    from cryptography import x509

    try:
        certificate = x509.load_pem_x509_certificate(path.read_bytes())
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (OSError, ValueError, x509.ExtensionNotFound):
        return []
    return list(names.value.get_values_for_type(x509.DNSName))


@dataclass(frozen=True)
class SignalProxyConfig:
    listen: Endpoint = setting(
        convert=parse_listen_address,
        doc='`"IP:PORT"` to listen on (`"0.0.0.0:443"`, `"192.168.1.1:443"`). The apps connect '
        "to port 443 unless the link names another.",
    )
    certificate: Path = setting(
        convert=existing_file,
        doc="PEM certificate (with its chain) the apps see, for `name`. The apps check it "
        "against the phone's trusted CAs: a publicly trusted one (e.g. from an ACME client) "
        "for a name you control. Read again when the file changes.",
        path=True,
    )
    key: Path = setting(
        convert=existing_file, doc="The certificate's private key (PEM).", path=True
    )
    name: str | None = setting(
        None,
        domain,
        "The host name phones use for the proxy: the links carry it, and the certificate "
        "must be for it.",
        shown="the certificate's first DNS name",
    )
    hosts: tuple[str, ...] = setting(
        list(SIGNAL_HOSTS),
        each=domain,
        collect=lambda names: tuple(dict.fromkeys(names)),
        doc="The inner server names carried (each to port 443); any other is refused.",
        shown="Signal's 13 hosts (docs/router.md)",
    )
    max_connections: int = setting(
        512, count, "Connections open at once, all clients together; more are closed at once."
    )
    max_per_client: int = setting(64, count, "Connections open at once from one client address.")
    handshake_timeout: float = setting(
        "10s",
        parse_duration,
        "The outer TLS handshake and the inner ClientHello together; a client slower than "
        "this is closed.",
    )
    max_hello: int = setting(
        "16KiB",
        _hello_limit,
        "The largest inner ClientHello read (512 bytes to 64KiB); a larger one is refused.",
    )
    idle_timeout: float = setting(
        "10m",
        parse_duration,
        "A connection on which nothing moved either way for this long is closed.",
    )

    @property
    def link_host(self) -> str:
        """The host the links name: `name`, else the certificate's first DNS name, else the
        listening address."""
        if self.name:
            return self.name
        names = [n for n in certificate_names(self.certificate) if not n.startswith("*.")]
        return names[0] if names else self.listen.host


def certificate_covers(pattern: str, name: str) -> bool:
    """Whether a certificate's DNS name `pattern` is valid for host `name` (RFC 6125 §6.4:
    exactly, or a leading `*.` standing for one whole label)."""
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if pattern.startswith("*."):
        first, _, rest = name.partition(".")
        return bool(first) and rest == pattern[2:]
    return pattern == name


def read_signal_proxy(
    data: Any,
    listen: ListenConfig,
    problems: Problems,
    base: Path | None = None,
    below: SignalProxyConfig | None = None,
) -> SignalProxyConfig:
    config: SignalProxyConfig = read_section(
        SignalProxyConfig, "signal_proxy", data, problems, base, below
    )
    if config.certificate is not None and config.key is not None:
        try:
            load_certificate(
                ssl.create_default_context(ssl.Purpose.CLIENT_AUTH), config.certificate, config.key
            )
        except ValueError as exc:
            problems.add("signal_proxy.certificate", str(exc))
        else:
            names = certificate_names(config.certificate)
            if config.name and names and not any(certificate_covers(n, config.name) for n in names):
                shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
                problems.add(
                    "signal_proxy.name",
                    f"{config.name!r} is not a name of the certificate {str(config.certificate)!r} "
                    f"({shown}): the apps check the certificate against it and would refuse "
                    "the proxy",
                )
    said = any(item.startswith("signal_proxy.hosts") for item in problems.items)
    if config.hosts == () and not said:  # (not again after "expected a list")
        problems.add("signal_proxy.hosts", "is empty: no Signal host could be reached")
    address = config.listen
    if address is not None and not is_loopback(address) and not listen.allow:
        problems.add(
            "signal_proxy.listen",
            f"{address} is reachable from other machines and a Signal proxy has no login; set "
            "listen.allow (the phones' address ranges), or listen on 127.0.0.1",
        )
    return config
