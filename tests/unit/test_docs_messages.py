"""The messages README.md's "If nothing works" tells people to act on: a listener that cannot
start says what to do about it (helper/headless.py start_problem); a command a message
suggests is one that parses."""

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


def test_relay_keygen_suggests_a_command_that_parses(tmp_path, capsys) -> None:
    import shlex
    from pathlib import Path

    from helper.cli import build_parser
    from helper.relay.run import keygen

    example = Path(__file__).resolve().parents[2] / "config" / "examples" / "relay.toml"
    text = example.read_text(encoding="utf-8").replace("/var/lib/detour-relay", str(tmp_path / "s"))
    path = tmp_path / "relay.toml"
    path.write_text(text, encoding="utf-8")
    assert keygen(str(path), force=False) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "next:" in x)
    words = shlex.split(line.split("next:", 1)[1])
    assert words[0] == "detour"
    args = build_parser().parse_args([w if w != "NAME" else "alice" for w in words[1:]])
    assert (args.relay_config, args.relay_command, args.name) == (str(path), "add-client", "alice")
