"""`[core]`: the proxy core detour runs for vless://, vmess:// and trojan:// routes
(docs/cores.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .schema import setting
from .values import string


def core_program(value: Any) -> str:
    text = string(value).strip()
    if "\0" in text:
        raise ValueError("a program name or path cannot hold NUL")
    return text


@dataclass(frozen=True)
class CoreConfig:
    program: str = setting(
        "",
        core_program,
        "The proxy core for vless, vmess and trojan routes: a program name on `PATH` or a "
        'path, e.g. `"/usr/local/bin/xray"`, or `"python:xray"` for Xray in the Python module '
        "of PyPI's `xray-core`. Empty: the first of `xray`, `sing-box`, `v2ray` on `PATH`, "
        "else that module (docs/cores.md says what each can do).",
    )
