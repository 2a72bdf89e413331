-- Service clients can be disabled (and enabled again): `disabled_at` is when
-- an administrator disabled the client, NULL while it is enabled. A
-- disabled client fails HTTP Basic authentication exactly as an unknown one
-- does. Deleting a client deletes its row; rotating its secret replaces
-- `secret_hash` (still only the SHA-256 of the secret).

ALTER TABLE service_clients ADD COLUMN disabled_at INTEGER; -- Unix milliseconds
