-- Gig'MCP schema version 1. Tables are STRICT: a wrong type is an error, not a silent cast.

-- Installation-wide facts, e.g. the fingerprint of the master key that wraps the data keys.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

-- Envelope-encrypted secrets (DESIGN 3.8). No column ever holds a plaintext value.
CREATE TABLE secrets (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    version      INTEGER NOT NULL CHECK (version >= 1),
    value_nonce  BLOB NOT NULL,
    value_ct     BLOB NOT NULL,
    key_nonce    BLOB NOT NULL,
    wrapped_key  BLOB NOT NULL,
    master_fp    TEXT NOT NULL,
    created_ms   INTEGER NOT NULL,
    updated_ms   INTEGER NOT NULL,
    last_used_ms INTEGER
) STRICT;

-- Installed MCP servers and the manifest (entitlements) they were approved with.
CREATE TABLE servers (
    name                    TEXT PRIMARY KEY,
    version                 TEXT NOT NULL,
    image_digest            TEXT NOT NULL,
    manifest                TEXT NOT NULL,
    source                  TEXT NOT NULL CHECK (source IN ('registry', 'unsigned')),
    approved_private_ranges TEXT NOT NULL DEFAULT '[]',
    installed_ms            INTEGER NOT NULL
) STRICT;

-- Endpoints: named sets of servers, each with a tool subset, reachable at /mcp/<name>.
CREATE TABLE endpoints (
    name       TEXT PRIMARY KEY,
    created_ms INTEGER NOT NULL
) STRICT;

CREATE TABLE endpoint_servers (
    endpoint TEXT NOT NULL REFERENCES endpoints(name) ON DELETE CASCADE,
    server   TEXT NOT NULL REFERENCES servers(name) ON DELETE CASCADE,
    tools    TEXT NOT NULL,
    PRIMARY KEY (endpoint, server)
) STRICT;

-- Bearer tokens, stored only as a hash.
CREATE TABLE tokens (
    id         TEXT PRIMARY KEY,
    endpoint   TEXT NOT NULL REFERENCES endpoints(name) ON DELETE CASCADE,
    hash       BLOB NOT NULL UNIQUE,
    label      TEXT NOT NULL DEFAULT '',
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER,
    revoked_ms INTEGER
) STRICT;

-- The audit trail; also sent to journald.
CREATE TABLE audit_events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ms   INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail  TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX audit_events_ts ON audit_events (ts_ms);

-- Per trusted registry: the newest index accepted, so a version never goes backwards.
CREATE TABLE registry_state (
    source        TEXT PRIMARY KEY,
    index_version INTEGER NOT NULL,
    index_expires TEXT NOT NULL,
    index_sha256  TEXT NOT NULL,
    synced_ms     INTEGER NOT NULL
) STRICT;
