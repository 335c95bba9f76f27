"""Timing contenders against an anchor in one run, robust to a busy machine.

Contenders that must be compared closely (:mod:`bench.inference`'s (a) and (b)) run **call
by call in blocks** (:func:`alternating`): within a block every contender is called once per
round, the order is rotated from block to block, and a block ends after a fixed number of
rounds. Each block gives one ratio (median of the contender's calls / median of the anchor's)
and one difference (ms); :class:`BlockStats` reports the **median over the blocks**, with
their spread (10th–90th percentile of the blocks). A neighbour that slows the machine for a
while moves whole blocks, and the median of many blocks shrugs that off far better than one
ratio of two pooled medians (reported as well, as "pooled"). Beside the wall times, the
process CPU time of each call is taken too, in the same shape: it leaves out the time the
process waited for a core, so on a busy machine it shows the work added (with 2 threads it
adds up both threads). Contenders compared more loosely (the engines side by side) run
interleaved a few calls at a time (:func:`interleaved`), order rotated per repetition,
medians over all calls. Ratios are printed, never asserted.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["BlockStats", "Timing", "alternating", "interleaved", "say"]


@dataclass
class Timing:
    """Per-call wall times of one contender, in milliseconds."""

    samples: list[float] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return statistics.median(self.samples)

    @property
    def p90(self) -> float:
        return float(np.percentile(self.samples, 90))

    @property
    def per_s(self) -> float:
        """Calls per second when run back to back (from the mean)."""
        return 1000.0 * len(self.samples) / sum(self.samples)

    def summary(self) -> dict[str, float]:
        return {"p50_ms": self.p50, "p90_ms": self.p90, "per_s": self.per_s, "n": len(self.samples)}


def interleaved(
    contenders: dict[str, Callable[[], object]], reps: int, inner: int, warmup: int = 3
) -> dict[str, Timing]:
    """Time each contender ``reps * inner`` times, interleaved, order rotated per repetition."""
    names = list(contenders)
    for name in names:
        for _ in range(warmup):
            contenders[name]()
    out = {n: Timing() for n in names}
    clock = time.perf_counter
    for r in range(reps):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            fn = contenders[name]
            samples = out[name].samples
            for _ in range(inner):
                t0 = clock()
                fn()
                samples.append((clock() - t0) * 1000.0)
    return out


def alternating(
    contenders: dict[str, Callable[[], object]],
    blocks: int,
    rounds: int,
    warmup: int = 3,
    cpu: dict[str, list[list[float]]] | None = None,
) -> dict[str, list[list[float]]]:
    """Per contender, per block, the wall times (ms) of its ``rounds`` calls in that block.

    In a block each round calls every contender once, in an order rotated per block, so
    neighbouring calls of different contenders share whatever the machine is doing then.
    With ``cpu``, the process CPU time (ms) of each call is filled in there, in the same shape:
    time the process was not running (another process had the core) does not count in it."""
    names = list(contenders)
    for name in names:
        for _ in range(warmup):
            contenders[name]()
    out: dict[str, list[list[float]]] = {n: [] for n in names}
    if cpu is not None:
        cpu.update({n: [] for n in names})
    clock, cpu_clock = time.perf_counter, time.process_time
    for b in range(blocks):
        k = b % len(names)
        order: list[tuple[str, Callable[[], object], list[float], list[float]]] = [
            (n, contenders[n], [], []) for n in names[k:] + names[:k]
        ]
        for _ in range(rounds):
            for _, fn, samples, cpu_samples in order:
                c0 = cpu_clock()
                t0 = clock()
                fn()
                t1 = clock()
                cpu_samples.append((cpu_clock() - c0) * 1000.0)
                samples.append((t1 - t0) * 1000.0)
        for name, _, samples, cpu_samples in order:
            out[name].append(samples)
            if cpu is not None:
                cpu[name].append(cpu_samples)
    return out


@dataclass
class BlockStats:
    """One contender against an anchor, block by block (see :func:`alternating`)."""

    ratios: list[float]  # per block: median(contender) / median(anchor)
    diffs_ms: list[float]  # per block: median(contender) - median(anchor)
    pooled_ratio: float  # median of all contender calls / median of all anchor calls
    anchor_p50_ms: float
    p50_ms: float

    @classmethod
    def of(cls, t: dict[str, list[list[float]]], name: str, anchor: str) -> BlockStats:
        meds = [statistics.median(b) for b in t[name]]
        base = [statistics.median(b) for b in t[anchor]]
        pooled = [x for b in t[name] for x in b]
        pooled_base = [x for b in t[anchor] for x in b]
        return cls(
            ratios=[m / a for m, a in zip(meds, base, strict=True)],
            diffs_ms=[m - a for m, a in zip(meds, base, strict=True)],
            pooled_ratio=statistics.median(pooled) / statistics.median(pooled_base),
            anchor_p50_ms=statistics.median(pooled_base),
            p50_ms=statistics.median(pooled),
        )

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def diff_ms(self) -> float:
        return statistics.median(self.diffs_ms)

    @staticmethod
    def spread(values: list[float]) -> tuple[float, float]:
        """10th and 90th percentile."""
        lo, hi = np.percentile(values, [10, 90])
        return float(lo), float(hi)

    def summary(self, prefix: str) -> dict[str, Any]:
        r_lo, r_hi = self.spread(self.ratios)
        d_lo, d_hi = self.spread(self.diffs_ms)
        return {
            f"{prefix}ratio": self.ratio,
            f"{prefix}ratio_p10": r_lo,
            f"{prefix}ratio_p90": r_hi,
            f"{prefix}overhead_ms": self.diff_ms,
            f"{prefix}overhead_p10_ms": d_lo,
            f"{prefix}overhead_p90_ms": d_hi,
            f"{prefix}pooled_ratio": self.pooled_ratio,
            f"{prefix}blocks": len(self.ratios),
        }


def say(text: str) -> None:
    print(text, flush=True)
