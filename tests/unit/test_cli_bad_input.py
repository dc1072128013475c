"""The command line and config files with odd input: one line naming the problem (the key,
the argument), never a traceback."""

from __future__ import annotations

import subprocess

import pytest

from helper.cli import main
from helper.config import ConfigError, load_config, parse_config
from tests.conftest import ROOT, detour_command


def test_a_reader_that_goes_away_ends_the_command_quietly() -> None:
    # `detour config default | head -1`: the pipe closes before the text is all written.
    process = subprocess.Popen(
        detour_command("config", "default"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    err = process.stderr.read().decode()
    assert process.wait(60) == 1
    assert "Traceback" not in err and "BrokenPipe" not in err, err


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            '[mtproto_proxy]\nsecrets = { a = "dd000102030405060708090a0b0c0d0e0f" }\n'
            'listen = "127.0.0.1:1080"\n',
            "mtproto_proxy.listen: port 1080 on 127.0.0.1 is also listen.mixed's",
        ),
        ('[api]\nlisten = "127.0.0.1:1080"\n', "api.listen: port 1080 on 127.0.0.1 is also"),
        (
            '[listen]\nmixed = "0.0.0.0:9000"\nallow = ["192.168.1.0/24"]\n'
            '[api]\nlisten = "127.0.0.1:9000"\n',
            "api.listen: port 9000 on 127.0.0.1 is also listen.mixed's",
        ),
        (
            '[whatsapp_proxy]\nlisten = "localhost"\ntls_port = 1080\n',
            "whatsapp_proxy.tls_port: port 1080 on 127.0.0.1 is also listen.mixed's",
        ),
        (
            '[listen]\ntransparent = "127.0.0.1:1080"\n',
            "listen.transparent: port 1080 on 127.0.0.1 is also listen.mixed's",
        ),
    ],
)
def test_two_listeners_on_one_address_are_a_config_problem_naming_both(
    text: str, says: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "test.toml", below=load_config(None))
    assert any(says in problem for problem in caught.value.problems), caught.value.problems


@pytest.mark.parametrize(
    "text",
    [
        '[api]\nlisten = "127.0.0.1:0"\n[listen]\nmixed = "127.0.0.1:0"\n',  # any free port
        '[api]\nlisten = "127.0.0.2:1080"\n',  # another address
        '[api]\nlisten = "[::1]:1080"\n',  # another family
    ],
)
def test_listeners_apart_are_fine(text: str) -> None:
    parse_config(text, "test.toml", below=load_config(None))


def test_a_route_listed_twice_for_a_service_is_named() -> None:
    text = (
        '[[service]]\nname = "s"\ndomains = ["a.example"]\nroutes = ["direct", "doh", "direct"]\n'
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "test.toml", below=load_config(None))
    assert caught.value.problems == ["service[0].routes[2]: route 'direct' is listed twice"]


def test_a_subscription_url_without_a_host_says_so() -> None:
    text = '[[subscription]]\nname = "p"\nurl = "https:///list"\n'
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "test.toml", below=load_config(None))
    assert caught.value.problems == [
        "subscription[0].url: the URL names no host (https://HOST/PATH)"
    ]


def test_a_file_name_too_long_is_a_problem_naming_the_key() -> None:
    name = "x" * 5000
    text = f'[whatsapp_proxy]\nlisten = "127.0.0.1"\ncertificate = "{name}"\nkey = "{name}"\n'
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "test.toml", below=load_config(None))
    problems = caught.value.problems
    assert any(p.startswith("whatsapp_proxy.certificate: ") for p in problems), problems
    assert all("File name too long" in p for p in problems), problems


def test_a_config_name_too_long_for_detour_add_is_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["add", "-c", "x" * 5000, "--no-reload", "socks5://192.0.2.1:1080"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("detour add: cannot write x") and err.count("\n") == 1


@pytest.mark.parametrize("command", ["config", "mtproto"])
def test_a_command_without_its_action_is_a_usage_error(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """As argparse's other usage errors: exit 2, the usage and the error on stderr."""
    with pytest.raises(SystemExit) as caught:
        main([command])
    assert caught.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"usage: detour {command} ") and "error:" in err and "ACTION" in err


@pytest.mark.parametrize("name", ["x" * 5000, "not-text.toml"])
def test_a_lab_scenario_that_cannot_be_read_is_a_config_error(tmp_path, name: str) -> None:
    from helper.lab.scenario import load_scenario

    path = tmp_path / "not-text.toml"
    path.write_bytes(b"\x8a\xff garbage")
    with pytest.raises(ConfigError):
        load_scenario(str(path) if name == "not-text.toml" else name)


def test_a_user_name_with_a_colon_is_refused() -> None:
    text = '[listen]\nusers = [{ name = "a:b", password = "secret" }]\n'
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "test.toml", below=load_config(None))
    assert caught.value.problems == [
        "listen.users[0].name: a ':' in a user name makes HTTP proxy logins fail; drop it"
    ]


@pytest.mark.parametrize(
    ("what", "says"),
    [
        ("a directory", "is a directory, not a config file"),
        ("an empty name", "the config file's name is empty"),
        ("endless bytes", "larger than 4 MiB: not a config file"),
        ("binary", "not UTF-8 text (byte 0x8a on line 1): not a TOML config file"),
        ("wrong type", "listen.mixed: expected"),
    ],
)
def test_a_config_file_that_is_no_config_is_one_problem(
    tmp_path, what: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`config check`, `run` and `probe` read the file alike (helper/config/load.py): one
    problem naming why, exit 2, never a traceback or a memory filled by /dev/zero."""
    path = {
        "a directory": str(tmp_path),
        "an empty name": "",
        "endless bytes": "/dev/zero",
        "binary": str(tmp_path / "binary.toml"),
        "wrong type": str(tmp_path / "type.toml"),
    }[what]
    (tmp_path / "binary.toml").write_bytes(b"\x8a\xff garbage")
    (tmp_path / "type.toml").write_text("[listen]\nmixed = 1080\n")
    for argv in (["config", "check", path], ["-c", path, "probe", "--json"]):
        assert main(argv) == 2, argv
        out, err = capsys.readouterr()
        assert out == "" and f"\n  {says}" in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b'\xef\xbb\xbf[listen]\nmixed = "127.0.0.1:1081"\n', id="bom"),
        pytest.param(b'[listen]\r\nmixed = "127.0.0.1:1081"\r\n', id="crlf"),
    ],
)
def test_an_empty_a_bom_or_a_crlf_config_is_read(tmp_path, data: bytes) -> None:
    """A byte order mark (Notepad writes one) and CRLF line ends are read as TOML, and
    `detour add` adds to such a file."""
    path = tmp_path / "c.toml"
    path.write_bytes(data)
    config = load_config(str(path))
    assert str(config.listen.mixed) == ("127.0.0.1:1080" if not data else "127.0.0.1:1081")
    argv = ["add", "-c", str(path), "--no-reload", "socks5://192.0.2.1:1080"]
    assert main(argv) == 0
    assert "socks5-192.0.2.1" in [route.name for route in load_config(str(path)).routes]
