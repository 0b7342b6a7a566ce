"""LoRA gradients through ComfyUI's LTX-2.3 model: exact (finite differences) and equal to ltx-core's.

ComfyUI's stock blocks update the residual streams in place, which makes backward raise or (with checkpointing)
silently wrong; these tests pin the out-of-place blocks ComfyBackbone installs, with and without checkpointing.
"""

from __future__ import annotations

import pytest
import torch

from tests.comfy_models import flow_loss, load_comfy, model_input, randomize_b, text_embeds
from trainer_core.lora.adapter import LoraAdapters
from trainer_core.lora.targets import select_targets
from trainer_core.ltxcore.tiny import write_tiny_checkpoint

RANK = 4


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_av.safetensors", audio=True, seed=7)


def _adapters(backbone, dtype=torch.float32) -> LoraAdapters:
    targets = select_targets(backbone.lora_targets(), "all_attention")
    adapters = LoraAdapters(targets, rank=RANK, alpha=RANK, generator=torch.Generator().manual_seed(11))
    randomize_b(adapters, seed=12)
    return adapters.to(dtype)


def _grads(backbone, adapters, inp, checkpointing: bool) -> dict[str, torch.Tensor]:
    backbone.set_gradient_checkpointing(checkpointing)
    adapters.zero_grad(set_to_none=True)
    with backbone.training_session(), adapters.attached():
        flow_loss(backbone, inp, seed=13).backward()
    out = {}
    for i, name in enumerate(adapters.names):
        for which, param in (("A", adapters.lora_A[i]), ("B", adapters.lora_B[i])):
            # Adapters on modules the forward never ran (audio ones in video-only training) get no gradient.
            out[f"{name}.{which}"] = torch.zeros_like(param) if param.grad is None else param.grad.clone()
    return out


@pytest.mark.parametrize("checkpointing", [False, True])
def test_gradients_match_finite_differences_float64(comfy, tiny_path, checkpointing):
    from trainer_core.comfy import ComfyBackbone

    backbone = ComfyBackbone(load_comfy(tiny_path, dtype=torch.float64))
    assert backbone.dtype == torch.float64
    adapters = _adapters(backbone, torch.float64)
    with torch.inference_mode():  # as a node would: the context is made under inference mode
        text = backbone.prepare_text(text_embeds(backbone, seed=1).double())
    inp = model_input(text, seed=2, audio=True, first_frame=True, dtype=torch.float64)
    grads = _grads(backbone, adapters, inp, checkpointing)

    probes = [  # (module, "A"|"B", element): self, text, both cross-modal attentions, both blocks
        ("transformer_blocks.0.attn1.to_q", "A", (0, 0)),
        ("transformer_blocks.0.video_to_audio_attn.to_k", "B", (1, 2)),
        ("transformer_blocks.1.audio_attn2.to_v", "A", (3, 5)),
        ("transformer_blocks.0.audio_to_video_attn.to_out.0", "B", (0, 1)),
        ("transformer_blocks.1.attn2.to_out.0", "A", (2, 7)),
    ]
    eps = 1e-6
    with backbone.training_session(), adapters.attached(), torch.no_grad():
        for name, which, index in probes:
            i = adapters.names.index(name)
            param = (adapters.lora_A if which == "A" else adapters.lora_B)[i]
            original = param[index].item()
            param[index] = original + eps
            plus = flow_loss(backbone, inp, seed=13).item()
            param[index] = original - eps
            minus = flow_loss(backbone, inp, seed=13).item()
            param[index] = original
            numeric = (plus - minus) / (2 * eps)
            analytic = grads[f"{name}.{which}"][index].item()
            assert abs(analytic) > 1e-8, f"{name}.{which} has no gradient"
            assert abs(analytic - numeric) <= 1e-5 * abs(numeric) + 1e-10, (name, which, analytic, numeric)


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("audio", [True, False])
def test_gradients_match_ltx_core_float32(comfy, tiny_path, audio, checkpointing):
    from trainer_core.comfy import ComfyBackbone
    from trainer_core.ltxcore.backbone import LtxCoreBackbone

    ours = ComfyBackbone(load_comfy(tiny_path))
    reference = LtxCoreBackbone.from_checkpoint(tiny_path, dtype=torch.float32)
    text = reference.prepare_text(text_embeds(ours, seed=3))
    # Per-sample sigmas; no conditioning tokens when audio runs (ltx-core 1.0.0 derives the cross-attention
    # scale/shift from the other modality's sigma, ComfyUI and ltx-core >= 1.1 from the tokens' own timesteps).
    inp = model_input(text, seed=4, audio=audio, batch=2, sigmas=(0.35, 0.85), first_frame=not audio)

    got = _grads(ours, _adapters(ours), inp, checkpointing)
    expected = _grads(reference, _adapters(reference), inp, checkpointing)
    assert got.keys() == expected.keys()
    flat_got = torch.cat([g.flatten() for g in got.values()])
    flat_expected = torch.cat([expected[k].flatten() for k in got])
    assert (flat_got - flat_expected).norm() / flat_expected.norm() < 1e-3
    nonzero = [k for k, g in expected.items() if g.norm() > 0]
    # Video-only training leaves the audio and cross-modal adapters without gradient, in both models.
    video_only = [k for k in expected if ".attn1." in k or ".attn2." in k]  # not audio_attn1/2
    assert len(nonzero) == (len(expected) if audio else len(video_only))
    for key in nonzero:
        assert (got[key] - expected[key]).norm() / expected[key].norm() < 1e-3, key


def test_stock_comfyui_blocks_cannot_train(comfy, tiny_path):
    """Why the out-of-place blocks exist: ComfyUI's own block forward fails backward (in-place residual update)."""
    import comfy.model_management as mm

    from trainer_core.comfy import ComfyBackbone
    from trainer_core.comfy.inference import trainable_aliases

    backbone = ComfyBackbone(load_comfy(tiny_path))
    adapters = _adapters(backbone)
    text = backbone.prepare_text(text_embeds(backbone, seed=5))
    inp = model_input(text, seed=6, audio=True)
    previous = mm.in_training
    mm.in_training = True
    try:
        with trainable_aliases(backbone.model_patcher.model), adapters.attached():
            loss = flow_loss(backbone, inp, seed=7)  # outside training_session: stock blocks
            with pytest.raises(RuntimeError, match="inplace operation"):
                loss.backward()
    finally:
        mm.in_training = previous
