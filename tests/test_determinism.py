"""Property tests are deterministic: nothing random decides an example's outcome.

Hypothesis replays a failing example to shrink it; when the replay ends otherwise it raises
FlakyFailure, and the failure it found is lost. So inside a `@given` test, and the functions
of its module it calls (the `_prop_*` functions of a grouped test, their helpers), this reads
the source for calls of os.urandom, secrets, the random module (a `random.Random(seed)` is
seeded and allowed), the clock (time.time, time.monotonic, datetime.now ...) and uuid; for an
obfuscated2 `initiate()` without `urandom=` (the init that 1 time in 65,536 began like TLS);
and for a dnspython `make_query()` without `id=`. Bytes an example needs come from its draw
(tests/support/seeded.py: `seeded_urandom` for code that takes `urandom=` or `random=`); a
clock is a constant passed as `clock=`/`now=`.

Only the test's own source is read: randomness inside the code under test that a test cannot
pass in is listed in docs/testing.md ("Property tests are deterministic")."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import ROOT

# Calls that decide nothing inside an example although they match, each with its reason:
# "tests/path.py::function": why.
ALLOWED: dict[str, str] = {}

_RANDOM_MODULES = {"secrets", "uuid"}
_CLOCK = {
    "time.time", "time.time_ns", "time.monotonic", "time.monotonic_ns", "time.perf_counter",
    "time.perf_counter_ns", "datetime.now", "datetime.utcnow", "datetime.today",
    "datetime.datetime.now", "datetime.datetime.utcnow", "date.today",
}  # fmt: skip
# Functions that draw at random unless a keyword gives what they would draw: obfuscated2's
# inits (`urandom=`, else os.urandom), dnspython's queries (`id=`, else a random ID).
_FIXED_BY = {"initiate": "urandom", "initiate_relayed": "urandom", "make_query": "id"}


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _is_given(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return _dotted(target) in ("given", "hypothesis.given")


def _imported_names(tree: ast.Module) -> dict[str, str]:
    """Local name -> what it is (`urandom` -> `os.urandom`, `choice` -> `random.choice`)."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _why_random(call: ast.Call, imported: dict[str, str]) -> str | None:
    name = _dotted(call.func)
    if name is None:
        return None
    head, _, rest = name.partition(".")
    full = f"{imported[head]}.{rest}".rstrip(".") if head in imported else name
    module = full.partition(".")[0]
    if full == "os.urandom":
        return "os.urandom"
    if module in _RANDOM_MODULES:
        return full
    if module == "random":
        if full == "random.Random" and (call.args or call.keywords):
            return None  # seeded
        return full + ("() without a seed" if full == "random.Random" else "")
    if full in _CLOCK:
        return full
    keyword = _FIXED_BY.get(full.rpartition(".")[2])
    if keyword and not any(k.arg == keyword for k in call.keywords):
        return f"{full}() without {keyword}="
    return None


def findings(source: str, path: str) -> Iterator[str]:
    """`path::test: call (line N)` for each random call a `@given` test can reach in its
    module."""
    tree = ast.parse(source)
    imported = _imported_names(tree)
    functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            functions.setdefault(node.name, node)
    for test in functions.values():
        if not any(_is_given(d) for d in test.decorator_list):
            continue
        seen: set[str] = set()
        todo = [test]
        while todo:
            function = todo.pop()
            if function.name in seen:
                continue
            seen.add(function.name)
            for node in ast.walk(function):
                if isinstance(node, ast.Name) and node.id in functions:
                    todo.append(functions[node.id])
                elif isinstance(node, ast.Call):
                    why = _why_random(node, imported)
                    key = f"{path}::{test.name}"
                    if why and key not in ALLOWED:
                        yield f"{key}: {why} (line {node.lineno}, in {function.name})"


def _property_test_files() -> Iterator[Path]:
    for path in sorted((ROOT / "tests").rglob("*.py")):
        if path.name != "test_determinism.py" and "@given" in path.read_text():
            yield path


def test_nothing_random_decides_a_property_tests_example() -> None:
    found = [
        line
        for path in _property_test_files()
        for line in findings(path.read_text(), str(path.relative_to(ROOT)))
    ]
    assert not found, (
        "random in a property test (draw it from hypothesis, seed it, or pass urandom=; "
        "see tests/test_determinism.py):\n" + "\n".join(found)
    )


def test_the_check_finds_what_it_looks_for() -> None:
    source = """
import os, random, secrets, time
from os import urandom
from hypothesis import given

def _prop(data):
    return os.urandom(4) + urandom(2) + secrets.token_bytes(2)

def helper():
    return random.random(), random.Random(), random.Random(7), time.monotonic()

@given(st.binary())
def test_grouped(data):
    _prop(data)
    helper()
    initiate(Tag.PADDED)
    initiate(Tag.PADDED, urandom=bytes)
    dns.message.make_query("a.test", "A")

def test_plain():
    os.urandom(4)
"""
    got = sorted(line.partition(" (")[0].partition(": ")[2] for line in findings(source, "t.py"))
    assert got == [
        "dns.message.make_query() without id=",
        "initiate() without urandom=",
        "os.urandom",
        "os.urandom",
        "random.Random() without a seed",
        "random.random",
        "secrets.token_bytes",
        "time.monotonic",
    ]
