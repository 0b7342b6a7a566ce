"""DatasetConfig validation, bucket parsing and choice, the IMAGE-batch trim, and the generated CLI options."""

from __future__ import annotations

import argparse
import re

import pytest
import torch

from trainer_core.config import ConfigError, parse_section
from trainer_core.config.cli_options import add_section_arguments, section_from_args
from trainer_core.config.dataset import DEFAULT_BUCKETS, DatasetConfig
from trainer_core.dataset.buckets import Bucket, choose_bucket, parse_buckets
from trainer_core.frames import trim_to_8n1


def test_defaults_are_valid_buckets():
    buckets = parse_buckets(DatasetConfig().buckets)
    assert DatasetConfig().buckets == DEFAULT_BUCKETS
    assert all(b.width % 32 == 0 and b.height % 32 == 0 and (b.frames - 1) % 8 == 0 for b in buckets)
    assert {b.frames for b in buckets} == {1, 49}


@pytest.mark.parametrize(
    ("buckets", "expected"),
    [
        ("770x448x49", r"width 770 is not a positive multiple of 32 \(try 768\)"),
        ("768x450x49", r"height 450 .* \(try 448\)"),
        ("768x448x48", r"frames 48 is not 8n\+1 \(try 41\)"),
        ("768x448", r"not WxHxF"),
        ("", r"no buckets"),
    ],
)
def test_bad_buckets_name_the_field_and_the_fix(buckets, expected):
    with pytest.raises(ConfigError, match=r"buckets = ") as err:
        parse_section(DatasetConfig, {"buckets": buckets})
    assert re.search(expected, str(err.value))


@pytest.mark.parametrize(("field", "value"), [("target_fps", 0), ("crop", "left"), ("trim_start", "end"),
                                              ("seed", -1), ("caption_token_budget", 1), ("colour", "red")])
def test_bad_values_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        parse_section(DatasetConfig, {field: value})


def test_trigger_is_stripped():
    assert DatasetConfig(trigger="  sks ").trigger == "sks"


BUCKETS = parse_buckets("768x448x49;448x768x49;576x576x49;768x448x25;768x448x1;448x768x1")


@pytest.mark.parametrize(
    ("size", "frames", "expected"),
    [
        ((1920, 1080), 200, "768x448x49"),  # aspect first, then the most frames
        ((1080, 1920), 200, "448x768x49"),
        ((1000, 1000), 60, "576x576x49"),
        ((1920, 1080), 30, "768x448x25"),  # only buckets it can fill
        ((1920, 1080), 1, "768x448x1"),  # stills go to F=1
        ((1080, 1920), 1, "448x768x1"),
    ],
)
def test_choose_bucket(size, frames, expected):
    assert str(choose_bucket(BUCKETS, *size, frames)) == expected


def test_video_is_not_reduced_to_a_still_while_video_buckets_exist():
    assert choose_bucket(BUCKETS, 1920, 1080, 20) is None
    assert choose_bucket(parse_buckets("768x448x1"), 1920, 1080, 20) == Bucket(768, 448, 1)


def test_area_breaks_ties():
    buckets = parse_buckets("512x512x9;256x256x9")
    assert choose_bucket(buckets, 100, 100, 9) == Bucket(512, 512, 9)


@pytest.mark.parametrize(("n", "policy", "kept"), [
    (30, "first", list(range(25))), (30, "centre", list(range(2, 27))), (30, "last", list(range(5, 30))),
    (9, "centre", list(range(9))), (1, "last", [0]), (8, "first", [0]),
])
def test_trim_to_8n1(n, policy, kept):
    images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 2, 2, 3)
    out = trim_to_8n1(images, policy)
    assert out[:, 0, 0, 0].tolist() == kept


def test_trim_rejects_empty_and_bad_policy():
    with pytest.raises(ValueError, match="empty"):
        trim_to_8n1(torch.zeros(0, 2, 2, 3))
    with pytest.raises(ValueError, match="middle"):
        trim_to_8n1(torch.zeros(9, 2, 2, 3), "middle")


def test_cli_options_cover_every_field():
    parser = argparse.ArgumentParser()
    add_section_arguments(parser, DatasetConfig, aliases={"target_fps": ["--fps"]})
    args = parser.parse_args(["--path", "x", "--trigger", "sks", "--buckets", "64x64x17", "--fps", "12",
                              "--crop", "random", "--trim-start", "center", "--seed", "5",
                              "--caption-token-budget", "200", "--skip-audio", "--references-dir", "refs",
                              "--reference-downscale-factor", "2", "--reference-temporal-scale-factor", "2"])
    cfg = section_from_args(DatasetConfig, args)
    assert cfg.model_dump() == {"path": "x", "trigger": "sks", "buckets": "64x64x17", "target_fps": 12.0,
                                "crop": "random", "trim_start": "center", "seed": 5, "caption_token_budget": 200,
                                "skip_audio": True, "references_dir": "refs", "reference_downscale_factor": 2,
                                "reference_temporal_scale_factor": 2}
    assert section_from_args(DatasetConfig, parser.parse_args([])) == DatasetConfig()
    with pytest.raises(SystemExit):
        parser.parse_args(["--crop", "left"])
