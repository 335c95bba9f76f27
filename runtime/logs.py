"""Log lines for a terminal or for the journal.

Under systemd, stderr is a stream to journald and ``$JOURNAL_STREAM`` names it
(``device:inode``). The journal stamps each line itself and reads a ``<N>`` prefix as the
syslog priority, so there each line is ``<3>leanloop.device: message`` — one timestamp (the
journal's), errors shown as errors by ``journalctl -p err``. Anywhere else a line carries its
own time and level.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

__all__ = ["JournalFormatter", "setup_logging", "stderr_is_journal"]

# Python level -> syslog priority (sd-daemon(3): <3> err, <4> warning, <6> info, <7> debug).
_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def stderr_is_journal(stream: TextIO | None = None) -> bool:
    """True when ``stream`` (stderr) is the journal stream ``$JOURNAL_STREAM`` names."""
    want = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = want.partition(":")
    if not dev or not ino:
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return f"{st.st_dev}:{st.st_ino}" == want


class JournalFormatter(logging.Formatter):
    """``<priority>logger: message``; a traceback's lines keep the record's priority."""

    def format(self, record: logging.LogRecord) -> str:
        prio = _PRIORITY.get(record.levelno)
        if prio is None:
            prio = 3 if record.levelno >= logging.ERROR else 6
        text = f"{record.name}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines())


def setup_logging(verbose: bool = False, stream: TextIO | None = None) -> None:
    """Configure the root logger for the journal or a terminal (see the module story)."""
    root = logging.getLogger()
    if root.handlers:
        return  # configured already (as logging.basicConfig: e.g. a test runner's capture)
    out = stream or sys.stderr
    handler = logging.StreamHandler(out)
    if stderr_is_journal(out):
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
