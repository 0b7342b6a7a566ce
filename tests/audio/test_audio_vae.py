"""The audio VAE of the tiny checkpoint: its layout, ComfyUI's stock audio nodes on it, and the two AudioEncoders
(ComfyUI's loaded VAE and ltx-core headless) agreeing with each other and with stock LTXV Audio VAE Encode."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors import safe_open

from trainer_core.cache.encoders import CacheError, audio_latent_shape

pytest.importorskip("ltx_core", reason="ltx-core (optional dependency) builds the tiny checkpoint")

from trainer_core.ltxcore.encoders import LtxCoreAudioVae
from trainer_core.ltxcore.tiny import tiny_config, write_tiny_checkpoint


@pytest.fixture(scope="module")
def tiny_audio(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_audio")
    return write_tiny_checkpoint(folder / "tiny_audio.safetensors", audio_vae=True, seed=3)


@pytest.fixture(scope="module")
def headless(tiny_audio):
    return LtxCoreAudioVae(tiny_audio, decoder=True)


@pytest.fixture(scope="module")
def stock_vae(comfy, tiny_audio):
    """The checkpoint loaded by ComfyUI's stock Load LTXV Audio VAE node, from its checkpoints folder."""
    import folder_paths
    from comfy_extras.nodes_lt_audio import LTXVAudioVAELoader

    folder_paths.add_model_folder_path("checkpoints", str(tiny_audio.parent))
    return LTXVAudioVAELoader.execute(ckpt_name=tiny_audio.name).result[0]


def _wave(samples: int, rate: int = 16000, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / rate
    tone = torch.stack([torch.sin(2 * math.pi * 330 * t), 0.5 * torch.sin(2 * math.pi * 1200 * t)])
    return 0.4 * tone + 0.05 * torch.randn(2, samples, generator=g)


def test_tiny_audio_layout(tiny_audio):
    with safe_open(str(tiny_audio), framework="pt") as f:
        keys, config = set(f.keys()), json.loads(f.metadata()["config"])
    assert config == tiny_config(audio_vae=True)
    assert {"audio_vae", "vocoder"} <= set(config)
    assert any(k.startswith("audio_vae.encoder.") for k in keys)
    assert any(k.startswith("audio_vae.decoder.") for k in keys)
    assert {"audio_vae.per_channel_statistics.mean-of-means", "audio_vae.per_channel_statistics.std-of-means"} <= keys
    assert "vocoder.resblocks.0.convs1.0.weight" in keys  # what ComfyUI's VAE detection looks for
    assert tiny_audio.stat().st_size < 40e6


@pytest.mark.parametrize("seconds", [1.0, 0.7715, 0.3])
def test_headless_latent_shape(headless, seconds):
    samples = round(seconds * 16000)
    latent = headless.encode(_wave(samples))
    assert tuple(latent.shape) == audio_latent_shape(samples) == (8, round(seconds * 25), 16)
    assert latent.dtype == torch.float32 and torch.isfinite(latent).all()


def test_headless_rejects_mono_and_missing_audio_vae(headless, tmp_path):
    with pytest.raises(CacheError, match=r"\[2, samples\]"):
        headless.encode(torch.zeros(1, 16000))
    plain = write_tiny_checkpoint(tmp_path / "video_only.safetensors")
    with pytest.raises(CacheError, match="no audio VAE"):
        LtxCoreAudioVae(plain)


def test_headless_decoder_gives_stereo_24khz(headless):
    latent = headless.encode(_wave(16000))
    audio = headless.decode(latent)
    assert headless.sample_rate == 24000
    assert audio.shape[0] == 2 and audio.shape[1] > 0.9 * 24000


def test_stock_nodes_run_on_tiny_audio_vae(stock_vae):
    from comfy_extras.nodes_lt_audio import LTXVAudioVAEDecode, LTXVAudioVAEEncode

    latent = LTXVAudioVAEEncode.execute(audio={"waveform": _wave(16000)[None], "sample_rate": 16000},
                                        audio_vae=stock_vae).result[0]
    # Stock encode resamples to 44.1 kHz (44100 samples), crops to a multiple of 4096 (40960), resamples back to
    # 16 kHz (14860) and encodes 14860 // 160 + 1 = 93 mel frames into (93 - 1) // 4 + 1 = 24 latents.
    assert latent["samples"].shape[1:] == (8, 24, 16)
    audio = LTXVAudioVAEDecode.execute(samples=latent, audio_vae=stock_vae).result[0]
    assert audio["sample_rate"] == 24000 and audio["waveform"].shape[:2] == (1, 2)


def test_comfy_wrapper_equals_stock_encode_and_headless(stock_vae, headless):
    import torchaudio.functional as taf
    from comfy_extras.nodes_lt_audio import LTXVAudioVAEEncode

    from trainer_core.comfy.cache_encoders import ComfyAudioVae

    wrapper = ComfyAudioVae(stock_vae)
    # Stock encode resamples anything to 44.1 kHz, crops it to a multiple of 4096 samples and resamples to 16 kHz;
    # given 11 x 4096 samples at 44.1 kHz it does only the last step, which is the 16 kHz waveform the wrapper gets.
    wave44 = _wave(11 * 4096, rate=44100, seed=1)
    stock = LTXVAudioVAEEncode.execute(audio={"waveform": wave44[None], "sample_rate": 44100},
                                       audio_vae=stock_vae).result[0]["samples"][0]
    wave16 = taf.resample(wave44, 44100, 16000)
    ours = wrapper.encode(wave16)
    assert wave16.shape[1] == 16347 and ours.shape == (8, 26, 16) and stock.shape[1] == 26
    torch.testing.assert_close(ours, stock.float(), atol=1e-5, rtol=0)
    torch.testing.assert_close(ours, headless.encode(wave16), atol=1e-4, rtol=0)
    assert wrapper.identity() == headless.identity()
    for samples in (12345, 4800):
        wave = _wave(samples, seed=samples)
        torch.testing.assert_close(wrapper.encode(wave), headless.encode(wave), atol=1e-4, rtol=0)
    decoded = wrapper.decode(ours)
    assert wrapper.sample_rate == 24000 and decoded.shape[0] == 2
    torch.testing.assert_close(decoded, headless.decode(ours), atol=1e-4, rtol=0)


def test_comfy_wrapper_refuses_the_video_vae(comfy, tiny_audio):
    import comfy.sd
    import comfy.utils

    from trainer_core.comfy.cache_encoders import ComfyAudioVae

    sd, metadata = comfy.utils.load_torch_file(str(tiny_audio), return_metadata=True)
    video_vae = comfy.sd.VAE(sd=comfy.utils.state_dict_prefix_replace(sd, {"vae.": ""}, filter_keys=True),
                             metadata=metadata)
    with pytest.raises(CacheError, match="Load LTXV Audio VAE"):
        ComfyAudioVae(video_vae)
