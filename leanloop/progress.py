"""Progress bars of the ``leanloop`` command: on stderr, only for a person at a terminal.

Bars are drawn by rich on a stderr console, and only when that stderr is a terminal and the
command was not asked for ``--json``: stdout stays the command's result (a pipe or a script
sees exactly the same bytes with or without bars), and a log file never fills with redraws.
``TTY_COMPATIBLE=1`` / ``TTY_INTERACTIVE=1`` (rich's own variables) force a terminal, which is
how the tests drive the bars through a pipe.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

__all__ = ["bars_wanted", "byte_progress", "step_progress"]


def bars_wanted(as_json: bool, console: Console | None = None) -> Console | None:
    """The stderr console to draw on, or None when no bar should be drawn."""
    console = console or Console(stderr=True)
    return console if console.is_terminal and not as_json else None


def byte_progress(as_json: bool, console: Console | None = None) -> Progress:
    """A bar for bytes moving (upload, download): done/total, %, rate, time left."""
    con = bars_wanted(as_json, console)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=con or Console(stderr=True),
        disable=con is None,
    )


def step_progress(as_json: bool, *extra: Any, console: Console | None = None) -> Progress:
    """A bar for counted steps (epochs, trials): done/total, %, ``extra`` columns, elapsed."""
    con = bars_wanted(as_json, console)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f}"),
        TaskProgressColumn(),
        *extra,
        TimeElapsedColumn(),
        console=con or Console(stderr=True),
        disable=con is None,
    )
