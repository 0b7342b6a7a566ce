"""Engine options: target presets and errors, keep-last-N, bf16 autocast, 8-bit AdamW availability, LoRA dropout."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from tests.engine_support import config, synthetic_data, tiny_backbone
from trainer_core.config import ConfigError
from trainer_core.engine.trainer import Trainer
from trainer_core.lora.targets import select_targets


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny") / "tiny.safetensors"


def test_target_presets_select_the_reference_module_sets(ckpt):
    available = tiny_backbone(ckpt).lora_targets()
    all_attn = select_targets(available, "all_attention")
    assert len(all_attn) == 2 * 6 * 4 and all(n.rsplit(".", 1)[-1] in ("to_q", "to_k", "to_v", "0") for n in all_attn)
    ic = select_targets(available, "video_attention_ffn")
    assert {n.split(".", 2)[2] for n in ic} == {
        *(f"attn{i}.{p}" for i in (1, 2) for p in ("to_q", "to_k", "to_v", "to_out.0")),
        "ff.net.0.proj",
        "ff.net.2",
    }
    video = select_targets(available, "video_attention")
    assert not any("audio" in n for n in video) and len(video) == 2 * 2 * 4
    custom = select_targets(available, "custom", ["audio_attn1.to_q"])
    assert sorted(custom) == ["transformer_blocks.0.audio_attn1.to_q", "transformer_blocks.1.audio_attn1.to_q"]


def test_a_wrong_target_name_lists_the_valid_ones(ckpt):
    with pytest.raises(ConfigError, match=r"\['attn1\.to_qq'\] match no Linear layer.*attn1\.to_q"):
        select_targets(tiny_backbone(ckpt).lora_targets(), "custom", ["attn1.to_qq"])


def test_keep_last_n_deletes_only_this_runs_older_checkpoints(ckpt, tmp_path):
    (tmp_path / "run").mkdir()
    foreign = tmp_path / "run" / "mine_step_00001.safetensors"
    foreign.write_bytes(b"user file")
    cfg = config(tmp_path, optimization={"steps": 6}, checkpoints={"every": 1, "keep_last": 2})
    result = Trainer(tiny_backbone(ckpt), synthetic_data(n=1), cfg).train()
    kept = sorted(p.name for p in (tmp_path / "run").glob("t_step_*"))
    assert kept == [
        f"t_step_0000{s}{ext}" for s in (5, 6) for ext in (".safetensors", ".state.json", ".state.tensors")
    ]
    assert foreign.read_bytes() == b"user file" and result.lora_path.name == "t_step_00006.safetensors"


def test_bf16_autocast_and_lora_dropout_train(ckpt, tmp_path):
    cfg = config(tmp_path, lora={"dropout": 0.1}, memory={"mixed_precision": "bf16", "gradient_checkpointing": True})
    result = Trainer(tiny_backbone(ckpt), synthetic_data(n=2), cfg).train()
    assert result.status == "completed" and all(torch.isfinite(torch.tensor(result.losses)))


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is not None, reason="bitsandbytes is installed")
def test_adamw8bit_without_bitsandbytes_says_what_to_install(ckpt, tmp_path):
    cfg = config(tmp_path, optimization={"optimizer": "adamw8bit"})
    with pytest.raises(ConfigError, match="pip install bitsandbytes"):
        Trainer(tiny_backbone(ckpt), synthetic_data(n=1), cfg)


def test_bf16_working_copies_give_the_same_gradients_as_casting_every_call(ckpt):
    from tests.comfy_models import model_input
    from trainer_core.lora.adapter import LoraAdapters

    backbone = tiny_backbone(ckpt)
    targets = select_targets(backbone.lora_targets(), "all_attention")
    grads = []
    for working_copies in (False, True):
        adapters = LoraAdapters(targets, 4, 4.0, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            for b in adapters.lora_B:
                b.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
        if working_copies:
            adapters.use_compute_dtype(torch.bfloat16)
        text = backbone.prepare_text(synthetic_data(n=1)[0].text)
        with backbone.training_session(), adapters.attached(), torch.autocast("cpu", dtype=torch.bfloat16):
            v, a = backbone.velocity(model_input(text, seed=2, audio=True))
            (v.float().pow(2).mean() + a.float().pow(2).mean()).backward()
        adapters.grads_to_masters()
        grads.append([p.grad.clone() for p in adapters.masters()])
        assert all(p.grad.dtype == torch.float32 for p in adapters.masters())
    assert all(torch.equal(g0, g1) for g0, g1 in zip(*grads, strict=True))
    assert any(g.abs().sum() > 0 for g in grads[1])


def test_master_gradients_are_overwritten_in_place_each_step(ckpt):
    """With working copies the masters' gradient buffers live across steps: every step must overwrite all of
    them, zeroing layers the forward never reached (audio layers in a video-only step)."""
    from tests.comfy_models import model_input
    from trainer_core.lora.adapter import LoraAdapters

    backbone = tiny_backbone(ckpt)
    adapters = LoraAdapters(select_targets(backbone.lora_targets(), "all_attention"), 4, 4.0,
                            generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for b in adapters.lora_B:
            b.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
    adapters.use_compute_dtype(torch.bfloat16)
    text = backbone.prepare_text(synthetic_data(n=1)[0].text)
    buffers = None
    for audio in (True, False):
        with backbone.training_session(), adapters.attached(), torch.autocast("cpu", dtype=torch.bfloat16):
            v, a = backbone.velocity(model_input(text, seed=2, audio=audio))
            (v.float().pow(2).mean() + (a.float().pow(2).mean() if a is not None else 0)).backward()
        if buffers is not None:
            for g in buffers:
                g.fill_(7.0)  # stale values the next step must not leave behind
        adapters.grads_to_masters()
        grads = [p.grad for p in adapters.masters()]
        if buffers is not None:
            assert [g.data_ptr() for g in grads] == [g.data_ptr() for g in buffers]  # reused, not reallocated
        buffers = grads
    audio_layers = [i for i, n in enumerate(adapters.names) if ".audio_" in n or "video_to_audio" in n]
    n = len(adapters.names)
    assert audio_layers
    assert all(buffers[i].abs().sum() == 0 and buffers[n + i].abs().sum() == 0 for i in audio_layers)
    assert not any((g == 7.0).any() for g in buffers)
    assert any(g.abs().sum() > 0 for g in buffers)
