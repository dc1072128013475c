"""What a `vless://`, `vmess://` or `trojan://` link describes: the protocol, the server, its
secret, and the transport and TLS settings underneath, validated. A proxy core (xray,
sing-box, v2ray) speaks these protocols for detour; generate.py turns a CoreLink into the
core's config, programs.py says which installed core can do which link.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

from ..base import Endpoint

__all__ = [
    "FINGERPRINTS",
    "NETWORKS",
    "PROTOCOLS",
    "CoreLink",
    "CoreLinkError",
]

PROTOCOLS = ("vless", "vmess", "trojan")
# Transports under the protocol, as links name them (`type=`).
NETWORKS = ("tcp", "ws", "grpc", "httpupgrade", "xhttp", "h2")
SECURITIES = ("none", "tls", "reality")
VMESS_CIPHERS = ("auto", "aes-128-gcm", "chacha20-poly1305", "none", "zero")
VLESS_FLOWS = ("", "xtls-rprx-vision")
GRPC_MODES = ("gun", "multi")
XHTTP_MODES = ("auto", "packet-up", "stream-up", "stream-one")
# uTLS fingerprints the cores know (xray and sing-box agree on these names).
FINGERPRINTS = (
    "chrome", "firefox", "safari", "ios", "android", "edge", "360", "qq", "random",
    "randomized",
)  # fmt: skip
_SHORT_ID = re.compile(r"[0-9a-fA-F]{0,16}")
_PUBLIC_KEY = re.compile(r"[A-Za-z0-9_-]{43}")


class CoreLinkError(ValueError):
    """A link is not valid; the message names the problem and never the secret."""


@dataclass(frozen=True)
class CoreLink:
    protocol: str  # vless | vmess | trojan
    address: Endpoint
    secret: str = field(repr=False)  # the UUID (vless, vmess) or the password (trojan)
    network: str = "tcp"
    security: str = "none"
    sni: str = ""
    alpn: tuple[str, ...] = ()
    fingerprint: str = ""  # uTLS ClientHello to imitate (fp=)
    insecure: bool = False  # allowInsecure=1: no certificate check
    host: str = ""  # ws / httpupgrade / xhttp / h2 Host, tcp http header Host
    path: str = ""  # ws / httpupgrade / xhttp / h2 path, tcp http header path
    service_name: str = ""  # grpc
    mode: str = ""  # grpc: gun | multi; xhttp: auto | packet-up | stream-up | stream-one
    header_type: str = "none"  # tcp: none | http
    flow: str = ""  # vless: xtls-rprx-vision
    cipher: str = ""  # vmess: auto, aes-128-gcm, ...; vless: "none"
    alter_id: int = 0  # vmess (0: the AEAD header)
    public_key: str = ""  # reality pbk=
    short_id: str = field(default="", repr=False)  # reality sid=
    spider_x: str = ""  # reality spx=
    name: str = ""  # the link's #name

    def __post_init__(self) -> None:
        check(self)

    @property
    def server_name(self) -> str:
        """The TLS server name on the wire: sni=, else the Host, else the address."""
        return self.sni or self.host or self.address.host

    def __repr__(self) -> str:
        return (
            f"CoreLink({self.protocol}://***@{self.address}, network={self.network}, "
            f"security={self.security})"
        )

    __str__ = __repr__


def check(link: CoreLink) -> None:
    """What is wrong with a link, as CoreLinkError, or nothing."""
    where = link.protocol
    if link.protocol not in PROTOCOLS:
        raise CoreLinkError(f"unknown protocol {link.protocol!r} ({', '.join(PROTOCOLS)})")
    if link.address.port == 0:
        raise CoreLinkError(f"{where}: port 0 is not a server port")
    if link.protocol in ("vless", "vmess"):
        try:
            uuid.UUID(link.secret)
        except ValueError:
            raise CoreLinkError(
                f"{where}: the user id is not a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
            ) from None
    elif not link.secret:
        raise CoreLinkError(f"{where}: the password is empty")
    if link.network not in NETWORKS:
        raise CoreLinkError(
            f"{where}: transport type={link.network!r} is not supported "
            f"(supported: {', '.join(NETWORKS)})"
        )
    if link.security not in SECURITIES:
        raise CoreLinkError(
            f"{where}: security={link.security!r} is not one of {', '.join(SECURITIES)}"
        )
    if link.protocol == "trojan" and link.security == "none":
        raise CoreLinkError("trojan: a trojan server needs TLS (security=tls or reality)")
    if link.security == "reality":
        if link.protocol != "vless":
            raise CoreLinkError(f"{where}: REALITY works only with vless")
        if not _PUBLIC_KEY.fullmatch(link.public_key):
            raise CoreLinkError(
                f"{where}: REALITY needs the server's public key (pbk=, 43 base64url characters)"
            )
        if not _SHORT_ID.fullmatch(link.short_id) or len(link.short_id) % 2:
            raise CoreLinkError(f"{where}: sid= is up to 16 hex digits, an even number of them")
        if link.network not in ("tcp", "grpc", "xhttp", "h2"):
            raise CoreLinkError(
                f"{where}: REALITY carries tcp, grpc, xhttp or h2, not {link.network}"
            )
        if not link.sni:
            raise CoreLinkError(f"{where}: REALITY needs the name it borrows (sni=)")
    if link.fingerprint and link.fingerprint not in FINGERPRINTS:
        raise CoreLinkError(
            f"{where}: fp={link.fingerprint!r} is not a known fingerprint "
            f"({', '.join(FINGERPRINTS)})"
        )
    if link.flow not in VLESS_FLOWS or (link.flow and link.protocol != "vless"):
        raise CoreLinkError(f"{where}: flow={link.flow!r} is not supported (xtls-rprx-vision)")
    if link.flow and (link.network != "tcp" or link.security == "none"):
        raise CoreLinkError(f"{where}: flow=xtls-rprx-vision needs type=tcp with tls or reality")
    if link.protocol == "vmess" and link.cipher not in ("", *VMESS_CIPHERS):
        raise CoreLinkError(
            f"vmess: cipher {link.cipher!r} is not one of {', '.join(VMESS_CIPHERS)}"
        )
    if link.protocol == "vless" and link.cipher not in ("", "none"):
        raise CoreLinkError(f"vless: encryption={link.cipher!r} is not supported (none)")
    if not 0 <= link.alter_id <= 65535:
        raise CoreLinkError("vmess: aid (alterId) must be 0-65535")
    if link.network == "grpc" and link.mode not in ("", *GRPC_MODES):
        raise CoreLinkError(f"{where}: grpc mode={link.mode!r} is not gun or multi")
    if link.network == "xhttp" and link.mode not in ("", *XHTTP_MODES):
        raise CoreLinkError(
            f"{where}: xhttp mode={link.mode!r} is not one of {', '.join(XHTTP_MODES)}"
        )
    if link.header_type not in ("none", "http"):
        raise CoreLinkError(f"{where}: headerType={link.header_type!r} is not none or http")
    if link.header_type == "http" and link.network != "tcp":
        raise CoreLinkError(f"{where}: headerType=http works only with type=tcp")
    for value, what in ((link.path, "path"), (link.host, "host"), (link.sni, "sni")):
        if any(ch in value for ch in "\0\r\n"):
            raise CoreLinkError(f"{where}: {what}= holds a control character")
    if link.path and not link.path.startswith("/"):
        raise CoreLinkError(f"{where}: path= must start with '/'")
