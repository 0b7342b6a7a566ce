"""Which LTX transformer layer a LoRA module name is: its group, its stream, whether it is an LTX layer at all."""

from __future__ import annotations

import re

_BLOCK = re.compile(r"^transformer_blocks\.(\d+)\.(.+)$")
_BLOCK_SUBMODULES = re.compile(
    r"^(attn1|attn2|audio_attn1|audio_attn2|audio_to_video_attn|video_to_audio_attn)"
    r"\.(to_q|to_k|to_v|to_out\.0|to_gate_logits)$"
    r"|^(ff|audio_ff)\.net\.(0\.proj|2)$"
)
_TOP_LEVEL = re.compile(
    r"^(audio_)?(patchify_proj|proj_out|caption_projection\.linear_[12]"
    r"|(prompt_)?adaln_single\.(linear|emb\.timestep_embedder\.linear_[12]))$"
    r"|^av_ca_(a2v_gate|v2a_gate|audio_scale_shift|video_scale_shift)_adaln_single\.(linear|emb\.timestep_embedder\.linear_[12])$"
)

GROUPS = ("video_attention", "audio_attention", "cross_modal_attention", "video_ffn", "audio_ffn", "other")


def module_group(module: str) -> str:
    """The group of an LTX module: video/audio/cross-modal attention, video/audio FFN, or other."""
    found = _BLOCK.match(module)
    sub = found.group(2) if found else module
    if sub.startswith(("audio_to_video_attn.", "video_to_audio_attn.")):
        return "cross_modal_attention"
    if sub.startswith(("audio_attn1.", "audio_attn2.")):
        return "audio_attention"
    if sub.startswith(("attn1.", "attn2.")):
        return "video_attention"
    if sub.startswith("audio_ff."):
        return "audio_ffn"
    if sub.startswith("ff."):
        return "video_ffn"
    return "other"


def is_audio_stream(module: str) -> bool:
    """Whether ``module`` writes into the audio stream (audio strength applies) rather than the video one.

    A cross-modal attention belongs to the stream its output is added to: ``video_to_audio_attn`` updates the
    audio tokens, ``audio_to_video_attn`` the video tokens; likewise for the AdaLN tables that modulate them.
    """
    found = _BLOCK.match(module)
    sub = found.group(2) if found else module
    if sub.startswith("audio_to_video_attn."):
        return False
    return sub.startswith(("audio_", "video_to_audio_attn.", "av_ca_audio_", "av_ca_v2a_"))


def is_ltx_module(module: str) -> bool:
    """Whether ``module`` is a Linear layer name of an LTX transformer (any version)."""
    found = _BLOCK.match(module)
    return bool(_BLOCK_SUBMODULES.match(found.group(2))) if found else bool(_TOP_LEVEL.match(module))


def block_index(module: str) -> int | None:
    """The transformer block a module is in, or None for a top-level module."""
    found = _BLOCK.match(module)
    return int(found.group(1)) if found else None


def submodule(module: str) -> str:
    """The module name inside its block (``attn1.to_q``), or the name itself for a top-level module."""
    found = _BLOCK.match(module)
    return found.group(2) if found else module
