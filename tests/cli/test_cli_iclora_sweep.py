"""The headless `sweep` of an IC-LoRA is guided by `--reference CLIP`, as the Sweep node's graph and the headless
previews are: every sampling step of every cell gets the clip's latent (at the row's factor, the base row's at 1)
clean at timestep 0, and the cells follow the clip. An IC-LoRA without `--reference`, `--reference` with another
LoRA, and a missing, corrupt, too short or ill-sized reference are one-line errors (exit 2) before the model
loads."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from tests.engine_support import config, synthetic_data, tiny_backbone, write_cache
from trainer_core.cli import main
from trainer_core.engine.trainer import Trainer

pytest.importorskip("ltx_core", reason="ltx-core (optional dependency) is the headless backbone")

from trainer_core.ltxcore import previews  # noqa: E402
from trainer_core.ltxcore.backbone import LtxCoreBackbone  # noqa: E402

SIZE = ["--width", "128", "--height", "128", "--frames", "9", "--steps", "2", "--strengths", "0, 1", "--seeds", "3"]


def write_noise_video(path: Path, seed: int, frames: int = 12, size: tuple[int, int] = (96, 64)) -> Path:
    """A clip of smooth random colour blobs (a stand-in control video), different for every seed."""
    rng = np.random.default_rng(seed)
    w, h = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "10"}
        coarse = rng.integers(0, 256, (frames, h // 16, w // 16, 3)).astype(np.uint8)
        for i in range(frames):
            arr = np.ascontiguousarray(coarse[i].repeat(16, axis=0).repeat(16, axis=1))
            out.mux(stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")))
        out.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    """A tiny checkpoint, a cache for the prompts, an IC-LoRA at reference_downscale_factor 2, a plain LoRA and two
    different reference clips."""
    root = tmp_path_factory.mktemp("ic_sweep")
    ckpt = root / "tiny.safetensors"
    out = {"ckpt": ckpt, "cache": write_cache(root / "cache", [24.0])}
    for name, recipe, factor in (("ic", {"reference_p": 1.0, "audio": "off"}, 2), ("plain", {"audio": "off"}, 0)):
        cfg = config(root / name, name=name, recipe=recipe, optimization={"steps": 2, "learning_rate": 5e-2},
                     checkpoints={"every": 2})
        result = Trainer(tiny_backbone(ckpt), synthetic_data(n=2, audio=False, size=4, reference_factor=factor),
                         cfg).train()
        out[name] = result.lora_path
    out["ref_a"] = write_noise_video(root / "edges_a.mp4", seed=1)
    out["ref_b"] = write_noise_video(root / "edges_b.mp4", seed=2)
    return out


def sweep(setup: dict[str, Path], loras: str, out: Path, *extra: str) -> int:
    """``loras``: the fixture's LoRA names, space-separated."""
    return main(["sweep", *(str(setup[name]) for name in loras.split()), "--checkpoint", str(setup["ckpt"]), "--data", str(setup["cache"]),
                 "--out", str(out), *SIZE, *extra])


class Spy:
    """Records what the sampler feeds the model at every step (the reference, its factor, the transformer's video
    timesteps) and every cell's sampled latent."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.steps: list[tuple[tuple[int, ...], int, torch.Tensor]] = []
        self.temporal: list[int] = []
        self.cells: list[torch.Tensor] = []
        velocity, sample_av = LtxCoreBackbone.velocity, previews.sample_av

        def spy_velocity(backbone, inp):
            seen: list[torch.Tensor] = []
            hook = backbone.transformer.register_forward_pre_hook(
                lambda _m, _a, kwargs: seen.append(kwargs["video"].timesteps[0].clone()), with_kwargs=True)
            try:
                result = velocity(backbone, inp)
            finally:
                hook.remove()
            shape = () if inp.reference is None else tuple(inp.reference.shape)
            self.steps += [(shape, inp.reference_factor, t) for t in seen]
            self.temporal.append(inp.reference_temporal_factor)
            return result

        def spy_sample(*args, **kwargs):
            latent, audio = sample_av(*args, **kwargs)
            self.cells.append(latent.clone())
            return latent, audio

        monkeypatch.setattr(LtxCoreBackbone, "velocity", spy_velocity)
        monkeypatch.setattr(previews, "sample_av", spy_sample)


def test_every_step_of_every_cell_sees_the_reference_at_timestep_0(setup, tmp_path, monkeypatch, capsys):
    spy = Spy(monkeypatch)
    assert sweep(setup, "ic", tmp_path / "g.mp4", "--reference", str(setup["ref_a"])) == 0
    assert f"IC-LoRA: every cell is guided by {setup['ref_a']} (reference_downscale_factor 2" in capsys.readouterr().out
    assert (tmp_path / "g.mp4").is_file() and (tmp_path / "g.png").is_file()
    # 2 cells (base, ic @ 1) x 2 steps. 128 x 128 x 9 frames is a 2 x 4 x 4 latent: the base row's reference at full
    # size (factor 1, as Get IC-LoRA Parameters gives a model without an IC-LoRA), the IC-LoRA's at half (factor 2).
    assert [(shape, factor) for shape, factor, _ in spy.steps] == (
        [((1, 128, 2, 4, 4), 1)] * 2 + [((1, 128, 2, 2, 2), 2)] * 2
    )
    tokens = 2 * 4 * 4
    for shape, _, timesteps in spy.steps:
        reference_tokens = shape[2] * shape[3] * shape[4]
        assert timesteps.numel() == reference_tokens + tokens
        assert not timesteps[:reference_tokens].any() and timesteps[reference_tokens:].all()  # clean ref, noisy clip


def test_the_cells_follow_the_reference_clip(setup, tmp_path, monkeypatch):
    spy = Spy(monkeypatch)
    for name, ref in (("a", "ref_a"), ("b", "ref_b"), ("a2", "ref_a")):
        assert sweep(setup, "ic", tmp_path / f"{name}.mp4", "--reference", str(setup[ref])) == 0
    a, b, again = spy.cells[0:2], spy.cells[2:4], spy.cells[4:6]
    assert all(torch.equal(x, y) for x, y in zip(a, again, strict=True))  # seeded: the same clip, the same cells
    assert all(not torch.allclose(x, y, atol=1e-4) for x, y in zip(a, b, strict=True))  # base row and IC-LoRA row


def test_a_temporal_ic_lora_gets_the_subsampled_clip_at_its_factors(setup, tmp_path, monkeypatch, capsys):
    """reference_temporal_scale_factor 2 in the file: the 17-frame cut keeps 9 frames (2 latent frames), placed with
    the file's temporal factor; the base row gets all 17 frames (3 latent frames) at factor 1. Frames - 1 that is not
    a multiple of 8 x 2 is refused."""
    cfg = config(tmp_path, name="ict", recipe={"reference_p": 1.0, "audio": "off"}, optimization={"steps": 1},
                 checkpoints={"every": 1})
    data = synthetic_data(n=2, audio=False, frames=3, size=4, reference_factor=2, reference_temporal=2)
    lora = Trainer(tiny_backbone(setup["ckpt"]), data, cfg).train().lora_path
    reference = write_noise_video(tmp_path / "long.mp4", seed=3, frames=20)
    spy = Spy(monkeypatch)
    args = ["sweep", str(lora), "--checkpoint", str(setup["ckpt"]), "--data", str(setup["cache"]), "--out",
            str(tmp_path / "t.mp4"), *SIZE, "--reference", str(reference)]
    assert main([*args, "--frames", "9"]) == 2
    assert "frames - 1 a multiple of 8 x reference_temporal_scale_factor (16)" in capsys.readouterr().err
    assert main([*args, "--frames", "17"]) == 0
    assert [(shape, factor) for shape, factor, _ in spy.steps] == (
        [((1, 128, 3, 4, 4), 1)] * 2 + [((1, 128, 2, 2, 2), 2)] * 2
    )
    assert spy.temporal == [1, 1, 2, 2]


def _corrupt(path: Path) -> Path:
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    return path


@pytest.mark.parametrize(
    ("loras", "reference", "extra", "message"),
    [
        ("ic", None, [], "ic_step_00002.safetensors: IC-LoRAs (reference_downscale_factor in the file's metadata) "
                         "follow a reference clip; give --reference CLIP"),
        ("plain", "ref_a", [], "but plain_step_00002.safetensors are not IC-LoRAs"),
        ("ic plain", "ref_a", [], "ic_step_00002.safetensors are IC-LoRAs and plain_step_00002.safetensors are not"),
        ("ic", "image", [], "--reference {path} is an image; give a video clip"),
        ("ic", "missing", [], "--reference {path} cannot be used: missing.mp4: file not found"),
        ("ic", "corrupt", [], "--reference {path} cannot be used: corrupt.mp4"),
        ("ic", "ref_a", ["--frames", "17"], "--reference {path} has 12 frames at 24 fps; the sweep's cells have 17"),
        ("ic", "ref_a", ["--width", "96"], "multiples of 32 x reference_downscale_factor (64)"),
    ],
)
def test_reference_errors_are_one_line_before_the_model_loads(setup, tmp_path, monkeypatch, capsys, loras, reference,
                                                              extra, message):
    def no_model(*_args, **_kwargs):
        raise AssertionError("the model must not load")

    monkeypatch.setattr(LtxCoreBackbone, "from_checkpoint", no_model)
    paths = {"missing": tmp_path / "missing.mp4", "corrupt": _corrupt(tmp_path / "corrupt.mp4"),
             "image": tmp_path / "edges.png"}
    Image.new("RGB", (128, 128), (200, 10, 10)).save(paths["image"])
    path = paths.get(reference) or setup.get(reference)
    given = [] if reference is None else ["--reference", str(path)]
    assert sweep(setup, loras, tmp_path / "g.mp4", *given, *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert message.format(path=path) in err
    if reference is None:
        assert "--reference" in err
