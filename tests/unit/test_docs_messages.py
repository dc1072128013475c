"""The messages README.md's "If nothing works" tells people to act on: a listener that cannot
start says what to do about it (helper/headless.py start_problem)."""

from __future__ import annotations

import errno

from helper.headless import start_problem


def test_port_in_use_says_what_to_do() -> None:
    exc = OSError(errno.EADDRINUSE, "listen.mixed 127.0.0.1:1080: Address already in use")
    text = start_problem(exc)
    assert text.startswith("listen.mixed 127.0.0.1:1080: Address already in use (")
    assert "another detour" in text
    assert "--listen 127.0.0.1:1081" in text


def test_other_listeners_are_not_told_of_listen() -> None:
    exc = OSError(errno.EADDRINUSE, "status API on 127.0.0.1:9090: Address already in use")
    text = start_problem(exc)
    assert "choose another port" in text
    assert "--listen" not in text


def test_privileged_port_and_foreign_address() -> None:
    denied = OSError(errno.EACCES, "listen.mixed 0.0.0.0:80: Permission denied")
    assert "below 1024" in start_problem(denied)
    foreign = OSError(errno.EADDRNOTAVAIL, "listen.mixed 192.0.2.1:1080: Cannot assign")
    assert "no interface" in start_problem(foreign)


def test_other_errors_are_left_as_they_are() -> None:
    assert start_problem(OSError(errno.EMFILE, "Too many open files")) == "Too many open files"
    assert start_problem(OSError("no errno")) == "no errno"
