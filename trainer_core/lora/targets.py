"""Which Linear layers get a LoRA: presets and custom lists, matched like PEFT's ``target_modules``.

A pattern matches a module whose name equals it or ends with ``"." + pattern``, so ``to_k`` matches all six
attentions while ``attn1.to_k`` does not match ``audio_attn1.to_k`` (the reference trainer's semantics).
"""

from __future__ import annotations

from torch import nn

from ..config import ConfigError

_PROJ = ("to_q", "to_k", "to_v", "to_out.0")
_VIDEO_ATTN = (*(f"attn1.{p}" for p in _PROJ), *(f"attn2.{p}" for p in _PROJ))

PRESETS: dict[str, tuple[str, ...]] = {
    # Reference default: q/k/v/out of all six attentions (video, text, audio, audio-text, both cross-modal).
    "all_attention": _PROJ,
    # The reference IC-LoRA preset: video self/text attention plus the video feed-forward.
    "video_attention_ffn": (*_VIDEO_ATTN, "ff.net.0.proj", "ff.net.2"),
    # Video stream only: leaves audio and both cross-modal attentions untouched.
    "video_attention": _VIDEO_ATTN,
}


def _matches(name: str, pattern: str) -> bool:
    return name == pattern or name.endswith("." + pattern)


def _suffixes(names: list[str]) -> list[str]:
    """Valid pattern suffixes (module names without the block prefix), for error messages."""
    out = set()
    for n in names:
        parts = n.split(".")
        out.add(".".join(parts[2:]) if parts[0] == "transformer_blocks" else n)
    return sorted(out)


def select_targets(
    available: dict[str, nn.Module], preset: str, custom: list[str] | None = None
) -> dict[str, nn.Module]:
    """The modules to adapt: ``preset`` from PRESETS, or ``preset="custom"`` with a list of patterns."""
    if preset == "custom":
        patterns = list(custom or [])
        if not patterns:
            raise ConfigError("lora.targets = 'custom' needs lora.custom_targets, e.g. ['attn1.to_q', 'ff.net.2']")
    elif preset in PRESETS:
        patterns = list(PRESETS[preset])
    else:
        raise ConfigError(f"lora.targets = {preset!r} is not a preset; choose one of {[*PRESETS, 'custom']}")
    names = sorted(available)
    unmatched = [p for p in patterns if not any(_matches(n, p) for n in names)]
    if unmatched:
        raise ConfigError(
            f"lora target pattern(s) {unmatched} match no Linear layer of this model. "
            f"Valid names: {_suffixes(names)}"
        )
    return {n: available[n] for n in names if any(_matches(n, p) for p in patterns)}
