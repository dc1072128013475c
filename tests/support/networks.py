"""Lab networks for tests: one that no other lab on this machine is using.

Test runs overlap on one machine (two checkouts, a person and CI), and a lab takes its whole
network: a userland lab binds every host address of 127.N.0.0/16 (its resolver on
127.N.0.53:53), a kernel-level lab routes 10.N.0.0/16 into a namespace named after that
network. A fixed network in a test collides with the same test in another run, so every test
that starts a lab asks here for one.

A network handed out is reserved for the life of this process by a lock file in the temporary
directory (flock, released by the kernel when the process ends, also when it is killed), so
two runs of this suite never pick the same one; a network some other program holds (its
resolver address is bound, its route exists) is passed over as well. Within one process a
network is handed out again only once its lab has stopped, and never twice in a row to tests
that take several before starting any.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import random
import socket
import subprocess
import tempfile
from collections import deque
from pathlib import Path

from helper.lab.hosts import HostTable

__all__ = ["free_network", "lab_address"]

# 127.77 is the lab's default network (a person's `detour lab`); the older fixed networks of the
# suite were 127.78-127.99 and 10.78-10.81. Second octets from here on are left to this module.
_USERLAND = range(100, 255)
_KERNEL = range(100, 200)
_LOCKS = Path(tempfile.gettempdir()) / "detour-test-networks"

_held: dict[str, int] = {}  # lock name -> the open file holding its lock
_recent: deque[str] = deque(maxlen=8)  # handed out last, maybe not started yet


def free_network(kernel: bool = False) -> str:
    """A lab network no other lab uses: "127.N.0.0/16" for the userland lab, or
    "10.N.0.0/16" for the kernel-level lab (kernel=True)."""
    seconds = list(_KERNEL if kernel else _USERLAND)
    random.shuffle(seconds)
    # Networks this process already holds first, so a long run does not use up the range.
    seconds.sort(key=lambda second: _network(second, kernel) not in _held)
    for second in seconds:
        network = _network(second, kernel)
        if network in _recent:
            continue
        names = [network, *([_namespace(network)] if kernel else [])]
        if not all(_reserve(name) for name in names):
            continue
        if _in_use(network, kernel):
            continue
        _recent.append(network)
        return network
    raise RuntimeError("no free lab network: every candidate is in use")


def lab_address(network: str, host: str) -> str:
    """The address of lab host `host` (a key in helper/lab/hosts.py's table, such as
    "telegram-web" or "control") on `network`."""
    return _table(network).address(host)


def _table(network: str) -> HostTable:
    net = ipaddress.IPv4Network(network)
    return HostTable(net, routable=not net.is_loopback)


def _network(second: int, kernel: bool) -> str:
    return f"{10 if kernel else 127}.{second}.0.0/16"


def _namespace(network: str) -> str:
    # Two kernel-level labs whose networks give the same namespace name would remove each
    # other's namespace at start, so the name is reserved too.
    from helper.lab.netns import NetnsLab

    return NetnsLab("baseline", network=network).name


def _reserve(name: str) -> bool:
    """Take the lock for `name` (kept until this process exits); False if another holds it."""
    if name in _held:
        return True
    _LOCKS.mkdir(mode=0o1777, exist_ok=True)
    fd = os.open(_LOCKS / name.replace("/", "_"), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    _held[name] = fd
    return True


def _in_use(network: str, kernel: bool) -> bool:
    if kernel:
        prefix = network.removesuffix("0.0/16")  # "10.101."
        routes = subprocess.run(["ip", "route"], capture_output=True, text=True).stdout
        namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
        return any(line.startswith(prefix) for line in routes.splitlines()) or (
            _namespace(network) in namespaces.stdout.split()
        )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((_table(network).dns_address, 53))
        except PermissionError:
            return False  # not root: no telling, and the lab itself will say so
        except OSError:
            return True
    return False
