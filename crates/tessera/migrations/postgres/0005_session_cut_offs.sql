-- A fourth kind of revocation: `sessions`, every browser session of
-- `subject` created before `time` (Unix milliseconds) is ended (a logout
-- everywhere, a suspension, a password change). The session path checks
-- it, so a session a store gives back after it was deleted stays refused.

ALTER TABLE revocations DROP CONSTRAINT revocations_kind_check;
ALTER TABLE revocations ADD CONSTRAINT revocations_kind_check
    CHECK (kind IN ('token', 'family', 'user', 'sessions'));
