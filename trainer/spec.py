"""The training spec: one YAML file says what to train, on which data, and how.

``leanloop train SPEC.yaml`` and the hub's job queue read the same :class:`TrainingSpec`
(pydantic, unknown keys rejected) and run the same :func:`trainer.run.run_spec`. Every field's
description doubles as the operator documentation (``docs/training.md`` shows a full example).

A spec names a **task** (``classify``, ``detect``, ``detect_then_classify``), a **dataset**
(a native dataset folder, see :mod:`trainer.datasets.native`), a **model** (architecture, size
knob, input size), the **optimisation** (epochs, batch, optimiser, learning rate, early
stopping, class weighting, seed), **augmentation** (albumentations transforms by name), an
optional **warm start** (a torch state dict or an ONNX model given by the user), the **export**
formats and an optional Optuna **search**.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from trainer.errors import TrainerError

if TYPE_CHECKING:
    from trainer.datasets.model import Dataset

__all__ = [
    "ARCHITECTURES",
    "AugmentSpec",
    "DatasetRef",
    "EarlyStopping",
    "ModelSpec",
    "SearchParam",
    "SearchSpec",
    "SpecError",
    "TrainingSpec",
    "load_spec",
    "load_spec_dataset",
]

ARCHITECTURES = ("mobilenet_v3_small", "mobilenet_v3_large", "resnet18", "resnet34", "resnet50")
"""Backbones (torchvision definitions, never pretrained weights): classifiers use them whole,
detectors put an anchor-free FCOS-style head on their stride-8 and stride-16 features."""


class SpecError(TrainerError):
    """The training spec is unreadable or invalid (one line: where and what)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetRef(_Strict):
    """Where the labelled data comes from."""

    path: Path = Field(
        description="dataset folder: dataset.json (format native), or a COCO / YOLO / Label "
        "Studio / folder-per-class dataset read by trainer.datasets"
    )
    format: Literal["native", "coco", "yolo", "labelstudio", "folder"] = Field(
        default="native", description="how the folder is laid out"
    )
    val_fraction: float = Field(
        default=0.2, gt=0, lt=1, description="share of items held out for validation (stratified)"
    )


class ModelSpec(_Strict):
    """The network: a well-known architecture, sized by a knob."""

    architecture: Literal[
        "mobilenet_v3_small", "mobilenet_v3_large", "resnet18", "resnet34", "resnet50"
    ] = Field(default="mobilenet_v3_small", description="backbone; resnet depth is its own size")
    width: float = Field(
        default=1.0,
        gt=0,
        le=2,
        description="size knob: MobileNetV3 width multiplier (0.25 tiny … 1.0 full); "
        "must stay 1.0 for ResNets, whose size is their depth",
    )
    input_size: tuple[int, int] = Field(
        default=(96, 96), description="network input (width, height), pixels"
    )
    color: Literal["rgb", "gray"] = Field(
        default="rgb", description="gray feeds one channel (cheaper), rgb three"
    )

    @model_validator(mode="after")
    def _knob(self) -> ModelSpec:
        if self.architecture.startswith("resnet") and self.width != 1.0:
            raise ValueError("width applies to MobileNetV3 only; pick resnet18/34/50 for size")
        if min(self.input_size) < 32 or max(self.input_size) > 1024:
            raise ValueError("input_size sides must be within 32..1024")
        return self


class AugmentSpec(_Strict):
    """One albumentations transform by its class name and keyword arguments
    (e.g. ``{name: HorizontalFlip, params: {p: 0.5}}``); detection keeps boxes aligned."""

    name: str = Field(pattern=r"^[A-Z][A-Za-z0-9]+$")
    params: dict[str, Any] = Field(default_factory=dict)


class EarlyStopping(_Strict):
    """Stop when the validation metric has not improved for ``patience`` epochs."""

    patience: int = Field(default=5, ge=1)
    min_delta: float = Field(default=0.0, ge=0)


class SearchParam(_Strict):
    """One searched hyper-parameter: a float range (``low``/``high``, ``log``) or ``choices``."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[float | int | str] | None = None

    @model_validator(mode="after")
    def _shape(self) -> SearchParam:
        if self.choices is None and (self.low is None or self.high is None):
            raise ValueError("give low and high, or choices")
        bounded = self.choices is None and self.low is not None and self.high is not None
        if bounded and self.low >= self.high:  # type: ignore[operator]
            raise ValueError("low must be below high")
        return self


SEARCHABLE = ("lr", "weight_decay", "batch", "width", "epochs")


class SearchSpec(_Strict):
    """Optuna search around the spec: each trial trains with suggested values."""

    trials: int = Field(default=8, ge=1, le=1000, description="trial budget")
    pruner: Literal["median", "hyperband", "none"] = Field(
        default="median", description="prunes trials whose per-epoch validation metric lags"
    )
    seed: int = Field(default=0, description="sampler (TPE) seed")
    space: dict[str, SearchParam] = Field(
        description=f"searched fields, any of {', '.join(SEARCHABLE)}"
    )
    timeout_s: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _names(self) -> SearchSpec:
        unknown = sorted(set(self.space) - set(SEARCHABLE))
        if unknown:
            raise ValueError(f"cannot search {unknown}; searchable: {list(SEARCHABLE)}")
        if not self.space:
            raise ValueError("search.space is empty")
        return self


class TrainingSpec(_Strict):
    """``SPEC.yaml`` for ``leanloop train`` and hub training jobs."""

    format: Literal["leanloop.train/1"] = "leanloop.train/1"
    name: str = Field(default="model", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    task: Literal["classify", "detect", "detect_then_classify"]
    dataset: DatasetRef
    model: ModelSpec = Field(default_factory=ModelSpec)
    crop_model: ModelSpec | None = Field(
        default=None,
        description="detect_then_classify: the classifier run on each detection's crop "
        "(default: mobilenet_v3_small, 64×64)",
    )
    epochs: int = Field(default=10, ge=1, le=10000)
    batch: int = Field(default=32, ge=1, le=4096)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(default=2e-3, gt=0, lt=10)
    weight_decay: float = Field(default=1e-4, ge=0)
    augment: list[AugmentSpec] = Field(default_factory=list)
    early_stopping: EarlyStopping | None = None
    class_weighting: Literal["none", "inverse_frequency", "sqrt_inverse_frequency"] = Field(
        default="none", description="loss weight per class from its training count"
    )
    seed: int = 0
    threads: int = Field(default=2, ge=1, le=256, description="torch CPU threads")
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="auto: a CUDA GPU when present, else the CPU"
    )
    warm_start: Path | None = Field(
        default=None,
        description="a torch state dict (.pt/.pth) or an ONNX model (.onnx); for "
        "detect_then_classify, the detector's",
    )
    crop_warm_start: Path | None = Field(
        default=None,
        description="detect_then_classify: the crop classifier's state dict (.pt/.pth) or ONNX "
        "model, e.g. an earlier source's checkpoint/classifier.pt",
    )
    export: list[Literal["onnx", "openvino", "tflite"]] = Field(
        default_factory=lambda: ["onnx", "openvino", "tflite"],  # type: ignore[arg-type]
        description="ONNX is always written (the reference); others are verified against torch",
    )
    score_threshold: float = Field(default=0.3, gt=0, lt=1, description="detector's threshold")
    search: SearchSpec | None = None

    @model_validator(mode="after")
    def _consistent(self) -> TrainingSpec:
        if "onnx" not in self.export:
            raise ValueError("export must include onnx (every other format is checked against it)")
        if self.crop_model is not None and self.task != "detect_then_classify":
            raise ValueError("crop_model is for task detect_then_classify only")
        if self.crop_warm_start is not None and self.task != "detect_then_classify":
            raise ValueError("crop_warm_start is for task detect_then_classify only")
        return self

    def resolved(self, base: Path) -> TrainingSpec:
        """Relative paths (dataset, warm start) made absolute against ``base``."""
        upd: dict[str, Any] = {}
        if not self.dataset.path.is_absolute():
            upd["dataset"] = self.dataset.model_copy(update={"path": base / self.dataset.path})
        if self.warm_start is not None and not self.warm_start.is_absolute():
            upd["warm_start"] = base / self.warm_start
        if self.crop_warm_start is not None and not self.crop_warm_start.is_absolute():
            upd["crop_warm_start"] = base / self.crop_warm_start
        return self.model_copy(update=upd)


def _first_error(e: ValidationError, where: str) -> str:
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"]) or "(top)"
    return f"{where}: {loc}: {err['msg']}"


def parse_spec(data: Any, where: str = "spec") -> TrainingSpec:
    """Validate a parsed object. Raises SpecError naming the first bad field."""
    try:
        return TrainingSpec.model_validate(data)
    except ValidationError as e:
        raise SpecError(_first_error(e, where)) from e


def load_spec(path: Path) -> TrainingSpec:
    """Read ``SPEC.yaml``; relative paths in it are relative to its folder. Raises SpecError."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise SpecError(f"{path}: cannot read: {e.strerror or e}") from e
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: not YAML: {str(e).splitlines()[0]}") from e
    return parse_spec(data, str(path)).resolved(path.parent.resolve())


def load_spec_dataset(spec: TrainingSpec) -> tuple[Dataset, Path]:  # torch-free
    """The spec's dataset as the tasks read it, and the folder relative images are under.
    Other formats are read by :mod:`trainer.datasets` (every problem reported) and converted
    in memory; their data version is a digest of their content. Raises DatasetError."""
    ref = spec.dataset
    if ref.format == "native":
        from trainer.datasets.native import load_dataset

        return load_dataset(ref.path)
    import hashlib

    from trainer.datasets import read_dataset

    imported = read_dataset(ref.format, ref.path)
    digest = hashlib.sha256(repr(imported.content()).encode()).hexdigest()[:12]
    ds = imported.model_copy(
        update={
            "name": ref.path.name or "dataset",
            "version": f"{ref.format}-{digest}",
            "ontology_id": imported.ontology_id or "default",
        }
    )
    return ds, ref.path
