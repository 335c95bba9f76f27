"""``results.jsonl``: one JSON line per prediction (the stable ``Prediction.to_dict`` form plus
the frame's capture time ``ts``), appended and flushed per frame."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

from runtime.pipeline.prediction import Prediction

__all__ = ["JsonlSink", "NullSink", "result_dict"]


def result_dict(pred: Prediction, ts: float | None, device: str | None = None) -> dict[str, Any]:
    """A prediction as the sinks publish it."""
    d: dict[str, Any] = {}
    if device is not None:
        d["device"] = device
    if ts is not None:
        d["ts"] = round(ts, 6)
    d.update(pred.to_dict())
    return d


class JsonlSink:
    """Append predictions to a JSON-lines file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115

    def write(self, pred: Prediction, ts: float | None = None) -> None:
        self._f.write(json.dumps(result_dict(pred, ts), separators=(",", ":")) + "\n")
        self._f.flush()

    def stats(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        self._f.close()


class NullSink:
    def write(self, pred: Prediction, ts: float | None = None) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass
