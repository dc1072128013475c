"""TOML configuration -> typed, validated Config.

Every problem is reported with the key path it concerns and what would be valid
(`route[2].chain: unknown layer 'sock5' (known: direct, http, socks4a, socks5)`), all of
them at once, so a user fixes a file in one pass. Unknown keys are errors, with a
did-you-mean. The built-in configuration is config/default.toml, shipped in the package.
"""

from __future__ import annotations

import difflib
import ipaddress
import logging
import os
import re
import ssl
import sys
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from transports import Chain, ChainError, Endpoint, parse_chain, redact
from transports.base import IPNetwork
from transports.resolver import ResolverSpec, parse_resolver

from .services import ProbeTarget, Service, normalize_domain

__all__ = [
    "ApiConfig",
    "Config",
    "ConfigError",
    "ListenConfig",
    "RouteConfig",
    "User",
    "WhatsAppProxyConfig",
    "default_config_text",
    "load_config",
    "parse_config",
    "parse_duration",
]


DENY = "deny"

log = logging.getLogger("detour.config")


class ConfigError(Exception):
    """One or more problems in a configuration; each names its key path."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = problems
        self.source = source
        super().__init__("\n".join(problems))

    def __str__(self) -> str:
        lines = "\n".join(f"  {p}" for p in self.problems)
        return f"{self.source}:\n{lines}"


@dataclass(frozen=True)
class User:
    name: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class ListenConfig:
    mixed: Endpoint = Endpoint("127.0.0.1", 1080)  # noqa: RUF009 - immutable
    users: tuple[User, ...] = ()
    allow: tuple[IPNetwork, ...] = ()
    handshake_timeout: float = 10.0
    idle_timeout: float = 600.0
    # Connections redirected here by nftables/iptables (Linux); None: no such listener.
    transparent: Endpoint | None = None
    # What clients that are not on loopback may reach besides the services: "deny" (nothing)
    # or "default" (whatever [default] policy allows). Never private addresses either way.
    remote_default: str = "deny"
    # Private ranges that stand for the internet for remote clients (a lab or test network).
    remote_public: tuple[IPNetwork, ...] = ()
    # Limits, each 0 for none: open connections in all and per client address, and those of
    # them still in their handshake.
    max_connections: int = 1024
    max_connections_per_client: int = 256
    max_handshakes: int = 128
    max_handshakes_per_client: int = 32


@dataclass(frozen=True)
class ApiConfig:
    """The headless status API (docs/status-api.md); off while `listen` is None."""

    listen: Endpoint | None = None
    # Bearer token clients on other machines must send; loopback clients need it only with
    # `loopback_token` (a local script should not have to read a secret to see status).
    token: str | None = field(default=None, repr=False)
    loopback_token: bool = False
    # Endpoints served to anyone without the token: what browsers fetch (a PAC) and
    # watchdogs poll, which cannot send a token. Neither says who connects where.
    public: frozenset[str] = frozenset()


API_PUBLIC_PATHS = ("/proxy.pac", "/healthz")


@dataclass(frozen=True)
class DnsConfig:
    resolver: ResolverSpec = ResolverSpec("system")  # noqa: RUF009 - immutable
    # Fixed answers, like a hosts file for detour alone: name -> addresses.
    hosts: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class TlsConfig:
    # Extra root certificates (PEM files) to trust, besides the system's, where detour itself
    # verifies TLS: DoH/DoT servers, probes, fronts. The lab's CA; rarely anything else.
    extra_ca: tuple[Path, ...] = ()

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        for path in self.extra_ca:
            context.load_verify_locations(cafile=path)
        return context


@dataclass(frozen=True)
class ProbeConfig:
    interval: float = 300.0
    timeout: float = 5.0
    stagger: float = 0.25
    # A probe download slower than this (bytes per second) reports the route "throttled"; 0: never.
    min_rate: int = 32_000
    # How long a route may take to answer a client's TLS ClientHello before detour sends it
    # through the next route instead (0: never retry).
    first_answer: float = 3.0


@dataclass(frozen=True)
class RouteConfig:
    name: str
    chain: Chain
    timeout: float = 10.0


@dataclass(frozen=True)
class WhatsAppProxyConfig:
    """[whatsapp_proxy]: raw TCP endpoints the WhatsApp app's own proxy setting can use
    (see helper/proxy/whatsapp.py). A port of None is turned off; 0 takes any free port."""

    listen: str  # an IP address; the ports are fixed by what the app expects
    tls_port: int | None = 443  # TLS with the proxy's certificate, then g.whatsapp.net:5222
    chat_port: int | None = 5222  # plain, to g.whatsapp.net:5222
    http_port: int | None = 80  # plain, to g.whatsapp.net:80
    media_ports: tuple[int, ...] = (587, 7777)  # plain, to whatsapp.net:443
    # The TLS port's certificate and key (PEM); None: a self-signed one kept in the state
    # directory, made on first use.
    certificate: Path | None = None
    key: Path | None = None
    max_connections: int = 512
    max_per_client: int = 64
    handshake_timeout: float = 10.0  # the TLS port's handshake
    idle_timeout: float = 600.0


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
    api: ApiConfig = ApiConfig()

    def route(self, name: str) -> RouteConfig:
        for route in self.routes:
            if route.name == name:
                return route
        raise KeyError(name)


# --- values -------------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> float:
    """'250ms', '5s', '1m30s', '2h', or a number of seconds -> seconds (> 0)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like '5s' or '250ms'")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            raise ValueError(f"{value!r} is out of range (more than 0, at most a week)") from None
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        pos, seconds = 0, 0.0
        for match in _DURATION.finditer(text):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if not text or pos != len(text):
            raise ValueError(f"{value!r} is not a duration (like '5s', '250ms', '1m30s')")
    else:
        raise ValueError("expected a duration like '5s' or '250ms'")
    if not 0 < seconds <= 7 * 86400:
        raise ValueError(f"{value!r} is out of range (more than 0, at most a week)")
    return seconds


_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|KB|MB)?\s*$")
_SIZE_UNITS = {None: 1, "B": 1, "KiB": 1024, "KB": 1000, "MiB": 1 << 20, "MB": 1_000_000}


def parse_size(value: Any) -> int:
    """Bytes: an integer, or a string like '16KiB', '64KB', '1MiB' (more than 0)."""
    if isinstance(value, bool):
        raise ValueError("expected a size in bytes, like 16384 or '16KiB'")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE.match(value)):
        size = int(m.group(1)) * _SIZE_UNITS[m.group(2)]
    else:
        raise ValueError(f"{value!r} is not a size (like 16384, '16KiB' or '64KB')")
    if size <= 0:
        raise ValueError("a size must be more than 0")
    return size


def _duration_or_off(value: Any) -> float:
    """A duration, or 0 (or "off") to turn the feature off."""
    if value == 0 or value == "off":
        return 0.0
    return parse_duration(value)


def _rate(value: Any) -> int:
    """Bytes per second, written as a size ('32KB' is 32 KB/s); 0 turns the check off."""
    if value == 0:
        return 0
    return parse_size(value)


def parse_listen_address(value: Any) -> Endpoint:
    if not isinstance(value, str):
        raise ValueError('expected "HOST:PORT", e.g. "127.0.0.1:1080"')
    try:
        endpoint = Endpoint.parse(value)
    except ValueError as exc:
        raise ValueError(f'{exc} (e.g. "127.0.0.1:1080" or "[::1]:1080")') from None
    if endpoint.host != "localhost" and endpoint.ip is None:
        raise ValueError(f"{value!r}: listen on an IP address (or localhost), not a name")
    return endpoint


def is_loopback(endpoint: Endpoint) -> bool:
    ip = endpoint.ip
    return endpoint.host == "localhost" or (ip is not None and ip.is_loopback)


def network(value: Any) -> IPNetwork:
    if not isinstance(value, str):
        raise ValueError('expected a CIDR string like "192.168.1.0/24"')
    try:
        return ipaddress.ip_network(value.strip())
    except ValueError:
        try:
            net = ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            raise ValueError(f"{value!r} is not an address or CIDR range") from None
        raise ValueError(f'{value!r} has host bits set; did you mean "{net}"?') from None


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def domain(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a domain name string")
    name = normalize_domain(value)
    if name.startswith("*."):
        name = name[2:]  # suffix matching already covers subdomains
    labels = name.split(".")
    if (
        not name
        or len(name) > 253
        or any(
            not label or len(label) > 63 or not re.fullmatch(r"[a-z0-9_-]+", label)
            for label in labels
        )
    ):
        raise ValueError(f"{value!r} is not a domain name")
    return name


# --- tables -------------------------------------------------------------------------------


class Problems:
    """Problems found while reading a file, each prefixed with its key path."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}")


class TableReader:
    """Reads keys from one TOML table, recording problems; `finish` reports unknown keys."""

    def __init__(self, path: str, data: Any, problems: Problems, keys: tuple[str, ...]) -> None:
        self.path = path
        self.problems = problems
        self.keys = keys
        if not isinstance(data, dict):
            problems.add(path, "expected a table")
            data = {}
        self.data = data

    def _key_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(
        self,
        key: str,
        convert: Callable[[Any], Any],
        default: Any = None,
        *,
        required: bool = False,
    ) -> Any:
        assert key in self.keys, key
        if key not in self.data:
            if required:
                self.problems.add(self._key_path(key), "is required")
            return default
        try:
            return convert(self.data[key])
        except ValueError as exc:
            self.problems.add(self._key_path(key), str(exc))
            return default

    def get_list(self, key: str, convert: Callable[[Any], Any]) -> list[Any]:
        assert key in self.keys, key
        value = self.data.get(key, [])
        if not isinstance(value, list):
            self.problems.add(self._key_path(key), "expected a list")
            return []
        out = []
        for i, item in enumerate(value):
            try:
                out.append(convert(item))
            except ValueError as exc:
                self.problems.add(f"{self._key_path(key)}[{i}]", str(exc))
        return out

    def finish(self) -> None:
        for key in self.data:
            if key not in self.keys:
                close = difflib.get_close_matches(key, self.keys, n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                valid = ", ".join(self.keys)
                self.problems.add(self._key_path(key), f"unknown key ({hint}valid: {valid})")


def string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return value


def choice(options: Iterable[str]) -> Callable[[Any], str]:
    """A converter that takes one of `options` (strings)."""
    options = tuple(options)

    def convert(value: Any) -> str:
        text = string(value)
        if text not in options:
            raise ValueError(f"{text!r} is not one of: {', '.join(options)}")
        return text

    return convert


def _route_name(value: Any) -> str:
    name = string(value)
    if not _NAME.match(name):
        raise ValueError(
            f"{name!r}: names are 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ValueError(f"{value!r} is not a port (1-65535)")
    return value


def _credential(what: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        text = string(value)
        if not 0 < len(text.encode()) < 256:
            raise ValueError(f"a {what} is 1-255 bytes (SOCKS5 limit)")
        return text

    return convert


def _chain(value: Any) -> Chain:
    try:
        return parse_chain(string(value))
    except ChainError as exc:
        raise ValueError(str(exc)) from None


def _resolver(value: Any) -> ResolverSpec:
    try:
        return parse_resolver(string(value))
    except ValueError as exc:
        raise ValueError(redact(str(exc))) from None


def _ca_file(base: Path | None) -> Callable[[Any], Path]:
    def convert(value: Any) -> Path:
        path = Path(string(value)).expanduser()
        if base is not None and not path.is_absolute():
            path = base / path
        return _check_ca_file(path)

    return convert


def _check_ca_file(path: Path) -> Path:
    try:
        ssl.create_default_context(cafile=str(path))
    except FileNotFoundError:
        raise ValueError(f"{str(path)!r}: no such file") from None
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ValueError(f"{str(path)!r} is not a PEM CA certificate file ({exc})") from None
    return path


def array_of_tables(name: str, data: Any, problems: Problems) -> list[tuple[str, Any]]:
    if data is None:
        return []
    if not isinstance(data, list):
        problems.add(name, f"expected [[{name}]] tables")
        return []
    return [(f"{name}[{i}]", item) for i, item in enumerate(data)]


# --- the file -----------------------------------------------------------------------------

_TOP = (
    "listen",
    "dns",
    "tls",
    "probe",
    "default",
    "route",
    "service",
    "whatsapp_proxy",
    "api",
)


def parse_config(text: str, source: str = "config", base: Path | None = None) -> Config:
    """Parse and validate a config. Relative file paths in it are taken from `base` (the
    config file's directory), or from the working directory."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"], source) from None
    except RecursionError:
        raise ConfigError(["not valid TOML: nested too deeply"], source) from None
    return parse_config_data(data, source, base)


def parse_config_data(
    data: dict[str, Any], source: str = "config", base: Path | None = None
) -> Config:
    """parse_config for TOML already read (the relay's config embeds detour's sections)."""
    problems = Problems()
    top = TableReader("", data, problems, _TOP)

    listen = _parse_listen(top.data.get("listen", {}), problems)
    api = _parse_api(top.data.get("api", {}), problems)
    dns_table = TableReader("dns", top.data.get("dns", {}), problems, ("resolver", "hosts"))
    dns = DnsConfig(
        resolver=dns_table.get("resolver", _resolver, DnsConfig.resolver),
        hosts=_parse_hosts(dns_table.data.get("hosts", {}), problems),
    )
    dns_table.finish()
    tls_table = TableReader("tls", top.data.get("tls", {}), problems, ("extra_ca",))
    tls = TlsConfig(extra_ca=tuple(tls_table.get_list("extra_ca", _ca_file(base))))
    tls_table.finish()
    probe_table = TableReader(
        "probe",
        top.data.get("probe", {}),
        problems,
        ("interval", "timeout", "stagger", "min_rate", "first_answer"),
    )
    probe = ProbeConfig(
        interval=probe_table.get("interval", parse_duration, 300.0),
        timeout=probe_table.get("timeout", parse_duration, 5.0),
        stagger=probe_table.get("stagger", parse_duration, 0.25),
        min_rate=probe_table.get("min_rate", _rate, ProbeConfig.min_rate),
        first_answer=probe_table.get("first_answer", _duration_or_off, ProbeConfig.first_answer),
    )
    probe_table.finish()

    routes = _parse_routes(top.data.get("route"), problems)
    route_names = [r.name for r in routes]
    services = _parse_services(top.data.get("service"), route_names, problems)

    default_table = TableReader("default", top.data.get("default", {}), problems, ("policy",))
    implicit = "direct" if "direct" in route_names else (route_names[0] if route_names else DENY)
    policy = default_table.get("policy", string, implicit)
    if policy != DENY and policy not in route_names:
        problems.add(
            "default.policy",
            f'no route named {policy!r} (routes: {", ".join(route_names) or "none"}; or "deny")',
        )
    default_table.finish()
    whatsapp_proxy = None
    if "whatsapp_proxy" in top.data:
        whatsapp_proxy = _parse_whatsapp_proxy(top.data["whatsapp_proxy"], listen, base, problems)
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


def _parse_hosts(data: Any, problems: Problems) -> dict[str, tuple[str, ...]]:
    if not isinstance(data, dict):
        problems.add("dns.hosts", 'expected a table like { "example.org" = ["192.0.2.1"] }')
        return {}
    hosts: dict[str, tuple[str, ...]] = {}
    for name, addresses in data.items():
        path = f'dns.hosts."{name}"'
        try:
            normalized = domain(name)
        except ValueError as exc:
            problems.add(path, str(exc))
            continue
        if isinstance(addresses, str):
            addresses = [addresses]
        if not isinstance(addresses, list) or not addresses:
            problems.add(path, "expected a list of IP addresses")
            continue
        parsed = []
        for i, address in enumerate(addresses):
            try:
                parsed.append(str(ipaddress.ip_address(string(address))))
            except ValueError:
                problems.add(f"{path}[{i}]", f"{address!r} is not an IP address")
        hosts[normalized] = tuple(parsed)
    return hosts


_LISTEN_KEYS = (
    "mixed", "users", "allow", "handshake_timeout", "idle_timeout", "transparent",
    "remote_default", "remote_public", "max_connections", "max_connections_per_client",
    "max_handshakes", "max_handshakes_per_client",
)  # fmt: skip
REMOTE_DEFAULTS = ("deny", "default")


def _remote_default(value: Any) -> str:
    if value not in REMOTE_DEFAULTS:
        raise ValueError(
            '"deny" (remote clients reach only the services) or "default" (also what '
            "[default] policy allows)"
        )
    return str(value)


def _public_network(value: Any) -> IPNetwork:
    net = network(value)
    never = ("loopback", "link-local", "multicast", "unspecified")
    kinds = [n for n, flag in zip(never, (
        net.is_loopback, net.is_link_local, net.is_multicast, net.is_unspecified
    ), strict=True) if flag]  # fmt: skip
    if kinds or net.prefixlen == 0:
        raise ValueError(
            f"{net} cannot stand for the internet: remote clients never reach "
            f"{kinds[0] if kinds else 'every'} address"
        )
    return net


def _limit(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("expected a whole number >= 0 (0: no limit)")
    return value


def _transparent(value: Any) -> Endpoint:
    endpoint = parse_listen_address(value)
    if not sys.platform.startswith("linux"):
        raise ValueError(
            f"transparent redirect needs Linux (SO_ORIGINAL_DST); this is {sys.platform}"
        )
    return endpoint


def _parse_listen(data: Any, problems: Problems) -> ListenConfig:
    table = TableReader("listen", data, problems, _LISTEN_KEYS)
    mixed = table.get("mixed", parse_listen_address, ListenConfig.mixed)
    users: list[User] = []
    for path, item in array_of_tables("listen.users", table.data.get("users"), problems):
        user_table = TableReader(path, item, problems, ("name", "password"))
        name = user_table.get("name", _credential("user name"), required=True)
        password = user_table.get("password", _credential("password"), required=True)
        user_table.finish()
        if name is None or password is None:
            continue
        if any(u.name == name for u in users):
            problems.add(f"{path}.name", f"user {name!r} is listed twice")
        users.append(User(name, password))
    allow = tuple(table.get_list("allow", network))
    defaults = ListenConfig()
    listen = ListenConfig(
        mixed=mixed,
        users=tuple(users),
        allow=allow,
        handshake_timeout=table.get("handshake_timeout", parse_duration, 10.0),
        idle_timeout=table.get("idle_timeout", parse_duration, 600.0),
        transparent=table.get("transparent", _transparent, None),
        remote_default=table.get("remote_default", _remote_default, defaults.remote_default),
        remote_public=tuple(table.get_list("remote_public", _public_network)),
        max_connections=table.get("max_connections", _limit, defaults.max_connections),
        max_connections_per_client=table.get(
            "max_connections_per_client", _limit, defaults.max_connections_per_client
        ),
        max_handshakes=table.get("max_handshakes", _limit, defaults.max_handshakes),
        max_handshakes_per_client=table.get(
            "max_handshakes_per_client", _limit, defaults.max_handshakes_per_client
        ),
    )
    table.finish()
    check_exposure(listen, problems.add)
    return listen


def check_exposure(listen: ListenConfig, report: Callable[[str, str], None]) -> None:
    """Nothing is an open proxy by accident: a listener other machines can reach needs
    users or an allow-list; the transparent listener, which has no login, an allow-list."""
    if not is_loopback(listen.mixed) and not listen.users and not listen.allow:
        report(
            "listen.mixed",
            f"{listen.mixed} is reachable from other machines; set listen.users (passwords) "
            "or listen.allow (client ranges), or listen on 127.0.0.1",
        )
    if listen.transparent is not None and not is_loopback(listen.transparent) and not listen.allow:
        report(
            "listen.transparent",
            f"{listen.transparent} is reachable from other machines and has no login; set "
            'listen.allow to the LAN\'s client ranges (e.g. ["192.168.1.0/24"])',
        )


# A token is a password a script stores: long enough not to be guessed over the network.
API_TOKEN_MIN = 16
_TOKEN = re.compile(r"^[\x21-\x7e]+$")  # visible ASCII: it travels in an HTTP header


def _api_token(value: Any) -> str:
    token = string(value)
    if not _TOKEN.match(token):
        raise ValueError("use printable ASCII without spaces (it is sent in an HTTP header)")
    if len(token) < API_TOKEN_MIN:
        raise ValueError(
            f"too short ({len(token)} characters; at least {API_TOKEN_MIN}); generate one with "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return token


def flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def _public_path(value: Any) -> str:
    path = string(value)
    if path not in API_PUBLIC_PATHS:
        valid = ", ".join(f'"{p}"' for p in API_PUBLIC_PATHS)
        raise ValueError(f"{path!r} cannot be public (these can: {valid})")
    return path


def _parse_api(data: Any, problems: Problems) -> ApiConfig:
    table = TableReader("api", data, problems, ("listen", "token", "loopback_token", "public"))
    listen = table.get("listen", parse_listen_address)
    token = table.get("token", _api_token)
    loopback_token = table.get("loopback_token", flag, False)
    public = frozenset(table.get_list("public", _public_path))
    table.finish()
    exposed = listen is not None and not is_loopback(listen)
    if exposed and token is None and "token" not in table.data:
        problems.add(
            "api.token",
            f"required because api.listen ({listen}) is reachable from other machines "
            "(or listen on 127.0.0.1)",
        )
    if loopback_token and token is None and "token" not in table.data:
        problems.add("api.loopback_token", "needs api.token")
    return ApiConfig(listen, token, loopback_token, public)


_WHATSAPP_KEYS = (
    "listen",
    "tls_port",
    "chat_port",
    "http_port",
    "media_ports",
    "certificate",
    "key",
    "max_connections",
    "max_per_client",
    "handshake_timeout",
    "idle_timeout",
)


def _listen_ip(value: Any) -> str:
    text = string(value).strip()
    if text == "localhost":
        return "127.0.0.1"
    try:
        return str(ipaddress.ip_address(text.removeprefix("[").removesuffix("]")))
    except ValueError:
        raise ValueError(
            f'{value!r} is not an IP address (the ports are set apart, e.g. "192.168.1.1")'
        ) from None


def _port_or_off(value: Any) -> int | None:
    """A port, 0 for any free port, or false to turn this endpoint off."""
    if value is False:
        return None
    if value == 0 and not isinstance(value, bool):
        return 0
    try:
        return port(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a port (1-65535), 0 (any) or false (off)") from None


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{value!r} is not a positive whole number")
    return value


def _pem_file(base: Path | None) -> Callable[[Any], Path]:
    def convert(value: Any) -> Path:
        path = Path(string(value)).expanduser()
        if base is not None and not path.is_absolute():
            path = base / path
        if not path.is_file():
            raise ValueError(f"{str(path)!r}: no such file")
        return path

    return convert


def _parse_whatsapp_proxy(
    data: Any, listen: ListenConfig, base: Path | None, problems: Problems
) -> WhatsAppProxyConfig | None:
    table = TableReader("whatsapp_proxy", data, problems, _WHATSAPP_KEYS)
    defaults = WhatsAppProxyConfig("127.0.0.1")
    address = table.get("listen", _listen_ip, required=True)
    ports = {
        key: table.get(key, _port_or_off, getattr(defaults, key))
        for key in ("tls_port", "chat_port", "http_port")
    }
    media = (
        tuple(table.get_list("media_ports", _port_or_off))
        if "media_ports" in table.data
        else defaults.media_ports
    )
    certificate = table.get("certificate", _pem_file(base))
    key = table.get("key", _pem_file(base))
    config = WhatsAppProxyConfig(
        listen=address or defaults.listen,
        media_ports=tuple(p for p in media if p is not None),
        certificate=certificate,
        key=key,
        max_connections=table.get("max_connections", _count, defaults.max_connections),
        max_per_client=table.get("max_per_client", _count, defaults.max_per_client),
        handshake_timeout=table.get(
            "handshake_timeout", parse_duration, defaults.handshake_timeout
        ),
        idle_timeout=table.get("idle_timeout", parse_duration, defaults.idle_timeout),
        **ports,
    )
    table.finish()
    if ("certificate" in table.data) != ("key" in table.data):
        given, missing = (
            ("certificate", "key") if "certificate" in table.data else ("key", "certificate")
        )
        problems.add(
            f"whatsapp_proxy.{missing}",
            f"is required with whatsapp_proxy.{given} (a PEM certificate and its private key)",
        )
    elif certificate is not None and key is not None:
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(certificate, key)
        except (ssl.SSLError, OSError) as exc:
            problems.add(
                "whatsapp_proxy.certificate",
                f"cannot use {str(certificate)!r} with key {str(key)!r} ({exc})",
            )
    used: dict[int, str] = {}
    for name, number in [*ports.items(), *(("media_ports", p) for p in config.media_ports)]:
        if not number:
            continue
        if number in used:
            problems.add(f"whatsapp_proxy.{name}", f"port {number} is also {used[number]}")
        used.setdefault(number, name)
    if not (any(p is not None for p in ports.values()) or config.media_ports):
        problems.add("whatsapp_proxy", "every port is off; remove the section to turn it off")
    if address is not None and not is_loopback(Endpoint(address, 1)) and not listen.allow:
        problems.add(
            "whatsapp_proxy.listen",
            f"{address} is reachable from other machines and the WhatsApp app cannot log in "
            "to a proxy; set listen.allow (the phones' address ranges), or listen on 127.0.0.1",
        )
    return config


def _parse_routes(data: Any, problems: Problems) -> list[RouteConfig]:
    routes: list[RouteConfig] = []
    entries = array_of_tables("route", data, problems)
    if not entries:
        problems.add(
            "route", 'at least one [[route]] is needed (e.g. name = "direct", chain = "direct")'
        )
    for path, item in entries:
        table = TableReader(path, item, problems, ("name", "chain", "timeout"))
        name = table.get("name", _route_name, required=True)
        chain = table.get("chain", _chain, required=True)
        timeout = table.get("timeout", parse_duration, 10.0)
        table.finish()
        if name is None or chain is None:
            continue
        if name == DENY:
            problems.add(f"{path}.name", "'deny' is reserved for [default] policy")
            continue
        if any(r.name == name for r in routes):
            problems.add(f"{path}.name", f"route {name!r} is defined twice")
            continue
        routes.append(RouteConfig(name, chain, timeout))
    return routes


def _parse_services(data: Any, route_names: list[str], problems: Problems) -> list[Service]:
    services: list[Service] = []
    for path, item in array_of_tables("service", data, problems):
        table = TableReader(
            path, item, problems, ("name", "domains", "cidrs", "ports", "probes", "routes")
        )
        name = table.get("name", _route_name, required=True)
        domains = table.get_list("domains", domain)
        cidrs = table.get_list("cidrs", network)
        ports = table.get_list("ports", port)

        def probe(value: Any) -> ProbeTarget:
            return ProbeTarget.parse(string(value))

        probes = table.get_list("probes", probe)
        routes = table.get_list("routes", string)
        for i, route in enumerate(routes):
            if route not in route_names:
                problems.add(
                    f"{path}.routes[{i}]",
                    f"no route named {route!r} (routes: {', '.join(route_names) or 'none'})",
                )
        table.finish()
        if name is None:
            continue
        if any(s.name == name for s in services):
            problems.add(f"{path}.name", f"service {name!r} is defined twice")
            continue
        if not domains and not cidrs:
            problems.add(path, f"service {name!r} needs domains or cidrs to match connections")
        services.append(
            Service(
                name=name,
                domains=tuple(dict.fromkeys(domains)),
                cidrs=tuple(cidrs),
                ports=frozenset(ports),
                probes=tuple(probes),
                routes=tuple(routes),
            )
        )
    return services


def default_config_text() -> str:
    """The built-in configuration: packaged as helper/_config/default.toml, or read from
    config/default.toml when running from a source checkout."""
    packaged = resources.files("helper").joinpath("_config", "default.toml")
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    source = Path(__file__).resolve().parent.parent / "config" / "default.toml"
    return source.read_text(encoding="utf-8")


def load_config(path: str | Path | None = None) -> Config:
    """Load a config file, or the built-in one when `path` is None."""
    if path is None:
        return parse_config(default_config_text(), "built-in config")
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"no such file: {file}"], str(file)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"cannot read: {exc}"], str(file)) from None
    config = parse_config(text, str(file), file.parent)
    warn_if_readable(file, config)
    return config


def secrets_held(config: Config) -> list[str]:
    """What in `config` another user of the machine must not read: listener passwords,
    proxy passwords in chains, front access keys, pluggable-transport bridge lines, the
    status API's token."""
    held = ["listen.users passwords"] if config.listen.users else []
    for route in config.routes:
        for layer in route.chain.layers:
            if layer.params.get("password") is not None:
                held.append(f"route {route.name!r} proxy password")
            elif layer.name == "front":
                held.append(f"route {route.name!r} access key")
            elif layer.name == "pt":
                held.append(f"route {route.name!r} bridge line")
    if config.api.token:
        held.append("api.token")
    return held


def warn_if_readable(file: Path, config: Config) -> None:
    """Warn when a file holding secrets can be read by the group or by everyone: on a shared
    machine or a router, any local user could take the passwords and keys from it."""
    if os.name != "posix":
        return  # Windows has ACLs, not mode bits
    held = secrets_held(config)
    try:
        mode = file.stat().st_mode
    except OSError:
        return
    if held and mode & 0o044:
        who = "everyone" if mode & 0o004 else "its group"
        log.warning(
            "%s holds secrets (%s) and %s can read it (mode %03o); fix it with: chmod 600 %s",
            file,
            ", ".join(dict.fromkeys(held)),
            who,
            mode & 0o777,
            file,
        )
