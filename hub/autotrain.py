"""The small inner loop: train a bundle again after every N new annotations (off by default).

An admin turns it on per bundle with a rule (``PUT /admin/jobs/auto/{bundle}``): ``every`` N
annotations, the training ``spec`` and the bundle ``version`` the next job produces. After each
annotation of that bundle, :meth:`AutoTrain.on_annotated` counts the annotated samples; once
``every`` more than at the last trigger are there and no earlier auto job is still queued or
running, it queues a spec job (warm-started from the last done auto job) and moves the rule on
(next version, count at trigger, job id). Each job's status then shows its validation confusion
matrix per epoch and, once done, per model: what the loop learnt from that sub-batch.

Rules live in ``<jobs>/auto_train.json`` (written atomically), so they survive a restart.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from hub.storage import HubDB

if TYPE_CHECKING:
    from hub.jobs import JobRunner

__all__ = ["AutoTrain", "AutoTrainRule"]

log = logging.getLogger(__name__)


class AutoTrainRule(BaseModel):
    """One bundle's rule."""

    model_config = ConfigDict(extra="forbid")

    every: int = Field(ge=1, le=1_000_000, description="new annotations between two jobs")
    version: int = Field(ge=1, description="bundle version the next job produces")
    spec: dict[str, Any] = Field(description="training spec (leanloop.train/1)")
    classes: list[str] | None = Field(default=None, max_length=10_000)
    annotated_at_last: int = Field(default=0, ge=0, description="count at the last trigger")
    last_job: int | None = None
    jobs: list[int] = Field(default_factory=list, description="auto jobs, oldest first")


class AutoTrain:
    """Rules per bundle and the trigger."""

    def __init__(self, path: Path, db: HubDB, runner: JobRunner) -> None:
        self._path = path
        self._db = db
        self._runner = runner
        self._rules: dict[str, AutoTrainRule] = {}
        try:
            raw = json.loads(path.read_text())
            self._rules = {k: AutoTrainRule.model_validate(v) for k, v in raw.items()}
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as e:
            log.warning("%s unreadable (%s); auto-training is off until set again", path, e)

    def _save(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({k: r.model_dump(mode="json") for k, r in self._rules.items()}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._path)

    def rules(self) -> dict[str, AutoTrainRule]:
        return dict(self._rules)

    async def _annotated(self, bundle: str) -> int:
        return len(await self._db.call(self._db.samples, bundle, "annotated", None))

    async def set(self, bundle: str, rule: AutoTrainRule) -> AutoTrainRule:
        """Turn auto-training on (or change it); counting starts from the annotations now."""
        count = await self._annotated(bundle)
        rule = rule.model_copy(update={"annotated_at_last": count})
        self._rules[bundle] = rule
        self._save()
        return rule

    def clear(self, bundle: str) -> bool:
        """Turn auto-training off for ``bundle``; False if it was off."""
        if self._rules.pop(bundle, None) is None:
            return False
        self._save()
        return True

    async def on_annotated(self, bundle: str) -> int | None:
        """Queue a job if the rule says so; return its id."""
        rule = self._rules.get(bundle)
        if rule is None:
            return None
        count = await self._annotated(bundle)
        if count - rule.annotated_at_last < rule.every:
            return None
        init_from = None
        if rule.last_job is not None:
            state = (await self._db.call(self._db.job, rule.last_job)).state
            if state in ("queued", "running"):
                return None  # the next trigger comes after it ends
            if state == "done":
                init_from = rule.last_job
        job = await self._runner.submit(
            {
                "bundle": bundle,
                "version": rule.version,
                "init_from": init_from,
                "params": {},
                "spec": rule.spec,
                "classes": rule.classes,
                "auto": {"annotated": count, "new": count - rule.annotated_at_last},
            }
        )
        self._rules[bundle] = rule.model_copy(
            update={
                "version": rule.version + 1,
                "annotated_at_last": count,
                "last_job": job,
                "jobs": [*rule.jobs, job],
            }
        )
        self._save()
        log.info("auto-training %s: job %d after %d annotations", bundle, job, count)
        return job
