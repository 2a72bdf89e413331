-- A fourth kind of revocation: `sessions`, every browser session of
-- `subject` created before `time` (Unix milliseconds) is ended (a logout
-- everywhere, a suspension, a password change). The session path checks
-- it, so a session a store gives back after it was deleted stays refused.
-- SQLite cannot change a CHECK constraint, so the table is rebuilt; its
-- numbering goes on where it was (AUTOINCREMENT never hands out a number
-- twice, and followers read after their cursor).

CREATE TABLE revocations_new (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT    NOT NULL CHECK (kind IN ('token', 'family', 'user', 'sessions')),
    subject    TEXT    NOT NULL,            -- jti, sid or sub
    time       INTEGER NOT NULL,            -- exp or not_before (Unix seconds); sessions: Unix milliseconds
    forget_at  INTEGER NOT NULL,            -- Unix seconds after which nothing live can match
    created_at INTEGER NOT NULL
) STRICT;

INSERT INTO revocations_new (seq, kind, subject, time, forget_at, created_at)
    SELECT seq, kind, subject, time, forget_at, created_at FROM revocations;
DELETE FROM sqlite_sequence WHERE name = 'revocations_new';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'revocations_new', seq FROM sqlite_sequence WHERE name = 'revocations';
DROP TABLE revocations;
ALTER TABLE revocations_new RENAME TO revocations;
CREATE INDEX revocations_by_forget ON revocations (forget_at);
