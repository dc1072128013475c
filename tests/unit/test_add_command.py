"""`detour add` (helper/add_command.py) and the link recogniser under it
(transports/links.recognise_link): every kind of link is recognised and shown without its
secret; each public example of the formats round-trips through the config file; bad links
and names get one line; the file keeps its comments and layout, and only grows."""

from __future__ import annotations

import base64
import os
import tomllib
from pathlib import Path

import pytest

from helper.add_command import AddError, plan_addition, toml_string, write_atomically
from helper.cli import main
from helper.config import load_config
from transports import parse_chain
from transports.links import LinkError, recognise_link

from .test_links import EXAMPLES, UUID

CERT = "ssH+9rP8dG2NLDN2XuFw63hIO/9MNNinLmxQDpVa+7kTOa9/m+tGWT1SmSYpQ9uTBGa6Hw"
USER_FILE = """\
# my detour
[listen]
mixed = "127.0.0.1:1090"   # the phone's port

[[route]]
name = "my-tor"   # mine
chain = "socks5://127.0.0.1:9050"
"""

# (pasted text, kind, a secret that must never show, suggested name)
OTHER_KINDS = [
    ("socks5://alice:TOPSECRET@10.0.0.2:1080", "socks5", "TOPSECRET", "socks5-10.0.0.2"),
    ("socks5h://10.0.0.2:1080", "socks5", "\0", "socks5-10.0.0.2"),
    ("socks4://10.0.0.2:1080", "socks4a", "\0", "socks4a-10.0.0.2"),
    ("socks4a://me@10.0.0.2:1080", "socks4a", "\0", "socks4a-10.0.0.2"),
    ("http://bob:TOPSECRET@proxy.example:3128", "http", "TOPSECRET", "http-proxy.example"),
    (
        "tg://socks?server=10.0.0.3&port=1080&user=u&pass=TOPSECRET",
        "socks5",
        "TOPSECRET",
        "tg-socks-10.0.0.3",
    ),
    ("https://t.me/socks?server=10.0.0.3&port=1080", "socks5", "\0", "tg-socks-10.0.0.3"),
    (
        f"obfs4 192.0.2.3:443 cert={CERT} iat-mode=0 | socks5://127.0.0.1:1080",
        "bridge",
        CERT[:20],
        "bridge-obfs4",
    ),
    (
        f"Bridge obfs4 192.0.2.3:443 cert={CERT} iat-mode=0 | socks5://127.0.0.1:1080",
        "bridge",
        "192.0.2.3",
        "bridge-obfs4",
    ),
    (
        "webtunnel 192.0.2.4:443 url=https://w.example/TOPSECRET | socks5://127.0.0.1:1080",
        "bridge",
        "TOPSECRET",
        "bridge-webtunnel",
    ),
]


def access_key() -> str:
    from transports.base import Endpoint
    from transports.fronted.accesskey import AccessKey

    key = AccessKey(
        Endpoint("cdn.example", 443),
        "cdn.example",
        "relay.example",
        "/p",
        "00" * 32,
        "me",
        token=b"TOPSECRETTOKEN",
        cert=b"certificate",
        key=b"private key",
    )
    return key.encode()


@pytest.mark.parametrize(("link", "layer", "shown", "secret"), EXAMPLES)
def test_every_public_example_is_recognised_and_round_trips_through_a_file(
    tmp_path: Path, link: str, layer: str, shown: str, secret: str
) -> None:
    found = recognise_link(link)
    assert found.kind == layer
    assert shown in found.shown
    assert secret not in found.shown and secret not in repr(found)
    path = tmp_path / "detour.toml"
    addition = plan_addition(USER_FILE, path, link, name="mine")
    assert addition.text.startswith(USER_FILE)  # the file only grows
    assert secret not in addition.shown_block
    path.write_text(addition.text)
    config = load_config(path)
    route = next(r for r in config.routes if r.name == "mine")
    assert route.chain.layers[-1].params == parse_chain(link).layers[-1].params


@pytest.mark.parametrize(("link", "kind", "secret", "name"), OTHER_KINDS)
def test_the_other_kinds_are_recognised_and_hidden(
    tmp_path: Path, link: str, kind: str, secret: str, name: str
) -> None:
    found = recognise_link(link)
    assert (found.kind, found.name) == (kind, name)
    assert secret not in found.shown and secret not in repr(found)
    addition = plan_addition("", tmp_path / "d.toml", link)
    assert secret not in addition.shown_block
    data = tomllib.loads(addition.text)
    assert data["route"][0]["name"] == name


def test_a_relay_access_key_is_a_front_route(tmp_path: Path) -> None:
    key = access_key()
    for text in (key, "front:" + key):
        found = recognise_link(text)
        assert found.kind == "relay" and found.chain == "front:" + key
        assert key[5:] not in found.shown and "TOPSECRET" not in found.shown
        assert key[5:] not in plan_addition("", tmp_path / "d.toml", text).shown_block


def test_a_subscription_url_is_recognised_with_its_path_hidden() -> None:
    found = recognise_link("https://panel.example/api/sub/TOPSECRET?flag=1#My subs")
    assert found.kind == "subscription" and found.name == "My-subs"
    assert found.url == "https://panel.example/api/sub/TOPSECRET?flag=1"
    assert "TOPSECRET" not in found.shown and found.chain == ""


@pytest.mark.parametrize(
    ("link", "message"),
    [
        ("", "the link is empty"),
        ("hello", "not a link detour reads"),
        ("gopher://x:1", "gopher:// is not a kind of link"),
        ("ss://!!!notbase64@example.com:8388", "ss: the user info is not base64"),
        ("ss://YWVzLTI1Ni1nY206cHc@example.com", "ss: the port is missing"),
        ("ss://YWVzLTk5OS1nY206cHc@example.com:1", "unknown cipher"),
        (f"vless://{UUID}@example.com", "vless: the port is missing"),
        ("socks5://10.0.0.2", "missing proxy port"),
        ("http://example.com/sub", "use its https:// URL"),
        ("https://proxy.example:8443", "HTTPS proxy"),
        ("tg://proxy?server=x.example&port=443&secret=dd00", "is no proxy secret"),
        ("https://t.me/proxy?server=x.example&port=443&secret=dd00", "is no proxy secret"),
        ("tg://socks?server=x.example", "the port is missing"),
        ("tg://socks?port=1", "names no server"),
        ("tg://resolve?domain=x", "not a proxy link"),
        (f"obfs4 192.0.2.3:443 cert={CERT} iat-mode=0", "add the proxy behind it"),
        ("obfs4 | socks5://127.0.0.1:1", "obfs4:"),
        ("dtr1:AAAA", "relay access key"),
        ("ss://a\nss://b", "several lines"),
        ("x" * 9000, "longer than 8192"),
    ],
)
def test_bad_links_get_one_line_naming_the_problem(link: str, message: str) -> None:
    with pytest.raises(LinkError) as caught:
        recognise_link(link)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert "dd00" not in str(caught.value) and "cert=" not in str(caught.value)


def test_the_file_keeps_its_comments_and_gets_a_block_at_the_end(tmp_path: Path) -> None:
    path = tmp_path / "detour.toml"
    link = EXAMPLES[0][0]
    addition = plan_addition(USER_FILE.rstrip("\n"), path, link)  # no newline at its end
    assert addition.text.startswith(USER_FILE)
    tail = addition.text[len(USER_FILE) :]
    assert tail == (
        '\n# ss route added by `detour add`\n[[route]]\nname = "Example1"\n'
        f"chain = {toml_string(recognise_link(link).chain)}\n"
    )


def test_a_duplicate_name_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "detour.toml"
    with pytest.raises(AddError, match="'my-tor' exists already"):
        plan_addition(USER_FILE, path, EXAMPLES[0][0], name="my-tor")
    with pytest.raises(AddError, match="'direct' exists already"):  # a built-in route's
        plan_addition(USER_FILE, path, EXAMPLES[0][0], name="direct")
    with pytest.raises(AddError, match="--name: 'bad name!'"):
        plan_addition(USER_FILE, path, EXAMPLES[0][0], name="bad name!")
    with pytest.raises(AddError, match="reserved"):
        plan_addition(USER_FILE, path, EXAMPLES[0][0], name="found-x")


def test_a_file_with_problems_is_left_alone(tmp_path: Path) -> None:
    with pytest.raises(AddError, match="has config problems already"):
        plan_addition("[listen]\nmixed = 5\n", tmp_path / "d.toml", EXAMPLES[0][0])
    with pytest.raises(AddError, match="would not fit"):
        plan_addition(
            'route = [{name = "a", chain = "direct"}]\n', tmp_path / "d.toml", EXAMPLES[0][0]
        )


def test_service_puts_the_route_first(tmp_path: Path) -> None:
    path = tmp_path / "detour.toml"
    addition = plan_addition(USER_FILE, path, EXAMPLES[0][0], service="telegram")
    path.write_text(addition.text)
    assert addition.text.startswith(USER_FILE)
    telegram = next(s for s in load_config(path).services if s.name == "telegram")
    assert telegram.routes[0] == "Example1" and len(telegram.routes) > 1
    # the file's own [[service]] with a one-line routes list: the name goes in front
    own = USER_FILE + '\n[[service]]\nname = "telegram"\nroutes = ["my-tor"]  # only Tor\n'
    addition = plan_addition(own, path, EXAMPLES[0][0], service="telegram")
    assert 'routes = ["Example1", "my-tor"]  # only Tor\n' in addition.text
    path.write_text(addition.text)
    telegram = next(s for s in load_config(path).services if s.name == "telegram")
    assert telegram.routes == ("Example1", "my-tor")
    empty = USER_FILE + '\n[[service]]\nname = "telegram"\nroutes = []\n'
    assert (
        'routes = ["Example1", "..."]\n'
        in plan_addition(empty, path, EXAMPLES[0][0], service="telegram").text
    )
    with pytest.raises(AddError, match="no service named 'nope'"):
        plan_addition(USER_FILE, path, EXAMPLES[0][0], service="nope")


def test_toml_strings_read_back_as_written() -> None:
    for text in ('a"b\\c', "tab\there", "\x00\x1f\x7f", "é✓", ""):
        assert tomllib.loads(f"k = {toml_string(text)}")["k"] == text


def test_the_write_is_atomic_keeps_the_mode_and_notices_a_change(tmp_path: Path) -> None:
    path = tmp_path / "detour.toml"
    path.write_text("a = 1\n")
    os.chmod(path, 0o640)
    write_atomically(path, "a = 2\n", "a = 1\n")
    assert path.read_text() == "a = 2\n" and path.stat().st_mode & 0o777 == 0o640
    with pytest.raises(AddError, match="changed while"):
        write_atomically(path, "a = 3\n", "a = 1\n")
    new = tmp_path / "new.toml"
    write_atomically(new, "b = 1\n", None)
    assert new.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["detour.toml", "new.toml"]


def test_a_symlinked_config_is_written_through_the_link_and_a_fifo_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real = tmp_path / "real.toml"
    real.write_text("a = 1\n")
    link = tmp_path / "link.toml"
    link.symlink_to(real.name)
    write_atomically(link, "a = 2\n", "a = 1\n")
    assert link.is_symlink() and real.read_text() == "a = 2\n"
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    with pytest.raises(AddError, match="not a regular file"):
        write_atomically(fifo, "a = 3\n", None)
    socks = "socks5://u:p@192.0.2.1:1080"
    for odd in (fifo, tmp_path):  # neither read (a FIFO would block) nor replaced
        assert main(["add", "-c", str(odd), "--no-reload", socks]) == 2
        assert "is not a regular file" in capsys.readouterr().err
    assert fifo.is_fifo() and tmp_path.is_dir()


def test_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.setenv("DETOUR_STATE_DIR", str(tmp_path / "state"))
    path = tmp_path / "detour.toml"
    path.write_text(USER_FILE)
    secret = "TOPSECRET"
    link = "ss://" + base64.urlsafe_b64encode(f"aes-256-gcm:{secret}".encode()).decode()
    link += "@203.0.113.9:8388#Home"
    assert main(["add", "-c", str(path), "--dry-run", link]) == 0
    out = capsys.readouterr().out
    assert "would add" in out and secret not in out and path.read_text() == USER_FILE
    assert main(["add", "-c", str(path), link]) == 0
    out = capsys.readouterr().out
    assert "added route 'Home'" in out and "no detour runs from" in out and secret not in out
    assert "Home" in [r.name for r in load_config(path).routes]
    assert main(["add", "-c", str(path), link]) == 2
    assert "exists already" in capsys.readouterr().err
    assert main(["add", link]) == 2
    assert "detour add -c FILE" in capsys.readouterr().err
    assert main(["add", "-c", str(path), "ss://bad"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("detour add: ss:") and err.count("\n") == 1


def test_a_subscription_url_becomes_a_subscription_table(tmp_path: Path) -> None:
    path = tmp_path / "detour.toml"
    url = "https://panel.example/api/sub/TOPSECRET"
    addition = plan_addition(USER_FILE, path, url + "#Panel", service="telegram")
    assert addition.text.startswith(USER_FILE)
    assert "TOPSECRET" not in addition.shown_block and "panel.example/***" in addition.shown_block
    path.write_text(addition.text)
    (subscription,) = load_config(path).subscriptions
    assert (subscription.name, subscription.url, subscription.services) == (
        "Panel",
        url,
        ("telegram",),
    )
    with pytest.raises(AddError, match="'Panel' exists already"):
        plan_addition(addition.text, path, url + "#Panel")
    with pytest.raises(AddError, match="'my-tor' exists already"):
        plan_addition(USER_FILE, path, url, name="my-tor")
