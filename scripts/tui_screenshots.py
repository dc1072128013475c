"""Make the screenshots in docs/using-the-tui.md from a real run: the lab with the sni-reset
scenario, detour against it, the terminal UI once every probe is done (the main screen with
one client connection open, and the set-up screen). Timings are whatever this machine
measures.

    .venv/bin/python scripts/tui_screenshots.py          # writes docs/images/tui-*.svg

Needs what the lab needs (ports 53, 80, 443 on loopback addresses: root, or
CAP_NET_BIND_SERVICE).
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from helper.config import parse_config  # noqa: E402 - after the path is set
from helper.engine import Engine  # noqa: E402
from helper.lab.lab import Lab  # noqa: E402
from helper.tui.app import DetourApp  # noqa: E402

IMAGES = ROOT / "docs" / "images"
SIZE = (100, 30)


async def main() -> None:
    IMAGES.mkdir(exist_ok=True)
    async with Lab("sni-reset", network="127.95.0.0/16") as lab:
        engine = Engine(parse_config(lab.helper_config(listen="127.0.0.1:1080")))
        app = DetourApp(engine, title="detour demo · sni-reset")
        await engine.start()
        try:
            async with app.run_test(size=SIZE) as pilot:
                monitor = engine.monitor
                routes = sum(len(monitor.probe_routes(s)) for s in monitor.services)
                deadline = time.monotonic() + 60
                while monitor.probing or len(monitor.results) < routes or app.progress.running:
                    if time.monotonic() > deadline:
                        raise SystemExit("the probes did not finish within a minute")
                    await asyncio.sleep(0.1)
                # One application connection, so the connections tab has something to show.
                reader, writer = await asyncio.open_connection(*engine.mixed_address)
                writer.write(b"\x05\x01\x00\x05\x01\x00\x03\x0eg.whatsapp.net\x14\x66")
                await reader.readexactly(2 + 10)
                writer.write(b"hello" * 1000)
                await reader.readexactly(5000)
                await pilot.press("down", "right")  # whatsapp through tls-fragment
                await pilot.pause(0.6)
                app.save_screenshot("tui-main.svg", str(IMAGES))
                await pilot.press("c")
                await pilot.pause(0.6)
                app.save_screenshot("tui-connections.svg", str(IMAGES))
                writer.close()
                await pilot.press("c", "s")
                await pilot.pause(0.3)
                app.save_screenshot("tui-setup.svg", str(IMAGES))
        finally:
            await engine.stop()
    for name in ("tui-main.svg", "tui-connections.svg", "tui-setup.svg"):
        print(IMAGES / name)


if __name__ == "__main__":
    asyncio.run(main())
