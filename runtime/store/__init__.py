"""The device's sample store: what is kept of frames that may teach the next model.

- :mod:`runtime.store.record` — the :class:`SampleRecord` contract (also read by the hub);
- :mod:`runtime.store.lmdb_store` — :class:`~runtime.store.lmdb_store.SampleStore`, bounded,
  ranked and crash-safe on LMDB;
- its private parts: :mod:`runtime.store._codec` (record bytes, priority keys, footprint
  arithmetic; pure), :mod:`runtime.store._tables` (the sub-databases and the steps of one
  transaction), :mod:`runtime.store._evict` (what makes room), :mod:`runtime.store._disk`
  (the cap on a full disk), :mod:`runtime.store._walks` (ranked reads) and
  :mod:`runtime.store._check` (the invariants);
- :mod:`runtime.store.writer` — :class:`~runtime.store.writer.StoreWriter`, which scores,
  encodes and stores frames off the frame path.

Only the record types are re-exported here, so importing the contract pulls in neither LMDB
nor OpenCV.
"""

from runtime.store.record import Feedback, SampleRecord, new_sample_id

__all__ = ["Feedback", "SampleRecord", "new_sample_id"]
