-- The hub's web page: login sessions (only the sha256 of the cookie), and the annotation work
-- of people: a claim (lock) on a sample, the submitted boxes, and the review that accepts them
-- (the sample becomes annotated) or sends them back (the sample returns to the queue).
CREATE TABLE IF NOT EXISTS web_sessions (
    id_hash TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'annotator', 'viewer')),
    csrf TEXT NOT NULL,
    created REAL NOT NULL,
    expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS annotation_work (
    sample_id TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('claimed', 'submitted', 'returned')),
    claimed_by TEXT NOT NULL,
    claimed_until REAL NOT NULL,
    boxes_json TEXT,
    submitted_by TEXT,
    submitted REAL,
    note TEXT
);
CREATE INDEX IF NOT EXISTS annotation_work_state ON annotation_work(state);
