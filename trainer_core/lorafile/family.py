"""Which model family a LoRA or a checkpoint belongs to, from our metadata or from structural signatures.

LoRA files (what their modules and shapes show):
- gated attention (``*.to_gate_logits``) or prompt AdaLN (``prompt_adaln_single``): LTX-2.3 or 2.5 (they share them);
- AdaLN width: ``adaln_single.linear`` maps dim -> 9 x dim in LTX-2.3/2.5, 6 x dim in LTX-2 and LTXV 0.9.x;
- ``caption_projection`` inside the transformer: LTX-2 (or LTXV 0.9.x, which has no audio);
- audio modules: an LTX-2.x model; a video-only 2048-wide LoRA: LTXV 0.9.x 2B.
The signatures found are intersected; what is left when they cannot decide is an "unknown family" (the attention
and FFN layers of LTX-2, 2.3 and 2.5 share names and widths, so a q/k/v/out LoRA without metadata is one).

Checkpoints also show LTX-2.5's own signatures: no FFN biases (``ff_bias=false`` in the header's transformer config,
and no ``ff.net.*.bias`` weights), a keyframe position embedding, and a Gemma 4 text encoder pack (``gemma_config`` /
``tokenizer_json``) carrying the projection. ComfyUI builds its MODEL from that header config (``unet_config``), so
a loaded LTX-2.5 MODEL shows ``ff_bias`` false there and has no FFN bias parameters; a file that lacks the biases
without saying so in its header is built with them (reported missing in ComfyUI's log) and reads as 2.3.
LTX-2.5 is refused with ``UnsupportedModelError`` until it is supported.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

from ..errors import UserError
from . import metadata as md
from .layouts import ParsedLora
from .modules import is_audio_stream, is_ltx_module, module_group, submodule

NOT_LTX = "not-ltx"
FAMILY_NAMES = {
    md.FAMILY_LTX2: "LTX-2 (19B)",
    md.FAMILY_LTX23: "LTX-2.3 (22B)",
    md.FAMILY_LTX25: "LTX-2.5",
    md.FAMILY_LTXV09: "LTXV 0.9.x",
    NOT_LTX: "not an LTX model",
}
_ALL = (md.FAMILY_LTX2, md.FAMILY_LTX23, md.FAMILY_LTX25, md.FAMILY_LTXV09)
_AV = frozenset((md.FAMILY_LTX2, md.FAMILY_LTX23, md.FAMILY_LTX25))
_GATED = frozenset((md.FAMILY_LTX23, md.FAMILY_LTX25))
_UNGATED = frozenset((md.FAMILY_LTX2, md.FAMILY_LTXV09))
_RELEASED_WIDTHS = {"video": 4096, "audio": 2048}
# AdaLN modulation parameters per block: shift/scale/gate for attention and FFN, plus 3 for the text
# cross-attention's AdaLN that LTX-2.3 added.
ADALN_WIDTH = {6: _UNGATED, 9: _GATED}
UNSUPPORTED = {md.FAMILY_LTX25: "LTX-2.5 is not supported yet; use an LTX-2.3 checkpoint"}


class UnsupportedModelError(UserError, ValueError):
    """The model (or text encoder) belongs to a family this pack does not support yet."""


@dataclass
class FamilyGuess:
    """The model family a LoRA (or model) belongs to; several candidates when structure cannot decide."""

    candidates: tuple[str, ...]
    source: str  # "metadata" or "structure"
    reason: str

    @property
    def family(self) -> str | None:
        """The family when it is certain, else None."""
        return self.candidates[0] if len(self.candidates) == 1 else None

    def describe(self) -> str:
        names = " or ".join(FAMILY_NAMES.get(c, c) for c in self.candidates) or "no known family"
        if self.family:
            return f"{names}, from {self.source}: {self.reason}"
        return f"unknown family: {names} (cannot be told apart from this file), from {self.source}: {self.reason}"


def _stream_width(parsed: ParsedLora, attn: str) -> int | None:
    for name, m in parsed.modules.items():
        if submodule(name) in (f"{attn}.to_q", f"{attn}.to_k", f"{attn}.to_v"):
            return int(m.down.shape[1])
    return None


def _adaln_ratio(out_features: int, in_features: int) -> int | None:
    return out_features // in_features if in_features and out_features % in_features == 0 else None


def _lora_signatures(parsed: ParsedLora, ltx: list[str]) -> list[tuple[frozenset[str], str]]:
    """(families it allows, why) per structural signature found in the LoRA's LTX modules."""
    subs = {submodule(n) for n in ltx}
    found = []
    if any(is_audio_stream(n) or module_group(n) == "cross_modal_attention" for n in ltx):
        found.append((_AV, "audio+video modules (LTX-2.x)"))
    if any(s.endswith(".to_gate_logits") for s in subs):
        found.append((_GATED, "gated attention (to_gate_logits: LTX-2.3 and later)"))
    if any(s.startswith(("prompt_adaln_single.", "audio_prompt_adaln_single.")) for s in subs):
        found.append((_GATED, "prompt AdaLN (prompt_adaln_single: LTX-2.3 and later)"))
    for name in ("adaln_single.linear", "audio_adaln_single.linear"):
        m = parsed.modules.get(name)
        ratio = _adaln_ratio(int(m.up.shape[0]), int(m.down.shape[1])) if m is not None else None
        if ratio in ADALN_WIDTH:
            found.append((ADALN_WIDTH[ratio], f"{ratio}-wide AdaLN ({name}: 9 in LTX-2.3, 6 in LTX-2)"))
    if any(s.startswith(("caption_projection.", "audio_caption_projection.")) for s in subs):
        found.append((_UNGATED, "caption projection inside the transformer (LTX-2 layout)"))
    if not found and _stream_width(parsed, "attn1") == 2048:
        found.append((frozenset((md.FAMILY_LTXV09,)), "video-only, 2048 wide (LTXV 0.9.x 2B)"))
    return found


def family_from_structure(parsed: ParsedLora) -> FamilyGuess:
    """Guess the family from module names and widths alone (see the module docstring)."""
    names = list(parsed.modules)
    ltx = [n for n in names if is_ltx_module(n)]
    if not ltx:
        sample = ", ".join(names[:3])
        return FamilyGuess((NOT_LTX,), "structure", f"no LTX transformer module among its targets (e.g. {sample})")
    video = _stream_width(parsed, "attn1")
    width_note = ""
    if video is not None and video not in (_RELEASED_WIDTHS["video"], 2048):
        width_note = f"; its video width {video} matches no released model (a test or custom model)"
    signatures = _lora_signatures(parsed, ltx)
    allowed = set(_ALL)
    for families, _ in signatures:
        allowed &= families
    candidates = tuple(f for f in _ALL if f in allowed)
    if not signatures:
        reason = ("attention / FFN modules that LTX-2, 2.3 and 2.5 (and LTXV 0.9.x for video) share with identical "
                  "names and widths; without our metadata the base model cannot be told from the file")
    elif not candidates:
        reason = "contradictory signatures: " + "; ".join(why for _, why in signatures)
    else:
        reason = "; ".join(why for _, why in signatures)
    return FamilyGuess(candidates, "structure", reason + width_note)


def detect_family(parsed: ParsedLora, metadata: Mapping[str, str]) -> FamilyGuess:
    """Our ``ltxlora.base_model`` metadata when present and valid, else ``family_from_structure``."""
    declared = metadata.get(md.BASE_MODEL)
    if declared in md.FAMILIES:
        return FamilyGuess((declared,), "metadata", f"{md.BASE_MODEL} = {declared}")
    return family_from_structure(parsed)


def model_family(
    weights: Mapping[str, torch.Size] | Iterable[str], config: Mapping[str, object] | None = None
) -> FamilyGuess:
    """The family of a model from its diffusion-model weight names (no ``diffusion_model.`` prefix); given their
    shapes too (a mapping), the AdaLN width is read as well. ``config`` is the transformer config the model was
    built from (the checkpoint header's ``transformer`` section; for ComfyUI's MODEL its ``unet_config``, which
    holds that section): ``ff_bias`` or ``audio_ff_bias`` false there is LTX-2.5 (no FFN biases) even where the
    weights are not at hand."""
    shapes = weights if isinstance(weights, Mapping) else {}
    names = set(weights)
    if not any(n.startswith("transformer_blocks.") for n in names) or "patchify_proj.weight" not in names:
        return FamilyGuess((NOT_LTX,), "structure", "no LTX transformer weights")
    if "audio_adaln_single.linear.weight" not in names:
        return FamilyGuess((md.FAMILY_LTXV09,), "structure", "no audio stream")
    ffn = "transformer_blocks.0.ff.net.0.proj"
    no_bias = [k for k in ("ff_bias", "audio_ff_bias") if (config or {}).get(k) is False]
    ltx25 = [f"{' and '.join(no_bias)} false in its config"] if no_bias else []
    ltx25 += ["keyframe position embedding"] * ("keyframes_abs_pos_embedding" in names)
    ltx25 += ["no FFN biases"] * (f"{ffn}.weight" in names and f"{ffn}.bias" not in names)
    if ltx25:
        return FamilyGuess((md.FAMILY_LTX25,), "structure", " and ".join(ltx25) + " (LTX-2.5)")
    found = []
    adaln = shapes.get("adaln_single.linear.weight")
    ratio = _adaln_ratio(int(adaln[0]), int(adaln[1])) if adaln is not None else None
    if any(n.endswith(".to_gate_logits.weight") for n in names):
        found.append((md.FAMILY_LTX23, "gated attention"))
    if "prompt_adaln_single.linear.weight" in names:
        found.append((md.FAMILY_LTX23, "prompt AdaLN"))
    if ratio in ADALN_WIDTH:
        found.append((md.FAMILY_LTX23 if ratio == 9 else md.FAMILY_LTX2, f"{ratio}-wide AdaLN"))
    if "caption_projection.linear_1.weight" in names:
        found.append((md.FAMILY_LTX2, "caption projection in the transformer"))
    families = {f for f, _ in found}
    if len(families) > 1:
        return FamilyGuess(tuple(sorted(families)), "structure",
                           "contradictory signatures: " + ", ".join(f"{why} ({f})" for f, why in found))
    family = families.pop() if families else md.FAMILY_LTX2
    why = ", ".join(why for _, why in found) or "audio+video without gated attention"
    return FamilyGuess((family,), "structure", f"{why} ({FAMILY_NAMES[family].split(' ')[0]})")


def refuse_unsupported(guess: FamilyGuess, what: str) -> None:
    """Raise ``UnsupportedModelError`` when ``what`` (a model, named for the message) is of an unsupported family."""
    if guess.family in UNSUPPORTED:
        raise UnsupportedModelError(f"{what} is {FAMILY_NAMES[guess.family]} ({guess.reason}): "
                                    f"{UNSUPPORTED[guess.family]}")
