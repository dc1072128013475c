"""transports/fronted/heap.py: glibc's allocator thresholds for the tunnel's large buffers."""

import os

import pytest

from transports.fronted import heap


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
