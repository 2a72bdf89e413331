//! Known devices on PostgreSQL: a sighting is one transaction that first
//! locks its user's row (`FOR NO KEY UPDATE`: sightings of one user queue
//! behind each other on every node, while sessions and tokens referring to
//! the user are not held up), so what it finds and what it writes are one
//! state; each later statement reads what the ones before it committed.

use async_trait::async_trait;
use sqlx::{Row, query};
use time::OffsetDateTime;

use super::{PostgresStore, backend, unstorable};
use crate::core::secret::SecretHash;
use crate::core::time::to_millis;
use crate::store::{DeviceSighting, DeviceStore, StoreResult};

#[async_trait]
impl DeviceStore for PostgresStore {
    async fn remember_device(
        &self,
        user_id: &str,
        device: &SecretHash,
        at: OffsetDateTime,
        keep: u32,
    ) -> StoreResult<DeviceSighting> {
        if unstorable(&[user_id]) {
            return Ok(DeviceSighting::NoSuchUser);
        }
        let at = to_millis(at);
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let user = query("SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE")
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        if user.is_none() {
            tx.rollback().await.map_err(backend)?;
            return Ok(DeviceSighting::NoSuchUser);
        }
        let found = query(
            "SELECT EXISTS (SELECT 1 FROM known_devices WHERE user_id = $1) AS any_device,
                    EXISTS (SELECT 1 FROM known_devices
                            WHERE user_id = $1 AND device_hash = $2) AS this_device",
        )
        .bind(user_id)
        .bind(device.as_bytes())
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        let any_device: bool = found.try_get("any_device").map_err(backend)?;
        let this_device: bool = found.try_get("this_device").map_err(backend)?;
        if this_device {
            query(
                "UPDATE known_devices SET last_seen_at = greatest(last_seen_at, $3)
                 WHERE user_id = $1 AND device_hash = $2",
            )
            .bind(user_id)
            .bind(device.as_bytes())
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
            tx.commit().await.map_err(backend)?;
            return Ok(DeviceSighting::Known);
        }
        query(
            "INSERT INTO known_devices (user_id, device_hash, first_seen_at, last_seen_at)
             VALUES ($1, $2, $3, $3)",
        )
        .bind(user_id)
        .bind(device.as_bytes())
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        // The cap: this device and the `keep - 1` most recently seen others.
        query(
            "DELETE FROM known_devices
             WHERE user_id = $1 AND device_hash <> $2 AND device_hash NOT IN (
                 SELECT device_hash FROM known_devices
                 WHERE user_id = $1 AND device_hash <> $2
                 ORDER BY last_seen_at DESC, first_seen_at DESC, device_hash DESC
                 LIMIT $3)",
        )
        .bind(user_id)
        .bind(device.as_bytes())
        .bind(i64::from(keep.max(1)) - 1)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(if any_device {
            DeviceSighting::New
        } else {
            DeviceSighting::First
        })
    }
}
