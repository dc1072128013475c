"""`detour mtproto links` and `detour mtproto secret`: the MTProto proxy endpoint's links
for headless set-ups (secrets hidden until asked), and new secrets (docs/telegram.md)."""

from __future__ import annotations

import sys
from typing import Any

from .config import ConfigError, load_config

__all__ = ["add_mtproto_parser", "mtproto_links", "mtproto_secret"]

EXIT_OK, EXIT_USAGE = 0, 2


def mtproto_links(path: str | None, reveal: bool) -> int:
    from .proxy.mtproto_links import proxy_links

    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"detour: config problems in {exc}", file=sys.stderr)
        return EXIT_USAGE
    if config.mtproto_proxy is None:
        print(
            "detour mtproto links: the config has no [mtproto_proxy] section "
            "(docs/telegram.md says how to add one)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    for link in proxy_links(config.mtproto_proxy):
        print(f"{link.user} ({link.mode} secret):")
        print(f"  {link.link(reveal=reveal)}")
        print(f"  {link.link(web=True, reveal=reveal)}")
    if not reveal:
        print("(secrets hidden: --show-secrets prints them)")
    listen = config.mtproto_proxy.listen
    if config.mtproto_proxy.host is None and listen.ip is not None and listen.ip.is_unspecified:
        print(
            f"{listen.host} is where detour listens, not an address a phone can dial: set "
            "mtproto_proxy.host to this machine's address on the phones' network"
        )
    return EXIT_OK


def mtproto_secret(plain: bool, domain: str | None) -> int:
    from transports.mtproto.secret import SecretMode, generate_secret

    if domain is not None:
        try:
            secret = generate_secret(SecretMode.FAKE_TLS, domain.strip().lower())
        except ValueError as exc:
            print(f"detour mtproto secret: --tls: {exc}", file=sys.stderr)
            return EXIT_USAGE
    else:
        secret = generate_secret(SecretMode.PLAIN if plain else SecretMode.PADDED)
    print(secret.hex())
    return EXIT_OK


def add_mtproto_parser(sub: Any, parser_class: type) -> None:
    """`detour mtproto links|secret` on the command line's subparsers."""
    mtproto = sub.add_parser(
        "mtproto",
        help="links and secrets for the MTProto proxy endpoint",
        description="The MTProto proxy endpoint ([mtproto_proxy], docs/telegram.md): the links "
        "Telegram's apps add it with, and new secrets.",
    )
    mtproto_sub = mtproto.add_subparsers(
        dest="mtproto_command", metavar="ACTION", parser_class=parser_class, required=True
    )
    mtproto_links = mtproto_sub.add_parser(
        "links",
        help="print each user's tg://proxy and t.me links",
        description="Print each user's tg://proxy and https://t.me/proxy links; the secrets "
        "are hidden unless --show-secrets.",
    )
    mtproto_links.add_argument(
        "-c", "--config", metavar="FILE", dest="mtproto_config", help="config file"
    )
    mtproto_links.add_argument(
        "--show-secrets", action="store_true", help="print the links with their secrets"
    )
    secret = mtproto_sub.add_parser(
        "secret",
        help="print a new secret",
        description="Print a new random secret for mtproto_proxy.secrets: dd (padded) by "
        "default, plain with --plain, ee (fake TLS imitating DOMAIN) with --tls DOMAIN.",
    )
    kind = secret.add_mutually_exclusive_group()
    kind.add_argument("--plain", action="store_true", help="a plain secret (no padding)")
    kind.add_argument("--tls", metavar="DOMAIN", help="a fake-TLS secret imitating DOMAIN")
