-- Gig'MCP schema version 4: signed registries (DESIGN 5). Each registry the admin added, with
-- the root it pinned, and the newest verified TUF metadata of each role, so that a sync can
-- refuse any version below it (rollback) and a start can re-verify offline. Servers installed
-- from a registry name it and their target ("<name>/<version>").
CREATE TABLE registries (
    name        TEXT PRIMARY KEY,
    location    TEXT NOT NULL,
    pinned_root BLOB NOT NULL,
    ca_pem      BLOB,
    added_ms    INTEGER NOT NULL,
    synced_ms   INTEGER
) STRICT;

CREATE TABLE registry_metadata (
    registry TEXT NOT NULL REFERENCES registries(name) ON DELETE CASCADE,
    role     TEXT NOT NULL CHECK (role IN ('root', 'timestamp', 'snapshot', 'targets')),
    version  INTEGER NOT NULL CHECK (version >= 1),
    body     BLOB NOT NULL,
    PRIMARY KEY (registry, role)
) STRICT;

-- No ON DELETE action: a registry a server came from cannot be forgotten (the store refuses
-- it by name first; the key is the backstop).
ALTER TABLE servers ADD COLUMN registry TEXT REFERENCES registries(name);
ALTER TABLE servers ADD COLUMN target TEXT CHECK ((target IS NULL) = (registry IS NULL));

-- Schema 1's single-index registry state was never written; registry_metadata replaces it.
DROP TABLE registry_state;
