//! What `TESSERA_REDIS_URL` names: one server, a cluster, or a primary
//! found through Sentinel. Checked once (at start-up, by `config`), so a
//! typo stops the server with one line instead of a reconnect loop.
//!
//! - `redis://[user:password@]host[:port][/db]`, `rediss://…` (TLS): one
//!   server (or a proxy in front of several);
//! - several such URLs, comma-separated: the seed nodes of a Redis Cluster
//!   (any one that answers gives the whole map);
//! - `redis+sentinel://[user:password@]host:port[,host:port…]/master_name`
//!   (`rediss+sentinel://` for TLS to the sentinels and the primary): the
//!   sentinels to ask where the primary named `master_name` is.

/// A checked Redis URL.
#[derive(Clone, PartialEq, Eq)]
pub enum Target {
    /// One server.
    Single(String),
    /// A cluster, by its seed nodes (each a `redis://` or `rediss://` URL).
    Cluster(Vec<String>),
    /// A primary found through Sentinel.
    Sentinel(SentinelTarget),
}

impl Target {
    /// Whether the connections use TLS (`rediss://`, `rediss+sentinel://`).
    pub fn uses_tls(&self) -> bool {
        match self {
            Target::Single(url) => url.starts_with("rediss://"),
            Target::Cluster(seeds) => seeds.iter().any(|u| u.starts_with("rediss://")),
            Target::Sentinel(s) => s.tls,
        }
    }
}

/// Where the sentinels are and which primary to ask them for.
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelTarget {
    /// `host:port` of each sentinel.
    pub sentinels: Vec<(String, u16)>,
    pub master: String,
    pub tls: bool,
    /// Credentials for the primary (and the sentinels), if the URL has them.
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: i64,
}

/// The URLs without their passwords.
impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = crate::config::shown_redis_url;
        match self {
            Target::Single(url) => f.debug_tuple("Single").field(&shown(url)).finish(),
            Target::Cluster(seeds) => f
                .debug_tuple("Cluster")
                .field(&seeds.iter().map(|u| shown(u)).collect::<Vec<_>>())
                .finish(),
            Target::Sentinel(s) => f.debug_tuple("Sentinel").field(s).finish(),
        }
    }
}

/// Everything but the password.
impl std::fmt::Debug for SentinelTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelTarget")
            .field("sentinels", &self.sentinels)
            .field("master", &self.master)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("db", &self.db)
            .finish()
    }
}

const SENTINEL_DEFAULT_PORT: u16 = 26379;

impl Target {
    /// Reads a Redis URL, or says what is wrong with it (never echoing a
    /// password).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("an empty Redis URL".into());
        }
        if let Some((scheme, _)) = text.split_once("://")
            && matches!(scheme, "redis+sentinel" | "rediss+sentinel")
        {
            return parse_sentinel(text, scheme == "rediss+sentinel").map(Target::Sentinel);
        }
        let urls: Vec<&str> = text.split(',').map(str::trim).collect();
        for url in &urls {
            check_plain(url)?;
        }
        if urls.len() == 1 {
            Ok(Target::Single(urls[0].to_owned()))
        } else {
            Ok(Target::Cluster(
                urls.iter().map(|u| (*u).to_owned()).collect(),
            ))
        }
    }

    /// How the banner and `config show` describe it.
    pub fn describe(&self) -> &'static str {
        match self {
            Target::Single(_) => "one server",
            Target::Cluster(_) => "a cluster",
            Target::Sentinel(_) => "a primary found through Sentinel",
        }
    }
}

fn check_plain(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("not a URL ({e})"))?;
    match parsed.scheme() {
        "redis" | "rediss" => {}
        other => {
            return Err(format!(
                "unsupported scheme `{other}` (expected redis://, rediss://, \
                 redis+sentinel:// or several redis:// seed URLs, comma-separated)"
            ));
        }
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("no host".into());
    }
    let db = parsed.path().trim_start_matches('/');
    if !db.is_empty() && db.parse::<u16>().is_err() {
        return Err(format!(
            "the path must be a database number, not `/{}`",
            truncate(db)
        ));
    }
    Ok(())
}

fn parse_sentinel(text: &str, tls: bool) -> Result<SentinelTarget, String> {
    let (_, rest) = text.split_once("://").unwrap_or(("", text));
    let (userinfo, rest) = match rest.rsplit_once('@') {
        Some((user, rest)) => (Some(user), rest),
        None => (None, rest),
    };
    let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut path = path.split('/');
    let master = path.next().unwrap_or_default();
    if master.is_empty() {
        return Err("a Sentinel URL names its primary as the path: \
                    redis+sentinel://host:port[,host:port…]/master_name"
            .into());
    }
    let db = match path.next() {
        None | Some("") => 0,
        Some(n) => n.parse::<i64>().map_err(|_| {
            format!(
                "the database after the primary's name must be a number, not `{}`",
                truncate(n)
            )
        })?,
    };
    let mut sentinels = Vec::new();
    for host in hosts.split(',').map(str::trim) {
        let (name, port) = split_host_port(host)?;
        sentinels.push((name, port));
    }
    let (username, password) = match userinfo {
        None => (None, None),
        Some(info) => {
            let (user, password) = info.split_once(':').unwrap_or((info, ""));
            let decode = |s: &str| {
                url::form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            (
                (!user.is_empty()).then(|| decode(user)),
                (!password.is_empty()).then(|| decode(password)),
            )
        }
    };
    Ok(SentinelTarget {
        sentinels,
        master: master.to_owned(),
        tls,
        username,
        password,
        db,
    })
}

fn split_host_port(host: &str) -> Result<(String, u16), String> {
    if host.is_empty() {
        return Err("an empty sentinel address".into());
    }
    let (name, port) = if let Some(v6) = host.strip_prefix('[') {
        let (name, rest) = v6
            .split_once(']')
            .ok_or_else(|| format!("`{}` is not host:port", truncate(host)))?;
        (name, rest.strip_prefix(':'))
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    let port = match port {
        None => SENTINEL_DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("`{}` is not host:port", truncate(host)))?,
    };
    if name.is_empty() {
        return Err(format!("`{}` has no host", truncate(host)));
    }
    Ok((name.to_owned(), port))
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_url_is_one_server_and_several_are_cluster_seeds() {
        assert_eq!(
            Target::parse("redis://127.0.0.1:6379"),
            Ok(Target::Single("redis://127.0.0.1:6379".into()))
        );
        assert_eq!(
            Target::parse("rediss://:pw@cache.example.com/2"),
            Ok(Target::Single("rediss://:pw@cache.example.com/2".into()))
        );
        assert_eq!(
            Target::parse("redis://a:7000, redis://b:7001"),
            Ok(Target::Cluster(vec![
                "redis://a:7000".into(),
                "redis://b:7001".into()
            ]))
        );
    }

    #[test]
    fn sentinel_urls_name_their_sentinels_and_primary() {
        let Ok(Target::Sentinel(s)) = Target::parse(
            "redis+sentinel://user:p%40ss@10.0.0.1:26379,10.0.0.2,[::1]:5000/tessera",
        ) else {
            panic!("a sentinel URL");
        };
        assert_eq!(
            s.sentinels,
            [
                ("10.0.0.1".to_owned(), 26379),
                ("10.0.0.2".to_owned(), 26379),
                ("::1".to_owned(), 5000)
            ]
        );
        assert_eq!(s.master, "tessera");
        assert_eq!(s.username.as_deref(), Some("user"));
        assert_eq!(s.password.as_deref(), Some("p@ss"));
        assert!(!s.tls);
        assert_eq!(s.db, 0);
    }

    #[test]
    fn debug_output_shows_no_password() {
        for url in [
            "redis+sentinel://:hunter2@h:1/m",
            "redis://:hunter2@h:1",
            "rediss://u:hunter2@h:1,rediss://u:hunter2@h:2",
        ] {
            let t = Target::parse(url).expect(url);
            assert!(!format!("{t:?}").contains("hunter2"), "{t:?}");
        }
        let o = crate::store::redis::RedisOptions {
            url: "redis://:hunter2@h:1,redis://:hunter2@h:2".into(),
            key_prefix: "p:".into(),
            tls: Default::default(),
            timeout: std::time::Duration::from_secs(1),
        };
        assert!(!format!("{o:?}").contains("hunter2"), "{o:?}");
    }

    #[test]
    fn mistakes_are_named_without_echoing_secrets() {
        for (url, says) in [
            ("http://x", "unsupported scheme `http`"),
            ("redis://x/abc", "database number"),
            ("redis+sentinel://h:1", "names its primary"),
            ("redis+sentinel://h:notaport/m", "not host:port"),
            ("redis://a, postgres://b", "unsupported scheme `postgres`"),
            ("", "empty"),
        ] {
            let err = Target::parse(url).expect_err(url);
            assert!(err.contains(says), "{url}: {err}");
        }
        let err = Target::parse("redis://:hunter2@x/abc").expect_err("bad db");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
