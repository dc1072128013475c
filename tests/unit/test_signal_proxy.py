"""The Signal proxy's pieces without sockets: the inner-ClientHello reader (transports/
tlsfrag.py), the links, and the `[signal_proxy]` section."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from helper.config import SIGNAL_HOSTS, ConfigError, parse_config
from helper.config.signal_proxy import certificate_covers
from helper.lab.ca import LabCA
from helper.proxy.signal import links
from tests.support.tls import client_hello, openssl_client_hello, record
from transports.tlsfrag import read_client_hello, server_name

HELLO = client_hello(b"chat.signal.org")


def records(message: bytes, cuts: list[int]) -> bytes:
    points = [0, *cuts, len(message)]
    return b"".join(record(message[a:b]) for a, b in itertools.pairwise(points))


def test_one_record() -> None:
    read = read_client_hello(record(HELLO) + b"after")
    assert (read.state, read.message, read.used) == ("complete", HELLO, 5 + len(HELLO))
    assert server_name(read.message) == "chat.signal.org"


def test_an_openssl_hello() -> None:
    read = read_client_hello(openssl_client_hello("cdsi.signal.org"))
    assert read.state == "complete" and server_name(read.message) == "cdsi.signal.org"


@pytest.mark.parametrize("cuts", [[1], [2, 3], [4], [10, 50], list(range(1, 60))])
def test_a_hello_over_several_records(cuts: list[int]) -> None:
    data = records(HELLO, cuts)
    read = read_client_hello(data)
    assert (read.state, read.message, read.used) == ("complete", HELLO, len(data))
    for end in range(len(data)):  # every prefix waits for more
        assert read_client_hello(data[:end]).state == "incomplete"


@pytest.mark.parametrize(
    ("data", "state"),
    [
        (b"GET / HTTP/1.1\r\n", "not-tls"),
        (b"\x17\x03\x03\x00\x10", "not-tls"),
        (b"\x16\x02", "not-tls"),
        (b"\x16\x03\x01\x00\x00", "malformed"),  # an empty handshake fragment
        (b"\x16\x03\x01\x40\x01", "malformed"),  # over 2^14
        (record(b"\x02" + HELLO[1:]), "malformed"),  # a ServerHello
        (record(HELLO + b"\x14\x00\x00\x00"), "malformed"),  # another message in its record
        (record(HELLO[:10]) + b"\x17\x03\x03\x00\x01x", "malformed"),  # then not handshake
    ],
)
def test_what_is_not_one_client_hello(data: bytes, state: str) -> None:
    assert read_client_hello(data).state == state


def test_an_oversized_hello_is_refused_before_it_arrives() -> None:
    big = client_hello(b"chat.signal.org", b"\x00\x15" + (5000).to_bytes(2, "big") + bytes(5000))
    assert read_client_hello(record(big)[:20], limit=4096).state == "too-large"
    assert read_client_hello(records(big, [2]), limit=4096).state == "too-large"
    assert read_client_hello(record(big), limit=8192).state == "complete"


@pytest.mark.parametrize(
    ("name", "expected"),
    [(b"Chat.Signal.ORG.", "chat.signal.org"), (b"\xff\xfe", None), (b".", None)],
)
def test_server_name_is_normalized(name: bytes, expected: str | None) -> None:
    assert server_name(client_hello(name)) == expected


def test_links() -> None:
    assert links("proxy.example.org") == (
        "https://signal.tube/#proxy.example.org",
        "sgnl://signal.tube/#proxy.example.org",
    )
    assert links("proxy.example.org", 8443)[0] == "https://signal.tube/#proxy.example.org:8443"


# --- [signal_proxy] ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return LabCA(tmp_path_factory.mktemp("ca")).issue("proxy.example.org", "*.example.org")


def section(cert: Path, key: Path, extra: str = "") -> str:
    return (
        '[[route]]\nname = "direct"\nchain = "direct"\n[signal_proxy]\nlisten = "127.0.0.1:443"\n'
        f'certificate = "{cert}"\nkey = "{key}"\n{extra}'
    )


def test_defaults(pair: tuple[Path, Path]) -> None:
    config = parse_config(section(*pair)).signal_proxy
    assert config is not None
    assert config.hosts == SIGNAL_HOSTS and len(SIGNAL_HOSTS) == 13
    assert config.link_host == "proxy.example.org"  # the certificate's first DNS name
    assert config.max_hello == 16384 and config.handshake_timeout == 10


def test_overrides(pair: tuple[Path, Path]) -> None:
    config = parse_config(
        section(
            *pair, 'name = "signal.example.org"\nhosts = ["chat.signal.org"]\nmax_hello = "4KiB"'
        )
    ).signal_proxy
    assert config is not None
    assert config.link_host == "signal.example.org"
    assert config.hosts == ("chat.signal.org",) and config.max_hello == 4096


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ("hosts = []", "signal_proxy.hosts: is empty"),
        ('max_hello = "1MiB"', "signal_proxy.max_hello"),
        ('hosts = ["not a name"]', "signal_proxy.hosts"),
    ],
)
def test_bad_values_name_the_key(pair: tuple[Path, Path], extra: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(section(*pair, extra))
    assert problem in str(err.value)


@pytest.mark.parametrize("hosts", ['"chat.signal.org"', '["not a name"]'])
def test_hosts_of_the_wrong_kind_are_one_problem(pair: tuple[Path, Path], hosts: str) -> None:
    """Not "expected a list" and then "is empty" as well: the second is the first's echo."""
    with pytest.raises(ConfigError) as err:
        parse_config(section(*pair, f"hosts = {hosts}"))
    said = [p for p in err.value.problems if p.startswith("signal_proxy.hosts")]
    assert len(said) == 1 and "is empty" not in said[0], said


def test_certificate_and_key_are_required_and_must_match(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(section(Path("/"), Path("/")).split("certificate")[0])
    assert "signal_proxy.certificate" in str(err.value) and "signal_proxy.key" in str(err.value)
    other = LabCA(tmp_path).issue("other.example.org")
    with pytest.raises(ConfigError) as err:
        parse_config(section(pair[0], other[1]))
    assert f"signal_proxy.certificate: '{other[1]}' is not the private key of the" in str(err.value)


def test_a_lan_address_needs_an_allow_list(pair: tuple[Path, Path]) -> None:
    text = section(*pair).replace("127.0.0.1:443", "0.0.0.0:443")
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    assert "signal_proxy.listen" in str(err.value)
    config = parse_config('[listen]\nallow = ["192.168.1.0/24"]\n' + text).signal_proxy
    assert config is not None and config.listen.port == 443


@pytest.mark.parametrize(
    ("pattern", "name", "covers"),
    [
        ("proxy.example.org", "proxy.example.org", True),
        ("Proxy.Example.org", "proxy.example.org.", True),
        ("*.example.org", "proxy.example.org", True),
        ("*.example.org", "example.org", False),
        ("*.example.org", "a.b.example.org", False),
        ("proxy.example.org", "other.example.org", False),
    ],
)
def test_certificate_names_cover_hosts_as_tls_clients_check_them(
    pattern: str, name: str, covers: bool
) -> None:
    assert certificate_covers(pattern, name) is covers


def test_a_name_the_certificate_is_not_for_is_refused(pair: tuple[Path, Path]) -> None:
    config = parse_config(section(*pair, 'name = "relay.example.org"')).signal_proxy
    assert config is not None and config.link_host == "relay.example.org"  # the wildcard
    with pytest.raises(ConfigError) as err:
        parse_config(section(*pair, 'name = "proxy.example.net"'))
    message = str(err.value)
    assert "signal_proxy.name: 'proxy.example.net' is not a name of the certificate" in message
    assert "proxy.example.org, *.example.org" in message and "would refuse" in message
