"""Headless validation in `train`: preview prompts rendered every `preview.every` steps with the pack's sampler and
the checkpoint's own VAE decoder, saved as mp4 (and png) in `<output_dir>/previews/`, without ComfyUI."""

from __future__ import annotations

from pathlib import Path

import av
import pytest
import yaml
from safetensors.torch import load_file

from tests.cache.test_cache_core import BUCKETS, make_dataset
from tests.engine_support import write_cache
from trainer_core.cli import main
from trainer_core.ltxcore.tiny import write_tiny_checkpoint

pytest.importorskip("ltx_core", reason="ltx-core (optional dependency) is the headless backbone")


@pytest.fixture(scope="module")
def standin_cache(tmp_path_factory) -> tuple[Path, Path]:
    """(tiny LTX-2.3 checkpoint, a cache of 4 clips made by `cache` with the stand-in text encoder)."""
    root = tmp_path_factory.mktemp("previews")
    ckpt = write_tiny_checkpoint(root / "tiny.safetensors", seed=0)
    ds = make_dataset(root / "ds")
    assert main(["cache", str(ds), "--checkpoint", str(ckpt), "--out", str(root / "cache"), "--buckets", BUCKETS,
                 "--trigger", "sks", "--skip-audio"]) == 0
    return ckpt, root / "cache"


def frame_count(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def train_yaml(tmp_path: Path, ckpt: Path, cache: Path, name: str, preview: dict) -> Path:
    cfg = {
        "name": name, "seed": 0, "output_dir": str(tmp_path / name), "data": str(cache),
        "model": {"checkpoint": str(ckpt), "device": "cpu", "dtype": "float32"},
        "lora": {"rank": 4, "alpha": 4}, "optimization": {"steps": 4, "learning_rate": 1e-3},
        "checkpoints": {"every": 4}, "memory": {"mixed_precision": "no", "gradient_checkpointing": False},
        "preview": preview,
    }  # fmt: skip
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_train_renders_previews_at_every_n_steps_without_changing_the_run(standin_cache, tmp_path):
    ckpt, cache = standin_cache
    preview = {"every": 2, "width": 64, "height": 64, "frames": 9, "steps": 2, "count": 2, "cfg": 2.0,
               "prompts": "sks a grey clip number 0\na red ball"}
    assert main(["train", str(train_yaml(tmp_path, ckpt, cache, "with", preview))]) == 0
    folder = tmp_path / "with" / "previews"
    assert sorted(p.name for p in folder.iterdir()) == [
        "with_step_00002.mp4", "with_step_00002.png", "with_step_00004.mp4", "with_step_00004.png"]
    for step in (2, 4):
        assert frame_count(folder / f"with_step_{step:05d}.mp4") == 9  # preview.frames, decoded by the VAE
    # The sampler draws from its own generator and the adapters come back in training mode: same LoRA as without.
    assert main(["train", str(train_yaml(tmp_path, ckpt, cache, "without", {"every": 0}))]) == 0
    assert not (tmp_path / "without" / "previews").exists()
    a = load_file(str(tmp_path / "with" / "with_step_00004.safetensors"))
    b = load_file(str(tmp_path / "without" / "without_step_00004.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_training_captions_are_previewed_when_there_are_no_prompt_lines(standin_cache, tmp_path):
    ckpt, cache = standin_cache
    preview = {"every": 3, "width": 64, "height": 64, "frames": 1, "steps": 1}
    assert main(["train", str(train_yaml(tmp_path, ckpt, cache, "caps", preview))]) == 0
    folder = tmp_path / "caps" / "previews"
    assert sorted(p.name for p in folder.glob("*.mp4")) == ["caps_step_00003.mp4"]
    assert frame_count(folder / "caps_step_00003.mp4") == 1


def test_prompt_lines_on_a_gemma_cache_need_the_text_encoder(tmp_path, capsys):
    ckpt = write_tiny_checkpoint(tmp_path / "tiny.safetensors", seed=0)
    cache = write_cache(tmp_path / "cache", [24.0])  # no stand-in family recorded: a real encoder made it
    path = train_yaml(tmp_path, ckpt, cache, "g", {"every": 1, "prompts": "a prompt"})
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: preview.prompts has prompt text") and "--text-encoder PATH" in err
    assert not (tmp_path / "g").exists()  # refused before the model loaded or anything was written


def test_previews_smaller_than_the_vae_decodes_are_refused_up_front(standin_cache, tmp_path, capsys):
    ckpt, cache = standin_cache
    assert main(["train", str(train_yaml(tmp_path, ckpt, cache, "small", {"every": 1, "height": 32}))]) == 2
    err = capsys.readouterr().err
    assert "preview.width x preview.height is 256 x 32" in err and "at least 64 pixels a side" in err
    assert not (tmp_path / "small").exists()
