"""A `detour relay` to run as a process of its own, serving TLS itself (no CDN in between):
its config file, its keys and one client's access key, written before it starts. For the
benchmarks (benchmarks/relay.py) and the reliability tests (tests/reliability/harness.py),
which start and stop the process their own way."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RELAY_CONFIG = """\
{heading}[relay]
listen = "{host}:{port}"
state = "{state}"
tls_cert = "{cert}"
tls_key = "{key}"

[public]
address = "{host}:{port}"
front = "{name}"
host = "{name}"
{extra}
[destinations]
allow = "any"
public = ["127.0.0.0/8"]  # the servers on loopback stand for the internet
"""


@dataclass
class RelayFiles:
    config: Path
    access_key: str  # the client's, encoded (what a front: route takes)
    ca_path: Path  # the CA that signed the relay's certificate (a client's [tls] extra_ca)


def write_relay(
    config: Path,
    *,
    ca_dir: Path,
    state: Path,
    name: str,
    host: str,
    port: int,
    client: str,
    extra: str = "",
    heading: str = "",
) -> RelayFiles:
    """The config file at `config` for a relay at host:port serving `name` with a
    certificate from a new lab CA in `ca_dir`, its keys in `state`, and the client `client`
    added. `extra`: sections before [destinations]; `heading`: comment lines first."""
    from helper.lab.ca import LabCA
    from helper.relay.config import load_relay_config
    from helper.relay.keys import RelayKeys
    from transports import Endpoint

    ca = LabCA(ca_dir)
    cert, key = ca.issue(name)
    fields = {"host": host, "port": port, "state": state, "cert": cert, "key": key}
    config.write_text(RELAY_CONFIG.format(heading=heading, name=name, extra=extra, **fields))
    keys = RelayKeys(load_relay_config(config).state)
    keys.generate()
    access = keys.add_client(client, Endpoint(host, port), name, name)
    return RelayFiles(config, access.encode(), ca.ca_path)
