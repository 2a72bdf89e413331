//! Known devices on SQLite: a sighting is one `BEGIN IMMEDIATE`
//! transaction, which takes the database's write lock before it reads, so
//! what it finds and what it writes are one state no other writer (in this
//! process or another) interleaves with.

use async_trait::async_trait;
use sqlx::{Row, query};
use time::OffsetDateTime;

use super::{SqliteStore, backend};
use crate::core::secret::SecretHash;
use crate::core::time::to_millis;
use crate::store::{DeviceSighting, DeviceStore, StoreResult};

#[async_trait]
impl DeviceStore for SqliteStore {
    async fn remember_device(
        &self,
        user_id: &str,
        device: &SecretHash,
        at: OffsetDateTime,
        keep: u32,
    ) -> StoreResult<DeviceSighting> {
        let at = to_millis(at);
        let mut tx = self
            .write
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        let found = query(
            "SELECT EXISTS (SELECT 1 FROM users WHERE id = ?1) AS known_user,
                    EXISTS (SELECT 1 FROM known_devices WHERE user_id = ?1) AS any_device,
                    EXISTS (SELECT 1 FROM known_devices
                            WHERE user_id = ?1 AND device_hash = ?2) AS this_device",
        )
        .bind(user_id)
        .bind(device.as_bytes())
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        let known_user: bool = found.try_get("known_user").map_err(backend)?;
        let any_device: bool = found.try_get("any_device").map_err(backend)?;
        let this_device: bool = found.try_get("this_device").map_err(backend)?;
        if !known_user {
            tx.rollback().await.map_err(backend)?;
            return Ok(DeviceSighting::NoSuchUser);
        }
        if this_device {
            query(
                "UPDATE known_devices SET last_seen_at = max(last_seen_at, ?3)
                 WHERE user_id = ?1 AND device_hash = ?2",
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
             VALUES (?1, ?2, ?3, ?3)",
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
             WHERE user_id = ?1 AND device_hash <> ?2 AND device_hash NOT IN (
                 SELECT device_hash FROM known_devices
                 WHERE user_id = ?1 AND device_hash <> ?2
                 ORDER BY last_seen_at DESC, first_seen_at DESC, device_hash DESC
                 LIMIT ?3)",
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
