"""Non-finite numbers: a LoRA holding NaN/Inf is reported and never applied; a NaN latent or loss names the clip."""

from __future__ import annotations

import math

import pytest
import torch

from tests.engine_support import config, synthetic_data, tiny_backbone
from trainer_core.cli import main
from trainer_core.engine.checkpoints import list_checkpoints
from trainer_core.engine.state import checkpoint_problem
from trainer_core.engine.trainer import NonFiniteLossError, Trainer
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
    assert main(["lora", "inspect", str(path)]) == 0
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
