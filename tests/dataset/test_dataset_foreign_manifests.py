"""Manifests as ltx-trainer and the LTX-2 LoRA tutorial write them: the clip column under each of its names, in
JSON, JSONL and CSV; ltx-trainer columns whose roles are not built are refused naming the accepted columns."""

from __future__ import annotations

import csv
import io
import json

import pytest

from trainer_core.config import ConfigError
from trainer_core.dataset.sources import list_sources


def _write(manifest, rows: list[dict]) -> None:
    if manifest.suffix == ".json":
        manifest.write_text(json.dumps(rows))
    elif manifest.suffix == ".jsonl":
        manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        manifest.write_text(buf.getvalue())


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv"])
@pytest.mark.parametrize("column", ["video", "media_path", "video_path"])
def test_the_clip_column_under_each_name(tmp_path, column, suffix):
    (tmp_path / "clips").mkdir()
    for i in range(2):
        (tmp_path / "clips" / f"{i}.mp4").write_bytes(bytes([i]) * 10)
    # A caption with a comma, quotes and a line break: CSV quoting as pandas (ltx-trainer) writes and reads it.
    rows = [{column: "clips/0.mp4", "caption": 'a dog, "running"\non sand'}, {column: "clips/1.mp4", "caption": "x"}]
    _write(tmp_path / f"dataset{suffix}", rows)
    listing = list_sources(tmp_path)
    assert [(e.rel, e.caption, e.problem) for e in listing.entries] == [
        ("clips/0.mp4", 'a dog, "running"\non sand', None), ("clips/1.mp4", "x", None)]


def test_a_manifest_without_a_clip_column_names_the_accepted_one(tmp_path):
    _write(tmp_path / "meta.csv", [{"file": "a.mp4", "caption": "x"}])
    with pytest.raises(ConfigError, match=r"has no video column: name it 'video' \('media_path' and 'video_path' are "
                                          r"read too\) \(found: caption, file\)"):
        list_sources(tmp_path / "meta.csv")


@pytest.mark.parametrize(("column", "why"), [
    ("audio", "the audio comes from each video's own track"),
    ("reference_audio", "audio references (audio IC-LoRA) are not built"),
    ("video_mask", "masked (inpainting) training is not built"),
    ("audio_mask", "masked (inpainting) training is not built"),
])
def test_ltx_trainer_roles_that_are_not_built_are_refused(tmp_path, column, why):
    (tmp_path / "a.mp4").write_bytes(b"a")
    _write(tmp_path / "meta.json", [{"video": "a.mp4", "caption": "x", column: "a_extra.wav"}])
    with pytest.raises(ConfigError) as err:
        list_sources(tmp_path / "meta.json")
    assert f"column '{column}': " in str(err.value) and why in str(err.value)
    assert "Accepted columns: video, media_path, video_path (the clip), caption" in str(err.value)


def test_an_empty_unsupported_column_is_not_refused(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"a")
    _write(tmp_path / "meta.csv", [{"video": "a.mp4", "caption": "x", "audio": ""}])
    assert [e.rel for e in list_sources(tmp_path / "meta.csv").entries] == ["a.mp4"]
