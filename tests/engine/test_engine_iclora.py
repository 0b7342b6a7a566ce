"""IC-LoRA (recipe.reference_p) on the headless ltx-core backbone: the reference reaches the model clean with its
own scaled positions, only the target's tokens come back and count in the loss, data without references is
refused, the run says what it does, the file carries the bare keys ComfyUI and ltx-pipelines read, and the bundled
YAML preset trains."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from tests.engine_support import TEXT_DIM, config, synthetic_data, tiny_backbone, write_cache
from trainer_core.backbone import TextContext
from trainer_core.cache.manifest import Manifest
from trainer_core.cache.store import save_tensors
from trainer_core.cli import main
from trainer_core.config import ConfigError, load_yaml
from trainer_core.config.training import RecipeSettings, TrainConfig
from trainer_core.engine.data import InMemoryData
from trainer_core.engine.modes import StreamModes, resolve_modes
from trainer_core.engine.recipe import FlowMatchingRecipe
from trainer_core.engine.trainer import Trainer
from trainer_core.lorafile import metadata as md
from trainer_core.lorafile.inspect import inspect_lora, report_text
from trainer_core.lorafile.layouts import convert_file, parse_lora
from trainer_core.lorafile.read import read_lora_file

PRESET = Path(__file__).resolve().parents[2] / "docs" / "examples" / "ic_lora.yaml"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "tiny_av.safetensors"
    tiny_backbone(path)  # writes it
    return path


def _recipe(factor: int = 2, **settings) -> FlowMatchingRecipe:
    return FlowMatchingRecipe(RecipeSettings(audio="off", **settings), StreamModes("off", "generate", factor))


def _batch(seed: int = 0, factor: int = 2, batch: int = 1):
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(batch, 128, 2, 4, 4, generator=g)
    reference = torch.randn(batch, 128, 2, 4 // factor, 4 // factor, generator=g)
    return video, reference


def _text(backbone) -> TextContext:
    return backbone.prepare_text(torch.randn(1, 5, TEXT_DIM, generator=torch.Generator().manual_seed(1)))


def test_reference_reaches_the_model_and_only_the_target_comes_back(ckpt):
    backbone = tiny_backbone(ckpt)
    video, reference = _batch()
    inp, targets = _recipe(reference_p=1.0).prepare(video, None, _text(backbone), 24.0, torch.Generator(), reference)
    assert inp.reference is not None and inp.reference_factor == 2
    assert targets.video_mask.shape == (1, 2 * 4 * 4)  # the loss sees the target's tokens only
    with torch.no_grad():
        guided, _ = backbone.velocity(inp)
        plain, _ = backbone.velocity(replace(inp, reference=None))
        other, _ = backbone.velocity(replace(inp, reference=torch.randn_like(reference)))
    assert guided.shape == video.shape
    assert not torch.allclose(guided, plain, atol=1e-4) and not torch.allclose(guided, other, atol=1e-4)


def test_ltx_core_reference_positions_are_its_own_grid_scaled_spatially(ckpt):
    backbone = tiny_backbone(ckpt)
    seen = {}
    hook = backbone.transformer.register_forward_pre_hook(
        lambda _m, _a, kwargs: seen.update(video=kwargs["video"]), with_kwargs=True
    )
    video, reference = _batch()
    inp, _ = _recipe(reference_p=1.0).prepare(video, None, _text(backbone), 24.0, torch.Generator(), reference)
    try:
        with torch.no_grad():
            backbone.velocity(inp)
    finally:
        hook.remove()
    positions, timesteps = seen["video"].positions[0], seen["video"].timesteps[0]
    f, y, x = torch.meshgrid(torch.arange(2.0), torch.arange(2.0), torch.arange(2.0), indexing="ij")
    f, y, x = f.flatten(), y.flatten(), x.flatten()
    # Causal time (frame 0 is one pixel frame) in seconds; y and x in pixels of the reference grid, times 2.
    expected = torch.stack([
        torch.stack([(8 * f - 7).clamp(min=0) / 24.0, (8 * f + 1) / 24.0], -1),
        torch.stack([32 * 2 * y, 32 * 2 * (y + 1)], -1),
        torch.stack([32 * 2 * x, 32 * 2 * (x + 1)], -1),
    ])
    assert positions.shape == (3, 8 + 32, 2)  # reference tokens first, then the target's
    torch.testing.assert_close(positions[:, :8], expected)
    assert positions[1, 8:, 1].max() == 4 * 32  # the target keeps its own, unscaled grid
    assert not timesteps[:8].any() and timesteps[8:].all()  # the reference is clean


def test_first_frame_conditioning_still_applies_to_the_target():
    video, reference = _batch(batch=2)
    text = TextContext(torch.zeros(1, 1, 64), None)
    inp, targets = _recipe(reference_p=1.0, first_frame_p=1.0).prepare(
        video, None, text, 24.0, torch.Generator(), reference
    )
    assert inp.reference is not None
    assert not inp.video_timesteps[:, :16].any() and inp.video_timesteps[:, 16:].all()
    assert not targets.video_mask[:, :16].any() and targets.video_mask[:, 16:].all()
    torch.testing.assert_close(inp.video[:, :, 0], video[:, :, 0])


def test_the_reference_draw_is_one_per_batch_with_probability_p():
    video, reference = _batch(batch=2)
    text = TextContext(torch.zeros(1, 1, 64), None)
    g = torch.Generator().manual_seed(0)
    recipe = _recipe(reference_p=0.5)
    drawn = [recipe.prepare(video, None, text, 24.0, g, reference)[0].reference is not None for _ in range(200)]
    assert 70 < sum(drawn) < 130
    never = _recipe(factor=0)  # reference_p 0 resolves to no reference factor
    assert never.prepare(video, None, text, 24.0, g, reference)[0].reference is None
    with pytest.raises(ValueError, match="1/2 of its height and width"):
        _recipe(reference_p=1.0).prepare(video, None, text, 24.0, g, torch.randn(2, 128, 2, 4, 4))


def test_reference_p_on_data_without_references_names_the_manifest_column(ckpt, tmp_path):
    cfg = config(tmp_path, recipe={"reference_p": 1.0})
    with pytest.raises(ConfigError, match="reference_video column") as err:
        Trainer(tiny_backbone(ckpt), synthetic_data(audio=False), cfg)
    assert "none of the 3 clips has a reference latent" in str(err.value)


def test_cli_exits_2_on_reference_p_without_references(ckpt, tmp_path, capsys):
    cache = write_cache(tmp_path / "cache", [24.0, 24.0])
    cfg = {
        "output_dir": str(tmp_path / "run"),
        "data": str(cache),
        "model": {"checkpoint": str(ckpt), "device": "cpu", "dtype": "float32"},
        "recipe": {"reference_p": 0.5},
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "reference_video" in err and err.count("\n") == 1


@pytest.mark.parametrize("factor", [1, 2])
def test_an_ic_lora_run_logs_it_and_its_file_carries_the_bare_reference_keys(ckpt, tmp_path, caplog, factor):
    cfg = config(tmp_path, recipe={"reference_p": 1.0, "audio": "off"}, optimization={"steps": 2},
                 checkpoints={"every": 2})
    data = synthetic_data(n=2, audio=False, size=4, reference_factor=factor)
    with caplog.at_level(logging.INFO):
        result = Trainer(tiny_backbone(ckpt), data, cfg).train()
    assert f"IC-LoRA: reference latents prepended (p=1, reference_downscale_factor {factor})" in caplog.text
    _, meta = read_lora_file(result.lora_path)
    assert meta[md.REFERENCE_DOWNSCALE_FACTOR] == meta[md.REFERENCE_SPATIAL_SCALE_FACTOR] == str(factor)
    assert md.REFERENCE_TEMPORAL_SCALE_FACTOR not in meta  # spatial factors only: the temporal one is 1
    text = report_text(inspect_lora(parse_lora(read_lora_file(result.lora_path)[0]), meta))
    assert f"IC-LoRA: reference_downscale_factor = {factor}, reference_spatial_scale_factor = {factor}" in text
    converted, _ = convert_file(result.lora_path, tmp_path / "peft.safetensors", "peft")
    kept = read_lora_file(converted)[1]
    assert kept[md.REFERENCE_DOWNSCALE_FACTOR] == kept[md.REFERENCE_SPATIAL_SCALE_FACTOR] == str(factor)


def test_reference_data_without_reference_p_trains_a_plain_lora_and_says_so(ckpt, tmp_path, caplog):
    cfg = config(tmp_path, recipe={"audio": "off"}, optimization={"steps": 1}, checkpoints={"every": 1})
    with caplog.at_level(logging.INFO):
        result = Trainer(tiny_backbone(ckpt), synthetic_data(n=2, audio=False, size=4, reference_factor=2), cfg).train()
    assert "the data holds 2 reference latents, but recipe.reference_p is 0" in caplog.text
    assert not set(md.REFERENCE_KEYS) & set(read_lora_file(result.lora_path)[1])


def _add_references(cache: Path, factor: int) -> None:
    """Give every clip of a ``write_cache`` cache a reference latent at 1/``factor`` size, as the cache step does."""
    manifest = Manifest.load(cache)
    g = torch.Generator().manual_seed(5)
    for key, record in manifest.items.items():
        c, f, h, w = record.latent_shape
        ref = torch.randn(c, f, h // factor, w // factor, generator=g)
        rel = f"reference/{key}.safetensors"
        info = save_tensors(cache / rel, {"video": ref})
        manifest.items[key] = replace(
            record, reference=rel, reference_shape=list(ref.shape), reference_bytes=info["bytes"],
            reference_sha256=info["sha256"], reference_source=f"{key}_edges.mp4",
        )
    manifest.dataset["reference_downscale_factor"] = factor
    manifest.save(cache)


def test_the_ic_lora_preset_yaml_is_ltx_trainers_template_and_trains_through_the_cli(ckpt, tmp_path, caplog, capsys):
    preset = load_yaml(TrainConfig, PRESET)
    assert (preset.recipe.reference_p, preset.recipe.first_frame_p, preset.recipe.audio) == (1.0, 0.2, "off")
    assert preset.lora.targets == "video_attention_ffn"
    cache = write_cache(tmp_path / "cache", [24.0, 24.0])
    _add_references(cache, 2)
    raw = yaml.safe_load(PRESET.read_text())
    raw.update(data=str(cache), output_dir=str(tmp_path / "run"), name="ic")
    raw["model"] = {"checkpoint": str(ckpt), "device": "cpu", "dtype": "float32"}
    raw["lora"].update(rank=4, alpha=4)
    raw["optimization"].update(steps=2)
    raw["memory"] = {"mixed_precision": "no"}
    path = tmp_path / "ic.yaml"
    path.write_text(yaml.safe_dump(raw))
    with caplog.at_level(logging.INFO):
        assert main(["train", str(path)]) == 0
    assert "IC-LoRA: reference latents prepended (p=1, reference_downscale_factor 2)" in caplog.text
    tensors, meta = read_lora_file(tmp_path / "run" / "ic_step_00002.safetensors")
    assert meta[md.REFERENCE_DOWNSCALE_FACTOR] == "2"
    assert tensors and not any("audio" in k for k in tensors)
    assert {k.split(".", 3)[3].rsplit(".", 2)[0] for k in tensors if k.endswith(md.LORA_B)} == {
        *(f"attn{i}.{p}" for i in (1, 2) for p in ("to_q", "to_k", "to_v", "to_out.0")), "ff.net.0.proj", "ff.net.2"
    }


def test_reference_p_with_video_conditioning_is_refused():
    data = synthetic_data(n=2, size=4, reference_factor=2)
    with pytest.raises(ConfigError, match="recipe.video: generate"):
        resolve_modes(RecipeSettings(reference_p=1.0, video="condition", audio="generate"), data)


def test_clips_without_a_reference_train_without_one_and_the_run_says_how_many(caplog):
    data = synthetic_data(n=3, audio=False, size=4, reference_factor=2)
    data = InMemoryData([replace(data.samples[0], reference=None), *data.samples[1:]], data.empty_text,
                        reference_downscale_factor=2)
    with caplog.at_level(logging.INFO):
        modes = resolve_modes(RecipeSettings(reference_p=1.0, audio="off"), data)
    assert modes.reference_factor == 2
    assert "recipe.reference_p: 1 of 3 clips have no reference latent" in caplog.text


def test_the_ic_lora_preset_gives_the_yaml_examples_recipe_and_targets_and_keeps_changed_values(tmp_path):
    example = load_yaml(TrainConfig, PRESET)
    path = tmp_path / "preset.yaml"
    path.write_text("recipe:\n  preset: ic_lora\n")
    preset = load_yaml(TrainConfig, path)
    assert preset.recipe.model_dump(exclude={"preset"}) == example.recipe.model_dump(exclude={"preset"})
    assert preset.lora == example.lora
    # A value set away from its default wins over the preset; the resolved config reloads to itself.
    path.write_text("recipe:\n  preset: ic_lora\n  first_frame_p: 0.5\nlora:\n  targets: video_attention\n")
    changed = load_yaml(TrainConfig, path)
    assert (changed.recipe.first_frame_p, changed.recipe.reference_p, changed.lora.targets) == (
        0.5, 1.0, "video_attention"
    )
    assert TrainConfig.model_validate(changed.model_dump()) == changed
    assert load_yaml(TrainConfig, tmp_path / "preset.yaml").recipe.preset == "ic_lora"
    assert TrainConfig(recipe=RecipeSettings(preset="custom")).recipe.reference_p == 0.0
    preset.data = "cache"  # assignment re-runs the validators: the sections stay sections
    assert preset.lora.targets == "video_attention_ffn" and preset.data == "cache"


def test_a_temporal_reference_trains_and_its_file_carries_the_temporal_key(ckpt, tmp_path, caplog):
    """Reference latents with ltx-trainer's temporal factor 2 (3 target latent frames, 2 reference frames)."""
    cfg = config(tmp_path, recipe={"reference_p": 1.0, "audio": "off"}, optimization={"steps": 2},
                 checkpoints={"every": 2})
    data = synthetic_data(n=2, audio=False, frames=3, size=4, reference_factor=2, reference_temporal=2)
    with caplog.at_level(logging.INFO):
        result = Trainer(tiny_backbone(ckpt), data, cfg).train()
    assert ("IC-LoRA: reference latents prepended (p=1, reference_downscale_factor 2, reference_temporal_scale_factor "
            "2)") in caplog.text
    _, meta = read_lora_file(result.lora_path)
    assert meta[md.REFERENCE_TEMPORAL_SCALE_FACTOR] == "2" and meta[md.REFERENCE_DOWNSCALE_FACTOR] == "2"
    text = report_text(inspect_lora(parse_lora(read_lora_file(result.lora_path)[0]), meta))
    assert "reference_temporal_scale_factor = 2" in text
    converted, _ = convert_file(result.lora_path, tmp_path / "peft.safetensors", "peft")
    assert read_lora_file(converted)[1][md.REFERENCE_TEMPORAL_SCALE_FACTOR] == "2"


def test_a_reference_that_is_not_the_clip_subsampled_by_the_temporal_factor_is_refused():
    video = torch.randn(1, 128, 3, 4, 4)
    text = TextContext(torch.zeros(1, 1, 64), None)
    recipe = FlowMatchingRecipe(RecipeSettings(audio="off", reference_p=1.0), StreamModes("off", "generate", 2, 2))
    inp, _ = recipe.prepare(video, None, text, 24.0, torch.Generator(), torch.randn(1, 128, 2, 2, 2))
    assert inp.reference_temporal_factor == 2
    with pytest.raises(ValueError, match="subsampled by 2"):
        recipe.prepare(video, None, text, 24.0, torch.Generator(), torch.randn(1, 128, 3, 2, 2))
