-- The replay gate's records (hub/replay) and the devices' prediction stream.
CREATE TABLE IF NOT EXISTS replay_reports (
    digest TEXT PRIMARY KEY,
    bundle TEXT NOT NULL,
    version INTEGER NOT NULL,
    candidate_digest TEXT NOT NULL,
    decision TEXT NOT NULL,
    json_sha256 TEXT NOT NULL,
    html_sha256 TEXT,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS blessings (
    candidate_digest TEXT PRIMARY KEY,
    bundle TEXT NOT NULL,
    version INTEGER NOT NULL,
    baseline_json TEXT NOT NULL,
    spec_digest TEXT NOT NULL,
    report_digest TEXT NOT NULL,
    who TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS blessings_bundle ON blessings(bundle, version);
CREATE TABLE IF NOT EXISTS audit_log (
    id TEXT PRIMARY KEY,
    time REAL NOT NULL,
    action TEXT NOT NULL,
    bundle TEXT,
    version INTEGER,
    who TEXT,
    reason TEXT,
    detail_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS prediction_events (
    device_id TEXT NOT NULL,
    id TEXT NOT NULL,
    time REAL NOT NULL,
    bundle TEXT NOT NULL,
    version INTEGER NOT NULL,
    label TEXT,
    score REAL,
    latency_ms REAL,
    error INTEGER NOT NULL,
    event_json TEXT NOT NULL,
    PRIMARY KEY (device_id, id)
);
CREATE INDEX IF NOT EXISTS prediction_events_time ON prediction_events(time);
