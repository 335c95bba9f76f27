"""Benchmarks that print ratios against the raw engines (``make bench`` = ``python -m bench``).

:mod:`bench.inference` measures what the device runtime adds over calling an inference engine
directly, on the same model file and thread count, in one run: the single-model pipeline vs a
raw ``session.run``, a detector → classifier pipeline vs the sum of its raw calls, the three
engines side by side, and the peak RSS of a device process with one bundle loaded. Timing is
never asserted anywhere; the figures are printed and written to ``bench-out/inference.json``.
"""

from __future__ import annotations

__all__: list[str] = []
