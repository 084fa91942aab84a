"""The bulk commands' progress bar: its last line is printed once."""

from __future__ import annotations

import pytest

from streams.replay import ProgressLine


def test_the_end_of_a_progress_bar_is_printed_once(capsys: pytest.CaptureFixture[str]) -> None:
    progress = ProgressLine(10, "import")
    progress.advance(4)  # not a terminal: drawn at once, then every 5 s, and at the end
    progress.advance(6)
    progress.close()

    lines = capsys.readouterr().err.splitlines()
    ends = [line for line in lines if " 10/10 " in line]
    assert len(ends) == 1, lines
    assert lines[-1].startswith("import [##############################] 10/10 ")


def test_closing_early_draws_where_it_stopped(capsys: pytest.CaptureFixture[str]) -> None:
    progress = ProgressLine(10, "replay")
    progress.advance(3)
    progress.close()

    assert [line.split("] ")[1].split()[0] for line in capsys.readouterr().err.splitlines()] == ["3/10"]
