"""The network-namespace builder the kernel-level lab, the namespace tests and the routing
benchmark share: unique names, a router that forwards, and nothing left behind -- after a
normal exit, an error part-way through, or a close() from another thread."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from helper.lab.namespaces import IFNAMSIZ, NamespaceError, Namespaces
from tests.support.peers import require_peer, skip_or_fail

# Listens on the addresses given, accepts one connection per address and echoes one line.
SERVER = textwrap.dedent(
    """
    import socket, sys
    listeners = []
    for host in sys.argv[1:]:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family)
        listener.bind((host, 7000))
        listener.listen()
        listeners.append(listener)
    print("ready", flush=True)
    for listener in listeners:
        connection, _ = listener.accept()
        connection.sendall(connection.recv(100))
        connection.close()
    """
)

CLIENT = textwrap.dedent(
    """
    import socket, sys
    for host in sys.argv[1:]:
        with socket.create_connection((host, 7000), timeout=10) as sock:
            sock.sendall(b"hello")
            print(host, sock.recv(100).decode(), flush=True)
    """
)


def require_ip() -> None:
    require_peer("ip", "iproute2")
    if os.geteuid() != 0:
        skip_or_fail("network namespaces need root")


def leftovers(net: Namespaces) -> list[str]:
    """What of ours `ip netns list` and `ip link` still show."""
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return [line for line in (names + links).splitlines() if net.suffix in line]


def test_names_are_unique_per_run_and_fit_an_interface() -> None:
    first, second = Namespaces(), Namespaces()
    assert first.suffix != second.suffix
    assert first.suffix.startswith(f"{os.getpid() % 10000:04d}")
    assert len(f"dbench{first.suffix}a") == IFNAMSIZ  # the longest prefix in use fits
    with pytest.raises(ValueError, match="longer than 15 characters"):
        first.veth("toolong", None, None)  # refused before anything is made


def test_a_router_namespace_forwards_and_everything_goes_on_exit() -> None:
    require_ip()
    with Namespaces() as net:
        a, b = net.namespace("dtns-a"), net.namespace("dtns-b")
        router = net.namespace("dtns-r", forwarding=True)
        a_if, ra_if = net.veth("dtna", a, router)
        b_if, rb_if = net.veth("dtnb", b, router)
        net.address(a, a_if, "10.251.1.2/24", "fd51:1::2/64")
        net.address(router, ra_if, "10.251.1.1/24", "fd51:1::1/64")
        net.address(b, b_if, "10.251.2.2/24", "fd51:2::2/64")
        net.address(router, rb_if, "10.251.2.1/24", "fd51:2::1/64")
        for ns, side in ((a, "1"), (b, "2")):
            net.route(ns, "default", "via", f"10.251.{side}.1")
            net.route(ns, "default", "via", f"fd51:{side}::1")
        targets = ("10.251.2.2", "fd51:2::2")
        server = subprocess.Popen(
            net.exec(b, sys.executable, "-c", SERVER, *targets), stdout=subprocess.PIPE, text=True
        )
        try:
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
            output = net.run(a, sys.executable, "-c", CLIENT, *targets)
        finally:
            server.kill()
            server.wait()
        assert output.splitlines() == [f"{host} hello" for host in targets]
        assert len(leftovers(net)) >= 3
    assert leftovers(net) == []


def test_an_error_part_way_deletes_what_was_made() -> None:
    require_ip()
    net = Namespaces()
    with pytest.raises(NamespaceError, match="route add"), net:
        ns = net.namespace("dtns-e")
        net.veth("dtne", None, ns)
        net.route(None, "10.252.0.0/16", "via", "198.51.100.1")  # on no link here
    assert leftovers(net) == []
    with pytest.raises(NamespaceError, match="deleted already"):
        net.namespace("dtns-late")  # a build still going on in another thread stops here
    assert leftovers(net) == []
