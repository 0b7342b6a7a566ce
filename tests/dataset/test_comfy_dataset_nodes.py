"""The three dataset nodes executed inside a real ComfyUI, under torch.inference_mode as ComfyUI runs them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.dataset_media import write_image, write_video



@pytest.fixture
def dataset_dir(tmp_path):
    write_video(tmp_path / "a.mp4", frames=20)
    write_image(tmp_path / "b.png", mode="RGBA")
    (tmp_path / "a.txt").write_text("a woman walks")
    (tmp_path / "bad.mp4").write_bytes(b"")
    return tmp_path


def _defaults(cls) -> dict:
    spec = cls.INPUT_TYPES()["required"]
    return {name: opts["default"] for name, (_, opts) in spec.items() if opts and "default" in opts}


def test_dataset_nodes_execute(comfy, dataset_dir, tmp_path_factory):
    import folder_paths

    import nodes

    temp = tmp_path_factory.mktemp("comfy_temp")
    old_temp = folder_paths.get_temp_directory()
    folder_paths.set_temp_directory(str(temp))
    load = nodes.NODE_CLASS_MAPPINGS["LtxLoraLoadDataset"]
    trim = nodes.NODE_CLASS_MAPPINGS["LtxLoraTrimFrames"]
    preview = nodes.NODE_CLASS_MAPPINGS["LtxLoraDatasetPreview"]
    try:
        with torch.inference_mode():
            kwargs = _defaults(load) | {"path": str(dataset_dir), "trigger": "sks", "buckets": "64x64x9;64x64x1"}
            assert load.validate_inputs(**kwargs) is True
            assert "does not exist" in load.validate_inputs(**(kwargs | {"path": str(dataset_dir / "nope")}))
            assert "multiple of 32" in load.validate_inputs(**(kwargs | {"buckets": "60x64x9"}))
            out = load.execute(**kwargs)
            ds, report = out.result
            assert [i.id for i in ds.items] == ["a.mp4", "b.png"] and ds.items[0].caption == "sks a woman walks"
            assert "bad.mp4" in report and "zero-byte" in report
            assert "2 usable" in out.ui.as_dict()["text"][0]
            assert load.fingerprint_inputs(**kwargs) == load.fingerprint_inputs(**kwargs)

            frames = ds.items[0].load_frames()
            trimmed = trim.execute(images=torch.cat([frames, frames[:3]]), policy="last").result[0]
            assert trimmed.shape[0] == 9 and torch.equal(trimmed[-3:], frames[:3])

            shown = preview.execute(dataset=ds, columns=3, tile_width=128, max_items=10)
            sheet = shown.result[0]
            assert sheet.ndim == 4 and sheet.shape[0] == 1 and sheet.shape[2] == 3 * 128
            saved = shown.ui.as_dict()["images"]
            assert len(saved) == 1 and (Path(temp) / saved[0]["subfolder"] / saved[0]["filename"]).is_file()
    finally:
        folder_paths.set_temp_directory(old_temp)
