"""Build Lightricks' ltx-core modules (transformer, text connectors, video VAE) from a single-file LTX-2.x checkpoint.

ltx-core is an optional dependency: it is imported only inside these functions, and a missing install raises
:class:`LtxCoreMissing` with the command to fix it. Works for any checkpoint size, from the tiny test models of
``trainer_core.ltxcore.tiny`` to the real 22B file: the architecture comes from the ``config`` JSON in the safetensors
header, exactly as ComfyUI and ltx-core read it.

Checkpoint layout (what ComfyUI's ``load_checkpoint_guess_config`` consumes too):

- ``model.diffusion_model.<transformer>``
- ``model.diffusion_model.{video,audio}_embeddings_connector.*`` (the text connectors)
- ``vae.encoder.*``, ``vae.decoder.*``, ``vae.per_channel_statistics.*``
- other components (``text_embedding_projection.*``, ``audio_vae.*``, ``vocoder.*``) are not used here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import UserError

logger = logging.getLogger(__name__)

TRANSFORMER_PREFIX = "model.diffusion_model."
VIDEO_CONNECTOR_PREFIX = "model.diffusion_model.video_embeddings_connector."
AUDIO_CONNECTOR_PREFIX = "model.diffusion_model.audio_embeddings_connector."
VAE_ENCODER_PREFIX = "vae.encoder."
VAE_DECODER_PREFIX = "vae.decoder."
VAE_STATS_PREFIX = "vae.per_channel_statistics."
# The one key whose presence marks an audio+video transformer (ComfyUI's model detection uses the same one).
AUDIO_MARKER_KEY = "model.diffusion_model.audio_adaln_single.linear.weight"
# Extra latent statistics real checkpoints carry; neither ltx-core nor ComfyUI uses them.
_UNUSED_VAE_STATS = ("channel", "mean-of-stds", "mean-of-stds_over_std-of-means")

LTX_CORE_INSTALL_HINT = (
    "This needs Lightricks' ltx-core package, which is not installed. Install it with `pip install ltx-core` "
    "(or `pip install comfyui-ltx-lora-trainer[ltx]`). Note: pip may pull a CUDA-only torchaudio wheel that fails "
    "to import on CPU-only machines; the transformer and video VAE do not need torchaudio, so if `import torchaudio` "
    "breaks, install ltx-core with `pip install --no-deps ltx-core` plus its other requirements."
)


class LtxCoreMissing(UserError, ImportError):
    """ltx-core (the optional reference implementation) is not installed."""


class CheckpointKeyError(UserError, ValueError):
    """A checkpoint's keys do not match the architecture its config describes."""


def require_ltx_core() -> None:
    """Raise :class:`LtxCoreMissing` with install instructions when ltx-core cannot be imported."""
    try:
        import ltx_core.model.transformer  # noqa: F401
    except ImportError as exc:
        raise LtxCoreMissing(f"{LTX_CORE_INSTALL_HINT} (import error: {exc})") from exc


@dataclass
class LtxCoreModel:
    """The ltx-core modules of one LTX-2.x checkpoint."""

    transformer: nn.Module
    video_connector: nn.Module
    audio_connector: nn.Module | None
    vae_encoder: nn.Module | None
    vae_decoder: nn.Module | None
    config: dict[str, Any]

    @property
    def has_audio(self) -> bool:
        return self.audio_connector is not None

    @property
    def family(self) -> str:
        """``ltx-2.3`` (caption projection before the connectors, gated attention) or ``ltx-2``."""
        return config_family(self.config)


def config_family(config: dict[str, Any]) -> str:
    """The model family a checkpoint config describes: ``ltx-2.3`` or ``ltx-2``."""
    transformer = config.get("transformer", {})
    return "ltx-2.3" if transformer.get("caption_proj_before_connector", False) else "ltx-2"


def read_checkpoint_config(path: str | Path) -> dict[str, Any]:
    """The ``config`` JSON of a single-file LTX-2.x checkpoint's safetensors header."""
    from safetensors import safe_open

    path = Path(path)
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    if "config" not in metadata:
        raise ValueError(
            f"{path}: no 'config' entry in the safetensors header. Use a single-file LTX-2.x checkpoint as "
            "published by Lightricks (e.g. ltx-2.3-22b-dev.safetensors), not a diffusers folder or a bare "
            "transformer export."
        )
    try:
        config = json.loads(metadata["config"])
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: the 'config' header entry is not valid JSON ({exc})") from exc
    if "transformer" not in config:
        raise ValueError(f"{path}: the header config has no 'transformer' section; is this an LTX-2.x checkpoint?")
    return config


def build_modules(config: dict[str, Any], *, audio: bool, vae: bool) -> dict[str, nn.Module]:
    """Construct (uninitialised) ltx-core modules for ``config`` on the current default device.

    Returns a dict with ``transformer``, ``video_connector`` and, when requested, ``audio_connector``,
    ``vae_encoder``, ``vae_decoder``. Wrap the call in ``torch.device("meta")`` to allocate nothing.
    """
    require_ltx_core()
    from ltx_core.model.transformer.model_configurator import (
        LTXModelConfigurator,
        LTXVideoOnlyModelConfigurator,
    )
    from ltx_core.text_encoders.gemma.embeddings_connector import (
        AudioEmbeddings1DConnectorConfigurator,
        Embeddings1DConnectorConfigurator,
    )

    configurator = LTXModelConfigurator if audio else LTXVideoOnlyModelConfigurator
    try:
        modules: dict[str, nn.Module] = {
            "transformer": configurator.from_config(config),
            "video_connector": Embeddings1DConnectorConfigurator.from_config(config),
        }
    except ValueError as exc:
        raise ValueError(f"checkpoint config rejected by ltx-core: {exc}") from exc
    if audio:
        modules["audio_connector"] = AudioEmbeddings1DConnectorConfigurator.from_config(config)
    if vae:
        from ltx_core.model.video_vae.model_configurator import VideoDecoderConfigurator, VideoEncoderConfigurator

        if "vae" not in config:
            raise ValueError("checkpoint config has no 'vae' section; load it with vae=False")
        modules["vae_encoder"] = VideoEncoderConfigurator.from_config(config)
        modules["vae_decoder"] = VideoDecoderConfigurator.from_config(config)
    return modules


def checkpoint_prefixes(name: str) -> tuple[str, ...]:
    """Checkpoint key prefixes of one component, most specific first."""
    return {
        "transformer": (TRANSFORMER_PREFIX,),
        "video_connector": (VIDEO_CONNECTOR_PREFIX,),
        "audio_connector": (AUDIO_CONNECTOR_PREFIX,),
        "vae_encoder": (VAE_ENCODER_PREFIX,),
        "vae_decoder": (VAE_DECODER_PREFIX,),
    }[name]


def to_checkpoint_keys(name: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map one module's state dict to checkpoint keys (the VAE halves share ``vae.per_channel_statistics``)."""
    out = {}
    for key, value in state.items():
        if name in ("vae_encoder", "vae_decoder") and key.startswith("per_channel_statistics."):
            out[VAE_STATS_PREFIX + key.removeprefix("per_channel_statistics.")] = value
        else:
            out[checkpoint_prefixes(name)[0] + key] = value
    return out


def _component_of(key: str, names: Iterable[str]) -> list[tuple[str, str]]:
    """Which (component, module key) pairs a checkpoint key feeds."""
    names = set(names)
    if key.startswith(VIDEO_CONNECTOR_PREFIX):
        return [("video_connector", key.removeprefix(VIDEO_CONNECTOR_PREFIX))]
    if key.startswith(AUDIO_CONNECTOR_PREFIX):
        return [("audio_connector", key.removeprefix(AUDIO_CONNECTOR_PREFIX))]
    if key.startswith(TRANSFORMER_PREFIX):
        return [("transformer", key.removeprefix(TRANSFORMER_PREFIX))]
    if key.startswith(VAE_ENCODER_PREFIX):
        return [("vae_encoder", key.removeprefix(VAE_ENCODER_PREFIX))]
    if key.startswith(VAE_DECODER_PREFIX):
        return [("vae_decoder", key.removeprefix(VAE_DECODER_PREFIX))]
    if key.startswith(VAE_STATS_PREFIX):
        stat = "per_channel_statistics." + key.removeprefix(VAE_STATS_PREFIX)
        return [(n, stat) for n in ("vae_encoder", "vae_decoder") if n in names]
    return []


def split_checkpoint_keys(
    keys: Iterable[str], modules: dict[str, nn.Module], path: str | Path, *, strict: bool = True
) -> dict[str, dict[str, str]]:
    """Assign checkpoint keys to modules: ``{component: {module_key: checkpoint_key}}``.

    Raises :class:`CheckpointKeyError` listing every missing and unexpected key of the components being built
    (with ``strict=False`` unexpected keys are only logged; missing keys always raise). Keys of components that
    are not built (audio VAE, vocoder, Gemma projection, a skipped VAE) are ignored.
    """
    keys = list(keys)
    wanted_prefixes = tuple(p for n in modules for p in checkpoint_prefixes(n))
    if "vae_encoder" in modules:
        wanted_prefixes += (VAE_STATS_PREFIX,)
    plan: dict[str, dict[str, str]] = {name: {} for name in modules}
    unexpected = []
    for key in keys:
        targets = [(n, k) for n, k in _component_of(key, modules) if n in modules]
        if not targets:
            if key.startswith(wanted_prefixes) and not _is_unused_stat(key):
                unexpected.append(key)
            continue
        for name, module_key in targets:
            plan[name][module_key] = key
    missing = []
    for name, module in modules.items():
        expected = set(module.state_dict().keys())
        absent = dict.fromkeys(sorted(expected - plan[name].keys()))
        missing.extend(to_checkpoint_keys(name, absent))
        for module_key in sorted(plan[name].keys() - expected):
            if not _is_unused_stat(plan[name][module_key]):
                unexpected.append(plan[name][module_key])
            del plan[name][module_key]
    report = _key_report(path, sorted(set(missing)), sorted(set(unexpected)))
    if missing or (unexpected and strict):
        raise CheckpointKeyError(report)
    if unexpected:
        logger.warning("ignoring unexpected keys (strict=False): %s", report)
    return plan


# What marks ComfyUI's quantized layouts: per-tensor scales beside float8 weights (Lightricks' fp8 file and ComfyUI's
# comfy_quant: weight_scale/input_scale; the older scaled_fp8: scale_weight and a marker tensor).
_QUANTIZED_SUFFIXES = (".weight_scale", ".input_scale", ".scale_weight", ".scale_input")
_QUANTIZED_MARKER = TRANSFORMER_PREFIX + "scaled_fp8"


def quantized_refusal(path: str | Path, keys: Iterable[str]) -> str | None:
    """Why ltx-core cannot load the checkpoint at ``path`` with tensor names ``keys``, when it is in ComfyUI's
    scaled-fp8 layout (None: it is not). Its scales would otherwise be reported as unexpected keys, as if the file
    were damaged."""
    if not any(k == _QUANTIZED_MARKER or (k.startswith(TRANSFORMER_PREFIX) and k.endswith(_QUANTIZED_SUFFIXES))
               for k in keys):
        return None
    return (
        f"{path} is in ComfyUI's scaled-fp8 layout (float8 weights with per-tensor scales); headless train and "
        "sweep read bf16 or fp32 single-file checkpoints only. Give the bf16 file (e.g. ltx-2.3-22b-dev.safetensors), "
        "or use this one in ComfyUI (the Train LTX LoRA node trains on it)"
    )


def _is_unused_stat(key: str) -> bool:
    return key.startswith(VAE_STATS_PREFIX) and key.removeprefix(VAE_STATS_PREFIX) in _UNUSED_VAE_STATS


def _key_report(path: str | Path, missing: list[str], unexpected: list[str], limit: int = 20) -> str:
    def listing(keys: list[str]) -> str:
        shown = "\n  ".join(keys[:limit])
        more = f"\n  ... and {len(keys) - limit} more" if len(keys) > limit else ""
        return f"\n  {shown}{more}" if keys else " none"

    return (
        f"{path}: the checkpoint does not match the architecture its header config describes "
        f"({len(missing)} missing, {len(unexpected)} unexpected keys). Is the file complete and an unmodified "
        f"LTX-2.x single-file checkpoint?\nmissing:{listing(missing)}\nunexpected:{listing(unexpected)}"
    )


def load_ltx_core_model(
    path: str | Path,
    *,
    dtype: torch.dtype = torch.bfloat16,
    device: torch.device | str = "cpu",
    vae: bool = True,
    vae_dtype: torch.dtype | None = None,
    meta_init: bool = True,
    strict: bool = True,
    split: Callable[[nn.Module], None] | None = None,
) -> LtxCoreModel:
    """Load the transformer, text connectors and (optionally) video VAE of a single-file LTX-2.x checkpoint.

    ``dtype``/``device``: where the weights live (floating tensors are cast; the VAE uses ``vae_dtype``, default
    ``dtype``). ``meta_init``: build the modules on the meta device and adopt the loaded tensors directly
    (``load_state_dict(assign=True)``), so the weights exist once in memory; with False the modules are built
    for real first and the weights copied in. Key mismatches raise :class:`CheckpointKeyError` (``strict=False``
    tolerates unexpected keys under the loaded prefixes, e.g. from a newer checkpoint revision).

    ``split``: FSDP2's ``fully_shard`` over the frozen transformer, still on the meta device (see
    ``ShardedDataParallel.shard``). This process then reads only its own rows of each transformer weight from the
    file, straight into its shard on ``device``: no process ever holds a whole weight, on the host or the device.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    config = read_checkpoint_config(path)
    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
        refusal = quantized_refusal(path, keys)
        if refusal is not None:
            raise CheckpointKeyError(refusal)
        has_audio = AUDIO_MARKER_KEY in keys
        if meta_init or split is not None:
            with torch.device("meta"):
                modules = build_modules(config, audio=has_audio, vae=vae)
        else:
            modules = build_modules(config, audio=has_audio, vae=vae)
        plan = split_checkpoint_keys(keys, modules, path, strict=strict)
        for name, module in modules.items():
            target_dtype = (vae_dtype or dtype) if name.startswith("vae_") else dtype
            if name == "transformer" and split is not None:
                module.to(dtype=target_dtype).requires_grad_(False)
                split(module)
                _load_own_rows(module, f, plan[name], device)
                module.eval()
                continue
            state = {k: _cast(f.get_tensor(ck), target_dtype, device) for k, ck in plan[name].items()}
            if meta_init:
                module.load_state_dict(state, strict=True, assign=True)
            else:
                _materialize_meta(module, device)
                module.to(device=device, dtype=target_dtype)
                module.load_state_dict(state, strict=True)
            module.eval().requires_grad_(False)
    logger.info(
        "loaded %s (%s, %s) with ltx-core: %.1fM transformer parameters",
        path.name,
        config_family(config),
        "audio+video" if has_audio else "video only",
        sum(p.numel() for p in modules["transformer"].parameters()) / 1e6,
    )
    return LtxCoreModel(
        transformer=modules["transformer"],
        video_connector=modules["video_connector"],
        audio_connector=modules.get("audio_connector"),
        vae_encoder=modules.get("vae_encoder"),
        vae_decoder=modules.get("vae_decoder"),
        config=config,
    )


def _load_own_rows(module: nn.Module, f: Any, keys: dict[str, str], device: torch.device | str) -> None:
    """Fill ``module``, whose parameters FSDP2 split into dim-0 shards on the meta device, with this process's rows
    of each weight (``keys``: parameter name -> checkpoint key), read as a slice of the file."""
    from torch.distributed.tensor import DTensor, Shard

    module.to_empty(device=device)
    params = dict(module.named_parameters())
    if params.keys() != keys.keys() or any(True for _ in module.buffers()):
        raise RuntimeError(f"{type(module).__name__}: its parameters and buffers do not match the checkpoint's keys")
    with torch.no_grad():
        for name, param in params.items():
            if not isinstance(param, DTensor) or tuple(param.placements) != (Shard(0),):
                raise RuntimeError(f"{name} was not split into dim-0 shards over the processes")
            local, mesh = param.to_local(), param.device_mesh
            # FSDP2 cuts dim 0 as torch.chunk does: ceil(rows / processes) each, the last ones shorter or empty.
            per = -(-param.shape[0] // mesh.size())
            start = min(mesh.get_local_rank() * per, param.shape[0])
            if local.shape[0] != min(per, param.shape[0] - start):
                raise RuntimeError(f"{name}: this process's shard has {local.shape[0]} rows, expected rows {start}+")
            local.copy_(f.get_slice(keys[name])[start : start + local.shape[0]])


def _materialize_meta(module: nn.Module, device: torch.device | str) -> None:
    """Give real (uninitialised) storage to submodules ltx-core always builds on meta (19B caption projections)."""
    for sub in module.modules():
        direct = list(sub.parameters(recurse=False)) + list(sub.buffers(recurse=False))
        if any(t.is_meta for t in direct):
            sub.to_empty(device=device, recurse=False)


def _cast(tensor: torch.Tensor, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    if tensor.is_floating_point():
        return tensor.to(device=device, dtype=dtype)
    return tensor.to(device=device)
