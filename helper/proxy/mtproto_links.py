"""Where Telegram's apps are told to connect to the MTProto proxy endpoint: each user's
`tg://proxy` and `https://t.me/proxy` link (transports/mtproto/secret.py builds the text),
with the host a phone can dial. Used by `detour mtproto links`, the status snapshot and the
terminal UI's set-up screen."""

from __future__ import annotations

from collections.abc import Callable

from transports.mtproto.secret import ProxyLink

from ..config import MTProtoProxyConfig

__all__ = ["ProxyLink", "proxy_links"]


def _lan_address() -> str | None:
    """This machine's first IPv4 address other than loopback (no packets sent)."""
    import ipaddress
    import socket

    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
    except OSError:
        return None
    for *_, sockaddr in infos:
        if not ipaddress.ip_address(sockaddr[0]).is_loopback:
            return str(sockaddr[0])
    return None


def proxy_links(
    config: MTProtoProxyConfig,
    bound: tuple[str, int] | None = None,
    *,
    lan_address: Callable[[], str | None] = _lan_address,
) -> list[ProxyLink]:
    """Each user's link. The host: mtproto_proxy.host, or the listen address, or (listening
    on every address) this machine's LAN address. The port: where the endpoint listens
    (`bound`, when it runs), or the configured one."""
    listen = config.listen
    port = bound[1] if bound is not None else listen.port
    host = config.host
    if host is None:
        host = listen.host
        ip = listen.ip
        if ip is not None and ip.is_unspecified:
            host = lan_address() or host
        elif host == "localhost":
            host = "127.0.0.1"
    return [ProxyLink(user, host, port, secret) for user, secret in config.secrets.items()]
