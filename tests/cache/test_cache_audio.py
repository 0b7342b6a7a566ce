"""Audio in the latent cache: each clip's audio of exactly its kept frames' window is encoded beside the video
latent, clips without an audio track (and stills) are recorded without audio, re-runs are incremental per
modality, turning audio off or on never re-encodes video, and batches never mix audio and non-audio clips.

The writer is tested here with a small deterministic audio encoder (a fixed random projection of each 40 ms
of waveform); the real audio VAEs (ComfyUI's and ltx-core's) are tested end to end in ``test_cache_audio_e2e``.
"""

from __future__ import annotations

import pathlib

import pytest
import torch

from tests.dataset_media import write_image, write_video
from trainer_core.cache import CachedData, CacheError, build_cache
from trainer_core.cache.encoders import AUDIO_FAMILY, audio_frames, weights_identity
from trainer_core.cache.manifest import Manifest
from trainer_core.cache.standin_text import StandinTextEncoder
from trainer_core.config.dataset import DatasetConfig
from trainer_core.dataset import load_dataset
from trainer_core.dataset.media import read_audio_window
from trainer_core.engine.data import epoch_batches

BUCKETS = "64x64x17;64x64x9;64x64x1"
SAMPLES_PER_LATENT = 640  # 16 kHz / 25 latents per second


class ProjectionAudioEncoder:
    """A deterministic stand-in for LTX-2.x's audio VAE: ``[2, S]`` -> ``[8, round(S / 640), 16]``."""

    family = AUDIO_FAMILY

    def __init__(self, seed: int = 0) -> None:
        self.weight = torch.randn(2 * SAMPLES_PER_LATENT, 8 * 16, generator=torch.Generator().manual_seed(seed))
        self.calls = 0

    def identity(self) -> str:
        return weights_identity([("weight", self.weight)])

    def encode(self, waveform: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        assert waveform.dtype == torch.float32 and waveform.shape[0] == 2
        t = audio_frames(waveform.shape[-1])
        padded = torch.nn.functional.pad(waveform, (0, max(0, t * SAMPLES_PER_LATENT - waveform.shape[-1])))
        chunks = padded[:, : t * SAMPLES_PER_LATENT].reshape(2, t, SAMPLES_PER_LATENT).permute(1, 0, 2)
        return (chunks.reshape(t, -1) @ self.weight).reshape(t, 8, 16).permute(1, 0, 2).contiguous()


class FlatVideoEncoder:
    """Average-pools frames into the LTX latent shape (the video side is not what these tests are about)."""

    family = "ltx-2.x-video-vae"

    def identity(self) -> str:
        return "flat-video"

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        f, h, w, _ = frames.shape
        x = frames.permute(3, 0, 1, 2).mean(0, keepdim=True)  # [1, F, H, W]
        x = torch.nn.functional.adaptive_avg_pool3d(x, ((f - 1) // 8 + 1, h // 32, w // 32))
        return x.repeat(128, 1, 1, 1)


@pytest.fixture
def ds_root(tmp_path) -> pathlib.Path:
    """Two same-shape clips with an audio track, one without, a still; captions for all."""
    root = tmp_path / "ds"
    root.mkdir()
    write_video(root / "talk.mp4", frames=30, size=(96, 64), audio=True)  # trimmed from the centre: frames 6-22
    write_video(root / "sing.mp4", frames=20, size=(96, 64), audio=True)
    write_video(root / "mute.mp4", frames=24, size=(96, 64))
    write_image(root / "still.png")
    for name in ("talk", "sing", "mute", "still"):
        (root / f"{name}.txt").write_text(f"a {name} clip")
    return root


def load(root: pathlib.Path, **kwargs):
    return load_dataset(DatasetConfig(path=str(root), buckets=BUCKETS, trim_start="center", **kwargs))


def build(root, folder, audio=None, **kwargs):
    return build_cache(load(root).items, folder, FlatVideoEncoder(), StandinTextEncoder(64), audio=audio, **kwargs)


def test_audio_of_the_kept_window_is_cached_beside_the_video(ds_root, tmp_path):
    enc = ProjectionAudioEncoder()
    report = build(ds_root, tmp_path / "c", enc)
    assert sorted(report.encoded_audio) == ["sing.mp4", "talk.mp4"]
    assert "2 clips with audio, 2 without an audio track (1 of them stills)" in report.summary()
    data = CachedData(tmp_path / "c")
    assert data.model["audio_vae"] == enc.identity() and data.audio_count() == 2
    items = {i.id: i for i in load(ds_root).items}
    talk = items["talk.mp4"]
    assert talk.plan.start_frame == 6 and talk.bucket.frames == 17 and talk.fps == 24.0
    window = (talk.info.start_time + 6 / 24, 17 / 24)
    sample = data[data.index_of("talk.mp4")]
    assert tuple(sample.audio.shape) == (8, round(17 / 24 * 25), 16)
    expected = enc.encode(torch.from_numpy(read_audio_window(talk.source, *window).waveform))
    assert torch.equal(sample.audio, expected)
    assert data.shape_of(data.index_of("talk.mp4")) == (*sample.video.shape, 8, 18, 16)
    for item_id in ("mute.mp4", "still.png"):
        record = data.manifest.items[item_id]
        assert record.audio_shape is None and record.audio is None and record.audio_vae == enc.identity()
        assert data[data.index_of(item_id)].audio is None
    assert data.verify() == []
    assert len(list((tmp_path / "c" / "audio").glob("*.safetensors"))) == 2


def test_rerun_is_incremental_and_a_new_audio_vae_reencodes_only_audio(ds_root, tmp_path):
    enc = ProjectionAudioEncoder()
    build(ds_root, tmp_path / "c", enc)
    fingerprint = CachedData(tmp_path / "c").fingerprint
    calls = enc.calls
    again = build(ds_root, tmp_path / "c", enc)
    assert again.encoded_latents == again.encoded_audio == [] and len(again.skipped) == 4 and enc.calls == calls
    assert CachedData(tmp_path / "c").fingerprint == fingerprint
    other = ProjectionAudioEncoder(seed=1)
    report = build(ds_root, tmp_path / "c", other)
    assert report.encoded_latents == [] and sorted(report.encoded_audio) == ["sing.mp4", "talk.mp4"]
    data = CachedData(tmp_path / "c")
    assert data.model["audio_vae"] == other.identity() and data.fingerprint != fingerprint
    talk = next(i for i in load(ds_root).items if i.id == "talk.mp4")
    waveform = torch.from_numpy(read_audio_window(talk.source, talk.plan.start_time, 17 / 24).waveform)
    assert torch.equal(data[data.index_of("talk.mp4")].audio, other.encode(waveform))
    assert len(list((tmp_path / "c" / "audio").glob("*"))) == 2  # the first VAE's files are collected


def test_audio_off_then_on_keeps_the_video_latents(ds_root, tmp_path):
    """A cache built with audio and re-run without (no audio VAE, or skip_audio) holds what was asked for: no
    audio. Its video latents stay; turning audio back on encodes only the audio."""
    enc = ProjectionAudioEncoder()
    build(ds_root, tmp_path / "c", enc)
    with_audio = CachedData(tmp_path / "c").fingerprint
    latents = {r.id: r.latent for r in Manifest.load(tmp_path / "c").items.values()}

    report = build(ds_root, tmp_path / "c")
    assert report.encoded_latents == [] and "no audio: no audio VAE given" in report.summary()
    data = CachedData(tmp_path / "c")
    assert data.model["audio_vae"] is None and data.audio_count() == 0 and data.fingerprint != with_audio
    assert all(data[i].audio is None for i in range(len(data)))
    assert not list((tmp_path / "c" / "audio").glob("*"))
    assert {r.id: r.latent for r in data.records} == latents

    report = build(ds_root, tmp_path / "c", enc, skip_audio=True)
    assert report.encoded_latents == report.encoded_audio == [] and "no audio: skip_audio is set" in report.summary()
    assert CachedData(tmp_path / "c").audio_count() == 0

    report = build(ds_root, tmp_path / "c", enc)
    assert report.encoded_latents == [] and sorted(report.encoded_audio) == ["sing.mp4", "talk.mp4"]
    data = CachedData(tmp_path / "c")
    assert data.fingerprint == with_audio and {r.id: r.latent for r in data.records} == latents


def test_batches_never_mix_audio_and_silent_clips(ds_root, tmp_path):
    build(ds_root, tmp_path / "c", ProjectionAudioEncoder())
    data = CachedData(tmp_path / "c")
    video_shapes = {data.records[i].id: tuple(data.records[i].latent_shape) for i in range(len(data))}
    assert video_shapes["talk.mp4"] == video_shapes["mute.mp4"]  # same bucket and rate, one with audio
    for epoch in range(4):
        for batch in epoch_batches(data, batch_size=4, seed=0, epoch=epoch):
            assert len({data[i].audio is None for i in batch}) == 1
            assert len({data.shape_of(i) for i in batch}) == 1
    batches = epoch_batches(data, batch_size=4, seed=0, epoch=0)
    assert sorted(sorted(data.records[i].id for i in b) for b in batches) == [
        ["mute.mp4"], ["sing.mp4", "talk.mp4"], ["still.png"]
    ]


def test_interrupted_run_and_missing_audio_file(ds_root, tmp_path):
    def stop_at_second(done, total, item_id):
        if done == 1:
            raise KeyboardInterrupt

    enc = ProjectionAudioEncoder()
    with pytest.raises(KeyboardInterrupt):
        build(ds_root, tmp_path / "c", enc, on_progress=stop_at_second)
    assert len(CachedData(tmp_path / "c")) == 1
    report = build(ds_root, tmp_path / "c", enc)
    assert len(report.skipped) == 1 and len(report.encoded_latents) == 3
    talk = Manifest.load(tmp_path / "c").items["talk.mp4"]
    (tmp_path / "c" / talk.audio).unlink()
    with pytest.raises(CacheError, match=r"(?s)missing or damaged.*audio/talk"):
        CachedData(tmp_path / "c")
    report = build(ds_root, tmp_path / "c", enc)
    assert report.encoded_latents == [] and report.encoded_audio == ["talk.mp4"]
    assert CachedData(tmp_path / "c").audio_count() == 2


def test_an_audio_encoder_of_the_wrong_shape_is_refused(ds_root, tmp_path):
    class Wrong(ProjectionAudioEncoder):
        def encode(self, waveform):
            return super().encode(waveform)[:, :-1]

    with pytest.raises(CacheError, match=r"audio VAE returned a latent of shape \(8, 17, 16\)"):
        build(ds_root, tmp_path / "c", Wrong())

    class Other(ProjectionAudioEncoder):
        family = "some-other-audio-vae"

    with pytest.raises(CacheError, match="expected LTX-2.x's audio VAE"):
        build(ds_root, tmp_path / "c2", Other())
