"""Run mtprotoproxy (PyPI `mtprotoproxy`, github.com/alexbers/mtprotoproxy: an MTProto proxy
written apart from detour) on loopback for the tests, with its DC table pointed at the lab:

    python -m tests.support.mtprotoproxy_run '{"port": 0, "key": HEX, "dcs": [ADDR, ...],
        "dc_port": 443, "tls_domain": NAME, "mask": [HOST, PORT], "secure_only": false}'

It prints `ready PORT` once it listens. The package installs a script, not a module, and its
own main() uses asyncio's removed `loop=` arguments: this loads the script as a module, sets
its configuration and DC table, and serves its connection handler itself. Nothing of the
proxy's protocol is changed. `script()` is None when the package is not installed.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType


def script() -> Path | None:
    found = shutil.which("mtprotoproxy.py") or str(Path(sys.prefix) / "bin" / "mtprotoproxy.py")
    return Path(found) if Path(found).is_file() else None


def load(options: dict) -> ModuleType:
    path = script()
    assert path is not None, "mtprotoproxy is not installed"
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as config:
        config.write(
            f"PORT = {options['port']}\n"
            f"USERS = {{'tester': {options['key']!r}}}\n"
            f"TLS_DOMAIN = {options['tls_domain']!r}\n"
            f"MASK = True\nMASK_HOST = {options['mask'][0]!r}\nMASK_PORT = {options['mask'][1]}\n"
            f"SECURE_ONLY = {bool(options.get('secure_only'))}\n"
            "USE_MIDDLE_PROXY = False\nPREFER_IPV6 = False\n"
            "CLIENT_HANDSHAKE_TIMEOUT = 10\nTG_CONNECT_TIMEOUT = 5\n"
        )
    sys.argv = [str(path), config.name]
    spec = importlib.util.spec_from_file_location("mtprotoproxy", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.init_config()
    os.unlink(config.name)
    module.my_ip_info = {"ipv4": "127.0.0.1", "ipv6": None}
    module.TG_DATACENTERS_V4 = list(options["dcs"])
    module.TG_DATACENTER_PORT = options["dc_port"]
    module.init_stats()
    return module


async def serve(options: dict) -> None:
    module = load(options)
    server = await asyncio.start_server(module.handle_client_wrapper, "127.0.0.1", options["port"])
    print("ready", server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(json.loads(sys.argv[1])))
