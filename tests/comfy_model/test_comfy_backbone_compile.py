"""Compiled transformer blocks (``memory.compile_blocks``): same gradients as the eager blocks, one graph for all.

Compiling runs torch.compile's CPU backend here (a C++ compiler); on a GPU the same graphs go to Triton
(``fresh_compiler`` in conftest.py says why PyTorch attention).
"""

from __future__ import annotations

import pytest
import torch

from tests.comfy_models import attention_lora, av_input, flow_loss, load_comfy, model_input, text_embeds
from trainer_core.config import ConfigError
from trainer_core.engine.compiling import compile_wanted
from trainer_core.ltxcore.tiny import write_tiny_checkpoint

LAYERS = 4


def _loss_and_grads(backbone, adapters, inp, compiled: bool, checkpointing: bool) -> tuple[float, list[torch.Tensor]]:
    backbone.set_gradient_checkpointing(checkpointing)
    backbone.set_compiled_blocks(compiled)
    adapters.zero_grad(set_to_none=True)
    with backbone.training_session(), adapters.attached():
        loss = flow_loss(backbone, inp, seed=3)
        loss.backward()
    return loss.item(), [p.grad.clone() for p in adapters.parameters()]


@pytest.mark.parametrize("checkpointing", [False, True])  # True compiles the checkpoint with the block
def test_compiled_blocks_match_eager_and_share_one_graph(comfy, fresh_compiler, tmp_path, checkpointing):
    from torch._dynamo.utils import counters

    from trainer_core.comfy import ComfyBackbone

    path = write_tiny_checkpoint(tmp_path / "tiny.safetensors", audio=True, seed=7, num_layers=LAYERS)
    backbone = ComfyBackbone(load_comfy(path))
    adapters = attention_lora(backbone, seed=1)
    inp = av_input(backbone, seed=1)

    eager_loss, eager = _loss_and_grads(backbone, adapters, inp, False, checkpointing)
    counters.clear()
    compiled_loss, compiled = _loss_and_grads(backbone, adapters, inp, True, checkpointing)

    assert counters["stats"]["unique_graphs"] >= 1, "the compiled path did not run"
    # Block 0's inputs do not require grad, the other blocks' do: two graphs serve all LAYERS blocks.
    assert counters["stats"]["unique_graphs"] <= 2 < LAYERS
    assert sum(counters["graph_break"].values()) == 0
    assert compiled_loss == pytest.approx(eager_loss, rel=1e-6)
    for e, c in zip(eager, compiled, strict=True):
        torch.testing.assert_close(c, e, rtol=1e-4, atol=1e-7)
    assert any(g.abs().max() > 0 for g in compiled)


def test_compile_setting_resolution(monkeypatch):
    import importlib.util

    from trainer_core.engine import compiling

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not compile_wanted("off", cuda)
    assert not compile_wanted("auto", cpu)
    assert compile_wanted("on", cpu)  # the CPU backend needs only a C++ compiler
    compiling._compile_failure.cache_clear()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert not compile_wanted("auto", cuda)
    with pytest.raises(ConfigError, match="Triton is not installed"):
        compile_wanted("on", cuda)
    compiling._compile_failure.cache_clear()


def test_broken_compiler_falls_back_or_fails_clearly(monkeypatch, caplog):
    from trainer_core.engine import compiling

    def broken(*args, **kwargs):
        raise RuntimeError("Failed to find C compiler. Please specify via CC environment variable.")

    compiling._compile_failure.cache_clear()
    monkeypatch.setattr(torch, "compile", broken)
    try:
        assert "RuntimeError: Failed to find C compiler" in compiling._compile_failure("cpu")
        with pytest.raises(ConfigError, match=r"torch.compile failed on cpu: RuntimeError: Failed to find C comp"):
            compile_wanted("on", torch.device("cpu"))
    finally:
        compiling._compile_failure.cache_clear()
    # auto on a GPU whose probe fails: uncompiled blocks and a warning that says why.
    monkeypatch.setattr(compiling, "_compile_failure", lambda device: "torch.compile failed on cuda: no C compiler")
    assert not compile_wanted("auto", torch.device("cuda"))
    assert "uncompiled blocks" in caplog.text and "no C compiler" in caplog.text


def test_auto_compiles_only_blocks_whose_weights_are_on_the_device():
    from torch import nn

    from trainer_core.comfy.blocks import compiles

    resident = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    streamed = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4, device="meta"))  # one layer left on another device
    cpu = torch.device("cpu")
    assert compiles("resident", resident, cpu)
    assert not compiles("resident", streamed, cpu)
    assert compiles("all", streamed, cpu)
    assert not compiles(None, resident, cpu)


def test_compile_setting_reaches_the_blocks(comfy, tmp_path):
    from trainer_core.comfy import ComfyBackbone
    from trainer_core.comfy.blocks import OPTIONS_KEY

    backbone = ComfyBackbone(load_comfy(write_tiny_checkpoint(tmp_path / "t.safetensors", audio=True, seed=1)))
    with torch.inference_mode():
        text = backbone.prepare_text(text_embeds(backbone, seed=1))
    inp = model_input(text, seed=2, audio=True)
    seen = {}
    for enabled, streamed in ((False, False), (True, False), (True, True)):
        backbone.set_compiled_blocks(enabled, streamed)
        with backbone.training_session():
            seen[(enabled, streamed)] = backbone._transformer_options(inp, True)[OPTIONS_KEY]["compile"]
    assert seen == {(False, False): None, (True, False): "resident", (True, True): "all"}


def test_audio_video_steps_reuse_the_compiled_blocks_without_host_syncs(comfy, fresh_compiler, tmp_path):
    """Audio+video training steps after the first compile nothing new (another caption, sigma and first-frame draw
    included), break no graph, and the forward and backward read no tensor value on the host (``.item()``,
    ``bool(tensor)``, ``nonzero``: on a GPU each waits for the device)."""
    from torch._dynamo.utils import counters
    from torch.profiler import ProfilerActivity, profile

    from trainer_core.comfy import ComfyBackbone

    backbone = ComfyBackbone(load_comfy(write_tiny_checkpoint(tmp_path / "t.safetensors", audio=True, seed=7,
                                                              num_layers=LAYERS)))
    backbone.set_gradient_checkpointing(True)
    backbone.set_compiled_blocks(True)
    adapters = attention_lora(backbone, seed=1)
    first = av_input(backbone, seed=1)  # first-frame conditioning
    with torch.inference_mode():
        text = backbone.prepare_text(text_embeds(backbone, seed=9))
    second = model_input(text, seed=4, audio=True, sigmas=(0.3,))  # no conditioning frame, another caption
    with backbone.training_session(), adapters.attached():
        flow_loss(backbone, first, seed=3).backward()
        graphs = counters["stats"]["unique_graphs"]
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            flow_loss(backbone, second, seed=3).backward()
    assert graphs >= 1
    assert counters["stats"]["unique_graphs"] == graphs
    assert sum(counters["graph_break"].values()) == 0
    host_reads = [e.name for e in prof.events() if e.name in ("aten::_local_scalar_dense", "aten::nonzero")]
    assert host_reads == []
