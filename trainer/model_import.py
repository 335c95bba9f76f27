"""``leanloop model import``: an existing ONNX, TFLite or OpenVINO model → a bundle source.

The model's input and output signatures (read by the engine that will run it on the device)
decide what can be guessed, and anything that cannot is *asked for* with one error that lists
the options:

- **input**: ``[1, 3, H, W]`` (NCHW, RGB), ``[1, H, W, 3]`` (NHWC), one channel (gray); a
  dynamic height/width needs ``--input-size``; uint8 inputs get raw pixels, float inputs
  ``scale`` 1/255 (the YOLO and most exporters' convention; ``--scale``/``--mean``/``--std``
  override);
- **classification**: one output ``[1, C]`` with C = the number of labels: ``softmax``, or
  ``identity`` when the model already outputs probabilities (checked on the golden images);
- **detection**: one output ``[1, 4 + C, N]`` is YOLOv8 (and later: class scores already
  sigmoid), ``[1, N, 5 + C]`` YOLOv5 (objectness + class scores); two outputs ``[1, N, 4]``
  and ``[1, N, C + 1]`` are SSD (box deltas and class logits with background at 0), whose
  anchors are not in the model: ``--anchors FILE`` (YAML of :class:`runtime.pipeline.graph.
  Anchors`). ``--decoder`` settles an ambiguous shape.

It writes ``pipeline.yaml`` (validated by the device's own parser), ``ontology.yaml``,
``models/<key>.<ext>`` (OpenVINO's ``.bin`` beside its ``.xml``; more files of the same network
in other formats become alternates) and ``golden/*.png`` (the user's ``--golden`` images, else
deterministic synthetic frames) — ready for ``leanloop bundle build``. Torch-free.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
from pydantic import ValidationError

from runtime.backends import load_backend
from runtime.backends.base import BackendOptions
from runtime.bundle.manifest import Ontology, TensorSpec
from runtime.errors import ConfigError, LeanloopError, PipelineError
from runtime.pipeline.graph import PIPELINE_FORMAT, Anchors, load_pipeline_spec

__all__ = ["DECODERS", "ImportOptions", "import_model", "recognise"]

_ENGINES = {".onnx": "onnxruntime", ".xml": "openvino", ".tflite": "litert"}
DECODERS = ("yolo_v8", "yolo_v5", "ssd", "softmax", "sigmoid", "identity")
_GOLDEN_FRAMES = 3


class ModelImportError(ConfigError):
    """The model cannot be imported as asked; the message says what to add."""


@dataclass
class ImportOptions:
    """What the user told (None: guess)."""

    task: str
    labels: list[str]
    ontology_id: str = "imported"
    decoder: str | None = None
    input_size: tuple[int, int] | None = None  # (width, height)
    color: str | None = None
    scale: float | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    anchors: Path | None = None
    score_threshold: float = 0.25
    golden: list[Path] = field(default_factory=list)


def _dims(t: TensorSpec) -> list[int | None]:
    return [d if isinstance(d, int) and d > 0 else None for d in t.shape]


def _input_pre(inp: TensorSpec, opts: ImportOptions) -> dict[str, Any]:
    d = _dims(inp)
    if len(d) != 4:
        raise ModelImportError(
            f"input {inp.name!r} has shape {inp.shape}; an image model takes 4 dimensions "
            "[1, C, H, W] or [1, H, W, C]"
        )
    if d[1] in (1, 3) and d[3] not in (1, 3):
        layout, ch, h, w = "nchw", d[1], d[2], d[3]
    elif d[3] in (1, 3):
        layout, ch, h, w = "nhwc", d[3], d[1], d[2]
    elif d[1] in (1, 3):
        layout, ch, h, w = "nchw", d[1], d[2], d[3]
    else:
        raise ModelImportError(
            f"input {inp.name!r} has shape {inp.shape}: cannot tell the channel axis "
            "(1 or 3 channels expected at axis 1 or 3)"
        )
    if opts.input_size is not None:
        w, h = opts.input_size
    if w is None or h is None:
        raise ModelImportError(
            f"input {inp.name!r} has a dynamic size {inp.shape}: pass --input-size WxH"
        )
    dtype = inp.dtype if inp.dtype in ("float32", "uint8", "int8") else None
    if dtype is None:
        raise ModelImportError(f"input {inp.name!r} is {inp.dtype}; float32, uint8, int8 expected")
    color = opts.color or ("gray" if ch == 1 else "rgb")
    pre: dict[str, Any] = {"resize": [int(w), int(h)], "color": color, "layout": layout}
    if dtype == "float32":
        pre["scale"] = opts.scale if opts.scale is not None else 1 / 255
    elif opts.scale is not None:
        pre["scale"] = opts.scale
    if dtype != "float32":
        pre["dtype"] = dtype
    if opts.mean is not None:
        pre["mean"] = opts.mean
    if opts.std is not None:
        pre["std"] = opts.std
    return pre


def recognise(outputs: list[TensorSpec], task: str, n_classes: int) -> list[str]:
    """The decoders whose output convention these outputs match (may be several, or none)."""
    shapes = [_dims(o) for o in outputs]
    c = n_classes
    found: list[str] = []
    if task == "classification":
        if len(shapes) >= 1 and len(shapes[0]) == 2 and shapes[0][1] == c:
            found.append("softmax")
        return found
    if len(shapes) == 1 and len(shapes[0]) == 3:
        _, a, b = shapes[0]
        if a == 4 + c and (b is None or b != 4 + c):
            found.append("yolo_v8")
        if b == 5 + c and (a is None or a != 5 + c):
            found.append("yolo_v5")
    if len(shapes) == 2 and all(len(s) == 3 for s in shapes):
        last = {s[2] for s in shapes}
        if last == {4, c + 1}:
            found.append("ssd")
    return found


def _describe(outputs: list[TensorSpec]) -> str:
    return ", ".join(f"{o.name} {list(o.shape)}" for o in outputs)


def _post(outputs: list[TensorSpec], opts: ImportOptions) -> dict[str, Any]:
    c = len(opts.labels)
    found = recognise(outputs, opts.task, c)
    decoder = opts.decoder
    if decoder is None:
        if len(found) != 1:
            why = "matches several conventions" if found else "matches no known convention"
            expect = (
                f"[1, {c}] for {c} labels"
                if opts.task == "classification"
                else f"[1, {4 + c}, N] (yolo_v8), [1, N, {5 + c}] (yolo_v5), or [1, N, 4] + "
                f"[1, N, {c + 1}] (ssd) for {c} labels"
            )
            raise ModelImportError(
                f"the outputs ({_describe(outputs)}) {why} ({', '.join(found) or '-'}); "
                f"expected {expect}; check --labels, or pass --decoder "
                f"{'|'.join(DECODERS if opts.task == 'detection' else DECODERS[3:])}"
            )
        decoder = found[0]
    if opts.task == "classification":
        if decoder not in ("softmax", "sigmoid", "identity"):
            raise ModelImportError(f"--decoder {decoder} is not a classification decoder")
        return {"type": decoder, "top_k": min(3, c)}
    if decoder not in ("yolo_v8", "yolo_v5", "ssd"):
        raise ModelImportError(f"--decoder {decoder} is not a detection decoder")
    post: dict[str, Any] = {"type": decoder, "score_threshold": opts.score_threshold}
    if decoder == "ssd":
        if opts.anchors is None:
            raise ModelImportError(
                "SSD outputs recognised, but the anchors are not part of the model: pass "
                "--anchors FILE (YAML: feature_maps [[w, h], ...], sizes [[s, ...], ...], "
                "aspect_ratios [...], variances [0.1, 0.2])"
            )
        try:
            anchors = Anchors.model_validate(yaml.safe_load(opts.anchors.read_text()))
        except (OSError, yaml.YAMLError, ValidationError) as e:
            raise ModelImportError(f"{opts.anchors}: {str(e).splitlines()[0]}") from e
        post["anchors"] = anchors.model_dump(mode="json")
        boxes = next(i for i, o in enumerate(outputs) if _dims(o)[2] == 4)
        post["boxes_output"], post["scores_output"] = boxes, 1 - boxes
    return post


def _synthetic_frames(w: int, h: int) -> list[np.ndarray]:
    """Deterministic frames for the health check: gradients, a few shapes, fixed noise."""
    rng = np.random.default_rng(0)
    frames: list[np.ndarray] = []
    for k in range(_GOLDEN_FRAMES):
        x = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
        y = np.linspace(0, 255, h, dtype=np.float32)[:, None, None]
        img = np.concatenate([x + 0 * y, y + 0 * x, (x + y) / 2], axis=2).astype(np.uint8)
        img = np.ascontiguousarray(np.roll(img, k * 7, axis=1))
        cv2.rectangle(img, (w // 4, h // 4), (w // 2, h // 2), (40 * k, 200, 90), -1)
        frames.append(cv2.add(img, rng.integers(0, 20, img.shape, dtype=np.uint8)))
    return frames


def _read_labels(labels: list[str]) -> list[str]:
    if len(labels) == 1 and Path(labels[0]).is_file():
        text = Path(labels[0]).read_text(encoding="utf-8")
        labels = [ln.strip() for ln in text.splitlines() if ln.strip()]
    elif len(labels) == 1 and "," in labels[0]:
        labels = [x.strip() for x in labels[0].split(",") if x.strip()]
    if not labels or len(set(labels)) != len(labels):
        raise ModelImportError("--labels must name distinct classes (a list, a,b,c, or a file)")
    return labels


def import_model(files: list[Path], opts: ImportOptions, out: Path) -> dict[str, Any]:
    """Write the bundle source ``out`` (must not exist) and return what was decided.

    Raises ModelImportError (what to add), LeanloopError (the engine cannot load the model).
    """
    if opts.task not in ("classification", "detection"):
        raise ModelImportError("--task must be classification or detection")
    opts.labels = _read_labels(opts.labels)
    if out.exists():
        raise ModelImportError(f"{out}: already exists")
    models = [f for f in files if f.suffix in _ENGINES]
    if not models:
        raise ModelImportError("no model file: give a .onnx, .tflite or OpenVINO .xml file")
    for f in files:
        if not f.is_file():
            raise ModelImportError(f"{f}: no such file")
        if f.suffix not in _ENGINES and f.suffix != ".bin":
            raise ModelImportError(f"{f}: not a model file (.onnx, .tflite, .xml + .bin)")
    primary = next((f for f in models if f.suffix == ".onnx"), models[0])
    eng = load_backend(_ENGINES[primary.suffix], primary, BackendOptions(warmup_runs=0))
    try:
        inputs, outputs = list(eng.inputs), list(eng.outputs)
        if len(inputs) != 1:
            raise ModelImportError(f"the model has {len(inputs)} inputs; one image input expected")
        pre = _input_pre(inputs[0], opts)
        post = _post(outputs, opts)
        key = "classifier" if opts.task == "classification" else "detector"
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            (tmp / "models").mkdir()
            for f in files:
                ext = ".bin" if f.suffix == ".bin" else f.suffix
                shutil.copyfile(f, tmp / "models" / f"{key}{ext}")
            golden = tmp / "golden"
            golden.mkdir()
            frames = _synthetic_frames(*pre["resize"])
            if opts.golden:
                frames = []
                for src in opts.golden:
                    img = cv2.imread(str(src), cv2.IMREAD_COLOR)
                    if img is None:
                        raise ModelImportError(f"{src}: golden image does not decode")
                    frames.append(img)
            for i, frame in enumerate(frames):
                ok, png = cv2.imencode(".png", frame)
                assert ok
                (golden / f"{i:03d}.png").write_bytes(png.tobytes())
            if post["type"] == "softmax" and _already_probabilities(eng, inputs[0], pre, frames):
                post["type"] = "identity"
            pipeline = {
                "format": PIPELINE_FORMAT,
                "stages": [{"name": key, "model": key, "pre": pre, "post": post}],
            }
            text = "# written by leanloop model import\n" + yaml.safe_dump(
                pipeline, sort_keys=False
            )
            try:
                load_pipeline_spec(text)
            except PipelineError as e:
                raise ModelImportError(f"the pipeline for this model is not valid: {e}") from e
            (tmp / "pipeline.yaml").write_text(text)
            onto = Ontology(id=opts.ontology_id, version=1, classes=opts.labels)
            (tmp / "ontology.yaml").write_text(
                yaml.safe_dump(onto.model_dump(mode="json", exclude_defaults=True), sort_keys=False)
            )
            tmp.rename(out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    finally:
        eng.close()
    return {"task": opts.task, "model": key, "pre": pre, "post": post, "out": str(out)}


def _already_probabilities(
    eng: Any, inp: TensorSpec, pre: dict[str, Any], frames: list[np.ndarray]
) -> bool:
    """True when the classifier's outputs on the frames are non-negative and sum to 1."""
    from runtime.pipeline.graph import PreSpec
    from runtime.pipeline.preprocess import preprocess

    try:
        spec = PreSpec.model_validate(pre)
        for frame in frames:
            x, _ = preprocess(frame, spec)
            y = np.asarray(eng.run({inp.name: x})[0], np.float64)
            if y.min() < 0 or not np.allclose(y.sum(axis=-1), 1.0, atol=1e-3):
                return False
        return True
    except (LeanloopError, ValueError, TypeError):
        return False
