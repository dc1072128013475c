"""VLESS, VMess and Trojan through a proxy core (xray, sing-box or v2ray) that detour runs
as a child process, with a config generated from the link, and talks SOCKS5 to.

    spec.py      what a vless/vmess/trojan link describes (CoreLink), validated
    programs.py  which core is installed, its version, what it can do
    generate.py  the core's config for one link
    dialer.py    CoreDialer: the child (transports/children.py) and SOCKS5 to it

The link texts are parsed in transports/links.py.
"""

from .dialer import CoreChild, CoreDialer
from .programs import CoreProgram, cannot, find_core
from .spec import CoreLink, CoreLinkError

__all__ = [
    "CoreChild",
    "CoreDialer",
    "CoreLink",
    "CoreLinkError",
    "CoreProgram",
    "cannot",
    "find_core",
]
