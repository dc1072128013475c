"""Acceptance for router mode: detour in a router namespace, a LAN client namespace, an
upstream namespace standing for the service (see conftest.py for the picture)."""

from __future__ import annotations

import base64
import socket
import ssl
import struct
import subprocess
import sys

import pytest

from tests.router.conftest import (
    CLIENT,
    CLIENT6,
    METADATA,
    PASSWORD,
    ROOT,
    ROUTER_CONFIG,
    ROUTER_LAN,
    SERVICE_IP,
    SERVICE_IP6,
    STRANGER,
    RouterNet,
)

pytestmark = pytest.mark.timeout(60)


def _recv_all(sock: socket.socket, limit: int = 1 << 16) -> bytes:
    data = b""
    try:
        while len(data) < limit and (chunk := sock.recv(limit)):
            data += chunk
    except ConnectionResetError:
        data += b"<reset>"
    return data


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def client_hello(server_name: str) -> bytes:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def connect_http(net: RouterNet, target: str, *, login: bool = True) -> bytes:
    sock = net.client_socket()
    with sock:
        sock.connect((ROUTER_LAN, 1080))
        auth = ""
        if login:
            token = base64.b64encode(f"lan:{PASSWORD}".encode()).decode()
            auth = f"Proxy-Authorization: Basic {token}\r\n"
        sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{auth}\r\n".encode())
        return _recv_all(sock)


def socks5_connect(net: RouterNet, host: str, port: int) -> int:
    sock = net.client_socket()
    with sock:
        sock.connect((ROUTER_LAN, 1080))
        user, password = b"lan", PASSWORD.encode()
        sock.sendall(b"\x05\x01\x02")
        assert _recv_exactly(sock, 2) == b"\x05\x02"
        sock.sendall(bytes([1, len(user)]) + user + bytes([len(password)]) + password)
        assert _recv_exactly(sock, 2) == b"\x01\x00"
        sock.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(host) + struct.pack("!H", port))
        return _recv_exactly(sock, 10)[1]


def test_transparent_redirect_carries_a_service_connection(router_net: RouterNet) -> None:
    sock = router_net.client_socket()
    with sock:
        sock.connect((SERVICE_IP, 80))  # the device knows nothing of a proxy
        sock.sendall(b"not http, just bytes to echo\r\n")
        assert _recv_exactly(sock, 30) == b"not http, just bytes to echo\r\n"
    log = router_net.wait_for_log(f"transparent {SERVICE_IP}:80 via direct")
    assert f"client {CLIENT}" in log


def test_transparent_redirect_over_ipv6(router_net: RouterNet) -> None:
    sock = router_net.client_socket(CLIENT6)
    with sock:
        sock.connect((SERVICE_IP6, 80))
        sock.sendall(b"over IPv6\r\n")
        assert _recv_exactly(sock, 11) == b"over IPv6\r\n"
    log = router_net.wait_for_log(f"transparent [{SERVICE_IP6}]:80 via direct")
    assert f"client [{CLIENT6}]" in log


def test_transparent_redirect_routes_by_server_name(router_net: RouterNet) -> None:
    hello = client_hello("svc.example")
    sock = router_net.client_socket()
    with sock:
        sock.connect((SERVICE_IP, 443))
        sock.sendall(hello)
        assert _recv_exactly(sock, len(hello)) == hello  # the echo answers the ClientHello
    router_net.wait_for_log("transparent svc.example:443 via direct")


def test_a_client_not_in_the_allow_list_is_refused(router_net: RouterNet) -> None:
    # The mixed listener, and a redirected connection to the service.
    for address in ((ROUTER_LAN, 1080), (SERVICE_IP, 80)):
        sock = router_net.client_socket(STRANGER)
        with sock:
            try:
                sock.connect(address)
                sock.sendall(b"\x05\x01\x00")
                reply = _recv_all(sock)
            except ConnectionResetError:
                reply = b"<reset>"
            assert reply in (b"", b"<reset>")  # closed before any answer
    log = router_net.wait_for_log(f"refused client {STRANGER}")
    assert log.count(f"refused client {STRANGER}") >= 2


def test_an_unauthenticated_client_is_refused(router_net: RouterNet) -> None:
    reply = connect_http(router_net, f"{SERVICE_IP}:443", login=False)
    assert reply.startswith(b"HTTP/1.1 407")


def test_the_service_through_the_mixed_listener(router_net: RouterNet) -> None:
    assert socks5_connect(router_net, SERVICE_IP, 443) == 0x00


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("127.0.0.1:22", "a loopback address"),
        (f"{ROUTER_LAN}:22", "a private address"),
        ("10.201.0.1:22", "an address of this machine"),  # the uplink, though "public" here
        ("10.9.9.9:443", "a private address"),
    ],
)
def test_lan_client_cannot_reach_the_router_or_private_ranges(
    router_net: RouterNet, target: str, why: str
) -> None:
    reply = connect_http(router_net, target)
    assert reply.startswith(b"HTTP/1.1 403"), reply[:200]
    assert why.encode() in reply
    host, _, port = target.rpartition(":")
    assert socks5_connect(router_net, host, int(port)) == 0x02
    log = router_net.wait_for_log(f"http-connect {target}: {target} is {why}")
    assert PASSWORD not in log


def test_a_connection_straight_to_the_transparent_port_is_refused(router_net: RouterNet) -> None:
    sock = router_net.client_socket()
    with sock:
        try:
            sock.connect((ROUTER_LAN, 1090))  # not redirected: its destination is detour itself
            sock.sendall(b"GET / HTTP/1.1\r\nHost: svc.example\r\n\r\n")
            reply = _recv_all(sock)
        except ConnectionResetError:
            reply = b"<reset>"
    assert reply in (b"", b"<reset>")
    router_net.wait_for_log(f"refused a loop: the original destination {ROUTER_LAN}:1090")


def _in_router(net: RouterNet, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        net.namespaces.exec(net.router_ns, *argv),
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("remote_public", "refused"),
    [
        pytest.param('["0.0.0.0/1", "128.0.0.0/1"]', ["[0]", "[1]"], id="halves"),
        pytest.param('["169.254.0.0/15"]', ["[0]"], id="link-local-supernet"),
        pytest.param('["10.203.0.0/24", "::/0"]', ["[1]"], id="ipv6-everything"),
        pytest.param('["64:ff9b::/96"]', ["[0]"], id="nat64-of-everything"),
        pytest.param('["64:ff9b::a9fe:0/112"]', ["[0]"], id="nat64-of-link-local"),
    ],
)
def test_remote_public_holding_link_local_is_refused_at_config_time(
    router_net: RouterNet, remote_public: str, refused: list[str]
) -> None:
    """The metadata service answers on the router (so a LAN client would reach it through
    detour if the range let it); a remote_public range that holds link-local addresses,
    directly or inside IPv6 addresses, keeps detour from starting, naming the key."""
    probe = _in_router(
        router_net,
        "python3",
        "-c",
        f"import socket; socket.create_connection(('{METADATA}', 80), 5)",
    )
    assert probe.returncode == 0, probe.stderr  # the path exists
    config = ROUTER_CONFIG.replace(
        'remote_public = ["10.203.0.0/24", "10.201.0.0/24", "fd23::/64"]',
        f"remote_public = {remote_public}",
    )
    path = router_net.directory / "supernet.toml"
    path.write_text(
        config.replace(f'mixed = "{ROUTER_LAN}:1080"', f'mixed = "{ROUTER_LAN}:1081"').replace(
            ":1090", ":1091"
        )
    )
    for argv in (["config", "check", str(path)], ["run", "--headless", "-c", str(path)]):
        done = _in_router(router_net, sys.executable, "-m", "helper", *argv)
        shown = done.stdout + done.stderr
        assert done.returncode == 2, shown
        for index in refused:
            assert f"listen.remote_public{index}" in shown, shown
        assert "cannot stand for the internet" in shown and "Traceback" not in shown, shown


@pytest.mark.parametrize(
    "host",
    [METADATA, f"::ffff:{METADATA}", "::a9fe:a9fe", "::ffff:0:a9fe:a9fe", "64:ff9b::a9fe:a9fe",
     "64:ff9b:1::a9fe:a9fe", "64:ff9b:1:a9fe:a9:fe00::", "2002:a9fe:a9fe::1"],
)  # fmt: skip
def test_lan_client_cannot_reach_link_local_in_any_form(router_net: RouterNet, host: str) -> None:
    """The IPv6 forms that carry 169.254.169.254 to a translator (IPv4-compatible, SIIT,
    NAT64 well-known and local-use in two of its formats, 6to4) are refused as it is."""
    target = f"[{host}]:80" if ":" in host else f"{host}:80"
    reply = connect_http(router_net, target)
    assert reply.startswith(b"HTTP/1.1 403"), reply[:200]
    assert b"link-local address" in reply, reply[:300]
