-- Email verification: `email_verified_at` is when the account proved it
-- reads its mailbox (a verification link, a reset link, or an invitation
-- sent to it), NULL while it has not, and again NULL after its email
-- changes. Verification links are link tokens with purpose
-- `email_verification`.
--
-- Invitations: an administrator invites an email address to register
-- (under `registration = invite`). Like a link token, only the SHA-256 of
-- the invitation's token is kept; it is single use (`used_at`), expires,
-- and is bound to the email's key (what a login matches on). One that was mailed to its
-- address proves that mailbox when used. There is no
-- user yet, so it cannot live in `link_tokens`.

ALTER TABLE users ADD COLUMN email_verified_at INTEGER; -- Unix milliseconds

CREATE TABLE invitations (
    token_hash BLOB    PRIMARY KEY,         -- SHA-256 of the token
    email      TEXT    NOT NULL,            -- as the administrator typed it
    email_key  TEXT    NOT NULL,            -- its key (see users.email_key)
    roles      TEXT    NOT NULL,            -- JSON array, granted on use
    created_by TEXT    NOT NULL,            -- the actor (usr_… or cli)
    mailed     INTEGER NOT NULL DEFAULT 0,  -- 1 when mailed to `email`
    created_at INTEGER NOT NULL,            -- Unix milliseconds
    expires_at INTEGER NOT NULL,            -- Unix milliseconds
    used_at    INTEGER                      -- Unix milliseconds; NULL until used
) STRICT;

CREATE INDEX invitations_expiry ON invitations (expires_at);
