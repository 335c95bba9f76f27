"""``python -m fuzz [--seconds S] [--jobs N] [--json FILE] [TARGET...]``: coverage-guided fuzzing.

Runs each target of :mod:`fuzz.targets` for ``S`` seconds (``FUZZ_SECONDS`` in ``make fuzz``)
under atheris/libFuzzer, one process per target, ``N`` at a time, and prints per target the
inputs tried, inputs per second and crashes (an input that raised something other than the
parser's documented refusal, or hung for 10 s; its bytes are kept under ``--workdir``).
Exit 1 if anything crashed, 2 if atheris is not installed (``pip install atheris``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

_RUNS = re.compile(r"stat::number_of_executed_units:\s*(\d+)")
_RSS = re.compile(r"stat::peak_rss_mb:\s*(\d+)")


@dataclass
class Result:
    target: str
    seconds: float
    inputs: int
    per_second: float
    crashes: int
    peak_rss_mb: int
    detail: str


def _run(name: str, seconds: float, workdir: Path) -> Result:
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "fuzz._one", name, str(seconds), str(workdir)],
        capture_output=True,
        text=True,
        timeout=seconds + 300,
        check=False,
    )
    took = time.monotonic() - t0
    out = proc.stdout + proc.stderr
    runs = sum(int(m) for m in _RUNS.findall(out))
    rss = max([int(m) for m in _RSS.findall(out)] or [0])
    crashed = proc.returncode != 0
    detail = ""
    if crashed:
        lines = [ln for ln in out.splitlines() if ln.strip()]
        start = next(
            (i for i, ln in enumerate(lines) if "Uncaught Python exception" in ln or "ERROR" in ln),
            max(0, len(lines) - 12),
        )
        detail = "\n".join(lines[start : start + 14])
    return Result(
        name, round(took, 1), runs, round(runs / max(seconds, 1e-9)), int(crashed), rss, detail
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.splitlines()[0])
    p.add_argument("targets", nargs="*", help="targets to run (default: all)")
    p.add_argument("--seconds", type=float, default=60.0, help="fuzzing time per target")
    p.add_argument("--jobs", type=int, default=1, help="targets fuzzed at once")
    p.add_argument("--workdir", type=Path, default=None, help="corpus and crash files")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    a = p.parse_args(argv)
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("error: atheris is not installed here (pip install atheris)", file=sys.stderr)
        return 2
    from fuzz.targets import TARGETS

    names = a.targets or list(TARGETS)
    unknown = sorted(set(names) - set(TARGETS))
    if unknown:
        print(f"error: unknown targets {unknown}; known: {sorted(TARGETS)}", file=sys.stderr)
        return 2
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix="leanloop-fuzz-"))
    with concurrent.futures.ThreadPoolExecutor(max(1, a.jobs)) as pool:
        results = list(pool.map(lambda n: _run(n, a.seconds, workdir), names))
    print(f"{'target':<14} {'parser':<58} {'inputs':>10} {'inputs/s':>9} {'crashes':>7}")
    for r in results:
        what = TARGETS[r.target].what[:58]
        print(f"{r.target:<14} {what:<58} {r.inputs:>10} {r.per_second:>9} {r.crashes:>7}")
    for r in results:
        if r.crashes:
            print(f"\n--- crash in {r.target} (inputs kept in {workdir}/crashes):\n{r.detail}")
    if a.json is not None:
        a.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    print(f"workdir: {workdir}")
    return 1 if any(r.crashes for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
