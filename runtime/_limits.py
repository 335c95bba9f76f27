"""Size caps for files a device or the hub parses, checked before a byte is parsed.

A parser's cost grows with its input (a 4 MiB YAML flow list took ~56 s to parse), so every
YAML/JSON file that can come from outside — a bundle's ``manifest.json``, ``pipeline.yaml``,
``ontology.yaml``, health-check ``expected.json``, the device config, state files — is read
through :func:`read_bounded`, which refuses a file larger than its cap without reading it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_EXPECTED_BYTES",
    "MAX_MANIFEST_BYTES",
    "MAX_METADATA_BYTES",
    "MAX_ONTOLOGY_BYTES",
    "MAX_STATE_BYTES",
    "TooLargeError",
    "read_bounded",
    "safe_yaml",
]

MAX_MANIFEST_BYTES = 1 << 20  # manifest.json: thousands of files fit in a few hundred KiB
MAX_METADATA_BYTES = 5_000_000  # TUF metadata: python-tuf's own default cap for targets.json
MAX_ONTOLOGY_BYTES = 128 * 1024
MAX_EXPECTED_BYTES = 4 << 20  # golden/expected.json: full score vectors of every golden image
MAX_CONFIG_BYTES = 64 * 1024  # the device config file
MAX_STATE_BYTES = 4 << 20  # the device's own state files (slots, shadow report, time floor, ...)


class TooLargeError(ValueError):
    """A file is larger than the cap for its kind (a ValueError: a parse failure)."""


def read_bounded(path: Path | str, limit: int) -> bytes:
    """The bytes of ``path`` if it holds at most ``limit`` of them.

    Raises OSError (missing, unreadable) or :class:`TooLargeError`; never reads past the cap.
    """
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size > limit:
            raise TooLargeError(f"{path}: larger than {limit} bytes")
        data = f.read(limit + 1)
    if len(data) > limit:  # it grew while we read it
        raise TooLargeError(f"{path}: larger than {limit} bytes")
    return data


# libyaml's loader when PyYAML has it (about 7x faster than the pure-Python one on a flow list;
# same safe subset of YAML), else the pure-Python safe loader.
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# What PyYAML's safe constructor lets escape for an explicitly tagged scalar it cannot convert
# (found by fuzzing: ``!!float f`` ValueError, ``!!timestamp x`` AttributeError, ``!!bool x``
# KeyError, an empty ``!!int`` IndexError; a 5000-digit ``!!int`` ValueError).
_CONSTRUCT_ERRORS = (ValueError, TypeError, AttributeError, LookupError, OverflowError)


MAX_YAML_VALUES = 100_000
"""Values a YAML document may hold once its aliases are expanded: a few hundred bytes of
nested aliases stand for billions of values ("billion laughs"), which whoever walks or dumps
the result would pay for."""


def safe_yaml(data: bytes | str) -> Any:
    """``yaml.safe_load`` with libyaml when available. Raises yaml.YAMLError for every input
    it cannot load (also for values PyYAML's constructor cannot convert, and for documents of
    more than :data:`MAX_YAML_VALUES` values with aliases expanded)."""
    try:
        loaded = yaml.load(data, Loader=_SafeLoader)
    except yaml.YAMLError:
        raise
    except _CONSTRUCT_ERRORS as e:
        raise yaml.constructor.ConstructorError(
            None, None, f"cannot load a value: {type(e).__name__}: {_first_line(e)}"
        ) from e
    _check_expanded_size(loaded)
    return loaded


def _check_expanded_size(obj: Any) -> None:
    stack, seen = [obj], 0
    while stack:
        item = stack.pop()
        seen += 1
        if seen > MAX_YAML_VALUES:
            raise yaml.constructor.ConstructorError(
                None, None, f"more than {MAX_YAML_VALUES} values once aliases are expanded"
            )
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set):
            stack.extend(item)


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [""])[0]
