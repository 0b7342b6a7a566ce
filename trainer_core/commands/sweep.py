"""``python -m trainer_core sweep RUN_FOLDER | LORA...``: the strength grid headless, decoded by the checkpoint's VAE.

Rows are the base model (strength 0) and every LoRA at every other strength, columns every prompt and seed, as
the Sweep node plans them (``trainer_core.sweep``). A run folder (``train``'s ``output_dir``, with its
``config.yaml``) gives its checkpoints, model, cache and preview size; LoRA files or checkpoint folders need
``--checkpoint`` (and ``--data`` or ``--text-encoder`` for prompt text). Cells are sampled with the pack's Euler
sampler (``trainer_core.ltxcore.previews``) and written as one grid video (``.mp4``) with a still grid (``.png``)
beside it; the effect/bleed numbers are printed.

Audio LoRAs are swept with sound, following the files' own ``ltxlora.audio``: ``generate`` samples audio with the
video, ``condition`` conditions each prompt column on a training clip's audio (``--data`` or the run's cache). The
checkpoint's audio VAE and vocoder decode it; the grid video then plays the cells in turn, each with its sound, and
every cell is also written as ``<out>_cell_NN.mp4`` with its sound, as the Sweep Grid node does.

IC-LoRAs (files with ``reference_downscale_factor`` in their metadata) are swept guided by ``--reference CLIP``, as the
Sweep node's graph guides them: the clip's first frames at the sweep's frame rate are decoded at the sweep's size
(scaled to cover it, centre crop), and each row gets them ``encode_reference``d by the checkpoint's VAE at its own
factors (an IC-LoRA's from its metadata; the base row's at 1, as Get IC-LoRA Parameters gives a model without one).
Every sampling step of every cell then sees the reference clean at timestep 0, as the headless previews do.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from ..config.cli_options import add_section_arguments, section_from_args
from ..config.sweep import SweepSettings
from ..config.training import PreviewSettings

HELP = "Render a LoRA strength sweep grid (mp4 + png) headless, with the checkpoint's VAE (and sound for audio LoRAs)."
SIZE_FIELDS = ("width", "height", "frames", "steps", "cfg")  # PreviewSettings fields a sweep takes as flags


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("targets", nargs="+", metavar="RUN_FOLDER | LORA",
                        help="a run folder (train's output_dir), or LoRA files and/or checkpoint folders")
    parser.add_argument("--checkpoint", help="LTX-2.3 single-file checkpoint (default: the run's model.checkpoint)")
    parser.add_argument("--data", help="the training cache, whose text encoder the prompts follow and whose first "
                        "captions are the prompts without --prompts (default: the run's data)")
    parser.add_argument("--text-encoder", metavar="PATH", help="Gemma 3 file or folder for --prompts (as for "
                        "`cache --text-encoder`); not needed when the cache used the stand-in")
    parser.add_argument("--out", help="grid video path (.mp4; the .png goes beside it); default <run>/sweep.mp4")
    parser.add_argument("--device", help="torch device (default: the run's model.device, else cpu)")
    parser.add_argument("--reference", metavar="CLIP", help="IC-LoRAs: the reference (control) video that guides "
                        "every cell (depth, pose, edges ...; at least --frames long); required for IC-LoRAs, refused "
                        "for other LoRAs")
    add_section_arguments(parser, SweepSettings, exclude=("loras",))
    exclude = tuple(name for name in PreviewSettings.model_fields if name not in SIZE_FIELDS)
    add_section_arguments(parser, PreviewSettings, exclude=exclude)


def _run_config(targets: list[str]) -> tuple[Any, Path | None]:
    """The run's ``TrainConfig`` when the one target is a run folder, else None."""
    from ..config import load_yaml
    from ..config.training import TrainConfig

    if len(targets) == 1 and (Path(targets[0]) / "config.yaml").is_file():
        run = Path(targets[0])
        return load_yaml(TrainConfig, run / "config.yaml"), run
    return None, None


def _prompts(args: argparse.Namespace, settings: SweepSettings, data: Any, checkpoint: str, device: str,
             count: int) -> list[Any]:
    import torch

    from ..ltxcore.previews import encode_prompts, training_captions
    from ..sweep.plan import SweepError, SweepPrompt, prompt_lines

    lines = prompt_lines(settings.prompts, settings.trigger)
    if lines:
        dtype = torch.float32 if device == "cpu" else torch.bfloat16
        encoded = encode_prompts([t for t, _ in lines], data.model if data is not None else {},
                                 text_encoder=args.text_encoder, checkpoint=checkpoint, device=device, dtype=dtype,
                                 what="--prompts")
        return [SweepPrompt(e.label, kind, e) for e, (_, kind) in zip(encoded, lines, strict=True)]
    if data is None:
        raise SweepError("no prompts: give --prompts (with --data or --text-encoder), or --data / a run folder to "
                         "sweep the first training captions")
    return [SweepPrompt(c.label, "trigger", c) for c in training_captions(data, count)]


def _size(args: argparse.Namespace, cfg: Any) -> PreviewSettings:
    """Width, height, frames, steps and cfg: the flags given, else the run's preview settings, else the defaults."""
    from ..config import parse_section

    given = {k: getattr(args, k) for k in SIZE_FIELDS if getattr(args, k) is not None}
    run = {k: getattr(cfg.preview, k) for k in SIZE_FIELDS} if cfg is not None else {}
    return parse_section(PreviewSettings, {**run, **given}, where="option ")


def _audio_mode(metadata: dict[Path, dict[str, str]]) -> str | None:
    """The audio mode the LoRA files were trained with (their ``ltxlora.audio``): generate, condition or None."""
    from ..lorafile import metadata as md
    from ..sweep.plan import SweepError

    modes = {f.name: meta.get(md.AUDIO, "") for f, meta in metadata.items()}
    found = {m for m in modes.values() if m in ("generate", "condition")}
    if len(found) > 1:
        listed = ", ".join(f"{name}: {mode or 'none'}" for name, mode in modes.items())
        raise SweepError(f"the LoRA files were trained with different recipe.audio modes ({listed}); a sweep "
                         "samples every row alike, so sweep the audio-generating and audio-conditioned LoRAs apart")
    return found.pop() if found else None


def _ic_factors(metadata: dict[Path, dict[str, str]], reference: str | None) -> dict[Path, tuple[int, int]]:
    """Each IC-LoRA file's (spatial N, temporal S) reference factors. ``SweepError`` when IC-LoRAs and other LoRAs
    are mixed, IC-LoRAs come without ``--reference``, or ``--reference`` comes with LoRAs that are not IC-LoRAs."""
    from ..lorafile.read import reference_factors
    from ..sweep.plan import SweepError

    factors = {f: fs for f, meta in metadata.items() if (fs := reference_factors(meta, f.name)) is not None}
    plain = ", ".join(f.name for f in metadata if f not in factors)
    ic = ", ".join(f.name for f in factors)
    if factors and plain:
        raise SweepError(f"{ic} are IC-LoRAs and {plain} are not: IC-LoRA cells are guided by --reference and the "
                         "others cannot be; sweep them apart")
    if factors and reference is None:
        raise SweepError(f"{ic}: IC-LoRAs (reference_downscale_factor in the file's metadata) follow a reference "
                         "clip; give --reference CLIP, a video of the control they were trained on (depth, pose, "
                         "edges ...), to guide every cell")
    if reference is not None and not factors:
        raise SweepError(f"--reference {reference} was given, but {plain} are not IC-LoRAs (no "
                         "reference_downscale_factor in their metadata), so nothing would follow it; leave out "
                         "--reference")
    return factors


def _reference_frames(path: str, size: PreviewSettings, fps: float) -> Any:
    """``--reference``'s first ``size.frames`` frames at ``fps``, scaled to cover ``size`` and centre-cropped (as the
    dataset cuts a clip): float32 ``[F, H, W, 3]``. ``SweepError`` naming the file when it is missing, not a video,
    too short or cannot be decoded."""
    import random

    from ..dataset.buckets import Bucket
    from ..dataset.media import MediaError, probe
    from ..dataset.prepare import load_planned_frames, plan_item
    from ..sweep.plan import SweepError

    try:
        info = probe(Path(path))
        if info.kind != "video":
            raise SweepError(f"--reference {path} is an image; give a video clip of at least {size.frames} frames")
        if info.frames_at(fps) < size.frames:
            raise SweepError(f"--reference {path} has {info.frames_at(fps)} frames at {fps:g} fps; the sweep's cells "
                             f"have {size.frames}: give a longer clip or lower --frames")
        plan = plan_item(info, (Bucket(size.width, size.height, size.frames),), target_fps=fps, crop="center",
                         trim_start="start", rng=random.Random(0))
        return load_planned_frames(Path(path), info, plan)
    except MediaError as err:
        raise SweepError(f"--reference {path} cannot be used: {err}") from None


def _guides(frames: Any, factors: dict[Path, tuple[int, int]], vae: Any, size: PreviewSettings
            ) -> dict[Path | None, tuple[Any, tuple[int, int]]]:
    """Each row's reference latent and factors, by LoRA file (None: the base row, at factors 1)."""
    from ..dataset.prepare import keep_reference_frames
    from ..ltxcore.previews import encode_reference

    latents: dict[tuple[int, int], Any] = {}
    for pair in {(1, 1), *factors.values()}:
        latents[pair] = encode_reference(keep_reference_frames(frames, pair[1]), vae, size, *pair)
    return {None: (latents[1, 1], (1, 1)), **{f: (latents[pair], pair) for f, pair in factors.items()}}


def _sound(mode: str | None, backbone: Any, checkpoint: str, device: str, prompts: list[Any], data: Any) -> Any:
    """The sweep's ``PreviewSound`` for the LoRAs' audio ``mode`` (None: video only); condition gives each prompt a
    training clip's audio to be conditioned on."""
    import torch

    from ..ltxcore.previews import attach_conditioning_audio, preview_sound

    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    sound = preview_sound(mode or "off", backbone.has_audio, checkpoint, device, dtype, "the sweep's cells")
    if sound is not None and sound.mode == "condition":
        attach_conditioning_audio([p.conditioning for p in prompts], data)
    return sound


def _render(plan: Any, backbone: Any, decoder: Any, size: PreviewSettings, fps: float, sound: Any,
            guides: dict[Path | None, tuple[Any, tuple[int, int]]]) -> list[Any]:
    """Every cell's (video, sound), row by row, each row with its LoRA hooked in at its strength and, for an IC-LoRA
    sweep, guided by the row's reference latent."""
    from dataclasses import replace

    from ..ltxcore.previews import lora_applied, render_clip

    clips = []
    for row, variant in enumerate(plan.variants):
        applied = nullcontext() if variant.lora is None else lora_applied(backbone, variant.lora, variant.strength)
        latent, factors = guides.get(variant.lora, (None, (1, 1)))
        with applied:
            for cell in (c for c in plan.cells if c.row == row):
                prompt = plan.prompts[cell.prompt].conditioning
                if latent is not None:
                    prompt = replace(prompt, reference=latent)
                clips.append(render_clip(backbone, decoder, prompt, size, cell.seed, fps, sound, factors))
    return clips


def run(args: argparse.Namespace) -> int:
    import torch

    from ..cache.reader import CachedData
    from ..lorafile.read import read_lora_file
    from ..ltxcore.backbone import LtxCoreBackbone
    from ..ltxcore.encoders import LtxCoreVae
    from ..ltxcore.previews import MIN_SIDE, check_reference_size, save_grid
    from ..sweep.grid import cell_videos
    from ..sweep.plan import SweepError, parse_numbers, parse_seeds, plan_sweep, resolve_lora_files
    from ..sweep.report import sweep_report

    cfg, run_folder = _run_config(args.targets)
    checkpoint = args.checkpoint or (cfg.model.checkpoint if cfg else None)
    if not checkpoint:
        raise SweepError("--checkpoint is required with LoRA files: the LTX-2.3 checkpoint they were trained on")
    settings = section_from_args(SweepSettings, args, loras=",".join(args.targets))
    size = _size(args, cfg)
    if min(size.width, size.height) < MIN_SIDE:
        raise SweepError(f"--width/--height must be at least {MIN_SIDE} (the VAE decoder's smallest input)")
    out = Path(args.out) if args.out else (run_folder / "sweep.mp4" if run_folder else None)
    if out is None:
        raise SweepError("--out is required with LoRA files: where to write the grid video (.mp4)")
    device = args.device or (cfg.model.device if cfg else "cpu")
    data_folder = args.data or (cfg.data if cfg else None)
    data = CachedData(data_folder) if data_folder else None
    fps = float(data.frame_rate_of(0)) if data is not None and len(data) else 24.0
    files = resolve_lora_files(settings.loras, (Path.cwd(),))
    metadata = {f: read_lora_file(f)[1] for f in files}
    audio_mode = _audio_mode(metadata)  # before the model loads, as the checks below
    if audio_mode == "condition" and data is None:
        raise SweepError("the LoRAs were trained with recipe.audio condition: the cells are conditioned on the "
                         "training clips' audio, so give --data (the cache) or sweep the run folder")
    factors = _ic_factors(metadata, args.reference)
    for pair in set(factors.values()):
        check_reference_size(size, *pair, "sweep", "change --width/--height/--frames")
    reference = _reference_frames(args.reference, size, fps) if factors else None
    prompts = _prompts(args, settings, data, checkpoint, device, cfg.preview.count if cfg else 1)
    plan = plan_sweep(files, parse_numbers(settings.strengths, "strengths"), prompts, parse_seeds(settings.seeds),
                      settings.max_cells)
    sys.stdout.write(plan.describe() + "\n")
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    backbone = LtxCoreBackbone.from_checkpoint(checkpoint, dtype=dtype, device=device)
    decoder = LtxCoreVae(checkpoint, device=device, dtype=dtype)
    sound = _sound(audio_mode, backbone, checkpoint, device, plan.prompts, data)
    guides = _guides(reference, factors, decoder, size) if reference is not None else {}
    if guides:
        spatial = ", ".join(str(n) for n in sorted({n for n, _ in factors.values()}))
        sys.stdout.write(f"IC-LoRA: every cell is guided by {args.reference} (reference_downscale_factor {spatial}; "
                         "the base row at 1)\n")
    clips = _render(plan, backbone, decoder, size, fps, sound, guides)
    labels = [c.label for c in plan.cells]
    report = sweep_report([video for video, _ in clips], labels, plan)
    sounds = [track for _, track in clips if track is not None]
    audio = sounds if len(sounds) == len(clips) else None
    path = save_grid(report.videos, report.layout, out, fps, audio)
    sys.stdout.write(f"{report.table}\ngrid: {path} (and {path.with_suffix('.png').name})\n")
    if audio is not None:
        cells = cell_videos(report.videos, labels, audio, path.parent, path.stem, fps)
        sys.stdout.write(f"with sound: the grid plays the cells in turn; each cell alone: {cells[0].name} ...\n")
    return 0
