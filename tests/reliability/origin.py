"""The integrity origin (tests/support/integrity.py) as a program of its own, so the load
tests' client, detour and origin do not share one interpreter:

    python -m tests.reliability.origin HOST PORT

Prints "origin ready" once it accepts connections; runs until killed.
"""

from __future__ import annotations

import asyncio
import sys

from tests.support.integrity import serve_integrity


async def main(host: str, port: int) -> None:
    server = await asyncio.start_server(serve_integrity, host, port, backlog=4096)
    print("origin ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        run = asyncio.run
    else:
        run = uvloop.run
    run(main(sys.argv[1], int(sys.argv[2])))
