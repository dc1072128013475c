"""docs/configuration.md's key tables are the schema's (helper/config/docs.py): every key
documented with its default, no key documented that the schema does not have."""

from __future__ import annotations

import re

from helper.config import SECTIONS, parse_config
from helper.config.docs import PAGE, default_column, key_table, render, tables_in
from helper.config.schema import settings_of


def test_every_section_has_its_table() -> None:
    assert sorted(tables_in(PAGE.read_text(encoding="utf-8"))) == sorted(SECTIONS)


def test_the_tables_are_the_schemas() -> None:
    page = PAGE.read_text(encoding="utf-8")
    assert render(page) == page, "key tables out of date: run python -m helper.config.docs"


def test_documented_keys_and_defaults_are_the_schemas() -> None:
    """Read back from the page: the same keys, in the same order, with the same defaults."""
    page = PAGE.read_text(encoding="utf-8")
    for section, (schema, _) in SECTIONS.items():
        block = page.split(f"<!-- keys: {section} -->\n", 1)[1].split("<!-- /keys -->", 1)[0]
        rows = [re.match(r"\| `([^`]+)` \| (.*?) \| ", line) for line in block.splitlines()[2:]]
        documented = [(m.group(1), m.group(2)) for m in rows if m]
        declared = [(key, default_column(spec)) for key, spec in settings_of(schema)]
        assert documented == declared, section


def test_every_key_has_a_meaning() -> None:
    for section, (schema, _) in SECTIONS.items():
        for key, spec in settings_of(schema):
            assert spec.doc.strip().endswith((".", ")")), f"{section}.{key}"
        assert key_table(section).count("\n") == 2 + len(settings_of(schema))


def test_written_defaults_read_as_the_programs_defaults() -> None:
    """A default shown in the docs, written into a file, gives the value the program uses
    when the key is missing."""
    for section in ("listen", "probe", "api"):
        schema, _ = SECTIONS[section]
        lines = [f"[{section}]"]
        for key, spec in settings_of(schema):
            column = default_column(spec)
            if column.startswith("`") and column.endswith("`"):
                lines.append(f"{key} = {column.strip('`')}")
        written = parse_config(
            "\n".join(lines) + '\n[[route]]\nname = "direct"\nchain = "direct"\n'
        )
        assert getattr(written, section) == schema()
