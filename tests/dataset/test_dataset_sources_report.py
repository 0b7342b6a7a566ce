"""Sources (sidecars, manifests), captions and their checks, the report, laziness and the CLI command."""

from __future__ import annotations

import json

import pytest

from tests.dataset_media import write_image, write_video
from trainer_core.cli import main
from trainer_core.config.dataset import DatasetConfig
from trainer_core.dataset import build_report, load_dataset, report_text
from trainer_core.dataset.captions import apply_trigger, estimate_tokens, vocabulary_findings
from trainer_core.dataset.contact_sheet import contact_sheet

BUCKETS = "64x64x9;64x64x1"


@pytest.fixture
def folder(tmp_path):
    write_video(tmp_path / "clip_001.mp4", frames=20)
    write_video(tmp_path / "clip_002.mkv", frames=9)
    write_image(tmp_path / "still.png")
    (tmp_path / "clip_001.txt").write_text("a woman with brown hair walks", encoding="utf-8")
    (tmp_path / "clip_002.txt").write_text("\ufeffsks, a woman with brown hair waves", encoding="utf-8")
    (tmp_path / "still.txt").write_text("a female figure stands", encoding="utf-8")
    (tmp_path / "notes.md").write_text("not media")
    return tmp_path


def test_folder_with_sidecars(folder):
    ds = load_dataset(DatasetConfig(path=str(folder), trigger="sks", buckets=BUCKETS))
    assert ds.kind == "folder"
    assert [i.id for i in ds.items] == ["clip_001.mp4", "clip_002.mkv", "still.png"]
    captions = {i.id: i.caption for i in ds.items}
    assert captions["clip_001.mp4"] == "sks a woman with brown hair walks"
    assert captions["clip_002.mkv"] == "sks, a woman with brown hair waves"  # BOM dropped, trigger not doubled
    assert ds.ignored_files == ("notes.md",)
    source = folder / "clip_001.mp4"
    item = ds.items[0]
    assert (item.source, item.source_size, item.source_mtime_ns) == (source, source.stat().st_size,
                                                                     source.stat().st_mtime_ns)
    assert (str(item.bucket), item.fps) == ("64x64x9", 24.0)


@pytest.mark.parametrize("kind", ["json", "jsonl", "csv"])
def test_ltx_trainer_manifests(tmp_path, kind):
    (tmp_path / "clips").mkdir()
    write_video(tmp_path / "clips" / "a.mp4", frames=9)
    write_image(tmp_path / "clips" / "b.jpg")
    rows = [{"media_path": "clips/a.mp4", "caption": "a dog runs"}, {"media_path": "clips/b.jpg", "caption": ""}]
    manifest = tmp_path / f"meta.{kind}"
    if kind == "json":
        manifest.write_text(json.dumps(rows))
    elif kind == "jsonl":
        manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n\nnot json\n")
    else:
        manifest.write_text("media_path,caption\nclips/a.mp4,a dog runs\nclips/b.jpg,\n")
    ds = load_dataset(DatasetConfig(path=str(manifest), buckets=BUCKETS))
    assert ds.kind == manifest.name
    assert [(i.id, i.caption) for i in ds.items] == [("clips/a.mp4", "a dog runs"), ("clips/b.jpg", "")]
    assert any("empty caption" in f for f in ds.items[1].caption_findings)
    if kind == "jsonl":
        assert len(ds.excluded) == 1 and "line 4" in ds.excluded[0].reason and "not valid JSON" in ds.excluded[0].reason
    tree = sorted(p.name for p in tmp_path.rglob("*"))
    load_dataset(DatasetConfig(path=str(manifest), buckets=BUCKETS)).items[0].load_frames()
    assert sorted(p.name for p in tmp_path.rglob("*")) == tree  # nothing written next to the sources


def test_folder_with_a_manifest_uses_it(tmp_path):
    write_video(tmp_path / "a.mp4", frames=9)
    write_video(tmp_path / "unlisted.mp4", frames=9)
    (tmp_path / "dataset.json").write_text(json.dumps([{"video": "a.mp4", "caption": "x"}]))
    ds = load_dataset(DatasetConfig(path=str(tmp_path), buckets=BUCKETS))
    assert ds.kind == "dataset.json" and [i.id for i in ds.items] == ["a.mp4"]


def test_apply_trigger():
    assert apply_trigger("a cat", "sks") == "sks a cat"
    assert apply_trigger("sks a cat", "sks") == "sks a cat"
    assert apply_trigger("a photo of sks cat", "sks") == "a photo of sks cat"
    assert apply_trigger("a sksy cat", "sks") == "sks a sksy cat"  # whole words only
    assert apply_trigger(None, "sks") == "sks"
    assert apply_trigger("  a cat ", "") == "a cat"


def test_caption_checks(tmp_path):
    write_video(tmp_path / "long.mp4", frames=9)
    (tmp_path / "long.txt").write_text("word " * 400)
    ds = load_dataset(DatasetConfig(path=str(tmp_path), trigger="sks", buckets=BUCKETS, caption_token_budget=100))
    findings = ds.items[0].caption_findings
    assert any("trigger 'sks' absent" in f for f in findings)
    assert any(f"about {estimate_tokens(ds.items[0].caption)} tokens (estimate)" in f and "budget of 100" in f
               for f in findings)


def test_vocabulary_names_the_captions_that_disagree():
    captions = {
        "a.mp4": "a woman with brown hair walks in a park",
        "b.mp4": "a woman with brown hair sits on a bench",
        "c.mp4": "a woman with brown hair reads a book",
        "d.mp4": "a female figure with brunette locks dances",
        "e.mp4": "a woman with brown hair drinks coffee",
    }
    found = vocabulary_findings(captions)
    synonyms = [f for f in found if f.kind == "synonyms"]
    assert {f.items for f in synonyms} == {("d.mp4",)}
    messages = " ".join(f.message for f in synonyms)
    assert "'female figure' in d.mp4" in messages and "'brunette' in d.mp4" in messages and "4 say 'woman'" in messages
    shared = {f.message.split("'")[1]: f.items for f in found if f.kind == "shared_word"}
    assert shared["hair"] == ("d.mp4",)


def test_consistent_captions_have_no_findings():
    captions = {f"{i}.mp4": f"a woman with brown hair, take {i}" for i in range(5)}
    assert vocabulary_findings(captions) == []


def test_report_is_lazy_text_and_json(folder):
    ds = load_dataset(DatasetConfig(path=str(folder), trigger="sks", buckets=BUCKETS))
    assert sum(i.info.decoded_frames for i in ds.items) <= 2 * len(ds.items)
    report = json.loads(json.dumps(build_report(ds)))
    assert report["summary"]["total"] == 3 and report["summary"]["buckets"] == {"64x64x9": 2, "64x64x1": 1}
    by_id = {i["id"]: i for i in report["items"]}
    assert by_id["clip_001.mp4"]["status"] == "adjusted"
    assert any("trimmed 20 -> 9 frames" in c for c in by_id["clip_001.mp4"]["changes"])
    assert by_id["clip_002.mkv"]["changes"] == ["96x64 cropped (centre) to 64x64"]
    assert report["vocabulary"] and "still.png" in report["vocabulary"][0]["items"]
    text = report_text(ds)
    assert "[adjusted] clip_001.mp4 -> 64x64x9 @ 24 fps" in text and "female figure" in text


def test_stable_random_choices(folder):
    cfg = DatasetConfig(path=str(folder), buckets="64x64x9", crop="random", trim_start="random", seed=7)
    a = [(i.plan.crop, i.plan.start_frame, i.fingerprint) for i in load_dataset(cfg).items]
    b = [(i.plan.crop, i.plan.start_frame, i.fingerprint) for i in load_dataset(cfg).items]
    assert a == b
    assert all(0 <= start <= 11 for _, start, _ in a)


def test_contact_sheet(folder):
    (folder / "broken.mp4").write_bytes(b"\x00" * 100)
    ds = load_dataset(DatasetConfig(path=str(folder), buckets=BUCKETS))
    sheet = contact_sheet(ds, columns=2, tile_width=128)
    assert sheet.shape[0] == 1 and sheet.shape[3] == 3
    assert sheet.shape[2] == 256 and sheet.shape[1] == 2 * (72 + 40)  # 4 tiles in 2 rows
    assert float(sheet.max()) <= 1.0 and float(sheet[0, :72, :128].std()) > 0.05  # a real frame is drawn


def test_cli_prints_the_report(folder, capsys):
    assert main(["dataset", str(folder), "--buckets", BUCKETS, "--trigger", "sks", "--fps", "12"]) == 0
    out = capsys.readouterr().out
    assert "2 usable" in out and "resampled 24.000 -> 12 fps" in out
    assert "clip_002.mkv: too short: 4 frames at 12 fps" in out  # 9 frames at 24 fps are 4 at 12
    assert main(["dataset", str(folder), "--buckets", BUCKETS, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["total"] == 3
    assert main(["dataset", str(folder), "--buckets", "64x64x33"]) == 1  # nothing usable
    assert main(["dataset", str(folder), "--buckets", "60x64x9"]) == 2
    assert "buckets" in capsys.readouterr().err
