"""Whether this computer can run a link: a core is installed, it can do the link, and it
accepts the config detour would give it (its own test mode). For `detour config check`,
which says so before anything runs; dials ask the same (without the test run)."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from ..base import DialError
from ..children import TextLines
from .generate import Inbound, core_config
from .programs import cannot, find_core
from .spec import CoreLink

__all__ = ["check_link", "which_core"]

_TEST_TIMEOUT = 15.0


def which_core(program: str | None = None) -> str:
    """The core vless/vmess/trojan routes run, and from where (`xray 26.10.10 at
    /usr/local/bin/xray`), or why there is none: for `config check`."""
    try:
        return find_core(program).origin
    except DialError as exc:
        return f"none ({exc.detail})"


def check_link(link: CoreLink, program: str | None = None, *, run_test: bool = True) -> str | None:
    """Why `link` cannot run here (one sentence), or None when it can."""
    try:
        core = find_core(program)
    except DialError as exc:
        return exc.detail
    reason = cannot(core, link)
    if reason is not None:
        return reason
    if not run_test:
        return None
    with tempfile.TemporaryDirectory(prefix="detour-core-check-") as directory:
        path = Path(directory) / "config.json"
        path.write_text(core_config(core, link, Inbound(1080, "check", "check")))
        path.chmod(0o600)
        try:
            done = subprocess.run(
                core.test_argv(str(path)),
                capture_output=True,
                timeout=_TEST_TIMEOUT,
                stdin=subprocess.DEVNULL,
                cwd=directory,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return f"{core.label} did not finish checking its config within {_TEST_TIMEOUT:g} s"
        except OSError as exc:
            return f"cannot run {core.path}: {exc.strerror or exc}"
    if done.returncode != 0:
        lines = TextLines().feed(done.stdout + b"\n" + done.stderr + b"\n")
        said = " / ".join(lines[-3:]) or f"exit status {done.returncode}"
        if not lines and core.command and done.returncode == 23:
            said += " (a config error; the Python module does not say which)"
        return f"{core.label} rejects the config detour generates for this link: {said}"
    return None
