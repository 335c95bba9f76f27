"""A test-only fork server for device processes that are killed and restarted many times.

Importing the runtime (ONNX Runtime, OpenCV, python-tuf, LMDB...) costs about a second per
process; the kill matrix restarts the device over a hundred times. This server imports it once,
then forks one *fresh process* per request, which runs ``DeviceService(load_config(...)).run()``
exactly as ``leanloop device run`` does. The forked device is a real, separate process: it is
killed with a real SIGKILL (by the runtime's test hook) and everything it knows after a restart
comes from its state folder. No thread runs in this server before a fork.

Protocol (stdin/stdout, one JSON object per line): the test writes
``{"config": path, "log": path, "env": {...}}``; the server answers ``{"pid": n}`` at once and
``{"pid": n, "exit": code}`` when that child has ended (-9: killed by SIGKILL). One child at a
time.
"""

from __future__ import annotations

import json
import os
import sys
import traceback


def _child(req: dict[str, object]) -> int:
    import logging

    from runtime.config import load_config
    from runtime.service import DeviceService
    from runtime.update import _testhooks

    fd = os.open(str(req["log"]), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.update({str(k): str(v) for k, v in dict(req["env"]).items()})  # type: ignore[call-overload]
    _testhooks.reset()
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    from pathlib import Path

    return DeviceService(load_config(Path(str(req["config"])))).run()


def main() -> None:
    import cv2  # noqa: F401  (the expensive imports, done once)
    import onnxruntime  # noqa: F401

    import runtime.service  # noqa: F401

    for line in sys.stdin:
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:
            rc = 1
            try:
                rc = _child(req)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(rc)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"pid": pid, "exit": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    main()
