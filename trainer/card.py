"""The model card every trained bundle source carries: ``model_card.json`` + ``MODEL_CARD.md``.

It says what the model was trained on (dataset name and data version, ontology, counts per
class in train/validation), how (the full spec, the networks and their sizes, the search's
trials), how well (metrics per class, confusion matrix, the epoch history), how long, and that
every exported engine computes what torch computes (max abs difference per file).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from trainer.datasets.model import Dataset
from trainer.spec import TrainingSpec
from trainer.tasks._common import TaskResult

__all__ = ["CARD_FORMAT", "build_card", "card_markdown", "write_card"]

CARD_FORMAT = "leanloop.model_card/1"


def build_card(
    spec: TrainingSpec,
    dataset: Dataset,
    result: TaskResult,
    parity: dict[str, float],
    skipped: dict[str, str],
    seconds: dict[str, float],
    search: dict[str, Any] | None,
    warm_start: str | None,
) -> dict[str, Any]:
    """The card as a JSON-ready dict."""
    nets = {
        key: {
            "architecture": n.model_spec.architecture,
            "width": n.model_spec.width,
            "input": [n.input_name, [None, *n.sample_shape]],
            "output": n.output_name,
            "parameters": sum(p.numel() for p in n.module.parameters()),
        }
        for key, n in result.nets.items()
    }
    fits = {
        key: {
            "best_metric": f.best_metric,
            "best_epoch": f.best_epoch,
            "epochs_run": f.epochs_run,
            "stopped_early": f.stopped_early,
            "train_s": f.train_s,
            "samples_per_s": f.samples_per_s,
            "history": f.history,
        }
        for key, f in result.fits.items()
    }
    return {
        "format": CARD_FORMAT,
        "name": spec.name,
        "task": spec.task,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "data": {
            "dataset": dataset.name,
            "version": dataset.version,
            "ontology": {
                "id": dataset.ontology_id,
                "version": dataset.ontology_version,
                "classes": list(dataset.classes),
            },
            "items": len(dataset.items),
            "counts_per_class": result.counts,
        },
        "parameters": spec.model_dump(mode="json"),
        "warm_start": warm_start,
        "models": nets,
        "metrics": result.metrics,
        "training": fits,
        "search": search,
        "time_s": seconds,
        "parity": {"max_abs_diff": parity, "skipped": skipped},
    }


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def card_markdown(card: dict[str, Any]) -> str:
    """A short human-readable card."""
    d = card["data"]
    out = [
        f"# Model card: {card['name']} ({card['task']})",
        "",
        f"Created {card['created']}. Data: `{d['dataset']}` version {d['version']}, ontology "
        f"`{d['ontology']['id']}` v{d['ontology']['version']}, {d['items']} items.",
        "",
    ]
    for key, m in card["metrics"].items():
        overall = ", ".join(
            f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in m["overall"].items()
        )
        out += [f"## {key}", "", f"Validation: {overall}.", ""]
        rows = [
            [
                c,
                f"{v['precision']:.3f}",
                f"{v['recall']:.3f}",
                f"{v['f1']:.3f}",
                f"{v['support']:.0f}",
            ]
            for c, v in m["per_class"].items()
        ]
        out += [_table(["class", "precision", "recall", "F1", "support"], rows), ""]
        labels = m["confusion"]["labels"]
        conf = [[labels[i], *map(str, row)] for i, row in enumerate(m["confusion"]["matrix"])]
        out += ["Confusion (rows: truth, columns: predicted):", ""]
        out += [_table(["", *labels], conf), ""]
    parity = card["parity"]["max_abs_diff"]
    out += ["## Engine parity (max abs difference vs torch)", ""]
    out += [_table(["file", "max diff"], [[k, f"{v:.2e}"] for k, v in parity.items()]), ""]
    for fmt, why in card["parity"]["skipped"].items():
        out.append(f"- {fmt} skipped: {why}")
    if card["search"]:
        s = card["search"]
        out += [
            "",
            f"## Search: {s['trials_run']} trials ({s['pruned']} pruned), "
            f"best {s['best_value']:.3f}",
            "",
            f"Best parameters: `{json.dumps(s['best_params'], sort_keys=True)}`",
        ]
    out += ["", f"Time: {json.dumps({k: round(v, 1) for k, v in card['time_s'].items()})} s", ""]
    return "\n".join(out)


def write_card(folder: Path, card: dict[str, Any]) -> None:
    (folder / "model_card.json").write_text(json.dumps(card, indent=1) + "\n")
    (folder / "MODEL_CARD.md").write_text(card_markdown(card))
