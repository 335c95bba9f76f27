"""The device pipeline: graph spec, pre-processing, engines' outputs decoded into predictions.

``graph`` parses ``pipeline.yaml``; ``preprocess`` turns frames and crops into input tensors
(shared with the trainer); ``postprocess`` and ``ssd`` decode raw outputs into items;
``pipeline`` runs the stages over loaded backends; ``prediction`` is the per-frame result
and its stable JSON form.
"""

from __future__ import annotations

from runtime.pipeline.graph import (
    PIPELINE_FORMAT,
    Anchors,
    ClassifyPost,
    CropSpec,
    PipelineSpec,
    PluginPost,
    PreSpec,
    SsdPost,
    StageSpec,
    TfliteSsdPost,
    YoloPost,
    load_pipeline_spec,
    parse_pipeline_spec,
)
from runtime.pipeline.pipeline import Decoder, Pipeline
from runtime.pipeline.plugins import PluginLoader, PreContext
from runtime.pipeline.postprocess import (
    PostContext,
    classify,
    decode_yolo_v5,
    decode_yolo_v8,
    nms,
)
from runtime.pipeline.prediction import Item, Prediction, StageResult
from runtime.pipeline.preprocess import (
    Letterbox,
    as_bgr,
    crop_box,
    crop_region,
    decode_image,
    preprocess,
)
from runtime.pipeline.ssd import decode_ssd, decode_tflite_ssd, ssd_anchors

__all__ = [
    "PIPELINE_FORMAT",
    "Anchors",
    "ClassifyPost",
    "CropSpec",
    "Decoder",
    "Item",
    "Letterbox",
    "Pipeline",
    "PipelineSpec",
    "PluginLoader",
    "PluginPost",
    "PostContext",
    "PreContext",
    "PreSpec",
    "Prediction",
    "SsdPost",
    "StageResult",
    "StageSpec",
    "TfliteSsdPost",
    "YoloPost",
    "as_bgr",
    "classify",
    "crop_box",
    "crop_region",
    "decode_image",
    "decode_ssd",
    "decode_tflite_ssd",
    "decode_yolo_v5",
    "decode_yolo_v8",
    "load_pipeline_spec",
    "nms",
    "parse_pipeline_spec",
    "preprocess",
    "ssd_anchors",
]
