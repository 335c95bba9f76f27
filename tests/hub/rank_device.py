"""One device process for the ranking tests: real samples into a real LMDB store, then the
device's own uploader sends them (resumable parts) to the hub.

``python rank_device.py URL ENROLL_TOKEN DEVICE_ID STATE_DIR JOBS_JSON``; ``JOBS_JSON`` lists
``{"name", "image" (a file), "priority", "label"}``. Prints ``{name: sample id}`` as JSON.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from runtime.hubclient import HubClient
from runtime.store.lmdb_store import SampleStore
from runtime.store.record import SampleRecord, new_sample_id
from runtime.uploader import Uploader


def main(url: str, enroll: str, device_id: str, state: str, jobs_file: str) -> None:
    client = HubClient(url, device_id=device_id)
    client.enroll(device_id, enroll, None)
    store = SampleStore(Path(state) / "store", 64 << 20)
    ids: dict[str, str] = {}
    for job in json.loads(Path(jobs_file).read_text()):
        p = float(job["priority"])
        item = {"class_id": 0, "label": job["label"], "score": 1.0 - p}
        record = SampleRecord(
            id=new_sample_id(), device_id=device_id, created=time.time(), frame_id=job["name"],
            bundle="scenes", bundle_version=1, ontology_version=1,
            image=Path(job["image"]).read_bytes(), image_format="jpeg",
            prediction={"stages": {"clf": {"kind": "classify", "items": [item],
                                           "latency_ms": 1.0}}},
            scores={"margin": p}, priority=p,
        )  # fmt: skip
        assert store.put(record)
        ids[job["name"]] = record.id
    uploader = Uploader(store, client)
    for _ in range(20):
        result = uploader.run_once()
        if result.failed:
            raise SystemExit(f"upload failed: {result}")
        if store.stats()["count"] == 0:
            break
    else:
        raise SystemExit("the store did not empty")
    print(json.dumps(ids))


if __name__ == "__main__":
    main(*sys.argv[1:6])
