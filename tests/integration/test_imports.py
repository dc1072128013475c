"""What the proxy path must not load: the lab (a tester's tool) and, for the router build,
the terminal UI. Checked in a fresh interpreter, after starting the engine's modules."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_the_proxy_path_loads_neither_the_lab_nor_the_ui() -> None:
    modules = loaded_after(
        "import helper.cli, helper.engine, helper.config\n"
        "from helper.config import load_config\n"
        "from helper.engine import Engine\n"
        "Engine(load_config())"
    )
    assert not {m for m in modules if m.startswith("helper.lab")}
    assert "textual" not in modules
