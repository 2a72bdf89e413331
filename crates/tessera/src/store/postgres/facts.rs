//! What `tessera doctor` reads from a PostgreSQL server, over one
//! connection made as the store makes them (the URL's `sslmode` honoured):
//! the rules that judge these facts are in `doctor::database`.

use std::net::IpAddr;
use std::str::FromStr;

use anyhow::Context;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Row};

/// The server's version, connection limits and this connection's
/// encryption, and where the URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresFacts {
    /// `server_version`, e.g. `15.18 (Debian 15.18-0+deb12u1)`.
    pub version: String,
    /// `server_version_num`, e.g. 150018.
    pub version_num: u32,
    pub max_connections: u32,
    /// Connections kept for superusers (`superuser_reserved_connections`).
    pub reserved_connections: u32,
    /// Connections open on the server now, this one included.
    pub connections_in_use: u32,
    /// Whether this connection is encrypted (`pg_stat_ssl`).
    pub ssl: bool,
    /// The host named in the URL (or the socket directory).
    pub host: String,
    /// Loopback address, `localhost` or a Unix socket: nothing crosses a
    /// network.
    pub host_is_local: bool,
    /// The URL's `sslmode` (`prefer` when it names none).
    pub sslmode: String,
}

/// Reads the facts of the server at `url`.
pub async fn read(url: &str) -> anyhow::Result<PostgresFacts> {
    let redacted = crate::config::redact_url(url);
    let options = PgConnectOptions::from_str(url)
        .map_err(|_| anyhow::anyhow!("bad PostgreSQL URL {redacted}"))?;
    let mut conn = options.connect().await.map_err(|e| {
        anyhow::anyhow!(
            "cannot connect to {redacted}: {}",
            super::scrub(e.to_string(), url)
        )
    })?;
    let row = sqlx::query(
        "SELECT current_setting('server_version') AS version,
                current_setting('server_version_num')::int AS version_num,
                current_setting('max_connections')::int AS max_connections,
                current_setting('superuser_reserved_connections')::int AS reserved,
                (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int AS in_use,
                coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false) AS ssl",
    )
    .fetch_one(&mut conn)
    .await
    .context("reading the server's settings")?;
    let _ = conn.close().await;
    let count = |name: &str| -> anyhow::Result<u32> {
        let n: i32 = row.try_get(name)?;
        Ok(u32::try_from(n).unwrap_or(0))
    };
    let (host, host_is_local) = where_it_points(url);
    Ok(PostgresFacts {
        version: row.try_get("version")?,
        version_num: count("version_num")?,
        max_connections: count("max_connections")?,
        reserved_connections: count("reserved")?,
        connections_in_use: count("in_use")?,
        ssl: row.try_get("ssl")?,
        host,
        host_is_local,
        sslmode: url::Url::parse(url)
            .ok()
            .and_then(|u| {
                u.query_pairs()
                    .find(|(k, _)| k == "sslmode")
                    .map(|(_, v)| v.into_owned())
            })
            .unwrap_or_else(|| "prefer".to_owned()),
    })
}

/// The URL's host, and whether it is this machine (a loopback address,
/// `localhost`, or a Unix socket given as `host=/path`), as sqlx reads the
/// URL.
fn where_it_points(url: &str) -> (String, bool) {
    let Ok(options) = PgConnectOptions::from_str(url) else {
        return (String::new(), false);
    };
    if let Some(socket) = options.get_socket() {
        return (socket.display().to_string(), true);
    }
    let host = options.get_host().trim_matches(['[', ']']).to_owned();
    let local = host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    (host, local)
}

#[cfg(test)]
mod tests {
    use super::where_it_points;

    #[test]
    fn loopback_names_and_sockets_are_local_anything_else_is_not() {
        for (url, local) in [
            ("postgres://u@127.0.0.1:5432/d", true),
            ("postgres://u@[::1]:5432/d", true),
            ("postgres://u@localhost/d", true),
            ("postgres:///d?host=/run/postgresql&user=u", true),
            ("postgres://u@db.internal:5432/d", false),
            ("postgres://u@10.0.0.5/d", false),
        ] {
            assert_eq!(where_it_points(url).1, local, "{url}");
        }
    }
}
