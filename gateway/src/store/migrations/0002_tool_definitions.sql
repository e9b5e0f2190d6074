-- Gig'MCP schema version 2: tool definitions as approved, and changed ones awaiting approval.
-- A tool is offered only while the definition the server lists (name, description, input
-- schema) hashes to its approved one: a later change (a "rug pull") hides it until an admin
-- approves the new definition.
CREATE TABLE tool_definitions (
    server     TEXT NOT NULL REFERENCES servers(name) ON DELETE CASCADE,
    tool       TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('approved', 'pending')),
    definition TEXT NOT NULL,
    digest     TEXT NOT NULL,
    seen_ms    INTEGER NOT NULL,
    PRIMARY KEY (server, tool, state)
) STRICT;
