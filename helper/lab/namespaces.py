"""Network namespaces joined by veth pairs (Linux, root, iproute2): the one way the
kernel-level lab (netns.py), the tests and the benchmarks build a small network of their
own, and tear it down again.

    with Namespaces() as net:
        router = net.namespace("dtr-r")                # dtr-r-SUFFIX, lo up
        lan, wan = net.veth("dtl", None, router)       # root end, router end; both up
        net.address(None, lan, "10.9.0.1/24")
        net.address(router, wan, "10.9.0.2/24")
        net.route(router, "default", "via", "10.9.0.1")
    # everything made is gone, also after an error part-way through

Names end in a suffix unique to the run (process id and random digits), because other runs
may build their own networks on the same machine at the same time. A fixed suffix (the
lab's: derived from its network) makes the names predictable instead; then whatever a killed
run left under the same names is removed before they are made again.

Calls block for a few milliseconds each; an asyncio caller runs them in a thread. close()
may come from another thread while a build is still going on: it waits for the call in
progress, and later calls refuse, so nothing made after the clean-up outlives it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shlex
import shutil
import subprocess
import threading
from collections.abc import Iterator

__all__ = ["IFNAMSIZ", "NamespaceError", "Namespaces", "ip_command", "unique_suffix"]

IFNAMSIZ = 15  # the longest interface name Linux takes
TIMEOUT = 30.0  # per command: a safety net, `ip` answers in milliseconds


class NamespaceError(RuntimeError):
    """A command that builds the network failed (its stderr is in the message)."""


def ip_command() -> str:
    """The `ip` program: on PATH, or in /usr/sbin, which a normal user's PATH lacks."""
    return shutil.which("ip") or "/usr/sbin/ip"


def unique_suffix() -> str:
    """Eight characters: the process id's last four digits and four random hex digits."""
    return f"{os.getpid() % 10000:04d}{secrets.token_hex(2)}"


class Namespaces:
    """The namespaces, veth pairs and root-namespace routes of one run; close() (or leaving
    the `with` block) deletes them all. `None` as a namespace means the root namespace."""

    def __init__(self, suffix: str | None = None) -> None:
        self.ip = ip_command()
        self.suffix = unique_suffix() if suffix is None else suffix
        self._leftovers = suffix is not None  # fixed names: a killed run may have left them
        self._namespaces: list[str] = []
        self._links: list[str] = []  # root-namespace ends of veth pairs
        self._routes: list[tuple[str, ...]] = []  # routes added in the root namespace
        self._lock = threading.Lock()
        self._closed = False

    # --- building -----------------------------------------------------------------------

    def namespace(self, prefix: str, *, forwarding: bool = False) -> str:
        """A new namespace `PREFIX-SUFFIX` with loopback up; `forwarding` makes it a router
        (IPv4 and IPv6)."""
        name = f"{prefix}-{self.suffix}"
        with self._building():
            if self._leftovers:
                self._run(self.ip, "netns", "del", name, check=False)
            self._run(self.ip, "netns", "add", name)
            self._namespaces.append(name)  # only once made: a name taken is not ours to delete
        self._run(self.ip, "-n", name, "link", "set", "lo", "up")
        if forwarding:
            self.run(name, "sysctl", "-qw", "net.ipv4.ip_forward=1",
                     "net.ipv6.conf.all.forwarding=1")  # fmt: skip
        return name

    def veth(self, prefix: str, a: str | None, b: str | None) -> tuple[str, str]:
        """A veth pair between namespaces a and b, both ends up; returns the names of the
        ends: PREFIX, SUFFIX and "a" for the one in a, "b" for the one in b."""
        ends = (f"{prefix}{self.suffix}a", f"{prefix}{self.suffix}b")
        if len(ends[0]) > IFNAMSIZ:
            raise ValueError(f"interface name {ends[0]!r} is longer than {IFNAMSIZ} characters")
        argv = [self.ip, "link", "add", ends[0], *self._in(a), "type", "veth",
                "peer", "name", ends[1], *self._in(b)]  # fmt: skip
        in_root = [end for end, namespace in zip(ends, (a, b), strict=True) if namespace is None]
        with self._building():
            for end in in_root if self._leftovers else ():
                self._run(self.ip, "link", "del", end, check=False)
            self._run(*argv)
            self._links += in_root
        for end, namespace in zip(ends, (a, b), strict=True):
            self._run(self.ip, *self._n(namespace), "link", "set", end, "up")
        return ends

    def address(self, namespace: str | None, interface: str, *cidrs: str) -> None:
        """Add addresses (`10.0.0.1/24`, `fd00::1/64`) to an interface."""
        for cidr in cidrs:
            # No duplicate address detection: an IPv6 address is usable at once, not
            # "tentative" for a second or two.
            nodad = ("nodad",) if ipaddress.ip_interface(cidr).version == 6 else ()
            self._run(self.ip, *self._n(namespace), "addr", "add", cidr, "dev", interface, *nodad)

    def route(self, namespace: str | None, *spec: str) -> None:
        """`ip route add SPEC...` in a namespace (`"default", "via", "10.0.0.1"`). A route
        in the root namespace is deleted on close; one in a namespace goes with it."""
        if namespace is not None:
            self._run(self.ip, "-n", namespace, "route", "add", *spec)
            return
        with self._building():
            if self._leftovers:
                self._run(self.ip, "route", "del", *spec, check=False)
            self._run(self.ip, "route", "add", *spec)
            self._routes.append(spec)

    def run(self, namespace: str, *argv: str, stdin: str | None = None) -> str:
        """Run a program in a namespace (`nft -f -` with the rules on stdin); its stdout."""
        return self._run(*self.exec(namespace, *argv), stdin=stdin)

    def exec(self, namespace: str, *argv: str) -> list[str]:
        """The command line that runs argv in a namespace (for a long-running process)."""
        return [self.ip, "netns", "exec", namespace, *argv]

    # --- tearing down -------------------------------------------------------------------

    def close(self) -> None:
        """Delete everything made, in reverse; idempotent, and never raises for a part that
        is already gone. Root-namespace ends go first: deleting a namespace deletes its
        veth pairs only once the last process in it has gone."""
        with self._lock:
            self._closed = True
            for spec in reversed(self._routes):
                self._run(self.ip, "route", "del", *spec, check=False)
            for link in reversed(self._links):
                self._run(self.ip, "link", "del", link, check=False)
            for name in reversed(self._namespaces):
                self._run(self.ip, "netns", "del", name, check=False)
            self._routes, self._links, self._namespaces = [], [], []

    def __enter__(self) -> Namespaces:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- helpers ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _building(self) -> Iterator[None]:
        """One step that records what it makes: not while close() runs, nor after it."""
        with self._lock:
            if self._closed:
                raise NamespaceError("the namespaces have been deleted already")
            yield

    @staticmethod
    def _n(namespace: str | None) -> tuple[str, ...]:
        return () if namespace is None else ("-n", namespace)

    @staticmethod
    def _in(namespace: str | None) -> tuple[str, ...]:
        return () if namespace is None else ("netns", namespace)

    def _run(self, *argv: str, stdin: str | None = None, check: bool = True) -> str:
        try:
            done = subprocess.run(
                argv, input=stdin, capture_output=True, text=True, timeout=TIMEOUT
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            if not check:
                return ""
            raise NamespaceError(f"{shlex.join(argv)} failed: {exc}") from exc
        if check and done.returncode != 0:
            raise NamespaceError(f"{shlex.join(argv)} failed: {done.stderr.strip()}")
        return done.stdout
