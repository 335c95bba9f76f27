"""When samples may go and how many bytes: upload windows, a daily budget, the day's spending.

:class:`UploadPolicy` is what the uploader (:mod:`runtime.uploader`) asks before every request:
is a window open and for how long (:meth:`UploadPolicy.window_left`), how many bytes today's
budget still allows (:meth:`UploadPolicy.budget_left`); it debits the bytes — persisted in
``<state>/upload_budget.json`` — before they go (:meth:`UploadPolicy.spend`). Windows are
``"HH:MM-HH:MM"`` in local time (:func:`parse_window`, also used to check the device config).
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from runtime._atomic import atomic_write_json
from runtime._limits import MAX_STATE_BYTES, read_bounded

if TYPE_CHECKING:
    from runtime.config import UploadSettings

__all__ = ["BUDGET_FILE", "UploadPolicy", "parse_window"]

log = logging.getLogger("leanloop.uploader")

BUDGET_FILE = "upload_budget.json"

_WINDOW_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_DAY_S = 86400


def parse_window(text: str) -> tuple[int, int]:
    """``"HH:MM-HH:MM"`` -> (start, end) in seconds after local midnight.

    ``end`` may be 24:00; ``start > end`` crosses midnight. Raises ValueError.
    """
    m = _WINDOW_RE.match(text)
    if m is None:
        raise ValueError(f'upload window {text!r} is not "HH:MM-HH:MM"')
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    start, end = h1 * 3600 + m1 * 60, h2 * 3600 + m2 * 60
    if m1 > 59 or m2 > 59 or start >= _DAY_S or end > _DAY_S:
        raise ValueError(f"upload window {text!r}: not a time of day")
    if start == end:
        raise ValueError(f"upload window {text!r} is empty (leave the list empty for 'always')")
    return start, end


def _utc_now() -> datetime:
    return datetime.now(UTC)


class UploadPolicy:
    """When samples may go and how many bytes: windows, a daily budget, a rate cap.

    Pure except for the budget file: the clock is injected (``now`` returns an aware datetime),
    so tests drive windows and midnights without sleeping. The day's spending is persisted in
    ``<state>/upload_budget.json`` (atomically, before the bytes are sent) and resets at local
    midnight of ``tz``.
    """

    def __init__(
        self,
        windows: list[str] | None = None,
        tz: str | None = None,
        daily_budget_bytes: int | None = None,
        budget_path: Path | None = None,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.windows = [parse_window(w) for w in windows or []]
        self.tz = ZoneInfo(tz) if tz else None
        self.daily_budget = daily_budget_bytes
        self.budget_path = budget_path
        self.now = now
        self._lock = threading.Lock()
        self._day, self._used = self._load()

    @classmethod
    def from_settings(
        cls,
        settings: UploadSettings,
        state_dir: Path | None,
        now: Callable[[], datetime] = _utc_now,
    ) -> UploadPolicy:
        return cls(
            settings.windows,
            settings.timezone,
            settings.daily_budget_bytes,
            Path(state_dir) / BUDGET_FILE if state_dir is not None else None,
            now,
        )

    def _local(self) -> datetime:
        t = self.now()
        return t.astimezone(self.tz) if self.tz is not None else t.astimezone()

    def _load(self) -> tuple[date | None, int]:
        if self.budget_path is None:
            return None, 0
        try:
            data = json.loads(read_bounded(self.budget_path, MAX_STATE_BYTES))
            return date.fromisoformat(data["day"]), int(data["used"])
        except FileNotFoundError:
            return None, 0
        except (OSError, ValueError, KeyError, TypeError) as e:
            # Unreadable: assume today is spent rather than risk passing a metered budget.
            log.warning(
                "upload budget %s unreadable (%s); today counts as spent", self.budget_path, e
            )
            return self._local().date(), self.daily_budget or 0

    def window_left(self) -> float | None:
        """Seconds until the current upload window closes (inf: no windows), None: closed."""
        if not self.windows:
            return math.inf
        t = self._local()
        sec = t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6
        best: float | None = None
        for start, end in self.windows:
            if start < end:
                left = end - sec if start <= sec < end else None
            else:  # crosses midnight
                left = (end + _DAY_S - sec) if sec >= start else (end - sec if sec < end else None)
            if left is not None and (best is None or left > best):
                best = left
        return best

    def window_opens_in(self) -> float | None:
        """Seconds until the next window opens while all are closed (None: one is open, or
        there are no windows)."""
        if not self.windows or self.window_left() is not None:
            return None
        t = self._local()
        sec = t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6
        return min((start - sec) % _DAY_S for start, _ in self.windows)

    def budget_left(self) -> float:
        """Bytes still allowed today (inf: no daily budget)."""
        if self.daily_budget is None:
            return math.inf
        with self._lock:
            today = self._local().date()
            used = self._used if self._day == today else 0
            return max(0, self.daily_budget - used)

    def spend(self, n: int) -> None:
        """Debit ``n`` bytes from today's budget, persisted before returning."""
        with self._lock:
            today = self._local().date()
            if self._day != today:
                self._day, self._used = today, 0
            self._used += n
            if self.budget_path is not None:
                atomic_write_json(self.budget_path, {"day": today.isoformat(), "used": self._used})

    def status(self) -> dict[str, Any]:
        left = self.window_left()
        budget = self.budget_left()
        opens = self.window_opens_in()
        return {
            "window_open": left is not None,
            "window_left_s": None if left is None or math.isinf(left) else round(left, 1),
            "window_opens_in_s": None if opens is None else round(opens, 1),
            "window_opens_at": None
            if opens is None
            else (self._local() + timedelta(seconds=opens)).isoformat(timespec="minutes"),
            "budget_left_bytes": None if math.isinf(budget) else int(budget),
            "spent_today_bytes": self._used if self._day == self._local().date() else 0,
        }
