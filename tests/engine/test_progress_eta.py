"""s/step and ETA as people see them: wall-clock time between step events, so checkpoint saves and previews
(which the engine's per-step compute time leaves out) count; the compute time stays on show beside it. The clock
is injected: nothing here measures real time."""

from __future__ import annotations

import io

from trainer_core.engine.trainer import StepInfo
from trainer_core.progress import ProgressLine, StepClock

# Step events at these times: 1 s of compute per step, and a 9 s checkpoint save or preview after step 2.
TIMES = [100.0, 101.0, 111.0, 112.0]
WALL = [None, 1.0, 5.5, 4.0]  # (now - first event) / steps since the first event


def _info(step: int, total: int = 10) -> StepInfo:
    return StepInfo(step, total, 0.5, {}, 1e-4, 1.0)


def test_step_clock_spreads_saves_and_previews_over_the_steps():
    times = iter(TIMES)
    clock = StepClock(lambda: next(times))
    assert [clock.tick(step) for step in range(1, 5)] == WALL
    times = iter([50.0, 53.0])
    resumed = StepClock(lambda: next(times))  # a resumed run starts counting at its own first step
    assert [resumed.tick(301), resumed.tick(302)] == [None, 3.0]


def test_progress_line_eta_is_wall_clock():
    times = iter(TIMES)
    out = io.StringIO()
    line = ProgressLine(out, width=10, clock=StepClock(lambda: next(times)))
    for step in range(1, 5):
        line(_info(step, total=20))  # a line every 5%: every step of 20
    rows = out.getvalue().splitlines()
    assert rows[0].endswith("1.00 s/step ETA 00:19")  # one step done: its compute time stands in
    assert rows[-1].endswith("4.00 s/step ETA 01:04")  # 16 steps left at 4 s, not at the 1 s of compute


class FakeServer:
    """What NodeProgress uses of ComfyUI's PromptServer, recording what it is sent."""

    def __init__(self) -> None:
        from aiohttp import web

        self.app, self.routes, self.events, self.texts = web.Application(), web.RouteTableDef(), [], []

    def send_sync(self, event: str, payload: dict) -> None:
        self.events.append((event, payload))

    def send_progress_text(self, text: str, node_id: str | None) -> None:
        self.texts.append((text, node_id))


def test_node_progress_sends_wall_clock_and_compute_time(comfy, monkeypatch):
    from trainer_core.comfy import progress_history, training

    server = FakeServer()
    progress_history.register_routes(server)
    monkeypatch.setattr(training, "prompt_server", lambda: server)
    monkeypatch.setattr(progress_history, "prompt_server", lambda: server)
    progress = training.NodeProgress("7", 10)
    times = iter(TIMES)
    progress.clock = StepClock(lambda: next(times))
    for step in range(1, 5):
        progress.on_step(_info(step))
    points = progress_history.server_history(server).points
    assert [p["wall_seconds"] for p in points] == WALL and [p["seconds"] for p in points] == [1.0] * 4
    assert [payload for _, payload in server.events] == points
    assert server.texts[0] == ("step 1/10  loss 0.5000  1.00 s/step (1.00 compute)  ETA 00:09", "7")
    assert server.texts[-1] == ("step 4/10  loss 0.5000  4.00 s/step (1.00 compute)  ETA 00:24", "7")

