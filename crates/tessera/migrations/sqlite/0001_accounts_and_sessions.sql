-- Accounts, browser sessions and the change log that keeps caches coherent.
-- Times are Unix milliseconds (UTC).

CREATE TABLE users (
    id            TEXT    PRIMARY KEY,
    email         TEXT    NOT NULL,
    email_key     TEXT    NOT NULL UNIQUE,   -- lowercase form: emails are unique case-insensitively
    password_hash TEXT    NOT NULL,          -- argon2id PHC string
    roles         TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(roles)),
    status        TEXT    NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) STRICT;

-- Only the SHA-256 of the cookie value is stored; `id` is a separate public id.
CREATE TABLE sessions (
    token_hash   BLOB    PRIMARY KEY CHECK (length(token_hash) = 32),
    id           TEXT    NOT NULL UNIQUE,
    user_id      TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    ip           TEXT,
    user_agent   TEXT
) STRICT, WITHOUT ROWID;

CREATE INDEX sessions_by_user ON sessions (user_id);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
CREATE INDEX sessions_by_last_seen ON sessions (last_seen_at);

CREATE TABLE change_events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    user_id    TEXT    NOT NULL,
    session_id TEXT,
    token_hash BLOB                          -- of a revoked session, so caches evict it in O(1)
) STRICT;

CREATE INDEX change_events_by_time ON change_events (at);
