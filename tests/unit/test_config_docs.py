"""docs/configuration.md's key tables are the schema's (helper/config/docs.py): every key
documented with its default, no key documented that the schema does not have. The same for
the other files read through the schema: the relay's config (docs/relay.md) and the lab's
scenarios (docs/lab.md), whose unknown keys are refused with their key path."""

from __future__ import annotations

import re

import pytest

from helper.config import SECTIONS, ConfigError, parse_config
from helper.config.docs import PAGE, default_column, key_table, pages, render, tables_in
from helper.config.schema import settings_of
from helper.lab.scenario import load_scenario, parse_scenario, scenario_names
from helper.relay.config import RELAY_SECTIONS, RELAYS_OWN, parse_relay_config


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


# --- the other files read through the schema: the relay's config, the lab's scenarios ---


def test_every_page_has_a_table_for_each_of_its_sections() -> None:
    for page, sections in pages().items():
        assert sorted(tables_in(page.read_text(encoding="utf-8"))) == sorted(sections), page


def test_every_pages_tables_are_the_schemas() -> None:
    for page, sections in pages().items():
        text = page.read_text(encoding="utf-8")
        assert render(text, sections) == text, f"{page}: run python -m helper.config.docs"


def test_the_check_fails_on_a_stale_table(monkeypatch, tmp_path, capsys) -> None:
    from helper.config import docs

    relay = tmp_path / "relay.md"
    relay.write_text("<!-- keys: decoy -->\n| stale |\n<!-- /keys -->\n", encoding="utf-8")
    monkeypatch.setattr(docs, "pages", lambda: {relay: {"decoy": RELAY_SECTIONS["decoy"]}})
    assert docs.main(["--check"]) == 1
    assert "relay.md: key tables are out of date" in capsys.readouterr().out
    assert docs.main([]) == 0 and docs.main(["--check"]) == 0
    assert '| `server` | `"nginx"` |' in relay.read_text(encoding="utf-8")


def test_every_key_of_the_relay_and_the_lab_has_a_meaning() -> None:
    for page, sections in list(pages().items())[1:]:
        for section, (schema, _) in sections.items():
            for key, spec in settings_of(schema):
                assert spec.doc.strip().endswith((".", ")")), f"{page.name}: {section}.{key}"


def test_the_relays_written_defaults_are_its_defaults(tmp_path) -> None:
    """Every default the relay page shows, written into a file, reads as the value a file
    without the key gets."""
    lines = []
    for section in RELAYS_OWN:
        schema, _ = RELAY_SECTIONS[section]
        lines.append(f"[{section}]")
        if section == "relay":
            lines.append('state = "s"')  # required
        for key, spec in settings_of(schema):
            column = default_column(spec)
            if column.startswith("`") and column.endswith("`"):
                lines.append(f"{key} = {column.strip('`')}")
    written = parse_relay_config("\n".join(lines), base=tmp_path)
    assert written == parse_relay_config('[relay]\nstate = "s"\n', base=tmp_path)
    assert written.connections_per_client == 64 and written.idle_timeout == 600.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[relay]\nstate = "s"\nlisen = "127.0.0.1:1"\n',
            "relay.lisen: unknown key (did you mean 'listen'?",
        ),
        ('[relay]\nstate = "s"\n[limits]\nidle = "1m"\n', "limits.idle: unknown key"),
        ('[relay]\nstate = "s"\n[decoys]\n', "decoys: unknown key (did you mean 'decoy'?"),
        (
            '[relay]\nstate = "s"\n[upstream]\nextra_ca = "x"\n',
            "upstream.extra_ca: expected a list",
        ),
        ("[relay]\nlisten = 1\n", "relay.state: is required"),
    ],
)
def test_the_relays_problems_name_the_key(text: str, expected: str, tmp_path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_relay_config(text, base=tmp_path)
    assert any(problem.startswith(expected) for problem in caught.value.problems), caught.value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sumary = 'x'\n", "sumary: unknown key (did you mean 'summary'?"),
        ("[dpi]\ndepht = 'full'\n", "dpi.depht: unknown key (did you mean 'depth'?"),
        ("[[rule]]\naction = 'reset'\nsnii = 'a.test'\n", "rule[0].snii: unknown key"),
        ("[[rule]]\nsni = 'a.test'\n", "rule[0].action: is required"),
        ("[[rule]]\naction = 'reset'\nhosts = ['nope']\n", "rule[0].hosts[0]: 'nope' is not one"),
        ("[[dns]]\nmatch = 'a.test'\naction = 'lie'\n", "dns[0].action: 'lie' is not one of"),
        ("[[check]]\ntarget = 'tcp://@nope:1'\n", "check[0].target: 'tcp://@nope:1': no lab host"),
        ("[[expect]]\nservice = 'whatsapp'\nroute = 'x'\nwork = true\n", "expect[0].work: unknown"),
        ("[best]\nicq = 'direct'\n", "best.icq: unknown key"),
        ("[cascade]\nwhatsapp = 1\n", "cascade.whatsapp: expected a string, got int"),
    ],
)
def test_a_scenarios_problems_name_the_key(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_scenario(text, "bad")
    assert any(problem.startswith(expected) for problem in caught.value.problems), caught.value


def test_every_shipped_scenario_reads_through_the_schema() -> None:
    for name in scenario_names():
        assert load_scenario(name).name


def test_the_example_relay_config_reads() -> None:
    from helper.relay.config import load_relay_config
    from tests.conftest import ROOT

    config = load_relay_config(ROOT / "config" / "examples" / "relay.toml")
    assert str(config.listen) == "127.0.0.1:8080" and config.public_front == "cdn.example.net"
