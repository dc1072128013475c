"""Proxy cores without running them (transports/core): which core a version output names,
what each core can do, and the config generated for a link."""

from __future__ import annotations

import json

import pytest

from transports.core.generate import Inbound, core_config
from transports.core.programs import CoreProgram, cannot, identify
from transports.links import parse_link

UUID = "b831381d-6324-4d53-ad4f-8cda48b30811"
PBK = "Z84J2IelR9ch3k8VtlVhhs5ycBUlXA7wHBWcBrjqnAw"
INBOUND = Inbound(10801, "user", "login-secret")

XRAY = CoreProgram("xray", "/usr/bin/xray", (25, 1, 1))
SING_BOX = CoreProgram("sing-box", "/usr/bin/sing-box", (1, 14, 4), frozenset({"with_quic"}))
SING_BOX_UTLS = CoreProgram(
    "sing-box", "/usr/bin/sing-box", (1, 14, 4), frozenset({"with_utls", "with_quic"})
)
V2RAY_4 = CoreProgram("v2ray", "/usr/bin/v2ray", (4, 34, 0))
V2RAY_5 = CoreProgram("v2ray", "/usr/bin/v2ray", (5, 16, 1))

REALITY = (
    f"vless://{UUID}@198.51.100.9:443?security=reality&pbk={PBK}&fp=chrome&type=tcp"
    "&flow=xtls-rprx-vision&sni=www.microsoft.com&sid=6ba85179e30d4fc2"
)
XHTTP = f"vless://{UUID}@example.com:443?type=xhttp&path=%2Fx&security=tls"
WS_TLS = f"vless://{UUID}@example.com:443?type=ws&path=%2Fws&host=cdn.example&security=tls"
GRPC = f"vless://{UUID}@example.com:443?type=grpc&serviceName=tun&security=tls"
FP = f"vless://{UUID}@example.com:443?security=tls&fp=firefox"
VMESS = f"vmess://{UUID}@example.com:443?security=tls&type=tcp"
TROJAN = "trojan://pw@example.com:443?security=tls&sni=example.com"


def link(text: str):
    return parse_link(text).params["link"]


@pytest.mark.parametrize(
    ("output", "kind", "version"),
    [
        ("Xray 1.8.24 (Xray, Penetrates Everything.) 7e7d6da (go1.22.5 linux/amd64)", "xray",
         (1, 8, 24)),
        ("sing-box version 1.14.4\n\nEnvironment: go1.27.3\nTags: with_quic,with_utls\n",
         "sing-box", (1, 14, 4)),
        ("V2Ray 4.34.0 (user) 20230518-074445 (go1.19.8 linux/amd64)\nA unified platform",
         "v2ray", (4, 34, 0)),
        ("V2Ray 5.16.1 (V2Fly, a community-driven edition of V2Ray.)", "v2ray", (5, 16, 1)),
    ],
)  # fmt: skip
def test_cores_are_told_apart_by_their_version_output(output, kind, version) -> None:
    core = identify("/bin/x", output)
    assert core is not None and (core.kind, core.version) == (kind, version)
    if kind == "sing-box":
        assert core.tags == {"with_quic", "with_utls"}


def test_a_program_that_is_no_core_is_none() -> None:
    assert identify("/bin/true", "usage: true") is None


@pytest.mark.parametrize(
    ("core", "text", "reason"),
    [
        (XRAY, REALITY, None),
        (XRAY, XHTTP, None),
        (SING_BOX_UTLS, REALITY, None),
        (SING_BOX, REALITY, "built without with_utls, which REALITY needs"),
        (SING_BOX, FP, "built without with_utls, which fp= (uTLS) needs"),
        (SING_BOX, XHTTP, "sing-box 1.14.4 has no xhttp transport"),
        (SING_BOX, WS_TLS, None),
        (V2RAY_4, REALITY, "v2ray 4.34.0 has no REALITY"),
        (V2RAY_4, XHTTP, "has no xhttp transport"),
        (V2RAY_4, GRPC, "has no grpc transport (v2ray has it from 4.36)"),
        (V2RAY_4, FP, "cannot imitate a browser's TLS"),
        (V2RAY_4, WS_TLS, None),
        (V2RAY_4, VMESS, None),
        (V2RAY_4, TROJAN, None),
        (V2RAY_5, GRPC, None),
    ],
)
def test_what_each_core_can_do(core: CoreProgram, text: str, reason: str | None) -> None:
    said = cannot(core, link(text))
    if reason is None:
        assert said is None
    else:
        assert said is not None and reason in said


def test_v2ray_config_for_vless_over_websocket_and_tls() -> None:
    config = json.loads(core_config(V2RAY_4, link(WS_TLS), INBOUND))
    [inbound] = config["inbounds"]
    assert inbound["listen"] == "127.0.0.1" and inbound["port"] == 10801
    assert inbound["settings"]["accounts"] == [{"user": "user", "pass": "login-secret"}]
    [outbound] = config["outbounds"]
    assert outbound["protocol"] == "vless"
    assert outbound["settings"]["vnext"][0]["users"] == [{"id": UUID, "encryption": "none"}]
    stream = outbound["streamSettings"]
    assert stream["network"] == "ws" and stream["security"] == "tls"
    assert stream["wsSettings"] == {"path": "/ws", "headers": {"Host": "cdn.example"}}
    assert stream["tlsSettings"]["serverName"] == "cdn.example"  # no sni=: the Host


def test_xray_config_for_reality() -> None:
    stream = json.loads(core_config(XRAY, link(REALITY), INBOUND))["outbounds"][0]
    assert stream["settings"]["vnext"][0]["users"][0]["flow"] == "xtls-rprx-vision"
    assert stream["streamSettings"]["realitySettings"] == {
        "serverName": "www.microsoft.com",
        "fingerprint": "chrome",
        "publicKey": PBK,
        "shortId": "6ba85179e30d4fc2",
        "spiderX": "",
    }


def test_sing_box_config_for_vmess_trojan_and_reality() -> None:
    vmess = json.loads(core_config(SING_BOX, link(VMESS), INBOUND))
    assert vmess["inbounds"][0]["users"] == [{"username": "user", "password": "login-secret"}]
    [out] = vmess["outbounds"]
    assert (out["type"], out["uuid"], out["security"], out["alter_id"]) == (
        "vmess",
        UUID,
        "auto",
        0,
    )
    assert out["tls"]["enabled"] and out["tls"]["server_name"] == "example.com"
    trojan = json.loads(core_config(SING_BOX, link(TROJAN), INBOUND))["outbounds"][0]
    assert trojan["password"] == "pw"
    reality = json.loads(core_config(SING_BOX_UTLS, link(REALITY), INBOUND))["outbounds"][0]
    assert reality["tls"]["reality"] == {
        "enabled": True,
        "public_key": PBK,
        "short_id": "6ba85179e30d4fc2",
    }
    assert reality["tls"]["utls"] == {"enabled": True, "fingerprint": "chrome"}
    grpc = json.loads(core_config(SING_BOX, link(GRPC), INBOUND))["outbounds"][0]
    assert grpc["transport"] == {"type": "grpc", "service_name": "tun"}


def test_run_and_test_commands_per_core() -> None:
    assert V2RAY_4.run_argv("c.json") == ["/usr/bin/v2ray", "-config", "c.json"]
    assert V2RAY_4.test_argv("c.json") == ["/usr/bin/v2ray", "-test", "-config", "c.json"]
    assert V2RAY_5.run_argv("c.json") == ["/usr/bin/v2ray", "run", "-c", "c.json"]
    assert SING_BOX.test_argv("c.json") == ["/usr/bin/sing-box", "check", "-c", "c.json"]
    assert XRAY.test_argv("c.json") == ["/usr/bin/xray", "run", "-test", "-c", "c.json"]


@pytest.mark.parametrize("core", [XRAY, V2RAY_4, V2RAY_5], ids=lambda c: c.label)
def test_the_socks_inbound_takes_udp_associate_on_loopback(core: CoreProgram) -> None:
    """UDP through a core route (docs/udp.md): the inbound relays datagrams, and answers
    UDP ASSOCIATE with a loopback relay address."""
    [inbound] = json.loads(core_config(core, link(WS_TLS), INBOUND))["inbounds"]
    assert inbound["settings"]["udp"] is True
    assert inbound["settings"]["ip"] == "127.0.0.1"


XRAY_MODULE = CoreProgram(
    "xray",
    "/venv/site-packages/xray",
    (26, 10, 10),
    command=("/venv/bin/python", "-P", "/src/transports/core/xray_module.py"),
)


def test_xray_from_the_python_module_is_run_by_the_launcher() -> None:
    launcher = ["/venv/bin/python", "-P", "/src/transports/core/xray_module.py"]
    assert XRAY_MODULE.run_argv("c.json") == [*launcher, "run", "-c", "c.json"]
    assert XRAY_MODULE.test_argv("c.json") == [*launcher, "run", "-test", "-c", "c.json"]
    assert XRAY_MODULE.origin == (
        "xray 26.10.10 from the Python module /venv/site-packages/xray (python:xray)"
    )
    assert XRAY.origin == "xray 25.1.1 at /usr/bin/xray"


@pytest.mark.parametrize("core", [XRAY, XRAY_MODULE], ids=["program", "module"])
def test_xray_is_given_detours_extra_cas_in_its_tls_settings(core: CoreProgram) -> None:
    """Added to xray's roots (usage verify): the module's build has its own root store and
    reads no SSL_CERT_FILE."""
    config = json.loads(core_config(core, link(WS_TLS), INBOUND, "/state/extra-ca.pem"))
    tls = config["outbounds"][0]["streamSettings"]["tlsSettings"]
    assert tls["certificates"] == [{"usage": "verify", "certificateFile": "/state/extra-ca.pem"}]
    plain = json.loads(core_config(core, link(WS_TLS), INBOUND))
    assert "certificates" not in plain["outbounds"][0]["streamSettings"]["tlsSettings"]
    reality = json.loads(core_config(core, link(REALITY), INBOUND, "/state/extra-ca.pem"))
    assert "tlsSettings" not in reality["outbounds"][0]["streamSettings"]  # REALITY: no CA


def test_v2ray_is_given_the_cas_by_ssl_cert_file_only() -> None:
    config = json.loads(core_config(V2RAY_4, link(WS_TLS), INBOUND, "/state/extra-ca.pem"))
    assert "certificates" not in config["outbounds"][0]["streamSettings"]["tlsSettings"]


def test_the_extra_cas_are_those_beyond_the_systems(tmp_path) -> None:
    import ssl

    from helper.lab.ca import LabCA
    from transports.core.dialer import extra_cas

    ca = LabCA(tmp_path, "extra test CA")
    context = ssl.create_default_context()
    assert extra_cas(context) == b"" and extra_cas(None) == b""
    context.load_verify_locations(cafile=str(ca.ca_path))
    extra = extra_cas(context)
    assert extra.count(b"BEGIN CERTIFICATE") == 1
    assert ssl.PEM_cert_to_DER_cert(extra.decode()) == ssl.PEM_cert_to_DER_cert(
        ca.ca_path.read_text()
    )
