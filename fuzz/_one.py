"""One target under atheris (libFuzzer) in this process.

``python -m fuzz._one NAME SECONDS DIR [RUNS]``: started by :mod:`fuzz.__main__`, one process
per target (libFuzzer runs once per process). It stops after ``RUNS`` inputs (0: no goal) or
``SECONDS``, whichever comes first. Our packages — and the libraries whose parsing they lean on
(yaml, tuf) — are imported under atheris' instrumentation, so coverage of their code guides the
mutations. The seeds of :func:`fuzz.targets.seeds` start the corpus; new inputs that reach new
code are added to it; text formats also get a dictionary of their keys and syntax
(:func:`fuzz.targets.dictionary`). An exception other than the target's expected refusals ends
the run with a crash file.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import atheris


def _dict_line(word: bytes) -> str:
    """One libFuzzer dictionary entry: ``"..."`` with ``\\xNN`` for anything not plain."""
    body = "".join(
        chr(b) if 32 <= b < 127 and b not in (0x22, 0x5C) else f"\\x{b:02x}" for b in word
    )
    return f'"{body}"'


def main() -> None:
    name, seconds, workdir = sys.argv[1], float(sys.argv[2]), Path(sys.argv[3])
    runs = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    with atheris.instrument_imports(include=["runtime", "hub", "bsdiff", "yaml", "tuf"]):
        from fuzz.targets import TARGETS, dictionary, seeds

        target = TARGETS[name]
        corpus = workdir / "corpus" / name
        corpus.mkdir(parents=True, exist_ok=True)
        for i, seed in enumerate(seeds(name)):
            target.run(seed)  # the seeds pass (and this imports the parser, instrumented)
            (corpus / f"seed-{i}").write_bytes(seed)
        words = dictionary(name)
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
    if runs > 0:
        args.append(f"-runs={runs}")
    if words:
        dict_file = workdir / f"{name}.dict"
        dict_file.write_text("\n".join(_dict_line(w) for w in words) + "\n")
        args.append(f"-dict={dict_file}")
    atheris.Setup(args, target.run)
    setup = resource.getrusage(resource.RUSAGE_SELF)
    cpu = setup.ru_utime + setup.ru_stime
    print(f"setup-done: cpu {cpu:.3f} at {time.time():.3f}", file=sys.stderr, flush=True)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
