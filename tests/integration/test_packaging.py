"""The built wheel carries what an installed detour needs: both packages, the console
script, and the built-in config as package data (not only in the source tree)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        pytest.fail(f"building the wheel failed:\n{result.stderr[-2000:]}")
    (path,) = out.glob("detour-*.whl")
    return path


@pytest.mark.slow
@pytest.mark.timeout(360)  # a cold pip cache fetches the build backend first
def test_wheel_contents(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "helper/_config/default.toml" in names
    assert "helper/cli.py" in names and "transports/base.py" in names
    assert "helper/tui/detour.tcss" in names  # the UI's styles are package data too
    assert not any(name.startswith("tests/") for name in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "detour = helper.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


@pytest.mark.slow
def test_installed_package_finds_its_built_in_config(wheel: Path, tmp_path: Path) -> None:
    # Import straight from the wheel, away from the source tree (-S: no site-packages, so
    # not the editable install either): the config must come from package data.
    code = (
        "import helper.config as c, pathlib;"
        "assert 'site-packages' not in c.__file__ and str(pathlib.Path.cwd()) not in c.__file__;"
        "cfg = c.load_config(); print(cfg.source, [s.name for s in cfg.services])"
    )
    result = subprocess.run(
        [sys.executable, "-S", "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(wheel)},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "built-in config ['telegram', 'whatsapp', 'signal']" in result.stdout
