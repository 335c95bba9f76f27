"""Fuzzing of every parser that takes outside bytes (issue 12); see :mod:`fuzz.targets`."""
