-- Named tokens of people and scripts, each with one role (hub/api/tokens.py); only hashes.
CREATE TABLE IF NOT EXISTS api_tokens (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ('admin', 'annotator', 'viewer')),
    token_hash TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    revoked REAL
);
