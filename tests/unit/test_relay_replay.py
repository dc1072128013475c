"""Access tokens are unique and the relay's replay cache remembers each for as long as it is
valid, in one database every relay process of a state directory shares."""

from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from helper.relay.replay import ReplayCache
from transports import Endpoint
from transports.fronted.accesskey import (
    TOKEN_WINDOW,
    AccessKey,
    access_token,
    check_access_token,
    read_access_token,
)

KEY = AccessKey(Endpoint("127.0.0.1", 1), "f.test", "h.test", "/p", "0" * 64, "a.b", b"k" * 32)
TOKENS = {"a.b": KEY.token}
NOW = 1_800_000_000.0


def test_tokens_of_one_second_differ_and_each_has_its_own_ident() -> None:
    one, two = access_token(KEY, NOW), access_token(KEY, NOW)
    assert one != two
    first, second = (
        read_access_token(one, TOKENS, "/p", NOW),
        read_access_token(two, TOKENS, "/p", NOW),
    )
    assert first is not None and second is not None
    assert first.name == second.name == "a.b"  # a name with a dot still reads right
    assert first.ident != second.ident
    assert first.expires == int(NOW) + TOKEN_WINDOW
    assert read_access_token(one, TOKENS, "/p", NOW).ident == first.ident  # type: ignore[union-attr]


def test_a_token_from_before_the_nonce_is_still_valid() -> None:
    from transports.fronted.accesskey import _mac

    stamp = int(NOW)
    old = f"a.b.{stamp}.{_mac(KEY.token, 'a.b', stamp, '/p')}"
    assert check_access_token(old, TOKENS, "/p", NOW) == "a.b"
    # A nonce cut out or changed breaks the MAC.
    new = access_token(KEY, NOW)
    name_stamp, nonce, mac = new.rsplit(".", 2)
    assert check_access_token(f"{name_stamp}.{mac}", TOKENS, "/p", NOW) is None
    assert check_access_token(f"{name_stamp}.n{'0' * 16}.{mac}", TOKENS, "/p", NOW) is None


def test_the_cache_remembers_until_expiry(tmp_path: Path) -> None:
    cache = ReplayCache(tmp_path)
    assert cache.shared
    assert cache.first_use(b"a", expires=100, now=50)
    assert not cache.first_use(b"a", expires=100, now=60)
    assert ReplayCache(tmp_path).first_use(b"a", expires=100, now=60) is False  # another relay
    assert cache.first_use(b"a", expires=300, now=101)  # expired, forgotten: (its token too)
    assert stat.S_IMODE(os.stat(tmp_path / "replay.db").st_mode) == 0o600


def test_a_read_only_directory_keeps_the_cache_in_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    original = os.open
    os.open = refuse  # type: ignore[assignment]
    try:
        cache = ReplayCache(tmp_path)
    finally:
        os.open = original  # type: ignore[assignment]
    assert not cache.shared
    assert "do not see each other's tokens" in caplog.text
    assert cache.first_use(b"a", 100, 50) and not cache.first_use(b"a", 100, 60)


def _try(directory: str, start, results) -> None:
    cache = ReplayCache(Path(directory))
    start.wait()
    results.put(cache.first_use(b"same token", expires=2**40))


def test_processes_racing_with_one_token_let_one_through(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    start, results = context.Event(), context.Queue()
    ReplayCache(tmp_path).close()  # the database exists before the race
    workers = [context.Process(target=_try, args=(str(tmp_path), start, results)) for _ in range(6)]
    for worker in workers:
        worker.start()
    start.set()
    verdicts = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    assert sorted(verdicts) == [False] * 5 + [True]
