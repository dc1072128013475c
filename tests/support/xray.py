"""Xray as a test peer, from PyPI's xray-core (a test extra): the extension module runs
Xray-core in a Python process (transports/core/xray_module.py gives it xray's command line).

    program = xray_program(directory)        # an `xray` executable: the core for detour
    with xray_server(inbound) as peer:       # an Xray server with one inbound on loopback
        ...

A missing module skips the test (a failure under DETOUR_REQUIRE_PEERS=1), as for the Debian
peers (tests/support/peers.py).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.support import peers
from transports.core import xray_module

__all__ = ["launcher_argv", "reality_keys", "xray_program", "xray_server"]

_ALLOW_ALL = [{"action": "allow", "network": "tcp,udp"}]
LAUNCHER = Path(xray_module.__file__).resolve()


@functools.lru_cache(maxsize=1)
def _installed() -> str | None:
    """Why the module cannot run here, or None when it can."""
    try:
        xray_module.load()
    except RuntimeError as exc:
        return str(exc)
    return None


def launcher_argv() -> list[str]:
    """The command that runs Xray from the module (skipped/failed when it is missing)."""
    why = _installed()
    if why is not None:
        peers.skip_or_fail(f"xray not installed ({why}; PyPI package 'xray-core', test extra)")
    return [sys.executable, "-P", str(LAUNCHER)]


def xray_program(directory: Path) -> str:
    """An executable `xray` in `directory` that runs the launcher with this Python: the
    command line detour runs a core with (`version`, `run -c FILE`, `run -test -c FILE`)."""
    argv = launcher_argv()
    path = directory / "xray"
    quoted = " ".join("'" + part.replace("'", "'\\''") + "'" for part in argv)
    path.write_text(f'#!/bin/sh\nexec {quoted} "$@"\n')
    path.chmod(0o755)
    return str(path)


def reality_keys() -> tuple[str, str]:
    """A REALITY key pair (X25519): the server's privateKey and the link's pbk=, base64url
    without padding as xray writes them."""
    key = X25519PrivateKey.generate()

    def text(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    private = key.private_bytes_raw()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return text(private), text(public)


@contextlib.contextmanager
def xray_server(inbound: dict) -> Iterator[peers.Peer]:
    """Xray with one inbound (its listen address and port are filled in) and a freedom
    outbound, run from the module; stopped (SIGTERM, then SIGKILL) afterwards. Xray's
    freedom refuses private addresses to VLESS/VMess/Trojan users unless told otherwise;
    the tests' destinations are on loopback, so it is told."""
    argv = launcher_argv()

    def prepare(tmpdir: Path, port: int) -> tuple[list[str], Path | None]:
        config = {
            "log": {"loglevel": "warning"},
            "inbounds": [{**inbound, "listen": "127.0.0.1", "port": port}],
            "outbounds": [{"protocol": "freedom", "settings": {"finalRules": _ALLOW_ALL}}],
        }
        conf = tmpdir / "xray.json"
        conf.write_text(json.dumps(config))
        return [*argv, "run", "-c", str(conf)], None

    with peers._running("xray", inbound.get("protocol", "xray"), prepare, None, None) as peer:
        yield peer
