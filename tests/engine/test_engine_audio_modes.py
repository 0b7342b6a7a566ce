"""recipe.audio / recipe.video: each mode trains on the tiny model, the wrong combinations are refused, the LoRA
file holds only layers that trained and its metadata says which streams were generated."""

from __future__ import annotations

import logging

import pytest
import torch
import yaml

from tests.engine_support import config, synthetic_data, tiny_backbone, write_cache
from trainer_core.backbone import TextContext
from trainer_core.cli import main
from trainer_core.config import ConfigError, parse_section
from trainer_core.config.training import RecipeSettings, TrainConfig
from trainer_core.engine.data import InMemoryData
from trainer_core.engine.modes import AUDIO_STREAM_LAYERS, StreamModes
from trainer_core.engine.recipe import FlowMatchingRecipe
from trainer_core.engine.trainer import Callbacks, Trainer
from trainer_core.lorafile import metadata as md
from trainer_core.lorafile.inspect import inspect_lora, report_text
from trainer_core.lorafile.layouts import parse_lora
from trainer_core.lorafile.read import read_lora_file


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny") / "tiny_av.safetensors"


def _is_audio_stream(key: str) -> bool:
    return any(f".{layer}" in key for layer in AUDIO_STREAM_LAYERS)


def _train(ckpt, tmp_path, data=None, **recipe):
    cfg = config(tmp_path, recipe=recipe, optimization={"steps": 2, "learning_rate": 1e-3},
                 checkpoints={"every": 2})
    parts: list[dict[str, float]] = []
    trainer = Trainer(tiny_backbone(ckpt), data or synthetic_data(), cfg)
    result = trainer.train(Callbacks(on_step=lambda info: parts.append(info.parts)))
    tensors, meta = read_lora_file(result.lora_path)
    b = {k: v for k, v in tensors.items() if k.endswith(md.LORA_B)}
    return trainer, result, b, meta, parts


@pytest.mark.parametrize(
    ("audio", "video", "loss_parts"),
    [
        ("generate", "generate", {"video", "audio"}),  # audio+video
        ("off", "generate", {"video"}),  # video only
        ("generate", "condition", {"audio"}),  # audio only / video-to-audio
        ("condition", "generate", {"video"}),  # audio-to-video
    ],
)
def test_each_mode_trains_only_layers_that_move(ckpt, tmp_path, audio, video, loss_parts):
    _, _, b, meta, parts = _train(ckpt, tmp_path, audio=audio, video=video)
    assert all(set(p) == loss_parts for p in parts)  # a conditioning stream has no loss part
    zero = [k for k, v in b.items() if not v.any()]
    assert not zero, f"all-zero lora_B in the file: {zero}"
    audio_keys = [k for k in b if _is_audio_stream(k)]
    if audio == "off":
        assert not audio_keys
    else:
        # Every audio-stream attention of every block trains, bar the layers that cannot reach the loss.
        assert len(audio_keys) == 4 * 4 * 2 - (4 if "condition" in (audio, video) else 0)
    video_keys = [k for k in b if ".attn1." in k or ".attn2." in k]
    assert len(video_keys) == 2 * 4 * 2  # video layers train through the cross-modal attention under condition
    assert (meta[md.AUDIO], meta[md.VIDEO]) == (audio, video)


def test_auto_on_audio_data_generates_both_and_the_file_says_so(ckpt, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        trainer, result, b, meta, parts = _train(ckpt, tmp_path)
    assert "recipe.audio auto: every clip (3) has audio latents" in caplog.text
    assert trainer.modes == StreamModes(audio="generate", video="generate")
    assert (meta[md.AUDIO], meta[md.VIDEO]) == ("generate", "generate") and set(parts[0]) == {"video", "audio"}
    assert any(_is_audio_stream(k) for k in b) and all(v.any() for v in b.values())
    text = report_text(inspect_lora(parse_lora(read_lora_file(result.lora_path)[0]), meta))
    assert "Trained streams: video generate, audio generate" in text


def test_auto_on_video_only_data_is_off_without_audio_layers(ckpt, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        _, _, b, meta, parts = _train(ckpt, tmp_path, data=synthetic_data(audio=False))
    assert "no clip has audio latents: video only" in caplog.text
    assert "audio is off: 32 LoRA layers left out" in caplog.text
    assert meta[md.AUDIO] == "off" and not any(_is_audio_stream(k) for k in b) and set(parts[0]) == {"video"}


def test_auto_on_mixed_data_is_off_and_says_how_many_clips_lack_audio(ckpt, tmp_path, caplog):
    with_audio, without = synthetic_data(n=2), synthetic_data(n=1, seed=1, audio=False)
    data = InMemoryData([*with_audio.samples, *without.samples], empty_text=with_audio.empty_text)
    with caplog.at_level(logging.INFO):
        trainer = Trainer(tiny_backbone(ckpt), data, config(tmp_path))
    assert trainer.modes.audio == "off"
    assert "1 of 3 clips have no audio latents, so audio is off" in caplog.text
    assert "recipe.audio: generate" in caplog.text
    with pytest.raises(ConfigError, match=r"recipe.audio is 'generate', but 1 of 3 clips have no audio latents"):
        Trainer(tiny_backbone(ckpt), data, config(tmp_path, recipe={"audio": "generate"}))


@pytest.mark.parametrize("audio", ["generate", "condition"])
def test_audio_modes_on_data_without_audio_are_config_errors(ckpt, tmp_path, audio):
    with pytest.raises(ConfigError, match=rf"recipe.audio is '{audio}', but 3 of 3 clips have no audio latents: "
                                          r"re-cache them with audio.*recipe.audio: off"):
        Trainer(tiny_backbone(ckpt), synthetic_data(audio=False), config(tmp_path, recipe={"audio": audio}))


def test_video_condition_on_data_without_audio_is_a_config_error(ckpt, tmp_path):
    with pytest.raises(ConfigError, match=r"recipe.video is 'condition'.*resolved to 'off'.*nothing would be gen"):
        Trainer(tiny_backbone(ckpt), synthetic_data(audio=False), config(tmp_path, recipe={"video": "condition"}))


@pytest.mark.parametrize("audio", ["off", "condition"])
def test_nothing_generated_is_a_config_error(audio):
    with pytest.raises(ConfigError, match=rf"recipe.video is 'condition' and recipe.audio is '{audio}': nothing"):
        parse_section(TrainConfig, {"recipe": {"video": "condition", "audio": audio}})


@pytest.mark.parametrize(("old", "new"), [(True, "generate"), (False, "off")])
def test_train_audio_is_a_deprecated_alias(old, new, caplog):
    with caplog.at_level(logging.WARNING):
        cfg = parse_section(TrainConfig, {"recipe": {"train_audio": old}})
    assert cfg.recipe.audio == new
    assert f"recipe.train_audio is deprecated: read as recipe.audio: {new}" in caplog.text
    assert "train_audio" not in cfg.model_dump()["recipe"]  # config.yaml of the run carries recipe.audio
    with pytest.raises(ConfigError, match=r"recipe.train_audio \(True\) and recipe.audio \('off'\) are both set"):
        parse_section(TrainConfig, {"recipe": {"train_audio": True, "audio": "off"}})


def test_cli_exits_2_on_audio_generate_without_audio_latents(ckpt, tmp_path, capsys):
    tiny_backbone(ckpt)  # writes the checkpoint
    cache = write_cache(tmp_path / "cache", [24.0, 24.0])
    cfg = {
        "output_dir": str(tmp_path / "run"),
        "data": str(cache),
        "model": {"checkpoint": str(ckpt), "device": "cpu", "dtype": "float32"},
        "recipe": {"audio": "generate"},
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "2 of 2 clips have no audio latents" in err and "recipe.audio: off" in err


def _batch():
    g = torch.Generator().manual_seed(7)
    video, audio = torch.randn(2, 128, 3, 2, 2, generator=g), torch.randn(2, 8, 5, 16, generator=g)
    return video, audio, TextContext(torch.randn(2, 4, 8, generator=g), torch.randn(2, 4, 4, generator=g))


def test_a_conditioning_video_is_clean_at_timestep_zero_and_out_of_the_loss():
    video, audio, text = _batch()
    recipe = FlowMatchingRecipe(RecipeSettings(video="condition", audio="generate", first_frame_p=1.0),
                                StreamModes(audio="generate", video="condition"))
    inp, targets = recipe.prepare(video, audio, text, 24.0, torch.Generator().manual_seed(0))
    assert torch.equal(inp.video, video) and torch.all(inp.video_timesteps == 0) and torch.all(inp.video_sigma == 0)
    assert not torch.equal(inp.audio, audio) and torch.all(inp.audio_sigma > 0)
    assert targets.video is None and targets.audio is not None
    base, parts = recipe.loss(torch.zeros_like(video), torch.zeros_like(audio), targets)
    assert set(parts) == {"audio"}
    assert float(recipe.loss(torch.full_like(video, 1e3), torch.zeros_like(audio), targets)[0]) == float(base)


def test_off_audio_is_not_fed():
    video, audio, text = _batch()
    inp, targets = FlowMatchingRecipe(RecipeSettings(audio="off"), StreamModes(audio="off", video="generate")).prepare(
        video, audio, text, 24.0, torch.Generator().manual_seed(0)
    )
    assert inp.audio is None and targets.audio is None


def test_an_all_zero_lora_b_at_save_is_named_in_a_warning(ckpt, tmp_path, caplog):
    trainer, _, _, _, _ = _train(ckpt, tmp_path)
    name = trainer.adapters.names[0]
    with torch.no_grad():
        trainer.adapters.lora_B[0].zero_()
    with caplog.at_level(logging.WARNING):
        trainer._save(Callbacks())
    assert "1 LoRA layers whose lora_B is still all zeros" in caplog.text and name in caplog.text
