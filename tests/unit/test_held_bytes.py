"""HeldBytes: what tgws and mtproxy streams hand out before reading on."""

from transports.wrapped import HeldBytes


def test_taken_in_order_at_most_n_a_take_given_back_first() -> None:
    held = HeldBytes()
    assert not held
    held.add(b"")
    held.put_back(b"")
    assert not held  # nothing empty is held
    held.add(b"cdef")
    held.put_back(memoryview(b"ab"))
    assert held.take(1) == b"a"
    assert held.take(10) == b"b"
    assert held.take(3) == b"cde"
    held.put_back(b"xy")
    assert [held.take(8), held.take(8)] == [b"xy", b"f"]
    assert not held
