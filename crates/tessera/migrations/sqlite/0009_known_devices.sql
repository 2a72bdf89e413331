-- The devices each account signed in from, for the new-device notice
-- (`notify_new_device`): a device is a hash of what identifies it (the
-- SHA-256 of its User-Agent), never the text itself. An account keeps at
-- most a bounded number (the store drops the least recently seen), and
-- deleting the user deletes its devices.

CREATE TABLE known_devices (
    user_id       TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    device_hash   BLOB    NOT NULL,         -- SHA-256 of the User-Agent
    first_seen_at INTEGER NOT NULL,         -- Unix milliseconds
    last_seen_at  INTEGER NOT NULL,         -- Unix milliseconds
    PRIMARY KEY (user_id, device_hash)
) STRICT;
