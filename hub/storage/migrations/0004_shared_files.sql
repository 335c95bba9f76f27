-- Files every hub replica must hold alike (TUF metadata, the online keys, the admin and
-- enrolment tokens), mirrored in the database so replicas need no shared disk (hub/replicas.py).
CREATE TABLE IF NOT EXISTS shared_files (
    name TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS shared_files_seq ON shared_files(seq);
