"""``Callbacks.add_on_step``: a second per-step callback (previews) runs after the one already set (progress)."""

from __future__ import annotations

from trainer_core.engine.trainer import Callbacks, StepInfo


def test_added_step_callbacks_run_in_order_after_the_first():
    calls: list[tuple[str, int]] = []
    callbacks = Callbacks(on_step=lambda info: calls.append(("progress", info.step)))
    callbacks.add_on_step(lambda info: calls.append(("previews", info.step)))
    callbacks.add_on_step(lambda info: calls.append(("more", info.step)))
    callbacks.on_step(StepInfo(3, 10, 0.5, {}, 1e-4, 0.1))
    assert calls == [("progress", 3), ("previews", 3), ("more", 3)]


def test_add_on_step_without_a_first_callback():
    calls: list[int] = []
    callbacks = Callbacks()
    callbacks.add_on_step(lambda info: calls.append(info.step))
    callbacks.on_step(StepInfo(1, 2, 0.5, {}, 1e-4, 0.1))
    assert calls == [1]
