"""transports/heap.py: glibc's allocator thresholds for large short-lived buffers."""

import os

import pytest

from transports import heap


def test_set_once_on_glibc_and_the_answer_kept() -> None:
    first = heap.keep_large_buffers()
    assert heap.keep_large_buffers() is first
    glibc = (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    if glibc and not heap._user_settings():
        assert first is True


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MALLOC_MMAP_THRESHOLD_", "1048576"),
        ("MALLOC_TRIM_THRESHOLD_", "1048576"),
        ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1048576"),
    ],
)
def test_the_users_own_allocator_settings_win(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    assert heap._set_thresholds() is False


def test_other_glibc_tunables_do_not_count(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in heap.USER_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.cpu.hwcaps=-AVX512F")
    assert heap._user_settings() is False


def test_another_c_library_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    def musl(name: str) -> str:
        raise ValueError("unrecognized configuration name")

    monkeypatch.setattr(heap.os, "confstr", musl)
    assert heap._is_glibc() is False
    assert heap._set_thresholds() is False


async def test_the_engine_keeps_large_buffers_when_it_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every detour that serves (run, headless or the terminal UI) starts an Engine."""
    from helper import engine as engine_module
    from helper.config import parse_config
    from tests.conftest import config_text

    calls: list[str] = []
    monkeypatch.setattr(engine_module, "keep_large_buffers", lambda: calls.append("kept"))
    engine = engine_module.Engine(parse_config(config_text()), probe_on_start=False)

    async def no_listener() -> None:  # the call comes first: no socket needed to see it
        assert calls == ["kept"]
        raise OSError("no listener in a unit test")

    monkeypatch.setattr(engine.server, "start", no_listener)
    try:
        with pytest.raises(OSError, match="no listener"):
            await engine.start()
    finally:
        await engine.stop()
    assert calls == ["kept"]
