//! Abuse limits: per-IP rate on the credential endpoints and backoff after
//! repeated login failures. All decisions are functions of `now` (the
//! injected clock) and all state is bounded.
//!
//! - **Per-IP rate**: a GCRA token bucket per client address (default 30 a
//!   minute with a burst of the same size) on login, registration and the
//!   token endpoint.
//! - **Per-account backoff**: after 5 consecutive failures for one account
//!   *from one address*, further attempts from that address are refused
//!   without hashing for a delay that doubles with each failure, capped at 15
//!   minutes; a success resets it. Keying by (account, address) is what keeps
//!   an attacker from locking the owner out: the attacker's failures slow the
//!   attacker's address only, and the per-IP bucket bounds how fast any one
//!   address can guess.
//!
//! State lives in memory on each node (bounded caches; an evicted entry
//! forgets its history, which only ever makes a limit more lenient). Every
//! entry has a fixed size whatever a client sends: accounts are keyed by a
//! salted 64-bit hash of the canonical email, and addresses by
//! [`address_key`] (an IPv6 client by its /64, the smallest network a
//! provider hands out, so a client cannot get a fresh bucket per address
//! of its own prefix).

use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;

use quick_cache::sync::Cache;
use time::{Duration, OffsetDateTime};

/// Limit settings, validated by the configuration.
#[derive(Debug, Clone, Copy)]
pub struct LimitPolicy {
    /// Requests per minute per address on credential endpoints (0: off).
    pub ip_per_minute: u32,
    /// Consecutive failures before backoff starts.
    pub failure_threshold: u32,
    /// Longest backoff.
    pub max_backoff: Duration,
}

impl Default for LimitPolicy {
    fn default() -> Self {
        Self {
            ip_per_minute: 30,
            failure_threshold: 5,
            max_backoff: Duration::minutes(15),
        }
    }
}

/// A refusal and how long to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub u64);

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    locked_until: Option<OffsetDateTime>,
}

const TRACKED_KEYS: usize = 100_000;

/// Mails one email address may be sent an hour by the endpoints that mail
/// on request (password reset).
pub const MAILS_PER_EMAIL_PER_HOUR: u32 = 5;

/// The address a limit counts: IPv4 as is (an IPv4-mapped IPv6 address as
/// its IPv4 address), IPv6 by its /64.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

/// A backoff entry's key: the account's hash and the address.
type FailureKey = (u64, Option<IpAddr>);

/// The limiter state of one process.
pub struct Limits {
    policy: LimitPolicy,
    /// Theoretical arrival time per address (GCRA).
    buckets: Cache<IpAddr, OffsetDateTime>,
    /// Per-email buckets of the mail-sending endpoints (keyed like
    /// accounts, by a salted hash of the canonical email).
    mail_buckets: Cache<u64, OffsetDateTime>,
    failures: Cache<FailureKey, Failures>,
    /// Salts the account hashes (per process), so colliding keys cannot be
    /// computed ahead.
    salt: foldhash::fast::RandomState,
    /// When an address's refusals were last audited (one event a minute).
    audited: Cache<IpAddr, OffsetDateTime>,
    /// Serialises read-modify-write of one entry (contention is negligible:
    /// these paths are followed by an argon2 hash).
    lock: Mutex<()>,
}

fn secs_ceil(d: Duration) -> u64 {
    let ms = u64::try_from(d.whole_milliseconds().max(0)).unwrap_or(u64::MAX);
    ms.div_ceil(1000).max(1)
}

impl Limits {
    pub fn new(policy: LimitPolicy) -> Self {
        Self {
            policy,
            buckets: Cache::new(TRACKED_KEYS),
            mail_buckets: Cache::new(TRACKED_KEYS),
            failures: Cache::new(TRACKED_KEYS),
            salt: foldhash::fast::RandomState::default(),
            audited: Cache::new(TRACKED_KEYS),
            lock: Mutex::new(()),
        }
    }

    /// Whether limits per client address are on (`ip_rate_limit` is not
    /// 0). Off, every request is taken to come from one gateway, and the
    /// hashing pool's fair share does not count addresses either.
    pub fn per_address(&self) -> bool {
        self.policy.ip_per_minute > 0
    }

    /// Takes one token from the address's bucket.
    pub fn check_ip(&self, ip: Option<IpAddr>, now: OffsetDateTime) -> Result<(), RetryAfter> {
        let (Some(ip), per_minute) = (ip.map(address_key), self.policy.ip_per_minute) else {
            return Ok(());
        };
        if per_minute == 0 {
            return Ok(());
        }
        let interval = Duration::minutes(1) / per_minute;
        let burst = interval * per_minute;
        let _guard = self.lock.lock().map_err(|_| RetryAfter(1))?;
        let tat = self.buckets.get(&ip).unwrap_or(now).max(now);
        let next = tat + interval;
        if next - now > burst {
            return Err(RetryAfter(secs_ceil(next - now - burst)));
        }
        self.buckets.insert(ip, next);
        Ok(())
    }

    /// Takes one token from the bucket of mail to `account` (a canonical
    /// email, whether or not an account has it, so a refusal says nothing
    /// about which emails exist): [`MAILS_PER_EMAIL_PER_HOUR`] an hour,
    /// in a burst of as many.
    pub fn check_mail_to(&self, account: &str, now: OffsetDateTime) -> Result<(), RetryAfter> {
        let per_hour = MAILS_PER_EMAIL_PER_HOUR;
        let interval = Duration::hours(1) / per_hour;
        let burst = interval * per_hour;
        let key = self.salt.hash_one(("mail", account));
        let _guard = self.lock.lock().map_err(|_| RetryAfter(1))?;
        let tat = self.mail_buckets.get(&key).unwrap_or(now).max(now);
        let next = tat + interval;
        if next - now > burst {
            return Err(RetryAfter(secs_ceil(next - now - burst)));
        }
        self.mail_buckets.insert(key, next);
        Ok(())
    }

    fn failure_key(&self, account: &str, ip: Option<IpAddr>) -> FailureKey {
        (self.salt.hash_one(account), ip.map(address_key))
    }

    /// Refuses an attempt while the (account, address) pair is backing off.
    pub fn check_account(
        &self,
        account: &str,
        ip: Option<IpAddr>,
        now: OffsetDateTime,
    ) -> Result<(), RetryAfter> {
        let key = self.failure_key(account, ip);
        match self.failures.get(&key).and_then(|f| f.locked_until) {
            Some(until) if until > now => Err(RetryAfter(secs_ceil(until - now))),
            _ => Ok(()),
        }
    }

    /// Records a failed attempt; returns the new lock when one starts.
    pub fn record_failure(
        &self,
        account: &str,
        ip: Option<IpAddr>,
        now: OffsetDateTime,
    ) -> Option<RetryAfter> {
        let _guard = self.lock.lock().ok()?;
        let key = self.failure_key(account, ip);
        let mut f = self.failures.get(&key).unwrap_or(Failures {
            count: 0,
            locked_until: None,
        });
        f.count = f.count.saturating_add(1);
        let over = f.count.checked_sub(self.policy.failure_threshold);
        let lock = over.map(|n| {
            // 1 s, 2 s, 4 s, … up to the cap.
            let backoff = Duration::seconds(1i64 << n.min(30)).min(self.policy.max_backoff);
            f.locked_until = Some(now + backoff);
            RetryAfter(secs_ceil(backoff))
        });
        self.failures.insert(key, f);
        lock
    }

    /// Whether a refusal of this address should be audited now: at most one
    /// event a minute per address, so a flood cannot flood the audit log.
    pub fn should_audit(&self, ip: Option<IpAddr>, now: OffsetDateTime) -> bool {
        let Some(ip) = ip.map(address_key) else {
            return true;
        };
        if self
            .audited
            .get(&ip)
            .is_some_and(|last| now - last < Duration::minutes(1))
        {
            return false;
        }
        self.audited.insert(ip, now);
        true
    }

    pub fn record_success(&self, account: &str, ip: Option<IpAddr>) {
        self.failures.remove(&self.failure_key(account, ip));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + Duration::days(20_000)
    }

    #[test]
    fn ip_bucket_allows_the_rate_and_refuses_beyond() {
        let l = Limits::new(LimitPolicy::default());
        let ip = Some("192.0.2.1".parse().unwrap());
        let now = t0();
        for _ in 0..30 {
            assert!(l.check_ip(ip, now).is_ok());
        }
        let RetryAfter(wait) = l.check_ip(ip, now).unwrap_err();
        assert_eq!(wait, 2, "one token every 2 s");
        assert!(l.check_ip(ip, now + Duration::seconds(2)).is_ok());
        assert!(l.check_ip(ip, now + Duration::seconds(2)).is_err());
        // Another address has its own bucket; unknown addresses are not limited.
        assert!(l.check_ip(Some("192.0.2.2".parse().unwrap()), now).is_ok());
        assert!(l.check_ip(None, now).is_ok());
        // A minute later the bucket is full again.
        let later = now + Duration::minutes(2);
        for _ in 0..30 {
            assert!(l.check_ip(ip, later).is_ok());
        }
    }

    #[test]
    fn backoff_starts_after_five_failures_grows_and_caps() {
        let l = Limits::new(LimitPolicy::default());
        let ip = Some("198.51.100.7".parse().unwrap());
        let mut now = t0();
        for _ in 0..4 {
            assert_eq!(l.record_failure("a@example.com", ip, now), None);
            assert!(l.check_account("a@example.com", ip, now).is_ok());
        }
        let mut waits = Vec::new();
        for _ in 0..14 {
            let RetryAfter(w) = l.record_failure("a@example.com", ip, now).unwrap();
            assert_eq!(
                l.check_account("a@example.com", ip, now),
                Err(RetryAfter(w))
            );
            waits.push(w);
            now += Duration::seconds(i64::try_from(w).unwrap());
            assert!(l.check_account("a@example.com", ip, now).is_ok());
        }
        assert_eq!(&waits[..5], &[1, 2, 4, 8, 16]);
        assert_eq!(*waits.last().unwrap(), 900, "capped at 15 minutes");
        // The owner, from another address, is not locked out.
        let owner = Some("203.0.113.9".parse().unwrap());
        assert!(l.check_account("a@example.com", owner, now).is_ok());
        // A success resets.
        l.record_success("a@example.com", ip);
        assert_eq!(l.record_failure("a@example.com", ip, now), None);
    }

    #[test]
    fn an_ipv6_client_is_one_bucket_per_64() {
        let l = Limits::new(LimitPolicy {
            ip_per_minute: 2,
            ..LimitPolicy::default()
        });
        let now = t0();
        let addr = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert!(l.check_ip(addr("2001:db8:1:2::1"), now).is_ok());
        assert!(l.check_ip(addr("2001:db8:1:2:ffff::9"), now).is_ok());
        assert!(
            l.check_ip(addr("2001:db8:1:2:1234:5678:9abc:def0"), now)
                .is_err(),
            "the same /64"
        );
        assert!(
            l.check_ip(addr("2001:db8:1:3::1"), now).is_ok(),
            "another /64"
        );
        // IPv4, and IPv4 written as IPv4-mapped IPv6, are one client.
        assert!(l.check_ip(addr("192.0.2.1"), now).is_ok());
        assert!(l.check_ip(addr("::ffff:192.0.2.1"), now).is_ok());
        assert!(l.check_ip(addr("192.0.2.1"), now).is_err());
        assert!(l.check_ip(addr("192.0.2.2"), now).is_ok());
    }

    #[test]
    fn backoff_keys_any_account_text_by_its_hash() {
        let l = Limits::new(LimitPolicy::default());
        let ip = Some("198.51.100.7".parse().unwrap());
        let huge = "x".repeat(64 * 1024);
        for _ in 0..5 {
            l.record_failure(&huge, ip, t0());
        }
        assert!(l.check_account(&huge, ip, t0()).is_err());
        assert!(l.check_account("other@example.com", ip, t0()).is_ok());
    }
}
