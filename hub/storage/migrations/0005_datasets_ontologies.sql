-- Datasets imported as versions (hub/storage/datasets.py) and ontology versions with their
-- explicit changes (hub/storage/ontologies.py).
CREATE TABLE IF NOT EXISTS datasets (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    task TEXT NOT NULL CHECK (task IN ('classification', 'detection')),
    classes_json TEXT NOT NULL,
    ontology_id TEXT,
    ontology_version INTEGER NOT NULL,
    counts_json TEXT NOT NULL,
    items INTEGER NOT NULL,
    source_format TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS dataset_items (
    dataset TEXT NOT NULL,
    version INTEGER NOT NULL,
    path TEXT NOT NULL,
    image_sha256 TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    annotation_json TEXT NOT NULL,
    PRIMARY KEY (dataset, version, path)
);
CREATE TABLE IF NOT EXISTS ontologies (
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    classes_json TEXT NOT NULL,
    changes_json TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (id, version)
);
