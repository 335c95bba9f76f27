"""Inference engines behind one protocol, picked by name.

``REGISTRY`` maps a backend name (what a device config or ``load_bundle`` says, e.g.
``"onnxruntime"``) to the module that implements it. Modules are imported only when a backend
is used, so a device without an optional engine can still import ``runtime`` and run the
engines it has; asking for a missing one raises :class:`~runtime.errors.BackendError` naming the
extra to install.

Every backend module exposes two functions:

- ``load(path: Path, options: BackendOptions) -> Backend`` — load and warm up the model at
  ``path``; raises BackendError naming the file and the engine.
- ``unavailable_reason() -> str | None`` — None when the engine can be used, else why not.

Adding an engine is: one module with those two functions and a class implementing
:class:`~runtime.backends.base.Backend`, plus one line in ``REGISTRY``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from runtime.backends.base import Backend, BackendOptions
from runtime.errors import BackendError

__all__ = [
    "REGISTRY",
    "Backend",
    "BackendOptions",
    "available_backends",
    "load_backend",
    "unavailable_reason",
]

REGISTRY: dict[str, str] = {
    "onnxruntime": "runtime.backends.onnxruntime",
    "openvino": "runtime.backends.openvino",
    "litert": "runtime.backends.litert",
}
"""Backend name -> module implementing it (imported lazily)."""


def _module(name: str) -> ModuleType:
    try:
        mod_path = REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise BackendError(f"unknown backend {name!r} (known: {known})") from None
    try:
        return importlib.import_module(mod_path)
    except ImportError as e:
        extra = _EXTRA.get(name, "device")
        raise BackendError(
            f"backend {name!r} cannot be imported: {e}; install it with "
            f"pip install 'leanloop[{extra}]'"
        ) from e


# The pip extra that brings each engine.
_EXTRA = {"onnxruntime": "device", "openvino": "openvino", "litert": "litert"}


def load_backend(name: str, path: Path | str, options: BackendOptions | None = None) -> Backend:
    """Load (and warm up) the model at ``path`` on backend ``name``.

    Raises BackendError for an unknown name, a missing engine, or a model the engine rejects.
    """
    backend: Backend = _module(name).load(Path(path), options or BackendOptions())
    return backend


def unavailable_reason(name: str) -> str | None:
    """None when backend ``name`` can be used here, else why not. Raises BackendError for an
    unknown name."""
    if name not in REGISTRY:
        _module(name)  # raises the "unknown backend" error
    try:
        reason: str | None = _module(name).unavailable_reason()
    except BackendError as e:
        reason = str(e)
    return reason


def available_backends() -> dict[str, str | None]:
    """Every registered backend -> None when usable, else the reason it is not."""
    out: dict[str, str | None] = {}
    for name in REGISTRY:
        try:
            reason: str | None = _module(name).unavailable_reason()
        except BackendError as e:
            reason = str(e)
        out[name] = reason
    return out
