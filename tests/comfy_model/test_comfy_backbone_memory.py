"""One copy of the weights: training on ComfyUI's loaded MODEL adds LoRA + optimizer + activations, not a model.

A ~110M-parameter LTX-2.3 model (440 MB in float32) is loaded by ComfyUI under inference mode; a training step
through ComfyBackbone must not grow the process by anything close to the model size (a reload or a clone, as
ComfyUI's native Train LoRA node does, would add the whole 440 MB).
"""

from __future__ import annotations

import gc

import psutil
import torch

from tests.comfy_models import flow_loss, load_comfy, model_input, text_embeds, write_medium_checkpoint
from trainer_core.lora.adapter import LoraAdapters
from trainer_core.lora.targets import select_targets


def _rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def test_training_step_adds_far_less_than_the_model(comfy, tmp_path):
    from trainer_core.comfy import ComfyBackbone
    from trainer_core.comfy.inference import trainable_aliases

    path, params = write_medium_checkpoint(tmp_path / "medium.safetensors")
    model = load_comfy(path)
    model_bytes = sum(t.numel() * t.element_size() for t in model.model.diffusion_model.state_dict().values())
    assert params > 100_000_000 and model_bytes > 400e6
    backbone = ComfyBackbone(model)
    backbone.set_gradient_checkpointing(True)
    with torch.inference_mode():
        text = backbone.prepare_text(text_embeds(backbone, seed=1))
    inp = model_input(text, seed=2, audio=True, first_frame=True)
    adapters = LoraAdapters(select_targets(backbone.lora_targets(), "all_attention"), rank=8, alpha=8,
                            generator=torch.Generator().manual_seed(3))
    optimizer = torch.optim.AdamW(adapters.parameters(), lr=1e-3)
    lora_state_bytes = 4 * sum(p.numel() * 4 for p in adapters.parameters())  # weights, grads, two moments

    with torch.inference_mode():  # warm up ComfyUI's own allocations (kernel caches, load bookkeeping)
        backbone.velocity(inp)
    storage = {n: p.data_ptr() for n, p in model.model.diffusion_model.named_parameters()}
    baseline = _rss()
    peak = 0
    with backbone.training_session(), adapters.attached():
        with trainable_aliases(model.model.diffusion_model) as count:
            assert count == 0  # the session already swapped every inference tensor; nothing left to alias
        trained = dict(model.model.diffusion_model.named_parameters())
        assert not any(p.is_inference() for p in trained.values())
        assert {n: p.data_ptr() for n, p in trained.items()} == storage  # aliases: the very same memory
        for step in range(2):
            flow_loss(backbone, inp, seed=step).backward()
            optimizer.step()
            peak = max(peak, _rss())
            optimizer.zero_grad()
    delta = peak - baseline
    print(f"model {model_bytes / 1e6:.0f} MB, LoRA {lora_state_bytes / 1e6:.1f} MB, RSS delta {delta / 1e6:.1f} MB")
    # Measured 6-140 MB (allocator reuse varies) against 564 MB of weights; a second copy would add >= 564 MB.
    assert delta < 0.5 * model_bytes
