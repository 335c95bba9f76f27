"""The networks and pipeline graphs :mod:`bench.inference` measures.

A MobileNetV2-size classifier (224×224, 1000 classes), a YOLOv8n-class detector (320×320,
80 classes) that always finds the three :data:`YOLO_BOXES`, and the demo's digit detector and
classifier, exported by the trainer's own exporters to the engines' formats; and the graphs
that run them: MobileNet alone (:func:`mobilenet_spec`) and YOLOv8n -> MobileNet for each
box (:func:`realistic_spec`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.timing import say

__all__ = [
    "TARGET_FAN_OUT",
    "TARGET_SINGLE",
    "YOLO_BOXES",
    "YOLO_SIZE",
    "export_models",
    "mobilenet_spec",
    "realistic_spec",
]


def export_models(work: Path, quick: bool) -> dict[str, Any]:
    """Export the benchmark networks; returns paths and what could not be exported."""
    from bench.models import FixedBoxesDetector, MobileNetV2Like, YoloV8nLike
    from trainer.export import CLASSIFIER_IO, DETECTOR_IO, export_onnx
    from trainer.export_formats import export_openvino, export_tflite, tflite_unavailable_reason
    from trainer.models import DigitClassifier
    from trainer.source import write_bundle_source
    from trainer.stages import pipeline_spec  # noqa: F401  (same graph as the device bundle)
    from trainer.train import TrainedModels

    t0 = time.perf_counter()
    tflite_reason = tflite_unavailable_reason()
    net = MobileNetV2Like().eval()
    files = {"onnx": work / "mobilenet.onnx", "openvino": work / "mobilenet.xml"}
    # Random weights give large logits; a looser check still catches a broken export.
    export_onnx(net, files["onnx"], "images", "logits", (3, 224, 224), tolerance=1e-2)
    export_openvino(net, files["onnx"], files["openvino"], (3, 224, 224), tolerance=1e-2)
    if tflite_reason is None:
        files["tflite"] = work / "mobilenet.tflite"
        export_tflite(net, files["tflite"], (3, 224, 224), tolerance=1e-2)
    yolo = YoloV8nLike(YOLO_BOXES, size=YOLO_SIZE).eval()
    files["yolo"] = work / "yolov8n.onnx"
    # The output holds pixel coordinates up to 320 plus 1e-6 x the network: 1e-2 is loose
    # enough for any engine rounding and still catches a broken export.
    export_onnx(yolo, files["yolo"], "images", "output0", (3, YOLO_SIZE, YOLO_SIZE), 1e-2)
    boxes = [(20.0, 48.0, 18.0, 18.0), (48.0, 48.0, 18.0, 18.0), (76.0, 48.0, 18.0, 18.0)]
    det = FixedBoxesDetector(boxes).eval()
    cls = DigitClassifier().eval()
    two = {"detector": work / "detector.onnx", "classifier": work / "classifier.onnx"}
    export_onnx(det, two["detector"], *DETECTOR_IO)
    export_onnx(cls, two["classifier"], *CLASSIFIER_IO)
    formats = ("openvino", "tflite") if tflite_reason is None else ("openvino",)
    golden = [np.zeros((96, 96, 3), np.uint8)]
    source = write_bundle_source(work / "source", TrainedModels(det, cls), golden, {}, formats)
    say(f"models exported in {time.perf_counter() - t0:.0f} s")
    return {"mobilenet": files, "two_stage": two, "source": source, "tflite_skip": tflite_reason}


YOLO_SIZE = 320
YOLO_BOXES = [(80.0, 160.0, 60.0, 90.0, 0), (160.0, 160.0, 60.0, 90.0, 2),
              (240.0, 160.0, 60.0, 90.0, 5)]  # fmt: skip
"""(cx, cy, w, h, class) in detector-input pixels: on the 640×480 frame letterboxed to 320×320
(scale 0.5, 40 px of padding top and bottom) these are three 120×180 objects side by side."""
TARGET_SINGLE = 1.05
TARGET_FAN_OUT = 1.10


def mobilenet_spec() -> Any:
    from runtime.pipeline.graph import ClassifyPost, PipelineSpec, PreSpec, StageSpec

    pre = PreSpec(
        resize=(224, 224),
        color="rgb",
        scale=1 / 255,
        mean=[0.485, 0.456, 0.406],
        std=[0.229, 0.224, 0.225],
    )
    stage = StageSpec(name="net", model="net", pre=pre, post=ClassifyPost(type="softmax", top_k=5))
    return PipelineSpec(stages=[stage])


def realistic_spec() -> Any:
    """YOLOv8n at 320 (letterboxed, as Ultralytics does) -> MobileNet at 224 for each box."""
    from runtime.pipeline.graph import (
        ClassifyPost,
        CropSpec,
        PipelineSpec,
        PreSpec,
        StageSpec,
        YoloPost,
    )

    det_pre = PreSpec(resize=(YOLO_SIZE, YOLO_SIZE), mode="letterbox", color="rgb", scale=1 / 255)
    det_post = YoloPost(
        type="yolo_v8",
        score_threshold=0.25,
        nms_iou=0.45,
        max_detections=100,
        classes=[f"object{i}" for i in range(80)],
    )
    cls_pre = mobilenet_spec().stages[0].pre
    return PipelineSpec(
        stages=[
            StageSpec(name="detector", model="detector", pre=det_pre, post=det_post),
            StageSpec(
                name="classifier",
                model="classifier",
                for_each="detector",
                crop=CropSpec(margin=0.1),
                pre=cls_pre,
                post=ClassifyPost(type="softmax", top_k=5),
            ),
        ]
    )
