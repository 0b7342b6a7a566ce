"""ltx-trainer v1.x and LTX-2 LoRA tutorial configs: translated with ltx-trainer's defaults, every key named, values
that cannot be honoured refused; `config check` / `config translate`; `train` on a translated config and on an
ltx-trainer `.precomputed` folder; `model.device: auto`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from tests.engine_support import write_precomputed
from trainer_core.cli import main
from trainer_core.config import ConfigError, parse_section
from trainer_core.config.foreign import load_train_config, translate
from trainer_core.config.training import TrainConfig
from trainer_core.ltxcore.tiny import write_tiny_checkpoint

FIXTURES = Path(__file__).parent / "foreign"
TRANSLATED = ("ltx_trainer_t2v_lora", "ltx_trainer_i2v_low_vram", "ltx_trainer_legacy_text_to_video", "tutorial")


def _leaf_keys(data: dict, prefix: str = "") -> list[str]:
    keys = []
    for k, v in data.items():
        path = f"{prefix}{k}"
        keys += _leaf_keys(v, path + ".") if isinstance(v, dict) and v else [path]
    return keys


@pytest.mark.parametrize("name", [*TRANSLATED, "ltx_trainer_v2v_ic_lora"])
def test_every_key_of_the_example_configs_is_named(name):
    path = FIXTURES / f"{name}.yaml"
    try:
        text = load_train_config(path).report(str(path))
    except ConfigError as err:
        text = str(err)
    lines = text.splitlines()
    for key in _leaf_keys(yaml.safe_load(path.read_text())):
        assert any(line.strip().startswith(key) for line in lines), f"{key} is not named:\n{text}"


def test_ltx_trainer_flexible_config_translates():
    t = load_train_config(FIXTURES / "ltx_trainer_t2v_lora.yaml")
    cfg = t.config
    assert t.dialect == "ltx-trainer"
    assert cfg.model.checkpoint == "/models/ltx-2.3-22b-dev.safetensors" and cfg.data == "/data/my_dataset"
    assert (cfg.lora.rank, cfg.lora.alpha, cfg.lora.targets) == (32, 32, "all_attention")
    assert (cfg.optimization.steps, cfg.optimization.learning_rate, cfg.optimization.batch_size) == (2000, 1e-4, 1)
    assert (cfg.recipe.audio, cfg.recipe.video) == ("generate", "generate")
    assert (cfg.checkpoints.every, cfg.checkpoints.keep_last) == (250, 0)  # keep_last_n -1 = all
    assert cfg.memory.gradient_checkpointing and cfg.output_dir == "outputs/t2v_lora"
    assert (cfg.preview.every, cfg.preview.width, cfg.preview.height, cfg.preview.frames) == (250, 960, 544, 89)
    assert cfg.preview.prompts.splitlines() == ["A red fox runs through fresh snow at dawn",
                                                "A lighthouse on a cliff during a storm"]
    report = t.report("x")
    assert "hub.push_to_hub: no equivalent" in report and "model.text_encoder_path: no equivalent" in report
    assert "validation.stg_scale: no equivalent" in report and "wandb.enabled: no equivalent" in report


def test_omitted_keys_take_ltx_trainer_defaults():
    cfg = load_train_config(FIXTURES / "ltx_trainer_legacy_text_to_video.yaml").config
    assert (cfg.optimization.learning_rate, cfg.optimization.steps, cfg.optimization.batch_size) == (5e-4, 3000, 2)
    assert (cfg.lora.rank, cfg.lora.alpha) == (64, 64)
    assert not cfg.memory.gradient_checkpointing and cfg.checkpoints.keep_last == 1
    assert cfg.checkpoints.every == 3000  # no interval: ltx-trainer saves only at the end
    assert (cfg.recipe.first_frame_p, cfg.recipe.audio) == (0.25, "generate")
    low = load_train_config(FIXTURES / "ltx_trainer_i2v_low_vram.yaml").config
    assert (low.recipe.first_frame_p, low.optimization.optimizer) == (0.5, "adamw8bit")
    assert (low.lora.targets, low.lora.custom_targets) == ("custom", "to_k, to_q, to_v, to_out.0, ff.net.0.proj, "
                                                                     "ff.net.2")


def test_tutorial_keys_translate():
    t = load_train_config(FIXTURES / "tutorial.yaml")
    cfg = t.config
    assert t.dialect == "tutorial" and cfg.model.checkpoint == "/models/ltx-2-19b-dev.safetensors"
    assert (cfg.optimization.steps, cfg.checkpoints.every, cfg.recipe.caption_dropout) == (2000, 500, 0.05)
    assert cfg.memory.mixed_precision == "bf16" and cfg.output_dir == "outputs/tutorial_lora"
    assert cfg.preview.prompts == "sks dog running on the beach" and cfg.preview.every == 250
    assert cfg.data is None  # raw clips: cache them first, as the dataset.* lines say
    assert (cfg.recipe.first_frame_p, cfg.recipe.audio) == (0.1, "off")  # ltx-trainer's text_to_video defaults
    assert "dataset.data_root: no equivalent (raw clips are cached first" in t.report("x")


def test_values_that_cannot_be_honoured_are_refused_by_name(capsys):
    with pytest.raises(ConfigError) as err:
        load_train_config(FIXTURES / "ltx_trainer_v2v_ic_lora.yaml")
    msg = str(err.value)
    assert "model.training_mode = 'full': refused, full fine-tuning is not built" in msg
    assert "mixed_precision_mode = 'fp16': refused" in msg
    assert "model.model_path -> model.checkpoint" in msg  # the rest of the mapping is still shown
    assert "training_strategy.video.conditions -> recipe.reference_p = 1.0, recipe.first_frame_p = 0.2" in msg
    assert main(["config", "check", str(FIXTURES / "ltx_trainer_v2v_ic_lora.yaml")]) == 2
    assert capsys.readouterr().err.startswith("error: ltx_trainer_v2v_ic_lora.yaml: read with the ltx-trainer")


def test_conditions_other_than_first_frame_and_reference_are_refused():
    data = {"training_strategy": {"name": "flexible", "video": {"conditions": [{"type": "prefix", "num_frames": 8}]}}}
    with pytest.raises(ConfigError, match="condition 'prefix' has no equivalent"):
        translate(data)
    with pytest.raises(ConfigError, match="training_strategy.name = 'keyframe_to_video': refused"):
        translate({"training_strategy": {"name": "keyframe_to_video"}})
    legacy = translate({"training_strategy": {"name": "video_to_video", "reference_latents_dir": "ref"}}).config
    assert legacy.recipe.reference_p == 1.0


def test_unknown_and_conflicting_keys():
    with pytest.raises(ConfigError, match=r"optimization\.stepz: not a setting of ltx-trainer v1\.x, the LTX-2 LoRA"):
        translate({"model": {"model_path": "m"}, "optimization": {"stepz": 3}})
    with pytest.raises(ConfigError, match="optimization.max_train_steps and optimization.steps both set"):
        translate({"optimization": {"steps": 3, "max_train_steps": 4}})


def test_native_config_is_not_translated():
    data = {"optimization": {"steps": 7}, "memory": {"gradient_checkpointing": True}, "name": "n"}
    t = translate(data)
    assert t.dialect is None and t.config == parse_section(TrainConfig, data)
    with pytest.raises(ConfigError, match="Extra inputs are not permitted"):  # a typo stays pydantic's error
        translate({"optimization": {"stepz": 3}})


def test_translate_writes_a_native_config_and_check_reads_it(tmp_path, capsys):
    out = tmp_path / "native.yaml"
    assert main(["config", "translate", str(FIXTURES / "ltx_trainer_t2v_lora.yaml"), str(out)]) == 0
    assert "lora.target_modules -> lora.targets = 'all_attention'" in capsys.readouterr().out
    native = load_train_config(out)
    assert native.dialect is None
    assert native.config == load_train_config(FIXTURES / "ltx_trainer_t2v_lora.yaml").config
    assert main(["config", "translate", str(FIXTURES / "tutorial.yaml"), str(out)]) == 2
    assert "exists; choose another OUT or pass --force" in capsys.readouterr().err
    assert main(["config", "check", str(out)]) == 0
    assert "valid" in capsys.readouterr().out


def test_device_auto_is_the_default():
    cfg = TrainConfig()
    assert cfg.model.device == "auto"
    assert cfg.model.resolved_device(True) == "cuda" and cfg.model.resolved_device(False) == "cpu"
    assert cfg.model.model_copy(update={"device": "cuda:1"}).resolved_device(False) == "cuda:1"


def test_train_runs_an_ltx_trainer_config_on_its_precomputed_folder(tmp_path, capsys):
    """The ltx-trainer config as written for ltx-trainer (device left out): the .precomputed folder is imported into
    the run's folder and trained on; config.yaml records the device used and the imported cache."""
    ckpt = write_tiny_checkpoint(tmp_path / "tiny.safetensors", audio=False)
    write_precomputed(tmp_path / "ds", ["a.mp4", "b.mp4"])
    cfg = {
        "model": {"model_path": str(ckpt), "text_encoder_path": "/nowhere/gemma", "training_mode": "lora"},
        "lora": {"rank": 4, "alpha": 4},
        "optimization": {"steps": 2, "batch_size": 1, "learning_rate": 1e-3},
        "acceleration": {"mixed_precision_mode": "no", "quantization": None},
        "data": {"preprocessed_data_root": str(tmp_path / "ds"), "num_dataloader_workers": 2},
        "output_dir": str(tmp_path / "run"),
        "wandb": {"enabled": False},
    }
    path = tmp_path / "ltx_trainer.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path)]) == 0
    captured = capsys.readouterr()
    assert "data.preprocessed_data_root -> data" in captured.err and "wandb.enabled: no equivalent" in captured.err
    recorded = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert recorded["model"]["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert recorded["data"] == str(tmp_path / "run" / "ltx_trainer_cache")
    assert (recorded["lora"]["rank"], recorded["optimization"]["steps"]) == (4, 2)
    assert "completed at step 2" in captured.out or "at step 2" in captured.out
