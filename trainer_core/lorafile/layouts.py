"""LoRA key layouts of the tools LTX users move files between, and lossless conversion among them.

A LoRA is parsed into ``{module: LoraModule}`` (module = dotted path inside the diffusion model, e.g.
``transformer_blocks.0.attn1.to_q``) and written back in any layout:

- ``comfy``: ``diffusion_model.<module>.lora_A.weight`` / ``.lora_B.weight`` / ``.alpha`` (ours, ltx-trainer's,
  ComfyUI's; ComfyUI's own trainer writes ``lora_down``/``lora_up`` under the same prefix, also read here).
- ``peft``: ``base_model.model.<module>.lora_A.weight`` (PEFT ``get_peft_model_state_dict``); no alpha tensor,
  PEFT keeps alpha in its config, so alpha is folded into ``lora_B`` on writing.
- ``diffusers``: ``transformer.<module>.lora_A.weight`` (diffusers ``load_lora_weights`` and the older
  LTX-Video-Trainer, which used the same prefix); alpha folded like ``peft``.
- ``kohya``: ``lora_unet_<module with dots as underscores>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``
  (kohya sd-scripts, musubi-tuner).
- ``bare`` (read only): ``<module>.lora_A.weight`` without a prefix, which ComfyUI also accepts for LTX.

The module names are the same in every layout: ltx-core, ComfyUI and the LTX trainers share them. Scale
semantics follow ComfyUI: ``delta W = (alpha / rank) * up @ down``, and a missing alpha means scale 1.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from .metadata import CONVERTED_FROM, FORMAT
from .read import LoraFileError, read_lora_file
from .write import save_lora_file

LAYOUTS = ("comfy", "peft", "diffusers", "kohya")
WRITE_PREFIX = {"comfy": "diffusion_model.", "peft": "base_model.model.", "diffusers": "transformer."}
_READ_PREFIXES = (("diffusion_model.", "comfy"), ("base_model.model.", "peft"), ("transformer.", "diffusers"))
KOHYA_PREFIX = "lora_unet_"
# Layouts whose loaders read no alpha tensor: the scale is folded into lora_B when writing them.
_NO_ALPHA = ("peft", "diffusers")

# key suffix -> which half of the adapter it is
_SUFFIXES = (
    (".lora_A.default.weight", "down"),
    (".lora_B.default.weight", "up"),
    (".lora_A.weight", "down"),
    (".lora_B.weight", "up"),
    (".lora_down.weight", "down"),
    (".lora_up.weight", "up"),
    (".alpha", "alpha"),
)

# Dotted-path components of LTX module names that contain underscores; kohya names flatten the dots to
# underscores, so these are the words needed to put the dots back (longest match wins).
_LTX_WORDS = (
    "transformer_blocks",
    "transformer_1d_blocks",
    "video_embeddings_connector",
    "audio_embeddings_connector",
    "audio_attn1",
    "audio_attn2",
    "audio_to_video_attn",
    "video_to_audio_attn",
    "to_q",
    "to_k",
    "to_v",
    "to_out",
    "to_gate_logits",
    "audio_ff",
    "patchify_proj",
    "audio_patchify_proj",
    "proj_out",
    "audio_proj_out",
    "proj_in",
    "adaln_single",
    "audio_adaln_single",
    "prompt_adaln_single",
    "audio_prompt_adaln_single",
    "av_ca_a2v_gate_adaln_single",
    "av_ca_v2a_gate_adaln_single",
    "av_ca_audio_scale_shift_adaln_single",
    "av_ca_video_scale_shift_adaln_single",
    "timestep_embedder",
    "linear_1",
    "linear_2",
    "caption_projection",
    "audio_caption_projection",
)
_WORD_PARTS = sorted((tuple(w.split("_")) for w in _LTX_WORDS), key=len, reverse=True)


@dataclass
class LoraModule:
    """One adapted layer: ``delta W = scale * up @ down``."""

    down: torch.Tensor  # [rank, in] (lora_A / lora_down)
    up: torch.Tensor  # [out, rank] (lora_B / lora_up)
    alpha: float | None = None  # None: no alpha stored, scale 1

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def scale(self) -> float:
        return 1.0 if self.alpha is None else self.alpha / self.rank

    def delta(self) -> torch.Tensor:
        """The float32 weight update this adapter adds at strength 1."""
        return self.scale * (self.up.float().flatten(1) @ self.down.float().flatten(1))


@dataclass
class ParsedLora:
    """A LoRA in layout-independent form."""

    layout: str
    modules: dict[str, LoraModule]
    unsupported: list[str]  # keys that are not plain LoRA (LoHa, LoKr, DoRA, diff, ...)


def nonfinite_modules(parsed: ParsedLora) -> list[str]:
    """The modules whose weights or alpha hold NaN or Inf: applied, such a layer turns the model's output into NaN."""
    return sorted(
        name for name, m in parsed.modules.items()
        if not (bool(torch.isfinite(m.down).all()) and bool(torch.isfinite(m.up).all()))
        or (m.alpha is not None and not math.isfinite(m.alpha))
    )


def kohya_name(module: str) -> str:
    """``transformer_blocks.0.attn1.to_q`` -> ``lora_unet_transformer_blocks_0_attn1_to_q``."""
    return KOHYA_PREFIX + module.replace(".", "_")


def module_from_kohya(name: str, module_names: Iterable[str] | None = None) -> str:
    """Undo ``kohya_name``: exact through ``module_names`` (a model's modules) when given, else by LTX vocabulary."""
    flat = name.removeprefix(KOHYA_PREFIX)
    if module_names is not None:
        exact = {m.replace(".", "_"): m for m in module_names}
        if flat in exact:
            return exact[flat]
    parts = flat.split("_")
    out: list[str] = []
    i = 0
    while i < len(parts):
        word = next((w for w in _WORD_PARTS if tuple(parts[i : i + len(w)]) == w), (parts[i],))
        out.append("_".join(word))
        i += len(word)
    return ".".join(out)


def _split_key(key: str) -> tuple[str, str] | None:
    for suffix, part in _SUFFIXES:
        if key.endswith(suffix):
            return key[: -len(suffix)], part
    return None


def _layout_of(stem: str) -> tuple[str, str]:
    if stem.startswith(KOHYA_PREFIX):
        return "kohya", stem
    for prefix, layout in _READ_PREFIXES:
        if stem.startswith(prefix):
            return layout, stem[len(prefix) :]
    return "bare", stem


def detect_layout(keys: Iterable[str]) -> str:
    """The layout of a LoRA's tensor keys; ``LoraFileError`` if they mix layouts or hold no LoRA keys."""
    found = {_layout_of(split[0])[0] for k in keys if (split := _split_key(k)) is not None}
    if not found:
        raise LoraFileError("no LoRA keys (lora_A/lora_B, lora_down/lora_up) found")
    if len(found) > 1:
        raise LoraFileError(f"the LoRA mixes key layouts ({', '.join(sorted(found))}); convert each part separately")
    return found.pop()


def parse_lora(tensors: Mapping[str, torch.Tensor], module_names: Iterable[str] | None = None) -> ParsedLora:
    """Group a LoRA's tensors by module. ``module_names`` resolves kohya names exactly when the model is known."""
    layout = detect_layout(tensors)
    names = None if module_names is None else list(module_names)
    parts: dict[str, dict[str, torch.Tensor]] = {}
    unsupported: list[str] = []
    for key, value in tensors.items():
        split = _split_key(key)
        if split is None:
            unsupported.append(key)
            continue
        layout_k, module = _layout_of(split[0])
        if layout_k == "kohya":
            module = module_from_kohya(module, names)
        parts.setdefault(module, {})[split[1]] = value
    modules: dict[str, LoraModule] = {}
    for module, p in sorted(parts.items()):
        if "down" not in p or "up" not in p:
            have = ", ".join(sorted(p))
            raise LoraFileError(f"module {module} has only {have}; a LoRA module needs both down (A) and up (B)")
        down, up = p["down"], p["up"]
        if down.dim() < 2 or up.dim() < 2 or up.shape[1] != down.shape[0]:
            raise LoraFileError(
                f"module {module}: down {tuple(down.shape)} and up {tuple(up.shape)} do not form a LoRA "
                "(expected down [rank, in] and up [out, rank])"
            )
        alpha = float(p["alpha"].float().item()) if "alpha" in p else None
        modules[module] = LoraModule(down=down, up=up, alpha=alpha)
    return ParsedLora(layout=layout, modules=modules, unsupported=sorted(unsupported))


def _key_names(module: str, layout: str) -> tuple[str, str, str]:
    if layout == "kohya":
        stem = kohya_name(module)
        return f"{stem}.lora_down.weight", f"{stem}.lora_up.weight", f"{stem}.alpha"
    stem = WRITE_PREFIX[layout] + module
    return f"{stem}.lora_A.weight", f"{stem}.lora_B.weight", f"{stem}.alpha"


def to_layout(
    parsed: ParsedLora, layout: str, *, fold_alpha: bool = False, dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """Tensors of ``parsed`` in ``layout``, with the same patched weights as the original.

    ``comfy``/``kohya`` keep alpha as a 0-d float32 ``.alpha`` tensor (alpha = rank where the source had
    none, which is the same scale); with ``fold_alpha`` the scale is multiplied into ``up`` and alpha set to
    the rank. ``peft``/``diffusers`` always fold, since their loaders read no alpha tensor. ``dtype`` casts the
    weights (default: keep each tensor's dtype).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if parsed.unsupported:
        sample = ", ".join(parsed.unsupported[:3])
        raise LoraFileError(
            f"{len(parsed.unsupported)} keys are not plain LoRA weights and cannot be converted (e.g. {sample}); "
            "LoHa, LoKr, DoRA and full-weight diffs are not supported"
        )
    fold = fold_alpha or layout in _NO_ALPHA
    out: dict[str, torch.Tensor] = {}
    for module, m in parsed.modules.items():
        a_key, b_key, alpha_key = _key_names(module, layout)
        up = m.up
        if fold and m.scale != 1.0:
            up = (m.up.float() * m.scale).to(m.up.dtype)
        out[a_key] = m.down if dtype is None else m.down.to(dtype)
        out[b_key] = up if dtype is None else up.to(dtype)
        if layout not in _NO_ALPHA:
            alpha = float(m.rank) if fold or m.alpha is None else m.alpha
            out[alpha_key] = torch.tensor(alpha, dtype=torch.float32)
    return out


DTYPES: dict[str, torch.dtype | None] = {
    "keep": None,
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def converted_name(source: str | os.PathLike, to: str) -> str:
    """The default file name of ``source`` converted to layout ``to``: ``NAME_<to>.safetensors``."""
    return f"{Path(source).stem}_{to}.safetensors"


def convert_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    to: str,
    *,
    fold_alpha: bool = False,
    dtype: str = "keep",
    module_names: Iterable[str] | None = None,
) -> tuple[Path, ParsedLora]:
    """Convert the LoRA file ``src`` to layout ``to`` and write it to ``dst``; metadata is kept.

    ``ltxlora.format`` is set to the new layout. ``dst`` must differ from ``src``: user files are never
    modified. Returns the written path and the parsed source.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    src, dst = Path(src), Path(dst)
    if dst.resolve() == src.resolve():
        raise LoraFileError(f"Refusing to overwrite the source {src}; choose another output name")
    tensors, metadata = read_lora_file(src)
    try:
        parsed = parse_lora(tensors, module_names)
        out = to_layout(parsed, to, fold_alpha=fold_alpha, dtype=DTYPES[dtype])
    except LoraFileError as err:
        raise LoraFileError(f"{src}: {err}") from None
    record = conversion_record(src, to, fold_alpha=fold_alpha, dtype=dtype)
    return save_lora_file(dst, out, {**metadata, FORMAT: to, CONVERTED_FROM: record}), parsed


def conversion_record(src: Path, to: str, *, fold_alpha: bool, dtype: str) -> str:
    """What ``convert_file`` records in its output (``ltxlora.converted_from``): the source's content and the
    settings. A name or a modification time would take a copied or touched source for another one."""
    with src.open("rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    return json.dumps({"source_sha256": digest, "to": to, "fold_alpha": fold_alpha, "dtype": dtype}, sort_keys=True)


def holds_conversion(dst: Path, src: Path, to: str, *, fold_alpha: bool, dtype: str) -> bool:
    """Whether the file ``dst`` is what converting ``src`` to ``to`` with these settings writes, by its record (a file
    that is no safetensors file, or carries no record, is not)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(dst), framework="pt") as f:
            recorded = (f.metadata() or {}).get(CONVERTED_FROM)
    except (SafetensorError, OSError):
        return False
    return recorded == conversion_record(src, to, fold_alpha=fold_alpha, dtype=dtype)
