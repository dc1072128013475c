"""detour's routes against the lab, each route alone, with curl as the application: which
route gets through which censorship, as the scenarios say. (Which route detour *chooses*, and
why it says the others fail, is the routing and probing layer's business; this checks the
transports themselves in the lab.)"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess

import pytest

from helper.config import parse_config
from helper.engine import Engine
from helper.lab.lab import Lab
from tests.support.peers import require_peer

pytestmark = pytest.mark.asyncio(loop_scope="module")

# (scenario, url, route, works)
CASES = [
    ("baseline", "https://web.telegram.org/", "direct", True),
    ("baseline", "https://web.telegram.org/", "tls-fragment", True),
    ("baseline", "https://web.telegram.org/", "doh", True),
    ("baseline", "https://web.telegram.org/", "lab-socks", True),
    ("baseline", "https://web.telegram.org/", "lab-http", True),
    ("sni-reset", "https://web.telegram.org/", "direct", False),
    ("sni-reset", "https://web.telegram.org/", "tls-fragment", True),
    ("sni-reset", "https://chat.signal.org/", "tls-fragment", True),
    ("sni-reset", "https://chat.signal.org/", "lab-socks", True),
    ("sni-reset-reassembling", "https://web.telegram.org/", "tls-fragment", False),
    ("sni-reset-reassembling", "https://web.telegram.org/", "lab-socks", True),
    ("dns-poison", "https://web.whatsapp.com/", "direct", False),
    ("dns-poison", "https://web.whatsapp.com/", "doh", True),
    ("dns-poison", "https://web.whatsapp.com/", "lab-http", True),
    ("dns-poison", "https://web.telegram.org/", "direct", False),
    ("dns-poison", "https://web.telegram.org/", "doh-fragment", True),
    ("ip-blackhole", "https://web.telegram.org/", "direct", False),
    ("ip-blackhole", "https://web.telegram.org/", "tls-fragment", False),
    ("ip-blackhole", "https://web.telegram.org/", "lab-socks", True),
    ("allow-list", "https://web.telegram.org/", "direct", False),
    ("allow-list", "https://web.telegram.org/", "lab-socks", False),
    ("russia-2026", "https://chat.signal.org/", "direct", False),
    ("russia-2026", "https://chat.signal.org/", "tls-fragment", False),
    ("russia-2026", "https://chat.signal.org/", "lab-socks", True),
]


@pytest.fixture(scope="module")
def curl() -> str:
    return require_peer("curl", "curl")


# curl's exit status when its own --max-time ran out.
CURL_TIMED_OUT = 28


async def fetch_through(
    lab: Lab, route: str, url: str, curl: str, works: bool
) -> subprocess.CompletedProcess[str]:
    config = parse_config(lab.helper_config(listen="127.0.0.1:0"), "lab config")
    only = config.route(route)
    probe = config.probe
    if not works:
        # Where the lab drops packets, detour gives up after 1 s (on the route's connect, or
        # on a first answer that never comes) and tells the client, well before curl's own
        # limit: the test waits 1 s, not curl's 10.
        only = dataclasses.replace(only, timeout=1.0)
        probe = dataclasses.replace(probe, first_answer=1.0)
    config = dataclasses.replace(
        config, routes=(only,), services=(), default_policy=route, probe=probe
    )
    async with Engine(config) as engine:
        host, port = engine.mixed_address
        return await asyncio.to_thread(
            subprocess.run,
            [
                curl, "--silent", "--show-error", "--max-time", "3" if works else "10",
                "--socks5-hostname", f"{host}:{port}", "--cacert", str(lab.ca.ca_path), url,
            ],
            capture_output=True,
            text=True,
        )  # fmt: skip


@pytest.mark.parametrize(
    "scenario, url, route, works", CASES, ids=[f"{s}:{r}:{u.split('/')[2]}" for s, u, r, _ in CASES]
)
async def test_route_in_scenario(
    lab: Lab, curl: str, scenario: str, url: str, route: str, works: bool
) -> None:
    if lab.scenario.name != scenario:
        await lab.set_scenario(scenario)
    result = await fetch_through(lab, route, url, curl, works)
    if works:
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"hello from {url.split('/')[2]}")
    else:
        assert result.returncode != 0, result.stdout
        assert result.returncode != CURL_TIMED_OUT, "detour left the client waiting"
