"""One target under atheris (libFuzzer) in this process: ``python -m fuzz._one NAME SECONDS DIR``.

Started by :mod:`fuzz.__main__`, one process per target (libFuzzer runs once per process).
Our packages — and the libraries whose parsing they lean on (yaml, tuf) — are imported under
atheris' instrumentation, so coverage of their code guides the mutations. The seeds of
:func:`fuzz.targets.seeds` start the corpus; new inputs that reach new code are added to it.
An exception other than the target's expected refusals ends the run with a crash file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris


def main() -> None:
    name, seconds, workdir = sys.argv[1], float(sys.argv[2]), Path(sys.argv[3])
    with atheris.instrument_imports(include=["runtime", "hub", "bsdiff", "yaml", "tuf"]):
        from fuzz.targets import TARGETS, seeds

        target = TARGETS[name]
        corpus = workdir / "corpus" / name
        corpus.mkdir(parents=True, exist_ok=True)
        for i, seed in enumerate(seeds(name)):
            target.run(seed)  # the seeds pass (and this imports the parser, instrumented)
            (corpus / f"seed-{i}").write_bytes(seed)
    crashes = workdir / "crashes"
    crashes.mkdir(parents=True, exist_ok=True)
    args = [
        sys.argv[0],
        str(corpus),
        f"-max_total_time={max(1, round(seconds))}",
        "-print_final_stats=1",
        f"-artifact_prefix={crashes}/{name}-",
        "-timeout=10",
        "-rss_limit_mb=2048",
        "-max_len=16384",
    ]
    atheris.Setup(args, target.run)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
