"""Latent cache on CPU with ltx-core's tiny VAE and the stand-in text encoder: encode, incremental re-runs,
invalidation, resume, missing/unreadable files, full disk, foreign folders, decode preview, CLI."""

from __future__ import annotations

import errno
import json
import pathlib

import pytest
import torch

from tests.dataset_media import write_image, write_video
from trainer_core.atomic import DiskWriteError
from trainer_core.cache import CachedData, CacheError, build_cache
from trainer_core.cache.encoders import latent_shape
from trainer_core.cache.manifest import Manifest
from trainer_core.cache.preview import decode_items
from trainer_core.cache.settings import parse_items, resolve_folder
from trainer_core.cache.standin_text import StandinTextEncoder, text_width_for
from trainer_core.config.dataset import DatasetConfig
from trainer_core.dataset import load_dataset
from trainer_core.ltxcore.model import read_checkpoint_config

pytest.importorskip("ltx_core", reason="ltx-core (optional dependency) builds the tiny VAE")

from trainer_core.ltxcore.encoders import LtxCoreVae
from trainer_core.ltxcore.tiny import write_tiny_checkpoint

BUCKETS = "64x64x17;64x64x9;64x64x1;64x96x17"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    return write_tiny_checkpoint(root / "a.safetensors", seed=0), write_tiny_checkpoint(root / "b.safetensors", seed=1)


@pytest.fixture(scope="module")
def vae(checkpoints):
    return LtxCoreVae(checkpoints[0])


@pytest.fixture(scope="module")
def text(checkpoints):
    return StandinTextEncoder(text_width_for(read_checkpoint_config(checkpoints[0])))


def make_dataset(root: pathlib.Path) -> pathlib.Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, (frames, size) in enumerate([(20, (96, 64)), (12, (80, 64)), (30, (64, 96))]):
        write_video(root / f"clip{i}.mp4", frames=frames, size=size)
        (root / f"clip{i}.txt").write_text(f"a grey clip number {i}")
    write_image(root / "still.png")
    (root / "still.txt").write_text("a still image")
    return root


def load(root: pathlib.Path):
    return load_dataset(DatasetConfig(path=str(root), trigger="sks", buckets=BUCKETS))


@pytest.fixture
def ds_root(tmp_path):
    return make_dataset(tmp_path / "ds")


def mtimes(folder: pathlib.Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*.safetensors")}


def test_encode_matches_encoders_and_reads_back(ds_root, tmp_path, vae, text):
    ds = load(ds_root)
    assert len(ds.items) == 4, ds.excluded
    report = build_cache(ds.items, tmp_path / "c", vae, text, trigger="sks")
    assert sorted(report.encoded_latents) == sorted(i.id for i in ds.items)
    data = CachedData(tmp_path / "c")
    assert len(data) == 4 and data.trigger == "sks"
    for item in ds.items:
        sample = data[data.index_of(item.id)]
        b = item.bucket
        assert tuple(sample.video.shape) == latent_shape(b.frames, b.height, b.width)
        assert data.shape_of(data.index_of(item.id)) == tuple(sample.video.shape)
        torch.testing.assert_close(sample.video, vae.encode(item.load_frames()))
        assert sample.caption.startswith("sks ") and torch.equal(sample.text, text.encode(item.caption))
        assert sample.frame_rate == (item.fps or 25.0)
    torch.testing.assert_close(data.empty_text, text.encode(""))
    rec = data.manifest.items["clip0.mp4"]
    assert rec.source_size == (ds_root / "clip0.mp4").stat().st_size and len(rec.source_sha256) == 64
    assert rec.prep == ds.items[0].plan.as_dict() and rec.vae == vae.identity()
    assert rec.text_encoder == text.identity() and rec.trigger == "sks"
    assert data.verify() == []
    assert not list((tmp_path / "c").rglob("*.tmp"))


def test_rerun_skips_everything(ds_root, tmp_path, vae, text):
    build_cache(load(ds_root).items, tmp_path / "c", vae, text)
    before, fp = mtimes(tmp_path / "c"), CachedData(tmp_path / "c").fingerprint
    report = build_cache(load(ds_root).items, tmp_path / "c", vae, text)
    assert report.encoded_latents == [] and report.encoded_texts == [] and len(report.skipped) == 4
    assert mtimes(tmp_path / "c") == before and CachedData(tmp_path / "c").fingerprint == fp


def test_changed_caption_reencodes_only_that_caption(ds_root, tmp_path, vae, text):
    build_cache(load(ds_root).items, tmp_path / "c", vae, text)
    fp = CachedData(tmp_path / "c").fingerprint
    (ds_root / "clip1.txt").write_text("a different caption")
    report = build_cache(load(ds_root).items, tmp_path / "c", vae, text)
    assert report.encoded_latents == [] and report.encoded_texts == ["sks a different caption"]
    data = CachedData(tmp_path / "c")
    assert data.fingerprint != fp
    assert torch.equal(data[data.index_of("clip1.mp4")].text, text.encode("sks a different caption"))
    assert len(list((tmp_path / "c" / "text").glob("*.safetensors"))) == 5  # old caption's file collected


def test_changed_vae_invalidates_every_latent(ds_root, tmp_path, vae, text, checkpoints):
    build_cache(load(ds_root).items, tmp_path / "c", vae, text)
    other = LtxCoreVae(checkpoints[1], decoder=False)
    assert other.identity() != vae.identity()
    report = build_cache(load(ds_root).items, tmp_path / "c", other, text)
    assert len(report.encoded_latents) == 4 and report.encoded_texts == []
    data = CachedData(tmp_path / "c")
    assert data.model["vae"] == other.identity()
    item = load(ds_root).items[0]
    torch.testing.assert_close(data[data.index_of(item.id)].video, other.encode(item.load_frames()))


def test_changed_source_reencodes_it_and_touch_does_not(ds_root, tmp_path, vae, text):
    build_cache(load(ds_root).items, tmp_path / "c", vae, text)
    clip = ds_root / "clip2.mp4"
    clip.touch()  # same bytes, new mtime: hashed again, not re-encoded
    report = build_cache(load(ds_root).items, tmp_path / "c", vae, text)
    assert report.encoded_latents == []
    write_video(clip, frames=30, size=(64, 96), fps=12)
    report = build_cache(load(ds_root).items, tmp_path / "c", vae, text)
    assert report.encoded_latents == ["clip2.mp4"]


def test_changed_preparation_reencodes(ds_root, tmp_path, vae, text):
    build_cache(load(ds_root).items, tmp_path / "c", vae, text)
    ds = load_dataset(DatasetConfig(path=str(ds_root), buckets="64x64x9;64x64x1"))
    report = build_cache(ds.items, tmp_path / "c", vae, text)
    assert sorted(report.encoded_latents) == ["clip0.mp4", "clip2.mp4"]  # 17-frame clips now use 9 frames


def test_interrupted_run_resumes(ds_root, tmp_path, vae, text):
    def stop_at_third(done, total, item_id):
        if done == 2:
            raise KeyboardInterrupt

    items = load(ds_root).items
    with pytest.raises(KeyboardInterrupt):
        build_cache(items, tmp_path / "c", vae, text, on_progress=stop_at_third)
    partial = CachedData(tmp_path / "c")
    assert len(partial) == 2
    report = build_cache(load(ds_root).items, tmp_path / "c", vae, text)
    assert len(report.encoded_latents) == 2 and len(report.skipped) == 2
    assert len(CachedData(tmp_path / "c")) == 4


def test_missing_file_is_reported_then_reencoded(ds_root, tmp_path, vae, text):
    build_cache(load(ds_root).items, tmp_path / "c", vae, text)
    rec = Manifest.load(tmp_path / "c").items["clip0.mp4"]
    (tmp_path / "c" / rec.latent).unlink()
    with pytest.raises(CacheError, match=r"(?s)missing or damaged.*latents/clip0"):
        CachedData(tmp_path / "c")
    report = build_cache(load(ds_root).items, tmp_path / "c", vae, text)
    assert report.encoded_latents == ["clip0.mp4"]
    assert len(CachedData(tmp_path / "c")) == 4


def test_unreadable_item_fails_alone(ds_root, tmp_path, vae, text):
    items = load(ds_root).items
    (ds_root / "clip1.mp4").write_bytes(b"not a video at all")
    report = build_cache(items, tmp_path / "c", vae, text)
    assert list(report.failed) == ["clip1.mp4"]
    data = CachedData(tmp_path / "c")
    assert len(data) == 3 and "clip1.mp4" in data.manifest.failed
    with pytest.raises(CacheError, match="no item"):
        data.index_of("clip1.mp4")


def test_full_disk_stops_cleanly(ds_root, tmp_path, vae, text, monkeypatch):
    items = load(ds_root).items
    real = pathlib.Path.write_bytes
    written = []

    def write_bytes(self, data):
        if "latents" in str(self) and len(written) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        if "latents" in str(self):
            written.append(self)
        return real(self, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", write_bytes)
    with pytest.raises(DiskWriteError, match="No space left"):
        build_cache(items, tmp_path / "c", vae, text)
    monkeypatch.undo()
    assert not list((tmp_path / "c").rglob("*.tmp"))
    assert len(CachedData(tmp_path / "c")) == 2  # the two finished items are valid, nothing half-written


def test_foreign_folders_are_refused(ds_root, tmp_path, vae, text):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(CacheError, match="already holds other files"):
        build_cache(load(ds_root).items, other, vae, text)
    build_cache(load(ds_root).items, tmp_path / "c", vae, text)
    with pytest.raises(CacheError, match=r"another model.*text_width"):
        build_cache(load(ds_root).items, tmp_path / "c", vae, StandinTextEncoder(32))
    (tmp_path / "c" / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CacheError, match="not a latent cache"):
        CachedData(tmp_path / "c")
    with pytest.raises(CacheError, match="no manifest"):
        CachedData(tmp_path / "mine")


def test_decode_preview_frames(ds_root, tmp_path, vae, text):
    build_cache(load(ds_root).items, tmp_path / "c", vae, text)
    data = CachedData(tmp_path / "c")
    ids = [r.id for r in data.records]
    indices = parse_items("clip0.mp4, 1", ids)
    assert indices == [0, 1]
    frames, note = decode_items(data, vae, indices)
    assert tuple(frames.shape) == (17 + 9, 64, 64, 3) and frames.min() >= 0 and frames.max() <= 1
    assert "clip0.mp4" in note and "not the one" not in note
    with pytest.raises(CacheError, match="different resolutions"):
        decode_items(data, vae, parse_items("clip0.mp4, clip2.mp4", ids))
    frames, _ = decode_items(data, vae, parse_items("clip2.mp4", ids))
    assert tuple(frames.shape) == (17, 96, 64, 3)
    with pytest.raises(CacheError, match="does not exist"):
        parse_items("9", ids)


def test_resolve_folder(tmp_path):
    assert resolve_folder("a/b", tmp_path) == tmp_path / "a" / "b"
    assert resolve_folder(str(tmp_path / "x"), "/elsewhere") == tmp_path / "x"
    with pytest.raises(CacheError, match="empty"):
        resolve_folder(" ", tmp_path)


def test_cli_cache(ds_root, tmp_path, checkpoints):
    from trainer_core.cli import main

    out = tmp_path / "cli"
    args = ["cache", str(ds_root), "--checkpoint", str(checkpoints[0]), "--out", str(out), "--buckets", BUCKETS]
    assert main(args) == 0
    assert len(CachedData(out)) == 4
    assert main(["cache", str(ds_root), "--out", str(out)]) == 2  # no checkpoint: clear error, exit 2
