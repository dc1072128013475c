"""TOML configuration -> typed, validated Config.

Every problem is reported with the key path it concerns and what would be valid
(`route[2].chain: unknown layer 'sock5' (known: direct, http, socks4a, socks5)`), all of
them at once, so a user fixes a file in one pass. Unknown keys are errors, with a
did-you-mean. The built-in configuration is config/default.toml, shipped in the package.

Each section's keys are declared once, with their defaults, converters and documentation,
on the fields of its dataclass (schema.py explains how); one reader walks them.

    schema.py          setting(), the reader that walks a schema, Problems, TableReader
    values.py          converters: durations, sizes, addresses, names, chains, files
    listen.py api.py dns.py tls.py probe.py core.py     one section each
    whatsapp_proxy.py mtproto_proxy.py signal_proxy.py  one section each
    routes.py          [[route]], [[service]], [default] and the checks across them
    base.py            [base]: what a file builds on
    file.py            a file -> Config, as a whole or on the config below it
    load.py            the built-in config, a config file from disk layered on it
    secrets.py         what in a config is secret; the warning for a readable file
    docs.py            docs/configuration.md's key tables, from the schema
    show.py            `detour config show`: the effective config, where each key comes from
"""

from .api import API_PUBLIC_PATHS, API_TOKEN_MIN, ApiConfig
from .core import CoreConfig
from .dns import DnsConfig
from .file import SECTIONS, Config, parse_config, parse_config_data
from .listen import REMOTE_DEFAULTS, ListenConfig, User, check_exposure
from .load import Layer, Loaded, default_config_text, layer_data, load_config, load_layers
from .mtproto_proxy import MTProtoProxyConfig
from .probe import ProbeConfig
from .routes import DENY, RouteConfig
from .schema import ConfigError, Problems, TableReader, array_of_tables
from .secrets import secrets_held, warn_if_readable
from .signal_proxy import SIGNAL_HOSTS, SignalProxyConfig
from .tls import TlsConfig
from .values import (
    choice,
    domain,
    flag,
    is_loopback,
    network,
    parse_duration,
    parse_listen_address,
    parse_size,
    port,
    string,
)
from .whatsapp_proxy import WhatsAppProxyConfig

__all__ = [
    "API_PUBLIC_PATHS",
    "API_TOKEN_MIN",
    "DENY",
    "REMOTE_DEFAULTS",
    "SECTIONS",
    "SIGNAL_HOSTS",
    "ApiConfig",
    "Config",
    "ConfigError",
    "CoreConfig",
    "DnsConfig",
    "Layer",
    "ListenConfig",
    "Loaded",
    "MTProtoProxyConfig",
    "ProbeConfig",
    "Problems",
    "RouteConfig",
    "SignalProxyConfig",
    "TableReader",
    "TlsConfig",
    "User",
    "WhatsAppProxyConfig",
    "array_of_tables",
    "check_exposure",
    "choice",
    "default_config_text",
    "domain",
    "flag",
    "is_loopback",
    "layer_data",
    "load_config",
    "load_layers",
    "network",
    "parse_config",
    "parse_config_data",
    "parse_duration",
    "parse_listen_address",
    "parse_size",
    "port",
    "secrets_held",
    "string",
    "warn_if_readable",
]
