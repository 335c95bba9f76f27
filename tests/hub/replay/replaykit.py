"""Real bundles and a real history folder for the replay tests (not a test module).

The bundles hold a tiny ONNX classifier built with ``onnx.helper`` (no torch): the frame's mean
brightness ``m`` gives logits ``a (2 c_k m - c_k^2)``, so the class is the nearest of the
``centers`` (grey levels). Moving a center moves a decision boundary, which lets a test make a
candidate better or worse on exactly the grey levels one cohort's frames have. Frames are
uniform grey PNGs; the truth is the band of their level (apple < 85 <= banana < 170 <= cherry).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

from hub.replay.frames import HistoryFrame, TruthObject
from hub.replay.history import write_history
from runtime.bundle.build import build_bundle

CLASSES = ["apple", "banana", "cherry"]
TRUE_CENTERS = (42, 127, 212)
PIPELINE = {
    "format": "leanloop.pipeline/1",
    "stages": [
        {
            "name": "fruit",
            "model": "fruit",
            "pre": {"resize": [16, 16], "color": "gray", "scale": 1 / 255},
            "post": {"type": "softmax", "top_k": 3},
        }
    ],
}


def truth_of(level: int) -> str:
    return CLASSES[0 if level < 85 else 1 if level < 170 else 2]


def classifier_onnx(path: Path, centers: Sequence[float], sharpness: float = 60.0) -> Path:
    c = np.asarray(centers, np.float32) / 255.0
    w = (2 * sharpness * c)[None, :].astype(np.float32)
    b = (-sharpness * c * c).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["image"], ["m"], axes=[2, 3], keepdims=0),
            helper.make_node("MatMul", ["m", "w"], ["wm"]),
            helper.make_node("Add", ["wm", "b"], ["logits"]),
        ],
        "fruit",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(centers)])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def grey_png(level: int, size: int = 16) -> bytes:
    ok, buf = cv2.imencode(".png", np.full((size, size), level, np.uint8))
    assert ok
    return buf.tobytes()


def make_bundle(
    root: Path,
    version: int,
    centers: Sequence[float] = TRUE_CENTERS,
    ontology_version: int = 1,
    mapping: dict[str, str] | None = None,
    classes: Sequence[str] = CLASSES,
) -> Path:
    src = root / f"src-v{version}"
    (src / "models").mkdir(parents=True)
    (src / "golden").mkdir()
    classifier_onnx(src / "models" / "fruit.onnx", centers)
    (src / "pipeline.yaml").write_text(yaml.safe_dump(PIPELINE))
    onto = {"id": "fruit", "version": ontology_version, "classes": list(classes)}
    if mapping:
        onto["mapping_from_previous"] = mapping
    (src / "ontology.yaml").write_text(yaml.safe_dump(onto))
    (src / "golden" / "a.png").write_bytes(grey_png(42))
    out = root / f"bundle-v{version}"
    build_bundle(src, out, name="fruit", version=version)
    return out


def make_history(
    folder: Path, cohorts: dict[str, Sequence[int]], start: float = 1_700_000_000.0
) -> list[HistoryFrame]:
    """A history folder: for every cohort, one frame per listed grey level."""
    frames = []
    n = 0
    for cohort, levels in cohorts.items():
        for level in levels:
            png = grey_png(level)
            sha = hashlib.sha256(png).hexdigest()
            (folder / "images").mkdir(parents=True, exist_ok=True)
            (folder / "images" / sha).write_bytes(png)
            frames.append(
                HistoryFrame(
                    id=f"{n:06d}",
                    truth=(TruthObject(truth_of(level)),),
                    time=start + 60 * n,
                    device=f"{cohort}-cam",
                    cohort=cohort,
                    selection="random" if n % 3 == 0 else "strategy",
                    image_sha256=sha,
                )
            )
            n += 1
    write_history(folder, frames)
    return frames


def spread(lo: int, hi: int, n: int) -> list[int]:
    """``n`` grey levels spread evenly over [lo, hi]."""
    return [int(v) for v in np.linspace(lo, hi, n).round()]


def dump(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path
