//! The per-address connection cap: open connections counted by client
//! address (an IPv6 client by its /64), trusted proxies exempt.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use ipnet::IpNet;

/// Open connections per client address.
pub(super) struct PeerCounts {
    pub(super) cap: usize,
    exempt: Vec<IpNet>,
    open: Mutex<HashMap<IpAddr, usize>>,
}

pub(super) enum Admission {
    /// A trusted proxy: not counted.
    Exempt,
    Admitted(PeerSlot),
    /// The address holds `cap` connections already.
    Refused,
}

impl PeerCounts {
    pub(super) fn new(cap: usize, exempt: Vec<IpNet>) -> Self {
        Self {
            cap,
            exempt,
            open: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr) -> Admission {
        let key = peer_key(ip);
        if self
            .exempt
            .iter()
            .any(|net| net.contains(&ip) || net.contains(&ip.to_canonical()))
        {
            return Admission::Exempt;
        }
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(key).or_insert(0);
        if *count >= self.cap {
            return Admission::Refused;
        }
        *count += 1;
        Admission::Admitted(PeerSlot {
            counts: Arc::clone(self),
            key,
        })
    }
}

/// One open connection of an address; dropping it closes the count.
pub(super) struct PeerSlot {
    counts: Arc<PeerCounts>,
    key: IpAddr,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self
            .counts
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// What the per-address cap counts by: the rate limits' address key (an
/// IPv4 address, also when it arrives IPv4-mapped, or an IPv6 /64: one
/// subscriber's prefix, so one host cannot open connections from 2^64
/// addresses).
use crate::core::limits::address_key as peer_key;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_counted_by_host_and_ipv6_by_64() {
        let key = |s: &str| peer_key(s.parse().unwrap()).to_string();
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
    }

    #[test]
    fn the_per_address_cap_counts_and_exempts_trusted_proxies() {
        let counts = Arc::new(PeerCounts::new(2, vec!["10.0.0.0/8".parse().unwrap()]));
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let a = counts.admit(ip);
        let b = counts.admit(ip);
        assert!(matches!(a, Admission::Admitted(_)));
        assert!(matches!(b, Admission::Admitted(_)));
        assert!(matches!(counts.admit(ip), Admission::Refused));
        // Another address is not affected; a closed connection frees a slot.
        assert!(matches!(
            counts.admit("192.0.2.8".parse().unwrap()),
            Admission::Admitted(_)
        ));
        drop(a);
        assert!(matches!(counts.admit(ip), Admission::Admitted(_)));
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        for _ in 0..10 {
            assert!(matches!(counts.admit(proxy), Admission::Exempt));
        }
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert!(matches!(counts.admit(mapped), Admission::Exempt));
        drop(b);
        let open = counts.open.lock().unwrap();
        assert!(!open.contains_key(&ip), "{open:?}");
    }
}
