"""The docs a newcomer reads hold together: every relative link and #anchor in README.md and
docs/*.md leads somewhere, and so does a section named in quotes (`routing.md "Health"`);
README.md links every page; its "Command line" lists every subcommand and option that
`detour --help` has, and nothing it does not have; every `detour ...` command in a docs/*.md
code block parses; docs/design.md's map names files that exist and every module that
exists."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from helper.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def _prose(text: str) -> str:
    """The text without fenced code blocks (links and headings in code are not)."""
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup and punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(_prose(page.read_text(encoding="utf-8"))):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def test_slug_is_githubs() -> None:
    assert slug("Offline or censored") == "offline-or-censored"
    assert slug("`detour relay` and its HTTP server") == "detour-relay-and-its-http-server"
    assert slug("Pluggable transports (`pt:`)") == "pluggable-transports-pt"
    assert slug("What a property test costs") == "what-a-property-test-costs"


def _links() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for target in LINK.findall(_prose(page.read_text(encoding="utf-8"))):
            if not re.match(r"[a-z][a-z0-9+.-]*:", target):  # not http:, mailto:, ...
                found.append((page.relative_to(ROOT).as_posix(), target))
    return found


@pytest.mark.parametrize(("page", "target"), _links())
def test_relative_link_resolves(page: str, target: str) -> None:
    path, _, anchor = target.partition("#")
    dest = (ROOT / page).parent / path if path else ROOT / page
    assert dest.exists(), f"{page}: link to {target}: {path} does not exist"
    if anchor:
        assert dest.suffix == ".md", f"{page}: link to {target}: an anchor in a non-page"
        assert anchor in anchors(dest), f"{page}: link to {target}: no heading #{anchor}"


# README.md's "Command line"


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> dict[tuple[str, ...], set[str]]:
    """Each command path -> its options (long forms, and short ones without a long form)."""
    table: dict[tuple[str, ...], set[str]] = {path: set()}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            if action.required:  # `detour config` alone is not a command
                del table[path]
            for name, sub in action.choices.items():
                table.update(_commands(sub, (*path, name)))
        elif action.option_strings and action.dest != "help":
            longs = [o for o in action.option_strings if o.startswith("--")]
            table[path].add(longs[0] if longs else action.option_strings[0])
    return table


def _readme_commands() -> dict[tuple[str, ...], set[str]]:
    """The block under README.md's "## Command line": each `detour ...` line and the lines
    indented under it, as the command path and the options they name."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Command line\n", 1)[1]
    block = section.split("```", 2)[1]
    table: dict[tuple[str, ...], set[str]] = {}
    current: tuple[str, ...] | None = None
    for line in block.splitlines():
        if line.startswith("detour"):
            words = []
            for word in line.split()[1:]:
                if word in ("-c", "FILE"):  # `detour relay -c FILE keygen`
                    continue
                if not re.fullmatch(r"[a-z][a-z-]*", word):
                    break
                words.append(word)
            # a run of lowercase words after `detour` that are not a command is prose
            current = tuple(words)
            while current and current not in ALL:
                current = current[:-1]
            table.setdefault(current, set())
        if current is not None:
            code = line.split("   ", 1)[0] if line.startswith("detour") else line
            table[current].update(re.findall(r"(?<![\w-])--?[a-z][a-z-]*", code))
    return table


ALL = _commands(build_parser())


def test_every_command_is_in_the_readme() -> None:
    readme = _readme_commands()
    assert sorted(set(ALL) - set(readme)) == []


@pytest.mark.parametrize("command", sorted(ALL), ids=lambda c: " ".join(c) or "detour")
def test_every_option_is_in_the_readme(command: tuple[str, ...]) -> None:
    listed = _readme_commands().get(command, set())
    # -c FILE of a command is listed as -c; the README's block uses the short forms
    expected = {"-c" if o == "--config" else o for o in ALL[command]}
    assert sorted(expected - listed) == [], f"detour {' '.join(command)}"
    inherited = {"-c"} if "-c" in _readme_commands().get(command[:1], set()) else set()
    assert sorted(listed - expected - inherited) == [], f"detour {' '.join(command)}: not an option"


# docs/design.md's map

ENTRY = re.compile(r"^( *)((?:[\w./-]+(?:/|\.py|\.toml|\.tcss) ?)+)(?: {2,}|$)")
MENTION = re.compile(r"(?<![\w./])([\w/]+\.py)\b")


def _design_map() -> tuple[set[str], set[str]]:
    """(files and directories the map's entries name, every .py path it names at all)."""
    text = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    entries: set[str] = set()
    mentioned: set[str] = set()
    stack: list[tuple[int, str]] = []  # (indent, directory)
    for line in block.splitlines():
        match = ENTRY.match(line)
        indent = len(match.group(1)) if match else 99
        base = ""
        if match and indent < 20:
            while stack and stack[-1][0] >= indent:
                stack.pop()
            base = stack[-1][1] if stack else ""
            names = match.group(2).split()
            for name in names:
                entries.add(base + name)
            if len(names) == 1 and names[0].endswith("/"):
                stack.append((indent, base + names[0]))
                base = base + names[0]
            else:
                base = base + names[0].rpartition("/")[0] + ("/" if "/" in names[0] else "")
        else:
            base = stack[-1][1] if stack else ""
        for name in MENTION.findall(line):
            for where in (base, stack[0][1] if stack else "", ""):
                mentioned.add(where + name)
    return entries, mentioned


def test_design_map_names_files_that_exist() -> None:
    entries, _ = _design_map()
    assert len(entries) > 100
    assert sorted(e for e in entries if not (ROOT / e).exists()) == []


def test_design_map_lists_every_module() -> None:
    _, mentioned = _design_map()
    modules = {
        p.relative_to(ROOT).as_posix()
        for top in ("helper", "transports")
        for p in (ROOT / top).rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py")
    }
    assert sorted(modules - mentioned) == []


# every `detour ...` command in the docs' code blocks

CODE = re.compile(r"^(```|~~~)[^\n]*\n(.*?)^\1", re.M | re.S)


def _doc_commands() -> list[tuple[str, str]]:
    """(page, command line) for each line of a docs/*.md code block that runs detour: its
    words up to a comment, pipe, redirection or the next command."""
    found = []
    for page in PAGES[1:]:  # README.md's "Command line" is a synopsis, checked above
        for block in CODE.finditer(page.read_text(encoding="utf-8")):
            for line in block.group(2).splitlines():
                text = re.sub(r"^\s*(\$ |sudo )?(\S*/bin/)?", "", line)
                words = text.split()
                if not words or words[0] != "detour":
                    continue
                if len(words) > 1 and (words[1].endswith(":") or not words[1].isascii()):
                    continue  # a message (`detour add: ss: ...`) or a diagram
                text = re.split(r"\s(?:#|\||>|&|;|2>)", text)[0].rstrip("\\ ")
                found.append((page.name, text))
    return sorted(set(found))


@pytest.mark.parametrize(("page", "command"), _doc_commands())
def test_documented_command_parses(page: str, command: str) -> None:
    import contextlib
    import io
    import shlex

    err = io.StringIO()
    code = 0
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(shlex.split(command)[1:])
    except SystemExit as exc:  # --help, --version: 0
        code = exc.code
    assert not code, f"{page}: {command}: {err.getvalue().strip()}"


def test_design_map_names_every_test_directory() -> None:
    text = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    tests = block.split("\ntests/", 1)[1].split("\nbenchmarks/", 1)[0]
    dirs = sorted(p.name for p in (ROOT / "tests").iterdir() if (p / "__init__.py").exists())
    assert [d for d in dirs if f"{d}/" not in tests] == []


def test_readme_links_every_page() -> None:
    linked = {target.partition("#")[0] for page, target in _links() if page == "README.md"}
    pages = {f"docs/{p.name}" for p in PAGES[1:]}
    assert sorted(pages - linked) == []


QUOTED = re.compile(r"(?<![\w/])(?:docs/)?([a-z-]+\.md),? [\"“]([^\"”]+)[\"”]")


def _quoted_sections() -> list[tuple[str, str, str]]:
    """(page, the page it names, the section title in quotes): `routing.md "Health"`."""
    found = []
    for page in PAGES:
        text = " ".join(_prose(page.read_text(encoding="utf-8")).split())
        for name, title in QUOTED.findall(text):
            if (ROOT / "docs" / name).exists():
                found.append((page.name, name, title))
    return sorted(set(found))


@pytest.mark.parametrize(("page", "name", "title"), _quoted_sections())
def test_quoted_section_exists(page: str, name: str, title: str) -> None:
    text = (ROOT / "docs" / name).read_text(encoding="utf-8")
    # a heading, or a paragraph's bold label (`- **Batching** (...)`)
    labels = HEADING.findall(_prose(text)) + re.findall(r"\*\*([^*]+)\*\*", text)
    headings = [h.replace("`", "") for h in labels]
    wanted = title.replace("`", "")
    assert any(h.startswith(wanted) for h in headings), f'{page}: {name} "{title}"'
