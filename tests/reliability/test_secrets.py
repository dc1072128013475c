"""Credentials never come back out: detour runs headless with debug logging and a config
full of secrets (listener passwords, proxy passwords that work and that fail, a front key, a
bridge line, Shadowsocks passwords and keys, an Outline dynamic key, a VLESS id and a Trojan
password whose core runs), probes every route, serves connections that succeed after failing
routes and connections that fail on every route, reloads (SIGHUP) a broken config and a
changed one; then every line detour wrote, every reply a client
got and everything `detour probe` printed are searched for each secret.

(The terminal UI has its own secrets tests in tests/tui.) The status API's every endpoint is
asked too, with the right token and a wrong one, while a connection is open.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.reliability import harness
from tests.support import peers
from tests.support.clients import open_socks5
from tests.support.integrity import run_integrity
from transports.fronted.accesskey import access_token

SAFETY = 20.0


def token(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(10)}"


def dead_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    return peers.free_port()


async def raw_exchange(address: tuple[str, int], request: bytes) -> bytes:
    """Send `request` and return everything the proxy answers until it closes (or goes quiet)."""
    reader, writer = await asyncio.open_connection(*address)
    writer.write(request)
    answer = b""
    try:
        async with asyncio.timeout(SAFETY):
            while data := await reader.read(65536):
                answer += data
                if b"\r\n\r\n" in answer and answer.startswith(b"HTTP/1.1 200"):
                    break  # a tunnel opened: nothing more to read unless we send
    except (ConnectionError, TimeoutError):
        pass
    writer.close()
    return answer


def socks5_attempt(login: tuple[str, str], host: str, port: int) -> bytes:
    """Greeting, login and CONNECT in one go; the raw answer."""
    user, password = (part.encode() for part in login)
    name = host.encode()
    return (
        b"\x05\x01\x02"  # v5, 1 method: user/password
        + bytes([1, len(user)])
        + user
        + bytes([len(password)])
        + password
        + b"\x05\x01\x00\x03"  # v5 CONNECT rsv DOMAIN
        + bytes([len(name)])
        + name
        + port.to_bytes(2, "big")
    )


def basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("log_format", ["text", "json"])  # JSON lines carry extra fields too
def test_no_secret_in_any_output(tmp_path: Path, log_format: str) -> None:
    from helper.relay.keys import RelayKeys
    from transports import Endpoint

    listener_pw, client_wrong_pw = token("lst-"), token("cwr-")
    good_pw, wrong_pw, http_pw, pt_socks_pw = token("gd-"), token("wr-"), token("ht-"), token("pt-")
    cert = base64.b64encode(secrets.token_bytes(52)).decode().rstrip("=")
    api_token, wrong_api_token, api_port = token("api-"), token("wat-"), dead_port()
    broken_pw, changed_pw = token("brk-"), token("chg-")
    # Links for people's own servers (transports/links.py), all to ports nothing serves.
    ss_pw, trojan_pw, ssconf_path = token("ss-"), token("tro-"), token("ssc-")
    ss22_key = base64.b64encode(secrets.token_bytes(16)).decode()
    vless_id = str(uuid.uuid4())
    mtproxy_key = secrets.token_hex(16)
    keys = RelayKeys(tmp_path / "relay-state")
    keys.generate()
    key = keys.add_client("alice", Endpoint("127.0.0.1", dead_port()), "cdn.test", "relay.test")
    front_key = key.encode()
    secret_values = {
        "listener password": listener_pw,
        "wrong password a client tried": client_wrong_pw,
        "proxy password": good_pw,
        "wrong proxy password": wrong_pw,
        "http proxy password": http_pw,
        "pt proxy password": pt_socks_pw,
        "listener Basic token": basic("alice", listener_pw),
        "http proxy Basic token": basic("carol", http_pw),
        "bridge cert": cert,
        "front key": front_key[5:40],
        "front key token": key.token.hex(),
        "front access token": access_token(key).rsplit(".", 1)[1],
        "status API token": api_token,
        "wrong status API token a client tried": wrong_api_token,
        "password in a config that failed to reload": broken_pw,
        "password in a reloaded config": changed_pw,
        "shadowsocks password": ss_pw,
        "shadowsocks 2022 key": ss22_key,
        "shadowsocks 2022 key, URL-encoded": quote(ss22_key, safe=""),
        "vless user id": vless_id,
        "trojan password": trojan_pw,
        "outline dynamic key path": ssconf_path,
        "MTProto proxy secret": mtproxy_key,
    }

    with (
        peers.microsocks("bob", good_pw) as socks,
        peers.tinyproxy("carol", token("other-")) as tiny,
    ):
        origin = harness.origin(tmp_path)
        with harness.running(origin):
            port = origin.address[1]
            failing = {
                "front": f"front:{front_key}",
                "bridge": f"pt:obfs4 127.0.0.1:{dead_port()} cert={cert} iat-mode=0 | "
                f"socks5://ptuser:{pt_socks_pw}@127.0.0.1:{dead_port()}",
                "web": f"http://carol:{http_pw}@{tiny.host}:{tiny.port}",
                "wrong": f"socks5://bob:{wrong_pw}@{socks.host}:{socks.port}",
            }
            # A service of their own: a core answers SOCKS before it reaches its server, so
            # through them a connection opens and then ends (no 5xx to assert on).
            links = {
                "ss": f"ss://aes-256-gcm:{ss_pw}@127.0.0.1:{dead_port()}",
                "ss22": f"ss://2022-blake3-aes-128-gcm:{quote(ss22_key, safe='')}"
                f"@127.0.0.1:{dead_port()}",
                "ssconf": f"ssconf://127.0.0.1:{dead_port()}/{ssconf_path}",
                # through the proxy core on PATH (v2ray in CI), which runs and fails
                "vless": f"vless://{vless_id}@127.0.0.1:{dead_port()}?security=tls&sni=v.test",
                "trojan": f"trojan://{trojan_pw}@127.0.0.1:{dead_port()}?sni=t.test",
                # Telegram's DCs only: shown and probed (not applicable), never dialed here
                "mtproxy": f"mtproxy:127.0.0.1:{dead_port()};secret=dd{mtproxy_key}",
            }
            good = {"good": f"socks5://bob:{good_pw}@{socks.host}:{socks.port}"}
            routes = {**failing, **links, **good}
            route_list = ", ".join(f'"{name}"' for name in {**failing, **good})
            failing_list = ", ".join(f'"{name}"' for name in failing)
            link_list = ", ".join(f'"{name}"' for name in links)
            config = f"""
[base]
config = "none"

[listen]
users = [{{ name = "alice", password = "{listener_pw}" }}]
handshake_timeout = "5s"

[dns]
hosts = {{ "fails.test" = ["127.0.0.1"], "own.test" = ["127.0.0.1"] }}

[probe]
timeout = "3s"

[default]
policy = "wrong"

[api]
listen = "127.0.0.1:{api_port}"
token = "{api_token}"
loopback_token = true
""" + "".join(
                f'\n[[route]]\nname = "{n}"\nchain = "{c}"\ntimeout = "5s"\n'
                for n, c in routes.items()
            )
            config += f"""
[[service]]
name = "works"
cidrs = ["127.0.0.1/32"]
ports = [{port}]
probes = ["tcp://127.0.0.1:{port}"]
routes = [{route_list}]

[[service]]
name = "fails"
domains = ["fails.test"]
probes = ["tcp://fails.test:{port}"]
routes = [{failing_list}]

[[service]]
name = "own"
domains = ["own.test"]
probes = ["tls://own.test:{port}"]
routes = [{link_list}]
"""
            detour = harness.detour(tmp_path, config, log_level="debug", log_format=log_format)
            config_file = tmp_path / "detour.toml"  # where harness.detour wrote it
            replies: dict[str, bytes] = {}
            with harness.running(detour):

                async def clients() -> None:
                    address = detour.address
                    pair = await open_socks5(address, "127.0.0.1", port, "alice", listener_pw)
                    # microsocks closes both ways at the first end of stream: announce the length
                    assert (await run_integrity(*pair, up=1000, down=1000, half_close=False)).ok
                    replies["socks5 to a failing service"] = await raw_exchange(
                        address, socks5_attempt(("alice", listener_pw), "fails.test", port)
                    )
                    replies["socks5 with a wrong password"] = await raw_exchange(
                        address, socks5_attempt(("alice", client_wrong_pw), "fails.test", port)
                    )
                    replies["socks4a"] = await raw_exchange(
                        address,
                        b"\x04\x01" + port.to_bytes(2, "big") + b"\0\0\0\1alice\0fails.test\0",
                    )
                    for what, user, password in [
                        ("http connect", "alice", listener_pw),
                        ("http connect with a wrong password", "alice", client_wrong_pw),
                    ]:
                        auth = f"Proxy-Authorization: Basic {basic(user, password)}\r\n"
                        replies[what] = await raw_exchange(
                            address,
                            f"CONNECT fails.test:{port} HTTP/1.1\r\nHost: fails.test:{port}\r\n"
                            f"{auth}\r\n".encode(),
                        )
                        replies[what.replace("connect", "get")] = await raw_exchange(
                            address,
                            f"GET http://fails.test:{port}/x HTTP/1.1\r\nHost: fails.test:{port}"
                            f"\r\n{auth}Connection: close\r\n\r\n".encode(),
                        )
                    replies["socks5 through links"] = await raw_exchange(
                        address, socks5_attempt(("alice", listener_pw), "own.test", port)
                    )
                    # Unauthenticated, and to the default policy's (failing) route.
                    replies["http connect without a login"] = await raw_exchange(
                        address, f"CONNECT fails.test:{port} HTTP/1.1\r\n\r\n".encode()
                    )
                    replies["default route"] = await raw_exchange(
                        address, socks5_attempt(("alice", listener_pw), "elsewhere.test", port)
                    )
                    # The status API, while a connection through the working route is open.
                    _, writer = await open_socks5(address, "127.0.0.1", port, "alice", listener_pw)
                    for path in ("/status", "/metrics", "/proxy.pac", "/healthz", "/nope"):
                        for bearer in (api_token, wrong_api_token):
                            replies[f"status API {path} ({bearer[:4]})"] = await raw_exchange(
                                ("127.0.0.1", api_port),
                                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: "
                                f"Bearer {bearer}\r\nConnection: close\r\n\r\n".encode(),
                            )
                    writer.close()

                with asyncio.Runner() as runner:
                    runner.run(clients())
                # SIGHUP with a broken config, then with a changed password: what the
                # reload reports (JSON lines carry its problems and changes as fields).
                wrong_chain = f"socks5://bob:{wrong_pw}@{socks.host}:{socks.port}"
                for replacement, outcome in [
                    (f"socks5://bob:{broken_pw}@{socks.host}:{socks.port} | sock5://x:1", "reload"),
                    (f"socks5://bob:{changed_pw}@{socks.host}:{socks.port}", "reloaded"),
                ]:
                    config_file.write_text(config.replace(wrong_chain, replacement))
                    seen = detour.output.count(outcome)
                    detour.process.send_signal(signal.SIGHUP)
                    deadline = time.monotonic() + SAFETY
                    while detour.output.count(outcome) == seen:
                        assert time.monotonic() < deadline, detour.output[-2000:]
                        time.sleep(0.05)
                assert detour.alive(), detour.output
            # Both forms of `detour probe` at once: each spends its time waiting on routes
            # that fail (their timeouts), not on the CPU.
            probes = [
                subprocess.Popen(
                    [sys.executable, "-m", "helper", "probe", "-c", str(config_file), *extra],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    cwd=harness.ROOT,
                )
                for extra in ([], ["--json"])
            ]
            try:
                probe, probe_json = (run.communicate(timeout=120) for run in probes)
            finally:
                for run in probes:
                    if run.poll() is None:
                        run.kill()
                        run.wait()

    outputs = {
        "detour's log": detour.output,
        "detour probe": "".join(probe),
        "detour probe --json": "".join(probe_json),
        **{f"reply to {what}": reply.decode("latin-1") for what, reply in replies.items()},
    }
    # The test reached what it meant to: failing routes were tried and explained.
    log = detour.output
    assert "proxy_auth_failed" in log and ("DEBUG" in log or '"debug"' in log), log
    assert any(b"HTTP/1.1 5" in reply for reply in replies.values()), replies
    status = replies["status API /status (api-)"]
    assert status.startswith(b"HTTP/1.1 200") and b'"connections"' in status, status
    assert b"socks5://bob:***@" in status or b'"good"' in status, status
    assert replies["status API /status (wat-)"].startswith(b"HTTP/1.1 401"), replies
    leaks = [
        f"{what} in {where}"
        for where, text in outputs.items()
        for what, value in secret_values.items()
        if value in text
    ]
    assert not leaks, "\n".join(leaks)


@pytest.mark.parametrize(
    "chain",
    [
        "socks5://bob:{pw}@127.0.0.1:1080 | sock5://x:1",  # an unknown layer after a password
        "http://bob:{pw}@127.0.0.1:notaport",
        "socks5://bob:{pw}@127.0.0.1:1080 | front:dtr1:{pw}",
        "pt:obfs4 192.0.2.3:443 cert={pw} iat-mode=0",  # a bridge without its proxy
        "ss://aes-256-gcm:{pw}@127.0.0.1:notaport",
        "ss://rc4-md5:{pw}@127.0.0.1:8388",
        "ss://2022-blake3-aes-128-gcm:{pw}@127.0.0.1:8388",
        "vless://{pw}@127.0.0.1:443",  # not a UUID
        "trojan://{pw}@127.0.0.1:443?security=none",
        "mtproxy:127.0.0.1:notaport;secret={pw}",
        "mtproxy:127.0.0.1:443;secret={pw}",  # no secret of any form
        "socks5://127.0.0.1:1080 | vless://b831381d-6324-4d53-ad4f-8cda48b30811@h:1?sid={pw}",
    ],
)
def test_config_errors_quote_the_chain_without_its_secrets(tmp_path: Path, chain: str) -> None:
    """A chain that does not parse is quoted in the error (so the user finds it), with its
    secrets hidden, by `detour config check` and by `detour run`."""
    pw = token("cfg-")
    path = tmp_path / "bad.toml"
    path.write_text(
        f'[base]\nconfig = "none"\n[[route]]\nname = "r"\nchain = "{chain.format(pw=pw)}"\n'
    )
    path.chmod(0o600)
    for argv in (["config", "check", str(path)], ["run", "--headless", "-c", str(path)]):
        done = subprocess.run(
            [sys.executable, "-m", "helper", *argv],
            capture_output=True,
            text=True,
            cwd=harness.ROOT,
            timeout=60,
            check=False,
        )
        shown = done.stdout + done.stderr
        assert done.returncode == 2 and "route[0].chain" in shown, shown
        assert pw not in shown, shown


def detour_cli(*argv: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "helper", *argv],
        capture_output=True,
        text=True,
        cwd=harness.ROOT,
        timeout=60,
        check=False,
    )
    return f"exit {done.returncode}\n{done.stdout}{done.stderr}"


@pytest.mark.timeout(120)
def test_passwords_with_blanks_and_bars_in_every_output(tmp_path: Path) -> None:
    """Proxy passwords holding a space, a tab or a '|' (written %7C in a chain, and as it is
    in a config that is then refused) work, and no half of one appears in `config check`,
    `config show`, the error for the refused config, the `listening on` line or /status."""
    halves = {what: (token(f"{what}1-"), token(f"{what}2-")) for what in ("sp", "tb", "br")}
    pairs = zip(halves.values(), " \t|", strict=True)
    space, tab, bar = (f"{a}{blank}{b}" for (a, b), blank in pairs)
    api_token, api_port = token("api-"), dead_port()
    with peers.microsocks("bob", space) as by_space, peers.microsocks("bob", tab) as by_tab:
        origin, other = harness.origin(tmp_path), harness.origin(tmp_path, "other")
        with harness.running(origin, other):
            port = origin.address[1]
            routes = {
                "space": f"socks5://bob:{space}@{by_space.host}:{by_space.port}",
                "tab": f"socks5://bob:{tab}@{by_tab.host}:{by_tab.port}",
                "bar": f"http://carol:{quote(bar, safe='')}@127.0.0.1:{dead_port()}",
            }
            config = f"""
[base]
config = "none"

[api]
listen = "127.0.0.1:{api_port}"
token = "{api_token}"

[default]
policy = "space"
""" + "".join(
                f'\n[[route]]\nname = "{name}"\nchain = "{chain}"\ntimeout = "5s"\n'
                for name, chain in routes.items()
            )
            config += f"""
[[service]]
name = "tab"
cidrs = ["127.0.0.1/32"]
ports = [{other.address[1]}]
probes = ["tcp://127.0.0.1:{other.address[1]}"]
routes = ["tab"]

[[service]]
name = "space"
cidrs = ["127.0.0.1/32"]
ports = [{port}]
probes = ["tcp://127.0.0.1:{port}"]
routes = ["space", "bar"]
"""
            detour = harness.detour(tmp_path, config)
            config_file = tmp_path / "detour.toml"
            outputs = {
                "config check": detour_cli("config", "check", str(config_file)),
                "config show": detour_cli("config", "show", "-c", str(config_file)),
            }
            assert outputs["config check"].startswith("exit 0"), outputs
            assert outputs["config show"].startswith("exit 0"), outputs
            with harness.running(detour):

                async def clients() -> bytes:
                    # The passwords reach the upstreams whole (a tab was dropped before).
                    for target in (origin, other):
                        pair = await open_socks5(detour.address, *target.address)
                        assert (await run_integrity(*pair, up=100, down=100, half_close=False)).ok
                    # /status shows each route's chain once its service has been probed.
                    async with asyncio.timeout(SAFETY):
                        while True:
                            status = await raw_exchange(
                                ("127.0.0.1", api_port),
                                f"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: "
                                f"Bearer {api_token}\r\nConnection: close\r\n\r\n".encode(),
                            )
                            if status.count(b'"chain"') == len(routes):
                                return status
                            await asyncio.sleep(0.1)

                with asyncio.Runner() as runner:
                    outputs["/status"] = runner.run(clients()).decode("latin-1")
            outputs["detour's log"] = detour.output
            # The same passwords written as they are: '|' cuts its URL, the config is refused.
            raw = config.replace(quote(bar, safe=""), bar)
            refused = tmp_path / "refused.toml"
            refused.write_text(raw)
            refused.chmod(0o600)
            outputs["config error"] = detour_cli("config", "check", str(refused))
            assert outputs["config error"].startswith("exit 2"), outputs["config error"]
            assert "%7C" in outputs["config error"]

    assert "listening on" in outputs["detour's log"]
    assert "socks5://bob:***@" in outputs["/status"], outputs["/status"]
    assert "socks5://bob:***@" in outputs["config show"], outputs["config show"]
    leaks = [
        f"{half!r} of the {what} password in {where}"
        for where, text in outputs.items()
        for what, pair in halves.items()
        for half in pair
        if half in text
    ]
    assert not leaks, "\n".join(leaks) + "\n" + "\n".join(outputs.values())
