"""What every engine backend shares: the I/O signature properties, warm-up on zeros, and the
one-line rendering of an engine's exception for error messages."""

from __future__ import annotations

import numpy as np

from runtime.bundle.manifest import TensorSpec
from runtime.errors import first_line as _first_line

__all__ = ["EngineBackend", "first_line"]


first_line = _first_line
"""The first line of an engine exception (engines often print multi-line C++ traces)."""


class EngineBackend:
    """Base of the backend classes: subclasses set ``_inputs``/``_outputs`` and define ``run``."""

    _inputs: list[TensorSpec]
    _outputs: list[TensorSpec]

    @property
    def inputs(self) -> list[TensorSpec]:
        return self._inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        return self._outputs

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def warmup(self, runs: int) -> None:
        """Run ``runs`` times on zeros of the inputs (dynamic axes: 1). Raises BackendError."""
        if runs <= 0:
            return
        feed = {
            t.name: np.zeros([d if isinstance(d, int) else 1 for d in t.shape], dtype=t.dtype)
            for t in self._inputs
            if t.dtype != "str"
        }
        for _ in range(runs):
            self.run(feed)
