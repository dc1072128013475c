"""`[base]`: what a config file builds on. A file given with `-c` adds to and overrides the
built-in config (load.py layers it); `config = "none"` makes it stand alone."""

from __future__ import annotations

from dataclasses import dataclass

from .schema import setting
from .values import choice, entry_name

BUILT_IN, NONE = "built-in", "none"
AFTER, BEFORE = "after", "before"

# In a service's `routes`: the routes the service would have without the list.
OTHER_ROUTES = "..."


@dataclass(frozen=True)
class BaseTable:
    config: str = setting(
        BUILT_IN,
        choice((BUILT_IN, NONE)),
        '`"built-in"`: this file builds on the built-in config — its keys replace the '
        "built-in ones, its routes and services join them ([Layering](#layering)). "
        '`"none"`: this file alone, as written.',
    )
    routes: str = setting(
        AFTER,
        choice((AFTER, BEFORE)),
        'Where this file\'s new routes go in the order of preference: `"after"` the built-in '
        'routes, or `"before"` them. A route with a built-in route\'s name stays in the '
        'built-in\'s place. For one service: `"..."` in its `routes` ([Layering](#layering)).',
    )
    remove_routes: tuple[str, ...] = setting(
        [],
        each=entry_name,
        doc='Built-in routes this file takes out, by name (`["local-tor", "fake"]`): they are '
        "not tried, not probed, and dropped from the built-in services' `routes`; a "
        "`[default] policy` naming one falls back as if unset. A name the built-in config "
        "does not have is an error ([Layering](#layering)).",
    )
    remove_services: tuple[str, ...] = setting(
        [],
        each=entry_name,
        doc='Built-in services this file takes out, by name (`["signal"]`): no probes, no '
        "routing of its own; its destinations are then treated as `[default] policy` says. "
        "A name the built-in config does not have is an error ([Layering](#layering)).",
    )
