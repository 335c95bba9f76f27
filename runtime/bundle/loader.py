"""Verify a bundle folder against its manifest and load its pipeline on an engine.

``verify_bundle_dir`` is the offline integrity check: every file the manifest lists must be
present with the listed size and sha256, and no path may escape the folder. ``load_bundle``
verifies (unless told not to), plans which engine runs each model (the device's engine
preference, a stage's pin, the files the bundle has: :mod:`runtime.bundle.engines`), loads each
model through the backend registry and builds the :class:`~runtime.pipeline.pipeline.Pipeline`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from pydantic import ValidationError

from runtime._limits import MAX_MANIFEST_BYTES, MAX_STATE_BYTES, read_bounded
from runtime.backends.base import Backend, BackendOptions
from runtime.bundle.engines import DEFAULT_PREFERENCE, plan_engines, preference, stage_pins
from runtime.bundle.manifest import MANIFEST_NAME, Manifest
from runtime.errors import BundleError, LeanloopError

if TYPE_CHECKING:
    from runtime.pipeline.pipeline import Pipeline

__all__ = [
    "DEFAULT_PREFERENCE",
    "SKIPPED_NAME",
    "LoadedBundle",
    "file_sha256",
    "inside",
    "load_bundle",
    "parse_manifest",
    "read_manifest",
    "unlisted_files",
    "unneeded_files",
    "verify_bundle_dir",
]

# Written by the device's fetcher: model files of engine formats this device does not use,
# which it chose not to download. Only *missing* files may be excused by it; a present file
# must always match its hash.
SKIPPED_NAME = ".skipped.json"

_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(bundle_dir: Path) -> Manifest:
    """Read and parse ``manifest.json``. Raises BundleError with a one-line reason."""
    path = Path(bundle_dir) / MANIFEST_NAME
    try:
        data = read_bounded(path, MAX_MANIFEST_BYTES)
    except FileNotFoundError as e:
        raise BundleError(f"{path}: no manifest.json") from e
    except (OSError, ValueError) as e:
        raise BundleError(f"{path}: not readable: {e}") from e
    return parse_manifest(data, str(path))


def parse_manifest(data: bytes, where: str = MANIFEST_NAME) -> Manifest:
    """The manifest in ``data`` (at most 1 MiB). Raises BundleError with a one-line reason."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{where}: larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        obj = json.loads(data)
    except ValueError as e:  # also bad UTF-8 and integers of over 4300 digits
        raise BundleError(f"{where}: not readable JSON: {e}") from e
    try:
        return Manifest.model_validate(obj)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise BundleError(f"{where}: {loc}: {first['msg']}".splitlines()[0]) from e


def inside(root: Path, rel: str) -> Path:
    """``root / rel`` resolved, if it stays inside ``root`` without following a symbolic link.

    Raises BundleError for ``..``, an absolute path, or a link anywhere below ``root`` (a link
    could point at another file of the device, inside the folder or not, at the next write).
    """
    base = root.resolve()
    parts = PurePosixPath(rel).parts
    p = (root / rel).resolve()
    if PurePosixPath(rel).is_absolute() or ".." in parts:
        raise BundleError(f"{rel}: escapes the bundle folder")
    if p != base.joinpath(*parts):
        raise BundleError(f"{rel}: is or goes through a symbolic link")
    return p


def verify_bundle_dir(bundle_dir: Path) -> Manifest:
    """Check every listed file's size and sha256. Raises BundleError naming the first bad file."""
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    skipped = _skipped(bundle_dir)
    for rel, entry in manifest.files.items():
        p = inside(bundle_dir, rel)
        try:
            size = p.stat().st_size
        except FileNotFoundError as e:
            if rel in skipped:
                continue
            raise BundleError(f"{bundle_dir}: {rel} is missing") from e
        if size != entry.size:
            raise BundleError(f"{bundle_dir}: {rel} is {size} bytes, manifest says {entry.size}")
        if file_sha256(p) != entry.sha256:
            raise BundleError(f"{bundle_dir}: {rel} does not match its sha256 in the manifest")
    if manifest.pipeline not in manifest.files:
        raise BundleError(f"{bundle_dir}: pipeline file {manifest.pipeline} is not listed")
    for key, model in manifest.models.items():
        for rel in [model.path, *model.alternates.values()]:
            if rel not in manifest.files:
                raise BundleError(f"{bundle_dir}: model {key!r} file {rel} is not listed")
    return manifest


def unlisted_files(bundle_dir: Path, manifest: Manifest) -> list[str]:
    """Files and links in the folder that the manifest does not list (sorted, POSIX paths).

    ``manifest.json`` and the fetcher's ``.skipped.json`` are the manifest's own; anything else
    unlisted was not signed, so nothing may rely on it (a planted ``evil.py``, a stray link).
    """
    root = Path(bundle_dir)
    extra: list[str] = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_dir() and not p.is_symlink():
            continue
        if rel in (MANIFEST_NAME, SKIPPED_NAME) or rel in manifest.files:
            continue
        extra.append(rel)
    return extra


_FORMAT_OF_BACKEND = {"onnxruntime": "onnx", "openvino": "openvino", "litert": "tflite"}


def _skipped(bundle_dir: Path) -> set[str]:
    try:
        data = json.loads(read_bounded(bundle_dir / SKIPPED_NAME, MAX_STATE_BYTES))
    except (OSError, ValueError):
        return set()
    return {str(x) for x in data} if isinstance(data, list) else set()


def _with_sidecars(rel: str, manifest: Manifest) -> set[str]:
    """A model file and the files it needs beside it (OpenVINO IR: ``.xml`` + ``.bin``)."""
    out = {rel}
    if rel.endswith(".xml"):
        sidecar = rel[: -len(".xml")] + ".bin"
        if sidecar in manifest.files:
            out.add(sidecar)
    return out


def unneeded_files(manifest: Manifest, backend: str | Sequence[str]) -> set[str]:
    """Model files that a device preferring the engines ``backend`` never reads.

    Each model keeps only the file its planned engine reads (see :func:`plan_engines`; the
    engines are the ones installed here). When no engine can run some model, nothing is
    skipped: the load fails with the reason and the fetch does not guess.
    """
    try:
        plan = plan_engines(manifest, backend)
    except BundleError:
        return set()
    every: set[str] = set()
    needed: set[str] = set()
    for key, entry in manifest.models.items():
        for rel in [entry.path, *entry.alternates.values()]:
            every |= _with_sidecars(rel, manifest)
        if key in plan:
            needed |= _with_sidecars(plan[key].path, manifest)
    return every - needed


@dataclass
class LoadedBundle:
    """A verified bundle with its models loaded and its pipeline ready to run."""

    path: Path
    manifest: Manifest
    pipeline: Pipeline
    backend: str  # the engine preference it was loaded with, comma-separated
    engines: dict[str, str] = field(default_factory=dict)  # model key -> engine that runs it

    def close(self) -> None:
        self.pipeline.close()


def load_bundle(
    bundle_dir: Path,
    backend: str | Sequence[str] = DEFAULT_PREFERENCE,
    options: BackendOptions | None = None,
    verify: bool = True,
    pins: Mapping[str, str] | None = None,
) -> LoadedBundle:
    """Verify and load a bundle, each model on its planned engine (:func:`plan_engines`).

    ``backend`` is the engine preference: one name, a comma-separated string or a list;
    ``pins`` (model key -> engine) override the stages' and the manifest's pins (the bundle
    builder runs each model on its own engine with them). Raises BundleError, BackendError or
    PipelineError.
    """
    from runtime.backends import load_backend
    from runtime.pipeline.graph import MAX_PIPELINE_BYTES, load_pipeline_spec
    from runtime.pipeline.pipeline import Pipeline
    from runtime.pipeline.plugins import PluginLoader

    bundle_dir = Path(bundle_dir)
    manifest = verify_bundle_dir(bundle_dir) if verify else read_manifest(bundle_dir)
    pipe_path = inside(bundle_dir, manifest.pipeline)
    try:
        text = read_bounded(pipe_path, MAX_PIPELINE_BYTES)
    except OSError as e:
        raise BundleError(f"{pipe_path}: cannot read: {e}") from e
    except ValueError as e:
        raise BundleError(str(e)) from e
    spec = load_pipeline_spec(text, where=str(pipe_path))
    for stage in spec.stages:
        if stage.model not in manifest.models:
            raise BundleError(
                f"{pipe_path}: stage {stage.name!r} names model {stage.model!r}, "
                "which the manifest does not list"
            )
    plan = plan_engines(manifest, backend, {**stage_pins(spec), **(pins or {})})
    opts = options or BackendOptions()
    models: dict[str, Backend] = {}
    try:
        for stage in spec.stages:
            if stage.model in models:
                continue
            choice = plan[stage.model]
            models[stage.model] = load_backend(choice.engine, inside(bundle_dir, choice.path), opts)
        pipeline = Pipeline(
            spec,
            models,
            classes=list(manifest.ontology.classes),
            bundle=manifest.name,
            bundle_version=manifest.version,
            ontology_version=manifest.ontology.version,
            plugins=PluginLoader(
                bundle_dir, {rel: entry.sha256 for rel, entry in manifest.files.items()}
            ),
        )
    except LeanloopError:
        for m in models.values():
            m.close()
        raise
    return LoadedBundle(
        path=bundle_dir,
        manifest=manifest,
        pipeline=pipeline,
        backend=",".join(preference(backend)),
        engines={key: plan[key].engine for key in models},
    )
