"""A device moves itself to a new key (``leanloop device rotate-key``).

The steps, each of which may be cut by SIGKILL or a power loss without leaving the device
unable to authenticate (:class:`~runtime.identity.KeyFiles`):

1. settle: if a next key is left over from an interrupted move, find out which key the hub
   knows the device by (the current key, then the next one) and keep that one;
2. write a fresh key as ``<state>/device_key.next.pem`` (0600, atomically);
3. the hub: the current key and the new key both sign one fresh challenge; the hub swaps the
   keys and issues a new token in one transaction, logs the move and audits it;
4. store the new token (``device.json``);
5. rename the next key over ``device_key.pem``.

Killed after 2: the hub still knows the current key, which keeps working. Killed after 3 or 4:
the current key is refused, so the device (the service or the next ``rotate-key``) tries the
next key, which works, and promotes it. The device service may run meanwhile: when its token or
key stops working it reads the key files again the same way.

``LEANLOOP_TEST_ROTATE_KILL_AT`` (tests only) names a step after which the process kills
itself with SIGKILL: ``next-written``, ``hub-swapped``, ``token-saved``.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import asdict, dataclass
from typing import Any

from runtime.config import DeviceConfig
from runtime.errors import ConfigError, HubError
from runtime.hubclient import HubClient, token_saver
from runtime.identity import KeyFiles

__all__ = ["Rotation", "rotate_device_key"]

log = logging.getLogger(__name__)

_KILL_AT = "LEANLOOP_TEST_ROTATE_KILL_AT"


@dataclass(frozen=True)
class Rotation:
    """What ``rotate-key`` did (its ``--json`` output)."""

    device_id: str
    old_key: str  # the key the hub knew the device by before this move
    new_key: str
    settled: str | None  # a key an interrupted earlier move left, which the hub knew: kept

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _step_done(step: str) -> None:
    if os.environ.get(_KILL_AT) == step:
        log.warning("test hook: killed after %s", step)
        os.kill(os.getpid(), signal.SIGKILL)


def rotate_device_key(cfg: DeviceConfig) -> Rotation:
    """Move the device of ``cfg`` to a fresh key (the steps of the module story).

    Raises ConfigError (no hub configured, no key yet) or HubError (hub unreachable, or it
    refused: it does not know this device by either key on disk).
    """
    if cfg.hub.url is None:
        raise ConfigError("no hub configured (hub.url): a key is moved with the hub")
    files = KeyFiles(cfg.state_dir)
    try:
        current = files.current()
    except FileNotFoundError:
        raise ConfigError(
            f"no device key in {cfg.state_dir}: start the device once (it makes one and enrols)"
        ) from None
    hub = HubClient(cfg.hub.url, timeout_s=cfg.hub.timeout_s, fallback_urls=cfg.hub.fallback_urls)
    try:
        hub.key, hub.key_files, hub.device_id = current, files, cfg.device_id
        hub.on_token = token_saver(hub, cfg.state_dir, cfg.device_id)
        settled = None
        if files.next() is not None:  # 1. a move was cut: which key does the hub know?
            hub.refresh()  # tries current, then next; keeps (promotes) the one that works
            if hub.key is not None and hub.key.public_b64 != current.public_b64:
                settled = hub.key.public_b64
            current = hub.key or current
        new = files.make_next()  # 2.
        _step_done("next-written")
        try:
            token = hub.answer_challenge(current, new)  # 3.
        except HubError as e:
            if e.http_status == 401:  # refused: the hub did not swap
                files.discard_next()
                raise HubError(
                    f"the hub refused to move device {cfg.device_id} to a new key: it does not "
                    "know the device by its key (an admin approves or resets it)",
                    http_status=401,
                ) from e
            raise  # no answer: the next run finds out which key the hub kept
        _step_done("hub-swapped")
        hub.adopt(token, new)  # 4.
        _step_done("token-saved")
        files.promote(new)  # 5.
        log.info("device %s moved to key %s", cfg.device_id, new.public_b64)
        return Rotation(cfg.device_id, current.public_b64, new.public_b64, settled)
    finally:
        hub.close()
