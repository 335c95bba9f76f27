"""Optuna search around a training spec: a study, trials with suggested values, pruning.

The search stays outside the training step (as in Optuna's own examples): each trial copies the
spec with its suggested values (:data:`trainer.spec.SEARCHABLE`), trains once through the
shared loop, reports the validation metric after every epoch (``trial.report``) and stops
when the pruner says so (``MedianPruner`` or ``HyperbandPruner``). The sampler is a seeded TPE,
so the same spec and seed give the same trials. The result — every trial's parameters, value,
state, per-epoch values and seconds — goes into the model card (``search``), so it stays with
the job's artifact and the bundle.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainer.datasets.model import Dataset
from trainer.engine import EpochReport
from trainer.errors import TrainerError
from trainer.spec import SearchParam, TrainingSpec

__all__ = ["run_search"]

log = logging.getLogger(__name__)

_INT_FIELDS = ("batch", "epochs")


def _suggest(trial: Any, name: str, p: SearchParam) -> Any:
    if p.choices is not None:
        return trial.suggest_categorical(name, p.choices)
    assert p.low is not None and p.high is not None
    if name in _INT_FIELDS:
        return trial.suggest_int(name, int(p.low), int(p.high), log=p.log)
    return trial.suggest_float(name, p.low, p.high, log=p.log)


def _apply(spec: TrainingSpec, values: dict[str, Any]) -> TrainingSpec:
    update = {k: v for k, v in values.items() if k != "width"}
    if "width" in values:
        update["model"] = spec.model.model_copy(update={"width": float(values["width"])})
    try:
        return TrainingSpec.model_validate({**spec.model_dump(), **update, "search": None})
    except ValueError as e:
        raise TrainerError(f"search: {values} is not a valid spec: {e}") from e


def run_search(
    spec: TrainingSpec,
    dataset: Dataset,
    root: Path,
    on_trial: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[dict[str, Any], TrainingSpec]:
    """Run the study; return ``(results, spec with the best values)``. Raises TrainerError
    when no trial completes."""
    import optuna

    from trainer.run import train_once

    assert spec.search is not None
    s = spec.search
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner: optuna.pruners.BasePruner
    if s.pruner == "median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=1)
    elif s.pruner == "hyperband":
        pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=spec.epochs)
    else:
        pruner = optuna.pruners.NopPruner()
    # A fixed study name: Hyperband assigns trials to brackets by a hash of it, so a random
    # name (Optuna's default) would make the same spec and seed prune differently.
    study = optuna.create_study(
        study_name=f"leanloop-{spec.name}-{s.seed}",
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=s.seed),
        pruner=pruner,
    )
    trial_s: list[float] = []

    def objective(trial: optuna.Trial) -> float:
        values = {name: _suggest(trial, name, p) for name, p in s.space.items()}
        trial_spec = _apply(spec, values)
        # One step counter across the stages of a two-stage task.
        step = {"n": 0}

        def on_epoch(key: str, r: EpochReport) -> None:
            step["n"] += 1
            trial.report(r.metric, step["n"])
            if trial.should_prune():
                raise optuna.TrialPruned()

        t0 = time.perf_counter()
        try:
            result, _ = train_once(trial_spec, dataset, root, on_epoch)
        finally:
            trial_s.append(time.perf_counter() - t0)
            trial.set_user_attr("seconds", trial_s[-1])
            trial.set_user_attr("epochs", step["n"])
        return result.objective

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if on_trial is not None:
            on_trial(_trial_row(trial))

    study.optimize(objective, n_trials=s.trials, timeout=s.timeout_s, callbacks=[callback])
    rows = [_trial_row(t) for t in study.trials]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise TrainerError(f"search: none of {len(rows)} trials completed")
    best = study.best_trial
    results = {
        "trials_run": len(rows),
        "pruned": sum(1 for r in rows if r["state"] == "PRUNED"),
        "pruner": s.pruner,
        "seed": s.seed,
        "best_value": best.value,
        "best_params": best.params,
        "trials": rows,
        "trial_seconds": sum(trial_s),
    }
    return results, _apply(spec, best.params)


def _trial_row(t: Any) -> dict[str, Any]:
    return {
        "number": t.number,
        "state": t.state.name,
        "value": t.value,
        "params": t.params,
        "epochs": t.user_attrs.get("epochs"),
        "seconds": t.user_attrs.get("seconds"),
        "intermediate": {str(k): v for k, v in t.intermediate_values.items()},
    }
