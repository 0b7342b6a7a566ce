"""Dataset nodes: *Load LTX Training Dataset*, *Trim Frames to 8n+1* and *Dataset Preview*.

The dataset travels on the ``LTX_TRAINING_DATASET`` socket as a ``trainer_core.dataset.PreparedDataset``
(items described cheaply; frames decoded per item by ``item.load_frames()``).
"""

from __future__ import annotations

from comfy_api.latest import io, ui

from ..trainer_core.config.dataset import ContactSheetConfig, DatasetConfig, TrimFramesConfig
from ..trainer_core.dataset import load_dataset, report_text
from ..trainer_core.dataset.contact_sheet import contact_sheet
from ..trainer_core.dataset.report import summary_line
from ..trainer_core.dataset.sources import check_dataset_path, dataset_fingerprint
from ..trainer_core.frames import trim_to_8n1
from ._node import PackNode
from ._sockets import TRAINING_DATASET
from ._validate import validation_result
from ._widgets import category, section_from_inputs, section_inputs


class LoadDataset(PackNode):
    """Folder or manifest in; the prepared dataset and its report out (nothing is decoded in full here)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LtxLoraLoadDataset",
            display_name="Load LTX Training Dataset",
            category=category("Dataset"),
            description="Lists clips and images with their captions, picks a bucket for each, plans the resize, "
            "crop, 8n+1 trim and fps, and reports what changes and what is excluded. Frames are decoded later, "
            "one item at a time.",
            inputs=section_inputs(DatasetConfig),
            outputs=[
                TRAINING_DATASET.Output(display_name="dataset", tooltip="The prepared dataset (lazy frames)."),
                io.String.Output(display_name="report", tooltip="Per-item status, changes and caption findings."),
            ],
        )

    @classmethod
    def validate_inputs(cls, **kwargs) -> bool | str:
        return validation_result(lambda: check_dataset_path(section_from_inputs(DatasetConfig, kwargs).path))

    @classmethod
    def fingerprint_inputs(cls, **kwargs) -> str:
        return dataset_fingerprint(kwargs.get("path", ""))  # re-run when files in the folder change

    @classmethod
    def execute(cls, **kwargs) -> io.NodeOutput:
        ds = load_dataset(section_from_inputs(DatasetConfig, kwargs))
        ds.require_items()  # the error lists every excluded entry with its reason, as the report would
        return io.NodeOutput(ds, report_text(ds), ui=ui.PreviewText(summary_line(ds)))


class TrimFrames(PackNode):
    """IMAGE batch in, the largest 8n+1 frames of it out."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LtxLoraTrimFrames",
            display_name="Trim Frames to 8n+1",
            category=category("Dataset"),
            description="Cuts an IMAGE batch to the largest 8n+1 frame count (1, 9, 17, 25, ...) that LTX-2.3 "
            "accepts, keeping the first, centre or last frames.",
            inputs=[io.Image.Input("images", tooltip="Frames to trim (any count)."), *section_inputs(TrimFramesConfig)],
            outputs=[io.Image.Output(display_name="images", tooltip="The kept 8n+1 frames.")],
        )

    @classmethod
    def execute(cls, images, **kwargs) -> io.NodeOutput:
        cfg = section_from_inputs(TrimFramesConfig, kwargs)
        return io.NodeOutput(trim_to_8n1(images, cfg.policy))


class DatasetPreview(PackNode):
    """A contact sheet of the dataset's first frames, labelled with each item's status."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LtxLoraDatasetPreview",
            display_name="Dataset Preview",
            category=category("Dataset"),
            description="Shows the first prepared frame of every item (as it will be trained) with its status: "
            "ok, adjusted or excluded.",
            inputs=[
                TRAINING_DATASET.Input("dataset", tooltip="A dataset from Load LTX Training Dataset."),
                *section_inputs(ContactSheetConfig),
            ],
            outputs=[io.Image.Output(display_name="contact_sheet", tooltip="The contact sheet as an IMAGE.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, dataset, **kwargs) -> io.NodeOutput:
        cfg = section_from_inputs(ContactSheetConfig, kwargs)
        failures: list[str] = []
        sheet = contact_sheet(dataset, cfg.columns, cfg.tile_width, cfg.max_items, failures)
        shown = ui.PreviewImage(sheet, cls=cls)
        return io.NodeOutput(sheet, ui={**shown.as_dict(), "text": ("\n".join(failures),)} if failures else shown)


NODES = [LoadDataset, TrimFrames, DatasetPreview]
