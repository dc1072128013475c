"""A whole config file -> Config: the sections read with the schema, then the checks across
sections (a service's routes, the default policy, the WhatsApp proxy's exposure, which
depends on [listen])."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..services import Service
from .api import ApiConfig, read_api
from .base import BEFORE, BaseTable
from .core import CoreConfig
from .dns import DnsConfig
from .listen import ListenConfig, read_listen
from .mtproto_proxy import MTProtoProxyConfig, read_mtproto_proxy
from .ports import check_ports
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
from .search import SearchConfig
from .signal_proxy import SignalProxyConfig, read_signal_proxy
from .subscription import (
    SubscriptionConfig,
    read_subscriptions,
    stored_nodes,
    subscription_names,
    with_pools,
)
from .telegram import TelegramConfig
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
    mtproto_proxy: MTProtoProxyConfig | None = None  # off unless configured
    signal_proxy: SignalProxyConfig | None = None  # off unless configured
    api: ApiConfig = ApiConfig()  # noqa: RUF009 - frozen, immutable
    core: CoreConfig = CoreConfig()  # noqa: RUF009 - frozen, immutable
    search: SearchConfig = SearchConfig()  # noqa: RUF009 - frozen, immutable
    telegram: TelegramConfig = TelegramConfig()  # noqa: RUF009 - frozen, immutable
    subscriptions: tuple[SubscriptionConfig, ...] = ()
    # The config before subscription.with_pools put the pools' nodes in (None: no pools).
    pool_base: Config | None = field(default=None, compare=False, repr=False)

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
    "mtproto_proxy": (MTProtoProxyConfig, False),
    "signal_proxy": (SignalProxyConfig, False),
    "api": (ApiConfig, False),
    "core": (CoreConfig, False),
    "search": (SearchConfig, False),
    "telegram": (TelegramConfig, False),
    "base": (BaseTable, False),
    "subscription": (SubscriptionConfig, True),
}


def parse_toml(text: str, source: str) -> dict[str, Any]:
    """A TOML document; one that starts with a byte order mark (Windows editors write one)
    is read without it."""
    try:
        return tomllib.loads(text.removeprefix("\ufeff"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"], source) from None
    except RecursionError:
        raise ConfigError(["not valid TOML: nested too deeply"], source) from None


def parse_config(
    text: str, source: str = "config", base: Path | None = None, below: Config | None = None
) -> Config:
    """Parse and validate a config: as a whole, or built on the config `below` (then keys it
    does not give are below's, and its routes and services join below's; load.py decides,
    from `[base] config`). Relative file paths in it are taken from `base` (the config
    file's directory), or from the working directory."""
    return parse_config_data(parse_toml(text, source), source, base, below)


def parse_config_data(
    data: dict[str, Any],
    source: str = "config",
    base: Path | None = None,
    below: Config | None = None,
) -> Config:
    """parse_config for TOML already read (the relay's config embeds detour's sections)."""
    problems = Problems()
    top = TableReader("", data, problems, tuple(SECTIONS))
    sections = top.data

    def section(name: str) -> Any:
        return sections.get(name, {})

    layering = read_section(BaseTable, "base", section("base"), problems)
    below = without_removed(below, layering, problems)
    listen = read_listen(section("listen"), problems, base, below and below.listen)
    api = read_api(section("api"), problems, base, below and below.api)
    dns = read_section(DnsConfig, "dns", section("dns"), problems, base, below and below.dns)
    tls = read_section(TlsConfig, "tls", section("tls"), problems, base, below and below.tls)
    probe = read_section(
        ProbeConfig, "probe", section("probe"), problems, base, below and below.probe
    )
    core = read_section(CoreConfig, "core", section("core"), problems, base, below and below.core)
    search = read_section(
        SearchConfig, "search", section("search"), problems, base, below and below.search
    )
    routes = read_routes(
        sections.get("route"),
        problems,
        base,
        below.routes if below else (),
        before=layering.routes == BEFORE,
    )
    route_names = [r.name for r in routes]
    pool_names = subscription_names(sections.get("subscription"))  # services may name one
    services = read_services(
        sections.get("service"),
        route_names + pool_names,
        problems,
        base,
        below.services if below else (),
    )
    subscriptions = (below.subscriptions if below else ()) + tuple(
        read_subscriptions(
            sections.get("subscription"), problems, route_names, [s.name for s in services], base
        )
    )
    default = read_section(
        DefaultTable,
        "default",
        section("default"),
        problems,
        below=DefaultTable(below.default_policy) if below else None,
    )
    policy = default_policy(default.policy, route_names, problems)
    whatsapp_proxy = below.whatsapp_proxy if below else None
    if "whatsapp_proxy" in sections or whatsapp_proxy is not None:
        whatsapp_proxy = read_whatsapp_proxy(
            section("whatsapp_proxy"), listen, problems, base, whatsapp_proxy
        )
    mtproto_proxy = below.mtproto_proxy if below else None
    if "mtproto_proxy" in sections or mtproto_proxy is not None:
        mtproto_proxy = read_mtproto_proxy(
            section("mtproto_proxy"), listen, problems, base, mtproto_proxy
        )
    signal_proxy = below.signal_proxy if below else None
    if "signal_proxy" in sections or signal_proxy is not None:
        signal_proxy = read_signal_proxy(
            section("signal_proxy"), listen, problems, base, signal_proxy
        )
    telegram = read_section(
        TelegramConfig, "telegram", section("telegram"), problems, base, below and below.telegram
    )
    check_ports(
        {
            "listen": listen,
            "api": api,
            "whatsapp_proxy": whatsapp_proxy,
            "mtproto_proxy": mtproto_proxy,
            "signal_proxy": signal_proxy,
        },
        problems,
    )
    top.finish()

    if problems.items:
        raise ConfigError(problems.items, source)
    config = Config(
        listen,
        dns,
        tls,
        probe,
        tuple(routes),
        tuple(services),
        policy,
        source,
        whatsapp_proxy=whatsapp_proxy,
        mtproto_proxy=mtproto_proxy,
        signal_proxy=signal_proxy,
        api=api,
        core=core,
        search=search,
        telegram=telegram,
        subscriptions=subscriptions,
    )
    return with_pools(config, stored_nodes) if subscriptions else config


def without_removed(below: Config | None, layering: BaseTable, problems: Problems) -> Config | None:
    """The config below this file, less the routes and services its `[base] remove_routes`
    and `remove_services` take out (docs/configuration.md "Layering"): the routes are also
    dropped from the services that list them, and a default policy that named one is chosen
    again as if nobody had written it."""
    removes = {"remove_routes": layering.remove_routes, "remove_services": layering.remove_services}
    if not any(removes.values()):
        return below
    if below is None:
        for key, names in removes.items():
            if names:
                problems.add(
                    f"base.{key}",
                    'nothing to remove: the file stands alone ([base] config = "none")',
                )
        return None
    for key, names, have in (
        ("remove_routes", layering.remove_routes, [r.name for r in below.routes]),
        ("remove_services", layering.remove_services, [s.name for s in below.services]),
    ):
        for i, name in enumerate(names):
            if name not in have:
                what = key.removeprefix("remove_")
                problems.add(
                    f"base.{key}[{i}]",
                    f"no built-in {what[:-1]} named {name!r} ({what}: {', '.join(have)})",
                )
    gone = set(layering.remove_routes)
    routes = tuple(r for r in below.routes if r.name not in gone)
    services = []
    for service in below.services:
        if service.name in layering.remove_services:
            continue
        left = tuple(name for name in service.routes if name not in gone)
        if service.routes and not left:
            problems.add("base.remove_routes", f"service {service.name!r} would have no route left")
        services.append(dataclasses.replace(service, routes=left))
    policy = below.default_policy
    if policy in gone:
        policy = default_policy(None, [r.name for r in routes], problems)
    return dataclasses.replace(
        below, routes=routes, services=tuple(services), default_policy=policy
    )
