"""Model files checked before work starts: the base checkpoint's type and family, and the cache against the model."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
import yaml
from safetensors.torch import save_file

from tests.dataset_media import write_video
from tests.engine_support import synthetic_data, tiny_backbone, write_cache
from tests.engine_support import config as engine_config
from trainer_core.cache import CachedData, CacheError
from trainer_core.cache.encoders import TEXT_FAMILY_LTX2
from trainer_core.cli import main
from trainer_core.engine.trainer import Trainer
from trainer_core.ltxcore import backbone as ltx_backbone
from trainer_core.ltxcore import encoders as ltx_encoders
from trainer_core.ltxcore.checkpoint_file import vae_identity
from trainer_core.ltxcore.tiny import write_tiny_checkpoint

pytest.importorskip("ltx_core", reason="ltx-core (optional dependency) builds the tiny models")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    ckpt = write_tiny_checkpoint(root / "ltx23.safetensors", seed=0)
    lora = root / "my_lora.safetensors"
    save_file({"diffusion_model.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 64),
               "diffusion_model.transformer_blocks.0.attn1.to_q.lora_B.weight": torch.zeros(64, 4)}, str(lora))
    torch.save({"state_dict": {}}, root / "model.ckpt")
    (root / "model.pkl").write_bytes(pickle.dumps({"weights": [1, 2]}, protocol=2))
    (root / "notes.safetensors").write_text("download the model from huggingface\n")
    (root / "truncated.safetensors").write_bytes(ckpt.read_bytes()[:5000])
    save_file({"vae.encoder.conv_in.weight": torch.zeros(4)}, str(root / "vae_only.safetensors"))
    return root, ckpt


BAD = {
    "my_lora.safetensors": "this is a LoRA file, not a base model checkpoint",
    "model.ckpt": "is a PyTorch zip checkpoint (torch.save: .pt/.ckpt/.bin), not a safetensors file",
    "model.pkl": "is a Python pickle (.pt/.ckpt/.pkl), not a safetensors file",
    "notes.safetensors": "is a text file, not a safetensors file",
    "truncated.safetensors": "is a truncated safetensors file",
    "vae_only.safetensors": "holds no LTX transformer weights",
    "missing.safetensors": "checkpoint not found",
}


def _train_yaml(tmp_path, checkpoint, data) -> str:
    cfg = {"name": "m", "output_dir": str(tmp_path / "run"), "data": str(data),
           "model": {"checkpoint": str(checkpoint), "device": "cpu", "dtype": "float32"},
           "lora": {"rank": 4, "alpha": 4}, "optimization": {"steps": 1}, "memory": {"mixed_precision": "no"}}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.mark.parametrize("name", list(BAD))
def test_a_wrong_base_checkpoint_is_refused_before_loading_naming_the_file(files, tmp_path, capsys, monkeypatch, name):
    root, _ = files

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(ltx_backbone.LtxCoreBackbone, "from_checkpoint", never)
    monkeypatch.setattr(ltx_encoders, "load_vae_modules", never)
    cache = write_cache(tmp_path / "cache", [24.0])
    assert main(["train", _train_yaml(tmp_path, root / name, cache)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: model.checkpoint {root / name}") and BAD[name] in err
    assert "Traceback" not in err
    assert main(["cache", str(tmp_path), "--checkpoint", str(root / name), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --checkpoint {root / name}") and BAD[name] in err


def test_the_vae_identity_read_from_the_file_is_the_one_the_cache_records(files):
    _, ckpt = files
    assert vae_identity(ckpt) == ltx_encoders.LtxCoreVae(ckpt, decoder=False).identity()


def _cache_with(checkpoint, tmp_path, name):
    dataset = tmp_path / "ds"
    if not dataset.is_dir():
        dataset.mkdir()
        write_video(dataset / "clip.mp4", frames=9, size=(64, 64))
        (dataset / "clip.txt").write_text("a clip")
    args = ["cache", str(dataset), "--checkpoint", str(checkpoint), "--buckets", "64x64x9", "--skip-audio"]
    assert main([*args, "--out", str(tmp_path / name)]) == 0
    return tmp_path / name


def test_a_cache_of_another_family_or_vae_is_refused_naming_both(files, tmp_path, capsys, monkeypatch):
    root, ckpt = files
    ltx2 = write_tiny_checkpoint(tmp_path / "ltx2.safetensors", seed=0, family="ltx-2")
    other_vae = write_tiny_checkpoint(tmp_path / "other.safetensors", seed=1)
    cache = _cache_with(ltx2, tmp_path, "ltx2_cache")
    assert CachedData(cache).model["model_family"] == "ltx-2"
    monkeypatch.setattr(ltx_backbone.LtxCoreBackbone, "from_checkpoint", lambda *a, **k: pytest.fail("loaded"))
    capsys.readouterr()
    assert main(["train", _train_yaml(tmp_path, ckpt, cache)]) == 2
    err = capsys.readouterr().err
    assert f"cache {cache} was made with an LTX-2 model, but {ckpt} is LTX-2.3" in err
    cache = _cache_with(ckpt, tmp_path, "ltx23_cache")
    capsys.readouterr()
    assert main(["train", _train_yaml(tmp_path, other_vae, cache)]) == 2
    err = capsys.readouterr().err
    assert f"was encoded by another video VAE (identity {vae_identity(ckpt)})" in err
    assert f"than the one in {other_vae} (identity {vae_identity(other_vae)})" in err


def test_the_train_node_path_refuses_a_cache_made_for_another_family(files, tmp_path):
    _, ckpt = files
    cache = write_cache(tmp_path / "cache", [24.0])
    manifest = json.loads((cache / "manifest.json").read_text())
    manifest["model"]["text_family"] = TEXT_FAMILY_LTX2  # cached inside ComfyUI with LTX-2's Gemma projection
    (cache / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CacheError, match=r"made with an LTX-2 model, but the model being trained \(ltx-2\.3\)"):
        Trainer(tiny_backbone(ckpt), CachedData(cache), engine_config(tmp_path), base_model="ltx-2.3")
    Trainer(tiny_backbone(ckpt), synthetic_data(), engine_config(tmp_path), base_model="ltx-2.3")  # no cache: no check
