"""``leanloop device rotate-key``: the device moves itself to a new key (runtime.key_rotation).

Run on the device, beside the service or with it stopped. Exit 0 moved, 1 the hub refused or
did not answer (run it again: an interrupted move is completed first), 2 bad config.
"""

from __future__ import annotations

from leanloop._cli_common import DeviceConfig
from runtime.console import JsonFlag, say

__all__ = ["rotate_key"]


def rotate_key(
    config: DeviceConfig = None,
    as_json: JsonFlag = False,
) -> None:
    """Move this device to a new ed25519 key: both keys prove themselves to the hub, which
    swaps them at once; the old key is refused afterwards. Safe to interrupt and run again."""
    from runtime.config import load_config
    from runtime.key_rotation import rotate_device_key

    done = rotate_device_key(load_config(config))
    text = f"{done.device_id}: moved to key {done.new_key} (was {done.old_key})"
    if done.settled is not None:
        text = f"{done.device_id}: completed an interrupted move to {done.settled}\n{text}"
    say(as_json, done.as_dict(), text)
