"""`[tls]`: what detour trusts where it verifies TLS itself."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from .schema import setting
from .values import ca_file


@dataclass(frozen=True)
class TlsConfig:
    # Where detour itself verifies TLS: DoH/DoT servers, probes, fronts. The lab's CA; rarely
    # anything else.
    extra_ca: tuple[Path, ...] = setting(
        [],
        each=ca_file,
        path=True,
        doc='CA certificates (PEM files) to trust besides the system\'s, e.g. `["lab-ca.pem"]`: '
        "for DoH and DoT servers with certificates from a private CA. Relative to the config "
        "file. Each file is checked when the config is loaded.",
    )

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        for path in self.extra_ca:
            context.load_verify_locations(cafile=path)
        return context
