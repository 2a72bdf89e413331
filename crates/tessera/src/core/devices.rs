//! New-device notices (`notify_new_device`, off by default).
//!
//! With the setting on, every successful password login (a session, the
//! password grant, the jwt-cookie mode: they share `check_credentials`)
//! records the device it came from, and a device the account has not used
//! before gets the user a mail, "New sign-in to your Tessera account",
//! naming the device's `User-Agent`, the address and the time (UTC), and
//! the `/forgot` page to reset the password if it was not them.
//!
//! - **A device is its `User-Agent`**, kept only as its SHA-256 (a request
//!   without one is the device "no `User-Agent`"). It tells browsers and
//!   apps apart, not two copies of one browser: a notice is a hint, not a
//!   defence (an attacker can send the victim's `User-Agent`).
//! - **The account's first device is recorded without a mail** (there is
//!   nothing to compare it with: a new account, or one from before the
//!   setting was turned on).
//! - **Bounded**: an account keeps its [`MAX_DEVICES_PER_USER`] most
//!   recently seen devices; the store drops the oldest.
//! - **Never in the way of the login**: one small write (the store's
//!   `remember_device`, one transaction) after the password matched, given
//!   at most `RECORD_BUDGET`, whose failure is logged and otherwise
//!   ignored; the mail is queued on the outbox, never waited for. Nothing
//!   is recorded with the setting off.
//!   The mail names no password, token or session.

use time::OffsetDateTime;
use time::macros::format_description;

use super::Tessera;
use super::accounts::User;
use super::secret::SecretHash;
use super::sessions::ClientInfo;
use crate::mail::{self, Queued};
use crate::store::DeviceSighting;

/// Devices one account keeps at most; a new one beyond ends the least
/// recently seen.
pub const MAX_DEVICES_PER_USER: u32 = 50;

/// Longest a login waits for its device to be recorded; past it the
/// sighting is given up (logged), the login goes on.
const RECORD_BUDGET: std::time::Duration = std::time::Duration::from_secs(1);

/// Longest `User-Agent` quoted in a notice (characters); the rest is cut.
const USER_AGENT_SHOWN: usize = 300;

/// The device a request came from: the SHA-256 of its `User-Agent`.
pub fn device_of(client: &ClientInfo) -> SecretHash {
    SecretHash::of(client.user_agent.as_deref().unwrap_or_default().as_bytes())
}

/// `at` as the notice shows it: `2026-12-07 22:46:04 UTC`.
fn shown_time(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
        ))
        .unwrap_or_else(|_| at.to_string())
}

/// The `User-Agent` as the notice quotes it.
fn shown_user_agent(client: &ClientInfo) -> String {
    match client.user_agent.as_deref().map(str::trim) {
        None | Some("") => "(none sent)".to_owned(),
        Some(ua) if ua.chars().count() > USER_AGENT_SHOWN => {
            format!("{}…", ua.chars().take(USER_AGENT_SHOWN).collect::<String>())
        }
        Some(ua) => ua.to_owned(),
    }
}

impl Tessera {
    /// After `user`'s password matched a login from `client`: records the
    /// device and, when the account had others but not this one, queues
    /// the notice (see the module's doc). Never fails the login.
    pub(crate) async fn note_device(&self, user: &User, client: &ClientInfo) {
        let Some(setup) = self.mail.get().filter(|s| s.notify_new_device) else {
            return;
        };
        let now = self.now();
        let device = device_of(client);
        let remembered =
            self.stores
                .devices
                .remember_device(&user.id, &device, now, MAX_DEVICES_PER_USER);
        let sighting = tokio::time::timeout(RECORD_BUDGET, remembered)
            .await
            .unwrap_or_else(|_| {
                Err(crate::store::StoreError::Backend(
                    "recording the device took too long".into(),
                ))
            });
        match sighting {
            Ok(DeviceSighting::New) => {
                tracing::info!(user_id = %user.id, "sign-in from a new device: the user is mailed");
                let message = mail::templates::new_device(
                    &user.email,
                    &setup.product,
                    &setup.public_url,
                    &shown_user_agent(client),
                    client.ip.as_deref().unwrap_or("unknown"),
                    &shown_time(now),
                );
                setup
                    .outbox
                    .send(Queued {
                        mail: message,
                        kind: "new_device",
                        user_id: Some(user.id.clone()),
                    })
                    .await;
            }
            Ok(DeviceSighting::Known | DeviceSighting::First | DeviceSighting::NoSuchUser) => {}
            Err(e) => {
                tracing::warn!(user_id = %user.id, error = %e, "the device of a sign-in could not be recorded");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(ua: Option<&str>) -> ClientInfo {
        ClientInfo {
            ip: Some("203.0.113.7".into()),
            user_agent: ua.map(str::to_owned),
        }
    }

    #[test]
    fn a_device_is_the_hash_of_its_user_agent() {
        let firefox = client(Some("Mozilla/5.0 Firefox/140.0"));
        let same = client(Some("Mozilla/5.0 Firefox/140.0"));
        assert_eq!(device_of(&firefox), device_of(&same));
        assert_ne!(device_of(&firefox), device_of(&client(Some("curl/8.0"))));
        assert_eq!(device_of(&client(None)), device_of(&client(Some(""))));
        assert_eq!(
            device_of(&firefox),
            SecretHash::of(b"Mozilla/5.0 Firefox/140.0")
        );
    }

    #[test]
    fn the_notice_shows_utc_time_and_a_bounded_user_agent() {
        let at = OffsetDateTime::from_unix_timestamp(1_796_683_564)
            .unwrap()
            .to_offset(time::UtcOffset::from_hms(2, 0, 0).unwrap());
        assert_eq!(shown_time(at), "2026-12-07 22:46:04 UTC");
        assert_eq!(shown_user_agent(&client(None)), "(none sent)");
        assert_eq!(shown_user_agent(&client(Some("  "))), "(none sent)");
        let long = "x".repeat(1000);
        let shown = shown_user_agent(&client(Some(&long)));
        assert_eq!(shown.chars().count(), USER_AGENT_SHOWN + 1);
        assert!(shown.ends_with('…'));
    }
}
