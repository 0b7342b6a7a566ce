"""Non-finite numbers: a LoRA holding NaN/Inf is reported and never applied; a NaN latent or loss names the clip."""

from __future__ import annotations

import math
import re

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from tests.engine_support import config, synthetic_data, tiny_backbone, write_cache
from trainer_core.cli import main
from trainer_core.cache import CachedData
from trainer_core.engine.checkpoints import list_checkpoints
from trainer_core.engine.data import epoch_batches
from trainer_core.engine.state import checkpoint_problem
from trainer_core.engine.memory import TrainingOutOfMemory
from trainer_core.engine.trainer import Trainer
from trainer_core.errors import UserError
from trainer_core.lorafile import lora_metadata, save_lora_file
from trainer_core.lorafile.fit import fit_lora
from trainer_core.lorafile.layouts import LoraModule, ParsedLora, to_layout
from trainer_core.lorafile.match import checkpoint_weight_shapes
from trainer_core.lorafile.read import LoraFileError
from trainer_core.ltxcore.tiny import write_tiny_checkpoint

NAMES = ("transformer_blocks.0.attn1.to_q", "transformer_blocks.0.attn1.to_k", "transformer_blocks.1.ff.net.2")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> dict[str, torch.Size]:
    return checkpoint_weight_shapes(write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny.safetensors"))


def _lora(bad: dict[str, str], shapes: dict[str, torch.Size] | None = None) -> ParsedLora:
    """A LoRA over NAMES (shaped as the model's layers) whose listed modules get a NaN or Inf (or an Inf alpha)."""
    g = torch.Generator().manual_seed(0)
    modules = {}
    for name in NAMES:
        out, inp = shapes[f"{name}.weight"] if shapes else (64, 64)
        down, up, alpha = torch.randn(4, inp, generator=g), torch.randn(out, 4, generator=g), 4.0
        if bad.get(name) == "nan":
            up[3, 1] = math.nan
        elif bad.get(name) == "inf":
            down[0, 0] = -math.inf
        elif bad.get(name) == "alpha":
            alpha = math.inf
        modules[name] = LoraModule(down, up, alpha)
    return ParsedLora("comfy", modules, [])


BAD = {NAMES[0]: "nan", NAMES[2]: "inf"}


def test_lora_inspect_reports_the_modules_holding_nan_or_inf(tmp_path, capsys):
    meta = lora_metadata(rank=4, alpha=4.0, targets=["to_q"], step=10)
    path = save_lora_file(tmp_path / "x.safetensors", to_layout(_lora(BAD), "comfy"), meta)
    assert main(["lora", "inspect", str(path)]) == 1  # a script sees the damage in the exit status too
    out = capsys.readouterr().out
    assert f"DAMAGED: NaN/Inf values in 2 modules (the checked loader refuses this LoRA; use an earlier checkpoint): " \
           f"{NAMES[0]}, {NAMES[2]}" in out
    good = save_lora_file(tmp_path / "good.safetensors", to_layout(_lora({}), "comfy"), meta)
    assert main(["lora", "inspect", str(good)]) == 0
    assert "DAMAGED" not in capsys.readouterr().out


@pytest.mark.parametrize("bad", [BAD, {NAMES[1]: "alpha"}])
def test_the_checked_loader_refuses_a_lora_with_nan_or_inf_even_when_forced(shapes, bad):
    meta = {"ltxlora.base_model": "ltx-2.3"}
    for force in (False, True):
        with pytest.raises(LoraFileError, match=r"Refusing to apply my\.safetensors: \d of its layers hold NaN or Inf"
                                                rf" values \({sorted(bad)[0]}"):
            fit_lora(to_layout(_lora(bad, shapes), "comfy"), meta, shapes, force=force, name="my.safetensors")
    _, parts = fit_lora(to_layout(_lora({}, shapes), "comfy"), meta, shapes)  # the same LoRA without them applies
    assert sum(len(p.lora.modules) for p in parts) == len(NAMES)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny_ltx23.safetensors")


def _intact_checkpoints(run_dir) -> list[int]:
    found = list_checkpoints(run_dir, "t")
    assert all(checkpoint_problem(path) is None for _, path in found)
    return [step for step, _ in found]


def test_a_nan_in_a_cached_latent_names_the_clip_and_stops_with_the_checkpoints_intact(ckpt, tmp_path, capsys):
    cache = write_cache(tmp_path / "cache", [24.0, 24.0, 24.0])
    victim = [b[0] for b in epoch_batches(CachedData(cache), 1, 0, 0)][-1]  # the third clip trained on
    latent = cache / "latents" / f"clip_{victim}.safetensors"
    tensors = load_file(str(latent))
    tensors["video"][0, 0, 0, 0] = math.nan  # same size: the manifest's size check passes, only the values are bad
    save_file(tensors, str(latent))
    cfg = {"name": "t", "output_dir": str(tmp_path / "run"), "data": str(cache), "seed": 0,
           "model": {"checkpoint": str(ckpt), "device": "cpu", "dtype": "float32"}, "lora": {"rank": 4, "alpha": 4},
           "optimization": {"steps": 9}, "checkpoints": {"every": 1}, "memory": {"mixed_precision": "no"}}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "t.yaml")]) == 1
    err = capsys.readouterr().err
    assert (f"clip clip_{victim}: its cached video latent holds NaN or Inf values; training stopped at step 3. The last "
            f"good checkpoint is {tmp_path / 'run' / 't_step_00002.safetensors'}. Cache that clip again") in err
    assert _intact_checkpoints(tmp_path / "run") == [1, 2]


def test_a_non_finite_loss_names_the_step_and_its_clips(ckpt, tmp_path, monkeypatch):
    backbone = tiny_backbone(ckpt)
    real, calls = backbone.velocity, []

    def velocity(inp):
        calls.append(1)
        video, audio = real(inp)
        return (video * math.nan if len(calls) == 3 else video), audio

    monkeypatch.setattr(backbone, "velocity", velocity)
    trainer = Trainer(backbone, synthetic_data(), config(tmp_path, checkpoints={"every": 1}))
    result = trainer.train()
    assert result.status == "diverged" and result.step == 2
    assert re.fullmatch(r"loss became nan at step 3 \(clips of that step: clip_\d\); training stopped\. The last good "
                        r"checkpoint is .*t_step_00002\.safetensors\. .*", result.message)
    assert _intact_checkpoints(tmp_path / "run") == [1, 2]


def test_cuda_out_of_memory_is_one_clear_error_and_keeps_the_steps_done(ckpt, tmp_path, monkeypatch):
    backbone = tiny_backbone(ckpt)
    real, calls = backbone.velocity, []

    def velocity(inp):
        calls.append(1)
        if len(calls) == 4:
            raise torch.cuda.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 3.50 GiB. GPU 0 has a total capacity of 23.55 GiB")
        return real(inp)

    monkeypatch.setattr(backbone, "velocity", velocity)
    cfg = config(tmp_path, checkpoints={"every": 2}, lora={"rank": 32, "alpha": 32},
                 optimization={"steps": 6, "batch_size": 1})
    with pytest.raises(TrainingOutOfMemory) as info:
        Trainer(backbone, synthetic_data(), cfg).train()
    message = str(info.value)
    assert isinstance(info.value, UserError)
    assert message.startswith("the GPU ran out of memory in training step 4 (it asked for 3.50 GiB); training stopped "
                              f"and the last checkpoint, {tmp_path / 'run' / 't_step_00003.safetensors'}, is intact")
    assert "memory.gradient_checkpointing: on" in message and "lora.rank: 16" in message
    assert "optimization.optimizer: adamw8bit" in message and "README: Speed and VRAM guide" in message
    assert _intact_checkpoints(tmp_path / "run") == [2, 3]  # step 3 completed before the failing step: saved too


def test_a_config_that_is_not_utf8_is_one_clear_error(tmp_path, capsys):
    path = tmp_path / "train.yaml"
    path.write_bytes("name: caf\u00e9\n".encode("latin-1"))  # saved by an editor in Latin-1 / Windows-1252
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {path} is not UTF-8 text (byte 9: invalid continuation byte); save it with the UTF-8 " \
                  "encoding (in most editors: Save As, encoding UTF-8)\n"
