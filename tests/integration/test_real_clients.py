"""Real clients through a real `detour run --headless` process: curl with every proxy
protocol it speaks, and PySocks."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
import socks  # PySocks

from tests.conftest import DetourProcess, config_text, detour_processes
from tests.support.peers import require_peer


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    binary = require_peer("curl", "curl")
    return subprocess.run(
        [binary, "--silent", "--show-error", "--max-time", "10", *args],
        capture_output=True,
        text=True,
        timeout=20,
    )


@pytest.fixture(scope="module")
def detour(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DetourProcess]:
    """One detour process for the module: its tests only send requests through it, and each
    start (importing detour) is about a second of CPU. Its state directory is its own, as a
    test's would be (tests/conftest.py's own_state_directory comes after module fixtures)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DETOUR_STATE_DIR", str(tmp_path_factory.mktemp("state")))
        for start in detour_processes(tmp_path_factory.mktemp("detour")):
            yield start(config_text())


@pytest.mark.parametrize(
    "proxy_option",
    [
        pytest.param("--socks5-hostname", id="socks5-hostname"),
        pytest.param("--socks5", id="socks5-local-dns"),
        pytest.param("--socks4a", id="socks4a"),
        pytest.param("--socks4", id="socks4"),
    ],
)
def test_curl_socks_fetches_https_with_test_ca(detour, https_origin, test_ca, proxy_option) -> None:
    host, port = detour.address
    # Names that only detour can resolve ([dns] hosts) prove that detour resolved them; the
    # socks5/socks4 variants resolve locally, so they use the IP the certificate also names.
    name = "origin.test" if proxy_option in ("--socks5-hostname", "--socks4a") else "127.0.0.1"
    result = curl(
        proxy_option,
        f"{host}:{port}",
        "--cacert",
        str(test_ca.ca_path),
        f"https://{name}:{https_origin.port}/hello",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"hello from origin {name}:{https_origin.port}/hello\n"


def test_curl_http_proxy_connect_to_https(detour, https_origin, test_ca) -> None:
    host, port = detour.address
    result = curl(
        "-x",
        f"http://{host}:{port}",
        "--cacert",
        str(test_ca.ca_path),
        f"https://origin.test:{https_origin.port}/tunnel",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"hello from origin origin.test:{https_origin.port}/tunnel\n"


def test_curl_http_proxy_plain_request_strips_hop_by_hop(detour, http_origin) -> None:
    host, port = detour.address
    result = curl(
        "-x",
        f"http://{host}:{port}",
        "-H",
        "Proxy-Connection: keep-alive",
        "-H",
        "Connection: X-Secret-Hop",
        "-H",
        "X-Secret-Hop: must not reach the origin",
        "-H",
        "X-End-To-End: kept",
        f"http://origin.test:{http_origin.port}/headers?q=1",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "GET /headers?q=1"  # origin-form, not absolute-form
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers["Host"] == f"origin.test:{http_origin.port}"
    assert headers["X-End-To-End"] == "kept"
    assert headers["Connection"] == "close"
    assert "X-Secret-Hop" not in headers
    assert "Proxy-Connection" not in headers


def test_curl_http_proxy_post_body_arrives_intact(detour, http_origin, tmp_path) -> None:
    import hashlib
    import os

    body = os.urandom(3 * 1024 * 1024 + 17)
    path = tmp_path / "body.bin"
    path.write_bytes(body)
    host, port = detour.address
    result = curl(
        "-x",
        f"http://{host}:{port}",
        "--data-binary",
        f"@{path}",
        "-H",
        "Content-Type: application/octet-stream",
        f"http://origin.test:{http_origin.port}/sha256",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{hashlib.sha256(body).hexdigest()} {len(body)}\n"


def test_curl_reports_unreachable_destination(detour) -> None:
    host, port = detour.address
    closed = _closed_port()
    result = curl("-x", f"http://{host}:{port}", f"http://127.0.0.1:{closed}/")
    # detour answers 502 with a reason; curl prints the body and exits 0 without --fail
    assert "connection_refused during connect" in result.stdout
    result = curl("--socks5-hostname", f"{host}:{port}", f"http://127.0.0.1:{closed}/")
    assert result.returncode == 97
    assert "(5)" in result.stderr or "refused" in result.stderr.lower()


@pytest.mark.parametrize(
    "proxy_type", [socks.SOCKS5, socks.SOCKS4, socks.HTTP], ids=["socks5", "socks4a", "http"]
)
def test_pysocks_fetches(detour, http_origin, proxy_type) -> None:
    host, port = detour.address
    sock = socks.socksocket()
    sock.settimeout(10)
    sock.set_proxy(proxy_type, host, port, rdns=True)
    try:
        sock.connect(("origin.test", http_origin.port))
        sock.sendall(b"GET /pysocks HTTP/1.0\r\nHost: origin.test\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    finally:
        sock.close()
    assert data.startswith(b"HTTP/1.0 200")
    assert data.endswith(b"hello from origin origin.test/pysocks\n")


def _closed_port() -> int:
    from tests.support.peers import free_port

    return free_port()
