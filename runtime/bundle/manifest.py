"""The bundle manifest (``manifest.json``): the contract between the trainer, the hub and devices.

A bundle is a folder of files. ``manifest.json`` names the bundle and its integer version
(monotonic per bundle name), the ontology, the pipeline graph file, the models with their
engine format and I/O signature, the golden-input health check, the minimum runtime version,
and lists *every* other file of the folder with its sha256 and size. Devices never trust a
manifest on its own: the manifest file itself is a TUF target whose hash is in signed targets
metadata, and every file it lists is checked against its hash before use.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from runtime.ontology import Change

__all__ = [
    "BUNDLE_FORMAT",
    "MANIFEST_NAME",
    "FileEntry",
    "HealthCheck",
    "Manifest",
    "ModelEntry",
    "Ontology",
    "TensorSpec",
    "check_relative_path",
]

BUNDLE_FORMAT = "leanloop.bundle/1"
MANIFEST_NAME = "manifest.json"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def check_relative_path(path: str) -> str:
    """Return ``path`` if it is a plain relative POSIX path inside a bundle folder.

    Raises ValueError for absolute paths, ``..`` components, backslashes or empty names, so a
    manifest can never make a device write outside the bundle folder.
    """
    if not path or "\\" in path or "\x00" in path:
        raise ValueError(f"invalid file name {path!r}")
    p = PurePosixPath(path)
    if p.is_absolute() or any(part in ("..", ".", "") for part in p.parts):
        raise ValueError(f"file name {path!r} escapes the bundle folder")
    return path


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileEntry(_Strict):
    """One file of the bundle, as it must be on disk."""

    sha256: str = Field(description="lower-case hex sha256 of the file content")
    size: int = Field(ge=0, description="file size in bytes")

    @field_validator("sha256")
    @classmethod
    def _hex(cls, v: str) -> str:
        if not _SHA256_RE.match(v):
            raise ValueError("sha256 must be 64 lower-case hex digits")
        return v


class TensorSpec(_Strict):
    """One model input or output as the engine reports it."""

    name: str
    shape: list[int | str] = Field(description="dimensions; a string names a dynamic axis")
    dtype: str = Field(description="numpy dtype name, e.g. float32, uint8, int8")


class ModelEntry(_Strict):
    """A network the pipeline names by key; one file per engine format."""

    path: str = Field(description="file inside the bundle")
    format: Literal["onnx", "openvino", "tflite"] = Field(description="engine format")
    inputs: list[TensorSpec] = Field(default_factory=list)
    outputs: list[TensorSpec] = Field(default_factory=list)
    alternates: dict[str, str] = Field(
        default_factory=dict,
        description="other formats of the same network: format -> file (e.g. openvino -> x.xml)",
    )
    engine: Literal["onnxruntime", "openvino", "litert"] | None = Field(
        default=None,
        description="engine a stage of the pipeline pins this model to; none: the device's "
        "preference decides",
    )

    @field_validator("path")
    @classmethod
    def _rel(cls, v: str) -> str:
        return check_relative_path(v)

    @field_validator("alternates")
    @classmethod
    def _alternates(cls, v: dict[str, str]) -> dict[str, str]:
        for path in v.values():
            check_relative_path(path)
        return v


class Ontology(_Strict):
    """The concepts the bundle predicts, versioned separately from the bundle."""

    id: str
    version: int = Field(ge=1)
    classes: list[str] = Field(min_length=1)
    mapping_from_previous: dict[str, str] = Field(
        default_factory=dict,
        description="old class name -> new class name when classes were merged/renamed",
    )
    previous_version: int | None = Field(
        default=None, ge=1, description="the version the mapping and changes start from"
    )
    changes: list[Change] = Field(
        default_factory=list,
        description="explicit changes from the previous version (create, rename, merge, split, "
        "delete); a device remaps its store with them when it commits the bundle",
    )


class HealthCheck(_Strict):
    """Golden inputs run at install time; outputs must match within tolerance."""

    inputs: list[str] = Field(description="image files inside the bundle")
    expected: str = Field(description="JSON file with the expected prediction per input")
    score_tolerance: float = Field(default=1e-3, ge=0)
    box_tolerance: float = Field(default=0.5, ge=0, description="pixels")

    @field_validator("inputs")
    @classmethod
    def _inputs(cls, v: list[str]) -> list[str]:
        for path in v:
            check_relative_path(path)
        return v

    @field_validator("expected")
    @classmethod
    def _expected(cls, v: str) -> str:
        return check_relative_path(v)


class Manifest(_Strict):
    """``manifest.json`` of a bundle."""

    format: Literal["leanloop.bundle/1"] = "leanloop.bundle/1"
    name: str = Field(description="bundle name, e.g. 'digits'")
    version: int = Field(ge=1, description="monotonic per bundle name")
    created: str = Field(description="ISO 8601 UTC time of the build")
    min_runtime: str = Field(default="0.1.0")
    ontology: Ontology
    pipeline: str = Field(default="pipeline.yaml", description="pipeline graph file")
    models: dict[str, ModelEntry]
    health: HealthCheck | None = None
    files: dict[str, FileEntry] = Field(
        description="every file of the bundle except manifest.json, by relative path"
    )
    notes: dict[str, str] = Field(default_factory=dict, description="free text: training run etc.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError("bundle name must match [a-z0-9][a-z0-9._-]{0,63}")
        return v

    @field_validator("files")
    @classmethod
    def _paths(cls, v: dict[str, FileEntry]) -> dict[str, FileEntry]:
        for path in v:
            check_relative_path(path)
            if path == MANIFEST_NAME:
                raise ValueError("manifest.json cannot list itself")
        return v

    @field_validator("pipeline")
    @classmethod
    def _pipeline(cls, v: str) -> str:
        return check_relative_path(v)

    @model_validator(mode="after")
    def _health_files_listed(self) -> Manifest:
        # The health check reads these before anything else uses the bundle: each must be a
        # listed (hence hash-checked) file, never something else that happens to be there.
        if self.health is not None:
            for rel in [*self.health.inputs, self.health.expected]:
                if rel not in self.files:
                    raise ValueError(f"health check file {rel} is not listed in files")
        return self

    def target_name(self, path: str) -> str:
        """TUF target path of one bundle file: ``<name>/<version>/<path>``."""
        return f"{self.name}/{self.version}/{path}"
