"""A whole config file -> Config: the sections read with the schema, then the checks across
sections (a service's routes, the default policy, the WhatsApp proxy's exposure, which
depends on [listen])."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..services import Service
from .api import ApiConfig, read_api
from .dns import DnsConfig
from .listen import ListenConfig, read_listen
from .probe import ProbeConfig
from .routes import (
    DefaultTable,
    RouteConfig,
    ServiceSettings,
    default_policy,
    read_routes,
    read_services,
)
from .schema import ConfigError, Problems, TableReader, read_section
from .tls import TlsConfig
from .whatsapp_proxy import WhatsAppProxyConfig, read_whatsapp_proxy


@dataclass(frozen=True)
class Config:
    listen: ListenConfig
    dns: DnsConfig
    tls: TlsConfig
    probe: ProbeConfig
    routes: tuple[RouteConfig, ...]
    services: tuple[Service, ...]
    default_policy: str  # a route name, or "deny"
    source: str = "built-in"
    whatsapp_proxy: WhatsAppProxyConfig | None = None  # off unless configured
    api: ApiConfig = ApiConfig()  # noqa: RUF009 - frozen, immutable

    def route(self, name: str) -> RouteConfig:
        for route in self.routes:
            if route.name == name:
                return route
        raise KeyError(name)


# The file's top-level keys, in the order `unknown key` lists them: the table's name, its
# schema, and whether it is an array of tables.
SECTIONS: dict[str, tuple[type, bool]] = {
    "listen": (ListenConfig, False),
    "dns": (DnsConfig, False),
    "tls": (TlsConfig, False),
    "probe": (ProbeConfig, False),
    "default": (DefaultTable, False),
    "route": (RouteConfig, True),
    "service": (ServiceSettings, True),
    "whatsapp_proxy": (WhatsAppProxyConfig, False),
    "api": (ApiConfig, False),
}


def parse_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"], source) from None
    except RecursionError:
        raise ConfigError(["not valid TOML: nested too deeply"], source) from None


def parse_config(text: str, source: str = "config", base: Path | None = None) -> Config:
    """Parse and validate a config as a whole. Relative file paths in it are taken from
    `base` (the config file's directory), or from the working directory."""
    return parse_config_data(parse_toml(text, source), source, base)


def parse_config_data(
    data: dict[str, Any], source: str = "config", base: Path | None = None
) -> Config:
    """parse_config for TOML already read (the relay's config embeds detour's sections)."""
    problems = Problems()
    top = TableReader("", data, problems, tuple(SECTIONS))
    sections = top.data

    listen = read_listen(sections.get("listen", {}), problems, base)
    api = read_api(sections.get("api", {}), problems, base)
    dns = read_section(DnsConfig, "dns", sections.get("dns", {}), problems, base)
    tls = read_section(TlsConfig, "tls", sections.get("tls", {}), problems, base)
    probe = read_section(ProbeConfig, "probe", sections.get("probe", {}), problems, base)
    routes = read_routes(sections.get("route"), problems, base)
    route_names = [r.name for r in routes]
    services = read_services(sections.get("service"), route_names, problems, base)
    default = read_section(DefaultTable, "default", sections.get("default", {}), problems)
    policy = default_policy(default.policy, route_names, problems)
    whatsapp_proxy = None
    if "whatsapp_proxy" in sections:
        whatsapp_proxy = read_whatsapp_proxy(sections["whatsapp_proxy"], listen, problems, base)
    top.finish()

    if problems.items:
        raise ConfigError(problems.items, source)
    return Config(
        listen,
        dns,
        tls,
        probe,
        tuple(routes),
        tuple(services),
        policy,
        source,
        whatsapp_proxy=whatsapp_proxy,
        api=api,
    )
