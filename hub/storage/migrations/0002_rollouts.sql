-- Staged rollouts (hub/rollouts): one row per rollout, one per device it ordered.
CREATE TABLE IF NOT EXISTS rollouts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    bundle TEXT NOT NULL,
    version INTEGER NOT NULL,
    cohort TEXT,
    spec_json TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'paused', 'halted', 'aborted', 'done')),
    wave INTEGER NOT NULL,
    wave_started REAL,
    reason TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS rollouts_status ON rollouts(status);
CREATE TABLE IF NOT EXISTS rollout_devices (
    rollout_id INTEGER NOT NULL REFERENCES rollouts(id),
    device_id TEXT NOT NULL,
    wave INTEGER NOT NULL,
    ordered REAL NOT NULL,
    prev_bundle TEXT,
    prev_version INTEGER,
    PRIMARY KEY (rollout_id, device_id)
);
