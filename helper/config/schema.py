"""The schema: every setting declared once, on its dataclass field, and one reader that walks
the fields.

A section of the config file is a frozen dataclass whose fields are declared with
`setting()`: the default as a user would write it in the file, the converter, and the
documentation.

    @dataclass(frozen=True)
    class ProbeConfig:
        interval: float = setting("5m", parse_duration, "How often the services ...")

The dataclass default (300.0) is the converter applied to "5m", so the default the program
uses, the default the docs show (docs/configuration.md's key tables are generated from these
fields, see docs.py) and what `detour config show` prints for a key nobody wrote are the same
thing. `read_table` walks `dataclasses.fields()`: each key's value is converted, every
problem is recorded with its key path (`listen.users[1].name: ...`) and reading goes on, so a
user sees every problem at once; `TableReader.finish` names unknown keys with a did-you-mean.

The relay's config (helper/relay/config.py) and the lab's scenarios
(helper/lab/scenario_keys.py) declare their keys the same way and are read by the same
reader; their key tables are on docs/relay.md and docs/lab.md (docs.py's `pages()`).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "REQUIRED",
    "ConfigError",
    "Problems",
    "Setting",
    "TableReader",
    "array_of_tables",
    "keys_of",
    "read_array",
    "read_section",
    "read_table",
    "setting",
    "settings_of",
]


class ConfigError(Exception):
    """One or more problems in a configuration; each names its key path."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = problems
        self.source = source
        super().__init__("\n".join(problems))

    def __str__(self) -> str:
        lines = "\n".join(f"  {p}" for p in self.problems)
        return f"{self.source}:\n{lines}"


class Problems:
    """Problems found while reading a file, each prefixed with its key path."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}")


class TableReader:
    """Reads keys from one TOML table, recording problems; `finish` reports unknown keys."""

    def __init__(self, path: str, data: Any, problems: Problems, keys: tuple[str, ...]) -> None:
        self.path = path
        self.problems = problems
        self.keys = keys
        if not isinstance(data, dict):
            problems.add(path, "expected a table")
            data = {}
        self.data = data

    def key_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(
        self,
        key: str,
        convert: Callable[[Any], Any],
        default: Any = None,
        *,
        required: bool = False,
    ) -> Any:
        assert key in self.keys, key
        if key not in self.data:
            if required:
                self.problems.add(self.key_path(key), "is required")
            return default
        try:
            return convert(self.data[key])
        except ValueError as exc:
            self.problems.add(self.key_path(key), str(exc))
            return default

    def get_list(self, key: str, convert: Callable[[Any], Any]) -> list[Any]:
        assert key in self.keys, key
        value = self.data.get(key, [])
        if not isinstance(value, list):
            self.problems.add(self.key_path(key), "expected a list")
            return []
        out = []
        for i, item in enumerate(value):
            try:
                out.append(convert(item))
            except ValueError as exc:
                self.problems.add(f"{self.key_path(key)}[{i}]", str(exc))
        return out

    def finish(self) -> None:
        for key in self.data:
            if key not in self.keys:
                close = difflib.get_close_matches(key, self.keys, n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                valid = ", ".join(self.keys)
                self.problems.add(self.key_path(key), f"unknown key ({hint}valid: {valid})")


def array_of_tables(name: str, data: Any, problems: Problems) -> list[tuple[str, Any]]:
    """`[[name]]` entries with their key paths (`name[0]`, `name[1]`, ...)."""
    if data is None:
        return []
    if not isinstance(data, list):
        problems.add(name, f"expected [[{name}]] tables")
        return []
    return [(f"{name}[{i}]", item) for i, item in enumerate(data)]


# --- declaring settings -------------------------------------------------------------------


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
"""The default of a setting the file must give."""

# A reader of its own, for a value that is not one key = one converted value (a table of
# names, an array of tables with checks across its entries): (key path, the value as
# written, problems, the config file's directory) -> the value.
CustomReader = Callable[[str, Any, Problems, "Path | None"], Any]

_METADATA_KEY = "detour.setting"


@dataclass(frozen=True)
class Setting:
    """What a field's `setting()` declared, kept in the field's metadata."""

    default: Any  # as written in a file; REQUIRED, or None for "not set"
    convert: Callable[[Any], Any] | None
    doc: str
    each: Callable[[Any], Any] | None = None  # a list: each item's converter
    collect: Callable[[list[Any]], Any] = tuple  # ... and what the items become
    path: bool = False  # a file name, taken relative to the config file's directory
    read: CustomReader | None = None
    # True: never shown (not in repr, `***` in `detour config show`); a function: what of
    # the text may be shown (a chain with its passwords hidden).
    secret: bool | Callable[[str], str] = False
    tables: type | None = None  # an array of tables: the schema of each (for showing it)
    shown: str | None = None  # the docs' default column, where the default does not say it

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def converter(self, base: Path | None) -> Callable[[Any], Any]:
        convert = self.each or self.convert
        assert convert is not None
        if not self.path:
            return convert
        return lambda value: convert(_file_name(value, base))

    def read_value(self, table: TableReader, key: str, default: Any, base: Path | None) -> Any:
        """The value of `key` in `table` (converted), or `default` when it is not there or
        cannot be used (the problem recorded)."""
        if key not in table.data:
            if default is REQUIRED:
                table.problems.add(table.key_path(key), "is required")
                return None
            return default
        if self.read is not None:
            return self.read(table.key_path(key), table.data[key], table.problems, base)
        if self.each is not None:
            return self.collect(table.get_list(key, self.converter(base)))
        return table.get(key, self.converter(base), None if default is REQUIRED else default)

    def value_of(self, written: Any) -> Any:
        """What `written` (a default as a file would say it) is once read."""
        if written is None:
            return None
        problems = Problems()
        table = TableReader("default", {"value": written}, problems, ("value",))
        value = self.read_value(table, "value", None, None)
        assert not problems.items, problems.items
        return value


def setting(
    default: Any = REQUIRED,
    convert: Callable[[Any], Any] | None = None,
    doc: str = "",
    *,
    each: Callable[[Any], Any] | None = None,
    collect: Callable[[list[Any]], Any] = tuple,
    path: bool = False,
    read: CustomReader | None = None,
    secret: bool | Callable[[str], str] = False,
    tables: type | None = None,
    shown: str | None = None,
) -> Any:
    """A dataclass field that is a key of the config file.

    `default` is written as in the file ("10s", [587, 7777]; None: not set; REQUIRED: the file
    must give it). `convert` turns one value as written into what the program uses, raising
    ValueError with a message for the user; `each` does that for every item of a list, which
    then becomes `collect(items)`. `path`: the value is a file name, relative to the config
    file. `read`: a reader of its own, for values that are more than one converted value;
    `tables`: the schema of each table when that value is an array of tables. `secret`: True
    keeps the value out of repr and `detour config show`; a function hides the secret part
    of the text (a chain's passwords). `shown`: the docs' default column when the written
    default does not say it. `doc`: the docs' meaning column (Markdown).
    """
    spec = Setting(default, convert, doc, each, collect, path, read, secret, tables, shown)
    metadata = {_METADATA_KEY: spec}
    show = secret is not True
    if spec.required:
        return dataclasses.field(metadata=metadata, repr=show)
    value = spec.value_of(default)
    if isinstance(value, dict | list | set):
        return dataclasses.field(
            default_factory=lambda: copy.copy(value), metadata=metadata, repr=show
        )
    return dataclasses.field(default=value, metadata=metadata, repr=show)


def settings_of(schema: type) -> list[tuple[str, Setting]]:
    """The keys of a section and their settings, in declaration order."""
    return [
        (f.name, f.metadata[_METADATA_KEY])
        for f in dataclasses.fields(schema)
        if _METADATA_KEY in f.metadata
    ]


def keys_of(schema: type) -> tuple[str, ...]:
    return tuple(name for name, _ in settings_of(schema))


# --- reading ------------------------------------------------------------------------------


def read_table(
    schema: type, table: TableReader, base: Path | None = None, defaults: Any = None
) -> dict[str, Any]:
    """Every key of `schema` read from `table`: {field name: value}. A key the table does
    not have takes its value from `defaults` (an instance of `schema`: the config below this
    one) or else the schema's default; a required key nobody gave is a problem and None."""
    values: dict[str, Any] = {}
    for field in dataclasses.fields(schema):
        spec = field.metadata.get(_METADATA_KEY)
        if spec is None:
            continue
        if defaults is not None:
            default = getattr(defaults, field.name)
        elif field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = REQUIRED
        values[field.name] = spec.read_value(table, field.name, default, base)
    return values


def read_section(
    schema: type,
    name: str,
    data: Any,
    problems: Problems,
    base: Path | None = None,
    below: Any = None,
) -> Any:
    """The `[name]` table read with `schema`, unknown keys reported; keys it does not have
    come from `below` (the config below this one) or the schema's defaults. A required key
    nobody gave is None in the result (and a problem)."""
    table = TableReader(name, data, problems, keys_of(schema))
    section = schema(**read_table(schema, table, base, below))
    table.finish()
    return section


def read_array(
    schema: type,
    name: str,
    data: Any,
    problems: Problems,
    base: Path | None = None,
    defaults: Callable[[Any], Any] | None = None,
) -> list[tuple[str, dict[str, Any], TableReader]]:
    """`[[name]]` entries read with `schema`: (key path, values, the entry's table) each, in
    file order; unknown keys already reported. `defaults(entry)`: the config below this one's
    version of an entry (for layering), or None."""
    out = []
    for path, item in array_of_tables(name, data, problems):
        table = TableReader(path, item, problems, keys_of(schema))
        below = defaults(table.data) if defaults is not None else None
        values = read_table(schema, table, base, below)
        table.finish()
        out.append((path, values, table))
    return out


def complete(schema: type, values: dict[str, Any]) -> bool:
    """Whether every required key of `schema` has a value (a missing one is a problem
    already reported)."""
    return all(values[name] is not None for name, spec in settings_of(schema) if spec.required)


def _file_name(value: Any, base: Path | None) -> Path:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    path = Path(value).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    return path
