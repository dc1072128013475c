"""The launcher of Xray in a Python module (transports/core/xray_module.py), where it needs
no module: its command line and the config errors it names itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from transports.core import xray_module


@pytest.mark.parametrize(
    "argv",
    [[], ["bogus"], ["run"], ["run", "-c"], ["run", "config.json"], ["version", "extra"]],
    ids=["nothing", "unknown", "run-alone", "no-file", "no-flag", "version-extra"],
)
def test_a_wrong_command_line_gets_the_usage(argv, capsys) -> None:
    assert xray_module.main(argv) == 2
    assert "usage: python -m transports.core.xray_module" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (None, "cannot read"),
        (b"{not json", "is not JSON: Expecting property name"),
        (b"[1, 2]", "is not a JSON object"),
        (b"\xff\xfe{}", "is not UTF-8 text"),
    ],
    ids=["missing", "syntax", "array", "encoding"],
)
def test_a_config_xray_would_refuse_silently_is_named(tmp_path: Path, text, said, capsys) -> None:
    """The module exits with status 23 and no word for a config it rejects; what the
    launcher can see itself it says, with the same status."""
    path = tmp_path / "config.json"
    if text is not None:
        path.write_bytes(text)
    for argv in (["run", "-c", str(path)], ["run", "-test", "-c", str(path)]):
        assert xray_module.main(argv) == 23
        err = capsys.readouterr().err
        assert err.startswith("Failed to start: ") and said in err


def test_another_module_named_xray_is_not_taken_for_xray(monkeypatch, tmp_path: Path) -> None:
    """PyPI has an unrelated package called xray: without startFromJSON it is refused."""
    (tmp_path / "xray.py").write_text("version = 'labelled arrays'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(__import__("sys").modules, "xray", raising=False)
    with pytest.raises(RuntimeError, match=r"is not Xray-core .*pip install xray-core"):
        xray_module.load()


def test_config_check_says_the_modules_silent_status_23_is_a_config_error(monkeypatch) -> None:
    import sys

    from transports.core import check
    from transports.core.programs import CoreProgram
    from transports.links import parse_link

    silent = CoreProgram(
        "xray", "/site-packages/xray", (26, 10, 10), command=(sys.executable, "-c", "exit(23)")
    )
    monkeypatch.setattr(check, "find_core", lambda program: silent)
    link = parse_link("vless://b831381d-6324-4d53-ad4f-8cda48b30811@example.com:443?security=tls")
    said = check.check_link(link.params["link"], "python:xray")
    assert said == (
        "xray 26.10.10 rejects the config detour generates for this link: exit status 23 "
        "(a config error; the Python module does not say which)"
    )
