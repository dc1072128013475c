"""`[whatsapp_proxy]`: raw TCP endpoints the WhatsApp app's own proxy setting can use (see
helper/proxy/whatsapp.py). Off unless the section is there."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transports import Endpoint

from .listen import ListenConfig, check_allow_width, listeners_without_login
from .schema import Problems, read_section, setting
from .values import (
    count,
    existing_file,
    is_loopback,
    listen_ip,
    load_certificate,
    parse_duration,
    port_or_off,
)

_PORTS = ("tls_port", "chat_port", "http_port")


def _on(ports: list[int | None]) -> tuple[int, ...]:
    return tuple(p for p in ports if p is not None)


@dataclass(frozen=True)
class WhatsAppProxyConfig:
    """A port of None is turned off; 0 takes any free port."""

    # An IP address; the ports are fixed by what the app expects.
    listen: str = setting(
        convert=listen_ip,
        doc='IP address to listen on (`"192.168.1.1"`, `"0.0.0.0"`, `"::"`, `"localhost"`); '
        'the ports are set below. `"::"` takes IPv6 only: for IPv4 phones use `"0.0.0.0"` or '
        "the LAN address.",
    )
    tls_port: int | None = setting(
        443,
        port_or_off,
        "TLS with the proxy's certificate, then `g.whatsapp.net:5222`. The app uses TLS on "
        "port 443 only.",
    )
    chat_port: int | None = setting(5222, port_or_off, "Plain TCP to `g.whatsapp.net:5222`.")
    http_port: int | None = setting(80, port_or_off, "Plain TCP to `g.whatsapp.net:80`.")
    media_ports: tuple[int, ...] = setting(
        [587, 7777], each=port_or_off, collect=_on, doc="Plain TCP to `whatsapp.net:443`."
    )
    # None: a self-signed pair kept in the state directory, made on first use.
    certificate: Path | None = setting(
        None,
        existing_file,
        "PEM certificate for the TLS port (with `key`; both or neither; relative to the config "
        "file). Without them detour makes a self-signed certificate once and keeps it in its "
        "state directory under `whatsapp-proxy/` (key file mode 0600).",
        path=True,
        shown="a self-signed pair",
    )
    key: Path | None = setting(
        None,
        existing_file,
        "The certificate's private key (PEM).",
        path=True,
        shown="a self-signed pair",
    )
    max_connections: int = setting(
        512,
        count,
        "Connections open at once, all clients together; more are closed at once.",
    )
    max_per_client: int = setting(64, count, "Connections open at once from one client address.")
    handshake_timeout: float = setting("10s", parse_duration, "The TLS handshake on the TLS port.")
    idle_timeout: float = setting(
        "10m",
        parse_duration,
        "A connection on which nothing moved either way for this long is closed.",
    )


def read_whatsapp_proxy(
    data: Any,
    listen: ListenConfig,
    problems: Problems,
    base: Path | None = None,
    below: WhatsAppProxyConfig | None = None,
) -> WhatsAppProxyConfig:
    config: WhatsAppProxyConfig = read_section(
        WhatsAppProxyConfig, "whatsapp_proxy", data, problems, base, below
    )
    # Across keys: the certificate and its key, ports that collide or are all off, and the
    # exposure rule, which depends on [listen] allow.
    written = data if isinstance(data, dict) else {}

    def given(key: str) -> bool:  # a file that did not load is given, just not usable
        return key in written or getattr(config, key) is not None

    if given("certificate") != given("key"):
        present, missing = (
            ("certificate", "key") if given("certificate") else ("key", "certificate")
        )
        problems.add(
            f"whatsapp_proxy.{missing}",
            f"is required with whatsapp_proxy.{present} (a PEM certificate and its private key)",
        )
    elif config.certificate is not None and config.key is not None:
        try:
            load_certificate(
                ssl.create_default_context(ssl.Purpose.CLIENT_AUTH), config.certificate, config.key
            )
        except ValueError as exc:
            problems.add("whatsapp_proxy.certificate", str(exc))
    ports = [(key, getattr(config, key)) for key in _PORTS]
    used: dict[int, str] = {}
    for key, number in [*ports, *(("media_ports", p) for p in config.media_ports)]:
        if not number:
            continue
        if number in used:
            problems.add(f"whatsapp_proxy.{key}", f"port {number} is also {used[number]}")
        used.setdefault(number, key)
    if not (any(number is not None for _, number in ports) or config.media_ports):
        problems.add("whatsapp_proxy", "every port is off; remove the section to turn it off")
    address = config.listen
    if address is not None and not is_loopback(Endpoint(address, 1)) and not listen.allow:
        problems.add(
            "whatsapp_proxy.listen",
            f"{address} is reachable from other machines and the WhatsApp app cannot log in "
            "to a proxy; set listen.allow (the phones' address ranges), or listen on 127.0.0.1",
        )
    elif (
        address is not None
        and not is_loopback(Endpoint(address, 1))
        and not listeners_without_login(listen)  # else [listen] said it already
    ):
        check_allow_width(listen, "whatsapp_proxy.listen", problems.add)
    return config
