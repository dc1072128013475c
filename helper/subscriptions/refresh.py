"""Subscriptions kept fresh in a running engine: each list fetched when it is due (at start
when there is no list yet or the last is older than `refresh`), through the first route that
works (`via`, or every route that is not a subscription's), read, stored as the last good
list, and the engine switched to the new pool (a reload: established connections keep their
routes). A fetch or a list that fails keeps the last good list and is tried again after a
tenth of `refresh`. Logs name the subscription and its host, never the URL's path or a
node's secret."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from transports import DialError

from ..config.subscription import SubscriptionConfig, hide_url, pool_notes, with_pools
from . import store
from .fetch import fetch_list
from .formats import Parsed, SubscriptionError, parse_list

__all__ = ["Refreshed", "SubscriptionRefresher"]

log = logging.getLogger("detour.subscriptions")

FETCH_TIMEOUT = 30.0
TICK = 0.5  # the least time between two looks at the schedule
IDLE = 5.0  # the most (a reload may have brought a subscription in)
MIN_RETRY = 1.0


@dataclass(frozen=True)
class Refreshed:
    ok: bool
    line: str  # what happened, in one line without a secret
    nodes: int = 0


class SubscriptionRefresher:
    def __init__(self, engine: Any, clock=time.time) -> None:
        # The engine (helper/engine.py, not imported: it starts this).
        self.engine = engine
        self.clock = clock
        self._due: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def start(self) -> None:
        if self._task is None:
            self.note_empty_pools()
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="detour-subscriptions"
            )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _subscriptions(self) -> tuple[SubscriptionConfig, ...]:
        return self.engine.config.subscriptions

    def _next_due(self, subscription: SubscriptionConfig) -> float:
        due = self._due.get(subscription.name)
        if due is None:
            stored = store.load(subscription.name)
            due = stored.fetched_at + subscription.refresh if stored else 0.0
            self._due[subscription.name] = due
        return due

    async def _run(self) -> None:
        while True:
            wait = IDLE
            for subscription in self._subscriptions():
                wait = min(wait, max(TICK, self._next_due(subscription) - self.clock()))
                if self.clock() >= self._next_due(subscription):
                    try:
                        await self.refresh(subscription.name)
                    except Exception:
                        log.exception("subscription %s: refresh failed", subscription.name)
                        self._due[subscription.name] = self.clock() + max(
                            MIN_RETRY, subscription.refresh / 10
                        )
            await asyncio.sleep(wait)

    async def refresh(self, name: str) -> Refreshed:
        """Fetch subscription `name` now; on success store its list and switch the engine to
        it. On failure the last good list stays."""
        async with self._lock:
            subscription = next((s for s in self._subscriptions() if s.name == name), None)
            if subscription is None:
                return Refreshed(False, f"no subscription named {name!r}")
            try:
                parsed = parse_list(
                    await self._fetch(subscription), allow_private=subscription.allow_private
                )
            except (DialError, SubscriptionError, OSError, TimeoutError) as exc:
                return self._failed(subscription, _reason(exc))
            self._due[name] = self.clock() + subscription.refresh
            store.save(name, parsed.nodes)
            await self._apply()
            return self._done(subscription, parsed)

    async def _fetch(self, subscription: SubscriptionConfig) -> bytes:
        router = self.engine.router
        pools = tuple(f"{s.name}." for s in self._subscriptions())
        routes = [r for r in router.routes if not r.name.startswith(pools)]
        if subscription.via:
            by_name = {r.name: r for r in routes}
            routes = [by_name[n] for n in subscription.via if n in by_name]
        tls = self.engine.config.tls.client_context()
        errors = []
        for route in routes:
            try:
                return await fetch_list(route, subscription.url, tls, FETCH_TIMEOUT)
            except (DialError, OSError, TimeoutError) as exc:
                errors.append(f"{route.name}: {_reason(exc)}")
        raise SubscriptionError(
            "no route reached it (" + "; ".join(errors[:3]) + ")" if errors else "no route"
        )

    async def _apply(self) -> None:
        def stored(name: str):
            found = store.load(name)
            return found.nodes if found is not None else None

        await self.engine.reload(with_pools(self.engine.config, stored))
        self.note_empty_pools()

    def note_empty_pools(self) -> None:
        """Log each pool without nodes, and the services it leaves on their other routes."""
        for note in pool_notes(self.engine.config):
            log.warning(note, extra={"event": "subscription_empty"})

    def _failed(self, subscription: SubscriptionConfig, reason: str) -> Refreshed:
        self._due[subscription.name] = self.clock() + max(MIN_RETRY, subscription.refresh / 10)
        kept = store.load(subscription.name)
        keeping = (
            f"keeping the last good list ({len(kept.nodes)} nodes)"
            if kept is not None
            else "no list yet"
        )
        line = (
            f"subscription {subscription.name} ({hide_url(subscription.url)}): refresh "
            f"failed: {reason}; {keeping}"
        )
        log.warning(line, extra={"event": "subscription_failed"})
        return Refreshed(False, line, len(kept.nodes) if kept else 0)

    def _done(self, subscription: SubscriptionConfig, parsed: Parsed) -> Refreshed:
        line = f"subscription {subscription.name}: {len(parsed.nodes)} nodes ({parsed.format})" + (
            f", {len(parsed.refused)} refused" if parsed.refused else ""
        )
        log.info(line, extra={"event": "subscription_refreshed"})
        for reason in parsed.refused[:20]:
            log.info("subscription %s: refused %s", subscription.name, reason)
        return Refreshed(True, line, len(parsed.nodes))


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:300]
