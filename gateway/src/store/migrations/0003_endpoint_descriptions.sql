-- Gig'MCP schema version 3: an endpoint may show its own description of a tool (clearer for
-- its agents, or shorter), instead of the server's. Approval still compares the server's.
CREATE TABLE endpoint_tool_descriptions (
    endpoint    TEXT NOT NULL,
    server      TEXT NOT NULL,
    tool        TEXT NOT NULL,
    description TEXT NOT NULL,
    PRIMARY KEY (endpoint, server, tool),
    FOREIGN KEY (endpoint, server) REFERENCES endpoint_servers(endpoint, server) ON DELETE CASCADE
) STRICT;
