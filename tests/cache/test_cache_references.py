"""IC-LoRA data: reference (control) videos from a manifest column or a references folder, cut with their clip's
frames at bucket / reference_downscale_factor, encoded by the same VAE into the cache, and imported from
ltx-trainer's ``reference_latents/``."""

from __future__ import annotations

import json
import pathlib

import pytest
import torch

from tests.dataset_media import write_inverted_copy, write_video
from trainer_core.cache import CachedData, CacheError, build_cache
from trainer_core.cache.ltx_trainer_import import import_ltx_trainer
from trainer_core.cache.standin_text import StandinTextEncoder, text_width_for
from trainer_core.config import ConfigError, parse_section
from trainer_core.config.dataset import DatasetConfig
from trainer_core.dataset import load_dataset, report_text
from trainer_core.engine.data import epoch_batches
from trainer_core.ltxcore.model import read_checkpoint_config

pytest.importorskip("ltx_core", reason="ltx-core (optional dependency) builds the tiny VAE")

from trainer_core.ltxcore.encoders import LtxCoreVae
from trainer_core.ltxcore.tiny import write_tiny_checkpoint

BUCKETS = "64x64x17;64x64x9"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", seed=0)


@pytest.fixture(scope="module")
def vae(checkpoint):
    return LtxCoreVae(checkpoint)


@pytest.fixture(scope="module")
def text(checkpoint):
    return StandinTextEncoder(text_width_for(read_checkpoint_config(checkpoint)))


def control_dataset(root: pathlib.Path, rows: list[dict] | None = None) -> pathlib.Path:
    """clip0 (20 frames, 96x64) and clip1 (12 frames, 80x64) with colour-inverted references in refs/, clip2
    (21 frames) without one; ``dataset.json`` lists them (``rows`` replaces its rows)."""
    (root / "refs").mkdir(parents=True)
    for i, (frames, size) in enumerate([(20, (96, 64)), (12, (80, 64)), (21, (96, 64))]):
        write_video(root / f"clip{i}.mp4", frames=frames, size=size)
    for i in range(2):
        write_inverted_copy(root / f"clip{i}.mp4", root / "refs" / f"clip{i}.mp4")
    rows = rows or [
        {"video": "clip0.mp4", "caption": "a grey clip", "reference_video": "refs/clip0.mp4"},
        {"video": "clip1.mp4", "caption": "a short clip", "reference_video": "refs/clip1.mp4"},
        {"video": "clip2.mp4", "caption": "a clip without a reference"},
    ]
    (root / "dataset.json").write_text(json.dumps(rows))
    return root


def config(root: pathlib.Path, **kw) -> DatasetConfig:
    # centre trim and a random crop: the reference must follow the clip's start frame and crop window
    return DatasetConfig(path=str(root), buckets=BUCKETS, trim_start="center", crop="random", seed=3, **kw)


def test_references_cache_at_factor_2_encoding_the_reference_clip(tmp_path, vae, text):
    ds = load_dataset(config(control_dataset(tmp_path / "ds"), reference_downscale_factor=2))
    assert not ds.excluded and len(ds.items) == 3
    clip0 = next(i for i in ds.items if i.id == "clip0.mp4")
    assert clip0.plan.start_frame == 1 and clip0.plan.crop[0] > 0  # the cut is not the trivial one
    frames, ref_frames = clip0.load_frames(), clip0.load_reference_frames()
    assert tuple(ref_frames.shape) == (17, 32, 32, 3)
    # The reference is the inverted clip: the same source frames (frame i is grey level 16 + 4i; the two lossy
    # encodes stay within 2 levels, a neighbouring frame is 3 or more away) and the same crop window.
    grey, ref_grey = frames[:, 32:, 32:].mean((1, 2, 3)), 1 - ref_frames[:, 16:, 16:].mean((1, 2, 3))
    assert (ref_grey - grey).abs().max() < 2.5 / 255 and (grey[1:] - grey[:-1]).min() > 2.5 / 255
    halved = torch.nn.functional.avg_pool2d(frames.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
    assert (1 - ref_frames - halved).abs().mean() < 0.03
    assert "2 clips with a reference video" in report_text(ds) and "reference refs/clip0.mp4 -> 32x32x17" in (
        report_text(ds))

    report = build_cache(ds.items, tmp_path / "c", vae, text, reference_downscale_factor=2)
    assert sorted(report.encoded_references) == ["clip0.mp4", "clip1.mp4"]
    assert "2 clips with a reference video" in report.summary()
    data = CachedData(tmp_path / "c")
    assert data.reference_downscale_factor == 2 and data.reference_count() == 2
    assert data.manifest.dataset["reference_downscale_factor"] == 2
    for item in ds.items:
        index = data.index_of(item.id)
        sample = data[index]
        if item.reference is None:
            assert sample.reference is None and data.manifest.items[item.id].reference_shape is None
            assert data.shape_of(index) == tuple(sample.video.shape)
            continue
        c, f, h, w = sample.video.shape
        assert tuple(sample.reference.shape) == (c, f, h // 2, w // 2)
        torch.testing.assert_close(sample.reference, vae.encode(item.load_reference_frames()))
        assert data.shape_of(index) == (*sample.video.shape, *sample.reference.shape)
    assert data.verify() == []
    for batch in epoch_batches(data, batch_size=3, seed=0, epoch=0):
        assert len({data[i].reference is None for i in batch}) == 1  # clip0 and clip2 share a bucket

    fingerprint = data.fingerprint
    again = build_cache(load_dataset(config(tmp_path / "ds", reference_downscale_factor=2)).items, tmp_path / "c",
                        vae, text, reference_downscale_factor=2)
    assert again.encoded_references == again.encoded_latents == [] and len(again.skipped) == 3
    write_inverted_copy(tmp_path / "ds" / "clip0.mp4", tmp_path / "ds" / "refs" / "clip1.mp4")  # a new reference
    changed = build_cache(load_dataset(config(tmp_path / "ds", reference_downscale_factor=2)).items, tmp_path / "c",
                          vae, text, reference_downscale_factor=2)
    assert changed.encoded_references == ["clip1.mp4"] and changed.encoded_latents == []
    assert CachedData(tmp_path / "c").fingerprint != fingerprint


def test_legacy_column_name_and_a_references_folder(tmp_path):
    root = control_dataset(tmp_path / "ds", rows=[{"media_path": "clip0.mp4", "caption": "c", "ref_media_path":
                                                   "refs/clip0.mp4"}])
    (root / "dataset.json").unlink()
    (root / "dataset.csv").write_text("media_path,caption,ref_media_path\nclip0.mp4,c,refs/clip0.mp4\n")
    ds = load_dataset(config(root))
    assert [(i.id, i.reference_rel) for i in ds.items] == [("clip0.mp4", "refs/clip0.mp4")]

    # A folder dataset (clips + .txt captions) with a references folder matched by file name stem.
    folder = tmp_path / "folder"
    folder.mkdir()
    for i in range(3):
        (root / f"clip{i}.mp4").rename(folder / f"clip{i}.mp4")
        (folder / f"clip{i}.txt").write_text(f"clip {i}")
    (root / "refs" / "clip1.mp4").rename(root / "refs" / "clip1.mkv")  # any media extension matches
    ds = load_dataset(config(folder, references_dir=str(root / "refs")))
    assert {i.id: i.reference.name for i in ds.items} == {"clip0.mp4": "clip0.mp4", "clip1.mp4": "clip1.mkv"}
    (reason,) = [e.reason for e in ds.excluded if e.id == "clip2.mp4"]
    assert reason.startswith("clip2.mp4: no single reference video clip2.* in ") and "add it" in reason
    with pytest.raises(ConfigError, match=r"references_dir nowhere is not a folder"):
        load_dataset(config(folder, references_dir="nowhere"))


def test_a_missing_unreadable_short_or_outside_reference_excludes_its_clip_naming_both(tmp_path):
    root = control_dataset(tmp_path / "ds", rows=[
        {"video": "clip0.mp4", "caption": "c", "reference_video": "refs/missing.mp4"},
        {"video": "clip1.mp4", "caption": "c", "reference_video": "refs/broken.mp4"},
        {"video": "clip2.mp4", "caption": "c", "reference_video": "refs/clip1.mp4"},  # 12 frames for a 17-frame cut
    ])
    (root / "refs" / "broken.mp4").write_bytes(b"not a video" * 100)
    write_video(tmp_path / "outside.mp4", frames=20)
    (root / "extra.jsonl").write_text(json.dumps({"video": "clip0.mp4", "reference_video": "../outside.mp4"}))
    ds = load_dataset(config(root))
    assert not ds.items
    reasons = {e.id: e.reason for e in ds.excluded}
    assert reasons["clip0.mp4"].startswith("clip0.mp4: reference video refs/missing.mp4 not found at ")
    assert reasons["clip1.mp4"].startswith("clip1.mp4: reference video refs/broken.mp4 is unusable (")
    assert reasons["clip2.mp4"] == (
        "clip2.mp4: reference video refs/clip1.mp4 has 12 frames at 24 fps, the clip's kept frames need 19; make "
        "it as long as the clip"
    )
    text = report_text(ds)
    assert all(f"[excluded] {k}" in text and v in text for k, v in reasons.items())
    outside = load_dataset(config(root / "extra.jsonl")).excluded[0].reason
    assert outside.startswith("clip0.mp4: reference video (reference_video) path '../outside.mp4' points outside")


def test_a_factor_that_breaks_the_multiple_of_32_rule_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"reference_downscale_factor 2 does not fit bucket 96x64x9: 96/2 x 64/2"):
        parse_section(DatasetConfig, {"buckets": "64x64x9;96x64x9", "reference_downscale_factor": 2})
    assert parse_section(DatasetConfig, {"reference_downscale_factor": 2}).reference_downscale_factor == 2  # defaults
    with pytest.raises(ConfigError, match=r"factor 4 does not fit bucket 768x448x49: 768/4 x 448/4 must be multiples"):
        parse_section(DatasetConfig, {"reference_downscale_factor": 4})

    from trainer_core.cli import main

    root = control_dataset(tmp_path / "ds")
    assert main(["dataset", str(root), "--buckets", BUCKETS, "--reference-downscale-factor", "4"]) == 2
    assert "reference_downscale_factor 4 does not fit bucket 64x64x17" in capsys.readouterr().err


def _ltx_trainer_latents(root: pathlib.Path, name: str, shape: tuple[int, ...], sub: str) -> torch.Tensor:
    latent = torch.randn(shape, generator=torch.Generator().manual_seed(len(name) + len(sub))).to(torch.bfloat16)
    path = root / ".precomputed" / sub / f"{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"latents": latent, "num_frames": shape[1], "height": shape[2], "width": shape[3], "fps": 24.0}, path)
    return latent


def _ltx_trainer_conditions(root: pathlib.Path, name: str, widths: tuple[int, int] = (8, 4)) -> None:
    path = root / ".precomputed" / "conditions" / f"{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = torch.zeros(16, dtype=torch.long)
    mask[-4:] = 1
    torch.save({"video_prompt_embeds": torch.randn(16, widths[0]), "audio_prompt_embeds": torch.randn(16, widths[1]),
                "prompt_attention_mask": mask}, path)


def test_import_keeps_reference_latents_and_infers_the_factor(tmp_path):
    root = tmp_path / "ltx"
    refs = {}
    for name, ref in (("a", True), ("b", True), ("c", False)):
        _ltx_trainer_latents(root, name, (128, 2, 4, 6), "latents")
        _ltx_trainer_conditions(root, name)
        if ref:
            refs[name] = _ltx_trainer_latents(root, name, (128, 2, 2, 3), "reference_latents")
    report = import_ltx_trainer(root, tmp_path / "c")
    assert sorted(report.encoded_references) == ["a", "b"]
    data = CachedData(tmp_path / "c")
    assert data.reference_downscale_factor == 2 and data.reference_count() == 2
    for name, ref in refs.items():
        assert torch.equal(data[data.index_of(name)].reference, ref.float())
    assert data[data.index_of("c")].reference is None
    assert import_ltx_trainer(root, tmp_path / "c").encoded_references == []  # incremental

    _ltx_trainer_latents(root, "a", (128, 2, 3, 4), "reference_latents")  # 4/3: no whole factor
    with pytest.raises(CacheError, match=r"reference_latents/a.pt: reference latent \[128, 2, 3, 4\] is not the "
                                         r"video latent \[128, 2, 4, 6\] divided by one whole factor"):
        import_ltx_trainer(root, tmp_path / "c2")


def test_import_infers_the_temporal_factor_and_the_import_trains_with_it(tmp_path):
    """ltx-trainer --reference-temporal-scale-factor 2: 5 target latent frames, 3 reference frames."""
    from tests.engine_support import config as train_config
    from tests.engine_support import tiny_backbone
    from trainer_core.engine.trainer import Trainer
    from trainer_core.lorafile import metadata as md
    from trainer_core.lorafile.read import read_lora_file

    root = tmp_path / "ltx"
    for name in ("a", "b"):
        _ltx_trainer_latents(root, name, (128, 5, 4, 4), "latents")
        _ltx_trainer_latents(root, name, (128, 3, 2, 2), "reference_latents")
        _ltx_trainer_conditions(root, name, (64, 32))  # the tiny model's caption widths
    import_ltx_trainer(root, tmp_path / "c")
    data = CachedData(tmp_path / "c")
    assert (data.reference_downscale_factor, data.reference_temporal_scale_factor) == (2, 2)
    assert data.manifest.dataset["reference_temporal_scale_factor"] == 2
    cfg = train_config(tmp_path, recipe={"reference_p": 1.0, "audio": "off"}, optimization={"steps": 1},
                       checkpoints={"every": 1})
    result = Trainer(tiny_backbone(tmp_path / "tiny.safetensors"), data, cfg).train()
    assert read_lora_file(result.lora_path)[1][md.REFERENCE_TEMPORAL_SCALE_FACTOR] == "2"

    _ltx_trainer_latents(root, "a", (128, 4, 2, 2), "reference_latents")  # 4 frames: (5 - 1) / 3 is no factor
    with pytest.raises(CacheError, match=r"reference_latents/a.pt: reference latent has 4 latent frames, the video "
                                         r"5: not the video's frames subsampled by one whole"):
        import_ltx_trainer(root, tmp_path / "c2")


def test_a_cache_without_a_recorded_temporal_factor_infers_it_by_the_imports_rule(tmp_path):
    """A cache whose manifest does not record the factor gets it from its first reference, checked as the import
    checks it: a frame count that is no whole factor names the cache and the item instead of rounding."""
    import json

    root = tmp_path / "ltx"
    _ltx_trainer_latents(root, "a", (128, 5, 4, 4), "latents")
    _ltx_trainer_latents(root, "a", (128, 3, 2, 2), "reference_latents")
    _ltx_trainer_conditions(root, "a")
    import_ltx_trainer(root, tmp_path / "c")
    manifest = tmp_path / "c" / "manifest.json"
    state = json.loads(manifest.read_text())
    del state["dataset"]["reference_temporal_scale_factor"]
    manifest.write_text(json.dumps(state))
    assert CachedData(tmp_path / "c").reference_temporal_scale_factor == 2

    for record in state["items"].values():
        record["reference_shape"] = [128, 4, 2, 2]  # (5 - 1) / (4 - 1): no whole factor
    manifest.write_text(json.dumps(state))
    with pytest.raises(CacheError, match=r"cache .*c, item .*: reference latent has 4 latent frames, the video 5"):
        CachedData(tmp_path / "c")


def test_cli_cache_with_references(tmp_path, checkpoint):
    from trainer_core.cli import main

    root, out = control_dataset(tmp_path / "ds"), tmp_path / "cli"
    args = ["cache", str(root), "--checkpoint", str(checkpoint), "--out", str(out), "--buckets", BUCKETS,
            "--reference-downscale-factor", "2"]
    assert main(args) == 0
    data = CachedData(out)
    assert data.reference_downscale_factor == 2 and data.reference_count() == 2
    assert data[data.index_of("clip0.mp4")].reference.shape == (128, 3, 1, 1)


def test_cli_cache_with_a_temporal_factor_keeps_every_second_reference_frame(tmp_path, checkpoint, vae, capsys):
    from trainer_core.cli import main

    root, out = control_dataset(tmp_path / "ds"), tmp_path / "cli"
    args = ["cache", str(root), "--checkpoint", str(checkpoint), "--out", str(out), "--buckets", "64x64x17",
            "--reference-downscale-factor", "2", "--reference-temporal-scale-factor", "2"]
    assert main(args) == 0
    data = CachedData(out)
    assert (data.reference_downscale_factor, data.reference_temporal_scale_factor) == (2, 2)
    cfg = DatasetConfig(path=str(root), buckets="64x64x17", reference_downscale_factor=2,
                        reference_temporal_scale_factor=2)
    item = next(i for i in load_dataset(cfg).items if i.id == "clip0.mp4")
    whole = load_dataset(DatasetConfig(path=str(root), buckets="64x64x17", reference_downscale_factor=2)).items[0]
    assert whole.id == item.id and item.reference_key != whole.reference_key  # a changed factor re-encodes
    # ltx-trainer's VAE-aligned pattern: frame 0, then every 2nd from frame 1: 17 frames -> 9 -> 2 latent frames
    torch.testing.assert_close(item.load_reference_frames(), whole.load_reference_frames()[[0, *range(1, 17, 2)]])
    sample = data[data.index_of("clip0.mp4")]
    assert sample.video.shape[1:] == (3, 2, 2) and sample.reference.shape == (128, 2, 1, 1)
    torch.testing.assert_close(sample.reference, vae.encode(item.load_reference_frames()))

    assert main(["dataset", str(root), "--buckets", "64x64x9", "--reference-temporal-scale-factor", "2"]) == 2
    assert "reference_temporal_scale_factor 2 does not fit bucket 64x64x9" in capsys.readouterr().err


def test_dataset_and_cache_nodes_take_a_references_folder(comfy, tmp_path):
    """In ComfyUI: Load Dataset's references_dir and reference_downscale_factor widgets, then the Cache node with
    ComfyUI's own VAE of the tiny checkpoint."""
    from comfy import sd as comfy_sd

    from tests.cache.test_cache_comfy import tiny_ltx_clip
    from tests.comfy_boot import find_comfyui

    root = control_dataset(tmp_path / "ds")
    folder = tmp_path / "clips"
    folder.mkdir()
    for i in range(2):
        (root / f"clip{i}.mp4").rename(folder / f"clip{i}.mp4")
        (folder / f"clip{i}.txt").write_text(f"clip {i}")
    ckpt = write_tiny_checkpoint(tmp_path / "tiny.safetensors", seed=0)
    load, cache = (comfy.NODE_CLASS_MAPPINGS[n] for n in ("LtxLoraLoadDataset", "LtxLoraCacheLatents"))
    spec = load.INPUT_TYPES()["required"]
    kwargs = {name: opts["default"] for name, (_, opts) in spec.items() if opts and "default" in opts}
    kwargs |= {"path": str(folder), "buckets": BUCKETS, "references_dir": str(root / "refs"),
               "reference_downscale_factor": 2}
    assert "reference_downscale_factor 4 does not fit" in load.validate_inputs(
        **(kwargs | {"reference_downscale_factor": 4}))
    with torch.inference_mode():
        _, _, vae = comfy_sd.load_checkpoint_guess_config(str(ckpt), output_vae=True, output_clip=False)[:3]
        ds, report = load.execute(**kwargs).result
        assert "2 clips with a reference video" in report
        data = cache.execute(dataset=ds, vae=vae, clip=tiny_ltx_clip(find_comfyui()), folder=str(tmp_path / "c"),
                             tiled_vae=False).result[0]
        assert data.reference_downscale_factor == 2 and data.reference_count() == 2
        for item in ds.items:
            expected = vae.encode(item.load_reference_frames())[0].float()
            torch.testing.assert_close(data[data.index_of(item.id)].reference, expected)
