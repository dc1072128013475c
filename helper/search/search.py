"""The strategy search as a state machine, without I/O: it says which attempt to make next
(a candidate through one of a service's probe targets, or through all of them), is told the
outcome, and ends with a winner or one verdict per service. The driver (runner.py) makes the
attempts; tests feed outcomes event by event.

Per service:

- the direct route's verdict chooses the plan: it works (nothing to search), its addresses do
  not answer (only another resolver can help: no ClientHello trick changes where packets go),
  its DNS lies (resolvers first), or something reads the ClientHello (every trick);
- a candidate is screened through one of the service's server names (they take turns, so the
  handshakes spread over names), then confirmed through every probe target: `confirm`
  successes in a row make it stable, and the search of that service stops there;
- `fake`'s TTL is searched in 2-16 by halving: a reset says the decoy died before the DPI
  (too low), any other failure that it reached the server (too high);
- a winner for one service is tried first for the others;
- at most `max_attempts` attempts per service; when nothing works, one verdict says why.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .candidates import FIRST, OTHER_CUTS, Candidate, fake, with_resolver

__all__ = ["Attempt", "Outcome", "Search", "ServiceSearch", "Tried"]

TTL_RANGE = (2, 16)
_FAKE = "fake-ttl-search"  # the queue's marker for the TTL search
RESET = "connection_reset"
# Failures of a direct connect that say the addresses themselves are blocked.
ADDRESS_FAILURES = {
    "generic_timeout_error",
    "connection_refused",
    "network_unreachable",
    "host_unreachable",
}


@dataclass(frozen=True)
class Attempt:
    service: str
    candidate: Candidate
    target: str | None  # screening: one probe target; None: every target (confirming)

    @property
    def stage(self) -> str:
        return "screen" if self.target is not None else "confirm"


@dataclass(frozen=True)
class Outcome:
    ok: bool
    failure: str | None = None
    op: str | None = None
    latency_ms: float | None = None
    detail: str = ""

    def describe(self) -> str:
        if self.ok:
            return "works" + (f", {self.latency_ms:.0f} ms" if self.latency_ms is not None else "")
        return f"{self.failure} during {self.op}" if self.op else str(self.failure)


@dataclass(frozen=True)
class Tried:
    attempt: Attempt
    outcome: Outcome

    def to_json(self) -> dict[str, Any]:
        return {
            "chain": self.attempt.candidate.chain,
            "technique": self.attempt.candidate.technique,
            "stage": self.attempt.stage,
            "target": self.attempt.target,
            "ok": self.outcome.ok,
            "failure": self.outcome.failure,
            "op": self.outcome.op,
            "latency_ms": None
            if self.outcome.latency_ms is None
            else round(self.outcome.latency_ms, 1),
        }


@dataclass
class _Score:
    successes: int = 0
    attempts: int = 0
    latencies: list[float] = field(default_factory=list)

    def key(self) -> tuple[float, float]:
        ratio = self.successes / self.attempts if self.attempts else 0.0
        latency = sorted(self.latencies)[len(self.latencies) // 2] if self.latencies else 1e9
        return (-ratio, latency)


class ServiceSearch:
    def __init__(
        self,
        service: str,
        targets: Sequence[str],
        *,
        direct: Outcome | None = None,
        packets: bool = True,
        resolvers: Iterable[str] = (),
        confirm: int = 2,
        max_attempts: int = 30,
        tls_targets: Sequence[str] | None = None,
    ) -> None:
        """`targets`: the service's probe targets; `tls_targets`: those with a server name
        (screenings take turns over them; default: all targets); `resolvers`: encrypted
        resolvers (`resolve:doh=...`) to try; `packets`: whether packet layers can run."""
        if not targets:
            raise ValueError(f"{service}: a search needs probe targets")
        self.service = service
        self.targets = list(targets)
        self.names = list(tls_targets or ()) or self.targets
        self.direct = direct
        self.packets = packets
        self.confirm = max(1, confirm)
        self.max_attempts = max_attempts
        self.tried: list[Tried] = []
        self.winner: Candidate | None = None
        self.verdict = ""
        self.done = False
        self.scores: dict[Candidate, _Score] = {}
        self._pending: Attempt | None = None
        self._confirming: Candidate | None = None
        self._streak = 0
        self._turn = 0
        self._ttl = TTL_RANGE
        self._seen: set[str] = set()
        self._queue: list[Candidate | str] = []
        self._queue = self._plan(list(resolvers))

    # --- the plan ------------------------------------------------------------------------

    def _plan(self, resolvers: list[str]) -> list[Candidate | str]:
        resolver_candidates = [c for r in resolvers for c in with_resolver(r)]
        direct = self.direct
        tricks: list[Candidate | str] = [*FIRST, _FAKE, *OTHER_CUTS]
        if direct is not None and direct.ok:
            self._finish(None, "direct works: nothing to search")
            return []
        if direct is not None and (direct.failure == "dns_spoofed" or direct.op == "resolve"):
            return [*resolver_candidates, *tricks]
        if direct is not None and direct.op == "connect" and direct.failure in ADDRESS_FAILURES:
            if not resolver_candidates:
                self._finish(
                    None,
                    f"the service's addresses do not answer (direct: {direct.describe()}): no "
                    "serverless strategy changes where packets go; a route through a server "
                    "is needed",
                )
            return list(resolver_candidates)
        return [*tricks, *resolver_candidates]

    def prefer(self, candidate: Candidate) -> None:
        """Try `candidate` next (it won for another service)."""
        if self.done or candidate.chain in self._seen or candidate in self._queue:
            return
        if candidate.packets and not self.packets:
            return
        self._queue.insert(0, candidate)

    # --- attempts ------------------------------------------------------------------------

    def next(self) -> Attempt | None:
        """The next attempt to make (None: finished, or one is still running)."""
        if self.done or self._pending is not None:
            return None
        if len(self.tried) >= self.max_attempts:
            self._give_up(f"stopped after {len(self.tried)} attempts")
            return None
        if self._confirming is not None:
            self._pending = Attempt(self.service, self._confirming, None)
            return self._pending
        candidate = self._next_candidate()
        if candidate is None:
            self._give_up("")
            return None
        self._seen.add(candidate.chain)
        target = self.names[self._turn % len(self.names)]
        self._turn += 1
        self._pending = Attempt(self.service, candidate, target)
        return self._pending

    def _next_candidate(self) -> Candidate | None:
        while self._queue:
            head = self._queue[0]
            if head == _FAKE:
                low, high = self._ttl
                if not self.packets or low > high:
                    self._queue.pop(0)
                    continue
                candidate = fake((low + high) // 2)
                if candidate.chain in self._seen:  # tried already (a winner elsewhere)
                    self._ttl = (low, (low + high) // 2 - 1)
                    continue
                return candidate
            self._queue.pop(0)
            assert isinstance(head, Candidate)
            if head.chain in self._seen or (head.packets and not self.packets):
                continue
            return head
        return None

    def record(self, attempt: Attempt, outcome: Outcome) -> None:
        if attempt != self._pending:
            raise ValueError(f"{attempt} is not the attempt this search is waiting for")
        self._pending = None
        self.tried.append(Tried(attempt, outcome))
        candidate = attempt.candidate
        score = self.scores.setdefault(candidate, _Score())
        score.attempts += 1
        if outcome.ok:
            score.successes += 1
            if outcome.latency_ms is not None:
                score.latencies.append(outcome.latency_ms)
        if candidate.technique == "fake" and attempt.stage == "screen" and not outcome.ok:
            self._steer_ttl(candidate, outcome)
        if not outcome.ok:
            self._confirming, self._streak = None, 0
            if candidate.technique == "fake" and attempt.stage == "confirm":
                self._ttl = (1, 0)  # the right TTL is flaky here: leave the search
            return
        self._confirming, self._streak = candidate, self._streak + 1
        if self._streak >= self.confirm:
            self._confirming = None
            self._finish(candidate, f"works via {candidate.route_name} ({candidate.chain})")

    def _steer_ttl(self, candidate: Candidate, outcome: Outcome) -> None:
        ttl = int(candidate.chain.split("ttl=")[1].split()[0])
        low, high = self._ttl
        if outcome.failure == RESET:  # the DPI read the real hello: the decoy died before it
            self._ttl = (max(low, ttl + 1), high)
        else:  # the decoy reached the server
            self._ttl = (low, min(high, ttl - 1))

    # --- the end -------------------------------------------------------------------------

    def _finish(self, winner: Candidate | None, verdict: str) -> None:
        self.winner, self.verdict, self.done = winner, verdict, True
        self._queue.clear()

    def _give_up(self, why: str) -> None:
        # A decoy that reached the server only says its TTL was too high: not why nothing works.
        failures = [
            t.outcome
            for t in self.tried
            if not t.outcome.ok
            and not (t.attempt.candidate.technique == "fake" and t.outcome.failure != RESET)
        ]
        count = len({t.attempt.candidate.chain for t in self.tried})
        if not failures:
            if self.direct is not None and not self.direct.ok:
                text = f"direct: {self.direct.describe()}"
            else:
                text = "no strategy to try"
            verdict = f"no serverless strategy works ({text}); a route through a server is needed"
        elif all(f.failure == RESET for f in failures):
            verdict = (
                f"the network reads the server name however the ClientHello is cut, reordered "
                f"or disguised ({count} strategies tried, every one reset); a route through a "
                "server is needed"
            )
        else:
            common, times = Counter(f.describe() for f in failures).most_common(1)[0]
            verdict = (
                f"no serverless strategy works ({count} tried; most often {common}, "
                f"{times}x); a route through a server is needed"
            )
        if why:
            verdict += f" ({why})"
        if not self.packets:
            verdict += "; packet-level tricks were not tried (Linux only)"
        self._finish(None, verdict)

    def ranked(self) -> list[Candidate]:
        """The candidates that worked at least once, best first: by share of successes,
        then by median latency."""
        worked = [c for c, s in self.scores.items() if s.successes]
        return sorted(worked, key=lambda c: self.scores[c].key())

    def to_json(self) -> dict[str, Any]:
        return {
            "winner": None
            if self.winner is None
            else {"route": self.winner.route_name, "chain": self.winner.chain},
            "verdict": self.verdict,
            "tried": [t.to_json() for t in self.tried],
        }


class Search:
    """The searches of several services: one attempt per service at a time (their server
    names differ, so their handshakes do not add up), a winner shared."""

    def __init__(self, searches: Iterable[ServiceSearch]) -> None:
        self.services = {s.service: s for s in searches}

    @property
    def done(self) -> bool:
        return all(s.done for s in self.services.values())

    def next_attempts(self) -> list[Attempt]:
        return [a for s in self.services.values() if (a := s.next()) is not None]

    def record(self, attempt: Attempt, outcome: Outcome) -> None:
        search = self.services[attempt.service]
        search.record(attempt, outcome)
        if search.winner is not None:
            for other in self.services.values():
                if other is not search:
                    other.prefer(search.winner)
