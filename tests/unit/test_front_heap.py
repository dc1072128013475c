"""transports/fronted/heap.py: glibc's allocator thresholds for the tunnel's large buffers."""

import os

import pytest

from transports.fronted import heap


def test_set_once_on_glibc_and_the_answer_kept() -> None:
    first = heap.keep_large_buffers()
    assert heap.keep_large_buffers() is first
    glibc = (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    if glibc and not any(os.environ.get(name) for name in heap.USER_SETTINGS):
        assert first is True


@pytest.mark.parametrize("name", heap.USER_SETTINGS)
def test_the_users_own_allocator_settings_win(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "1048576")
    assert heap._set_thresholds() is False


def test_another_c_library_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    def musl(name: str) -> str:
        raise ValueError("unrecognized configuration name")

    monkeypatch.setattr(heap.os, "confstr", musl)
    assert heap._is_glibc() is False
    assert heap._set_thresholds() is False
