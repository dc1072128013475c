"""What `detour config check` and `detour config show` say of the subscriptions: each one's
pool from its last good list (the state directory), every node with its secrets hidden and
what becomes of it: active (among the first `keep` usable ones, which a running detour then
ranks by its probes), standby, disabled by a `nodes` override, or refused (a private address
while `allow_private` is off). Pure given the stored lists."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from transports import parse_chain

from ..config.subscription import hide_url, pool_notes
from .formats import private_node
from .store import Stored, load

__all__ = ["node_states", "pool_lines"]

Loader = Callable[[str], "Stored | None"]
# A node's chain -> why this computer cannot use it (a proxy core missing), or None.
Check = Callable[[Any], "str | None"]


def node_states(
    subscription: Any, stored: Stored | None, check: Check | None = None
) -> list[tuple[str, str, str]]:
    """(route name, the node's chain without secrets, what becomes of it) for each node."""
    overrides = {o.node: o for o in subscription.nodes}
    out = []
    usable = 0
    for node in stored.nodes if stored is not None else ():
        name = f"{subscription.name}.{node.slug}"[:64]
        override = overrides.get(node.slug)
        if override is not None and not override.enabled:
            state = "disabled (nodes override)"
        elif not subscription.allow_private and private_node(node.chain):
            state = "refused: a private address (allow_private = false)"
        elif check is not None and (reason := check(parse_chain(node.chain))) is not None:
            state = f"cannot run here: {reason}"
        else:
            usable += 1
            state = "active" if usable <= subscription.keep else "standby"
        out.append((name, str(parse_chain(node.chain)), state))
    return out


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _when(stored: Stored) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(stored.fetched_at))


def _summary(subscription: Any, stored: Stored | None) -> str:
    uses = ", ".join(subscription.services) or "the services whose routes name it"
    head = (
        f"{subscription.name} ({hide_url(subscription.url)}, every "
        f"{_duration(subscription.refresh)}, keep {subscription.keep}; for {uses}): "
    )
    if stored is None:
        return head + "no list fetched yet"
    return head + f"{len(stored.nodes)} nodes in the last good list ({_when(stored)})"


def pool_lines(
    config: Any, loader: Loader = load, comment: str = "", check: Check | None = None
) -> list[str]:
    """Lines describing every subscription and its pool (`comment`: a prefix such as "# ")."""
    out = []
    active = False
    for subscription in config.subscriptions:
        stored = loader(subscription.name)
        out.append(comment + _summary(subscription, stored))
        states = node_states(subscription, stored, check)
        name_width = max((len(name) for name, _, _ in states), default=0)
        state_width = max((len(state) for _, _, state in states if len(state) < 10), default=0)
        for name, shown, state in states:
            active = active or state == "active"
            out.append(f"{comment}  {name.ljust(name_width)}  {state.ljust(state_width)}  {shown}")
    out += [f"{comment}{note}" for note in pool_notes(config)]
    if active:
        out.append(
            f"{comment}(active: the first `keep` usable nodes when detour starts; then the "
            "probes rank them)"
        )
    return out
