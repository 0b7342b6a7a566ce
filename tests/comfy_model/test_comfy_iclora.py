"""IC-LoRA on ComfyUI's LTXAVModel: the reference goes in as LTXV Add Guide puts a guide in (dilated, appended,
``keyframe_idxs``), its positions equal ltx-core's scaled grid, both backbones agree on the velocity and on a
training run's losses, and a LoRA trained here runs in the stock graph (Load LoRA -> Get IC-LoRA Parameters ->
LTXV Add Guide -> sampler -> LTXV Crop Guides -> VAE Decode)."""

from __future__ import annotations

import logging
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tests.comfy_models import load_comfy, model_input, text_embeds
from tests.engine_support import TEXT_DIM, config, synthetic_data
from trainer_core.engine.trainer import Trainer
from trainer_core.ltxcore.backbone import LtxCoreBackbone
from trainer_core.ltxcore.tiny import write_tiny_checkpoint

pytest.importorskip("ltx_core", reason="ltx-core (optional dependency) is the reference backbone of these tests")


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_av.safetensors", audio=True, seed=3)


@pytest.fixture(scope="module")
def backbones(comfy, tiny_path):
    from trainer_core.comfy import ComfyBackbone

    return ComfyBackbone(load_comfy(tiny_path)), LtxCoreBackbone.from_checkpoint(tiny_path, dtype=torch.float32)


def _guided_input(backbone, factor: int, temporal: int = 1):
    """A 3x4x4 noisy video latent (first frame clean) with a (2/S + 1) x 4/N x 4/N clean reference."""
    with torch.inference_mode():
        text = backbone.prepare_text(text_embeds(backbone, seed=1))
    base = model_input(text, seed=2, audio=False, first_frame=True)
    g = torch.Generator().manual_seed(4)
    video = torch.randn(1, 128, 3, 4, 4, generator=g)
    timesteps = torch.full((1, 48), 0.6)
    timesteps[:, :16] = 0.0
    reference = torch.randn(1, 128, 2 // temporal + 1, 4 // factor, 4 // factor, generator=g)
    return replace(base, video=video, video_timesteps=timesteps, reference=reference, reference_factor=factor,
                   reference_temporal_factor=temporal)


@pytest.mark.parametrize(("factor", "temporal"), [(1, 1), (2, 1), (2, 2)])
def test_reference_velocity_and_positions_match_ltx_core(backbones, factor, temporal, monkeypatch):
    comfy_bb, core_bb = backbones
    inp = _guided_input(comfy_bb, factor, temporal)
    dm = comfy_bb.model_patcher.model.diffusion_model
    seen: dict[str, torch.Tensor] = {}
    stock_positions = dm._prepare_positional_embeddings

    def positions(pixel_coords, frame_rate, x_dtype):
        seen["comfy"] = pixel_coords[0].clone()  # [video, audio]
        return stock_positions(pixel_coords, frame_rate, x_dtype)

    monkeypatch.setattr(dm, "_prepare_positional_embeddings", positions)
    hook = core_bb.transformer.register_forward_pre_hook(
        lambda _m, _a, kwargs: seen.update(core=kwargs["video"].positions), with_kwargs=True
    )
    try:
        with comfy_bb.training_session(), torch.no_grad():
            ours, _ = comfy_bb.velocity(inp)
        with torch.no_grad():
            theirs, _ = core_bb.velocity(inp)
    finally:
        hook.remove()
    assert ours.shape == theirs.shape == inp.video.shape
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    ref_tokens = (2 // temporal + 1) * (4 // factor) ** 2
    # ComfyUI appends the guide tokens that survive the dilation; ltx-core prepends the reference grid.
    comfy_ref = seen["comfy"][0, :, -ref_tokens:].float()
    comfy_ref[0] /= inp.frame_rate
    torch.testing.assert_close(comfy_ref, seen["core"][0, :, :ref_tokens].float())
    assert comfy_ref[1].max() == 4 * 32 and seen["comfy"].shape[2] == 48 + ref_tokens
    # ltx-trainer's temporal placement: reference frame i ends at the clip's pixel frame 8 i S + 1.
    ends = torch.tensor([8.0 * i * temporal + 1 for i in range(2 // temporal + 1)]) / inp.frame_rate
    torch.testing.assert_close(seen["core"][0, 0, :ref_tokens, 1].unique(), ends)
    if temporal != 1:  # the same guide placed as with no temporal factor gives another velocity
        with comfy_bb.training_session(), torch.no_grad():
            unscaled, _ = comfy_bb.velocity(replace(inp, reference_temporal_factor=1))
        assert not torch.allclose(unscaled, ours, atol=1e-4)


def _train_node_settings(comfy, steps: int) -> dict:
    mod = sys.modules[comfy.__name__ + ".trainer_core.config.training"]
    return {
        "lora": mod.LoraSettings(rank=4, alpha=4, targets="video_attention_ffn"),
        "optimization": mod.OptimizationSettings(steps=steps, learning_rate=1e-3),
        "memory": mod.MemorySettings(gradient_checkpointing=True, mixed_precision="no"),
        "recipe": mod.RecipeSettings(reference_p=1.0, first_frame_p=0.5, audio="off"),
    }


def _widgets(**over) -> dict:
    values = {"seed": 0, "name": "ic", "every": 100, "keep_last": 0, "config_yaml": "", "resume_from": ""}
    return {**values, **over}


@pytest.fixture()
def loras(comfy, tmp_path, monkeypatch):
    import folder_paths

    folder = tmp_path / "loras"
    folder.mkdir()
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(folder)], {".safetensors"}))
    return folder


def test_train_node_ic_lora_losses_match_the_ltx_core_backbone(comfy, tiny_path, loras, tmp_path):
    node = comfy.NODE_CLASS_MAPPINGS["LtxLoraTrain"]
    data = synthetic_data(n=2, audio=False, size=4, reference_factor=2)
    with torch.inference_mode():
        out = node.execute(model=load_comfy(tiny_path), training_data=data, **_train_node_settings(comfy, 4),
                           **_widgets())
    cfg = config(
        tmp_path / "ref",
        lora={"rank": 4, "alpha": 4, "targets": "video_attention_ffn"},
        optimization={"steps": 4, "learning_rate": 1e-3},
        recipe={"reference_p": 1.0, "first_frame_p": 0.5, "audio": "off"},
        memory={"gradient_checkpointing": True, "mixed_precision": "no"},
        checkpoints={"every": 100},
        name="ic",
    )
    reference = Trainer(LtxCoreBackbone.from_checkpoint(tiny_path, dtype=torch.float32), data, cfg).train().losses
    assert out.result[2]["loss"] == pytest.approx(reference, rel=1e-4)


def test_the_recipe_nodes_ic_lora_preset_trains_the_yaml_examples_ic_lora(comfy, tiny_path, loras):
    """LTX Training Recipe with preset ic_lora and every other widget at its default, LTX LoRA Settings at its
    defaults: the run's recipe and LoRA settings are docs/examples/ic_lora.yaml's, and it trains an IC-LoRA of the
    video attention and feed-forward layers."""
    import yaml

    from trainer_core.config import load_yaml
    from trainer_core.config.training import TrainConfig
    from trainer_core.lorafile import metadata as md
    from trainer_core.lorafile.read import read_lora_file

    training = sys.modules[comfy.__name__ + ".trainer_core.config.training"]
    nodes = comfy.NODE_CLASS_MAPPINGS
    widgets = {name: f.default for name, f in training.RecipeSettings.model_fields.items()}
    (recipe,) = nodes["LtxLoraRecipeSettings"].execute(**{**widgets, "preset": "ic_lora"}).result
    (lora,) = nodes["LtxLoraLoraSettings"].execute(
        **{name: f.default for name, f in training.LoraSettings.model_fields.items()}
    ).result
    settings = {"recipe": recipe, "lora": lora, "optimization": training.OptimizationSettings(steps=2),
                "memory": training.MemorySettings(mixed_precision="no")}
    with torch.inference_mode():
        nodes["LtxLoraTrain"].execute(model=load_comfy(tiny_path), training_data=synthetic_data(
            n=2, audio=False, size=4, reference_factor=2), **settings, **_widgets(every=2))
    run = yaml.safe_load((loras / "ic" / "config.yaml").read_text())
    example = load_yaml(TrainConfig, Path(__file__).resolve().parents[2] / "docs" / "examples" / "ic_lora.yaml")
    assert {k: v for k, v in run["recipe"].items() if k != "preset"} == example.recipe.model_dump(
        mode="json", exclude={"preset"})
    assert run["lora"] == example.lora.model_dump(mode="json")
    tensors, meta = read_lora_file(loras / "ic" / "ic_step_00002.safetensors")
    assert meta[md.REFERENCE_DOWNSCALE_FACTOR] == "2"
    assert {k.split(".", 3)[3].rsplit(".", 2)[0] for k in tensors if k.endswith(md.LORA_B)} == {
        *(f"attn{i}.{p}" for i in (1, 2) for p in ("to_q", "to_k", "to_v", "to_out.0")), "ff.net.0.proj", "ff.net.2"
    }


def test_the_train_node_refuses_references_with_a_temporal_factor(comfy, tiny_path, loras):
    """ComfyUI v0.33's IC-LoRA nodes cannot place a temporally subsampled reference: no LoRA that ComfyUI would
    misuse is trained."""
    data = synthetic_data(n=2, audio=False, frames=3, size=4, reference_factor=2, reference_temporal=2)
    with pytest.raises(Exception, match="reference_temporal_scale_factor 2") as err, torch.inference_mode():
        comfy.NODE_CLASS_MAPPINGS["LtxLoraTrain"].execute(
            model=load_comfy(tiny_path), training_data=data, **_train_node_settings(comfy, 1), **_widgets())
    assert "train it headless" in str(err.value) and not list(loras.rglob("*.safetensors"))


def test_stock_ic_lora_graph_runs_a_lora_trained_here(comfy, tiny_path, loras, tmp_path, caplog):
    """The graph users build (the bundled Canny-to-Video blueprint's), on our factor-2 IC-LoRA file."""
    import comfy.sd
    import nodes
    from comfy_extras import nodes_lt

    cfg = config(tmp_path, output_dir=str(loras / "ic"), name="ic", recipe={"reference_p": 1.0, "audio": "off"},
                 lora={"targets": "video_attention_ffn"}, optimization={"steps": 2}, checkpoints={"every": 2})
    data = synthetic_data(n=2, audio=False, size=4, reference_factor=2)
    Trainer(LtxCoreBackbone.from_checkpoint(tiny_path, dtype=torch.float32), data, cfg).train()
    caplog.set_level(logging.WARNING)
    with torch.inference_mode():
        model, _, vae, _ = comfy.sd.load_checkpoint_guess_config(str(tiny_path), output_vae=True, output_clip=False)
        (lora_model,) = nodes.LoraLoaderModelOnly().load_lora_model_only(model, "ic/ic_step_00002.safetensors", 1.0)
        assert not [r for r in caplog.records if "lora key not loaded" in r.getMessage()]
        assert len(lora_model.patches) == 2 * 10  # video attention + FFN of both blocks
        (parameters,) = nodes_lt.GetICLoRAParameters.execute(lora_model).result
        assert parameters == {"reference_downscale_factor": 2}  # read from our file's metadata
        (latent,) = nodes_lt.EmptyLTXVLatentVideo.execute(width=128, height=128, length=9, batch_size=1).result
        embeds = torch.randn(1, 7, TEXT_DIM, generator=torch.Generator().manual_seed(5))
        cond = [[embeds, {"unprocessed_ltxav_embeds": True, "frame_rate": 24.0}]]

        def generate(guide_video: torch.Tensor) -> torch.Tensor:
            positive, negative, guided = nodes_lt.LTXVAddGuide.execute(
                cond, cond, vae, latent, guide_video, 0, 1.0, iclora_parameters=parameters
            ).result
            # The guide is encoded at 64x64 (1/2) and dilated into the 4x4 latent grid: 2 more latent frames.
            assert guided["samples"].shape[2] == latent["samples"].shape[2] + 2
            (sampled,) = nodes.common_ksampler(lora_model, 7, 2, 1.0, "euler", "simple", positive, negative, guided)
            _, _, cropped = nodes_lt.LTXVCropGuides.execute(positive, negative, sampled).result
            assert cropped["samples"].shape == latent["samples"].shape
            return nodes.VAEDecode().decode(vae, cropped)[0]

        g = torch.Generator().manual_seed(0)
        first = generate(torch.rand(9, 128, 128, 3, generator=g))
        second = generate(torch.rand(9, 128, 128, 3, generator=g))
    assert first.shape == (9, 128, 128, 3) and torch.isfinite(first).all()
    assert not torch.allclose(first, second)  # the generated clip follows the reference clip


def test_ic_lora_previews_are_the_stock_guide_graph_on_the_checkpoint(comfy, tiny_path, loras):
    """Train node previews of an IC-LoRA run: guided by the first training clip's reference clip, equal to what the
    stock graph gives for that checkpoint (LoRA loader -> Get IC-LoRA Parameters -> LTXV Add Guide -> sampler ->
    LTXV Crop Guides -> VAE Decode)."""
    import nodes
    import numpy as np
    from comfy import sample as comfy_sample  # not `import comfy.sample`: that would rebind the fixture argument
    from comfy import samplers as comfy_samplers
    from comfy import sd as comfy_sd
    from comfy_extras import nodes_lt
    from PIL import Image

    training = sys.modules[comfy.__name__ + ".trainer_core.config.training"]
    grid = sys.modules[comfy.__name__ + ".trainer_core.sweep.grid"]
    preview = training.PreviewSettings(every=2, width=128, height=128, frames=9, steps=3, seed=5)
    data = synthetic_data(n=2, audio=False, size=4, reference_factor=2)
    with torch.inference_mode():
        model, _, vae, _ = comfy_sd.load_checkpoint_guess_config(str(tiny_path), output_vae=True, output_clip=False)
        node = comfy.NODE_CLASS_MAPPINGS["LtxLoraTrain"]
        node.execute(model=model, training_data=data, vae=vae, preview=preview, **_train_node_settings(comfy, 2),
                     **_widgets(every=2))
        (stock,) = nodes.LoraLoaderModelOnly().load_lora_model_only(model, "ic/ic_step_00002.safetensors", 1.0)
        (parameters,) = nodes_lt.GetICLoRAParameters.execute(stock).result
        (latent,) = nodes_lt.EmptyLTXVLatentVideo.execute(width=128, height=128, length=9, batch_size=1).result
        cond = [[data[0].text.float(), {"unprocessed_ltxav_embeds": True, "frame_rate": 24.0}]]
        reference_clip = vae.decode(data[0].reference[None].float())[0]
        positive, negative, guided = nodes_lt.LTXVAddGuide.execute(
            cond, cond, vae, latent, reference_clip, 0, 1.0, iclora_parameters=parameters
        ).result
        (sigmas,) = nodes_lt.LTXVScheduler.execute(
            3, 2.05, 0.95, True, 0.1, latent=latent
        ).result
        sampled = comfy_sample.sample_custom(
            stock, comfy_sample.prepare_noise(guided["samples"], 5), 1.0, comfy_samplers.sampler_object("euler"),
            sigmas, positive, negative, guided["samples"], noise_mask=guided["noise_mask"], disable_pbar=True, seed=5,
        )
        _, _, cropped = nodes_lt.LTXVCropGuides.execute(positive, negative, {"samples": sampled}).result
        video = grid.as_video(nodes.VAEDecode().decode(vae, cropped)[0])
    expected = np.asarray(grid.grid_image([video], grid.GridLayout(1, ["caption 0"])), dtype=np.int16)
    saved = np.asarray(Image.open(loras / "ic" / "previews" / "ic_step_00002.png"), dtype=np.int16)
    assert saved.shape == expected.shape and np.abs(saved - expected).max() <= 1


def test_training_positions_are_the_ones_ltxv_add_guide_gives_at_sampling(backbones, tiny_path):
    """What stock LTXV Add Guide (frame 0, strength 1, factor 2) hands the model equals what training feeds."""
    from comfy import sd as comfy_sd
    from comfy_extras import nodes_lt

    comfy_bb, _ = backbones
    inp = _guided_input(comfy_bb, 2)
    with torch.inference_mode():
        vae = comfy_sd.load_checkpoint_guess_config(str(tiny_path), output_vae=True, output_clip=False)[2]
        (latent,) = nodes_lt.EmptyLTXVLatentVideo.execute(width=128, height=128, length=17, batch_size=1).result
        cond = [[torch.zeros(1, 1, TEXT_DIM), {}]]
        positive, _, guided = nodes_lt.LTXVAddGuide.execute(
            cond, cond, vae, latent, torch.rand(17, 128, 128, 3), 0, 1.0,
            iclora_parameters={"reference_downscale_factor": 2},
        ).result
    _, ours = comfy_bb._reference_guide(inp, torch.device("cpu"), torch.float32)
    torch.testing.assert_close(ours["keyframe_idxs"].float(), positive[0][1]["keyframe_idxs"].float())
    # The same holes: the guide frames' negative noise mask entries are the ones the model drops.
    torch.testing.assert_close(ours["denoise_mask"][:, :, 3:] < 0, guided["noise_mask"][:, :, 3:] < 0)
