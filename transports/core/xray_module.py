"""Xray from a Python module: PyPI's `xray-core` wheel ships Xray-core built into an
extension module (`import xray`; `xray.startFromJSON(text)` starts Xray with a JSON config
and blocks until the process gets SIGTERM or SIGINT). This module gives it the command line
detour runs a core with, so it is run like an `xray` program:

    python -m transports.core.xray_module version          Xray 26.10.10 (Python module ...)
    python -m transports.core.xray_module run -c FILE      runs FILE until SIGTERM/SIGINT
    python -m transports.core.xray_module run -test -c FILE
                                                           Configuration OK. (or a non-zero exit)

What differs from an xray release, because the module exposes nothing else:

- `version`: the module does not export Xray's version, so the launcher starts Xray with an
  empty config and reads the version from its "Xray X.Y.Z started" log line.
- a config Xray rejects makes the process exit with status 23 without a word (the module
  drops the reason); one that cannot start (a port in use) exits with status 255. The
  launcher checks the JSON itself first, so a syntax error is named.
- `run -test` starts the config (its inbounds moved to free loopback ports, its log to
  the launcher) and stops it once it has started: a config that starts is OK.
- `run` with stdin a pipe ends when the pipe is closed (detour closes it to stop a core,
  and it closes when detour dies), so the core never outlives detour.

The module is found by `hasattr(xray, "startFromJSON")`: another PyPI package called xray
(unrelated, for labelled arrays) must not be taken for it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import queue
import re
import signal
import socket
import stat
import sys
import threading
import time
from types import ModuleType
from typing import Any

__all__ = ["DISTRIBUTION", "MODULE", "load", "main"]

DISTRIBUTION = "xray-core"
MODULE = "xray"
_START_TIMEOUT = 8.0  # within the 10 s detour gives `version` (programs.py)
_STARTED = re.compile(rb"Xray (\d+(?:\.\d+)+) started")


def load() -> ModuleType:
    """The xray-core extension module; RuntimeError when it is missing or another one."""
    try:
        module = importlib.import_module(MODULE)
    except ImportError as exc:
        raise RuntimeError(
            f"the Python module xray is not installed (pip install {DISTRIBUTION}): {exc}"
        ) from None
    if not callable(getattr(module, "startFromJSON", None)):
        raise RuntimeError(
            f"the Python module xray at {getattr(module, '__file__', '?')} is not Xray-core "
            f"(it has no startFromJSON; pip install {DISTRIBUTION})"
        )
    return module


def _wheel_version() -> str:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _fail(message: str, status: int) -> int:
    print(f"Failed to start: {message}", file=sys.stderr, flush=True)
    return status


def _read_config(path: str) -> tuple[str, dict[str, Any]] | str:
    """The config's text and document, or why it cannot be read."""
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    except UnicodeDecodeError:
        return f"{path} is not UTF-8 text"
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"{path} is not JSON: {exc}"
    if not isinstance(document, dict):
        return f"{path} is not a JSON object"
    return text, document


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start_and_see(module: ModuleType, document: dict[str, Any]) -> str | None:
    """Start Xray with `document` in a thread, its log on a pipe, and wait for its "started"
    line: Xray's version, or None when it did not start in time. A config it rejects ends
    the process (status 23) from inside the module."""
    document = dict(document, log={"loglevel": "warning"})
    reading, writing = os.pipe()
    # Xray logs to the process's stdout (fd 1); keep ours for the answer.
    kept = os.dup(1)
    sys.stdout.flush()
    os.dup2(writing, 1)
    os.close(writing)
    sys.stdout = os.fdopen(kept, "w", encoding="utf-8", closefd=False)
    chunks: queue.Queue[bytes] = queue.Queue()

    def read() -> None:  # a thread, not select(): Windows cannot select on a pipe
        while chunk := os.read(reading, 65536):
            chunks.put(chunk)
        chunks.put(b"")

    threading.Thread(target=read, daemon=True, name="log").start()
    text = json.dumps(document)
    threading.Thread(target=module.startFromJSON, args=(text,), daemon=True).start()
    seen = b""
    deadline = time.monotonic() + _START_TIMEOUT
    while (left := deadline - time.monotonic()) > 0:
        try:
            chunk = chunks.get(timeout=left)
        except queue.Empty:
            break
        if not chunk:
            break
        seen = (seen + chunk)[-4096:]
        found = _STARTED.search(seen)
        if found:
            return found.group(1).decode()
    return None


def _version(module: ModuleType) -> int:
    version = _start_and_see(module, {"inbounds": [], "outbounds": [{"protocol": "freedom"}]})
    if version is None:
        return _fail(f"Xray from the Python module {MODULE} did not start", 1)
    print(
        f"Xray {version} (from the Python module {MODULE} of {DISTRIBUTION} "
        f"{_wheel_version()}, {os.path.dirname(module.__file__ or '')})",
        flush=True,
    )
    return 0


def _test(module: ModuleType, document: dict[str, Any]) -> int:
    inbounds = []
    for inbound in document.get("inbounds") or []:
        if isinstance(inbound, dict):
            inbound = dict(inbound, listen="127.0.0.1", port=_free_port())
        inbounds.append(inbound)
    if _start_and_see(module, dict(document, inbounds=inbounds)) is None:
        return _fail(f"Xray did not start within {_START_TIMEOUT:g} s", 1)
    print("Configuration OK.", flush=True)
    return 0


def _end_with_stdin() -> None:
    """Stop (as on SIGTERM) when stdin, a pipe from the parent, is closed."""
    try:
        if not stat.S_ISFIFO(os.fstat(0).st_mode):
            return
    except OSError:
        return

    def wait() -> None:
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=wait, daemon=True, name="stdin").start()


def _run(module: ModuleType, text: str) -> int:
    _end_with_stdin()
    module.startFromJSON(text)  # returns after SIGTERM or SIGINT
    return 0


_USAGE = "usage: python -m transports.core.xray_module (version | run [-test] -c FILE)"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args.pop(0) if args else ""
    if command in ("version", "-version"):
        if args:
            return _fail(_USAGE, 2)
        try:
            module = load()
        except RuntimeError as exc:
            return _fail(str(exc), 1)
        return _version(module)
    if command != "run":
        return _fail(_USAGE, 2)
    testing = "-test" in args
    args = [arg for arg in args if arg != "-test"]
    if len(args) != 2 or args[0] not in ("-c", "-config"):
        return _fail(_USAGE, 2)
    read = _read_config(args[1])
    if isinstance(read, str):
        return _fail(read, 23)
    text, document = read
    try:
        module = load()
    except RuntimeError as exc:
        return _fail(str(exc), 1)
    if testing:
        return _test(module, document)
    return _run(module, text)


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # The Go runtime's threads are still there after a test or `version`: leave at once.
    os._exit(status)
