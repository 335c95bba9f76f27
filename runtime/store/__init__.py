"""The device's sample store: what is kept of frames that may teach the next model.

- :mod:`runtime.store.record` — the :class:`SampleRecord` contract (also read by the hub);
- :mod:`runtime.store.lmdb_store` — :class:`~runtime.store.lmdb_store.SampleStore`, bounded,
  ranked and crash-safe on LMDB;
- :mod:`runtime.store._codec` — the store's record layout, priority keys and footprint
  arithmetic (pure; no LMDB);
- :mod:`runtime.store.writer` — :class:`~runtime.store.writer.StoreWriter`, which scores,
  encodes and stores frames off the frame path.

Only the record types are re-exported here, so importing the contract pulls in neither LMDB
nor OpenCV.
"""

from runtime.store.record import Feedback, SampleRecord, new_sample_id

__all__ = ["Feedback", "SampleRecord", "new_sample_id"]
