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
        status = file.stat()
    except OSError:
        return
    mode = status.st_mode
    if held and mode & 0o044:
        who = "everyone" if mode & 0o004 else "its group"
        log.warning(
            "%s holds secrets (%s) and %s can read it (mode %03o); %s",
            file,
            ", ".join(dict.fromkeys(held)),
            who,
            mode & 0o777,
            _permission_advice(file, status),
        )


def _permission_advice(file: Path, status: os.stat_result) -> str:
    """How to close the file. A group other than its owner's own is one given on purpose (a
    service's user let in by it: docs/router.md, chgrp + 0640): chmod 600 would lock that
    user out, so the advice keeps the group."""
    group = _shared_group(status)
    if group is None:
        return (
            f"fix it with: chmod 600 {file} (or, when another user runs detour, "
            f"chgrp GROUP {file} && chmod 640 {file} with the group that user has)"
        )
    if status.st_mode & 0o004:
        return f"fix it with: chmod 640 {file} (its group, {group}, keeps reading it)"
    return (
        f"right if only the user detour runs as is in group {group} (docs/router.md); "
        f"else fix it with: chmod 600 {file}"
    )


def _shared_group(status: os.stat_result) -> str | None:
    """The file's group's name when it is not its owner's own (primary) group, else None."""
    try:
        import grp
        import pwd

        if pwd.getpwuid(status.st_uid).pw_gid == status.st_gid:
            return None
        return grp.getgrgid(status.st_gid).gr_name
    except (ImportError, KeyError):
        return None
