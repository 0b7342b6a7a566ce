"""Scaled-fp8 checkpoints as ComfyUI loads them on a card with fp8 compute (an H100): the quantized layers train as
a dequantize + matmul inside one compiled graph for all blocks, with the gradients of the dequantized weights, and
the MODEL is the same afterwards (``trainer_core.comfy.quantized``).

``--supports-fp8-compute`` (ComfyUI's flag, ``SUPPORT_FP8_OPS``) makes the CPU loader build the layers an H100 gets;
without it the CPU gets the dequantizing layers and the fp8 training path would go untested.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from tests.comfy_model.test_comfy_backbone_compile import _loss_and_grads
from tests.comfy_models import attention_lora, av_input, load_comfy, write_downloaded_layout


def _load_as_on_fp8_card(path: Path):
    import comfy.model_management as mm

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mm, "SUPPORT_FP8_OPS", True)
        return load_comfy(path)


def _write_dequantized(src: Path, dst: Path) -> Path:
    """``src`` with every scaled-fp8 weight stored as its float32 value (fp8 * weight_scale), no quantization."""
    state = load_file(str(src))
    with safe_open(str(src), "pt") as f:
        metadata = dict(f.metadata())
    layers = json.loads(metadata.pop("_quantization_metadata"))["layers"]
    for layer in layers:
        scale = state.pop(f"{layer}.weight_scale")
        del state[f"{layer}.input_scale"]
        state[f"{layer}.weight"] = state[f"{layer}.weight"].float() * scale
    save_file(state, str(dst), metadata=metadata)
    return dst


def _quantized_layers(model_patcher) -> list[torch.nn.Module]:
    from comfy.quant_ops import QuantizedTensor

    return [m for m in model_patcher.model.diffusion_model.modules()
            if isinstance(getattr(m, "weight", None), QuantizedTensor)]


def test_fp8_layers_train_in_one_compiled_graph_with_the_dequantized_gradients(comfy, fresh_compiler, tmp_path):
    from torch._dynamo.utils import counters

    from trainer_core.comfy import ComfyBackbone

    fp8_file = write_downloaded_layout(tmp_path / "fp8.safetensors", "fp8")
    model = _load_as_on_fp8_card(fp8_file)
    quantized = _quantized_layers(model)
    assert quantized and not any(m._full_precision_mm for m in quantized)  # ComfyUI's fp8-matmul layers
    before = {k: v.clone() for k, v in model.model.diffusion_model.state_dict().items()}

    backbone = ComfyBackbone(model)
    adapters = attention_lora(backbone, seed=1)
    counters.clear()
    loss, grads = _loss_and_grads(backbone, adapters, av_input(backbone, seed=1), compiled=True, checkpointing=True)
    # Block 0's inputs do not require grad, the other blocks' do: two graphs, no breaks at the quantized layers.
    assert 1 <= counters["stats"]["unique_graphs"] <= 2
    assert sum(counters["graph_break"].values()) == 0, dict(counters["graph_break"])

    reference = ComfyBackbone(load_comfy(_write_dequantized(fp8_file, tmp_path / "dequantized.safetensors")))
    assert not _quantized_layers(reference.model_patcher)
    ref_adapters = attention_lora(reference, seed=1)
    ref_loss, ref_grads = _loss_and_grads(reference, ref_adapters, av_input(reference, seed=1), compiled=False,
                                          checkpointing=True)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    assert any(g.abs().max() > 0 for g in grads)

    # The MODEL afterwards: the same weights, bit for bit, and every layer back on ComfyUI's fp8 matmul.
    after = model.model.diffusion_model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(m._full_precision_mm for m in _quantized_layers(model))


def test_streamed_fp8_blocks_train_compiled_with_the_resident_gradients(comfy, fresh_compiler, tmp_path):
    """Under dynamic VRAM every block is on the host and the streamer brings it in, scaled-fp8 weights included:
    their inner tensors are copied into a slot and rewrapped. Forced through the streamer here (CPU: nothing is
    offloaded), the blocks run in the resident blocks' compiled graph with the same loss and gradients, and the
    MODEL has the same bits afterwards, its quantized weights still quantized."""
    from torch._dynamo.utils import counters

    from trainer_core.comfy import ComfyBackbone

    model = _load_as_on_fp8_card(write_downloaded_layout(tmp_path / "fp8.safetensors", "fp8"))
    blocks = model.model.diffusion_model.transformer_blocks
    quantized = len(_quantized_layers(model))
    assert quantized > 0
    before = {k: v.clone() for k, v in model.model.diffusion_model.state_dict().items()}

    def run(streamed, compiled):
        backbone = ComfyBackbone(model, streamed_blocks=streamed, resident_bytes=0)
        return _loss_and_grads(backbone, attention_lora(backbone, seed=1), av_input(backbone, seed=1),
                               compiled=compiled, checkpointing=True)

    loss, grads = run((), compiled=False)
    counters.clear()
    s_loss, s_grads = run(tuple(range(len(blocks))), compiled=True)
    assert 1 <= counters["stats"]["unique_graphs"] <= 2
    assert sum(counters["graph_break"].values()) == 0, dict(counters["graph_break"])
    assert s_loss == pytest.approx(loss, rel=1e-5)
    for got, want in zip(s_grads, grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)

    assert len(_quantized_layers(model)) == quantized
    after = model.model.diffusion_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def _dequantize_kernel_calls(run) -> tuple[object, int]:
    """``run()``'s result and how many times comfy-kitchen's dequantize op ran in it."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        result = run()
    return result, sum(e.name == "comfy_kitchen::dequantize_fp8" for e in prof.events())


def test_compiled_fp8_blocks_trace_the_dequantize_instead_of_calling_the_kernel(comfy, fresh_compiler, tmp_path,
                                                                                  monkeypatch):
    """Inside the compiled blocks the fp8 weights dequantize as traced tensor ops (fused by Inductor), not as
    comfy-kitchen's custom op, which stayed one Python call per quantized Linear and block at run time; eager
    blocks keep the kernel. Same loss and gradients either way."""
    import torch._functorch.config
    import torch._inductor.config

    from trainer_core.comfy import ComfyBackbone

    # Compile afresh: a graph cached on disk by an earlier version would hide what this version traces.
    monkeypatch.setattr(torch._inductor.config, "fx_graph_cache", False)
    monkeypatch.setattr(torch._functorch.config, "enable_autograd_cache", False)
    model = _load_as_on_fp8_card(write_downloaded_layout(tmp_path / "fp8.safetensors", "fp8"))
    backbone = ComfyBackbone(model)
    adapters = attention_lora(backbone, seed=1)
    inp = av_input(backbone, seed=1)

    (eager_loss, eager), eager_calls = _dequantize_kernel_calls(
        lambda: _loss_and_grads(backbone, adapters, inp, compiled=False, checkpointing=True))
    _loss_and_grads(backbone, adapters, inp, compiled=True, checkpointing=True)  # compiles
    (loss, grads), compiled_calls = _dequantize_kernel_calls(
        lambda: _loss_and_grads(backbone, adapters, inp, compiled=True, checkpointing=True))
    assert eager_calls > 0
    assert compiled_calls == 0
    assert loss == pytest.approx(eager_loss, rel=1e-5)
    for got, want in zip(grads, eager, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
