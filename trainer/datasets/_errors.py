"""The dataset error and its problems (shared by the model, the readers and the tasks)."""

from __future__ import annotations

from dataclasses import dataclass

from trainer.errors import TrainerError

__all__ = ["DatasetError", "Problem"]


@dataclass(frozen=True)
class Problem:
    """One bad thing in a dataset: where (file[:line] or file#id; may be empty) and what."""

    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}" if self.where else self.what

    def to_dict(self) -> dict[str, str]:
        return {"where": self.where, "what": self.what}


class DatasetError(TrainerError):
    """A dataset is inconsistent, unreadable or cannot be imported; ``problems`` lists every
    reason with its place.

    ``DatasetError("message", problems)``, or ``DatasetError(["problem", ...])`` whose message
    is the first problem (and how many more).
    """

    def __init__(self, message: str | list[str], problems: list[Problem] | None = None) -> None:
        if isinstance(message, list):
            listed = [str(m) for m in message]
            problems = problems if problems is not None else [Problem("", m) for m in listed]
            more = f" (and {len(listed) - 1} more)" if len(listed) > 1 else ""
            message = f"{listed[0]}{more}" if listed else "invalid dataset"
        super().__init__(message)
        self.problems = list(problems or [])
