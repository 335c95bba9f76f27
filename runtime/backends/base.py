"""The backend protocol: one inference engine behind load / run / close.

A backend module exposes one class implementing :class:`Backend` and registers it by name in
``runtime.backends.REGISTRY``. Warm-up happens inside ``load`` so the first real frame is not
slow. Engines are optional imports: a missing engine raises :class:`BackendError` naming the
extra to install, and the registry lists it as unavailable instead of failing at import time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from runtime.bundle.manifest import TensorSpec

__all__ = ["Backend", "BackendOptions"]


@dataclass(frozen=True)
class BackendOptions:
    """Engine settings a device config may set."""

    threads: int = 0  # 0: engine default
    providers: tuple[str, ...] = ()  # ORT execution providers, in order of preference
    device: str = "CPU"  # OpenVINO device
    warmup_runs: int = 1


@runtime_checkable
class Backend(Protocol):
    """One loaded model on one engine."""

    name: str  # registry key, e.g. "onnxruntime"

    @property
    def inputs(self) -> list[TensorSpec]: ...

    @property
    def outputs(self) -> list[TensorSpec]: ...

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run once; outputs in signature order. Raises BackendError."""
        ...

    def close(self) -> None: ...


class BackendFactory(Protocol):
    def __call__(self, path: Path, options: BackendOptions) -> Backend:
        """Load (and warm up) the model at ``path``. Raises BackendError naming file and engine."""
        ...
