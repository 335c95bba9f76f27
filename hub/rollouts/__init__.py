"""Staged rollouts: the spec an admin writes, and the pure engine that walks its waves.

See :mod:`hub.rollouts.engine` for the rules and docs/operations.md ("Rollouts") for the
operator's view, remote rollback included.
"""

from hub.rollouts.engine import (
    Action,
    DeviceView,
    RolloutState,
    RolloutStatus,
    TickResult,
    WaveCounts,
    control,
    in_window,
    order_devices,
    tick,
    wave_counts,
    wave_size,
)
from hub.rollouts.spec import RolloutSpec, Wave, Window

__all__ = [
    "Action",
    "DeviceView",
    "RolloutSpec",
    "RolloutState",
    "RolloutStatus",
    "TickResult",
    "Wave",
    "WaveCounts",
    "Window",
    "control",
    "in_window",
    "order_devices",
    "tick",
    "wave_counts",
    "wave_size",
]
