"""Every CLI command, given bad input (a missing file, the wrong kind of file, a bad value), answers with a message
and exit status 1 or 2, never a traceback. A command or sub-action without cases here fails the coverage test."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml

from tests.dataset_media import write_video
from trainer_core.cli import build_parser
from trainer_core.lorafile.write import save_lora_file

REPO = Path(__file__).resolve().parents[2]

# (case id, argv with {tmp} for the fixture folder). The first word is the command; for 'lora' and 'config' the
# second is the action.
CASES = [
    ("dataset-missing", ["dataset", "{tmp}/nope"]),
    ("dataset-text-file", ["dataset", "{tmp}/notes.txt"]),
    ("dataset-broken-manifest", ["dataset", "{tmp}/broken_manifest"]),
    ("dataset-only-bad-files", ["dataset", "{tmp}/bad_media"]),
    ("dataset-bad-buckets", ["dataset", "{tmp}/good_media", "--buckets", "big"]),
    ("dataset-bad-fps", ["dataset", "{tmp}/good_media", "--target-fps", "fast"]),
    ("train-missing-config", ["train", "{tmp}/nope.yaml"]),
    ("train-config-is-a-list", ["train", "{tmp}/list.yaml"]),
    ("train-config-not-yaml", ["train", "{tmp}/broken.yaml"]),
    ("train-config-is-a-folder", ["train", "{tmp}/good_media"]),
    ("train-bad-value", ["train", "{tmp}/bad_rank.yaml"]),
    ("train-climbing-name", ["train", "{tmp}/bad_name.yaml"]),
    ("train-missing-cache", ["train", "{tmp}/no_cache.yaml"]),
    ("train-text-checkpoint", ["train", "{tmp}/text_checkpoint.yaml"]),
    ("train-missing-resume", ["train", "{tmp}/text_checkpoint.yaml", "--resume", "{tmp}/gone.safetensors"]),
    ("demo-out-is-a-file", ["demo", "--out", "{tmp}/notes.txt", "--steps", "1"]),
    ("demo-bad-steps", ["demo", "--steps", "many"]),
    ("lora-inspect-missing", ["lora", "inspect", "{tmp}/nope.safetensors"]),
    ("lora-inspect-text-file", ["lora", "inspect", "{tmp}/fake.safetensors"]),
    ("lora-inspect-folder", ["lora", "inspect", "{tmp}/good_media"]),
    ("lora-inspect-text-model", ["lora", "inspect", "{tmp}/lora.safetensors", "--model", "{tmp}/fake.safetensors"]),
    ("lora-convert-missing", ["lora", "convert", "{tmp}/nope.safetensors"]),
    ("lora-convert-text-file", ["lora", "convert", "{tmp}/fake.safetensors", "{tmp}/out.safetensors"]),
    ("lora-convert-onto-a-folder", ["lora", "convert", "{tmp}/lora.safetensors", "{tmp}/good_media", "--force"]),
    ("lora-convert-bad-layout", ["lora", "convert", "{tmp}/lora.safetensors", "--to", "onnx"]),
    ("cache-missing-dataset", ["cache", "{tmp}/nope", "--out", "{tmp}/cache_a", "--checkpoint", "{tmp}/nope.st"]),
    ("cache-no-checkpoint", ["cache", "{tmp}/good_media", "--out", "{tmp}/cache_b"]),
    ("cache-text-checkpoint",
     ["cache", "{tmp}/good_media", "--out", "{tmp}/cache_c", "--checkpoint", "{tmp}/fake.safetensors"]),
    ("cache-empty-dataset", ["cache", "{tmp}/bad_media", "--out", "{tmp}/cache_d", "--checkpoint", "{tmp}/nope.st"]),
    ("cache-import-missing", ["cache", "import-ltx-trainer", "{tmp}/nope", "--out", "{tmp}/cache_e"]),
    ("cache-import-text-file", ["cache", "import-ltx-trainer", "{tmp}/notes.txt", "--out", "{tmp}/cache_f"]),
    ("config-check-missing", ["config", "check", "{tmp}/nope.yaml"]),
    ("config-check-bad-value", ["config", "check", "{tmp}/bad_rank.yaml"]),
    ("config-check-not-yaml", ["config", "check", "{tmp}/broken.yaml"]),
    ("config-translate-text-file", ["config", "translate", "{tmp}/notes.txt"]),
    ("sweep-no-checkpoint", ["sweep", "{tmp}/lora.safetensors"]),
    ("sweep-missing-lora", ["sweep", "{tmp}/nope.safetensors", "--checkpoint", "{tmp}/fake.safetensors", "--out",
                            "{tmp}/g.mp4"]),
    ("sweep-folder-is-no-cache", ["sweep", "{tmp}/lora.safetensors", "--checkpoint", "{tmp}/fake.safetensors",
                                  "--out", "{tmp}/g.mp4", "--data", "{tmp}/good_media"]),
    ("sweep-bad-strengths", ["sweep", "{tmp}/lora.safetensors", "--checkpoint", "{tmp}/fake.safetensors", "--out",
                             "{tmp}/g.mp4", "--strengths", "lots"]),
]


def _write_inputs(tmp: Path) -> None:
    (tmp / "notes.txt").write_text("just some notes\n", encoding="utf-8")
    (tmp / "fake.safetensors").write_text("not a tensor file\n", encoding="utf-8")
    save_lora_file(tmp / "lora.safetensors", {"diffusion_model.a.lora_A.weight": torch.zeros(2, 4),
                                              "diffusion_model.a.lora_B.weight": torch.zeros(4, 2)}, {})
    (tmp / "good_media").mkdir()
    write_video(tmp / "good_media" / "clip.mp4", frames=9, size=(64, 64))
    (tmp / "good_media" / "clip.txt").write_text("a clip", encoding="utf-8")
    (tmp / "bad_media").mkdir()
    (tmp / "bad_media" / "notes.mp4").write_text("not a video\n", encoding="utf-8")
    (tmp / "bad_media" / "empty.mov").write_bytes(b"")
    (tmp / "broken_manifest").mkdir()
    (tmp / "broken_manifest" / "dataset.json").write_text("{not json", encoding="utf-8")
    (tmp / "list.yaml").write_text("- a\n- b\n", encoding="utf-8")
    (tmp / "broken.yaml").write_text("lora: {rank: [\n", encoding="utf-8")
    model = {"checkpoint": str(tmp / "fake.safetensors"), "device": "cpu", "dtype": "float32"}
    train = {"output_dir": str(tmp / "run"), "data": str(tmp / "good_media"), "model": model}
    configs = {
        "bad_rank": {**train, "lora": {"rank": -3}},
        "bad_name": {**train, "name": "../../escaped"},
        "no_cache": {**train, "data": str(tmp / "nope")},
        "text_checkpoint": train,
    }
    for name, cfg in configs.items():
        (tmp / f"{name}.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")


@pytest.fixture(scope="module")
def answers(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Every case run as a user runs it (a fresh `python -m trainer_core` process), a few at a time."""
    tmp = tmp_path_factory.mktemp("bad_inputs")
    _write_inputs(tmp)
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def run(argv: list[str]) -> subprocess.CompletedProcess:
        args = [a.replace("{tmp}", str(tmp)) for a in argv]
        return subprocess.run([sys.executable, "-m", "trainer_core", *args], cwd=tmp, env=env, capture_output=True,
                              text=True, timeout=300)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = pool.map(run, [argv for _, argv in CASES])
        return {case: result for (case, _), result in zip(CASES, results, strict=True)}


@pytest.mark.parametrize("case", [case for case, _ in CASES])
def test_bad_input_gives_a_message_not_a_traceback(answers, case):
    result = answers[case]
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode in (1, 2), (result.returncode, output)
    assert result.stderr.strip() or result.returncode == 1, "a refusal says why"


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001 - argparse
    return dict(sub.choices)


def test_every_command_and_action_has_bad_input_cases():
    covered = {tuple(argv[:2]) if argv[0] in ("lora", "config") else (argv[0],) for _, argv in CASES}
    wanted = set()
    for name, parser in _actions(build_parser()).items():
        has_actions = any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)  # noqa: SLF001
        wanted |= {(name, action) for action in _actions(parser)} if has_actions else {(name,)}
    assert wanted - covered == set(), "add bad-input cases for these commands"
