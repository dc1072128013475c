"""What the proxy path must not load: the lab (a tester's tool) and, for the router build,
the terminal UI, and aiohttp for the status API (its own small server serves it: aiohttp
alone costs a router ~14 MB). Checked in a fresh interpreter, after starting the engine's
modules, and in detour running headless."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, config_text, detour_command
from tests.support.peers import free_port

UI_MODULES = ("textual", "segno", "helper.tui")
WEB_MODULES = ("aiohttp", "yarl", "multidict")


def is_ui(module: str) -> bool:
    return any(module == ui or module.startswith(f"{ui}.") for ui in UI_MODULES)


def is_web(module: str) -> bool:
    return any(module == web or module.startswith(f"{web}.") for web in WEB_MODULES)


def loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_the_proxy_path_loads_neither_the_lab_nor_the_ui() -> None:
    modules = loaded_after(
        "import helper.cli, helper.engine, helper.config\n"
        "from helper.config import load_config\n"
        "from helper.engine import Engine\n"
        "Engine(load_config())"
    )
    assert not {m for m in modules if m.startswith("helper.lab")}
    assert not {m for m in modules if is_ui(m)}


def test_a_front_route_does_not_load_aiohttp() -> None:
    """aiohttp (14 MB resident) is the relay's and the DoH client's; a `front:` route needs
    only its compiled masking loop, which is loaded by itself."""
    modules = loaded_after(
        "import transports.fronted.client, transports.fronted.mux\n"
        "from transports.websocket import encode_frame\n"
        "encode_frame(2, b'x' * 100)"
    )
    assert "aiohttp" not in modules
    assert "aiohttp._websocket.mask" in modules


def test_resolvers_and_links_load_their_libraries_only_when_used() -> None:
    """The built-in config's `resolve:` routes (DoH, DoT) are built with the engine; aiohttp
    and dnspython (some 20 MB resident together) load with a resolver's first question. The
    link parser (subscriptions) loads no cipher: cryptography (6.6 MB) comes with the first
    stream that needs it."""
    modules = loaded_after(
        "from helper.config import load_config\n"
        "from helper.engine import Engine\n"
        "Engine(load_config())"
    )
    assert not {"aiohttp", "yarl", "multidict"} & modules  # its masking loop loads by itself
    assert not {m for m in modules if m == "dns" or m.startswith("dns.")}
    assert "cryptography" not in modules


def test_the_status_api_loads_no_aiohttp() -> None:
    # (The built-in config's encrypted-DNS routes load aiohttp for DoH: not the API's doing.)
    text = config_text(extra='[api]\nlisten = "127.0.0.1:0"\n')
    modules = loaded_after(
        "import helper.api\n"
        "from helper.config import parse_config\n"
        "from helper.engine import Engine\n"
        f"assert Engine(parse_config({text!r})).api is not None"
    )
    assert "helper.api" in modules and "helper.http_server" in modules
    assert not {m for m in modules if is_web(m)}


def test_a_tgws_route_loads_no_cryptography_until_it_carries_something() -> None:
    modules = loaded_after(
        "from transports import Endpoint, parse_chain\n"
        "dialer = parse_chain('tlsfrag:sni | tgws:dc2=10.0.0.2').build()\n"
        "assert dialer.not_applicable(Endpoint('149.154.167.51', 443)) is None"
    )
    assert "transports.tgws" in modules
    assert not {m for m in modules if m == "cryptography" or m.startswith("cryptography.")}


# What a router runs: a login and an allow-list on the listener, a transparent listener,
# the status API and the WhatsApp proxy, services, nothing else allowed, upstream and
# DPI-evading routes, JSON logs for the system's log collector. (Ports: the mixed one is
# filled in below, 0 is any free one.)
ROUTER_CONFIG = """
[base]
config = "none"
[listen]
mixed = "127.0.0.1:0"
users = [{ name = "lan", password = "router-secret" }]
allow = ["127.0.0.0/8", "192.168.0.0/16"]
transparent = "127.0.0.2:0"
[api]
listen = "127.0.0.3:0"
[whatsapp_proxy]
listen = "127.0.0.4"
tls_port = 0
chat_port = 0
http_port = 0
media_ports = [0]
[default]
policy = "deny"
[[route]]
name = "direct"
chain = "direct"
[[route]]
name = "frag"
chain = "tlsfrag:sni"
[[route]]
name = "upstream"
chain = "socks5://127.0.0.1:9"
[[service]]
name = "telegram"
domains = ["telegram.org", "t.me"]
cidrs = ["149.154.160.0/20"]
[[service]]
name = "whatsapp"
domains = ["whatsapp.net", "whatsapp.com"]
"""


@pytest.mark.parametrize(
    "args, config",
    [
        (("run", "--headless"), config_text()),
        (("run", "--headless", "--log-format", "json"), ROUTER_CONFIG),
        ((), config_text()),
    ],
    ids=["run-headless", "run-headless-router-config", "no-command-no-terminal"],
)
def test_detour_headless_never_imports_the_ui(
    tmp_path: Path, args: tuple[str, ...], config: str
) -> None:
    port = free_port()
    path = tmp_path / "c.toml"
    path.write_text(config.replace('"127.0.0.1:0"', f'"127.0.0.1:{port}"'))
    # -X importtime names every module the interpreter imports, on stderr.
    command = [sys.executable, "-X", "importtime", *detour_command(*args, "-c", str(path))[1:]]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        # The WhatsApp proxy keeps its certificate in the state directory: the test's own.
        env={**os.environ, "DETOUR_STATE_DIR": str(tmp_path / "state")},
    )
    try:
        # A bound for a loaded machine (making the WhatsApp proxy's certificate took most
        # of 15 s there), not a pause: the wait ends at the line.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stdout.readline()  # type: ignore[union-attr]
            if "listening on" in line or not line:
                break
        assert "listening on" in line, line
    finally:
        process.send_signal(signal.SIGINT)
        _, imports = process.communicate(timeout=60)
    assert process.returncode == 0, imports[-2000:]
    imported = {row.rsplit("|", 1)[-1].strip() for row in imports.splitlines() if "|" in row}
    assert "helper.engine" in imported  # the check sees what it should
    assert not [m for m in imported if is_ui(m)]
    if "[api]" in config:  # the status API is served, without aiohttp
        assert "helper.http_server" in imported
        assert not [m for m in imported if is_web(m)]
