"""The progress of a command's stages on stderr, drawn by tqdm, and their wall times.

``nrm-verify explain`` and ``nrm-verify check`` run a fixed number of stages; each stage is
one tqdm bar that ``tick(done, total)`` advances within it and that stays on its own line,
with its time, when the next stage starts. Nothing is drawn when the command is told to be
quiet, or when stderr is not a terminal (a log or a pipe would keep every redraw, and
captured output must hold only the command's results); the stage times are kept either
way, for ``summary.json``.
"""

from __future__ import annotations

import shutil
import sys
import time

from tqdm import tqdm

BAR_FORMAT = "{desc} |{bar:24}| {n_fmt}/{total_fmt} [{elapsed}]"


class Progress:
    """Stages on stderr: ``[4/9] per-layer masses |█████████████           | 5/9 [00:01]``.

    ``step(label)`` ends the current stage and starts the next; ``tick(done, total)``
    advances the bar within a stage; ``finish()`` ends the last stage and returns the
    total wall time; ``abort()`` erases an unfinished bar, so that an error message stands
    alone on its line. ``times`` maps each finished stage's label to its seconds.
    """

    def __init__(self, stages: int, enabled: bool = True, stream=None):
        self.stream = sys.stderr if stream is None else stream
        isatty = getattr(self.stream, "isatty", None)
        self.stages, self.enabled = stages, enabled and bool(isatty and isatty())
        self.done = 0
        self.label = ""
        self.start = time.perf_counter()
        self.times: dict[str, float] = {}
        self._stage_start = self.start
        self._bar: tqdm | None = None

    def step(self, label: str) -> None:
        self._close()
        self.done += 1
        self.label = label
        self._stage_start = time.perf_counter()
        if self.enabled:
            # the size from shutil, which falls back to 80 × 24 where a terminal reports 0 × 0 (tqdm then draws nothing)
            size = shutil.get_terminal_size()
            self._bar = tqdm(total=1, desc=f"[{self.done}/{self.stages}] {label}", file=self.stream, leave=True,
                             bar_format=BAR_FORMAT, ncols=size.columns, nrows=size.lines)

    def tick(self, done: int, total: int) -> None:
        if self._bar is not None:
            self._bar.total = max(total, 1)
            self._bar.n = done
            self._bar.refresh()

    def finish(self) -> float:
        self._close()
        total = time.perf_counter() - self.start
        if self.enabled:
            self.stream.write(f"done in {total:.1f} s\n")
            self.stream.flush()
        return total

    def abort(self) -> None:
        """Erase the unfinished bar (before an error message), without marking the stage done."""
        if self._bar is not None:
            self._bar.leave = False
            self._bar.close()
            self._bar = None
        self.label = ""

    def _close(self) -> None:
        if self.label:
            self.times[self.label] = time.perf_counter() - self._stage_start
            self.label = ""
        if self._bar is not None:
            self._bar.n = self._bar.total  # a finished stage shows a full bar
            self._bar.close()
            self._bar = None
