-- Facts about how the deployment on this database runs, written by `serve`
-- at start and read by the other commands, which must run the same way.
-- `sessions_store`: `database`, or `redis <key prefix>` (never a URL: those
-- differ from node to node and carry passwords).

CREATE TABLE deployment_facts (
    name       TEXT    PRIMARY KEY,
    value      TEXT    NOT NULL,
    updated_at INTEGER NOT NULL            -- Unix milliseconds
) STRICT;
