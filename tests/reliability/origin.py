"""The integrity origin (tests/support/integrity.py) as a program of its own, so the load
tests' client, detour and origin do not share one interpreter:

    python -m tests.reliability.origin HOST PORT [echo]

With `echo` it sends back whatever it receives instead. Prints "origin ready" once it
accepts connections; runs until killed.
"""

from __future__ import annotations

import asyncio
import sys

from tests.support.integrity import serve_integrity


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def main(host: str, port: int, mode: str) -> None:
    serve = echo if mode == "echo" else serve_integrity
    server = await asyncio.start_server(serve, host, port, backlog=4096)
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
    run(main(sys.argv[1], int(sys.argv[2]), (sys.argv[3:] or ["integrity"])[0]))
