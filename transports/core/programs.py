"""Which proxy core is installed, its version, and what it can do.

detour looks for xray, sing-box and v2ray on PATH, in that order (the first does the most),
then for Xray in a Python module (PyPI's xray-core, run by xray_module.py with this
Python), unless a program is named (`[core] program`: a name, a path, or `python:xray` for
the module). The program is asked for its version once (`-version`, then `version`), and
the answer decides:

    core       protocols             transports                         TLS extras
    xray       vless vmess trojan    tcp ws grpc httpupgrade xhttp h2   uTLS fp, REALITY, vision
    sing-box   vless vmess trojan    tcp ws grpc httpupgrade h2         uTLS fp, REALITY (builds
                                                                        with with_utls), vision
    v2ray 5    vless vmess trojan    tcp ws grpc httpupgrade h2         -
    v2ray 4    vless vmess trojan    tcp ws h2 (grpc from 4.36)         -

`cannot(core, link)` says, in a sentence, why a core cannot do a link; `config check` and
every dial ask it before anything runs.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

from ..base import DialError, Failure, Op
from . import xray_module
from .spec import CoreLink

__all__ = ["CORE_NAMES", "MODULE_PROGRAM", "CoreProgram", "cannot", "find_core", "identify"]

CORE_NAMES = ("xray", "sing-box", "v2ray")
#: `[core] program` naming Xray in the Python module (xray_module.py).
MODULE_PROGRAM = "python:xray"
_VERSION_TIMEOUT = 10.0  # the module's answer starts Xray once
_INSTALL = (
    "install xray or sing-box (they can do every link kind), or Debian's v2ray package, or "
    "Xray as a Python module (pip install xray-core, or detour[xray]), or name the program "
    "in [core] program"
)


@dataclass(frozen=True)
class CoreProgram:
    kind: str  # xray | sing-box | v2ray
    path: str
    version: tuple[int, ...]
    tags: frozenset[str] = field(default_factory=frozenset)  # sing-box build tags
    # How it is run when that is not `path` itself: Xray in a Python module is run by this
    # Python with xray_module.py (`path` is then the module's directory).
    command: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.kind} {'.'.join(map(str, self.version))}"

    @property
    def origin(self) -> str:
        """Which program this is, and from where, for `config check` and messages."""
        if self.command:
            return f"{self.label} from the Python module {self.path} ({MODULE_PROGRAM})"
        return f"{self.label} at {self.path}"

    def run_argv(self, config: str) -> list[str]:
        start = list(self.command or (self.path,))
        if self.kind == "v2ray" and self.version < (5,):
            return [*start, "-config", config]
        return [*start, "run", "-c", config]

    def test_argv(self, config: str) -> list[str]:
        start = list(self.command or (self.path,))
        if self.kind == "sing-box":
            return [*start, "check", "-c", config]
        if self.kind == "v2ray" and self.version < (5,):
            return [*start, "-test", "-config", config]
        if self.kind == "v2ray":
            return [*start, "test", "-c", config]
        return [*start, "run", "-test", "-c", config]


_IDENTITIES = (
    (re.compile(r"^Xray (\d+(?:\.\d+)*)", re.M), "xray"),
    (re.compile(r"^sing-box version (\d+(?:\.\d+)*)", re.M), "sing-box"),
    (re.compile(r"^V2Ray (\d+(?:\.\d+)*)", re.M), "v2ray"),
)


def identify(path: str, output: str) -> CoreProgram | None:
    """A core from what `PROGRAM version` printed, or None when it is none of them."""
    for pattern, kind in _IDENTITIES:
        match = pattern.search(output)
        if match:
            version = tuple(int(part) for part in match.group(1).split("."))
            tags: frozenset[str] = frozenset()
            if kind == "sing-box":
                found = re.search(r"^Tags: (.*)$", output, re.M)
                if found:
                    tags = frozenset(t.strip() for t in found.group(1).split(",") if t.strip())
            return CoreProgram(kind, path, version, tags)
    return None


_cache: dict[tuple[str, float], CoreProgram | None] = {}


def _ask(path: str, command: tuple[str, ...] = ()) -> CoreProgram | None:
    try:
        stamp = os.stat(path).st_mtime
    except OSError:
        return None
    if (path, stamp) in _cache:
        return _cache[(path, stamp)]
    found = None
    # v2ray 4 knows only `-version` (a bare `version` would start it); the others know
    # `version`, and xray both.
    for flag in ("version",) if command else ("-version", "version"):
        try:
            done = subprocess.run(
                [*(command or (path,)), flag],
                capture_output=True,
                text=True,
                errors="replace",
                timeout=_VERSION_TIMEOUT,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        found = identify(path, done.stdout + done.stderr)
        if found is not None:
            if command:
                found = CoreProgram(found.kind, path, found.version, found.tags, command)
            break
    _cache[(path, stamp)] = found
    return found


def module_core() -> CoreProgram | None:
    """Xray in the Python module (PyPI's xray-core) that this Python can import, run by
    xray_module.py; None when there is none (or the module named xray is another one)."""
    try:
        spec = importlib.util.find_spec(xray_module.MODULE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    directory = os.path.dirname(spec.origin)
    command = (sys.executable, "-P", os.path.abspath(xray_module.__file__))
    return _ask(directory, command)


def find_core(program: str | None = None, path: str | None = None) -> CoreProgram:
    """The core to run: `program` (a name on PATH or a path) or the first known core on
    PATH. DialError(core_not_installed) says what to install."""
    if program == MODULE_PROGRAM:
        core = module_core()
        if core is None:
            raise DialError(
                Failure.CORE_NOT_INSTALLED,
                Op.CONNECT,
                f"[core] program {MODULE_PROGRAM}: this Python ({sys.executable}) has no Xray "
                "module; pip install xray-core (or detour[xray])",
            )
        return core
    if program:
        if os.sep in program:
            located: str | None = os.path.abspath(program)
        else:
            located = shutil.which(program, path=path)
        if located is None or not os.path.isfile(located):
            raise DialError(
                Failure.CORE_NOT_INSTALLED,
                Op.CONNECT,
                f"the core program {program} is not installed (not found); {_INSTALL}",
            )
        if not os.access(located, os.X_OK):
            raise DialError(Failure.CORE_NOT_INSTALLED, Op.CONNECT, f"{located} is not executable")
        core = _ask(located)
        if core is None:
            raise DialError(
                Failure.CORE_FAILED,
                Op.CONNECT,
                f"{located} is not a core detour knows (its version output names none of "
                f"{', '.join(CORE_NAMES)})",
            )
        return core
    for name in CORE_NAMES:
        located = shutil.which(name, path=path)
        if located is not None:
            core = _ask(located)
            if core is not None:
                return core
    core = module_core()
    if core is not None:
        return core
    raise DialError(
        Failure.CORE_NOT_INSTALLED,
        Op.CONNECT,
        f"no proxy core for vless/vmess/trojan links: none of {', '.join(CORE_NAMES)} is on "
        f"PATH and this Python has no Xray module; {_INSTALL}",
    )


def cannot(core: CoreProgram, link: CoreLink) -> str | None:
    """Why `core` cannot do `link`, in a sentence; None when it can."""
    kind, version = core.kind, core.version
    label = core.label
    if kind == "xray":
        return None
    if link.network == "xhttp":
        return f"{label} has no xhttp transport (xray has)"
    if kind == "sing-box":
        utls = "with_utls" in core.tags
        if link.security == "reality" and not utls:
            return f"this {label} was built without with_utls, which REALITY needs"
        if link.fingerprint and not utls:
            return f"this {label} was built without with_utls, which fp= (uTLS) needs"
        if link.header_type == "http":
            return f"{label} has no HTTP camouflage for tcp (headerType=http)"
        return None
    # v2ray
    if link.security == "reality":
        return f"{label} has no REALITY (xray or sing-box have)"
    if link.flow:
        return f"{label} has no {link.flow} flow (xray or sing-box have)"
    if link.fingerprint:
        return f"{label} cannot imitate a browser's TLS (fp=); xray or sing-box can"
    if link.network == "grpc" and version < (4, 36):
        return f"{label} has no grpc transport (v2ray has it from 4.36)"
    if link.network == "httpupgrade" and version < (5, 10):
        return f"{label} has no httpupgrade transport (v2ray has it from 5.10)"
    return None
