"""A terminal progress line for headless runs: step, loss, s/step and ETA, redrawn in place."""

from __future__ import annotations

import sys
from typing import TextIO

from .engine.trainer import StepInfo


def format_eta(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class ProgressLine:
    """Callable ``on_step`` hook: ``[####----] 120/1500 loss 0.4312 1.21 s/step ETA 27:50``."""

    def __init__(self, stream: TextIO = sys.stderr, width: int = 24) -> None:
        self.stream, self.width = stream, width
        self._recent: list[float] = []

    def __call__(self, info: StepInfo) -> None:
        self._recent = [*self._recent[-19:], info.seconds]
        per_step = sorted(self._recent)[len(self._recent) // 2]  # median: robust to checkpoint-save spikes
        done = int(self.width * info.step / info.total)
        bar = "#" * done + "-" * (self.width - done)
        eta = format_eta(per_step * (info.total - info.step))
        line = f"[{bar}] {info.step}/{info.total} loss {info.loss:.4f} {per_step:.2f} s/step ETA {eta}"
        if self.stream.isatty():
            self.stream.write("\r" + line + ("\n" if info.step == info.total else ""))
        elif info.step == info.total or info.step % max(1, info.total // 20) == 0:
            self.stream.write(line + "\n")  # logs and pipes get a line every 5%, not a redraw per step
        self.stream.flush()
