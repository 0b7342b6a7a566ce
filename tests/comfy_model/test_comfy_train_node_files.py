"""The files a Train LTX LoRA run leaves in ComfyUI's loras folder: what ComfyUI lists, resuming from them, and
config.yaml fed back to the CLI. Real ComfyUI v0.33, tiny LTX-2.3 checkpoint, a real latent cache."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.comfy_models import load_comfy
from trainer_core.demo import run_demo

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """A tiny checkpoint and a latent cache made from it (the demo's pipeline; its 1-step run is ignored)."""
    out = tmp_path_factory.mktemp("demo")
    run_demo(out, steps=1)
    return out


@pytest.fixture()
def setup(comfy, demo, tmp_path, monkeypatch):
    """The Train node, ComfyUI's MODEL, the cached data (as the pack's Cache node returns it) and the loras folder."""
    import folder_paths

    loras = tmp_path / "loras"
    loras.mkdir()
    # ComfyUI's own extension list for LoRAs (every .safetensors, .pt, .bin, ... is listed).
    monkeypatch.setitem(
        folder_paths.folder_names_and_paths, "loras", ([str(loras)], folder_paths.supported_pt_extensions)
    )
    monkeypatch.delitem(folder_paths.filename_list_cache, "loras", raising=False)
    reader = sys.modules[comfy.__name__ + ".trainer_core.cache.reader"]
    model = load_comfy(demo / "model" / "tiny_ltx23.safetensors")
    return comfy.NODE_CLASS_MAPPINGS["LtxLoraTrain"], model, reader.CachedData(demo / "cache"), loras


def _train(comfy, setup, steps: int, **widgets):
    node, model, data, _ = setup
    training = sys.modules[comfy.__name__ + ".trainer_core.config.training"]
    values = {"seed": 0, "name": "itest", "every": 2, "keep_last": 0, "config_yaml": "", "resume_from": ""}
    values.update(widgets)
    with torch.inference_mode():  # as ComfyUI's executor runs every node
        out = node.execute(
            model=model,
            training_data=data,
            lora=training.LoraSettings(rank=4, alpha=4),
            optimization=training.OptimizationSettings(steps=steps, learning_rate=1e-3),
            memory=training.MemorySettings(gradient_checkpointing=False, mixed_precision="no"),
            **values,
        )
    _, lora_path, loss = out.result
    return Path(lora_path), loss["loss"]


def _listed_loras(monkeypatch) -> list[str]:
    import folder_paths

    monkeypatch.delitem(folder_paths.filename_list_cache, "loras", raising=False)
    return folder_paths.get_filename_list("loras")


def test_comfyui_lists_only_the_lora_checkpoints_and_resume_latest_finds_the_state(comfy, setup, monkeypatch):
    loras = setup[3]
    _, first = _train(comfy, setup, 4)
    assert _listed_loras(monkeypatch) == ["itest/itest_step_00002.safetensors", "itest/itest_step_00004.safetensors"]
    lora, resumed = _train(comfy, setup, 6, resume_from="latest")
    assert lora == loras / "itest" / "itest_step_00006.safetensors"
    assert resumed[:4] == first and len(resumed) == 6  # continued from step 4, history included
    assert _listed_loras(monkeypatch) == [f"itest/itest_step_0000{s}.safetensors" for s in (2, 4, 6)]


def test_resume_from_takes_a_relative_file_a_run_name_or_an_absolute_path(comfy, setup):
    loras = setup[3]
    _, first = _train(comfy, setup, 4)
    # Relative to this run's folder: continue from step 2, so steps 3 and 4 repeat the first run's.
    _, again = _train(comfy, setup, 4, resume_from="itest_step_00002.safetensors")
    assert again == pytest.approx(first, rel=1e-5)
    # Another run's name: its newest checkpoint (step 4) starts the new run "other".
    lora, other = _train(comfy, setup, 5, name="other", resume_from="itest")
    assert lora == loras / "other" / "other_step_00005.safetensors" and other[:4] == pytest.approx(first, rel=1e-5)
    # An absolute path.
    _, absolute = _train(comfy, setup, 5, name="third", resume_from=str(loras / "itest" / "itest_step_00004.safetensors"))
    assert absolute == pytest.approx(other, rel=1e-5)


def test_resume_from_that_matches_nothing_names_the_value_and_where_it_looked(comfy, setup):
    loras = setup[3]
    with pytest.raises(Exception, match="resume_from 'nope': no checkpoint") as err:
        _train(comfy, setup, 2, resume_from="nope")
    assert str(loras / "itest" / "nope") in str(err.value) and str(loras / "nope") in str(err.value)
    with pytest.raises(Exception, match=r"resume_from 'latest': no checkpoint named itest_step_\*\.safetensors"):
        _train(comfy, setup, 2, resume_from="latest")


def test_config_yaml_of_a_node_run_trains_unchanged_through_the_cli(comfy, setup, demo):
    loras = setup[3]
    _train(comfy, setup, 4)
    config = loras / "itest" / "config.yaml"
    for p in (loras / "itest").glob("itest_step_*"):
        p.unlink()
    out = subprocess.run(
        [sys.executable, "-m", "trainer_core", "train", str(config)],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )
    assert out.returncode == 0, out.stderr
    assert f"completed at step 4: {loras / 'itest' / 'itest_step_00004.safetensors'}" in out.stdout
    assert (loras / "itest" / "itest_step_00004.safetensors").is_file()
    assert not config.read_text().startswith("#")  # nothing the CLI lacks, so no note about it


def test_config_yaml_of_a_run_on_direct_latents_says_what_the_cli_needs(comfy, setup):
    node, model, _, loras = setup
    training = sys.modules[comfy.__name__ + ".trainer_core.config.training"]
    latent = {"samples": torch.randn(1, 128, 2, 2, 2)}
    conditioning = [[torch.randn(1, 5, 96), {"frame_rate": 24.0}]]
    with torch.inference_mode():
        node.execute(
            model=model, latent=latent, conditioning=conditioning,
            lora=training.LoraSettings(rank=4, alpha=4), optimization=training.OptimizationSettings(steps=1),
            memory=training.MemorySettings(mixed_precision="no"), seed=0, name="direct", every=5, keep_last=0,
        )
    config = loras / "direct" / "config.yaml"
    assert config.read_text().startswith("# data is not set (a Train node run on latents wired straight into")
    out = subprocess.run(
        [sys.executable, "-m", "trainer_core", "train", str(config)],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )
    assert out.returncode == 2
    assert "data is not set" in out.stderr and "set data: to that folder" in out.stderr
