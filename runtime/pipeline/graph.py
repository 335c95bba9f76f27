"""The pipeline graph (``pipeline.yaml`` inside a bundle), validated with unknown keys rejected.

A pipeline is an ordered list of stages. Each stage names a model of the manifest, how to turn
its input into a tensor (``pre``) and how to turn the engine's outputs into results (``post``).
A stage reads either the whole frame or, with ``for_each: <stage>``, one crop per detection of an
earlier stage (fan-out), batched when the model accepts a batch.

Example (the demo's digit reader)::

    format: leanloop.pipeline/1
    stages:
      - name: detector
        model: detector
        pre: {resize: [96, 96], color: gray, scale: 0.00392156862745098}
        post: {type: yolo_v8, score_threshold: 0.3, nms_iou: 0.45, class_agnostic: true}
      - name: classifier
        model: classifier
        for_each: detector
        crop: {margin: 0.15, square: true}
        pre: {resize: [28, 28], color: gray, scale: 0.00392156862745098}
        post: {type: softmax, top_k: 3}
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from runtime._limits import safe_yaml
from runtime.errors import PipelineError, first_line

__all__ = [
    "MAX_PIPELINE_BYTES",
    "PIPELINE_FORMAT",
    "Anchors",
    "BoxPost",
    "ClassifyPost",
    "CropSpec",
    "PipelineSpec",
    "PluginPost",
    "PreSpec",
    "SsdPost",
    "StageSpec",
    "TfliteSsdPost",
    "YoloPost",
    "load_pipeline_spec",
    "parse_pipeline_spec",
    "plugin_ref_parts",
]

PIPELINE_FORMAT = "leanloop.pipeline/1"
MAX_PIPELINE_BYTES = 64 * 1024
"""``pipeline.yaml`` larger than this is refused before it is parsed."""


def plugin_ref_parts(ref: str) -> tuple[str, str]:
    """``'plugins/x.py:fn'`` -> ``('plugins/x.py', 'fn')``.

    Raises ValueError unless ``ref`` names a ``.py`` file by a plain relative path inside the
    bundle (no ``..``, not absolute) and a function name. Plug-ins are never named by module.
    """
    file, sep, attr = ref.rpartition(":")
    if not sep or not file.endswith(".py") or not attr.isidentifier():
        raise ValueError(
            f"plug-in {ref!r}: expected '<file>.py:<function>' naming a file of the bundle"
        )
    p = PurePosixPath(file)
    if (
        "\\" in file
        or "\x00" in file
        or p.is_absolute()
        or any(part in ("..", ".", "") for part in p.parts)
    ):
        raise ValueError(f"plug-in {ref!r}: the file escapes the bundle folder")
    return file, attr


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PreSpec(_Strict):
    """How a frame (or crop) becomes the model's input tensor."""

    resize: tuple[int, int] = Field(description="target (width, height) in pixels")
    mode: Literal["stretch", "letterbox"] = Field(
        default="stretch", description="letterbox keeps the aspect ratio and pads with pad_value"
    )
    pad_value: int = Field(default=114, ge=0, le=255)
    interpolation: Literal["auto", "area", "linear", "nearest"] = Field(
        default="auto",
        description="resize filter; auto: area when shrinking, linear when enlarging",
    )
    color: Literal["gray", "rgb", "bgr"] = Field(default="rgb", description="channel order")
    scale: float = Field(default=1.0, description="multiply pixel values (0..255) by this first")
    mean: list[float] | None = Field(default=None, description="per channel, after scale")
    std: list[float] | None = Field(default=None, description="per channel, after scale")
    layout: Literal["nchw", "nhwc"] = "nchw"
    dtype: Literal["float32", "uint8", "int8"] = "float32"
    quant_scale: float | None = Field(default=None, description="int8 inputs: real = scale*(q-zp)")
    quant_zero_point: int | None = None
    plugin: str | None = Field(
        default=None,
        description="'<file>.py:function', a file of the bundle, replacing the built-in "
        "pre-processing; fn(image: np.ndarray[H,W,3] uint8 BGR, ctx: PreContext) -> "
        "np.ndarray | (np.ndarray, Letterbox) (see runtime.pipeline.plugins)",
    )
    plugin_params: dict[str, Any] = Field(
        default_factory=dict, description="handed to the pre plug-in as ctx.params"
    )

    @field_validator("plugin")
    @classmethod
    def _plugin_ref(cls, v: str | None) -> str | None:
        if v is not None:
            plugin_ref_parts(v)
        return v


class CropSpec(_Strict):
    """How a detection of an earlier stage becomes the next stage's input image."""

    margin: float = Field(default=0.1, ge=0, le=2, description="fraction of box size added")
    square: bool = Field(default=False, description="expand the crop to a square first")
    min_size: int = Field(default=2, ge=1, description="smaller boxes are skipped")
    rounding: Literal["outward", "nearest", "inward"] = Field(
        default="outward",
        description="box edges to whole pixels: outward (floor/ceil: the crop holds the whole "
        "box), nearest, or inward (ceil/floor)",
    )


class ClassifyPost(_Strict):
    """Classification head: logits (or probabilities) -> scores, top-k."""

    type: Literal["softmax", "sigmoid", "identity"]
    top_k: int = Field(default=1, ge=1)
    output: int | str = Field(default=0, description="which model output (index or name)")
    classes: list[str] | None = Field(
        default=None, description="this stage's own class names; default: the bundle ontology"
    )


class Anchors(_Strict):
    """SSD anchor generation, as ``cx, cy, w, h`` fractions of the model input, in one of two
    layouts (see :func:`runtime.pipeline.ssd.ssd_anchors` for the exact order):

    - **explicit grids** (torchvision / Caffe SSD): ``feature_maps`` and ``sizes`` per map;
      one anchor per (cell, size, aspect ratio);
    - **per-layer strides** (TF Object Detection API / MediaPipe SSD anchors): ``strides``;
      each layer's grid is ``ceil(input / stride)``; consecutive layers with the same stride
      share one grid. Anchor sizes come from ``min_scale``..``max_scale`` (interpolated over the
      layers) and ``aspect_ratios`` (plus one anchor of ``interpolated_scale_aspect_ratio`` at
      the geometric mean of this layer's and the next layer's scale), or, with ``fixed_size``,
      every anchor is 1×1 and ``per_cell`` may give the number of anchors per cell per layer
      directly (BlazeFace: strides ``[8, 16]``, per_cell ``[2, 6]``).
    """

    feature_maps: list[tuple[int, int]] | None = Field(
        default=None, description="explicit grids: (width, height) of each feature map"
    )
    sizes: list[list[float]] | None = Field(
        default=None, description="explicit grids: anchor sizes per map, fraction of input"
    )
    strides: list[int] | None = Field(
        default=None, description="per-layer strides in input pixels (instead of feature_maps)"
    )
    min_scale: float = Field(default=0.2, gt=0, description="strides: scale of the first layer")
    max_scale: float = Field(default=0.95, gt=0, description="strides: scale of the last layer")
    aspect_ratios: list[float] = Field(default_factory=lambda: [1.0])
    interpolated_scale_aspect_ratio: float = Field(
        default=1.0, ge=0, description="strides: one more anchor per scale; 0: none"
    )
    reduce_boxes_in_lowest_layer: bool = Field(
        default=False, description="strides: first layer gets ratios 1, 2, 0.5 at scale 0.1"
    )
    fixed_size: bool = Field(default=False, description="strides: every anchor is 1x1")
    per_cell: list[int] | None = Field(
        default=None, description="strides + fixed_size: anchors per cell of each layer"
    )
    offset: tuple[float, float] = Field(
        default=(0.5, 0.5), description="anchor centre inside its cell (x, y)"
    )
    variances: tuple[float, float] = (0.1, 0.2)

    @model_validator(mode="after")
    def _layout(self) -> Anchors:
        explicit = self.feature_maps is not None or self.sizes is not None
        if explicit == (self.strides is not None):
            raise ValueError("give either feature_maps and sizes, or strides")
        if explicit and (self.feature_maps is None or self.sizes is None):
            raise ValueError("explicit anchors need both feature_maps and sizes")
        if self.per_cell is not None:
            if self.strides is None or not self.fixed_size:
                raise ValueError("per_cell needs strides and fixed_size: true")
            if len(self.per_cell) != len(self.strides):
                raise ValueError("per_cell needs one count per stride")
        return self


class BoxPost(_Strict):
    """What every detection decoder shares: threshold, NMS, cap and the detector's classes."""

    score_threshold: float = Field(default=0.25, ge=0, le=1)
    nms_iou: float = Field(default=0.45, gt=0, le=1)
    class_agnostic: bool = Field(default=False, description="NMS across classes")
    max_detections: int = Field(default=100, ge=1)
    classes: list[str] | None = Field(
        default=None, description="detector's own class names; default: the bundle ontology"
    )


class YoloPost(BoxPost):
    """YOLO-style outputs in input-pixel cx,cy,w,h.

    ``yolo_v8``: one output [1, 4+C, N] (class scores already sigmoid).
    ``yolo_v5``: one output [1, N, 5+C] (objectness and class scores already sigmoid).
    """

    type: Literal["yolo_v8", "yolo_v5"]


class SsdPost(BoxPost):
    """Anchor-based SSD: box regressions ``[1, N, 4 + 2K]`` against generated anchors and class
    scores ``[1, N, C]`` (``C+1`` with a background column).

    Per anchor ``(acx, acy, aw, ah)`` and regression ``(rx, ry, rw, rh)`` (read in ``coords``
    order) with ``scale = (sx, sy, sw, sh)`` (default ``1/v0, 1/v0, 1/v1, 1/v1`` from the
    anchors' variances)::

        cx = acx + rx / sx * aw        cy = acy + ry / sy * ah
        w  = aw * exp(rw / sw)         h  = ah * exp(rh / sh)      (size: exp)
        w  = aw * rw / sw              h  = ah * rh / sh           (size: linear)

    then ``K`` keypoints ``kx = acx + rkx / sx * aw``, ``ky = acy + rky / sy * ah`` carried on
    the item. All in fractions of the model input, scaled to input pixels.
    """

    type: Literal["ssd"]
    anchors: Anchors
    boxes_output: int | str = 0
    scores_output: int | str = 1
    scores: Literal["softmax", "sigmoid"] = Field(
        default="softmax", description="softmax over each row, or sigmoid per class"
    )
    background: bool | None = Field(
        default=None,
        description="score column 0 is background (dropped); default: yes for softmax, "
        "no for sigmoid",
    )
    coords: Literal["xywh", "yxhw"] = Field(
        default="xywh", description="order of the regressed values (and of keypoint pairs)"
    )
    scale: tuple[float, float, float, float] | None = Field(
        default=None, description="divisors of (x, y, w, h); default from anchors.variances"
    )
    size: Literal["exp", "linear"] = Field(default="exp", description="how w, h are encoded")
    keypoints: int = Field(default=0, ge=0, description="regressed (x, y) pairs after the box")


class TfliteSsdPost(BoxPost):
    """A detector that ends in TFLite's ``TFLite_Detection_PostProcess`` op: four outputs,
    boxes ``[1, N, 4]`` (ymin, xmin, ymax, xmax, fractions of the input), class ids ``[1, N]``,
    scores ``[1, N]`` and the number of valid rows ``[1]``. Non-maximum suppression was done
    by the model, so ``nms_iou`` and ``class_agnostic`` are not used."""

    type: Literal["tflite_ssd"]
    boxes_output: int | str = 0
    classes_output: int | str = 1
    scores_output: int | str = 2
    count_output: int | str = 3
    label_offset: int = Field(
        default=0, description="added to each class id (1 for label maps with '???' first)"
    )
    normalized: bool = Field(default=True, description="boxes are fractions of the input")


class PluginPost(_Strict):
    """User decoder: ``fn(outputs: list[np.ndarray], ctx: PostContext) -> list[Item]``.

    ``PostContext`` and ``Item`` are in :mod:`runtime.pipeline.postprocess` and
    :mod:`runtime.pipeline.prediction`.
    """

    type: Literal["plugin"]
    kind: Literal["detection", "classification"] = Field(
        default="detection",
        description="what the items are: detections (with boxes) can feed a for_each stage",
    )
    function: str = Field(description="'<file>.py:function', a file of the bundle")
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("function")
    @classmethod
    def _plugin_ref(cls, v: str) -> str:
        plugin_ref_parts(v)
        return v


PostSpec = Annotated[
    ClassifyPost | YoloPost | SsdPost | TfliteSsdPost | PluginPost, Field(discriminator="type")
]


class StageSpec(_Strict):
    """One network of the pipeline."""

    name: str
    model: str = Field(description="key in the manifest's models")
    engine: Literal["onnxruntime", "openvino", "litert"] | None = Field(
        default=None,
        description="run this stage's model on this engine only; none: the first engine of the "
        "device's inference.backend preference that is installed and has a file for it",
    )
    for_each: str | None = Field(default=None, description="earlier detection stage to fan out")
    crop: CropSpec = Field(default_factory=CropSpec)
    batch: int = Field(default=0, ge=0, description="max crops per call; 0: model's batch size")
    pre: PreSpec
    post: PostSpec


class PipelineSpec(_Strict):
    """``pipeline.yaml``."""

    format: Literal["leanloop.pipeline/1"] = "leanloop.pipeline/1"
    stages: list[StageSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _graph(self) -> PipelineSpec:
        seen: dict[str, StageSpec] = {}
        for st in self.stages:
            if st.name in seen:
                raise ValueError(f"stage name {st.name!r} is used twice")
            if st.for_each is not None:
                src = seen.get(st.for_each)
                if src is None:
                    raise ValueError(
                        f"stage {st.name!r}: for_each names {st.for_each!r}, "
                        "which is not an earlier stage"
                    )
                if isinstance(src.post, ClassifyPost) or (
                    isinstance(src.post, PluginPost) and src.post.kind == "classification"
                ):
                    raise ValueError(
                        f"stage {st.name!r}: for_each needs a detection stage, "
                        f"{st.for_each!r} is a classifier"
                    )
            seen[st.name] = st
        return self


def parse_pipeline_spec(data: Any, where: str = "pipeline.yaml") -> PipelineSpec:
    """Validate a parsed YAML/JSON object. Raises PipelineError with a one-line reason."""
    try:
        return PipelineSpec.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise PipelineError(f"{where}: {loc}: {first['msg']}") from e


def load_pipeline_spec(text: str | bytes, where: str = "pipeline.yaml") -> PipelineSpec:
    """Parse YAML text (at most :data:`MAX_PIPELINE_BYTES`). Raises PipelineError."""
    if len(text) > MAX_PIPELINE_BYTES:
        raise PipelineError(f"{where}: larger than {MAX_PIPELINE_BYTES // 1024} KiB")
    try:
        data = safe_yaml(text)
    except yaml.YAMLError as e:
        raise PipelineError(f"{where}: not valid YAML: {first_line(e)}") from e
    return parse_pipeline_spec(data, where)
