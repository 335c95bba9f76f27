"""Build real bundles for the shadow tests (not a test module).

The production bundle is the integration kit's two-stage pipeline (a constant-box YOLOv8-layout
detector, then the torch-exported brightness classifier on each box). Candidates vary it: the
same models under a new version (identical), the ontology with two labels swapped (a candidate
that confuses exactly those two classes), or a ``pre`` plug-in from ``shadow_plugins`` on the
detector stage that misbehaves on poison frames.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import cv2
import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "runtime" / "pipeline"))
sys.path.insert(0, str(HERE))
from pipeline_models import make_constant_detector, yolo_v8_preds  # noqa: E402

from runtime.bundle.build import build_bundle  # noqa: E402

BOXES = [(25.0, 25.0, 30.0, 30.0), (70.0, 70.0, 40.0, 40.0)]
CLASSES = [str(i) for i in range(10)]

PIPELINE = {
    "format": "leanloop.pipeline/1",
    "stages": [
        {
            "name": "detector",
            "model": "detector",
            "pre": {"resize": [96, 96], "color": "gray", "scale": 1 / 255},
            "post": {
                "type": "yolo_v8",
                "score_threshold": 0.3,
                "nms_iou": 0.3,
                "class_agnostic": True,
                "classes": ["digit"],
            },
        },
        {
            "name": "classifier",
            "model": "classifier",
            "for_each": "detector",
            "crop": {"margin": 0.0},
            "pre": {"resize": [28, 28], "color": "gray", "scale": 1 / 255},
            "post": {"type": "softmax", "top_k": 3},
        },
    ],
}


def frame(levels: tuple[int, int] = (60, 200)) -> np.ndarray:
    """96×96 frame, two patches read as classes round(9 * level / 255): (60, 200) -> 2, 7.
    A first level of 250+ makes it a poison frame for ``shadow_plugins``."""
    img = np.zeros((96, 96, 3), np.uint8)
    img[10:40, 10:40] = levels[0]
    img[50:90, 50:90] = levels[1]
    return img


def png(levels: tuple[int, int] = (60, 200)) -> bytes:
    ok, buf = cv2.imencode(".png", frame(levels))
    assert ok
    return buf.tobytes()


def build(
    root: Path,
    classifier: Path,
    version: int,
    *,
    plugin: str | None = None,
    swap: tuple[str, str] | None = None,
    name: str = "digits",
) -> Path:
    """A built bundle ``<root>/bundle-v<version>``; ``plugin`` sets the detector's pre plug-in,
    ``swap`` exchanges two ontology labels."""
    src = root / f"src-v{version}"
    (src / "models").mkdir(parents=True)
    (src / "golden").mkdir()
    make_constant_detector(
        src / "models" / "detector.onnx", yolo_v8_preds([(*b, [0.9]) for b in BOXES])
    )
    (src / "models" / "classifier.onnx").write_bytes(classifier.read_bytes())
    pipe = copy.deepcopy(PIPELINE)
    if plugin is not None:
        pipe["stages"][0]["pre"]["plugin"] = f"shadow_plugins:{plugin}"
    (src / "pipeline.yaml").write_text(yaml.safe_dump(pipe))
    classes = list(CLASSES)
    if swap is not None:
        i, j = classes.index(swap[0]), classes.index(swap[1])
        classes[i], classes[j] = classes[j], classes[i]
    (src / "ontology.yaml").write_text(
        yaml.safe_dump({"id": "digits", "version": 1, "classes": classes})
    )
    cv2.imwrite(str(src / "golden" / "000.png"), frame())
    out = root / f"bundle-v{version}"
    build_bundle(src, out, name=name, version=version)
    return out
