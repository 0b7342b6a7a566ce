"""Audio caching end to end with the real audio VAEs of the tiny checkpoint (``audio_vae=True``): the headless
``cache`` command (ltx-core's audio VAE read from ``--checkpoint``) and the Cache node with ComfyUI's stock
*Load LTXV Audio VAE*, on a dataset of clips with and without an audio track."""

from __future__ import annotations

import pathlib

import pytest
import torch

from tests.dataset_media import write_image, write_video
from trainer_core.cache import CachedData
from trainer_core.cache.manifest import Manifest
from trainer_core.config.dataset import DatasetConfig
from trainer_core.dataset import load_dataset
from trainer_core.dataset.media import read_audio_window

pytest.importorskip("ltx_core", reason="ltx-core (optional dependency) builds the tiny checkpoint")

from trainer_core.ltxcore.encoders import LtxCoreAudioVae
from trainer_core.ltxcore.tiny import write_tiny_checkpoint

BUCKETS = "64x64x17;64x64x1"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> pathlib.Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt_audio") / "tiny_av.safetensors", audio_vae=True)


@pytest.fixture
def ds_root(tmp_path) -> pathlib.Path:
    root = tmp_path / "ds"
    root.mkdir()
    write_video(root / "talk.mp4", frames=30, size=(96, 64), audio=True)  # centre trim: frames 6-22 at 24 fps
    write_video(root / "mute.mp4", frames=24, size=(96, 64))
    write_image(root / "still.png")
    for name in ("talk", "mute", "still"):
        (root / f"{name}.txt").write_text(f"a {name} clip")
    return root


def load(root: pathlib.Path, **kwargs):
    return load_dataset(DatasetConfig(path=str(root), buckets=BUCKETS, trim_start="center", **kwargs))


def window_waveform(item) -> torch.Tensor:
    """The 16 kHz stereo waveform of the item's kept frames, computed from the plan's start frame and fps."""
    start = item.info.start_time + item.plan.start_frame / item.fps
    return torch.from_numpy(read_audio_window(item.source, start, item.bucket.frames / item.fps).waveform)


def check_cache(folder: pathlib.Path, root: pathlib.Path, encoder) -> None:
    """Aligned latents for the clip with sound, none for the silent clip and the still."""
    data = CachedData(folder)
    assert data.audio_count() == 1 and data.model["audio_vae"] == encoder.identity()
    talk = next(i for i in load(root).items if i.id == "talk.mp4")
    assert talk.plan.start_frame == 6
    sample = data[data.index_of("talk.mp4")]
    assert tuple(sample.audio.shape) == (8, round(17 / 24 * 25), 16)
    torch.testing.assert_close(sample.audio, encoder.encode(window_waveform(talk)), rtol=1e-5, atol=1e-5)
    for item_id in ("mute.mp4", "still.png"):
        assert data.manifest.items[item_id].audio_shape is None and data[data.index_of(item_id)].audio is None


def test_cli_caches_audio_with_the_checkpoints_audio_vae(ds_root, tmp_path, ckpt, capsys):
    from trainer_core.cli import main

    out = tmp_path / "cli"
    args = ["cache", str(ds_root), "--checkpoint", str(ckpt), "--out", str(out), "--buckets", BUCKETS,
            "--trim-start", "center"]
    assert main(args) == 0
    assert "1 clips with audio, 2 without an audio track (1 of them stills)" in capsys.readouterr().out
    check_cache(out, ds_root, LtxCoreAudioVae(ckpt))
    latents = {r.id: r.latent for r in Manifest.load(out).items.values()}

    assert main([*args, "--skip-audio"]) == 0
    assert "no audio: skip_audio is set" in capsys.readouterr().out
    data = CachedData(out)
    assert data.audio_count() == 0 and {r.id: r.latent for r in data.records} == latents  # video kept

    plain = write_tiny_checkpoint(tmp_path / "video_only.safetensors")  # no audio_vae.*: video only, said so
    assert main(["cache", str(ds_root), "--checkpoint", str(plain), "--out", str(tmp_path / "v"), "--buckets",
                 BUCKETS]) == 0
    assert "no audio: no audio VAE given" in capsys.readouterr().out


def test_cache_node_with_stock_audio_vae_loader(comfy, ds_root, tmp_path, ckpt):
    import folder_paths
    from comfy import sd as comfy_sd  # not `import comfy.sd`: that would rebind the fixture argument
    from comfy_extras.nodes_lt_audio import LTXVAudioVAELoader

    from tests.cache.test_cache_comfy import tiny_ltx_clip
    from tests.comfy_boot import find_comfyui
    from trainer_core.comfy.cache_encoders import ComfyAudioVae

    folder_paths.add_model_folder_path("checkpoints", str(ckpt.parent))
    with torch.inference_mode():
        vae = comfy_sd.load_checkpoint_guess_config(str(ckpt), output_vae=True, output_clip=False)[2]
        audio_vae = LTXVAudioVAELoader.execute(ckpt_name=ckpt.name).result[0]
    clip = tiny_ltx_clip(find_comfyui())
    node = comfy.NODE_CLASS_MAPPINGS["LtxLoraCacheLatents"]
    schema = {i.id: i for i in node.define_schema().inputs}
    assert schema["audio_vae"].optional and schema["audio_vae"].get_io_type() == "VAE"  # stock loader's output
    folder = tmp_path / "cache"
    with torch.inference_mode():
        out = node.execute(dataset=load(ds_root), vae=vae, clip=clip, audio_vae=audio_vae, folder=str(folder),
                           tiled_vae=False)
    assert "1 clips with audio, 2 without an audio track (1 of them stills)" in out.result[1]
    with torch.inference_mode():
        check_cache(folder, ds_root, ComfyAudioVae(audio_vae))
        # ltx-core's audio VAE of the same file gives the same latents (one identity, one cache)
        data = CachedData(folder)
        talk = next(i for i in load(ds_root).items if i.id == "talk.mp4")
        torch.testing.assert_close(data[data.index_of("talk.mp4")].audio,
                                   LtxCoreAudioVae(ckpt).encode(window_waveform(talk)), rtol=1e-4, atol=1e-4)
    assert ComfyAudioVae(audio_vae).identity() == LtxCoreAudioVae(ckpt).identity()

    with torch.inference_mode():
        again = node.execute(dataset=load(ds_root), vae=vae, clip=clip, folder=str(folder), tiled_vae=False)
    assert "0 clips encoded" in again.result[1] and "no audio: no audio VAE given" in again.result[1]
    assert again.result[0].audio_count() == 0
