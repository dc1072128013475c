"""Random-looking bytes that a property test's example decides.

Code under test that takes `urandom=` (or `random=`) gets these instead of os.urandom inside
a `@given` body, so an example replays with the same bytes: Hypothesis replays a failing
example to shrink it and raises FlakyFailure when the replay ends otherwise (an
obfuscated2 init from os.urandom that began like TLS 1 time in 65,536 did exactly that).
tests/test_determinism.py keeps the rule."""

from __future__ import annotations

import random
from collections.abc import Callable


def seeded_urandom(seed: bytes | bytearray | str | int) -> Callable[[int], bytes]:
    """os.urandom's signature, the bytes following from `seed` alone (an example's draw, or
    a constant for a module's fixed value)."""
    return random.Random(bytes(seed) if isinstance(seed, bytearray) else seed).randbytes
