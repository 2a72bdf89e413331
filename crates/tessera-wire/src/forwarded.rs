//! Who the client is behind trusted proxies: `X-Forwarded-For` or RFC 7239
//! `Forwarded`, read from the right.
//!
//! Each proxy appends the address it received the request from, so the
//! right-most entries were written by proxies we trust and everything left
//! of the first untrusted address was written by the client (and is not
//! believed). A hop that does not parse as an address (`unknown`, an
//! obfuscated `_name`, garbage) ends the walk: nothing further left can be
//! attributed, so the client is taken to be the last trusted address seen,
//! never something further left, which the client could have written.

use std::net::{IpAddr, SocketAddr};

/// Which header the trusted proxies write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (nginx, Caddy, most).
    XForwardedFor,
    /// `Forwarded: for=client;proto=https, for="[2001:db8::1]:443"`.
    Forwarded,
}

/// The header's name as sent on the wire (lower case).
impl ProxyHeader {
    pub fn name(self) -> &'static str {
        match self {
            ProxyHeader::XForwardedFor => "x-forwarded-for",
            ProxyHeader::Forwarded => "forwarded",
        }
    }
}

/// One entry of the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    Addr(IpAddr),
    /// `unknown`, an obfuscated identifier, a missing `for=`, or garbage.
    Opaque,
}

/// Hops read from the right at most: more is a header no proxy chain writes.
pub const MAX_HOPS: usize = 32;

/// The client's address for a request from `peer` carrying `values` (every
/// line of the header, in order). When `peer` is not trusted the header is
/// ignored.
pub fn client_ip<'a>(
    peer: IpAddr,
    values: impl IntoIterator<Item = &'a str>,
    header: ProxyHeader,
    is_trusted: impl Fn(IpAddr) -> bool,
) -> IpAddr {
    let peer = peer.to_canonical();
    if !is_trusted(peer) {
        return peer;
    }
    let hops = hops(values, header);
    let mut last_trusted = peer;
    for hop in hops.iter().rev().take(MAX_HOPS) {
        match *hop {
            Hop::Addr(ip) if is_trusted(ip) => last_trusted = ip,
            Hop::Addr(ip) => return ip,
            Hop::Opaque => return last_trusted,
        }
    }
    last_trusted
}

/// Every hop of the header, left to right.
pub fn hops<'a>(values: impl IntoIterator<Item = &'a str>, header: ProxyHeader) -> Vec<Hop> {
    let mut out = Vec::new();
    for value in values {
        match header {
            ProxyHeader::XForwardedFor => out.extend(value.split(',').map(parse_node)),
            ProxyHeader::Forwarded => out.extend(forwarded_elements(value).map(|element| {
                forwarded_for(element).map_or(Hop::Opaque, |node| parse_node(&node))
            })),
        }
    }
    out
}

/// A node: `192.0.2.1`, `192.0.2.1:8080`, `2001:db8::1`, `[2001:db8::1]`,
/// `[2001:db8::1]:443`; anything else is opaque.
fn parse_node(text: &str) -> Hop {
    let text = text.trim();
    let ip = text
        .parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            text.strip_prefix('[')
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<std::net::Ipv6Addr>().ok())
                .map(IpAddr::V6)
        });
    ip.map_or(Hop::Opaque, |ip| Hop::Addr(ip.to_canonical()))
}

/// The elements of one `Forwarded` line (comma-separated, commas inside a
/// quoted string not counting).
fn forwarded_elements(line: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(line);
    std::iter::from_fn(move || {
        let text = rest?;
        let mut quoted = false;
        let mut escaped = false;
        for (i, c) in text.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                ',' if !quoted => {
                    rest = Some(&text[i + 1..]);
                    return Some(&text[..i]);
                }
                _ => {}
            }
        }
        rest = None;
        Some(text)
    })
}

/// The `for=` value of one element, unquoted; `None` when absent, given
/// twice, or badly quoted.
fn forwarded_for(element: &str) -> Option<String> {
    let mut found = None;
    for pair in split_pairs(element) {
        let (name, value) = pair.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("for") {
            continue;
        }
        if found.is_some() {
            return None;
        }
        found = Some(unquote(value.trim())?);
    }
    found
}

/// `;`-separated pairs, a `;` inside a quoted string not counting.
fn split_pairs(element: &str) -> Vec<&str> {
    let mut pairs = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in element.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                pairs.push(&element[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    pairs.push(&element[start..]);
    pairs.retain(|p| !p.trim().is_empty());
    pairs
}

/// A token as is, or a quoted-string with its escapes undone.
fn unquote(value: &str) -> Option<String> {
    let Some(inner) = value.strip_prefix('"') else {
        return (!value.contains('"')).then(|| value.to_owned());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Trusts 10.0.0.0/8 and fd00::/8.
    fn trusted(ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => v4.octets()[0] == 10,
            IpAddr::V6(v6) => v6.octets()[0] == 0xfd,
        }
    }

    fn xff(peer: &str, value: &str) -> IpAddr {
        client_ip(ip(peer), [value], ProxyHeader::XForwardedFor, trusted)
    }

    fn fwd(peer: &str, value: &str) -> IpAddr {
        client_ip(ip(peer), [value], ProxyHeader::Forwarded, trusted)
    }

    #[test]
    fn the_first_untrusted_hop_from_the_right_is_the_client() {
        assert_eq!(
            xff("10.0.0.1", "6.6.6.6, 203.0.113.5, 10.0.0.2"),
            ip("203.0.113.5")
        );
        // From an untrusted peer the header is ignored.
        assert_eq!(xff("198.51.100.1", "203.0.113.5"), ip("198.51.100.1"));
        // All trusted: the left-most trusted address (an internal client).
        assert_eq!(xff("10.0.0.1", "10.0.0.9, 10.0.0.2"), ip("10.0.0.9"));
        assert_eq!(xff("10.0.0.1", ""), ip("10.0.0.1"));
    }

    #[test]
    fn ports_and_brackets_are_read() {
        assert_eq!(
            xff("10.0.0.1", "6.6.6.6, 203.0.113.5:4711"),
            ip("203.0.113.5")
        );
        assert_eq!(
            xff("10.0.0.1", "6.6.6.6, [2001:db8::7]:443"),
            ip("2001:db8::7")
        );
        assert_eq!(xff("10.0.0.1", "6.6.6.6, [2001:db8::7]"), ip("2001:db8::7"));
        assert_eq!(xff("10.0.0.1", "6.6.6.6, 2001:db8::7"), ip("2001:db8::7"));
        assert_eq!(xff("10.0.0.1", "::ffff:203.0.113.5"), ip("203.0.113.5"));
    }

    /// The finding: an unparseable hop was skipped, so the client's own
    /// left-most entry became its address.
    #[test]
    fn an_opaque_hop_stops_the_walk_at_the_last_trusted_address() {
        assert_eq!(xff("10.0.0.1", "6.6.6.6, unknown"), ip("10.0.0.1"));
        assert_eq!(
            xff("10.0.0.1", "6.6.6.6, _hidden, 10.0.0.2"),
            ip("10.0.0.2")
        );
        assert_eq!(xff("10.0.0.1", "6.6.6.6, fe80::1%eth0"), ip("10.0.0.1"));
        assert_eq!(xff("10.0.0.1", "6.6.6.6,,"), ip("10.0.0.1"));
    }

    #[test]
    fn rfc_7239_forwarded_is_read_from_the_right() {
        assert_eq!(
            fwd(
                "10.0.0.1",
                r#"for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https"#
            ),
            ip("2001:db8:cafe::17")
        );
        assert_eq!(
            fwd("10.0.0.1", "for=192.0.2.60;proto=http;by=203.0.113.43"),
            ip("192.0.2.60")
        );
        assert_eq!(fwd("10.0.0.1", "For=\"192.0.2.60:8080\""), ip("192.0.2.60"));
        // Obfuscated, unknown, or no for= at all: stop.
        assert_eq!(
            fwd("10.0.0.1", "for=6.6.6.6, for=_SEVKISEK"),
            ip("10.0.0.1")
        );
        assert_eq!(fwd("10.0.0.1", "for=6.6.6.6, for=unknown"), ip("10.0.0.1"));
        assert_eq!(fwd("10.0.0.1", "for=6.6.6.6, proto=https"), ip("10.0.0.1"));
        // A comma or semicolon inside quotes does not split.
        assert_eq!(
            fwd(
                "10.0.0.1",
                r#"for=6.6.6.6, for="10.0.0.3";host="a,b;c", for=10.0.0.2"#
            ),
            ip("6.6.6.6")
        );
        // Two for= in one element, or a broken quote: opaque.
        assert_eq!(
            fwd("10.0.0.1", "for=6.6.6.6, for=1.1.1.1;for=2.2.2.2"),
            ip("10.0.0.1")
        );
        assert_eq!(
            fwd("10.0.0.1", "for=6.6.6.6, for=\"1.1.1.1"),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn several_lines_are_one_list() {
        let got = client_ip(
            ip("10.0.0.1"),
            ["6.6.6.6", "203.0.113.5, 10.0.0.2"],
            ProxyHeader::XForwardedFor,
            trusted,
        );
        assert_eq!(got, ip("203.0.113.5"));
    }

    #[test]
    fn only_the_last_hops_are_walked() {
        let many = vec!["10.0.0.2"; MAX_HOPS + 5].join(",");
        let value = format!("6.6.6.6, {many}");
        assert_eq!(xff("10.0.0.1", &value), ip("10.0.0.2"));
    }
}
