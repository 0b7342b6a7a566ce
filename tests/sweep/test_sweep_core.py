"""Sweep planning, numbers and grids without ComfyUI (plain tensors and files)."""

from __future__ import annotations

import math

import av
import pytest
import torch

from trainer_core.sweep.grid import GridLayout, grid_image, grid_video, key_frames
from trainer_core.sweep.metrics import score_sweep
from trainer_core.sweep.plan import (
    SweepError,
    SweepPrompt,
    cell_count,
    parse_numbers,
    plan_sweep,
    prompt_lines,
    resolve_lora_files,
)

PROMPTS = [SweepPrompt("with trigger", "trigger"), SweepPrompt("without trigger", "other")]


def _files(tmp_path, *names):
    for n in names:
        (tmp_path / n).write_bytes(b"x")
    return [tmp_path / n for n in names]


def test_plan_renders_the_base_row_once_in_row_order(tmp_path):
    a, b = _files(tmp_path, "a.safetensors", "b.safetensors")
    plan = plan_sweep([a, b], [0, 0.5, 1.0], PROMPTS, [1, 2], max_cells=100)
    assert [v.label for v in plan.variants] == ["base", "a @ 0.5", "a @ 1", "b @ 0.5", "b @ 1"]
    assert len(plan.cells) == cell_count(2, [0, 0.5, 1.0], 2, 2) == 5 * 2 * 2
    assert [(c.row, c.column, c.prompt, c.seed) for c in plan.cells[:4]] == [
        (0, 0, 0, 1), (0, 1, 0, 2), (0, 2, 1, 1), (0, 3, 1, 2)
    ]
    assert plan.cells[4].label == "a @ 0.5 | trigger: with trigger | seed 1"
    assert "20 cells" in plan.describe()


def test_plan_refuses_too_many_cells_and_bad_inputs(tmp_path):
    (a,) = _files(tmp_path, "a.safetensors")
    with pytest.raises(SweepError, match="16 cells, more than max_cells = 10"):
        plan_sweep([a], [0, 0.5, 0.75, 1.0], PROMPTS, [1, 2], max_cells=10)
    with pytest.raises(SweepError, match="no prompts"):
        plan_sweep([a], [1.0], [], [1], max_cells=10)
    with pytest.raises(SweepError, match="'x' is not a number"):
        parse_numbers("0.5, x", "strengths")
    assert parse_numbers("0, 0.5 1.0,0.5", "strengths") == [0.0, 0.5, 1.0]
    no_base = plan_sweep([a], [1.0], PROMPTS, [1], max_cells=10)
    assert not no_base.has_base and "need the base row" in no_base.describe()


def test_lora_files_from_names_and_checkpoint_folders(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _files(run, "r_step_00500.safetensors", "r_step_00250.safetensors", "r_step_00250.state.safetensors")
    _files(tmp_path, "other.safetensors")
    found = resolve_lora_files(f"{run}, other.safetensors", [tmp_path])
    assert [p.name for p in found] == ["r_step_00250.safetensors", "r_step_00500.safetensors", "other.safetensors"]
    with pytest.raises(SweepError, match=r"'missing\.safetensors' was not found"):
        resolve_lora_files("missing.safetensors", [tmp_path])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SweepError, match=r"holds no \.safetensors"):
        resolve_lora_files(str(tmp_path / "empty"))


def test_prompt_lines_split_by_trigger_word():
    lines = prompt_lines("a sks dog runs\n\na red car\nSKS dog sleeps", "sks")
    assert lines == [("a sks dog runs", "trigger"), ("a red car", "other"), ("SKS dog sleeps", "trigger")]
    assert prompt_lines("a red car", "") == [("a red car", "trigger")]


def test_numbers_are_rms_changes_against_the_base_cell(tmp_path):
    a, b = _files(tmp_path, "good.safetensors", "leaky.safetensors")
    plan = plan_sweep([a, b], [0, 1.0], PROMPTS, [3], max_cells=100)
    base = torch.full((3, 4, 4, 3), 0.5)
    # rows: base, good, leaky; columns: trigger, other
    videos = [base, base, base + 0.2, base + 0.01, base + 0.1, base + 0.1]
    scores = score_sweep(plan, videos)
    assert scores.changes[:2] == [None, None]
    assert scores.changes[2] == pytest.approx(0.2) and scores.changes[3] == pytest.approx(0.01)
    good, leaky = scores.rows
    assert (good.effect, good.bleed) == (pytest.approx(0.2), pytest.approx(0.01))
    assert leaky.score == pytest.approx(0.0)
    assert [name for name, _ in scores.ranking()] == ["good.safetensors", "leaky.safetensors"]
    assert "1. good.safetensors  +0.1900" in scores.table()
    with pytest.raises(SweepError, match="got 5 images for a sweep of 6 cells"):
        score_sweep(plan, videos[:5])


def test_grid_image_and_video(tmp_path):
    videos = [torch.rand(9, 32, 48, 3) for _ in range(3)] + [torch.rand(1, 32, 48, 3)]
    assert key_frames(videos[0]) == [0, 4, 8] and key_frames(videos[3]) == [0]
    layout = GridLayout(2, ["a", "b", "c", "single image"], notes=["1", "2", "3", "4"])
    still = grid_image(videos, layout, tile_height=32)
    strip = 3 * 48 + 2 * 4  # three frames and their gaps
    assert still.width == 2 * (strip + 8) and still.height > 2 * 32
    path = grid_video(videos, layout, tmp_path / "grid.mp4", fps=8, tile_height=32)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(video=0))
        assert (stream.codec_context.width % 2, stream.codec_context.height % 2) == (0, 0)
        rate = float(stream.average_rate)  # PyAV 18 refuses stream reads once the container is closed
    assert len(frames) == 9  # the single image holds its frame while the videos play
    assert math.isclose(rate, 8.0)
    with pytest.raises(ValueError, match="4 images but 3 labels"):
        grid_image(videos, GridLayout(2, ["a", "b", "c"]))
