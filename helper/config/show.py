"""`detour config show`: the config detour runs with, as TOML, each key marked with where its
value comes from (the file, the built-in config, or the schema's default), secrets hidden.

Values are printed as the file that gave them wrote them, and defaults as the schema states
them, so the output is a config file that means the same (but for the hidden secrets)."""

from __future__ import annotations

from typing import Any

from .base import BUILT_IN
from .file import SECTIONS
from .load import Layer, Loaded
from .routes import RouteConfig
from .schema import Setting, settings_of
from .text import toml_key, toml_value

DEFAULT = "default"
HIDDEN = "***"
_COMMENT_AT = 44  # the column origins line up at, where the values are short enough
_LINE = 80  # a list longer than this gets one item a line


def show(loaded: Loaded) -> str:
    config, layers = loaded.config, loaded.layers
    out = [*_header(layers), ""]
    out += _removed(layers)
    for section, (schema, array) in SECTIONS.items():
        if section == "base" or array:
            continue
        if section == "api" and config.api.listen is None:
            out += ["# [api]: off (no listen address)", ""]
            continue
        if section == "whatsapp_proxy" and config.whatsapp_proxy is None:
            out += ["# [whatsapp_proxy]: off", ""]
            continue
        if section == "mtproto_proxy" and config.mtproto_proxy is None:
            out += ["# [mtproto_proxy]: off", ""]
            continue
        if section == "signal_proxy" and config.signal_proxy is None:
            out += ["# [signal_proxy]: off", ""]
            continue
        tables = [_table(layer, section) for layer in layers]
        lines = []
        for key, spec in settings_of(schema):
            origin, value = _written(layers, tables, key)
            if section == "default" and key == "policy":
                value = config.default_policy  # when nobody wrote it: what the routes give
            elif origin == DEFAULT:
                value = spec.default
            if value is None:
                continue  # not set
            lines.append((key, _hide(spec, value), origin))
        out += [f"[{section}]", *_aligned(lines), ""]
    # The file's routes and services (a subscription's nodes are shown with it, below).
    for route in (config.pool_base or config).routes:
        out += [*_entry("route", route.name, RouteConfig, layers, {}), ""]
    for service in (config.pool_base or config).services:
        effective = {"routes": list(service.routes)}
        out += [*_entry("service", service.name, SECTIONS["service"][0], layers, effective), ""]
    out += _subscriptions(config, layers)
    return "\n".join(out).rstrip("\n") + "\n"


def _header(layers: tuple[Layer, ...]) -> list[str]:
    names = [layer.name for layer in layers]
    if names == [BUILT_IN]:
        what = "the built-in config"
    elif BUILT_IN in names:
        what = f"{names[-1]} on the built-in config"
    else:
        what = f'{names[-1]} alone ([base] config = "none")'
    sources = [n if n != BUILT_IN else "built-in (detour config default)" for n in names]
    return [
        f"# The configuration detour runs with: {what}.",
        "# After each key, where its value comes from:",
        *(f"#   {source}" for source in sources),
        "#   default (written nowhere: the value detour uses without it)",
        "# Secrets are shown as ***.",
    ]


def _entry(
    array: str,
    name: str,
    schema: type,
    layers: tuple[Layer, ...],
    effective: dict[str, Any],
) -> list[str]:
    """One [[route]] or [[service]] table: its keys as the layers wrote them."""
    tables = [_named_entry(layer, array, name) for layer in layers]
    writers = [layer.name for layer, table in zip(layers, tables, strict=True) if table]
    origin = writers[0] if writers else DEFAULT
    if len(writers) > 1:
        origin += ", changed in " + ", ".join(writers[1:])
    lines = []
    for key, spec in settings_of(schema):
        written_by, value = _written(layers, tables, key)
        if key in effective:
            value = effective[key]  # what `"..."` and the layers made of it
        elif written_by == DEFAULT:
            value = spec.default
        if value is None:
            continue
        lines.append((key, _hide(spec, value), written_by))
    return [f"[[{array}]]  # {origin}", *_aligned(lines)]


def _written(layers: tuple[Layer, ...], tables: list[dict[str, Any]], key: str) -> tuple[str, Any]:
    """(the highest layer that wrote `key`, what it wrote), or (DEFAULT, None)."""
    for layer, table in reversed(list(zip(layers, tables, strict=True))):
        if key in table:
            return layer.name, table[key]
    return DEFAULT, None


def _table(layer: Layer, section: str) -> dict[str, Any]:
    table = layer.data.get(section, {})
    return table if isinstance(table, dict) else {}


def _named_entry(layer: Layer, array: str, name: str) -> dict[str, Any]:
    entries = layer.data.get(array, [])
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and entry.get("name") == name:
            return entry
    return {}


def _hide(spec: Setting, value: Any) -> Any:
    if spec.secret is True:
        return HIDDEN
    if callable(spec.secret) and isinstance(value, str):
        return spec.secret(value)
    if spec.tables is not None and isinstance(value, list):
        settings = dict(settings_of(spec.tables))
        return [
            {k: _hide(settings[k], v) if k in settings else v for k, v in item.items()}
            if isinstance(item, dict)
            else item
            for item in value
        ]
    return value


def _aligned(keys: list[tuple[str, Any, str]]) -> list[str]:
    """`key = value  # origin` lines, the origins lined up; a list too long for one line
    gets one item a line."""
    lines = [
        (f"{toml_key(key)} = {toml_value(value)}", value, origin) for key, value, origin in keys
    ]
    width = max((len(text) for text, _, _ in lines if len(text) < _COMMENT_AT), default=0)
    out = []
    for text, value, origin in lines:
        if len(text) > _LINE and isinstance(value, list):
            key = text.split(" = ", 1)[0]
            out.append(f"{f'{key} = ['.ljust(width)}  # {origin}")
            out += [f"    {toml_value(item)}," for item in value]
            out.append("]")
        else:
            out.append(f"{text.ljust(width)}  # {origin}")
    return out


def _removed(layers: tuple[Layer, ...]) -> list[str]:
    """A comment for each built-in route or service a file took out ([base] remove_routes,
    remove_services): not in the config, so not printed, but said where it went."""
    out = []
    for layer in layers:
        table = _table(layer, "base")
        for key, array in (("remove_routes", "route"), ("remove_services", "service")):
            names = table.get(key, [])
            for name in names if isinstance(names, list) else []:
                what = f"# [[{array}]] {toml_value(name)} (built-in)"
                out.append(f"{what}: removed by {layer.name} ([base] {key})")
    return [*out, ""] if out else []


def _subscriptions(config: Any, layers: tuple[Layer, ...]) -> list[str]:
    """Each [[subscription]] table, then its pool (helper/subscriptions/describe.py)."""
    if not config.subscriptions:
        return []
    from ..subscriptions.describe import pool_lines

    schema = SECTIONS["subscription"][0]
    out = []
    for subscription in config.subscriptions:
        out += [*_entry("subscription", subscription.name, schema, layers, {}), ""]
    return [
        *out,
        "# The pools, from each subscription's last good list:",
        *pool_lines(config, comment="#   "),
        "",
    ]
