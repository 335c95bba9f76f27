-- Parts of resumable sample uploads when the hub runs on PostgreSQL (replicas): the bytes a
-- device sent so far live in the shared database, so the upload it started on one replica goes
-- on on another. Rows are pieces of the payload at their offset (identical bytes wherever they
-- overlap: the payload is fixed by its sha256); what the device resumes from is the end of the
-- run of pieces that starts at 0. (The embedded hub keeps them as files in <data>/uploads.)
CREATE TABLE IF NOT EXISTS upload_parts (
    device_id TEXT NOT NULL,
    sample_id TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    length INTEGER NOT NULL,
    start INTEGER NOT NULL,
    data BLOB NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (device_id, sample_id, sha256, start)
);
CREATE INDEX IF NOT EXISTS upload_parts_updated ON upload_parts(updated);
