"""What in a config another user of the machine must not read, and the warning when they can."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .file import Config

log = logging.getLogger("detour.config")


def secrets_held(config: Config) -> list[str]:
    """What in `config` another user of the machine must not read: listener passwords,
    proxy passwords in chains, front access keys, pluggable-transport bridge lines, the
    passwords, user ids and key URLs of ss/ssconf/vless/vmess/trojan links, subscription
    URLs, the status API's token, the MTProto proxy's secrets."""
    held = ["listen.users passwords"] if config.listen.users else []
    # The file's routes (a subscription's nodes are in the state directory, not the file).
    for route in (config.pool_base or config).routes:
        for layer in route.chain.layers:
            if layer.name in _LINK_SECRETS:
                held.append(f"route {route.name!r} {_LINK_SECRETS[layer.name]}")
            elif layer.params.get("password") is not None:
                held.append(f"route {route.name!r} proxy password")
            elif layer.name == "front":
                held.append(f"route {route.name!r} access key")
            elif layer.name == "pt":
                held.append(f"route {route.name!r} bridge line")
    if config.api.token:
        held.append("api.token")
    held += [f"subscription {s.name!r} url" for s in config.subscriptions]
    if config.mtproto_proxy is not None and config.mtproto_proxy.secrets:
        held.append("mtproto_proxy.secrets")
    return held


# The secret each server link layer holds (transports/links.py).
_LINK_SECRETS = {
    "ss": "Shadowsocks password",
    "ssconf": "Outline key URL",
    "vless": "VLESS user id",
    "vmess": "VMess user id",
    "trojan": "Trojan password",
    "mtproxy": "MTProto proxy secret",
}


def warn_if_readable(file: Path, config: Config) -> None:
    """Warn when a file holding secrets can be read by the group or by everyone: on a shared
    machine or a router, any local user could take the passwords and keys from it."""
    if os.name != "posix":
        return  # Windows has ACLs, not mode bits
    held = secrets_held(config)
    try:
        mode = file.stat().st_mode
    except OSError:
        return
    if held and mode & 0o044:
        who = "everyone" if mode & 0o004 else "its group"
        log.warning(
            "%s holds secrets (%s) and %s can read it (mode %03o); fix it with: chmod 600 %s",
            file,
            ", ".join(dict.fromkeys(held)),
            who,
            mode & 0o777,
            file,
        )
