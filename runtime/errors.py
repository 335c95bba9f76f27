"""The exception tree of leanloop.

Every error a user can meet derives from :class:`LeanloopError`; its message is written for the
operator who reads it (what failed, where, and what to do), on one line. Foreign exceptions are
wrapped at the boundary with ``raise X(...) from e`` so tracebacks keep the cause.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BundleError",
    "ConfigError",
    "FrameError",
    "HubError",
    "LeanloopError",
    "PipelineError",
    "StoreError",
    "TrustError",
    "UpdateError",
    "first_line",
]


class LeanloopError(Exception):
    """Root of every error leanloop raises on purpose."""


class ConfigError(LeanloopError):
    """A configuration file or value is invalid (unknown key, wrong type, missing file)."""


class BackendError(LeanloopError):
    """An inference engine failed to load or run a model, or is not installed."""


class PipelineError(LeanloopError):
    """A pipeline graph is invalid or a stage failed in a way that is not a bad frame."""


class FrameError(LeanloopError):
    """One frame could not be decoded or processed; the pipeline goes on with the next."""


class BundleError(LeanloopError):
    """A bundle is malformed, incomplete, or a file does not match the manifest."""


class TrustError(LeanloopError):
    """Signed metadata did not verify: bad signature, expired, rolled back, or hash mismatch."""


class UpdateError(LeanloopError):
    """An update could not be fetched, staged, health-checked or activated."""


class StoreError(LeanloopError):
    """The sample store could not read or write a record."""


class HubError(LeanloopError):
    """The hub refused a request or could not be reached.

    ``http_status`` is the HTTP status of a refusal, None when there was no answer."""

    def __init__(self, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status


def first_line(e: BaseException | str, limit: int = 300) -> str:
    """The first line of an error's message, trimmed to ``limit`` characters (the exception's
    type name when the message is empty): what logs, reports and ``error:`` lines show."""
    text = e if isinstance(e, str) else str(e)
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if not line:
        line = "error" if isinstance(e, str) else type(e).__name__
    return line if len(line) <= limit else line[: limit - 1] + "…"
