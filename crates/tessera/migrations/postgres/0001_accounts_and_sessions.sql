-- Accounts, browser sessions and the change log that keeps caches coherent.
-- Times are Unix milliseconds (UTC). Ids that are listed in order compare
-- bytewise (COLLATE "C"), as in SQLite, whatever the database's locale.

CREATE TABLE users (
    id            TEXT COLLATE "C" PRIMARY KEY,
    email         TEXT   NOT NULL,
    email_key     TEXT   NOT NULL UNIQUE,   -- lowercase form: emails are unique case-insensitively
    password_hash TEXT   NOT NULL,          -- argon2id PHC string
    roles         TEXT[] NOT NULL DEFAULT '{}' CHECK (array_position(roles, NULL) IS NULL),
    status        TEXT   NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

-- Only the SHA-256 of the cookie value is stored; `id` is a separate public id.
CREATE TABLE sessions (
    token_hash   BYTEA  PRIMARY KEY CHECK (length(token_hash) = 32),
    id           TEXT   NOT NULL UNIQUE,
    user_id      TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    ip           TEXT,
    user_agent   TEXT
);

CREATE INDEX sessions_by_user ON sessions (user_id);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
CREATE INDEX sessions_by_last_seen ON sessions (last_seen_at);

-- Numbers are handed out under a lock held to commit (see the store's
-- `append`), so they are in commit order; the sequence never goes back.
CREATE TABLE change_events (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         BIGINT NOT NULL,
    kind       TEXT   NOT NULL,
    user_id    TEXT   NOT NULL,
    session_id TEXT,
    token_hash BYTEA  CHECK (length(token_hash) = 32)  -- of a revoked session, so caches evict it in O(1)
);

CREATE INDEX change_events_by_time ON change_events (at);
