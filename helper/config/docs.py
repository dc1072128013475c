"""docs/configuration.md's key tables, generated from the schema.

Each table sits between `<!-- keys: SECTION -->` and `<!-- /keys -->`; everything else on the
page is written by hand. The text of a key's row (its default, its meaning) is the field's
`setting()`, so a key is documented where it is declared and the page cannot drift from the
code: tests/unit/test_config_docs.py fails when a table is not what this module makes.

    python -m helper.config.docs           rewrite the tables in docs/configuration.md
    python -m helper.config.docs --check   exit 1 if a table is out of date

The other files read through the schema have their tables on their own pages (`pages()`):
the relay's config in docs/relay.md, the lab's scenarios in docs/lab.md.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from .file import SECTIONS
from .schema import Setting, settings_of
from .text import toml_value

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"

_TABLE = re.compile(r"(<!-- keys: (?P<section>\w+) -->\n)(?P<table>.*?)(<!-- /keys -->)", re.S)


def default_column(spec: Setting) -> str:
    if spec.shown is not None:
        return spec.shown
    if spec.required:
        return "required"
    if spec.default is None or spec.default == [] or spec.default == {}:
        return "none"
    return f"`{toml_value(spec.default)}`"


def key_table(section: str, sections: dict[str, tuple[type, bool]] = SECTIONS) -> str:
    schema, _ = sections[section]
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for key, spec in settings_of(schema):
        rows.append(f"| `{key}` | {default_column(spec)} | {spec.doc} |")
    return "\n".join(rows) + "\n"


def render(page: str, sections: dict[str, tuple[type, bool]] = SECTIONS) -> str:
    """`page` with every key table made from the schema."""
    return _TABLE.sub(
        lambda m: m.group(1) + key_table(m.group("section"), sections) + m.group(4), page
    )


def tables_in(page: str) -> list[str]:
    return [m.group("section") for m in _TABLE.finditer(page)]


def pages() -> dict[Path, dict[str, tuple[type, bool]]]:
    """Every page with key tables, and the sections its tables are made from."""
    from ..lab.scenario_keys import SCENARIO_SECTIONS, ScenarioKeys
    from ..relay.config import RELAY_SECTIONS, RELAYS_OWN

    docs = PAGE.parent
    return {
        PAGE: SECTIONS,
        docs / "relay.md": {name: RELAY_SECTIONS[name] for name in RELAYS_OWN},
        docs / "lab.md": {"scenario": (ScenarioKeys, False), **SCENARIO_SECTIONS},
    }


def main(argv: list[str]) -> int:
    stale = []
    for page, sections in pages().items():
        text = page.read_text(encoding="utf-8")
        new = render(text, sections)
        if new == text:
            continue
        if "--check" in argv:
            stale.append(page)
        else:
            page.write_text(new, encoding="utf-8")
            print(f"{page}: key tables rewritten")
    for page in stale:
        print(f"{page}: key tables are out of date; run python -m helper.config.docs")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
