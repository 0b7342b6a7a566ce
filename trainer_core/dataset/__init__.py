"""Dataset loading and clip preparation for LTX-2.3 LoRA training (plain Python, no ComfyUI).

Public API::

    from trainer_core.config.dataset import DatasetConfig
    from trainer_core.dataset import load_dataset, build_report, report_text

    ds = load_dataset(DatasetConfig(path="clips/", trigger="sks", buckets="768x448x49;768x448x1"))
    for item in ds.items:          # PreparedItem: id, source, source_size, source_mtime_ns, caption,
        frames = item.load_frames()  # bucket (W, H, F), fps, fingerprint; frames [F, H, W, 3] float 0..1
    ds.excluded                    # ExcludedItem: id, source, reason
    print(report_text(ds)); build_report(ds)  # the report as text / as a JSON-serializable dict

Modules: ``sources`` (folder + .txt sidecars, ltx-trainer manifests), ``media`` (PyAV/Pillow probe and
decode), ``buckets`` (parse and choose), ``prepare`` (resize, crop, 8n+1 trim, fps), ``captions`` (trigger and
checks), ``report`` (text and dict), ``contact_sheet`` (preview image), ``loader`` (``load_dataset``).
"""

from .buckets import Bucket, parse_buckets
from .loader import ExcludedItem, PreparedDataset, PreparedItem, load_dataset
from .media import MediaError, MediaInfo
from .report import build_report, report_text

__all__ = [
    "Bucket",
    "ExcludedItem",
    "MediaError",
    "MediaInfo",
    "PreparedDataset",
    "PreparedItem",
    "build_report",
    "load_dataset",
    "parse_buckets",
    "report_text",
]
