"""`detour relay` and its subcommands: keygen, add-client, revoke, clients, and running."""

from __future__ import annotations

import asyncio
import io
import logging
import sys
import time

from transports import DialError

from ..config import ConfigError
from .config import RelayConfig, load_relay_config
from .keys import RelayKeys, RelayKeysError

__all__ = ["add_client", "keygen", "list_clients", "revoke", "serve"]

log = logging.getLogger("detour.relay")


def _load(path: str) -> tuple[RelayConfig, RelayKeys]:
    config = load_relay_config(path)
    return config, RelayKeys(config.state)


def keygen(path: str, force: bool) -> int:
    try:
        config, keys = _load(path)
        keys.generate(force=force)
    except (ConfigError, RelayKeysError) as exc:
        print(f"detour relay: {exc}", file=sys.stderr)
        return 2
    print(f"relay keys written to {config.state}")
    print(f"  certificate pin  {keys.pin}")
    print(f"  next: detour relay -c {path} add-client NAME")
    return 0


def add_client(path: str, name: str, qr: bool) -> int:
    try:
        config, keys = _load(path)
        missing = [
            key
            for key, value in (
                ("public.address", config.public_address),
                ("public.front", config.public_front),
                ("public.host", config.public_host),
            )
            if value is None
        ]
        if missing:
            raise ConfigError(
                [
                    f"{key}: needed to write access keys (how clients reach the relay)"
                    for key in missing
                ],
                config.source,
            )
        assert config.public_address and config.public_front and config.public_host
        key = keys.add_client(name, config.public_address, config.public_front, config.public_host)
    except (ConfigError, RelayKeysError) as exc:
        print(f"detour relay: {exc}", file=sys.stderr)
        return 2
    text = key.encode()
    print(f"# access key for {name}: keep it secret; it is shown only now", file=sys.stderr)
    print(
        f'# in a detour config:  [[route]] name = "relay" chain = "front:{text[:12]}..."',
        file=sys.stderr,
    )
    print(text)
    if qr:
        print(_qr(text), file=sys.stderr)
    return 0


def _qr(text: str) -> str:
    try:
        import segno
    except ImportError:
        return "(a QR code needs the segno package)"
    out = io.StringIO()
    segno.make(text, error="l").terminal(out=out, compact=True)
    return out.getvalue()


def revoke(path: str, name: str) -> int:
    try:
        _, keys = _load(path)
        keys.revoke(name)
    except (ConfigError, RelayKeysError) as exc:
        print(f"detour relay: {exc}", file=sys.stderr)
        return 2
    print(f"{name} revoked: its access key no longer opens the relay")
    return 0


def list_clients(path: str) -> int:
    try:
        _, keys = _load(path)
        clients = keys.clients()
    except (ConfigError, RelayKeysError) as exc:
        print(f"detour relay: {exc}", file=sys.stderr)
        return 2
    for name, record in sorted(clients.items()):
        state = (
            "revoked " + time.strftime("%Y-%m-%d", time.gmtime(record.revoked))
            if record.revoked
            else "active"
        )
        added = time.strftime("%Y-%m-%d", time.gmtime(record.added))
        print(f"{name:24} {state:18} added {added}  cert {record.fingerprint[:16]}")
    return 0


async def serve(path: str, stop: asyncio.Event) -> int:
    from .server import RelayServer

    try:
        config, keys = _load(path)
        server = RelayServer(config, keys)
    except (ConfigError, RelayKeysError) as exc:
        print(f"detour relay: {exc}", file=sys.stderr)
        return 2
    try:
        if server.upstream is not None:
            await server.upstream.check()
    except DialError as exc:
        print(f"detour relay: {exc.detail}", file=sys.stderr)
        await server.stop(grace=0)
        return 1
    try:
        await server.start()
    except OSError as exc:
        log.error("cannot listen on %s: %s", config.listen, exc.strerror or exc)
        return 1
    try:
        await stop.wait()
    finally:
        log.info("relay stopping (open tunnels get 5 s)")
        await server.stop()
    return 0
