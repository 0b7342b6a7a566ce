"""The block streamer (``trainer_core.comfy.streaming``): streamed blocks train exactly like resident ones.

On the CPU nothing is offloaded, so the tests force blocks through the streamer (``streamed_blocks``): their
weights are copied into the two slots and the parameters point there while the block runs, as on a GPU where
ComfyUI left them on the host. Slots are reused between blocks, so a block that ran on another block's slot
contents, or a backward that recomputed without reloading, gives different gradients.
"""

from __future__ import annotations

import pytest
import torch

from tests.comfy_models import attention_lora, av_input, flow_loss, load_comfy, text_embeds
from trainer_core.ltxcore.tiny import write_tiny_checkpoint

LAYERS = 5
STREAMED = (1, 2, 3, 4)  # four blocks through two slots: every slot is reused, forward and backward


@pytest.fixture(scope="module")
def model(comfy, tmp_path_factory):
    path = write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny5.safetensors", seed=5, num_layers=LAYERS)
    return load_comfy(path)


def _step(model, streamed, watch=None, compiled=False, between=None, resident_bytes=None
          ) -> tuple[float, dict[str, torch.Tensor], object]:
    """One checkpointed LoRA step; returns (loss, LoRA gradients, (backbone, bytes streamed)).

    ``watch(backbone)`` runs when the session starts, ``between(backbone)`` between forward and backward."""
    from trainer_core.comfy import ComfyBackbone

    backbone = ComfyBackbone(model, streamed_blocks=streamed, resident_bytes=resident_bytes)
    backbone.set_gradient_checkpointing(True)
    backbone.set_compiled_blocks(compiled)
    adapters = attention_lora(backbone, seed=1)
    inp = av_input(backbone, seed=3)
    with backbone.training_session(), adapters.attached():
        if watch is not None:
            watch(backbone)
        loss = flow_loss(backbone, inp, seed=5)
        if between is not None:
            between(backbone)
        loss.backward()
        copied = backbone.streamer.bytes_copied if backbone.streamer is not None else 0
    grads = {f"{n}.{w}": p.grad.clone() for i, n in enumerate(adapters.names)
             for w, p in (("A", adapters.lora_A[i]), ("B", adapters.lora_B[i])) if p.grad is not None}
    return loss.item(), grads, (backbone, copied)


def test_streamed_blocks_give_the_resident_gradients(model):
    loss, grads, _ = _step(model, streamed=())
    s_loss, s_grads, (backbone, copied) = _step(model, streamed=STREAMED)
    assert s_loss == loss
    assert grads.keys() == s_grads.keys() and len(grads) > 0
    for name in grads:
        torch.testing.assert_close(s_grads[name], grads[name], rtol=0, atol=0, msg=name)
    # Forward: the four blocks; backward: the last two are still in the slots, the first two come back.
    blocks = model.model.diffusion_model.transformer_blocks
    block_bytes = sum(p.nbytes for p in blocks[1].parameters())
    assert block_bytes * 6 <= copied < block_bytes * 6 * 1.1
    assert backbone.streamer is None  # released when the session ended


def test_resident_blocks_are_copied_once_and_the_rest_rotate(model):
    """With memory for two blocks (as under dynamic VRAM), the first two streamed blocks get slots of their own and
    are copied once per session; the other two rotate through the two slots. Gradients stay exact."""
    from trainer_core.comfy.streaming import block_bytes

    blocks = model.model.diffusion_model.transformer_blocks
    size = block_bytes(blocks[1])
    loss, grads, _ = _step(model, streamed=())
    resident: list[set[int]] = []
    r_loss, r_grads, (backbone, copied) = _step(
        model, streamed=STREAMED, resident_bytes=2 * size + size // 2,
        between=lambda b: resident.append({s.block for s in b.streamer.resident_slots}))
    assert resident == [{1, 2}]
    assert r_loss == loss and grads.keys() == r_grads.keys()
    for name in grads:
        torch.testing.assert_close(r_grads[name], grads[name], rtol=0, atol=0, msg=name)
    # Blocks 1, 2 once; 3, 4 into the two rotating slots, where the backward still finds them.
    assert copied == 4 * size


def test_a_new_caption_in_a_session_keeps_the_resident_blocks(model):
    """The engine prepares each caption's text context when it first meets it, mid-session: that must not send the
    resident blocks back to the host (a re-copy of every block per new caption)."""
    from trainer_core.comfy.streaming import block_bytes

    size = block_bytes(model.model.diffusion_model.transformer_blocks[1])
    kept: list[bool] = []

    def new_caption(backbone) -> None:
        streamer = backbone.streamer
        backbone.prepare_text(text_embeds(backbone, seed=9))
        kept.append(backbone.streamer is streamer and {s.block for s in streamer.resident_slots} == {1, 2})

    _step(model, streamed=STREAMED, resident_bytes=2 * size, between=new_caption)
    assert kept == [True]


class LowVramFlags:
    """The cast flags ComfyUI's loads leave: ``offloaded()`` marks the streamed blocks' layers as its partial load
    does (``comfy_cast_weights`` True on the instance, the previous value kept), ``reloaded()`` gives the other
    layers the instance-level flag a reload leaves on layers that were offloaded once. ``clear()`` undoes both."""

    def __init__(self, blocks) -> None:
        layers = [(i, m) for i, b in enumerate(blocks) for m in b.modules() if hasattr(m, "comfy_cast_weights")]
        self.streamed = [m for i, m in layers if i in STREAMED]
        self.others = [m for i, m in layers if i not in STREAMED]

    def offloaded(self, backbone=None) -> None:
        for m in self.streamed:
            m.prev_comfy_cast_weights = m.comfy_cast_weights
            m.comfy_cast_weights = True

    def reloaded(self) -> None:
        for k, m in enumerate(self.others):  # False, or True where the restored previous value was the offload flag
            m.comfy_cast_weights = k % 2 == 0

    def clear(self) -> None:
        for m in self.streamed + self.others:
            m.__dict__.pop("prev_comfy_cast_weights", None)
            m.__dict__.pop("comfy_cast_weights", None)


@pytest.fixture()
def low_vram_flags(model):
    flags = LowVramFlags(model.model.diffusion_model.transformer_blocks)
    yield flags
    flags.clear()


def test_compiled_recompute_reads_the_reloaded_weights(model, fresh_compiler, low_vram_flags):
    """Compiled blocks save their weights as parameters, not as views of a slot: between forward and backward
    the slots are released and their old memory filled with NaN, and the gradients still equal the resident
    compiled run's (the backward reloads every block into new slots). Streamed blocks compile nothing new, though
    ComfyUI flagged their layers for per-layer casts."""
    from torch._dynamo.utils import counters

    old_slots: list[torch.Tensor] = []

    def poison(backbone) -> None:
        old_slots.extend(s.buffer for s in backbone.streamer.slots)
        backbone.streamer.release()
        for buffer in old_slots:
            buffer.fill_(255)  # all-ones bytes: NaN in float32

    counters.clear()
    loss, grads, _ = _step(model, streamed=(), compiled=True)
    assert counters["stats"]["unique_graphs"] >= 1, "the compiled path did not run"
    counters.clear()
    low_vram_flags.reloaded()  # before the session's load, which makes the flags uniform again
    s_loss, s_grads, _ = _step(model, streamed=STREAMED, compiled=True, watch=low_vram_flags.offloaded,
                               between=poison)
    assert len(old_slots) == 2
    assert counters["stats"]["unique_graphs"] == 0, "streamed blocks should reuse the resident blocks' graphs"
    assert s_loss == loss and grads.keys() == s_grads.keys()
    for name in grads:
        torch.testing.assert_close(s_grads[name], grads[name], rtol=0, atol=0, msg=name)


def test_streamed_weights_live_in_the_slots_while_their_block_runs(model):
    """Forward and checkpoint recompute of every streamed block read slot memory holding that block's weights."""
    blocks = model.model.diffusion_model.transformer_blocks
    before = {n: (p.data_ptr(), p.clone()) for n, p in blocks.named_parameters()}
    flags = {n: m.comfy_cast_weights for n, m in blocks.named_modules() if hasattr(m, "comfy_cast_weights")}
    seen: list[tuple[int, bool, bool]] = []

    def watch(backbone):
        for i, block in enumerate(blocks):
            def check(module, args, i=i):
                streamer = backbone.streamer
                ptr = module.weight.data_ptr()
                in_slot = streamer is not None and any(
                    s.buffer.data_ptr() <= ptr < s.buffer.data_ptr() + s.buffer.nbytes for s in streamer.slots)
                same = torch.equal(module.weight, before[f"{i}.attn1.to_q.weight"][1])
                seen.append((i, in_slot, same))
            handles.append(block.attn1.to_q.register_forward_pre_hook(check))

    handles: list = []
    try:
        _step(model, streamed=STREAMED, watch=watch)
    finally:
        for h in handles:
            h.remove()
    runs = {i: [(slot, same) for j, slot, same in seen if j == i] for i in range(LAYERS)}
    for i in range(LAYERS):
        assert len(runs[i]) == 2, f"block {i}: forward + recompute expected, got {runs[i]}"
        assert all(same for _, same in runs[i]), f"block {i} ran with another block's weights"
        assert all(slot == (i in STREAMED) for slot, _ in runs[i]), f"block {i}: {runs[i]}"
    # Afterwards the model is exactly as ComfyUI left it: same storage, same values, same cast flags.
    for n, p in blocks.named_parameters():
        assert p.data_ptr() == before[n][0] and torch.equal(p, before[n][1]), n
    assert flags == {n: m.comfy_cast_weights for n, m in blocks.named_modules() if hasattr(m, "comfy_cast_weights")}


def test_comfyui_block_prefetch_is_off_while_the_streamer_runs_the_blocks(model, monkeypatch):
    """Under dynamic VRAM ComfyUI's block loop faults each block's weights into aimdo's pages just before the block
    runs (``prefetch_dynamic_vbars``). Where the streamer has put the blocks on the device that is a second copy of
    the model and a wait per block, so the streamer's steps turn it off; ComfyUI's own per-layer path (no
    checkpointing, no streamer) keeps it. (On the CPU ComfyUI never prefetches, so the option is what is checked.)"""
    import comfy.model_prefetch

    seen: list[bool] = []
    make_queue = comfy.model_prefetch.make_prefetch_queue

    def spy(queue, device, transformer_options):
        seen.append(bool(transformer_options.get("prefetch_dynamic_vbars", False)))
        return make_queue(queue, device, transformer_options)

    monkeypatch.setattr(comfy.model_prefetch, "make_prefetch_queue", spy)
    monkeypatch.setattr(model, "is_dynamic", lambda: True)  # as ComfyUI's default mode on NVIDIA loads it
    _step(model, streamed=STREAMED, resident_bytes=0)
    assert seen == [False]

    from trainer_core.comfy import ComfyBackbone

    seen.clear()
    backbone = ComfyBackbone(model)  # no checkpointing: ComfyUI's own path runs the blocks and keeps its prefetch
    inp = av_input(backbone, seed=3)
    with backbone.training_session():
        flow_loss(backbone, inp, seed=5)
    assert seen == [True]
