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
    status API's token, the MTProto proxy's secrets."""
    held = ["listen.users passwords"] if config.listen.users else []
    for route in config.routes:
        for layer in route.chain.layers:
            if layer.params.get("password") is not None:
                held.append(f"route {route.name!r} proxy password")
            elif layer.name == "front":
                held.append(f"route {route.name!r} access key")
            elif layer.name == "pt":
                held.append(f"route {route.name!r} bridge line")
    if config.api.token:
        held.append("api.token")
    if config.mtproto_proxy is not None and config.mtproto_proxy.secrets:
        held.append("mtproto_proxy.secrets")
    return held


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
