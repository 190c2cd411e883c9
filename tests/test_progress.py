"""The stage progress of ``explain`` and ``check`` (nrm_verify/commands/progress.py): drawn by
tqdm on a terminal only, never into a pipe, a log or captured output; stage times kept
either way."""

from __future__ import annotations

import io

from nrm_verify.commands.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _three_stages(bar: Progress) -> float:
    bar.step("load")
    bar.step("measure")
    for done in range(1, 4):
        bar.tick(done, 3)
    bar.step("write")
    return bar.finish()


def test_a_terminal_shows_each_stage_its_count_and_the_total():
    stream = Terminal()
    total = _three_stages(Progress(3, stream=stream))
    text = stream.getvalue()
    for label in ("[1/3] load", "[2/3] measure", "[3/3] write"):
        assert label in text
    assert "3/3" in text  # the ticks within "measure"
    assert text.endswith(f"done in {total:.1f} s\n")
    screen = [line.rsplit("\r", 1)[-1] for line in text.split("\n")]  # what stays on screen, line by line
    assert [line.split(" ")[:2] for line in screen[:3]] == [["[1/3]", "load"], ["[2/3]", "measure"], ["[3/3]", "write"]]
    assert " 1/1 " in screen[0] and " 3/3 " in screen[1]  # finished stages show full bars


def test_nothing_is_written_when_not_a_terminal_or_quiet_but_times_are_kept():
    for stream, enabled in ((io.StringIO(), True), (Terminal(), False)):
        bar = Progress(3, enabled=enabled, stream=stream)
        total = _three_stages(bar)
        assert stream.getvalue() == ""
        assert list(bar.times) == ["load", "measure", "write"]
        assert all(t >= 0 for t in bar.times.values()) and total >= sum(bar.times.values())


def test_abort_erases_the_unfinished_bar_and_does_not_time_it():
    stream = Terminal()
    bar = Progress(2, stream=stream)
    bar.step("load")
    bar.step("measure")
    bar.tick(1, 4)
    bar.abort()
    assert list(bar.times) == ["load"]
    screen = stream.getvalue().rsplit("\n", 1)[-1].rsplit("\r", 1)[-1]
    assert "1/4" in stream.getvalue() and "measure" not in screen  # the last line is blank again, for the error
