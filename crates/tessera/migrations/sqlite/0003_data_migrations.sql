-- Steps over existing rows that run after the schema migrations (for
-- instance re-keying emails when the key's definition changes,
-- `store/rekey.rs`). A step is recorded here once it has nothing left to
-- do, so later starts skip it at the cost of one read.

CREATE TABLE data_migrations (
    name    TEXT    PRIMARY KEY,
    done_at INTEGER NOT NULL               -- Unix milliseconds
) STRICT;
