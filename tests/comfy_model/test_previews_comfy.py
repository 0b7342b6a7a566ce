"""In-training previews of Train LTX LoRA inside a real ComfyUI v0.33 on a tiny LTX-2.3 checkpoint.

Previews sample with ComfyUI's own path on the model being trained; they must not change training at all (same
seed, same loss sequence, with LoRA dropout drawing from the global RNG that ComfyUI's noise reseeds), must be
saved beside the checkpoints and must show what ComfyUI's LoRA loader + sampler give for that checkpoint.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from tests.comfy_models import load_comfy
from tests.engine_support import synthetic_data
from trainer_core.ltxcore.tiny import write_tiny_checkpoint


@pytest.fixture(scope="module")
def tiny(comfy, tmp_path_factory):
    import comfy.sd

    path = write_tiny_checkpoint(tmp_path_factory.mktemp("previews") / "tiny.safetensors", audio=True, seed=0)
    with torch.inference_mode():
        vae = comfy.sd.load_checkpoint_guess_config(str(path), output_vae=True, output_clip=False)[2]
    return path, vae


def _run(comfy, tmp_path, monkeypatch, ckpt, vae, preview_every: int, tag: str = ""):
    import folder_paths

    loras = tmp_path / f"loras_{preview_every}{tag}"
    loras.mkdir()
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(loras)], {".safetensors"}))
    mod = sys.modules[comfy.__name__ + ".trainer_core.config.training"]
    settings = {
        "lora": mod.LoraSettings(rank=4, alpha=4, dropout=0.3),  # dropout draws from the global torch RNG
        "optimization": mod.OptimizationSettings(steps=4, learning_rate=1e-2),
        "memory": mod.MemorySettings(gradient_checkpointing=False, mixed_precision="no"),
        "preview": mod.PreviewSettings(every=preview_every, width=64, height=64, frames=9, steps=3, seed=5),
    }
    widgets = {"seed": 0, "name": "prev", "every": 2, "keep_last": 0, "config_yaml": "", "resume_from": ""}
    model = load_comfy(ckpt)
    node = comfy.NODE_CLASS_MAPPINGS["LtxLoraTrain"]
    with torch.inference_mode():  # as ComfyUI's executor runs every node
        out = node.execute(model=model, training_data=synthetic_data(n=2), vae=vae, **settings, **widgets)
    return model, out.result[2]["loss"], loras / "prev"


def test_previews_leave_the_loss_sequence_unchanged_and_match_comfyui_sampling(comfy, tiny, tmp_path, monkeypatch):
    import comfy.model_management as mm

    import nodes as comfy_nodes

    ckpt, vae = tiny
    _, plain, _ = _run(comfy, tmp_path, monkeypatch, ckpt, vae, preview_every=0)
    # Control: the same previews without the RNG restore do change training (ComfyUI's noise reseeds torch).
    previews_mod = importlib.import_module(comfy.__name__ + ".trainer_core.comfy.previews")
    restoring = previews_mod.rng_preserved
    monkeypatch.setattr(previews_mod, "rng_preserved", contextlib.nullcontext)
    _, unrestored, _ = _run(comfy, tmp_path, monkeypatch, ckpt, vae, preview_every=2, tag="control")
    monkeypatch.setattr(previews_mod, "rng_preserved", restoring)
    assert unrestored[:2] == plain[:2] and unrestored[2:] != plain[2:]

    model, with_previews, run_dir = _run(comfy, tmp_path, monkeypatch, ckpt, vae, preview_every=2)
    assert len(plain) == 4
    assert with_previews == plain  # bit-identical losses, step by step

    previews = sorted(p.name for p in (run_dir / "previews").iterdir())
    assert previews == ["prev_step_00002.mp4", "prev_step_00002.png", "prev_step_00004.mp4", "prev_step_00004.png"]
    with av.open(str(run_dir / "previews" / "prev_step_00002.mp4")) as container:
        assert not container.streams.audio  # the clips have audio (a generate run) but no audio_vae: silent
    assert not mm.in_training

    # The step-2 preview is what a user gets from that checkpoint with ComfyUI's stock LoRA loader and sampler.
    grid_mod = sys.modules[comfy.__name__ + ".trainer_core.sweep.grid"]
    settings_cls = sys.modules[comfy.__name__ + ".trainer_core.config.training"].PreviewSettings
    settings = settings_cls(every=2, width=64, height=64, frames=9, steps=3, seed=5)
    with torch.inference_mode():
        (stock,) = comfy_nodes.LoraLoaderModelOnly().load_lora_model_only(
            model, "prev/prev_step_00002.safetensors", 1.0
        )
        prompt = previews_mod.preview_prompts(settings, synthetic_data(n=2))[0]
        latent = previews_mod.sample_preview(stock, prompt, settings)
        video = grid_mod.as_video(vae.decode(latent))
    expected = grid_mod.grid_image([video], grid_mod.GridLayout(1, [prompt.label]))
    saved = Image.open(run_dir / "previews" / "prev_step_00002.png")
    diff = np.abs(np.asarray(saved, dtype=np.int16) - np.asarray(expected, dtype=np.int16))
    assert saved.size == expected.size
    assert diff.max() <= 1, diff.max()
    # And the adapters trained for two more steps do change the preview.
    later = np.asarray(Image.open(run_dir / "previews" / "prev_step_00004.png"), dtype=np.int16)
    assert np.abs(later - np.asarray(saved, dtype=np.int16)).max() > 1


def test_preview_prompts_without_clip_are_refused_clearly(comfy):
    mod = sys.modules[comfy.__name__ + ".trainer_core.config.training"]
    previews_mod = importlib.import_module(comfy.__name__ + ".trainer_core.comfy.previews")
    settings = mod.PreviewSettings(every=1, prompts="a cat walking")
    with pytest.raises(ValueError, match="no clip connected"):
        previews_mod.preview_prompts(settings, synthetic_data(n=1))
    captions = previews_mod.preview_prompts(mod.PreviewSettings(every=1, count=3), synthetic_data(n=2))
    assert [p.label for p in captions] == ["caption 0", "caption 1"]
    assert captions[0].conditioning[0][1]["unprocessed_ltxav_embeds"] is True


def test_previews_of_an_audio_run_have_sound(comfy, tmp_path, monkeypatch):
    """recipe.audio generate + the stock Load LTXV Audio VAE on the Train node: the preview mp4 has an audio track
    as long as the video, decoded by the audio VAE and not silent."""
    import folder_paths
    from comfy import sd as comfy_sd  # not `import comfy.sd`: that would rebind the fixture argument
    from comfy_extras.nodes_lt_audio import LTXVAudioVAELoader

    ckpt = write_tiny_checkpoint(tmp_path / "ckpts" / "tiny_av.safetensors", audio=True, audio_vae=True, seed=0)
    folder_paths.add_model_folder_path("checkpoints", str(ckpt.parent))
    loras = tmp_path / "loras"
    loras.mkdir()
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(loras)], {".safetensors"}))
    with torch.inference_mode():
        vae = comfy_sd.load_checkpoint_guess_config(str(ckpt), output_vae=True, output_clip=False)[2]
        audio_vae = LTXVAudioVAELoader.execute(ckpt_name=ckpt.name).result[0]
    mod = sys.modules[comfy.__name__ + ".trainer_core.config.training"]
    settings = {
        "lora": mod.LoraSettings(rank=4, alpha=4),
        "optimization": mod.OptimizationSettings(steps=2, learning_rate=1e-2),
        "recipe": mod.RecipeSettings(audio="generate"),
        "memory": mod.MemorySettings(gradient_checkpointing=False, mixed_precision="no"),
        "preview": mod.PreviewSettings(every=2, width=64, height=64, frames=17, steps=3, seed=5),
    }
    widgets = {"seed": 0, "name": "av", "every": 2, "keep_last": 0, "config_yaml": "", "resume_from": ""}
    node = comfy.NODE_CLASS_MAPPINGS["LtxLoraTrain"]
    with torch.inference_mode():
        node.execute(model=load_comfy(ckpt), training_data=synthetic_data(n=2), vae=vae, audio_vae=audio_vae,
                     **settings, **widgets)
    mp4 = loras / "av" / "previews" / "av_step_00002.mp4"
    with av.open(str(mp4)) as container:
        (sound,) = container.streams.audio
        frames = sum(1 for _ in container.decode(video=0))
        rate = sound.rate
    with av.open(str(mp4)) as container:
        wave = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    assert frames == 17 and rate == audio_vae.first_stage_model.output_sample_rate
    # synthetic clips are at 24 fps: 17 frames last 0.708 s; AAC pads up to one 1024-sample frame
    assert 17 / 24 <= wave.shape[1] / rate <= 17 / 24 + 1024 / rate + 0.01
    assert np.sqrt((wave**2).mean()) > 1e-4 and np.abs(wave).max() > 1e-3  # not silent


def test_previews_stay_silent_without_an_audio_run(comfy, tmp_path, monkeypatch, tiny):
    """An audio VAE on a video-only run (recipe.audio off) changes nothing: the preview has no audio stream."""
    import folder_paths

    ckpt, vae = tiny
    loras = tmp_path / "loras"
    loras.mkdir()
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(loras)], {".safetensors"}))
    mod = sys.modules[comfy.__name__ + ".trainer_core.config.training"]
    settings = {
        "optimization": mod.OptimizationSettings(steps=1),
        "recipe": mod.RecipeSettings(audio="off"),
        "memory": mod.MemorySettings(gradient_checkpointing=False, mixed_precision="no"),
        "preview": mod.PreviewSettings(every=1, width=64, height=64, frames=9, steps=2),
    }
    widgets = {"seed": 0, "name": "v", "every": 1, "keep_last": 0, "config_yaml": "", "resume_from": ""}
    with torch.inference_mode():
        comfy.NODE_CLASS_MAPPINGS["LtxLoraTrain"].execute(
            model=load_comfy(ckpt), training_data=synthetic_data(n=1), vae=vae, audio_vae=vae, **settings, **widgets)
    with av.open(str(loras / "v" / "previews" / "v_step_00001.mp4")) as container:
        assert not container.streams.audio


def _audio_data(steps: int):
    """Two synthetic clips whose audio latents are ``steps`` long (preview frames 17 at 24 fps: 18 steps)."""
    import dataclasses

    data = synthetic_data(n=2)
    g = torch.Generator().manual_seed(7)
    data.samples = [dataclasses.replace(s, audio=torch.randn(8, steps, 16, generator=g)) for s in data.samples]
    return data


@pytest.fixture(scope="module")
def tiny_av(comfy, tmp_path_factory):
    """A tiny audio+video checkpoint with audio VAE: (path, VAE, stock Load LTXV Audio VAE's AUDIO_VAE)."""
    import folder_paths
    from comfy import sd as comfy_sd  # not `import comfy.sd`: that would rebind the fixture argument
    from comfy_extras.nodes_lt_audio import LTXVAudioVAELoader

    ckpt = write_tiny_checkpoint(tmp_path_factory.mktemp("ckpts_av") / "tiny_av_cond.safetensors", audio=True,
                                 audio_vae=True, seed=0)
    folder_paths.add_model_folder_path("checkpoints", str(ckpt.parent))
    with torch.inference_mode():
        vae = comfy_sd.load_checkpoint_guess_config(str(ckpt), output_vae=True, output_clip=False)[2]
        audio_vae = LTXVAudioVAELoader.execute(ckpt_name=ckpt.name).result[0]
    return ckpt, vae, audio_vae


@pytest.mark.parametrize("steps", [18, 6])
def test_conditioning_audio_is_held_clean_and_a_shorter_clips_tail_generated(comfy, tiny_av, steps):
    """sample_preview with a prompt's conditioning audio: the sampled audio latent is that clip's over its steps,
    exactly, and a preview longer than the clip generates the rest (as Concat AV Latent fits a shorter clip)."""
    from comfy_extras.nodes_lt import LTXVSeparateAVLatent

    ckpt, _, audio_vae = tiny_av
    previews_mod = importlib.import_module(comfy.__name__ + ".trainer_core.comfy.previews")
    settings = sys.modules[comfy.__name__ + ".trainer_core.config.training"].PreviewSettings(
        every=1, width=64, height=64, frames=17, steps=3, seed=5)
    prompt = previews_mod.preview_prompts(settings, _audio_data(steps))[0]
    clip = torch.randn(8, steps, 16, generator=torch.Generator().manual_seed(3))
    prompt.audio = clip
    with torch.inference_mode():
        joint = previews_mod.sample_preview(load_comfy(ckpt), prompt, settings, audio_vae)
        audio = LTXVSeparateAVLatent.execute({"samples": joint}).result[1]["samples"]
    assert tuple(audio.shape) == (1, 8, 18, 16)
    torch.testing.assert_close(audio[0, :, :steps].float(), clip, rtol=0, atol=1e-6)
    if steps < 18:
        assert audio[0, :, steps:].abs().max() > 1e-3  # generated from noise, not the zero padding


def test_condition_run_previews_carry_the_conditioning_clips_audio(comfy, tiny_av, tmp_path, monkeypatch):
    """recipe.audio condition + audio_vae on the Train node: preview i is conditioned on clip i's audio and its mp4
    plays that audio, decoded by the stock LTXV Audio VAE Decode (what it decodes is the clip's latent)."""
    from comfy_extras.nodes_lt_audio import LTXVAudioVAEDecode

    ckpt, vae, audio_vae = tiny_av
    decoded: list[torch.Tensor] = []
    real = LTXVAudioVAEDecode.execute

    def spy(cls, samples, audio_vae):
        decoded.append(samples["samples"].clone())
        return real(samples, audio_vae)

    monkeypatch.setattr(LTXVAudioVAEDecode, "execute", classmethod(spy))
    loras, settings = _preview_run_settings(comfy, tmp_path, monkeypatch, {"audio": "condition"}, 64, 64)
    widgets = {"seed": 0, "name": "cond", "every": 2, "keep_last": 0, "config_yaml": "", "resume_from": ""}
    data = _audio_data(18)
    with torch.inference_mode():
        comfy.NODE_CLASS_MAPPINGS["LtxLoraTrain"].execute(model=load_comfy(ckpt), training_data=data, vae=vae,
                                                          audio_vae=audio_vae, **settings, **widgets)
    assert len(decoded) == 2
    for i in range(2):
        torch.testing.assert_close(decoded[i][0].float(), data.samples[i].audio, rtol=0, atol=1e-6)
    mp4 = loras / "cond" / "previews" / "cond_step_00002.mp4"
    with av.open(str(mp4)) as container:
        (sound,) = container.streams.audio
        rate = sound.rate
        wave = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    seconds = 2 * 17 / 24  # two cells playing in turn
    assert seconds <= wave.shape[1] / rate <= seconds + 1024 / rate + 0.01
    assert np.sqrt((wave**2).mean()) > 1e-4 and np.abs(wave).max() > 1e-3  # not silent


@pytest.mark.parametrize("frames", [3, 2])
def test_conditioning_video_is_held_clean_and_the_audio_generated(comfy, tiny_av, frames):
    """sample_preview with a prompt's conditioning video (video-to-audio): the sampled video latent is that clip's
    exactly, at the clip's height and width (a tail past a shorter clip is generated); the audio is generated from
    noise and changes with the seed."""
    from comfy_extras.nodes_lt import LTXVSeparateAVLatent

    ckpt, _, audio_vae = tiny_av
    model = load_comfy(ckpt)
    previews_mod = importlib.import_module(comfy.__name__ + ".trainer_core.comfy.previews")
    settings_cls = sys.modules[comfy.__name__ + ".trainer_core.config.training"].PreviewSettings
    clip = torch.randn(128, frames, 2, 2, generator=torch.Generator().manual_seed(3))

    def sample(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        settings = settings_cls(every=1, width=128, height=96, frames=17, steps=3, seed=seed)
        prompt = previews_mod.preview_prompts(settings, _audio_data(18))[0]
        prompt.video = clip
        with torch.inference_mode():
            joint = previews_mod.sample_preview(model, prompt, settings, audio_vae)
            video, audio = LTXVSeparateAVLatent.execute({"samples": joint}).result
        return video["samples"], audio["samples"]

    video, audio = sample(5)
    assert tuple(video.shape) == (1, 128, 3, 2, 2) and tuple(audio.shape) == (1, 8, 18, 16)
    torch.testing.assert_close(video[0, :, :frames].float(), clip, rtol=0, atol=1e-6)
    if frames < 3:
        assert video[0, :, frames:].abs().max() > 1e-3  # generated from noise, not the zero padding
    assert audio.abs().max() > 1e-2  # generated, not the empty latent's zeros
    other_video, other_audio = sample(6)
    torch.testing.assert_close(other_video[0, :, :frames].float(), clip, rtol=0, atol=1e-6)
    assert (other_audio - audio).abs().max() > 1e-3


def _train_with_spies(comfy, tiny_av, tmp_path, monkeypatch, recipe: dict, name: str):
    """The Train node on 2 clips (3 latent frames, 18 audio steps) with previews of 128x96x17 and an audio VAE:
    (the data, the video latents the VAE decoded, the audio latents LTXV Audio VAE Decode decoded, the run folder)."""
    import dataclasses

    from comfy_extras.nodes_lt_audio import LTXVAudioVAEDecode

    ckpt, vae, audio_vae = tiny_av
    videos: list[torch.Tensor] = []
    audios: list[torch.Tensor] = []
    real_audio = LTXVAudioVAEDecode.execute

    def audio_spy(cls, samples, audio_vae):
        audios.append(samples["samples"].clone())
        return real_audio(samples, audio_vae)

    class VaeSpy:
        def decode(self, latent):
            videos.append(latent.clone())
            return vae.decode(latent)

    monkeypatch.setattr(LTXVAudioVAEDecode, "execute", classmethod(audio_spy))
    loras, settings = _preview_run_settings(comfy, tmp_path, monkeypatch, recipe, 128, 96)
    widgets = {"seed": 0, "name": name, "every": 2, "keep_last": 0, "config_yaml": "", "resume_from": ""}
    data = synthetic_data(n=2, frames=3)
    g = torch.Generator().manual_seed(7)
    data.samples = [dataclasses.replace(s, audio=torch.randn(8, 18, 16, generator=g)) for s in data.samples]
    with torch.inference_mode():
        comfy.NODE_CLASS_MAPPINGS["LtxLoraTrain"].execute(model=load_comfy(ckpt), training_data=data, vae=VaeSpy(),
                                                          audio_vae=audio_vae, **settings, **widgets)
    return data, videos, audios, loras / name


def test_video_condition_run_previews_show_the_clips_video_with_generated_sound(comfy, tiny_av, tmp_path,
                                                                               monkeypatch):
    """recipe.video condition on the Train node: preview i decodes training clip i's video latent exactly (at the
    clip's size, not the preview's) and its mp4 plays generated audio (no clip's latent, not the empty zeros)."""
    data, videos, audios, run = _train_with_spies(comfy, tiny_av, tmp_path, monkeypatch,
                                                  {"video": "condition", "audio": "generate"}, "v2a")
    assert len(videos) == 2 and len(audios) == 2
    for i in range(2):
        torch.testing.assert_close(videos[i][0].float(), data.samples[i].video, rtol=0, atol=1e-6)
        assert audios[i].abs().max() > 1e-2
        assert all((audios[i][0].float() - s.audio).abs().max() > 1e-3 for s in data.samples)
    with av.open(str(run / "previews" / "v2a_step_00002.mp4")) as container:
        (sound,) = container.streams.audio
        wave = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    assert np.sqrt((wave**2).mean()) > 1e-4 and np.abs(wave).max() > 1e-3  # not silent


@pytest.mark.parametrize("audio", ["generate", "condition"])
def test_runs_that_generate_video_still_sample_it_on_the_train_node(comfy, tiny_av, tmp_path, monkeypatch, audio):
    """Audio+video and audio-to-video runs: the previews' video is sampled at the preview's size, not a clip's."""
    data, videos, audios, _ = _train_with_spies(comfy, tiny_av, tmp_path, monkeypatch, {"audio": audio}, audio)
    assert len(videos) == 2 and all(tuple(x.shape) == (1, 128, 3, 3, 4) for x in videos)
    conditioned = [bool((audios[i][0].float() - data.samples[i].audio).abs().max() < 1e-6) for i in range(2)]
    assert conditioned == [audio == "condition"] * 2


def _preview_run_settings(comfy, tmp_path, monkeypatch, recipe: dict, width: int, height: int) -> tuple[Path, dict]:
    """A loras folder for the run and the Train node's section inputs: 2 steps, previews of 2 clips at step 2."""
    import folder_paths

    loras = tmp_path / "loras"
    loras.mkdir()
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(loras)], {".safetensors"}))
    mod = sys.modules[comfy.__name__ + ".trainer_core.config.training"]
    return loras, {
        "lora": mod.LoraSettings(rank=4, alpha=4),
        "optimization": mod.OptimizationSettings(steps=2, learning_rate=1e-2),
        "recipe": mod.RecipeSettings(**recipe),
        "memory": mod.MemorySettings(gradient_checkpointing=False, mixed_precision="no"),
        "preview": mod.PreviewSettings(every=2, width=width, height=height, frames=17, steps=3, seed=5, count=2),
    }
