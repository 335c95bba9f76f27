"""Warm start from weights the user gives: a torch state dict, or an existing ONNX model.

* ``.pt`` / ``.pth``: a state dict (or a checkpoint dict holding ``state_dict``), loaded with
  ``weights_only=True``; tensors whose name and shape match the fresh network are copied, the
  rest (e.g. a last layer sized for other classes) stay fresh and are listed in the card.
* ``.onnx``: converted to a torch module by onnx2torch. A classifier fine-tunes that converted
  graph whole (:func:`onnx_module`, see :mod:`trainer.run`); other tasks take its tensors by
  name and shape like a state dict, and are refused when none match (an export renames and
  folds tensors; guessing by order would load wrong weights silently). A graph onnx2torch
  cannot convert is refused with the operator it does not support.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from trainer.errors import TrainerError

__all__ = ["WarmStartReport", "load_foreign_state", "onnx_module", "warm_start"]


class WarmStartReport(dict[str, Any]):
    """``{"source", "kind", "copied", "kept_fresh"}`` for the model card."""


def _state_from_pt(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, ValueError, EOFError, pickle.UnpicklingError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TrainerError(f"{path}: not a torch state dict: {first}") from e
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise TrainerError(f"{path}: not a torch state dict (a mapping of names to tensors)")
    return {str(k): v for k, v in obj.items()}


def onnx_module(path: Path) -> torch.nn.Module:
    """The ONNX model at ``path`` as a trainable torch module (onnx2torch). Raises
    TrainerError naming the operator when the graph cannot be converted."""
    try:
        import onnx
        from onnx2torch import convert
    except ImportError as e:
        raise TrainerError(f"warm start from ONNX needs onnx2torch: {e}") from e
    try:
        proto = onnx.load(str(path))
    except Exception as e:  # onnx raises DecodeError and others for a bad file
        raise TrainerError(f"{path}: not an ONNX model ({type(e).__name__})") from e
    try:
        module = convert(proto)
    except NotImplementedError as e:
        first = str(e).splitlines()[0]
        raise TrainerError(
            f"{path}: onnx2torch cannot convert this graph ({first}); "
            "warm-start from a torch state dict instead"
        ) from e
    except Exception as e:  # converter errors have no common base
        first = str(e).splitlines()[0] if str(e) else ""
        raise TrainerError(
            f"{path}: onnx2torch cannot convert this graph ({type(e).__name__}: {first}); "
            "warm-start from a torch state dict instead"
        ) from e
    module.train()
    return module


def _state_from_onnx(path: Path) -> dict[str, torch.Tensor]:
    module = onnx_module(path)
    return {k: v for k, v in module.state_dict().items() if v.is_floating_point()}


def load_foreign_state(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """Tensors of a user-given weights file and its kind (``state_dict`` or ``onnx``).
    Raises TrainerError for a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise TrainerError(f"{path}: warm-start file missing")
    if path.suffix.lower() == ".onnx":
        return _state_from_onnx(path), "onnx"
    return _state_from_pt(path), "state_dict"


def warm_start(model: torch.nn.Module, path: Path) -> WarmStartReport:
    """Copy matching tensors of ``path`` into ``model`` (in place). Raises TrainerError when
    nothing at all matches (the file is for another network)."""
    source, kind = load_foreign_state(path)
    target = model.state_dict()
    new: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for name, t in target.items():
        s = source.get(name)
        if s is not None and s.shape == t.shape:
            new[name] = s
            used.add(name)
    if not new:
        hint = (
            " (an exported graph renames and folds its tensors: fine-tune it whole with task "
            "classify, or warm-start from the source's checkpoint/<model>.pt)"
            if kind == "onnx"
            else ""
        )
        raise TrainerError(f"{path}: no tensor matches the network in name and shape{hint}")
    model.load_state_dict({**target, **new})
    return WarmStartReport(
        source=str(path),
        kind=kind,
        copied=len(new),
        kept_fresh=sorted(set(target) - set(new)),
    )
