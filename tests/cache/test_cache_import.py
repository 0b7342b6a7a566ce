"""Import of ltx-trainer ``.precomputed`` folders: layouts, text-feature conversion against ltx-core's feature
extractor (the code ltx-trainer runs), incremental re-import, refusal of pickled objects, CLI."""

from __future__ import annotations

import pytest
import torch

from trainer_core.cache import CachedData, CacheError
from trainer_core.cache.ltx_trainer_import import conditions_to_comfy, find_precomputed, import_ltx_trainer
from trainer_core.cache.manifest import Manifest

SEQ, HIDDEN, LAYERS, V_DIM, A_DIM = 1024, 16, 3, 24, 8


class NotATensor:
    """Saving an instance needs full pickle, which the import must refuse."""


def feature_extractor(seed: int = 0):
    """ltx-core's LTX-2.3 feature extractor (what ltx-trainer's process_dataset.py runs) with random weights."""
    fe = pytest.importorskip("ltx_core.text_encoders.gemma.feature_extractor")
    torch.manual_seed(seed)
    return fe.FeatureExtractorV2(
        video_aggregate_embed=torch.nn.Linear(HIDDEN * LAYERS, V_DIM),
        embedding_dim=HIDDEN,
        audio_aggregate_embed=torch.nn.Linear(HIDDEN * LAYERS, A_DIM),
    )


def ltx_trainer_conditions(extractor, hidden: torch.Tensor, tokens: int) -> dict[str, torch.Tensor]:
    """The dict ltx-trainer saves: features of the left-padded 1024-token sequence and its mask."""
    mask = torch.zeros(1, SEQ, dtype=torch.long)
    mask[:, SEQ - tokens :] = 1
    padded = torch.zeros(1, SEQ, *hidden.shape[2:])
    padded[:, SEQ - tokens :] = hidden
    with torch.no_grad():
        video, audio = extractor(padded, mask, padding_side="left")
    return {"video_prompt_embeds": video[0], "audio_prompt_embeds": audio[0], "prompt_attention_mask": mask[0]}


def write_precomputed(root, items: dict[str, int], extractor, seed: int = 0):
    """A ``.precomputed`` folder as ltx-trainer writes it; returns the unpadded hidden states per item."""
    g = torch.Generator().manual_seed(seed)
    hidden = {}
    for name, tokens in items.items():
        for sub in ("latents", "conditions"):
            (root / ".precomputed" / sub / name).parent.mkdir(parents=True, exist_ok=True)
        latent = torch.randn(128, 2, 3, 4, generator=g).to(torch.bfloat16)
        torch.save({"latents": latent, "num_frames": 2, "height": 3, "width": 4, "fps": 24.0},
                   root / ".precomputed" / "latents" / f"{name}.pt")
        hidden[name] = torch.randn(1, tokens, HIDDEN, LAYERS, generator=g) * 3
        torch.save(ltx_trainer_conditions(extractor, hidden[name], tokens),
                   root / ".precomputed" / "conditions" / f"{name}.pt")
    return hidden


def test_text_conversion_equals_encoding_without_padding():
    """Stripping the padding and concatenating video|audio is exactly the unpadded projection (ComfyUI's)."""
    extractor = feature_extractor()
    hidden = torch.randn(1, 7, HIDDEN, LAYERS) * 3
    with torch.no_grad():
        video, audio = extractor(hidden, torch.ones(1, 7, dtype=torch.long))
    expected = torch.cat([video, audio], dim=-1)
    converted, family = conditions_to_comfy(ltx_trainer_conditions(extractor, hidden, 7), "fixture")
    assert family == "ltx-2.3-gemma" and converted.shape == (1, 7, V_DIM + A_DIM)
    torch.testing.assert_close(converted, expected, rtol=1e-5, atol=1e-6)
    ltx2 = {"video_prompt_embeds": video[0].repeat(2, 1), "audio_prompt_embeds": video[0].repeat(2, 1),
            "prompt_attention_mask": torch.tensor([1] * 7 + [0] * 7)}  # LTX-2: same features twice, right-padded
    converted, family = conditions_to_comfy(ltx2, "fixture")
    assert family == "ltx-2-gemma" and torch.equal(converted, video)


def test_import_folder_and_reimport(tmp_path):
    extractor = feature_extractor()
    hidden = write_precomputed(tmp_path / "ds", {"a.mp4": 5, "sub/b.mp4": 12}, extractor)
    assert find_precomputed(tmp_path / "ds") == tmp_path / "ds" / ".precomputed"
    report = import_ltx_trainer(tmp_path / "ds", tmp_path / "cache", trigger="sks")
    assert sorted(report.encoded_latents) == ["a.mp4", "sub/b.mp4"]
    data = CachedData(tmp_path / "cache")
    assert len(data) == 2 and data.trigger == "sks" and data.text_width == V_DIM + A_DIM
    sample = data[data.index_of("sub/b.mp4")]
    src = torch.load(tmp_path / "ds/.precomputed/latents/sub/b.mp4.pt", weights_only=True)
    assert torch.equal(sample.video, src["latents"].float()) and sample.frame_rate == 24.0
    with torch.no_grad():
        v, a = extractor(hidden["sub/b.mp4"], torch.ones(1, 12, dtype=torch.long))
    torch.testing.assert_close(sample.text, torch.cat([v, a], -1), rtol=1e-5, atol=1e-6)
    with pytest.raises(CacheError, match="caption dropout"):
        _ = data.empty_text
    again = import_ltx_trainer(tmp_path / "ds", tmp_path / "cache")
    assert again.encoded_latents == [] and len(again.skipped) == 2


def test_patchified_latents_and_pickled_objects(tmp_path):
    extractor = feature_extractor()
    write_precomputed(tmp_path / "ds", {"a.mp4": 3}, extractor)
    lat = tmp_path / "ds/.precomputed/latents/a.mp4.pt"
    original = torch.load(lat, weights_only=True)["latents"]
    patchified = original.permute(1, 2, 3, 0).reshape(-1, 128)
    torch.save({"latents": patchified, "num_frames": 2, "height": 3, "width": 4, "fps": 25.0}, lat)
    import_ltx_trainer(tmp_path / "ds", tmp_path / "cache")
    assert torch.equal(CachedData(tmp_path / "cache")[0].video, original.float())
    torch.save({"video_prompt_embeds": NotATensor()}, tmp_path / "ds/.precomputed/conditions/a.mp4.pt")
    with pytest.raises(CacheError, match="weights_only=True"):
        import_ltx_trainer(tmp_path / "ds", tmp_path / "cache2")
    with pytest.raises(CacheError, match="not an ltx-trainer preprocessed folder"):
        import_ltx_trainer(tmp_path, tmp_path / "cache3")


def test_cli_import(tmp_path):
    from trainer_core.cli import main

    write_precomputed(tmp_path / "ds", {"a.mp4": 4}, feature_extractor())
    out = tmp_path / "out"
    assert main(["cache", "import-ltx-trainer", str(tmp_path / "ds" / ".precomputed"), "--out", str(out)]) == 0
    assert len(CachedData(out)) == 1


def test_import_goes_through_the_cache_writers_checks(tmp_path):
    """The import shares build_cache's loop: foreign folders are refused, replaced and deleted files are
    collected, missing files are written again, an unreadable pair fails alone and is recorded."""
    extractor = feature_extractor()
    write_precomputed(tmp_path / "ds", {"a.mp4": 5, "b.mp4": 6, "c.mp4": 7}, extractor)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(CacheError, match="already holds other files"):
        import_ltx_trainer(tmp_path / "ds", mine)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]

    cache = tmp_path / "cache"
    import_ltx_trainer(tmp_path / "ds", cache)
    write_precomputed(tmp_path / "ds", {"a.mp4": 9}, extractor, seed=1)  # a changed pair: new files replace its old
    (tmp_path / "ds/.precomputed/latents/c.mp4.pt").unlink()  # c has no latent now, only conditions
    b = Manifest.load(cache).items["b.mp4"]
    (cache / b.latent).unlink()
    report = import_ltx_trainer(tmp_path / "ds", cache)
    assert sorted(report.encoded_latents) == ["a.mp4", "b.mp4"] and report.removed == ["c.mp4"]
    manifest = Manifest.load(cache)
    assert sorted(manifest.items) == ["a.mp4", "b.mp4"]
    on_disk = {p.relative_to(cache).as_posix() for p in cache.rglob("*.safetensors")}
    assert on_disk == manifest.referenced_files()  # the old files of a.mp4 and c.mp4 are gone
    assert len(CachedData(cache)) == 2

    torch.save({"latents": NotATensor()}, tmp_path / "ds/.precomputed/latents/b.mp4.pt")
    (tmp_path / "ds/.precomputed/latents/extra.mp4.pt").write_bytes(b"")  # no conditions for it
    report = import_ltx_trainer(tmp_path / "ds", cache)
    assert sorted(report.failed) == ["b.mp4", "extra.mp4"] and "weights_only=True" in report.failed["b.mp4"]
    manifest = Manifest.load(cache)
    assert sorted(manifest.items) == ["a.mp4"] and sorted(manifest.failed) == ["b.mp4", "extra.mp4"]
    assert {p.relative_to(cache).as_posix() for p in cache.rglob("*.safetensors")} == manifest.referenced_files()


def test_interrupted_import_resumes(tmp_path):
    write_precomputed(tmp_path / "ds", {"a.mp4": 3, "b.mp4": 4, "c.mp4": 5}, feature_extractor())

    def stop_at_third(done, total, item_id):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_ltx_trainer(tmp_path / "ds", tmp_path / "cache", on_progress=stop_at_third)
    assert len(CachedData(tmp_path / "cache")) == 2
    report = import_ltx_trainer(tmp_path / "ds", tmp_path / "cache")
    assert report.encoded_latents == ["c.mp4"] and len(report.skipped) == 2


def write_audio_latent(root, name: str, steps: int, seed: int = 0) -> torch.Tensor:
    """``audio_latents/<name>.pt`` as ltx-trainer's process_videos.py writes it; returns the latent."""
    latent = torch.randn(8, steps, 16, generator=torch.Generator().manual_seed(seed))
    path = root / ".precomputed" / "audio_latents" / f"{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"latents": latent, "num_time_steps": steps, "frequency_bins": 16, "duration": steps / 25}, path)
    return latent


def test_import_keeps_audio_latents(tmp_path):
    """audio_latents/ is kept beside the video latents; a clip without an audio file has no audio; batches do
    not mix them; the audio file is part of what makes an item unchanged."""
    from trainer_core.engine.data import epoch_batches

    write_precomputed(tmp_path / "ds", {"talk.mp4": 5, "sub/mute.mp4": 6, "sing.mp4": 7}, feature_extractor())
    talk = write_audio_latent(tmp_path / "ds", "talk.mp4", 18)
    sing = write_audio_latent(tmp_path / "ds", "sing.mp4", 18, seed=1)
    report = import_ltx_trainer(tmp_path / "ds", tmp_path / "cache")
    assert sorted(report.encoded_audio) == ["sing.mp4", "talk.mp4"]
    assert "2 clips with audio, 1 without an audio track" in report.summary()
    data = CachedData(tmp_path / "cache")
    assert data.model["audio_vae"] == "imported-from-ltx-trainer" and data.audio_count() == 2
    assert torch.equal(data[data.index_of("talk.mp4")].audio, talk)
    assert data.shape_of(data.index_of("sing.mp4")) == (128, 2, 3, 4, 8, 18, 16)
    mute = data.manifest.items["sub/mute.mp4"]
    assert mute.audio_shape is None and data[data.index_of("sub/mute.mp4")].audio is None
    for epoch in range(3):
        for batch in epoch_batches(data, batch_size=3, seed=0, epoch=epoch):
            assert len({data[i].audio is None for i in batch}) == 1
    fingerprint = data.fingerprint

    again = import_ltx_trainer(tmp_path / "ds", tmp_path / "cache")
    assert again.encoded_latents == again.encoded_audio == [] and len(again.skipped) == 3
    write_audio_latent(tmp_path / "ds", "sing.mp4", 18, seed=2)  # a changed audio file re-imports its item
    (tmp_path / "ds/.precomputed/audio_latents/talk.mp4.pt").unlink()  # and a removed one
    report = import_ltx_trainer(tmp_path / "ds", tmp_path / "cache")
    assert sorted(report.encoded_audio) == ["sing.mp4"] and sorted(report.encoded_latents) == ["sing.mp4", "talk.mp4"]
    data = CachedData(tmp_path / "cache")
    assert data.audio_count() == 1 and data.fingerprint != fingerprint
    assert not torch.equal(data[data.index_of("sing.mp4")].audio, sing)
    assert {p.relative_to(tmp_path / "cache").as_posix() for p in (tmp_path / "cache").rglob("*.safetensors")} == (
        data.manifest.referenced_files()
    )


def test_import_audio_forms_and_no_audio_folder(tmp_path):
    write_precomputed(tmp_path / "ds", {"a.mp4": 3, "b.mp4": 4}, feature_extractor())
    report = import_ltx_trainer(tmp_path / "ds", tmp_path / "cache")
    assert "no audio: " in report.summary() and "no audio_latents/" in report.summary()
    assert CachedData(tmp_path / "cache").model["audio_vae"] is None

    latent = write_audio_latent(tmp_path / "ds", "a.mp4", 7)
    path = tmp_path / "ds/.precomputed/audio_latents/a.mp4.pt"
    patchified = latent.permute(1, 0, 2).reshape(7, 128)  # ltx-trainer's "c t f -> t (c f)"
    torch.save({"latents": patchified, "num_time_steps": 7, "frequency_bins": 16, "duration": 0.28}, path)
    report = import_ltx_trainer(tmp_path / "ds", tmp_path / "cache")
    assert report.encoded_audio == ["a.mp4"] and "1 clips with audio, 1 without an audio track" in report.summary()
    assert torch.equal(CachedData(tmp_path / "cache")[0].audio, latent)

    torch.save({"latents": torch.zeros(4, 7, 16)}, path)
    report = import_ltx_trainer(tmp_path / "ds", tmp_path / "cache")
    assert list(report.failed) == ["a.mp4"] and "expected [8, T, 16]" in report.failed["a.mp4"]
