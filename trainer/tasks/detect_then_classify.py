"""Two stages: a class-agnostic detector finds objects, a classifier names each crop.

The detector learns every box as one class (``object``); the classifier learns the boxes'
classes from crops cut by the device's own :func:`runtime.pipeline.preprocess.crop_box` with the
pipeline's crop spec, so it sees what the device will give it. The pipeline is the digit
reader's shape: ``detector`` then ``classifier`` ``for_each`` detection.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from runtime.pipeline.graph import ClassifyPost, CropSpec, PipelineSpec, StageSpec
from runtime.pipeline.preprocess import crop_box
from trainer.arch import FcosDetector, build_classifier, build_detector
from trainer.datasets.model import Dataset, DatasetError
from trainer.spec import ModelSpec, TrainingSpec
from trainer.tasks import classify, detect
from trainer.tasks._common import (
    ExportedNet,
    OnEpoch,
    TaskResult,
    device_pre,
    stratified_split,
    uint8_inputs,
)

__all__ = ["CROP", "DEFAULT_CROP_MODEL", "train"]

CROP = CropSpec(margin=0.15, square=True)
DEFAULT_CROP_MODEL = ModelSpec(architecture="mobilenet_v3_small", width=0.5, input_size=(64, 64))


def _crops(
    images: list[np.ndarray], dataset: Dataset, idx: list[int], spec: ModelSpec
) -> tuple[np.ndarray, np.ndarray]:
    crops, labels = [], []
    for i in idx:
        for b in dataset.items[i].boxes:
            c = crop_box(images[i], b.xyxy(), CROP)
            if c is not None:
                crops.append(c)
                labels.append(dataset.class_index(b.label))
    if not crops:
        raise DatasetError([f"dataset {dataset.name}: no box large enough to crop"])
    x, _ = uint8_inputs(crops, spec)
    return x, np.asarray(labels, np.int64)


def train(
    spec: TrainingSpec,
    dataset: Dataset,
    root: Path,
    device: torch.device,
    init: torch.nn.Module | None = None,
    on_epoch: OnEpoch | None = None,
) -> TaskResult:
    """Train both stages. ``init`` warm-starts them: a detector, or a ``ModuleDict`` with a
    ``detector`` and/or a ``classifier`` (:func:`trainer.run._initial_model`)."""
    classes = dataset.classes
    crop_spec = spec.crop_model or DEFAULT_CROP_MODEL
    x, targets, images = detect.box_targets(dataset, root, spec.model, agnostic=True)
    keys = [
        dataset.items[i].boxes[0].label if dataset.items[i].boxes else "none"
        for i in range(len(targets))
    ]
    tr, va = stratified_split(keys, spec.dataset.val_fraction, spec.seed)
    stages: dict[str, torch.nn.Module | None] = (
        dict(init.items()) if isinstance(init, torch.nn.ModuleDict) else {"detector": init}
    )
    det = stages.get("detector")
    det = build_detector(spec.model, 1) if det is None else det
    if not isinstance(det, FcosDetector):
        raise DatasetError(
            ["a detector warm start must be a state dict of this trainer's detector"]
        )
    det_hook = None if on_epoch is None else (lambda r: on_epoch("detector", r))
    det_fit = detect.fit_detector(
        det, x[tr], [targets[i] for i in tr], x[va], [targets[i] for i in va],
        ["object"], spec, device, det_hook,
    )  # fmt: skip
    det.cpu()
    det_eval = detect.evaluate_detector(
        det, x[va], [targets[i] for i in va], ["object"], torch.device("cpu"), spec.score_threshold
    )
    cx_tr, cy_tr = _crops(images, dataset, tr, crop_spec)
    cx_va, cy_va = _crops(images, dataset, va, crop_spec)
    clf = stages.get("classifier")
    clf = build_classifier(crop_spec, len(classes)) if clf is None else clf
    cls_hook = None if on_epoch is None else (lambda r: on_epoch("classifier", r))
    cls_spec = spec.model_copy(update={"model": crop_spec})
    cls_fit = classify.fit_classifier(
        clf, cx_tr, cy_tr, cx_va, cy_va, classes, cls_spec, device, cls_hook
    )
    clf.cpu()
    cls_eval = classify.evaluate_classifier(clf, cx_va, cy_va, classes, torch.device("cpu"))
    w, h = spec.model.input_size
    ch = 1 if spec.model.color == "gray" else 3
    cw, chh = crop_spec.input_size
    cch = 1 if crop_spec.color == "gray" else 3
    pipeline_stages = [
        detect.pipeline_stage(spec.model, ["object"], spec.score_threshold),
        StageSpec(
            name="classifier",
            model="classifier",
            for_each="detector",
            crop=CROP,
            pre=device_pre(crop_spec),
            post=ClassifyPost(type="softmax", top_k=3),
        ),
    ]
    return TaskResult(
        nets={
            "detector": ExportedNet(det, "images", "detections", (ch, h, w), spec.model),
            "classifier": ExportedNet(clf, "crops", "logits", (cch, chh, cw), crop_spec),
        },
        pipeline=PipelineSpec(stages=pipeline_stages),
        classes=classes,
        metrics={"detector": det_eval, "classifier": cls_eval},
        fits={"detector": det_fit, "classifier": cls_fit},
        counts={
            "train": classify._counts(cy_tr, classes),
            "val": classify._counts(cy_va, classes),
        },
        golden=[images[i] for i in va[:4]],
    )
