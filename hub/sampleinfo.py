"""What the hub's pages and its Label Studio routes read off samples and bundles."""

from __future__ import annotations

from typing import Any

from hub.storage import HubDB

__all__ = ["classes_of", "predicted_items", "strategy_of"]


def predicted_items(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The last stage's items of a sample's production prediction (what the model said)."""
    stages = (meta.get("prediction") or {}).get("stages") or {}
    if not isinstance(stages, dict) or not stages:
        return []
    last = list(stages.values())[-1]
    items = last.get("items") if isinstance(last, dict) else None
    return [it for it in items or [] if isinstance(it, dict)]


def strategy_of(meta: dict[str, Any]) -> str:
    """Why the device kept the frame: the random slice, or its highest-scoring strategy."""
    if meta.get("random_slice"):
        return "random"
    scores = meta.get("scores") or {}
    if not isinstance(scores, dict) or not scores:
        return "—"
    return str(max(scores, key=lambda k: float(scores[k] or 0.0)))


def classes_of(db: HubDB, bundle: str) -> list[str]:
    """The class names of the bundle's newest published ontology ([] if none is published)."""
    best: tuple[int, list[str]] = (0, [])
    for name, version, manifest in db.bundles():
        if name == bundle and version > best[0]:
            classes = ((manifest or {}).get("ontology") or {}).get("classes") or []
            best = (version, [str(c) for c in classes])
    return best[1]
