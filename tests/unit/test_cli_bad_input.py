"""The command line with odd input: one line naming the problem, never a traceback."""

from __future__ import annotations

import subprocess

from tests.conftest import ROOT, detour_command


def test_a_reader_that_goes_away_ends_the_command_quietly() -> None:
    # `detour config default | head -1`: the pipe closes before the text is all written.
    process = subprocess.Popen(
        detour_command("config", "default"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    err = process.stderr.read().decode()
    assert process.wait(60) == 1
    assert "Traceback" not in err and "BrokenPipe" not in err, err
