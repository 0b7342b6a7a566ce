"""Training on ComfyUI's loaded MODEL leaves no trace, and works on every Linear flavour ComfyUI builds.

The MODEL comes from ComfyUI's checkpoint loader under ``torch.inference_mode()``, as in a real session; after
training (normal end, an error mid-step, a cancel) it must compute bit-identical outputs with the very same
weight objects, no patches, and ComfyUI's global training flag restored.
"""

from __future__ import annotations

import pytest
import torch

from tests.comfy_models import (
    flow_loss,
    load_comfy,
    model_input,
    stock_velocity,
    text_embeds,
    write_dtype,
    write_scaled_fp8,
)
from trainer_core.lora.adapter import LoraAdapters
from trainer_core.lora.targets import select_targets
from trainer_core.ltxcore.tiny import write_tiny_checkpoint


class _Boom(RuntimeError):
    pass


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_av.safetensors", audio=True, seed=5)


def _snapshot(model_patcher) -> dict:
    """Everything of the MODEL a training run could leave behind."""
    dm = model_patcher.model.diffusion_model
    return {
        "tensors": {n: t for n, t in [*dm.named_parameters(), *dm.named_buffers()]},
        "options": repr(model_patcher.model_options),
        "patches": dict(model_patcher.patches),
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in dm.modules()),
        "weight_functions": sum(len(getattr(m, "weight_function", [])) for m in dm.modules()),
    }


def _train(backbone, adapters, inputs, steps: int, fail_at: int | None = None, error: type = _Boom) -> list[float]:
    optimizer = torch.optim.AdamW(adapters.parameters(), lr=1e-2)
    losses = []
    with backbone.training_session(), adapters.attached():
        for step in range(steps):
            loss = flow_loss(backbone, inputs[step % len(inputs)], seed=step)
            if step == fail_at:
                raise error("stop")
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
    return losses


def _assert_untouched(model_patcher, before: dict, inp, embeds, expected) -> None:
    import comfy.model_management as mm

    after = _snapshot(model_patcher)
    assert mm.in_training is False
    assert after["options"] == before["options"] and after["patches"] == before["patches"]
    assert after["hooks"] == before["hooks"] == 0 and after["weight_functions"] == before["weight_functions"] == 0
    assert after["tensors"].keys() == before["tensors"].keys()
    for name, t in after["tensors"].items():
        assert t is before["tensors"][name], f"{name} is a different object after training"
        assert t.is_inference(), f"{name} is no longer an inference tensor"
    for got, want in zip(stock_velocity(model_patcher, inp, embeds), expected, strict=True):
        assert torch.equal(got, want)


@pytest.mark.parametrize("ending", ["completes", "error", "cancel"])
def test_training_leaves_the_model_bit_identical(comfy, tiny_path, ending):
    import comfy.model_management as mm

    from trainer_core.comfy import ComfyBackbone

    model = load_comfy(tiny_path)
    backbone = ComfyBackbone(model)
    backbone.set_gradient_checkpointing(True)
    embeds = text_embeds(backbone, seed=1)
    with torch.inference_mode():
        text = backbone.prepare_text(embeds)
    probe = model_input(text, seed=2, audio=True, first_frame=True)
    expected = stock_velocity(model, probe, embeds)
    before = _snapshot(model)
    assert all(t.is_inference() for t in before["tensors"].values())

    adapters = LoraAdapters(select_targets(backbone.lora_targets(), "all_attention"), rank=4, alpha=4,
                            generator=torch.Generator().manual_seed(3))
    inputs = [model_input(text, seed=s, audio=True, first_frame=s % 2 == 0) for s in range(3)]
    start_b = [b.detach().clone() for b in adapters.lora_B]
    if ending == "completes":
        losses = _train(backbone, adapters, inputs, steps=4)
        assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
        assert any(not torch.equal(b, s) for b, s in zip(adapters.lora_B, start_b, strict=True))
    else:
        error = _Boom if ending == "error" else mm.InterruptProcessingException
        with pytest.raises(error):
            _train(backbone, adapters, inputs, steps=4, fail_at=2, error=error)
    _assert_untouched(model, before, probe, embeds, expected)


def _fp8_scaled(src, tmp):
    return load_comfy(write_scaled_fp8(src, tmp / "fp8_scaled.safetensors"))


def _fp8_plain(src, tmp):
    return load_comfy(write_dtype(src, tmp / "fp8.safetensors", torch.float8_e4m3fn), dtype=torch.float8_e4m3fn)


def _bf16(src, tmp):
    return load_comfy(write_dtype(src, tmp / "bf16.safetensors", torch.bfloat16), dtype=torch.bfloat16)


@pytest.mark.parametrize("flavour", [_fp8_scaled, _fp8_plain, _bf16], ids=["fp8_scaled", "fp8_plain", "bf16"])
def test_lora_trains_on_every_linear_flavour(comfy, tiny_path, tmp_path, flavour):
    """Scaled fp8 layers are not nn.Linear (QuantizedTensor weights); plain fp8/bf16 weights are cast per call."""
    from trainer_core.comfy import ComfyBackbone

    model = flavour(tiny_path, tmp_path)
    backbone = ComfyBackbone(model)
    targets = select_targets(backbone.lora_targets(), "all_attention")
    layer = targets["transformer_blocks.0.attn1.to_q"]
    if flavour is _fp8_scaled:
        assert not isinstance(layer, torch.nn.Linear) and type(layer.weight).__name__ == "QuantizedTensor"
    else:
        assert layer.weight.dtype == (torch.bfloat16 if flavour is _bf16 else torch.float8_e4m3fn)
    embeds = text_embeds(backbone, seed=1)
    with torch.inference_mode():
        text = backbone.prepare_text(embeds)
    probe = model_input(text, seed=2, audio=True)
    expected = stock_velocity(model, probe, embeds)
    before = _snapshot(model)

    adapters = LoraAdapters(targets, rank=4, alpha=4, generator=torch.Generator().manual_seed(3))
    backbone.set_gradient_checkpointing(True)
    with backbone.training_session(), adapters.attached():
        loss = flow_loss(backbone, model_input(text, seed=4, audio=True, first_frame=True), seed=5)
        loss.backward()
    assert torch.isfinite(loss)
    grads = [b.grad for b in adapters.lora_B]  # B is zero: only B gets a gradient on the first step
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.norm() > 0 for g in grads) == len(grads)
    _assert_untouched(model, before, probe, embeds, expected)
