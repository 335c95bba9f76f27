"""The trainer's exception family (under the project root :class:`runtime.errors.LeanloopError`)."""

from __future__ import annotations

from runtime.errors import LeanloopError

__all__ = ["TrainerError"]


class TrainerError(LeanloopError):
    """Training data, a checkpoint or an export is unusable (bad file, mismatch, no digits)."""
