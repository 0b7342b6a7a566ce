"""Headless previews and sweeps of audio runs have sound: the audio stream is sampled beside the video (or held at a
training clip's audio under recipe.audio condition), decoded by the tiny checkpoint's audio VAE and vocoder and
written into the mp4; video-only runs and undecodable audio give files without an audio stream."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
import yaml

from tests.dataset_media import write_video
from trainer_core.cli import main

pytest.importorskip("ltx_core", reason="ltx-core (optional dependency) is the headless backbone")

from trainer_core.cache.reader import CachedData  # noqa: E402
from trainer_core.ltxcore.encoders import LtxCoreAudioVae, LtxCoreVae  # noqa: E402
from trainer_core.ltxcore.tiny import write_tiny_checkpoint  # noqa: E402

FRAMES, FPS = 17, 24  # preview length: round(17 / 24 * 25) = 18 audio latent steps, as the cached clips have
VOCODER_RATE = 24000  # the tiny vocoder's output rate


@pytest.fixture(scope="module")
def av_cache(tmp_path_factory) -> tuple[Path, Path]:
    """(tiny audio+video checkpoint with audio VAE and vocoder, a `cache` of 2 clips with sound made with it)."""
    root = tmp_path_factory.mktemp("av_previews")
    ckpt = write_tiny_checkpoint(root / "tiny_av.safetensors", audio_vae=True, seed=0)
    ds = root / "ds"
    ds.mkdir()
    for i, frames in enumerate((17, 18)):
        write_video(ds / f"c{i}.mp4", frames=frames, size=(64, 64), fps=FPS, audio=True)
        (ds / f"c{i}.txt").write_text(f"clip {i}")
    assert main(["cache", str(ds), "--checkpoint", str(ckpt), "--out", str(root / "cache"),
                 "--buckets", f"64x64x{FRAMES}"]) == 0
    return ckpt, root / "cache"


class DecodeSpy:
    """Records every latent a decoder class decodes (the real decoder still runs): the audio VAE unless told."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, decoder: type = LtxCoreAudioVae) -> None:
        self.seen: list[torch.Tensor] = []
        real = decoder.decode

        def spy(vae, latent):
            self.seen.append(latent.clone())
            return real(vae, latent)

        monkeypatch.setattr(decoder, "decode", spy)


@pytest.fixture
def decoded(monkeypatch) -> list[torch.Tensor]:
    return DecodeSpy(monkeypatch).seen


@pytest.fixture(scope="module")
def runs(av_cache, tmp_path_factory) -> dict[str, tuple[Path, list[torch.Tensor]]]:
    """A recipe.audio generate run and a condition run: (run folder, the audio latents their previews decoded)."""
    root = tmp_path_factory.mktemp("av_runs")
    out = {}
    for name, mode in (("gen", "generate"), ("cond", "condition")):
        with pytest.MonkeyPatch.context() as mp:
            spy = DecodeSpy(mp)
            out[name] = (train(root, av_cache, name, mode), spy.seen)
    return out


def train(root: Path, av_cache: tuple[Path, Path], name: str, audio: str, video: str = "generate",
          size: tuple[int, int] = (64, 64)) -> Path:
    ckpt, cache = av_cache
    cfg = {
        "name": name, "seed": 0, "output_dir": str(root / name), "data": str(cache),
        "model": {"checkpoint": str(ckpt), "device": "cpu", "dtype": "float32"},
        "lora": {"rank": 4, "alpha": 4}, "optimization": {"steps": 2, "learning_rate": 1e-3},
        "checkpoints": {"every": 2}, "memory": {"mixed_precision": "no", "gradient_checkpointing": False},
        "recipe": {"audio": audio, "video": video},
        "preview": {"every": 2, "width": size[0], "height": size[1], "frames": FRAMES, "steps": 2, "count": 2},
    }  # fmt: skip
    (root / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(root / f"{name}.yaml")]) == 0
    return root / name


def sound_of(path: Path) -> tuple[np.ndarray, int, int] | None:
    """(waveform [channels, samples], sample rate, video frames) of an mp4, None when it has no audio stream."""
    with av.open(str(path)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        rate = container.streams.audio[0].rate
        wave = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    return wave, rate, frames


def check_sound(path: Path, cells: int) -> None:
    """Stereo, at the vocoder's rate, not silent, as long as the cells playing in turn (AAC pads one frame)."""
    found = sound_of(path)
    assert found is not None, f"{path.name} has no audio stream"
    wave, rate, frames = found
    seconds = cells * FRAMES / FPS
    assert frames == cells * FRAMES and rate == VOCODER_RATE and wave.shape[0] == 2
    assert seconds <= wave.shape[1] / rate <= seconds + 1024 / rate + 0.01
    assert np.sqrt((wave**2).mean()) > 1e-3 and np.abs(wave).max() > 1e-2


def test_audio_run_previews_have_sound_of_the_preview_length(av_cache, runs):
    run, decoded = runs["gen"]
    check_sound(run / "previews" / "gen_step_00002.mp4", cells=2)
    data = CachedData(av_cache[1])
    assert len(decoded) == 2 and all(tuple(x.shape) == (8, 18, 16) for x in decoded)
    assert not any(torch.equal(x, data[i].audio) for i in range(2) for x in decoded)  # generated, not a clip's


def test_condition_run_previews_carry_the_conditioning_clips_audio(av_cache, runs):
    run, decoded = runs["cond"]
    check_sound(run / "previews" / "cond_step_00002.mp4", cells=2)
    data = CachedData(av_cache[1])
    # Preview i is conditioned on clip i's audio: what is decoded into its sound is that latent, exactly.
    assert len(decoded) == 2 and all(torch.equal(decoded[i], data[i].audio) for i in range(2))


def test_video_only_run_on_an_audio_checkpoint_writes_no_audio_stream(av_cache, tmp_path, decoded):
    run = train(tmp_path, av_cache, "mute", "off")
    assert sound_of(run / "previews" / "mute_step_00002.mp4") is None and not decoded


def test_previews_are_silent_and_say_why_when_the_audio_vae_cannot_be_imported(av_cache, tmp_path, monkeypatch,
                                                                               caplog):
    from trainer_core.cache.encoders import CacheError
    from trainer_core.ltxcore import encoders

    def no_torchaudio():
        raise CacheError("ltx-core's audio VAE cannot be imported (ModuleNotFoundError: No module named 'torchaudio')")

    monkeypatch.setattr(encoders, "_import_audio_configurators", no_torchaudio)
    run = train(tmp_path, av_cache, "nota", "generate")
    assert sound_of(run / "previews" / "nota_step_00002.mp4") is None
    assert "previews are silent: the audio cannot be decoded" in caplog.text and "torchaudio" in caplog.text


def test_sweep_of_an_audio_lora_has_sound_in_the_grid_and_every_cell(runs, capsys):
    run = runs["gen"][0]
    assert main(["sweep", str(run), "--strengths", "0, 1", "--seeds", "1"]) == 0
    out = capsys.readouterr().out
    assert "4 cells = 2 rows x 2 prompts x 1 seeds" in out and "with sound" in out  # base + step 2, 2 captions
    check_sound(run / "sweep.mp4", cells=4)
    for i in range(4):
        check_sound(run / f"sweep_cell_{i:02d}.mp4", cells=1)


def test_sweep_of_a_condition_lora_conditions_each_column_on_a_clip(av_cache, runs, tmp_path, decoded, capsys):
    lora = runs["cond"][0] / "cond_step_00002.safetensors"
    out = tmp_path / "g.mp4"
    args = ["sweep", str(lora), "--checkpoint", str(av_cache[0]), "--out", str(out), "--strengths", "1",
            "--seeds", "1", "--width", "64", "--height", "64", "--frames", str(FRAMES), "--steps", "1"]
    assert main(args) == 2
    assert "trained with recipe.audio condition" in capsys.readouterr().err and not out.exists()
    assert main([*args, "--data", str(av_cache[1])]) == 0
    check_sound(out, cells=1)
    assert len(decoded) == 1 and torch.equal(decoded[0], CachedData(av_cache[1])[0].audio)


def test_sweep_refuses_loras_of_different_audio_modes(av_cache, runs, tmp_path, capsys):
    files = [str(runs["gen"][0] / "gen_step_00002.safetensors"), str(runs["cond"][0] / "cond_step_00002.safetensors")]
    assert main(["sweep", *files, "--checkpoint", str(av_cache[0]), "--data", str(av_cache[1]),
                 "--out", str(tmp_path / "g.mp4")]) == 2
    err = capsys.readouterr().err
    assert "different recipe.audio modes (gen_step_00002.safetensors: generate, cond_step_00002.safetensors: " \
        "condition)" in err


def test_sampler_holds_conditioning_audio_and_generates_the_tail(av_cache):
    """sample_av: the conditioned steps stay the clip's latent exactly; steps past a shorter clip are generated."""
    from trainer_core.ltxcore.backbone import LtxCoreBackbone
    from trainer_core.sampling import AudioPlan, sample_av, sample_video

    backbone = LtxCoreBackbone.from_checkpoint(av_cache[0], dtype=torch.float32, device="cpu")
    text = backbone.prepare_text(CachedData(av_cache[1])[0].text.float())
    clip = torch.randn(8, 5, 16, generator=torch.Generator().manual_seed(1))
    shape = (128, 3, 2, 2)
    video, audio = sample_av(backbone, text, shape, 24.0, 3, torch.Generator().manual_seed(0),
                             audio=AudioPlan(9, clip))
    assert audio is not None and tuple(audio.shape) == (1, 8, 9, 16)
    assert torch.equal(audio[0, :, :5], clip)
    g = torch.Generator().manual_seed(0)
    torch.randn(1, *shape, generator=g)  # the video's noise is drawn first
    tail_noise = torch.randn(1, 8, 9, 16, generator=g)[..., 5:, :]
    assert (audio[..., 5:, :] - tail_noise).abs().max() > 1e-3  # the tail was denoised, not left as noise
    # Audio changes the video (joint attention); without it the sampler is the video-only one.
    alone = sample_video(backbone, text, shape, 24.0, 3, torch.Generator().manual_seed(0))
    assert torch.equal(sample_av(backbone, text, shape, 24.0, 3, torch.Generator().manual_seed(0))[0], alone)
    assert (video - alone).abs().max() > 1e-6


@pytest.mark.parametrize("frames", [3, 2])
def test_sampler_holds_a_conditioning_video_and_generates_the_audio(av_cache, frames):
    """sample_av with a video condition (video-to-audio): the sampled video latent is the clip's exactly (a tail past
    a shorter clip is generated); the audio is denoised from noise and differs from seed to seed."""
    from trainer_core.ltxcore.backbone import LtxCoreBackbone
    from trainer_core.sampling import AudioPlan, sample_av

    backbone = LtxCoreBackbone.from_checkpoint(av_cache[0], dtype=torch.float32, device="cpu")
    text = backbone.prepare_text(CachedData(av_cache[1])[0].text.float())
    clip = torch.randn(128, frames, 2, 2, generator=torch.Generator().manual_seed(1))
    shape = (128, 3, 2, 2)

    def sample(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        video, audio = sample_av(backbone, text, shape, 24.0, 3, torch.Generator().manual_seed(seed),
                                 audio=AudioPlan(9), video=clip)
        assert audio is not None
        return video, audio

    video, audio = sample(0)
    assert torch.equal(video[0, :, :frames], clip)
    if frames < 3:
        g = torch.Generator().manual_seed(0)
        tail_noise = torch.randn(1, *shape, generator=g)[:, :, frames:]
        assert (video[:, :, frames:] - tail_noise).abs().max() > 1e-3  # denoised, not left as noise
    assert tuple(audio.shape) == (1, 8, 9, 16) and audio.abs().max() > 1e-2
    other_video, other_audio = sample(1)
    assert torch.equal(other_video[0, :, :frames], clip) and (other_audio - audio).abs().max() > 1e-3
    with pytest.raises(ValueError, match="does not fit"):  # another height and width than the preview's
        sample_av(backbone, text, (128, 3, 3, 2), 24.0, 1, torch.Generator(), audio=AudioPlan(9), video=clip)


def test_video_condition_run_previews_show_the_clips_video_with_generated_sound(av_cache, tmp_path, monkeypatch):
    """recipe.video condition: preview i decodes training clip i's cached video latent exactly (at the clip's size,
    not preview.width x height) and the audio it decodes into the mp4's sound is generated, not a clip's."""
    audio_seen = DecodeSpy(monkeypatch).seen
    video_seen = DecodeSpy(monkeypatch, LtxCoreVae).seen
    run = train(tmp_path, av_cache, "v2a", "generate", video="condition", size=(128, 96))
    check_sound(run / "previews" / "v2a_step_00002.mp4", cells=2)
    data = CachedData(av_cache[1])
    assert len(video_seen) == 2 and all(torch.equal(video_seen[i], data[i].video) for i in range(2))
    assert len(audio_seen) == 2 and all(x.abs().max() > 1e-2 for x in audio_seen)
    assert not any(torch.equal(x, data[i].audio) for i in range(2) for x in audio_seen)


@pytest.mark.parametrize("audio", ["generate", "condition", "off"])
def test_runs_that_generate_video_still_sample_it(av_cache, tmp_path, monkeypatch, audio):
    """Audio+video, audio-to-video and video-only runs: the previews' video is sampled at the preview's size."""
    seen = DecodeSpy(monkeypatch, LtxCoreVae).seen
    train(tmp_path, av_cache, audio, audio, size=(128, 96))
    assert len(seen) == 2 and all(tuple(x.shape) == (128, 3, 3, 4) for x in seen)
