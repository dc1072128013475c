"""The fast path's read buffer (helper/proxy/relay.py `_Scratch`): a buffer a transport still
holds a view of is never handed out again; one it has let go of is reused."""

from __future__ import annotations

from helper.proxy import relay as relay_module
from helper.proxy.relay import CHUNK, LENT_KEPT, _in_use, _Scratch


def test_in_use_sees_views_of_the_buffer_and_leaves_it_unchanged() -> None:
    buffer = bytearray(b"abc") + bytearray(CHUNK - 3)
    assert not _in_use(buffer)
    held = memoryview(buffer)[1:5]  # a transport keeping the unsent rest
    assert _in_use(buffer)
    cast = memoryview(buffer).cast("B")[7:]  # (as uvloop keeps it)
    del held
    assert _in_use(buffer)
    del cast
    assert not _in_use(buffer)
    assert len(buffer) == CHUNK and buffer[:3] == b"abc"


def test_a_held_buffer_is_not_reused_and_a_released_one_is() -> None:
    scratch = _Scratch()
    first = scratch.view
    first[:5] = b"hello"
    kept = first[:5]  # the transport could not send it at once
    del first
    scratch.retire()
    assert scratch.view.obj is not kept.obj
    scratch.view[:5] = b"world"  # the next read lands elsewhere ...
    assert bytes(kept) == b"hello"  # ... and the held bytes are intact
    second = scratch.view.obj
    also_kept = scratch.view[:5]
    scratch.retire()  # both held: a third buffer
    assert scratch.view.obj is not kept.obj and scratch.view.obj is not second
    del also_kept  # that transport has sent its part
    scratch.retire()
    assert scratch.view.obj is second
    lent = kept.obj
    del kept
    scratch.view[:1] = b"."
    held = scratch.view[:1]
    scratch.retire()
    assert scratch.view.obj is lent
    assert bytes(held) == b"."


def test_no_fresh_buffer_when_transports_let_go(monkeypatch) -> None:
    scratch = _Scratch()
    made = 0
    real = bytearray

    def counting(size: int) -> bytearray:
        nonlocal made
        made += 1
        return real(size)

    monkeypatch.setattr(relay_module, "bytearray", counting, raising=False)
    for _ in range(100):
        held = scratch.view[:10]
        scratch.retire()
        del held
    assert made <= 2
    assert len(scratch._lent) <= 1


def test_the_lent_list_is_bounded() -> None:
    scratch = _Scratch()
    held = []
    for _ in range(3 * LENT_KEPT):
        held.append(scratch.view[:1])
        scratch.retire()
    assert len(scratch._lent) <= LENT_KEPT
    assert len({id(view.obj) for view in held}) == 3 * LENT_KEPT  # none handed out twice
