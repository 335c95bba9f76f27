"""Build a bundle from a source folder (what ``leanloop bundle build`` runs, admin side).

A source folder holds ``pipeline.yaml``, ``ontology.yaml``, ``models/`` and ``golden/*.png``
(and optionally ``notes.json``; a ``checkpoint/`` folder of training state is ignored). Build
copies them into the output folder, describes each model's I/O signature as the engine reports
it, runs the pipeline on the golden images to record ``golden/expected.json``, and writes
``manifest.json`` listing every file with its sha256 and size. The result is what
``leanloop bundle publish`` signs.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from runtime._atomic import atomic_write_bytes
from runtime._limits import (
    MAX_ONTOLOGY_BYTES,
    MAX_STATE_BYTES,
    TooLargeError,
    read_bounded,
    safe_yaml,
)
from runtime._version import __version__
from runtime.backends.base import BackendOptions
from runtime.bundle.engines import engine_for_format, stage_pins
from runtime.bundle.health import compute_expected
from runtime.bundle.loader import file_sha256, load_bundle
from runtime.bundle.manifest import (
    MANIFEST_NAME,
    FileEntry,
    HealthCheck,
    Manifest,
    ModelEntry,
    Ontology,
    TensorSpec,
)
from runtime.errors import BundleError, first_line
from runtime.pipeline.graph import MAX_PIPELINE_BYTES, load_pipeline_spec

__all__ = ["IGNORED_SOURCE_DIRS", "build_bundle", "parse_ontology"]

IGNORED_SOURCE_DIRS = ("checkpoint",)
_MODEL_FORMATS = {".onnx": "onnx", ".xml": "openvino", ".tflite": "tflite"}
_GOLDEN_EXPECTED = "golden/expected.json"


def _read_yaml(path: Path, limit: int) -> Any:
    try:
        return safe_yaml(read_bounded(path, limit))
    except FileNotFoundError as e:
        raise BundleError(f"{path}: missing") from e
    except TooLargeError as e:
        raise BundleError(str(e)) from e
    except (OSError, yaml.YAMLError) as e:
        raise BundleError(f"{path}: not readable YAML: {first_line(e)}") from e


def parse_ontology(data: bytes, where: str = "ontology.yaml") -> Ontology:
    """The ontology in YAML ``data`` (at most 256 KiB). Raises BundleError (one line)."""
    if len(data) > MAX_ONTOLOGY_BYTES:
        raise BundleError(f"{where}: larger than {MAX_ONTOLOGY_BYTES} bytes")
    try:
        raw = safe_yaml(data)
    except (yaml.YAMLError, ValueError) as e:  # ValueError: e.g. bad UTF-8, huge integers
        raise BundleError(f"{where}: not readable YAML: {str(e).splitlines()[0]}") from e
    try:
        return Ontology.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(map(str, first["loc"]))
        raise BundleError(f"{where}: {loc}: {first['msg']}".splitlines()[0]) from e


def _copy_source(src: Path, out: Path) -> list[str]:
    files: list[str] = []
    for p in sorted(src.rglob("*")):
        rel = p.relative_to(src).as_posix()
        if rel.split("/")[0] in IGNORED_SOURCE_DIRS or rel == MANIFEST_NAME:
            continue
        if rel == _GOLDEN_EXPECTED:
            continue
        if p.is_symlink():
            raise BundleError(f"{p}: symbolic links are not allowed in a bundle source")
        if p.is_dir():
            continue
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, dst)
        files.append(rel)
    return files


def _signature(backend_inputs: list[TensorSpec]) -> list[TensorSpec]:
    return [TensorSpec(name=t.name, shape=list(t.shape), dtype=t.dtype) for t in backend_inputs]


def build_bundle(
    src: Path,
    out: Path,
    name: str,
    version: int,
    notes: dict[str, str] | None = None,
    backend: str | Sequence[str] | None = None,
) -> Manifest:
    """Build ``out`` from ``src``. ``out`` must not exist or be empty. Raises BundleError.

    Golden outputs are computed with each model on the engine made for its file (ONNX on ONNX
    Runtime, TFLite on LiteRT, OpenVINO IR on OpenVINO) — a stage's ``engine`` pin wins —
    unless ``backend`` names an engine preference to compute them with instead. On any failure
    ``out`` is removed again, so no half-built bundle is left to publish.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise BundleError(f"{out}: exists and is not empty")
    existed = out.exists()
    try:
        return _build(Path(src), out, name, version, notes, backend)
    except BaseException:
        # ``out`` was empty or absent: whatever is in it now is ours.
        shutil.rmtree(out, ignore_errors=True)
        if existed:
            out.mkdir()
        raise


def _build(
    src: Path,
    out: Path,
    name: str,
    version: int,
    notes: dict[str, str] | None,
    backend: str | Sequence[str] | None,
) -> Manifest:
    from runtime.backends import load_backend

    if not src.is_dir():
        raise BundleError(f"{src}: not a folder")
    onto_path = src / "ontology.yaml"
    try:
        ontology = parse_ontology(read_bounded(onto_path, MAX_ONTOLOGY_BYTES), str(onto_path))
    except FileNotFoundError as e:
        raise BundleError(f"{onto_path}: missing") from e
    except (OSError, TooLargeError) as e:
        raise BundleError(f"{onto_path}: cannot read: {e}") from e
    pipe_path = src / "pipeline.yaml"
    try:
        spec = load_pipeline_spec(read_bounded(pipe_path, MAX_PIPELINE_BYTES), str(pipe_path))
    except (OSError, TooLargeError) as e:
        raise BundleError(f"{pipe_path}: cannot read: {e}") from e
    pins = stage_pins(spec)
    out.mkdir(parents=True, exist_ok=True)  # only once the source's own files are valid
    files = _copy_source(src, out)

    models: dict[str, ModelEntry] = {}
    for stage in spec.stages:
        if stage.model in models:
            continue
        candidates = [f for f in files if f.startswith("models/") and Path(f).stem == stage.model]
        primary = [f for f in candidates if f.endswith(".onnx")] or [
            f for f in candidates if Path(f).suffix in _MODEL_FORMATS
        ]
        if not primary:
            raise BundleError(
                f"{src}: no model file models/{stage.model}.onnx for stage {stage.name!r}"
            )
        path = primary[0]
        fmt = _MODEL_FORMATS[Path(path).suffix]
        eng = load_backend(engine_for_format(fmt), out / path, BackendOptions(warmup_runs=0))
        try:
            sig_in, sig_out = _signature(eng.inputs), _signature(eng.outputs)
        finally:
            eng.close()
        alternates = {
            _MODEL_FORMATS[Path(f).suffix]: f
            for f in candidates
            if f != path and Path(f).suffix in _MODEL_FORMATS
        }
        pin = pins.get(stage.model)
        models[stage.model] = ModelEntry(
            path=path,
            format=fmt,
            inputs=sig_in,
            outputs=sig_out,
            alternates=alternates,
            engine=pin,
        )

    golden = [f for f in files if f.startswith("golden/") and f.endswith((".png", ".jpg"))]
    all_notes = dict(notes or {})
    notes_path = src / "notes.json"
    if notes_path.exists():
        try:
            all_notes.update(
                {
                    str(k): str(v)
                    for k, v in json.loads(read_bounded(notes_path, MAX_STATE_BYTES)).items()
                }
            )
        except (OSError, ValueError, AttributeError) as e:
            raise BundleError(f"{notes_path}: not a JSON object: {e}") from e

    def _manifest(health: HealthCheck | None) -> Manifest:
        listed = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
        entries = {
            rel: FileEntry(sha256=file_sha256(out / rel), size=(out / rel).stat().st_size)
            for rel in listed
            if rel != MANIFEST_NAME
        }
        return Manifest(
            name=name,
            version=version,
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            min_runtime=__version__,
            ontology=ontology,
            models=models,
            health=health,
            files=entries,
            notes=all_notes,
        )

    def _write(m: Manifest) -> None:
        atomic_write_bytes(out / MANIFEST_NAME, m.model_dump_json(indent=2).encode() + b"\n")

    # First pass without the health check so the pipeline can be loaded to compute it.
    _write(_manifest(None))
    health: HealthCheck | None = None
    if golden:
        if backend is None:  # each model on its own engine (pins are in the manifest)
            native = {k: m.engine or engine_for_format(m.format) for k, m in models.items()}
            golden_engines: str | Sequence[str] = sorted(set(native.values()))
            loaded = load_bundle(out, golden_engines, verify=True, pins=native)
        else:
            loaded = load_bundle(out, backend, verify=True)
        try:
            expected = compute_expected(loaded, golden)
        finally:
            loaded.close()
        atomic_write_bytes(out / _GOLDEN_EXPECTED, json.dumps(expected, indent=1).encode())
        health = HealthCheck(inputs=golden, expected=_GOLDEN_EXPECTED)
    manifest = _manifest(health)
    _write(manifest)
    return manifest
