"""A lower bound of the current time for devices without a real-time clock.

TUF refuses expired metadata, which needs "now". A device without a battery-backed clock boots
at 1970 (or at its last shutdown time) until NTP answers, and may never get NTP at all. Trusting
that clock would let an attacker replay metadata that expired long ago (clock too early) and
trusting nothing would stop updates. The policy (docs/operations.md, "Time and expiry"):

- the device keeps a persisted **time floor**: the newest of the runtime's release time
  (:data:`runtime._version.__released__`) and the hub's signing time of the newest timestamp
  metadata the device has trusted (the hub signs it into the timestamp as ``x-leanloop-issued``;
  only a timestamp that verified and had not expired moves the floor, and never past that
  timestamp's own expiry);
- expiry is checked against ``max(system clock, floor)``: a clock that is behind (reset, not
  yet synced) is replaced by the floor, so metadata that expired before the newest timestamp
  the device has seen is refused, and a device whose clock reads 1970 still updates from a hub
  whose metadata is fresh;
- the floor is tied to the timestamp key(s) that vouched for it: if a later root names other
  timestamp keys (the old one was revoked, e.g. because it signed a far-future time), the floor
  falls back to the release time, so a compromised timestamp key cannot lock devices out for
  good.

:class:`TimeFloor` is the pure-ish core (one small JSON file, written atomically); the fetcher in
:mod:`runtime.trust` asks it for the reference time before a refresh and shows it the trusted
timestamp after one.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runtime._atomic import atomic_write_json
from runtime._limits import MAX_STATE_BYTES, read_bounded
from runtime._version import __released__

__all__ = ["ISSUED_FIELD", "RELEASE_TIME", "TimeFloor", "parse_utc"]

log = logging.getLogger("leanloop.trust")

ISSUED_FIELD = "x-leanloop-issued"
"""Field of the timestamp's signed part holding the hub's clock at signing (ISO 8601, UTC)."""


def parse_utc(text: Any) -> datetime | None:
    """``YYYY-MM-DDTHH:MM:SSZ`` as an aware UTC datetime; None if ``text`` is not one."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


RELEASE_TIME = parse_utc(__released__) or datetime(2025, 1, 1, tzinfo=UTC)
"""When this runtime was released: no metadata a device meets can be checked at an earlier time."""


class TimeFloor:
    """The persisted lower bound of "now" (``time_floor.json``)."""

    def __init__(self, path: Path, release_time: datetime = RELEASE_TIME) -> None:
        self.path = Path(path)
        self.release_time = release_time
        self._floor = release_time
        self._keyids: frozenset[str] = frozenset()
        try:
            data = json.loads(read_bounded(self.path, MAX_STATE_BYTES))
            floor = parse_utc(data.get("floor"))
            keyids = data.get("timestamp_keyids")
            if floor is not None and isinstance(keyids, list):
                self._floor = max(floor, release_time)
                self._keyids = frozenset(str(k) for k in keyids)
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError) as e:
            log.warning(
                "%s is unreadable (%s); the time floor restarts at the release time", path, e
            )

    def floor(self, timestamp_keyids: frozenset[str] | set[str]) -> datetime:
        """The floor valid under a root whose timestamp role has ``timestamp_keyids``."""
        if self._keyids and not (self._keyids & set(timestamp_keyids)):
            return self.release_time  # learned from a key the root no longer trusts
        return self._floor

    def reference_time(
        self, clock: datetime, timestamp_keyids: frozenset[str] | set[str]
    ) -> datetime:
        """The time to check expiry against: ``max(clock, floor)``."""
        floor = self.floor(timestamp_keyids)
        if clock < floor:
            log.info(
                "system clock %s is before the trusted time floor %s: checking expiry against "
                "the floor",
                clock.isoformat(),
                floor.isoformat(),
            )
            return floor
        return clock

    def observe(
        self,
        issued: datetime | None,
        expires: datetime,
        timestamp_keyids: frozenset[str] | set[str],
    ) -> bool:
        """Raise the floor to ``issued`` of a timestamp that just verified (capped at its
        ``expires``). Returns True if the floor moved (and was saved). Raises OSError."""
        if issued is None:
            return False
        candidate = min(issued, expires)
        current = self.floor(timestamp_keyids)
        keyids = frozenset(timestamp_keyids)
        if candidate <= current and keyids == self._keyids:
            return False
        self._floor = max(candidate, current)
        self._keyids = keyids
        atomic_write_json(
            self.path,
            {
                "floor": self._floor.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "timestamp_keyids": sorted(keyids),
            },
        )
        return True
