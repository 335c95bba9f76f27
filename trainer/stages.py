"""The digit reader's pipeline stages: the single source of truth for training and deployment.

The trainer builds its inputs with these very specs and the device pipeline is written from
them, so a model is always trained on exactly what it will be fed:

* ``detector``: the whole frame, stretched to 96×96 gray in [0, 1]; its output is decoded as
  ``yolo_v8`` with one class-agnostic class, ``digit``.
* ``classifier``: one crop per detection (square, 15 % margin), 28×28 gray in [0, 1]; softmax.
"""

from __future__ import annotations

from runtime.pipeline.graph import (
    ClassifyPost,
    CropSpec,
    PipelineSpec,
    PreSpec,
    StageSpec,
    YoloPost,
)

__all__ = [
    "CLASSES",
    "CLASSIFIER_CROP",
    "CLASSIFIER_POST",
    "CLASSIFIER_PRE",
    "DETECTOR_POST",
    "DETECTOR_PRE",
    "ONTOLOGY_ID",
    "ONTOLOGY_VERSION",
    "pipeline_spec",
]

ONTOLOGY_ID = "digits"
ONTOLOGY_VERSION = 1
CLASSES = [str(d) for d in range(10)]
"""Ontology class names; class id ``i`` is the name ``str(i)``."""

DETECTOR_PRE = PreSpec(resize=(96, 96), color="gray", scale=1 / 255)
DETECTOR_POST = YoloPost(
    type="yolo_v8",
    score_threshold=0.35,
    nms_iou=0.3,
    class_agnostic=True,
    max_detections=10,
    classes=["digit"],
)
CLASSIFIER_CROP = CropSpec(margin=0.15, square=True)
CLASSIFIER_PRE = PreSpec(resize=(28, 28), color="gray", scale=1 / 255)
CLASSIFIER_POST = ClassifyPost(type="softmax", top_k=3)


def pipeline_spec() -> PipelineSpec:
    """The two-stage pipeline (detector, then classifier for each detection)."""
    return PipelineSpec(
        stages=[
            StageSpec(name="detector", model="detector", pre=DETECTOR_PRE, post=DETECTOR_POST),
            StageSpec(
                name="classifier",
                model="classifier",
                for_each="detector",
                crop=CLASSIFIER_CROP,
                pre=CLASSIFIER_PRE,
                post=CLASSIFIER_POST,
            ),
        ]
    )
