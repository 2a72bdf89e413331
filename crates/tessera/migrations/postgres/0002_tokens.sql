-- Signing keys, refresh-token families, revocations of access tokens,
-- service clients, and the audit log. Times are Unix milliseconds unless a
-- column says seconds.

CREATE TABLE signing_keys (
    kid            TEXT   PRIMARY KEY,
    alg            TEXT   NOT NULL,
    private_pkcs8  BYTEA,                   -- wiped (NULL) once the key is retired
    public_jwk     JSONB  NOT NULL,
    created_at     BIGINT NOT NULL,
    rotated_out_at BIGINT                   -- NULL while active
);

-- At most one active key.
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys ((1)) WHERE rotated_out_at IS NULL;

CREATE TABLE refresh_families (
    id          TEXT   PRIMARY KEY,         -- fam_…: the `sid` of its access tokens
    user_id     TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id   TEXT   NOT NULL,
    scope       TEXT,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

CREATE INDEX refresh_families_by_user ON refresh_families (user_id);

-- Only the SHA-256 of each refresh token is stored.
CREATE TABLE refresh_tokens (
    token_hash BYTEA  PRIMARY KEY CHECK (length(token_hash) = 32),
    family_id  TEXT   NOT NULL REFERENCES refresh_families (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);

CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_by_expiry ON refresh_tokens (expires_at);

-- Revocations of access tokens, followed by every node; also the revocation
-- feed. Numbered in commit order, as change_events.
CREATE TABLE revocations (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind       TEXT   NOT NULL CHECK (kind IN ('token', 'family', 'user')),
    subject    TEXT   NOT NULL,             -- jti, sid or sub
    time       BIGINT NOT NULL,             -- Unix seconds: exp, or not_before for users
    forget_at  BIGINT NOT NULL,             -- Unix seconds after which no live token can match
    created_at BIGINT NOT NULL
);

CREATE INDEX revocations_by_forget ON revocations (forget_at);

CREATE TABLE service_clients (
    id          TEXT   PRIMARY KEY,         -- cli_…
    name        TEXT   NOT NULL,
    secret_hash BYTEA  NOT NULL CHECK (length(secret_hash) = 32),
    created_at  BIGINT NOT NULL
);

-- Never a password, token, session id or secret in here.
CREATE TABLE audit_events (
    id         TEXT COLLATE "C" PRIMARY KEY, -- evt_…
    at         BIGINT NOT NULL,
    type       TEXT   NOT NULL,
    user_id    TEXT,
    ip         TEXT,
    user_agent TEXT,
    detail     JSONB  NOT NULL DEFAULT '{}'
);

CREATE INDEX audit_events_by_time ON audit_events (at, id);
CREATE INDEX audit_events_by_user ON audit_events (user_id, at);

-- Server-wide secrets shared by every node (e.g. the key that binds CSRF
-- tokens to refresh families in jwt-cookie mode).
CREATE TABLE server_secrets (
    name  TEXT  PRIMARY KEY,
    value BYTEA NOT NULL
);
