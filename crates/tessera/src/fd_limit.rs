//! The open-file limit. Every client connection is a file descriptor, and
//! the usual soft limit (1024) is what a flood of about a thousand idle
//! connections exhausted (issue #19): past it `accept` fails, and so does
//! everything else that opens a file, the database's included. `serve`
//! raises the soft limit to the hard one at start and reports it; the
//! default connection cap (`max_connections`) is sized below it, leaving
//! [`reserve`] descriptors for the process's own files.

/// Descriptors kept back from client connections, besides one per database
/// connection: standard streams, the listeners, SQLite's database, WAL and
/// shared-memory files, the `/metrics` listener's connections, DNS and
/// outgoing HTTP.
pub const RESERVED: u64 = 256;

/// The default connection cap never exceeds this, however high the
/// open-file limit: each open connection costs memory too (its task and
/// buffers, tens of KiB when busy), and ten thousand at once is already far
/// beyond what one node serves without an attack. Raise
/// `max_connections` explicitly on a bigger machine.
pub const DEFAULT_MAX_CONNECTIONS_CEILING: usize = 10_000;

/// The default per-address cap never exceeds this: a browser opens at most
/// six connections to a host, so 256 leaves room for dozens of users behind
/// one NAT address while one attacker's address holds at most this many.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP_CEILING: usize = 256;

/// Descriptors the process needs for itself with this database pool.
pub fn reserve(database_pool_size: u32) -> u64 {
    RESERVED + u64::from(database_pool_size)
}

/// The default `max_connections` for an open-file limit (`None`: unknown,
/// or no limit on this platform): what the limit leaves after the reserve,
/// at most [`DEFAULT_MAX_CONNECTIONS_CEILING`], at least 1.
pub fn default_max_connections(limit: Option<u64>, database_pool_size: u32) -> usize {
    let Some(limit) = limit else {
        return DEFAULT_MAX_CONNECTIONS_CEILING;
    };
    let room = limit.saturating_sub(reserve(database_pool_size)).max(1);
    usize::try_from(room).map_or(DEFAULT_MAX_CONNECTIONS_CEILING, |room| {
        room.min(DEFAULT_MAX_CONNECTIONS_CEILING)
    })
}

/// The default `max_connections_per_ip`: a quarter of the overall cap, so
/// that one address can never take every connection, at most
/// [`DEFAULT_MAX_CONNECTIONS_PER_IP_CEILING`].
pub fn default_max_connections_per_ip(max_connections: usize) -> usize {
    (max_connections / 4).clamp(1, DEFAULT_MAX_CONNECTIONS_PER_IP_CEILING)
}

/// When `max_connections` (plus the reserve) does not fit in `limit`: the
/// sentence to warn with.
pub fn shortfall(limit: u64, max_connections: usize, database_pool_size: u32) -> Option<String> {
    let needed = (max_connections as u64).saturating_add(reserve(database_pool_size));
    (needed > limit).then(|| {
        format!(
            "the open-file limit ({limit}) is below what {max_connections} connections need \
             (about {needed} with the database pool and the process's own files): a flood \
             can exhaust it, and then the database and /healthz fail too"
        )
    })
}

/// The soft and hard limits on open files (`hard: None`: unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    pub soft: u64,
    pub hard: Option<u64>,
}

/// What [`raise`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raised {
    /// The soft limit before.
    pub before: u64,
    /// The limits now.
    pub now: FdLimit,
}

impl std::fmt::Display for Raised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "open-file limit {}", self.now.soft)?;
        if self.now.soft > self.before {
            write!(f, " (raised from {})", self.before)?;
        } else if self.now.hard.is_some_and(|hard| hard > self.now.soft) {
            // The hard limit could not be reached (see `raise`).
            write!(f, " (the hard limit is higher but could not be reached)")?;
        }
        Ok(())
    }
}

/// This process's limits, when the platform has them.
pub fn current() -> Option<FdLimit> {
    imp::current()
}

/// The limit `serve` runs with: the hard limit, to which it raises the soft
/// one (the soft one where the hard one is unlimited, as it cannot be
/// reached).
pub fn attainable() -> Option<u64> {
    current().map(|l| l.hard.unwrap_or(l.soft).max(l.soft))
}

/// Raises the soft limit to the hard one (or as far as the system allows
/// when the hard one is unlimited). `None` where the platform has no such
/// limit.
pub fn raise() -> Option<Raised> {
    let before = current()?;
    imp::raise(before);
    let now = current().unwrap_or(before);
    Some(Raised {
        before: before.soft,
        now,
    })
}

#[cfg(unix)]
mod imp {
    use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit, setrlimit};

    use super::FdLimit;

    pub(super) fn current() -> Option<FdLimit> {
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
        Some(FdLimit {
            soft,
            hard: (hard != RLIM_INFINITY).then_some(hard),
        })
    }

    pub(super) fn raise(limit: FdLimit) {
        let hard = limit.hard.unwrap_or(RLIM_INFINITY);
        // Linux always accepts the hard limit. Where the hard limit is
        // "unlimited" (macOS) the kernel refuses it for open files, so
        // smaller targets are tried (macOS's OPEN_MAX is 10240).
        let targets = [limit.hard.unwrap_or(1 << 20), 1 << 16, 10_240];
        for target in targets {
            if target <= limit.soft {
                break;
            }
            if limit.hard.is_some_and(|hard| target > hard) {
                continue;
            }
            if setrlimit(Resource::RLIMIT_NOFILE, target, hard).is_ok() {
                return;
            }
        }
    }
}

#[cfg(not(unix))]
mod imp {
    use super::FdLimit;

    pub(super) fn current() -> Option<FdLimit> {
        None
    }

    pub(super) fn raise(_limit: FdLimit) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_leaves_the_reserve_and_stays_below_the_ceiling() {
        assert_eq!(default_max_connections(Some(1024), 16), 1024 - 256 - 16);
        assert_eq!(default_max_connections(Some(20_000), 16), 10_000);
        assert_eq!(default_max_connections(Some(1 << 20), 16), 10_000);
        assert_eq!(default_max_connections(Some(100), 16), 1);
        assert_eq!(default_max_connections(None, 16), 10_000);
        assert_eq!(default_max_connections_per_ip(10_000), 256);
        assert_eq!(default_max_connections_per_ip(752), 188);
        assert_eq!(default_max_connections_per_ip(1), 1);
    }

    #[test]
    fn a_cap_beyond_the_limit_is_named() {
        assert!(shortfall(1024, 752, 16).is_none());
        let warning = shortfall(1024, 1000, 16).unwrap();
        assert!(warning.contains("(1024)"), "{warning}");
        assert!(warning.contains("1000 connections"), "{warning}");
    }

    #[cfg(unix)]
    #[test]
    fn raising_reaches_the_hard_limit() {
        let raised = raise().unwrap();
        let now = current().unwrap();
        assert_eq!(raised.now, now);
        if let Some(hard) = now.hard {
            assert_eq!(now.soft, hard, "{raised}");
        }
        assert_eq!(attainable(), Some(now.soft));
    }
}
