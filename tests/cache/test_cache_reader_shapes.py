"""Reading a cache refuses a tensor whose shape is not the one its manifest records, naming the file and the fix."""

from __future__ import annotations

import json

import pytest

from tests.engine_support import write_cache
from trainer_core.cache.encoders import CacheError
from trainer_core.cache.reader import CachedData


@pytest.mark.parametrize(("field", "file"), [("latent_shape", "latents/clip_0"), ("text_shape", "text/clip_0")])
def test_a_tensor_unlike_its_manifest_shape_is_refused(tmp_path, field, file):
    folder = write_cache(tmp_path / "cache", [24.0, 24.0])
    manifest = json.loads((folder / "manifest.json").read_text())
    recorded = manifest["items"]["clip_0"][field]
    manifest["items"]["clip_0"][field] = [*recorded[:-1], recorded[-1] + 1]  # the manifest and file disagree
    (folder / "manifest.json").write_text(json.dumps(manifest))
    data = CachedData(folder)
    assert data[1].key == "clip_1"  # the other clip still reads
    with pytest.raises(CacheError, match=f"{file}.safetensors has shape .* run the cache step again"):
        data[0]
