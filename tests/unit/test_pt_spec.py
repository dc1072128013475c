"""The `pt:` layer's text (transports/pt/spec.py): both ways to write it, the errors that say
what is wrong without quoting the bridge, per-connection arguments as the exact bytes of the
SOCKS login, and finding the client program."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from transports import DialError, Endpoint, Failure, Op
from transports.pt.spec import (
    MAX_ARGS,
    PtSpec,
    PtSpecError,
    encode_args,
    find_client,
    parse_pt,
    socks5_login,
)

CERT = "ssH+9rP8dG2NLDN2XuFw63hIO/9MNNinLmxQDpVa+7kTOa9/m+tGWT1SmSYpQ9uTBGa6Hw"
FP = "4C331FA9B3D1D6D8FB0D8045C7A9B3A5E3A6C2D1"
SECRETS = (CERT, "192.0.2.3", FP)


# --- valid layers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "transport", "bridge", "args", "fingerprint"),
    [
        pytest.param(
            f"obfs4 192.0.2.3:443 {FP} cert={CERT} iat-mode=0",
            "obfs4",
            Endpoint("192.0.2.3", 443),
            (("cert", CERT), ("iat-mode", "0")),
            FP,
            id="bridge-line",
        ),
        pytest.param(
            f"Bridge obfs4 192.0.2.3:443 {FP.lower()} cert={CERT} iat-mode=2",
            "obfs4",
            Endpoint("192.0.2.3", 443),
            (("cert", CERT), ("iat-mode", "2")),
            FP,
            id="bridge-word-and-lower-case-fingerprint",
        ),
        pytest.param(
            f"  obfs4   192.0.2.3:443\tcert={CERT}  iat-mode=1 ",
            "obfs4",
            Endpoint("192.0.2.3", 443),
            (("cert", CERT), ("iat-mode", "1")),
            None,
            id="bridge-line-no-fingerprint-any-whitespace",
        ),
        pytest.param(
            f"webtunnel [2001:db8::1]:443 {FP} url=https://example.com/secret-path ver=0.0.1",
            "webtunnel",
            Endpoint("2001:db8::1", 443),
            (("url", "https://example.com/secret-path"), ("ver", "0.0.1")),
            FP,
            id="webtunnel-ipv6",
        ),
        pytest.param(
            "snowflake 192.0.2.4:80 2B280B23E1107BB62ABFC40DDCC8824814F80A72 "
            "fingerprint=2B280B23E1107BB62ABFC40DDCC8824814F80A72 "
            "url=https://snowflake-broker.example/ fronts=a.example,b.example "
            "ice=stun:stun.example:3478,stun:stun2.example:3478 utls-imitate=hellorandomizedalpn",
            "snowflake",
            Endpoint("192.0.2.4", 80),
            (
                ("fingerprint", "2B280B23E1107BB62ABFC40DDCC8824814F80A72"),
                ("url", "https://snowflake-broker.example/"),
                ("fronts", "a.example,b.example"),
                ("ice", "stun:stun.example:3478,stun:stun2.example:3478"),
                ("utls-imitate", "hellorandomizedalpn"),
            ),
            "2B280B23E1107BB62ABFC40DDCC8824814F80A72",
            id="snowflake",
        ),
        pytest.param(
            f"obfs4?addr=192.0.2.3:443&cert={CERT.replace('+', '%2B')}&iat-mode=0",
            "obfs4",
            Endpoint("192.0.2.3", 443),
            (("cert", CERT), ("iat-mode", "0")),
            None,
            id="query-form-percent-encoded",
        ),
        pytest.param(
            f"obfs4?cert={CERT}&iat-mode=0&addr=192.0.2.3:443",
            "obfs4",
            Endpoint("192.0.2.3", 443),
            (("cert", CERT), ("iat-mode", "0")),
            None,
            id="query-form-plus-kept-address-anywhere",
        ),
        pytest.param(
            "webtunnel?addr=[2001:db8::1]:443&url=https%3A%2F%2Fexample.com%2Fp%3Fa%3D1%26b",
            "webtunnel",
            Endpoint("2001:db8::1", 443),
            (("url", "https://example.com/p?a=1&b"),),
            None,
            id="query-form-encoded-url",
        ),
        pytest.param(
            "meek_lite 192.0.2.18:80 url=https://meek.example/ front=www.example.com",
            "meek_lite",
            Endpoint("192.0.2.18", 80),
            (("url", "https://meek.example/"), ("front", "www.example.com")),
            None,
            id="meek-lite",
        ),
    ],
)
def test_valid_layers(
    text: str,
    transport: str,
    bridge: Endpoint,
    args: tuple[tuple[str, str], ...],
    fingerprint: str | None,
) -> None:
    spec = parse_pt(text)
    assert spec == PtSpec(transport, bridge, args, fingerprint)


def test_options_are_detours_in_both_forms() -> None:
    line = parse_pt(f"obfs4 192.0.2.3:443 cert={CERT} iat-mode=0 bin=/opt/pt/lyrebird state=/x")
    query = parse_pt(f"obfs4?addr=192.0.2.3:443&cert={CERT}&iat-mode=0&bin=%2Fopt%2Fpt%2Flyrebird")
    assert line.binary == query.binary == "/opt/pt/lyrebird"
    assert line.state == "/x"
    assert line.args == query.args == (("cert", CERT), ("iat-mode", "0"))


def test_any_transport_with_a_program() -> None:
    spec = parse_pt("mytransport 192.0.2.9:9 key=value bin=/opt/my-pt")
    assert (spec.transport, spec.binary, spec.args) == (
        "mytransport",
        "/opt/my-pt",
        (("key", "value"),),
    )


def test_spec_repr_hides_the_bridge() -> None:
    spec = parse_pt(f"obfs4 192.0.2.3:443 {FP} cert={CERT} iat-mode=0")
    for shown in (repr(spec), str(spec)):
        assert all(secret not in shown for secret in SECRETS), shown


# --- invalid layers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("", "names a transport", id="empty"),
        pytest.param("obfs4", "give the bridge", id="no-bridge"),
        pytest.param("obfs4?", "give the bridge", id="empty-query"),
        pytest.param(f"obfs4?cert={CERT}&iat-mode=0", "address once", id="query-no-address"),
        pytest.param(
            f"obfs4?addr=192.0.2.3:443&addr=192.0.2.4:443&cert={CERT}&iat-mode=0",
            "address once",
            id="query-two-addresses",
        ),
        pytest.param("obfs4?addr=192.0.2.3:443&&iat-mode=0", "an empty one", id="query-empty"),
        pytest.param("obfs4?addr=192.0.2.3:443&cert", "without a value", id="query-bare-key"),
        pytest.param("obfs-4 192.0.2.3:443 cert=x iat-mode=0", "letters, digits", id="bad-name"),
        pytest.param("Bridge", "give the bridge", id="bridge-word-alone"),
        pytest.param("Bridge cert=x", "starts with its transport", id="bridge-then-argument"),
        pytest.param(f"192.0.2.3:443 {FP}", "plain Tor bridge", id="vanilla-bridge"),
        pytest.param(
            f"Bridge obfs4 <IP ADDRESS>:<PORT> <FINGERPRINT> cert={CERT} iat-mode=0",
            "placeholders",
            id="obfs4proxy-bridgeline-template",
        ),
        pytest.param("obfs4 cert=x iat-mode=0", "no IP:PORT", id="no-address"),
        pytest.param(f"obfs4 192.0.2.3 cert={CERT} iat-mode=0", "HOST:PORT", id="no-port"),
        pytest.param(f"obfs4 192.0.2.3:0 cert={CERT} iat-mode=0", "1-65535", id="port-0"),
        pytest.param(f"obfs4 192.0.2.3:99999 cert={CERT} iat-mode=0", "1-65535", id="port-big"),
        pytest.param(f"obfs4 192.0.2.3:443 ABCD cert={CERT}", "fingerprint", id="short-fp"),
        pytest.param(
            f"obfs4 192.0.2.3:443 {FP} cert={CERT} oops iat-mode=0", "argument 2", id="bare-word"
        ),
        pytest.param(
            f"obfs4 192.0.2.3:443 cert={CERT} iat-mode=0 addr=192.0.2.4:1", "2nd word", id="addr"
        ),
        pytest.param(
            f"obfs4 192.0.2.3:443 cert={CERT} iat-mode=0 iat-mode=1", "twice", id="duplicate"
        ),
        pytest.param("obfs4 192.0.2.3:443 iat-mode=0", "cert argument", id="obfs4-no-cert"),
        pytest.param(f"obfs4 192.0.2.3:443 cert={CERT}", "iat-mode", id="obfs4-no-iat"),
        pytest.param(f"obfs4 192.0.2.3:443 cert={CERT} iat-mode=3", "iat-mode", id="obfs4-iat-3"),
        pytest.param("webtunnel 192.0.2.3:443 ver=0.0.1", "url argument", id="webtunnel-no-url"),
        pytest.param("mytransport 192.0.2.3:443 k=v", "bin=PATH", id="unknown-no-bin"),
        pytest.param(
            f"obfs4?addr=192.0.2.3:443&cert={CERT}&iat-mode=0&x=a%20b", "space", id="space-value"
        ),
        pytest.param(
            f"obfs4?addr=192.0.2.3:443&cert={CERT}&iat-mode=0&x=%01", "control", id="control"
        ),
        pytest.param(f"obfs4 192.0.2.3:443 cert={CERT} iat-mode=0 bin=", "needs a path", id="bin"),
        pytest.param(
            f"obfs4 192.0.2.3:443 cert={CERT} iat-mode=0 pad=" + "x" * 500, "longer", id="long"
        ),
    ],
)
def test_invalid_layers_say_what_is_wrong_without_the_bridge(text: str, message: str) -> None:
    with pytest.raises(PtSpecError) as caught:
        parse_pt(text)
    assert message in str(caught.value)
    assert all(secret not in str(caught.value) for secret in SECRETS), str(caught.value)


# --- per-connection arguments: the bytes on the wire ---------------------------------------


@pytest.mark.parametrize(
    ("args", "encoded"),
    [
        pytest.param([], "", id="none"),
        pytest.param([("cert", "AB+/c"), ("iat-mode", "0")], "cert=AB+/c;iat-mode=0", id="obfs4"),
        pytest.param(
            [("shared-secret", "rahasia"), ("secrets-file", "/tmp/blob")],
            "shared-secret=rahasia;secrets-file=/tmp/blob",
            id="spec-example",
        ),
        pytest.param([("k", "a;b")], r"k=a\;b", id="semicolon"),
        pytest.param([("k", "a=b")], r"k=a\=b", id="equals"),
        pytest.param([("k", "a\\b")], r"k=a\\b", id="backslash"),
        pytest.param([("k;=\\", "v")], r"k\;\=\\=v", id="key-escaped-too"),
        pytest.param([("k", "")], "k=", id="empty-value"),
    ],
)
def test_encode_args(args: list[tuple[str, str]], encoded: str) -> None:
    assert encode_args(args) == encoded


def test_login_of_short_arguments_has_a_nul_password() -> None:
    # UNAME = the arguments, PLEN = 1, PASSWD = one NUL (pt-spec 3.5)
    assert socks5_login(b"cert=AB;iat-mode=0") == (b"cert=AB;iat-mode=0", b"\x00")


def test_login_of_exactly_255_bytes_still_fits_the_username() -> None:
    encoded = b"k=" + b"v" * 253
    assert socks5_login(encoded) == (encoded, b"\x00")


def test_login_of_long_arguments_is_split_at_255() -> None:
    encoded = b"k=" + b"v" * 254  # 256 bytes
    assert socks5_login(encoded) == (encoded[:255], b"v")
    longest = b"k=" + b"v" * (MAX_ARGS - 2)
    assert socks5_login(longest) == (longest[:255], longest[255:])
    assert len(longest[255:]) == 255


def test_no_arguments_no_login_and_too_many_refused() -> None:
    assert socks5_login(b"") is None
    with pytest.raises(ValueError, match="do not fit"):
        socks5_login(b"k=" + b"v" * MAX_ARGS)


# --- the client program ---------------------------------------------------------------------


def executable(path: Path) -> Path:
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_client_is_found_on_path_in_order(tmp_path: Path) -> None:
    spec = parse_pt(f"obfs4 192.0.2.3:443 cert={CERT} iat-mode=0")
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    old = executable(second / "obfs4proxy")
    assert find_client(spec, path=f"{first}{os.pathsep}{second}") == str(old)
    new = executable(first / "lyrebird")
    assert find_client(spec, path=f"{first}{os.pathsep}{second}") == str(new)


def test_missing_client_names_the_package(tmp_path: Path) -> None:
    spec = parse_pt(f"obfs4 192.0.2.3:443 cert={CERT} iat-mode=0")
    with pytest.raises(DialError) as caught:
        find_client(spec, path=str(tmp_path))
    error = caught.value
    assert (error.failure, error.op) == (Failure.PT_NOT_INSTALLED, Op.CONNECT)
    assert "lyrebird or obfs4proxy is not on PATH" in error.detail
    assert "Debian package obfs4proxy" in error.detail
    snowflake = parse_pt("snowflake 192.0.2.4:80 url=https://broker.example/")
    with pytest.raises(DialError, match="snowflake-client"):
        find_client(snowflake, path=str(tmp_path))


def test_bin_must_exist_and_be_executable(tmp_path: Path) -> None:
    missing = parse_pt(f"obfs4 192.0.2.3:443 cert={CERT} iat-mode=0 bin={tmp_path}/nope")
    with pytest.raises(DialError, match="does not exist") as caught:
        find_client(missing)
    assert caught.value.failure is Failure.PT_NOT_INSTALLED
    plain = tmp_path / "plain"
    plain.write_text("")  # no x bit at all: not even root may run it
    not_executable = parse_pt(f"obfs4 192.0.2.3:443 cert={CERT} iat-mode=0 bin={plain}")
    with pytest.raises(DialError, match="not executable"):
        find_client(not_executable)
    given = executable(tmp_path / "mine")
    assert find_client(parse_pt(f"x 192.0.2.3:1 bin={given}")) == str(given)
