"""A wall-clock deadline that reaches into code that blocks.

    with alarm(time.perf_counter() + 5.0):
        run_a_case()          # raises OutOfTime at the deadline, even inside time.sleep(3600)

The validator (:mod:`nrm_verify.validate.rules`) runs its property search under it, so that a
rule whose ``shares()`` blocks cannot keep ``check-rule`` from returning.
"""

from __future__ import annotations

import math
import signal
import threading
import time


class OutOfTime(BaseException):
    """Raised by :class:`alarm` at its deadline. A BaseException, so that neither an
    ``except Exception`` around the user's code (the validator's probe) nor hypothesis takes
    it for a failure of that code."""


class alarm:
    """Raise :class:`OutOfTime` in this thread at ``deadline`` (time.perf_counter), even
    inside code that blocks (a sleep, a loop in Python; C code is interrupted when it hands
    back to Python). Uses SIGALRM, so only in the main thread of a POSIX process; elsewhere
    it does nothing and the caller's own checks between steps are all there is. An infinite
    deadline does nothing either. The previous handler and timer are restored."""

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.active = (math.isfinite(deadline) and hasattr(signal, "setitimer")
                       and threading.current_thread() is threading.main_thread())

    def __enter__(self):
        if self.active:
            self.entered = time.perf_counter()
            self.previous = signal.signal(signal.SIGALRM, self._ring)
            self.timer = signal.setitimer(signal.ITIMER_REAL, max(1e-3, self.deadline - self.entered))
        return self

    @staticmethod
    def _ring(signum, frame):
        raise OutOfTime()

    def __exit__(self, *exc):
        if self.active:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.previous)
            left, interval = self.timer
            if left > 0:  # someone else's timer was running: give it back what is left of it
                signal.setitimer(signal.ITIMER_REAL, max(1e-3, left - (time.perf_counter() - self.entered)),
                                 interval)
        return False


__all__ = ["OutOfTime", "alarm"]
