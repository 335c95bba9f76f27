"""Training throughput of the spec-driven trainer vs a plain torch loop, and the search's cost.

1. **Throughput** (classification and detection): the same network (same architecture, seed
   and weights at start), the same data and batch size, trained for the same epochs by
   (a) our loop — :func:`trainer.tasks.classify.fit_classifier` /
   :func:`trainer.tasks.detect.fit_detector` (uint8 → float per batch, cosine schedule, best
   state kept; per-epoch validation excluded from the timed part, as it is no training) and
   (b) a plain loop as in torchvision's references: float tensors prepared once, ``randperm``
   batches, AdamW, ``zero_grad / backward / step``. After one warm-up run of each, runs
   alternate A/B, B/A ``reps`` times; the median of the paired ratios (images/s ours ÷ plain,
   goal ≥ 0.9) and their min–max spread are printed.
2. **Search overhead**: an Optuna study (TPE, no pruner) of ``n`` trials whose only searched
   value has one choice, so every trial trains exactly what a direct run trains, vs ``n``
   direct runs; overhead = search wall time ÷ direct wall time − 1.

Augmentation is off in both arms (it is the same albumentations call either way).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["run_all"]


def _digits(n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    import cv2
    from sklearn.datasets import load_digits

    bunch = load_digits()
    imgs = np.zeros((n, size, size, 3), np.uint8)
    for i in range(n):
        g = np.clip(bunch.images[i % len(bunch.images)] * 16, 0, 255).astype(np.uint8)
        imgs[i] = cv2.cvtColor(cv2.resize(g, (size, size)), cv2.COLOR_GRAY2BGR)
    return imgs, (bunch.target[np.arange(n) % len(bunch.target)] % 10).astype(np.int64)


def _spec(task: str, size: int, epochs: int, batch: int) -> Any:
    from trainer.spec import parse_spec

    return parse_spec(
        {
            "task": task,
            "dataset": {"path": "."},
            "model": {
                "architecture": "mobilenet_v3_small",
                "width": 0.5,
                "input_size": [size, size],
            },
            "epochs": epochs,
            "batch": batch,
            "threads": 1,
            "export": ["onnx"],
        }
    )


def _plain_train(
    model: torch.nn.Module,
    x: np.ndarray,
    spec: Any,
    loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> float:
    """Images/s of a hand-written AdamW loop over ``x``; ``loss_of(images, indices)`` is the
    batch's loss."""
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).float() / 255.0
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    gen = torch.Generator().manual_seed(0)
    steps = len(x) // spec.batch
    model.train()
    t0 = time.perf_counter()
    for _ in range(spec.epochs):
        order = torch.randperm(len(x), generator=gen)
        for s in range(steps):
            idx = order[s * spec.batch : (s + 1) * spec.batch]
            loss = loss_of(xt[idx], idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return spec.epochs * steps * spec.batch / (time.perf_counter() - t0)


def _plain_classify(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, spec: Any) -> float:
    yt = torch.from_numpy(y)
    return _plain_train(
        model, x, spec, lambda xb, idx: torch.nn.functional.cross_entropy(model(xb), yt[idx])
    )


def _plain_detect(model: Any, x: np.ndarray, t: list[Any], spec: Any) -> float:
    from trainer.tasks.detect import detection_loss

    tt = [(torch.from_numpy(b), torch.from_numpy(c)) for b, c in t]
    return _plain_train(
        model, x, spec, lambda xb, idx: detection_loss(model, xb, [tt[i] for i in idx], None)
    )


def _throughput(task: str, reps: int, quick: bool) -> dict[str, Any]:
    from trainer.arch import build_classifier, build_detector
    from trainer.tasks import classify, detect

    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    if task == "classify":
        spec = _spec("classify", 48, 2 if quick else 3, 32)
        x, y = _digits(256 if quick else 512, 48)
        classes = [str(i) for i in range(10)]
    else:
        import tempfile

        from trainer.datasets.native import load_dataset
        from trainer.synthetic import shapes_dataset

        spec = _spec("detect", 64, 2 if quick else 3, 16)
        with tempfile.TemporaryDirectory() as tmp:
            ds, root = load_dataset(shapes_dataset(Path(tmp), n=96 if quick else 192))
            x, targets, _ = detect.box_targets(ds, root, spec.model)
        classes = ds.classes

    def run_ours() -> float:
        torch.manual_seed(0)
        if task == "classify":
            m = build_classifier(spec.model, len(classes))
            return classify.fit_classifier(
                m, x, y, x[:32], y[:32], classes, spec, cpu
            ).samples_per_s
        d = build_detector(spec.model, len(classes))
        return detect.fit_detector(
            d, x, targets, x[:16], targets[:16], classes, spec, cpu
        ).samples_per_s

    def run_plain() -> float:
        torch.manual_seed(0)
        if task == "classify":
            return _plain_classify(build_classifier(spec.model, len(classes)), x, y, spec)
        return _plain_detect(build_detector(spec.model, len(classes)), x, targets, spec)

    run_ours(), run_plain()  # warm-up: first-call allocations and kernel selection
    ours, plain = [], []
    for rep in range(reps):
        # Alternate which arm goes first, so a drift of the machine's load hits both alike.
        if rep % 2:
            plain.append(run_plain())
            ours.append(run_ours())
        else:
            ours.append(run_ours())
            plain.append(run_plain())
    ratios = [a / b for a, b in zip(ours, plain, strict=True)]
    return {
        "task": task,
        "images": len(x),
        "epochs": spec.epochs,
        "batch": spec.batch,
        "ours_img_s": statistics.median(ours),
        "plain_img_s": statistics.median(plain),
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "reps": reps,
    }


def _search_overhead(trials: int, quick: bool) -> dict[str, Any]:
    import tempfile

    from trainer.datasets.native import load_dataset
    from trainer.run import train_once
    from trainer.search import run_search
    from trainer.spec import parse_spec
    from trainer.synthetic import digits_dataset

    with tempfile.TemporaryDirectory() as tmp:
        ds, root = load_dataset(digits_dataset(Path(tmp) / "d", per_class=20 if quick else 40))
        base = {
            "task": "classify",
            "dataset": {"path": str(root)},
            "model": {"architecture": "mobilenet_v3_small", "width": 0.25, "input_size": [32, 32]},
            "epochs": 3,
            "batch": 16,
            "threads": 1,
            "export": ["onnx"],
        }
        direct_spec = parse_spec(base)
        t0 = time.perf_counter()
        for _ in range(trials):
            train_once(direct_spec, ds, root)
        direct = time.perf_counter() - t0
        search_spec = parse_spec(
            {
                **base,
                "search": {
                    "trials": trials,
                    "pruner": "none",
                    "space": {"lr": {"choices": [direct_spec.lr]}},
                },
            }
        )
        t1 = time.perf_counter()
        run_search(search_spec, ds, root)
        searched = time.perf_counter() - t1
    return {
        "trials": trials,
        "direct_s": direct,
        "search_s": searched,
        "overhead": searched / direct - 1.0,
    }


def run_all(out: Path, quick: bool = False) -> dict[str, Any]:
    from rich.console import Console
    from rich.table import Table

    reps = 3 if quick else 7
    results: dict[str, Any] = {
        "throughput": [_throughput(t, reps, quick) for t in ("classify", "detect")],
        "search": _search_overhead(3, quick),
    }
    console = Console()
    table = Table(title="training: our loop vs a plain torch loop (same model, data, batch)")
    for col in (
        "task",
        "images×epochs",
        "ours img/s",
        "plain img/s",
        "ratio (goal ≥ 0.9)",
        "spread",
    ):
        table.add_column(col)
    for r in results["throughput"]:
        table.add_row(
            r["task"],
            f"{r['images']}×{r['epochs']}",
            f"{r['ours_img_s']:.0f}",
            f"{r['plain_img_s']:.0f}",
            f"{r['ratio']:.2f}",
            f"{r['ratio_min']:.2f}–{r['ratio_max']:.2f} ({r['reps']} reps)",
        )
    console.print(table)
    s = results["search"]
    console.print(
        f"Optuna search overhead: {s['trials']} trials {s['search_s']:.1f} s vs "
        f"{s['trials']} direct runs {s['direct_s']:.1f} s → {100 * s['overhead']:+.1f} %"
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "training.json").write_text(json.dumps(results, indent=1) + "\n")
    return results
