//! `X-Forwarded-For` and RFC 7239 `Forwarded` behind trusted proxies
//! (`tessera_wire::forwarded`).
//!
//! Input, as text: the first line is `<xff|fwd> <peer> [trusted…]` (the
//! header read, the socket peer, extra trusted networks; 10.0.0.0/8,
//! 127.0.0.0/8, fd00::/8 and ::1 are always trusted), every further line one
//! header value.
//!
//! Invariants:
//! - an untrusted peer is the answer, whatever the header says;
//! - otherwise the answer is the peer, or an address among the parsed hops
//!   with only trusted addresses to its right (within the last `MAX_HOPS`):
//!   never an address left of an opaque hop or of an untrusted one, which
//!   the client could have written;
//! - every parsed address is canonical (no IPv4-mapped IPv6).
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;
use tessera_wire::forwarded::{self, Hop, MAX_HOPS, ProxyHeader};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let mut setup = lines.next().unwrap_or_default().split_ascii_whitespace();
    let header = match setup.next() {
        Some("fwd" | "forwarded") => ProxyHeader::Forwarded,
        _ => ProxyHeader::XForwardedFor,
    };
    let peer: IpAddr = setup
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
    let mut trusted: Vec<IpNet> = ["10.0.0.0/8", "127.0.0.0/8", "fd00::/8", "::1/128"]
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect();
    trusted.extend(setup.filter_map(|n| {
        n.parse::<IpNet>()
            .ok()
            .or_else(|| n.parse::<IpAddr>().ok().map(IpNet::from))
    }));
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(&ip));
    let values: Vec<&str> = lines.collect();

    let answer = forwarded::client_ip(peer, values.iter().copied(), header, is_trusted);
    let hops = forwarded::hops(values.iter().copied(), header);
    let peer = peer.to_canonical();

    for hop in &hops {
        if let Hop::Addr(ip) = hop {
            assert_eq!(*ip, ip.to_canonical(), "a hop left non-canonical");
        }
    }
    if !is_trusted(peer) {
        assert_eq!(answer, peer, "an untrusted peer's header was believed");
        return;
    }
    if answer == peer {
        return;
    }
    let believable = (0..hops.len()).any(|i| {
        hops[i] == Hop::Addr(answer)
            && hops.len() - i <= MAX_HOPS
            && hops[i + 1..]
                .iter()
                .all(|h| matches!(*h, Hop::Addr(ip) if is_trusted(ip)))
    });
    assert!(
        believable,
        "{answer} is not the peer nor a hop with only trusted ones to its right: {hops:?}"
    );
});
