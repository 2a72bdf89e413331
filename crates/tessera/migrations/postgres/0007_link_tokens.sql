-- Single-use link tokens mailed to users (a password reset; later email
-- verification and invitations): only the SHA-256 of the token is kept, so
-- a database leak opens no link. `purpose` says what the link does; a token
-- is used once (`used_at` set by the one consume that wins) and is worth
-- nothing after `expires_at`. Deleting the user deletes its tokens.

CREATE TABLE link_tokens (
    token_hash BYTEA  PRIMARY KEY,          -- SHA-256 of the token
    purpose    TEXT   NOT NULL,             -- password_reset, …
    user_id    TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,             -- Unix milliseconds
    expires_at BIGINT NOT NULL,             -- Unix milliseconds
    used_at    BIGINT                       -- Unix milliseconds; NULL until used
);

CREATE INDEX link_tokens_expiry ON link_tokens (expires_at);
CREATE INDEX link_tokens_user ON link_tokens (user_id);
