-- Signing keys, refresh-token families, revocations of access tokens,
-- service clients, and the audit log. Times are Unix milliseconds unless a
-- column says seconds.

CREATE TABLE signing_keys (
    kid            TEXT    PRIMARY KEY,
    alg            TEXT    NOT NULL,
    private_pkcs8  BLOB,                    -- wiped (NULL) once the key is retired
    public_jwk     TEXT    NOT NULL CHECK (json_valid(public_jwk)),
    created_at     INTEGER NOT NULL,
    rotated_out_at INTEGER                  -- NULL while active
) STRICT;

-- At most one active key.
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys ((1)) WHERE rotated_out_at IS NULL;

CREATE TABLE refresh_families (
    id          TEXT    PRIMARY KEY,        -- fam_…: the `sid` of its access tokens
    user_id     TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id   TEXT    NOT NULL,
    scope       TEXT,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
) STRICT;

CREATE INDEX refresh_families_by_user ON refresh_families (user_id);

-- Only the SHA-256 of each refresh token is stored.
CREATE TABLE refresh_tokens (
    token_hash BLOB    PRIMARY KEY CHECK (length(token_hash) = 32),
    family_id  TEXT    NOT NULL REFERENCES refresh_families (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
) STRICT, WITHOUT ROWID;

CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_by_expiry ON refresh_tokens (expires_at);

-- Revocations of access tokens, followed by every node; also the revocation feed.
CREATE TABLE revocations (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT    NOT NULL CHECK (kind IN ('token', 'family', 'user')),
    subject    TEXT    NOT NULL,            -- jti, sid or sub
    time       INTEGER NOT NULL,            -- Unix seconds: exp, or not_before for users
    forget_at  INTEGER NOT NULL,            -- Unix seconds after which no live token can match
    created_at INTEGER NOT NULL
) STRICT;

CREATE INDEX revocations_by_forget ON revocations (forget_at);

CREATE TABLE service_clients (
    id          TEXT    PRIMARY KEY,        -- cli_…
    name        TEXT    NOT NULL,
    secret_hash BLOB    NOT NULL CHECK (length(secret_hash) = 32),
    created_at  INTEGER NOT NULL
) STRICT;

-- Never a password, token, session id or secret in here.
CREATE TABLE audit_events (
    id         TEXT    PRIMARY KEY,         -- evt_…
    at         INTEGER NOT NULL,
    type       TEXT    NOT NULL,
    user_id    TEXT,
    ip         TEXT,
    user_agent TEXT,
    detail     TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(detail))
) STRICT;

CREATE INDEX audit_events_by_time ON audit_events (at);
CREATE INDEX audit_events_by_user ON audit_events (user_id, at);

-- Server-wide secrets shared by every node (e.g. the key that binds CSRF
-- tokens to refresh families in jwt-cookie mode).
CREATE TABLE server_secrets (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
) STRICT;
