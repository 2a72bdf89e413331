//! What `tessera doctor` checks on a PostgreSQL server: its version, whether
//! the connection is encrypted off this machine, and whether the pool fits
//! its connection limit. Pure over facts the store read
//! ([`PostgresFacts`]), so every rule is unit-tested; the database's clock
//! is checked with [`super::clock_skew`].

use super::{Finding, finding};
use crate::inspect::Severity;
pub use crate::store::postgres::facts::PostgresFacts;

/// Oldest PostgreSQL major version still supported by its developers (each
/// gets five years; 14 reached its end of life in November 2026).
const OLDEST_SUPPORTED: u32 = 15;

/// The findings for `facts`, with this node's pool of `pool_size`
/// connections (plus one for LISTEN).
pub fn postgres_findings(facts: &PostgresFacts, pool_size: u32) -> Vec<Finding> {
    use Severity::{Danger, Info, Warning};
    let mut out = Vec::new();
    let major = facts.version_num / 10_000;
    if major < OLDEST_SUPPORTED {
        out.push(finding(
            Warning,
            format!(
                "PostgreSQL {} is past its end of life (no more security fixes)",
                facts.version
            ),
            "upgrade PostgreSQL to a supported major version (Tessera is tested on 15)",
        ));
    } else {
        out.push(finding(
            Info,
            format!("PostgreSQL {} at {}", facts.version, facts.host),
            "none needed",
        ));
    }

    if !facts.host_is_local {
        if !facts.ssl {
            out.push(finding(
                Danger,
                format!(
                    "the connection to PostgreSQL at {} is not encrypted (sslmode={}): password hashes, session and token records cross the network in clear text",
                    facts.host, facts.sslmode
                ),
                "enable TLS on the server and add sslmode=verify-full (with sslrootcert=… if its CA is private) to TESSERA_DATABASE_URL",
            ));
        } else if facts.sslmode != "verify-full" {
            out.push(finding(
                Warning,
                format!(
                    "the connection to PostgreSQL at {} is encrypted but the server's certificate is not fully verified (sslmode={})",
                    facts.host, facts.sslmode
                ),
                "use sslmode=verify-full in TESSERA_DATABASE_URL, so a machine in the middle cannot pose as the database",
            ));
        }
    }

    let per_node = pool_size.saturating_add(1);
    let available = facts
        .max_connections
        .saturating_sub(facts.reserved_connections);
    let pool_setting = format!("TESSERA_DATABASE_POOL_SIZE={pool_size}");
    if per_node > available {
        out.push(finding(
            Danger,
            format!(
                "one node may open {per_node} connections ({pool_setting}, plus one to listen for changes) but the server allows {available} (max_connections {} less {} reserved)",
                facts.max_connections, facts.reserved_connections
            ),
            "raise max_connections on the server or lower TESSERA_DATABASE_POOL_SIZE",
        ));
    } else if facts.connections_in_use.saturating_add(per_node) > available {
        out.push(finding(
            Warning,
            format!(
                "{} of the server's {available} connections are in use; this node may open {per_node} more ({pool_setting}, plus one to listen)",
                facts.connections_in_use
            ),
            "raise max_connections, lower TESSERA_DATABASE_POOL_SIZE on every node, or put a pooler (PgBouncer in session mode) in front",
        ));
    } else {
        out.push(finding(
            Info,
            format!(
                "max_connections {} leaves room for {} nodes of {per_node} connections ({pool_setting}, plus one to listen); {} in use now",
                facts.max_connections,
                available / per_node,
                facts.connections_in_use
            ),
            "none needed",
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> PostgresFacts {
        PostgresFacts {
            version: "15.18".into(),
            version_num: 150_018,
            max_connections: 100,
            reserved_connections: 3,
            connections_in_use: 5,
            ssl: false,
            host: "127.0.0.1".into(),
            host_is_local: true,
            sslmode: "prefer".into(),
        }
    }

    fn worst(findings: &[Finding]) -> Severity {
        findings
            .iter()
            .map(|f| f.severity)
            .max_by_key(|s| match s {
                Severity::Info => 0,
                Severity::Warning => 1,
                Severity::Danger => 2,
            })
            .unwrap_or(Severity::Info)
    }

    #[test]
    fn a_local_current_server_with_room_is_fine_and_says_how_many_nodes_fit() {
        let f = postgres_findings(&local(), 16);
        assert_eq!(worst(&f), Severity::Info, "{f:?}");
        assert!(
            f.iter().any(|f| f.problem.contains("room for 5 nodes")),
            "{f:?}"
        );
    }

    #[test]
    fn plain_text_off_this_machine_is_dangerous_and_unverified_tls_a_warning() {
        let remote = PostgresFacts {
            host: "db.internal".into(),
            host_is_local: false,
            ..local()
        };
        let f = postgres_findings(&remote, 16);
        assert_eq!(worst(&f), Severity::Danger);
        assert!(f.iter().any(|f| f.fix.contains("sslmode=verify-full")));

        let unverified = PostgresFacts {
            ssl: true,
            sslmode: "require".into(),
            ..remote.clone()
        };
        assert_eq!(
            worst(&postgres_findings(&unverified, 16)),
            Severity::Warning
        );

        let verified = PostgresFacts {
            ssl: true,
            sslmode: "verify-full".into(),
            ..remote
        };
        assert_eq!(worst(&postgres_findings(&verified, 16)), Severity::Info);
    }

    #[test]
    fn a_pool_larger_than_the_server_allows_is_dangerous_a_crowded_server_a_warning() {
        let f = postgres_findings(&local(), 97);
        assert_eq!(worst(&f), Severity::Danger, "{f:?}");
        let crowded = PostgresFacts {
            connections_in_use: 90,
            ..local()
        };
        assert_eq!(worst(&postgres_findings(&crowded, 16)), Severity::Warning);
    }

    #[test]
    fn an_end_of_life_version_is_a_warning() {
        let old = PostgresFacts {
            version: "12.20".into(),
            version_num: 120_020,
            ..local()
        };
        let f = postgres_findings(&old, 16);
        assert_eq!(worst(&f), Severity::Warning);
        assert!(f[0].problem.contains("end of life"));
    }
}
