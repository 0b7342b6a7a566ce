"""Progress for people watching a run: the terminal line of headless runs and the wall-clock step rate.

The engine's ``StepInfo.seconds`` is one optimizer step's compute time; checkpoint saves and previews happen
between steps and are not in it. ``StepClock`` measures the time between step events instead, so the s/step
and ETA shown (here, under the Train node and on its live chart) include them.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from .engine.trainer import StepInfo


def format_eta(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def ending_text(status: str, step: int, total: int) -> str:
    """What the Train node shows once a run has ended (no ETA): ``status`` is a ``TrainResult.status`` or ``failed``."""
    return {
        "completed": f"done: step {step}/{total}",
        "cancelled": f"cancelled at step {step}/{total}; checkpoint saved",
        "diverged": f"stopped at step {step}/{total}: the loss diverged",
    }.get(status, f"failed at step {step}/{total}")


class StepClock:
    """Wall-clock seconds per step, averaged from the run's first step event to the latest.

    Averaging over the whole run spreads each checkpoint save and preview over the steps between them, so the
    ETA neither jumps at every save nor leaves them out; measuring from the first event leaves out start-up
    (model loading, compiling) that will not happen again.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._first: tuple[int, float] | None = None

    def tick(self, step: int) -> float | None:
        """Note that ``step`` has just finished; the mean s/step so far, or None at the first event."""
        now = self._clock()
        if self._first is None or step <= self._first[0]:
            self._first = (step, now)
            return None
        first_step, start = self._first
        return (now - start) / (step - first_step)


class ProgressLine:
    """Callable ``on_step`` hook: ``[####----] 120/1500 loss 0.4312 1.21 s/step ETA 27:50``.

    s/step and ETA are wall-clock (``StepClock``); until a second step is done, the step's compute time.
    """

    def __init__(self, stream: TextIO | None = None, width: int = 24, clock: StepClock | None = None) -> None:
        # sys.stderr when called, not when this module was imported: it may have been replaced since (tests, tools)
        self.stream, self.width = stream or sys.stderr, width
        self.clock = clock or StepClock()

    def __call__(self, info: StepInfo) -> None:
        wall = self.clock.tick(info.step)
        per_step = info.seconds if wall is None else wall
        done = int(self.width * info.step / info.total)
        bar = "#" * done + "-" * (self.width - done)
        eta = format_eta(per_step * (info.total - info.step))
        line = f"[{bar}] {info.step}/{info.total} loss {info.loss:.4f} {per_step:.2f} s/step ETA {eta}"
        if self.stream.isatty():
            self.stream.write("\r" + line + ("\n" if info.step == info.total else ""))
        elif info.step == info.total or info.step % max(1, info.total // 20) == 0:
            self.stream.write(line + "\n")  # logs and pipes get a line every 5%, not a redraw per step
        self.stream.flush()
