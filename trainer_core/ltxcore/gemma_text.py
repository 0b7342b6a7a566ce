"""LTX-2.3's real text encoder without ComfyUI: Gemma 3 12B (transformers) plus the checkpoint's text projection.

``load_text_encoder(PATH, CHECKPOINT)`` accepts ComfyUI's bf16 single file (flat ``model.*`` keys, the SentencePiece
model in its ``spiece_model`` tensor) or a Hugging Face folder (``config.json``, ``tokenizer.model``,
``model*.safetensors`` with ``language_model.model.*`` or ``model.language_model.*`` keys). The weights go by
assignment into transformers' ``Gemma3TextModel`` built on the meta device: no second copy, no key mapping beyond
dropping the prefix. What it returns is what ComfyUI's LTX-2.3 text encoder (``comfy/text_encoders/lt.py``) gives
*CLIP Text Encode*: all 49 hidden states (embeddings + 48 layers, the last after the final norm) of the prompt
with BOS and no chat template, per-token RMS over each layer, flattened, scaled by ``sqrt(out / hidden)`` and through
the checkpoint's ``text_embedding_projection.{video,audio}_aggregate_embed``, video and audio features concatenated.
Quantized ComfyUI files (fp8, NVFP4) need ComfyUI's loader (``comfy.sd.load_clip``) and go through it where
ComfyUI is importable; otherwise a ``CacheError`` names the bf16 file. transformers and sentencepiece are imported
here only.
"""

from __future__ import annotations

import gc
import importlib.util
import logging
import math
from pathlib import Path
from typing import Any

import torch

from ..cache.encoders import TEXT_FAMILY_LTX23, CacheError, TextEncoder, weights_identity

logger = logging.getLogger(__name__)

PROJECTION = "text_embedding_projection."
SPIECE = "spiece_model"
BF16_FILE = "gemma_3_12B_it.safetensors"  # ComfyUI's bf16 Gemma 3 12B (Comfy-Org/ltx-2 split_files/text_encoders)
# Gemma 3 12B's attention layout and RoPE, as ComfyUI's Gemma3_12B_Config hard-codes them for a single file (the
# file has no config): five sliding-window layers then one global; global RoPE theta 1e6 stretched 8x (linear).
GEMMA3_12B = {
    "sliding_window": 1024,
    "layer_pattern": ("sliding_attention",) * 5 + ("full_attention",),
    "rope_parameters": {
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
    },
}
_HF_PREFIXES = ("language_model.model.", "model.language_model.", "model.")  # checked in this order
_COMFY_PREFIX = "gemma3_12b.transformer."  # where ComfyUI's CLIP keeps the file's keys (identity names)


def _is_quantized(f: Any) -> bool:
    """Whether a ComfyUI Gemma file holds fp8 / NVFP4 layers (``.comfy_quant`` entries, scales or 8-bit weights)."""
    for key in f.keys():  # noqa: SIM118 - safe_open is not a dict
        if key.endswith((".comfy_quant", "weight_scale", "weight_scale_2", ".scale_weight")):
            return True
        if key.endswith(".weight") and f.get_slice(key).get_dtype() in ("F8_E4M3", "F8_E5M2", "U8"):
            return True
    return False


def require_transformers_5() -> None:
    """transformers 5 names RoPE per layer type (``rope_parameters``); ComfyUI's floor, 4.50, does not."""
    import transformers

    if int(transformers.__version__.split(".")[0]) < 5:
        raise CacheError(
            f"the headless text encoder (--text-encoder) needs transformers 5 or newer; this environment has "
            f"{transformers.__version__}: pip install -U 'transformers>=5' (or encode the captions in ComfyUI)"
        )


def config_from_shapes(shapes: dict[str, tuple[int, ...]], overrides: dict[str, Any] | None = None) -> Any:
    """A ``Gemma3TextConfig`` whose sizes come from the weights (``model.*`` names) and whose attention layout and
    RoPE are Gemma 3 12B's, as ComfyUI assumes for a single file; ``overrides`` replaces any of its fields."""
    from transformers import Gemma3TextConfig

    layers = 1 + max(int(k.split(".")[2]) for k in shapes if k.startswith("model.layers."))
    head_dim = shapes["model.layers.0.self_attn.q_norm.weight"][0]
    vocab, hidden = shapes["model.embed_tokens.weight"]
    pattern = GEMMA3_12B["layer_pattern"]
    fields = {
        "vocab_size": vocab, "hidden_size": hidden, "num_hidden_layers": layers, "head_dim": head_dim,
        "intermediate_size": shapes["model.layers.0.mlp.gate_proj.weight"][0],
        "num_attention_heads": shapes["model.layers.0.self_attn.q_proj.weight"][0] // head_dim,
        "num_key_value_heads": shapes["model.layers.0.self_attn.k_proj.weight"][0] // head_dim,
        "query_pre_attn_scalar": head_dim, "sliding_window": GEMMA3_12B["sliding_window"],
        "layer_types": [pattern[i % len(pattern)] for i in range(layers)],
        "rope_parameters": GEMMA3_12B["rope_parameters"], "rms_norm_eps": 1e-6,
    }  # fmt: skip
    return Gemma3TextConfig(**{**fields, **(overrides or {})})


def _read_projection(checkpoint: Path, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    with safe_open(str(checkpoint), framework="pt") as f:
        keys = [k for k in f.keys() if k.startswith(PROJECTION)]  # noqa: SIM118 - safe_open is not a dict
        state = {k.removeprefix(PROJECTION): f.get_tensor(k).to(device, dtype) for k in keys}
    if not {"video_aggregate_embed.weight", "audio_aggregate_embed.weight"} <= set(state):
        found = ", ".join(sorted(state)) or "none"
        raise CacheError(
            f"{checkpoint}: no LTX-2.3 text projection (text_embedding_projection.video_aggregate_embed / "
            f"audio_aggregate_embed; found: {found}); give --checkpoint the full LTX-2.3 single file"
        )
    return state


class GemmaTextEncoder:
    """transformers' Gemma 3 text model + the checkpoint's dual projection, as ``cache.encoders.TextEncoder``."""

    family = TEXT_FAMILY_LTX23

    def __init__(self, model: Any, tokenizer: Any, projection: dict[str, torch.Tensor], identity: str) -> None:
        self.model, self.tokenizer, self.projection, self._identity = model, tokenizer, projection, identity
        video, audio = projection["video_aggregate_embed.weight"], projection["audio_aggregate_embed.weight"]
        self.width = video.shape[0] + audio.shape[0]
        hidden, in_dim = model.config.hidden_size, video.shape[1]
        if in_dim != hidden * (model.config.num_hidden_layers + 1):
            raise CacheError(
                f"the checkpoint's text projection takes {in_dim} features, but this Gemma has "
                f"{model.config.num_hidden_layers + 1} hidden states of {hidden}: the text encoder file does not "
                "belong to this checkpoint (LTX-2.3 uses Gemma 3 12B)"
            )

    def identity(self) -> str:
        return self._identity

    def tokens(self, caption: str) -> list[int]:
        """BOS + the SentencePiece pieces of ``caption`` (no chat template, no EOS), as ComfyUI's tokenizer gives."""
        return [self.tokenizer.bos_id(), *self.tokenizer.encode(caption, add_bos=False, add_eos=False)]

    @torch.inference_mode()
    def encode(self, caption: str) -> torch.Tensor:
        """``[1, T, width]`` float32 on the CPU, T = tokens of the caption including BOS."""
        weight = self.projection["video_aggregate_embed.weight"]
        ids = torch.tensor([self.tokens(caption)], device=weight.device)
        # ComfyUI left-pads to 1,024 tokens with the pads masked out, then drops the pads' rows: with relative RoPE
        # and masked pads, running the real tokens alone gives the same rows.
        out = self.model(input_ids=ids, output_hidden_states=True)
        x = torch.stack(out.hidden_states, dim=-1).to(weight.dtype)  # [1, T, hidden, layers + 1]
        x = (x * torch.rsqrt(torch.mean(x**2, dim=2, keepdim=True) + 1e-6)).flatten(start_dim=2)
        parts = []
        for name in ("video_aggregate_embed", "audio_aggregate_embed"):
            w, b = self.projection[f"{name}.weight"], self.projection.get(f"{name}.bias")
            parts.append(torch.nn.functional.linear(x * math.sqrt(w.shape[0] / out.hidden_states[0].shape[-1]), w, b))
        return torch.cat(parts, dim=-1).to("cpu", torch.float32)

    def close(self) -> None:
        """Free Gemma (tens of GB at full size) before the next model loads."""
        self.model = self.projection = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _hf_folder(folder: Path) -> tuple[dict[str, Path], Path, Any]:
    """(``model.*`` name -> shard, tokenizer.model, text config) of a Hugging Face Gemma 3 folder."""
    from safetensors import safe_open
    from transformers import AutoConfig

    tokenizer = folder / "tokenizer.model"
    shards = sorted(folder.glob("*.safetensors"))
    if not tokenizer.is_file() or not shards or not (folder / "config.json").is_file():
        raise CacheError(
            f"{folder}: a Hugging Face Gemma 3 folder needs config.json, tokenizer.model and *.safetensors; give "
            f"--text-encoder that folder (e.g. gemma-3-12b-it) or ComfyUI's {BF16_FILE}"
        )
    names: dict[str, Path] = {}
    for shard in shards:
        with safe_open(str(shard), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is not a dict
                prefix = next((p for p in _HF_PREFIXES if key.startswith(p)), None)
                if prefix is not None and not key.startswith(("model.vision_tower", "model.multi_modal")):
                    names[key] = shard
    config = AutoConfig.from_pretrained(str(folder))
    return names, tokenizer, getattr(config, "text_config", config)


def _model_name(key: str) -> str:
    """A file's key as ``model.*`` (ComfyUI's single-file names)."""
    for prefix in _HF_PREFIXES:
        if key.startswith(prefix):
            return "model." + key[len(prefix):]
    return key


def load_gemma(
    path: str | Path,
    checkpoint: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    text_config: dict[str, Any] | None = None,
) -> GemmaTextEncoder:
    """Gemma 3 from ComfyUI's bf16 single file or a Hugging Face folder, with ``checkpoint``'s projection.

    ``text_config`` overrides fields of the config a single file implies (sizes from the weights, attention
    layout and RoPE of Gemma 3 12B); a folder brings its own ``config.json`` and ignores it.
    """
    require_transformers_5()
    import sentencepiece
    from safetensors import safe_open
    from transformers import Gemma3TextModel

    path, device = Path(path), torch.device(device)
    if path.is_dir():
        names, spm_file, config = _hf_folder(path)
        spm = spm_file.read_bytes()
    else:
        with safe_open(str(path), framework="pt") as f:
            names = {k: path for k in f.keys() if k.startswith("model.")}  # noqa: SIM118 - not a dict
            if "model.embed_tokens.weight" not in names or SPIECE not in f.keys():  # noqa: SIM118
                raise CacheError(
                    f"{path}: not ComfyUI's Gemma 3 text encoder file (needs model.* weights and the SentencePiece "
                    f"model in '{SPIECE}'); use {BF16_FILE} or a Hugging Face gemma-3-12b-it folder"
                )
            spm = f.get_tensor(SPIECE).numpy().tobytes()
            config = config_from_shapes({k: tuple(f.get_slice(k).get_shape()) for k in names}, text_config)
    with torch.device("meta"):
        model = Gemma3TextModel(config)
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(names.values())):
        with safe_open(str(shard), framework="pt") as f:
            for key in (k for k, s in names.items() if s == shard):
                state[_model_name(key).removeprefix("model.")] = f.get_tensor(key).to(device, dtype)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise CacheError(f"{path}: Gemma 3 weights do not fit (missing {missing[:4]}, unexpected {unexpected[:4]})")
    # Non-persistent buffers (RoPE frequencies, the embedding scale) are not in any file: build them for real.
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RotaryEmbedding

    model.rotary_emb = Gemma3RotaryEmbedding(config, device=device)
    model.embed_tokens.embed_scale = torch.tensor(config.hidden_size**0.5, device=device)
    model.eval().requires_grad_(False)
    projection = _read_projection(Path(checkpoint), device, dtype)
    # Named as ComfyUI's CLIP names them, so a cache made here and one made in ComfyUI agree on the encoder.
    named = [(_COMFY_PREFIX + "model." + k, v) for k, v in state.items()]
    named.append(("gemma3_12b.logit_scale", torch.empty((), device="meta")))  # SDClipModel's, in no file
    named += [(PROJECTION + k, v) for k, v in projection.items()]
    picked = [(k, v if ("embed_tokens" in k or k.endswith("norm.weight") or PROJECTION in k) else v.to("meta"))
              for k, v in named]
    tokenizer = sentencepiece.SentencePieceProcessor(model_proto=spm)
    return GemmaTextEncoder(model, tokenizer, projection, weights_identity(picked, samples=1024))


def load_text_encoder(
    path: str | Path, checkpoint: str | Path, *, device: str = "cpu", dtype: torch.dtype = torch.bfloat16
) -> TextEncoder:
    """The text encoder for ``cache --text-encoder PATH``: ``load_gemma``, or ComfyUI's loader for a quantized file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise CacheError(f"--text-encoder {path}: no such file or folder")
    if path.is_file():
        with safe_open(str(path), framework="pt") as f:
            quantized = _is_quantized(f)
        if quantized:
            return _comfy_text_encoder(path, Path(checkpoint))
    return load_gemma(path, checkpoint, device=device, dtype=dtype)


def _comfy_text_encoder(path: Path, checkpoint: Path) -> TextEncoder:
    """A quantized ComfyUI Gemma file through ComfyUI's own loader (the same as its LTXV text encoder loader)."""
    if importlib.util.find_spec("comfy") is None:
        raise CacheError(
            f"{path} is a quantized (fp8 / NVFP4) Gemma file, which only ComfyUI's loader reads, and ComfyUI is not "
            f"importable here: use the bf16 {BF16_FILE} (or a Hugging Face gemma-3-12b-it folder) with "
            "--text-encoder, or run with ComfyUI's folder on PYTHONPATH"
        )
    import comfy.sd

    from ..comfy.cache_encoders import ComfyLtxTextEncoder

    logger.info("%s is quantized: loading it with ComfyUI's loader", path)
    clip = comfy.sd.load_clip(ckpt_paths=[str(path), str(checkpoint)], clip_type=comfy.sd.CLIPType.LTXV)
    return ComfyLtxTextEncoder(clip)

