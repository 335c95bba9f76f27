"""Which engine runs which model of a bundle: one pipeline, several engines.

A device names its engines in order of preference (``inference.backend``, e.g.
``[openvino, onnxruntime, litert]``; a single name is a list of one). Each model of a bundle
then runs on the **first preferred engine that is installed here and has a file for it**, so a
TFLite detector followed by an ONNX classifier runs with LiteRT for the first and ONNX Runtime
(or OpenVINO) for the second. A stage may pin its model to one engine in ``pipeline.yaml``
(``engine: litert``); the bundle builder copies pins into the manifest's model entries, so the
fetcher can plan from the signed manifest alone and download only the files this device runs.

What each engine reads, best first (OpenVINO reads ONNX and TFLite files directly, so a
device with only OpenVINO runs bundles shipped for the other two):

============  ==============================
onnxruntime   onnx
openvino      openvino IR, onnx, tflite
litert        tflite
============  ==============================

:func:`plan_engines` is pure: whether an engine is installed is a function passed in (by
default the backend registry's check), so the plan is tested without any engine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from runtime.bundle.manifest import Manifest
from runtime.errors import BackendError, BundleError, PipelineError

if TYPE_CHECKING:
    from runtime.pipeline.graph import PipelineSpec

__all__ = [
    "DEFAULT_PREFERENCE",
    "ENGINES",
    "ENGINE_FORMATS",
    "EngineChoice",
    "engine_for_format",
    "plan_engines",
    "preference",
    "stage_pins",
]

ENGINES = ("onnxruntime", "openvino", "litert")
DEFAULT_PREFERENCE: tuple[str, ...] = ("onnxruntime", "litert", "openvino")
"""A device without ``inference.backend`` tries ONNX Runtime, then LiteRT, then OpenVINO: with
every engine installed each file runs on the engine made for it."""

ENGINE_FORMATS: dict[str, tuple[str, ...]] = {
    "onnxruntime": ("onnx",),
    "openvino": ("openvino", "onnx", "tflite"),
    "litert": ("tflite",),
}
"""Engine -> the model formats it reads, best first."""

_NATIVE = {"onnx": "onnxruntime", "openvino": "openvino", "tflite": "litert"}


def engine_for_format(fmt: str) -> str:
    """The engine made for a model format (``tflite`` -> ``litert``)."""
    return _NATIVE[fmt]


@dataclass(frozen=True)
class EngineChoice:
    """The engine that runs one model, and the bundle file it reads."""

    engine: str
    path: str
    format: str


def preference(backend: str | Sequence[str]) -> tuple[str, ...]:
    """An engine preference as a tuple: one name, ``"a,b"`` or a list. Raises BackendError for
    an empty preference or an unknown name."""
    items = backend.split(",") if isinstance(backend, str) else list(backend)
    names = tuple(n.strip() for n in items if n.strip())
    if not names:
        raise BackendError("no inference engine named (inference.backend is empty)")
    for n in names:
        if n not in ENGINES:
            raise BackendError(f"unknown engine {n!r} (known: {', '.join(ENGINES)})")
    return names


def stage_pins(spec: PipelineSpec) -> dict[str, str]:
    """Model key -> engine, for the stages of ``spec`` that pin one. Raises PipelineError when
    two stages pin the same model to different engines."""
    pins: dict[str, str] = {}
    for st in spec.stages:
        if st.engine is None:
            continue
        if pins.get(st.model, st.engine) != st.engine:
            raise PipelineError(
                f"stage {st.name!r} pins model {st.model!r} to {st.engine}, another stage "
                f"pins it to {pins[st.model]}"
            )
        pins[st.model] = st.engine
    return pins


def _installed(engine: str) -> str | None:
    from runtime.backends import unavailable_reason

    return unavailable_reason(engine)


def _file_for(files: Mapping[str, str], engine: str) -> tuple[str, str] | None:
    for fmt in ENGINE_FORMATS[engine]:
        if fmt in files:
            return files[fmt], fmt
    return None


def plan_engines(
    manifest: Manifest,
    backend: str | Sequence[str],
    pins: Mapping[str, str] | None = None,
    unavailable: Callable[[str], str | None] = _installed,
) -> dict[str, EngineChoice]:
    """Model key -> the engine that runs it and the file it reads.

    ``backend`` is the device's preference; ``pins`` (model key -> engine) come from the
    pipeline's stages and add to those recorded in the manifest; ``unavailable(engine)`` is
    None when the engine is installed, else why not. Raises BundleError naming the model when
    no preferred engine can run it (with each engine's reason), or when a pinned engine is not
    installed or has no file; BackendError for an unknown engine name.
    """
    prefs = preference(backend)
    all_pins: dict[str, str] = {
        k: m.engine for k, m in manifest.models.items() if m.engine is not None
    }
    all_pins.update(pins or {})
    reasons: dict[str, str | None] = {}

    def why_not(engine: str) -> str | None:
        if engine not in reasons:
            reasons[engine] = unavailable(engine)
        return reasons[engine]

    plan: dict[str, EngineChoice] = {}
    for key, entry in manifest.models.items():
        files = {entry.format: entry.path, **entry.alternates}
        has = ", ".join(sorted(files))
        pinned = all_pins.get(key)
        if pinned is not None:
            preference((pinned,))  # an unknown name in a manifest is an error, not a skip
            reason = why_not(pinned)
            if reason is not None:
                raise BundleError(
                    f"model {key!r} is pinned to {pinned}, which cannot run here: {reason}"
                )
            found = _file_for(files, pinned)
            if found is None:
                raise BundleError(
                    f"model {key!r} is pinned to {pinned} but has no file it reads (has {has})"
                )
            plan[key] = EngineChoice(pinned, found[0], found[1])
            continue
        tried: list[str] = []
        for engine in prefs:
            found = _file_for(files, engine)
            if found is None:
                tried.append(f"{engine}: no {' / '.join(ENGINE_FORMATS[engine])} file")
                continue
            reason = why_not(engine)
            if reason is not None:
                tried.append(f"{engine}: {reason}")
                continue
            plan[key] = EngineChoice(engine, found[0], found[1])
            break
        else:
            raise BundleError(
                f"model {key!r} ({has}) cannot run on any preferred engine: {'; '.join(tried)}"
            )
    return plan
