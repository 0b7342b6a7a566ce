"""An out-of-place forward for ComfyUI's LTX-2.x audio-video transformer block, for training.

ComfyUI's ``BasicAVTransformerBlock.forward`` updates the residual streams in place (``vx.addcmul_(...)``,
``vx.add_(...)``) after autograd has saved them for the RMS norms: backward then raises "modified by an inplace
operation", and with activation checkpointing it silently recomputes from the already-updated input (27-44 %
gradient error per block, measured). This module computes the same math with fresh tensors for every update,
so autograd and ``torch.utils.checkpoint`` are exact. It is installed per block through ComfyUI's own hook
``transformer_options["patches_replace"]["dit"][("double_block", i)]`` on a ``ModelPatcher.clone()``, never on
the shared model, so nothing outside a training step runs it.

One deliberate difference from ComfyUI v0.33: the video-to-audio cross-attention reads the video stream
normalised *before* the audio-to-video update, as Lightricks' reference (ltx-core ``vx_norm3``) and ComfyUI
before v0.31 do. ComfyUI v0.31 (#15138) re-normalises after that update, which shifts the audio output by
~2.5e-2 on a tiny model; LoRAs should learn the function the base weights were trained for. Video-only training
never runs the cross-modal attentions, so there both orders are the same.

The block's own helpers (``get_ada_values``, ``_apply_text_cross_attention``, the attention modules) are reused:
they allocate new tensors; only the residual updates needed rewriting. Callers set
``comfy.model_management.in_training`` so those helpers take their autograd-friendly (unfused) kernels.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

# transformer_options key holding this pack's per-call settings (see ``OutOfPlaceBlock``).
OPTIONS_KEY = "ltx_lora_trainer"

# Arguments ComfyUI passes to a "double_block" replacement besides the residual streams ``img``.
_BLOCK_ARGS = (
    "v_context", "a_context", "attention_mask", "v_timestep", "a_timestep", "v_pe", "a_pe", "v_cross_pe",
    "a_cross_pe", "v_cross_scale_shift_timestep", "a_cross_scale_shift_timestep", "v_cross_gate_timestep",
    "a_cross_gate_timestep", "transformer_options", "self_attention_mask", "v_prompt_timestep",
    "a_prompt_timestep",
)


def _rms_norm(x: torch.Tensor) -> torch.Tensor:
    import comfy.ldm.common_dit

    return comfy.ldm.common_dit.rms_norm(x)


def _modulate(x_normed: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    return x_normed * (1 + scale) + shift


def _self_and_text_attention(
    block: nn.Module, x: torch.Tensor, attn1: nn.Module, attn2: nn.Module, table: torch.Tensor, prompt_table: str,
    timestep: torch.Tensor, prompt_timestep: torch.Tensor, pe: Any, context: torch.Tensor,
    self_mask: torch.Tensor | None, kw: dict[str, Any], opts: dict,
) -> torch.Tensor:
    """One stream's gated self-attention then text cross-attention, as new tensors (never in place)."""
    shift, scale = block.get_ada_values(table, x.shape[0], timestep, slice(0, 2))
    out = attn1(_modulate(_rms_norm(x), scale, shift), pe=pe, mask=self_mask, transformer_options=opts)
    gate = block.get_ada_values(table, x.shape[0], timestep, slice(2, 3))[0]
    x = torch.addcmul(x, out, gate)
    return x + block._apply_text_cross_attention(
        x, context, attn2, table, getattr(block, prompt_table, None), timestep, prompt_timestep,
        kw["attention_mask"], opts,
    )


def av_block_forward(block: nn.Module, vx: torch.Tensor, ax: torch.Tensor, kw: dict[str, Any]) -> tuple[
    torch.Tensor, torch.Tensor
]:
    """One ``BasicAVTransformerBlock`` step without in-place updates; ``kw`` are ComfyUI's block arguments."""
    opts = kw["transformer_options"] or {}
    run_vx = opts.get("run_vx", True)
    run_ax = opts.get("run_ax", True) and ax.numel() > 0
    run_a2v = run_vx and opts.get("a2v_cross_attn", True) and ax.numel() > 0
    run_v2a = run_ax and opts.get("v2a_cross_attn", True)
    ada = block.get_ada_values
    batch = vx.shape[0]

    if run_vx:
        vx = _self_and_text_attention(
            block, vx, block.attn1, block.attn2, block.scale_shift_table, "prompt_scale_shift_table",
            kw["v_timestep"], kw["v_prompt_timestep"], kw["v_pe"], kw["v_context"], kw["self_attention_mask"], kw, opts,
        )
    if run_ax:
        ax = _self_and_text_attention(
            block, ax, block.audio_attn1, block.audio_attn2, block.audio_scale_shift_table,
            "audio_prompt_scale_shift_table", kw["a_timestep"], kw["a_prompt_timestep"], kw["a_pe"], kw["a_context"],
            None, kw, opts,
        )

    if run_a2v or run_v2a:
        vx_norm, ax_norm = _rms_norm(vx), _rms_norm(ax)  # both cross attentions read these (reference order)
        a_table, v_table = block.scale_shift_table_a2v_ca_audio, block.scale_shift_table_a2v_ca_video
        a_ss = ada(a_table[:4], batch, kw["a_cross_scale_shift_timestep"])  # scale, shift (a2v), scale, shift (v2a)
        v_ss = ada(v_table[:4], batch, kw["v_cross_scale_shift_timestep"])
        if run_a2v:
            out = block.audio_to_video_attn(
                _modulate(vx_norm, v_ss[0], v_ss[1]), context=_modulate(ax_norm, a_ss[0], a_ss[1]),
                pe=kw["v_cross_pe"], k_pe=kw["a_cross_pe"], transformer_options=opts,
            )
            vx = torch.addcmul(vx, out, ada(v_table[4:], batch, kw["v_cross_gate_timestep"])[0])
        if run_v2a:
            out = block.video_to_audio_attn(
                _modulate(ax_norm, a_ss[2], a_ss[3]), context=_modulate(vx_norm, v_ss[2], v_ss[3]),
                pe=kw["a_cross_pe"], k_pe=kw["v_cross_pe"], transformer_options=opts,
            )
            ax = torch.addcmul(ax, out, ada(a_table[4:], batch, kw["a_cross_gate_timestep"])[0])

    if run_vx:
        shift, scale, gate = ada(block.scale_shift_table, batch, kw["v_timestep"], slice(3, 6))
        vx = torch.addcmul(vx, block.ff(_modulate(_rms_norm(vx), scale, shift)), gate)
    if run_ax:
        shift, scale, gate = ada(block.audio_scale_shift_table, batch, kw["a_timestep"], slice(3, 6))
        ax = torch.addcmul(ax, block.audio_ff(_modulate(_rms_norm(ax), scale, shift)), gate)
    return vx, ax


def _checkpointed_block_forward(block: nn.Module, vx: torch.Tensor, ax: torch.Tensor, kw: dict[str, Any]) -> tuple[
    torch.Tensor, torch.Tensor
]:
    return checkpoint(av_block_forward, block, vx, ax, kw, use_reentrant=False)


@functools.cache
def compiled_block_forward(checkpointed: bool) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """``av_block_forward`` through ``torch.compile``, made once per process so every block shares one cache.

    The blocks have equal shapes and their weights are graph inputs, so one compiled graph serves all of them
    (two in practice: the first block's inputs do not require grad). Each new geometry or stream mix adds an
    entry, hence the raised recompile limit (beyond it torch falls back to the eager block, still correct).
    ``checkpointed`` compiles the checkpoint with the block: the recompute then runs inside the compiled
    backward, fused with it, instead of as a separate forward call.
    """
    import torch._dynamo

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    return torch.compile(_checkpointed_block_forward if checkpointed else av_block_forward, dynamic=False)


def compiles(mode: str | None, block: nn.Module, device: torch.device) -> bool:
    """Whether ``block`` runs compiled: every block for ``"all"``; for ``"resident"`` only blocks whose weights
    all live on ``device`` at the call, which includes blocks the streamer has just brought in. Blocks left to
    ComfyUI's per-layer copies (no checkpointing, layers ComfyUI patches per call) run eagerly: compiled, their varying
    mix of resident and host layers means more graphs to compile, and one such run (fp8 weights, 24 GiB cap,
    before the streamer) did not finish its first step in four minutes."""
    if mode == "all":
        return True
    return mode == "resident" and all(p.device == device for p in block.parameters())


class OutOfPlaceBlock:
    """A ``patches_replace["dit"][("double_block", i)]`` entry running ``av_block_forward`` on one bound block.

    Per-call settings come from ``transformer_options[OPTIONS_KEY]`` (a ``dict``): ``checkpoint`` (recompute the
    block in backward), ``compile`` (run ``compiled_block_forward``: ``"all"`` blocks, or ``"resident"`` ones
    only, see ``compiles``), ``cross_gates`` (``(video_gate, audio_gate)`` embeddings replacing ComfyUI's
    cross-attention gate timesteps, see ``ComfyBackbone``) and ``streamer`` (a ``streaming.BlockStreamer`` that
    brings host-resident weights in ahead of checkpointed blocks).
    """

    def __init__(self, block: nn.Module, index: int) -> None:
        self.block = block
        self.index = index

    def __call__(self, args: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        del extra  # ComfyUI's stock block wrapper: the point of this patch is not to call it
        kw = {k: args.get(k) for k in _BLOCK_ARGS}
        options = kw["transformer_options"] or {}
        settings = options.get(OPTIONS_KEY, {})
        # The block itself gets ComfyUI's options only: torch.compile guards on everything in them, and these
        # settings (a streamer object, flags) would otherwise split the compiled graphs.
        kw["transformer_options"] = {k: v for k, v in options.items() if k != OPTIONS_KEY}
        gates = settings.get("cross_gates")
        if gates is not None:
            kw["v_cross_gate_timestep"], kw["a_cross_gate_timestep"] = gates
        vx, ax = args["img"]
        checkpointed = settings.get("checkpoint", False) and torch.is_grad_enabled()
        streamer = settings.get("streamer")
        streamed = checkpointed and streamer is not None and streamer.streams(self.index)
        if streamed:
            streamer.enter(self.index)  # after this the block's weights are all on the device
        if compiles(settings.get("compile"), self.block, vx.device):
            vx, ax = compiled_block_forward(checkpointed)(self.block, vx, ax, kw)
        else:
            vx, ax = (_checkpointed_block_forward if checkpointed else av_block_forward)(self.block, vx, ax, kw)
        if streamed:
            vx, ax = streamer.mark(self.index, vx, ax)
        return {"img": (vx, ax)}


def install_out_of_place_blocks(patcher: Any, blocks: nn.ModuleList) -> None:
    """Register an ``OutOfPlaceBlock`` for every block on ``patcher`` (a clone: the options are per patcher)."""
    for i, block in enumerate(blocks):
        patcher.set_model_patch_replace(OutOfPlaceBlock(block, i), "dit", "double_block", i)
