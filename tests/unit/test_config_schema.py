"""The schema machinery (helper/config/schema.py) on a section of its own: defaults written
as in a file, converters, lists, required keys, secrets, defaults from the config below,
problems with key paths."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from helper.config.schema import (
    Problems,
    TableReader,
    keys_of,
    read_section,
    setting,
    settings_of,
)
from helper.config.values import existing_file, parse_duration, port, string


@dataclasses.dataclass(frozen=True)
class Example:
    name: str = setting(convert=string, doc="Required.")
    wait: float = setting("1m30s", parse_duration, "A duration.")
    ports: tuple[int, ...] = setting([80, 443], each=port, doc="A list.")
    unique: frozenset[int] = setting([], each=port, collect=frozenset, doc="A set.")
    secret: str | None = setting(None, string, "Hidden.", secret=True)
    file: Path | None = setting(None, existing_file, "A file.", path=True)


def read(data: object, below: Example | None = None, base: Path | None = None):
    problems = Problems()
    return read_section(Example, "example", data, problems, base, below), problems.items


def test_the_written_default_is_converted_once() -> None:
    fields = {f.name: f for f in dataclasses.fields(Example)}
    assert fields["wait"].default == 90.0
    assert fields["ports"].default == (80, 443)
    assert fields["unique"].default == frozenset()
    assert fields["name"].default is dataclasses.MISSING  # required
    assert dict(settings_of(Example))["wait"].default == "1m30s"  # as the docs show it
    assert keys_of(Example) == ("name", "wait", "ports", "unique", "secret", "file")


def test_a_table_is_read_key_by_key() -> None:
    example, problems = read({"name": "x", "wait": "5s", "ports": [1], "unique": [2, 2]})
    assert problems == []
    assert example == Example("x", 5.0, (1,), frozenset({2}))


def test_every_problem_is_named_and_reading_goes_on() -> None:
    example, problems = read({"wait": "soon", "ports": [0, 80, "x"], "unique": 5, "nmae": 1})
    assert problems == [
        "example.name: is required",
        "example.wait: 'soon' is not a duration (like '5s', '250ms', '1m30s')",
        "example.ports[0]: 0 is not a port (1-65535)",
        "example.ports[2]: 'x' is not a port (1-65535)",
        "example.unique: expected a list",
        "example.nmae: unknown key (did you mean 'name'? valid: name, wait, ports, unique, "
        "secret, file)",
    ]
    assert example.wait == 90.0 and example.ports == (80,)  # the default, what did convert
    assert read([1])[1][0] == "example: expected a table"


def test_keys_not_given_come_from_the_config_below() -> None:
    below = Example("b", 1.0, (8080,), frozenset(), "s3cret")
    example, problems = read({"wait": "2s"}, below)
    assert problems == []  # name is below's: not required here
    assert example == dataclasses.replace(below, wait=2.0)


def test_secrets_stay_out_of_repr() -> None:
    assert "s3cret" not in repr(Example("x", secret="s3cret"))


def test_file_names_are_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("x")
    example, problems = read({"name": "x", "file": "cert.pem"}, base=tmp_path)
    assert problems == [] and example.file == tmp_path / "cert.pem"
    _, problems = read({"name": "x", "file": "nope.pem"}, base=tmp_path)
    assert problems == [f"example.file: '{tmp_path / 'nope.pem'}': no such file"]


def test_a_table_reader_refuses_keys_it_was_not_told_about() -> None:
    table = TableReader("t", {"a": 1}, Problems(), ("a",))
    with pytest.raises(AssertionError):
        table.get("b", string)
