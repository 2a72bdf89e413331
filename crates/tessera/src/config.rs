//! One `Settings` struct, read once at start-up from
//! defaults < `tessera.toml` (or `--config FILE`) < `TESSERA_*` environment <
//! command-line flags, and validated as a whole. A bad value stops the process
//! with one line naming the setting, where it came from and what is allowed.
//! Unknown keys are errors too: a misspelt `TESSERA_SESION_IDLE_TIMEOUT` must
//! not silently leave the default in place.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::Value;

/// Every setting Tessera knows, with its default and what it accepts.
pub const SETTINGS: &[(&str, &str, &str)] = &[
    (
        "addr",
        "127.0.0.1:8080",
        "a socket address such as 127.0.0.1:8080",
    ),
    (
        "public_url",
        "http://localhost:<port>",
        "an http(s) URL without query or fragment",
    ),
    (
        "database_url",
        "sqlite://tessera.db",
        "a sqlite:// URL, or a postgres:// or postgresql:// URL PostgreSQL clients accept (host, port, ?sslmode=…)",
    ),
    (
        "database_pool_size",
        "16",
        "a whole number from 1 to 1000 (PostgreSQL connections per process)",
    ),
    (
        "database_statement_timeout",
        "5s",
        "a duration from 1ms to 10m (PostgreSQL, which counts milliseconds)",
    ),
    (
        "revocation_max_staleness",
        "5s",
        "a duration from 1s to 10m: past it without reading the change and revocation logs, Bearer checks answer 503",
    ),
    (
        "redis_url",
        "(unset: sessions in the database)",
        "a Redis URL: redis:// or rediss:// (one server), several of those comma-separated (a cluster's seed nodes), or redis+sentinel://host:port[,host:port…]/master_name",
    ),
    (
        "redis_key_prefix",
        "tessera:",
        "up to 64 printable ASCII characters without braces or spaces, put before every Redis key and channel",
    ),
    (
        "redis_timeout",
        "1s",
        "a duration from 10ms to 1m: longest a Redis command may wait for its answer before the request that needed it answers 503",
    ),
    (
        "redis_tls_ca_file",
        "(unset: the system's trust store)",
        "a PEM file of the certificates a rediss:// server's certificate must chain to, instead of the system's",
    ),
    (
        "redis_tls_cert_file",
        "(unset: no client certificate)",
        "a PEM certificate (chain) sent to Redis when it asks for one (tls-auth-clients), with redis_tls_key_file",
    ),
    (
        "redis_tls_key_file",
        "(unset)",
        "the PEM private key of redis_tls_cert_file",
    ),
    (
        "session_idle_timeout",
        "2h",
        "a duration such as 90s, 10m, 2h or 30d, no longer than session_absolute_timeout (default 2h, or session_absolute_timeout when that is shorter)",
    ),
    (
        "session_absolute_timeout",
        "30d",
        "a duration from 1s to 400d (cookie Max-Age counts whole seconds; browsers cap it at 400 days)",
    ),
    (
        "session_touch_interval",
        "60s",
        "a duration shorter than session_idle_timeout (default 60s, or a tenth of session_idle_timeout when that is shorter)",
    ),
    ("cookie_secure", "true", "true or false"),
    ("cookie_samesite", "Lax", "Lax, Strict or None"),
    (
        "session_cache_entries",
        "100000",
        "a whole number from 0 to 100000000 (0 turns the session cache off: every check reads the session store)",
    ),
    (
        "user_cache_entries",
        "100000",
        "a whole number from 1 to 100000000",
    ),
    (
        "argon2_memory_kib",
        "19456",
        "KiB of memory per hash, 7168 to 4194304",
    ),
    ("argon2_iterations", "2", "a whole number from 1 to 20"),
    ("argon2_parallelism", "1", "a whole number from 1 to 16"),
    (
        "hash_threads",
        "<CPU cores>",
        "a whole number from 1 to 256",
    ),
    (
        "hash_queue",
        "<16 × hash_threads>",
        "a whole number from 1 to 100000",
    ),
    ("token_alg", "EdDSA", "EdDSA, ES256, RS256 or HS256"),
    (
        "hs256_secret",
        "(unset)",
        "at least 32 bytes; required with token_alg HS256",
    ),
    (
        "access_token_ttl",
        "10m",
        "a duration from 1s to 24h (exp counts whole seconds)",
    ),
    (
        "refresh_token_ttl",
        "30d",
        "a duration from 1s to 400d (cookie Max-Age counts whole seconds; browsers cap it at 400 days)",
    ),
    ("clock_leeway", "60s", "a duration up to 5m (0s allowed)"),
    (
        "token_audience",
        "<public URL>",
        "the aud claim of access tokens",
    ),
    (
        "key_rotation_interval",
        "off",
        "off, or a duration (checked once a minute)",
    ),
    ("browser_mode", "session", "session or jwt-cookie"),
    (
        "allowed_scopes",
        "(none)",
        "space-separated scope names clients may request",
    ),
    (
        "max_sessions_per_user",
        "100",
        "a whole number from 1 to 100000: a login beyond it ends the user's oldest session",
    ),
    (
        "public_clients",
        "(none)",
        "space-separated client_id values apps may send with the password grant (up to 64 of A-Z a-z 0-9 - _ . :)",
    ),
    (
        "cors_origins",
        "(none)",
        "a comma-separated list of origins (scheme://host[:port]: http or https, no path, no trailing slash, no *) whose pages may call the JWKS, the metadata documents, /v1/token and /v1/me",
    ),
    (
        "token_cache_entries",
        "100000",
        "a whole number from 1 to 100000000",
    ),
    (
        "ip_rate_limit",
        "30",
        "requests a minute per address on login/token endpoints, 0 to 100000 (0: off)",
    ),
    (
        "login_failure_threshold",
        "5",
        "a whole number from 1 to 100",
    ),
    ("login_backoff_max", "15m", "a duration up to 24h"),
    (
        "trusted_proxies",
        "(none)",
        "comma-separated IPs or CIDRs whose forwarding header is believed",
    ),
    (
        "return_origins",
        "(none)",
        "comma-separated origins scheme://host[:port] (http or https; no path, no wildcard) that /login?return_to= may send a browser back to, besides the public URL's",
    ),
    (
        "trusted_proxy_header",
        "X-Forwarded-For",
        "X-Forwarded-For or Forwarded (RFC 7239): the header the trusted proxies write",
    ),
    (
        "max_connections",
        "<open-file limit − 256 − database_pool_size, at most 10000>",
        "a whole number from 1 to 1000000: client connections open at once; past it new ones wait",
    ),
    (
        "max_connections_per_ip",
        "<max_connections / 4, at most 256>",
        "a whole number from 1 to 1000000: connections open at once from one address (IPv6: one /64); trusted_proxies are exempt",
    ),
    ("audit_retention", "90d", "a duration up to 3650d"),
    (
        "smtp_url",
        "(unset: the log mailer writes each message to the log)",
        "smtp://[user:password@]host[:port] (STARTTLS when offered, required with credentials off loopback; port 587) or smtps://… (implicit TLS; port 465)",
    ),
    (
        "mail_from",
        "Tessera <noreply@<public_url's host>>",
        "a mailbox: Name <address@domain> or address@domain",
    ),
    (
        "password_reset_ttl",
        "30m",
        "a duration from 1m to 24h: how long a password reset link works",
    ),
    (
        "notify_new_device",
        "false",
        "true or false: mail a user when their password signs in from a device (User-Agent) the account has not used before",
    ),
    (
        "registration",
        "open",
        "open, invite or closed: who may create their own account (administrators always can)",
    ),
    (
        "allowed_email_domains",
        "(empty: any domain)",
        "a comma-separated list of domains (example.com; *.example.com also admits its subdomains) self-registration is open to",
    ),
    (
        "email_verification",
        "optional",
        "off, optional or required: whether accounts are mailed a link to verify their address, and whether an unverified one may sign in",
    ),
    (
        "email_verification_ttl",
        "24h",
        "a duration from 1h to 30d: how long an email verification link works",
    ),
    (
        "invitation_ttl",
        "7d",
        "a duration from 1h to 90d: how long an invitation works",
    ),
    (
        "product_name",
        "Tessera",
        "1 to 60 printable characters: the name the pages (header, titles) and the mails say",
    ),
    (
        "logo_url",
        "(unset: Tessera's mark)",
        "an https:// URL or a path on this server (/static/logo.svg), without quotes, spaces, angle brackets, backslashes, ; or ,: the header's logo",
    ),
    (
        "metrics_addr",
        "(unset: /metrics on addr)",
        "a socket address for a separate /metrics listener",
    ),
    (
        "log",
        "info",
        "a tracing filter such as info or tessera=debug",
    ),
    ("log_format", "text", "text or json"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Lax,
    Strict,
    None,
}

impl SameSite {
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
            SameSite::None => "None",
        }
    }
}

/// How browser logins are delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrowserMode {
    /// An opaque session id in `__Host-tessera_session`.
    Session,
    /// Access and refresh tokens in `__Host-tessera_access` / `_refresh`.
    JwtCookie,
}

/// A secret setting: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretSetting(pub String);

impl std::fmt::Debug for SecretSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The public URL and the `Origin` a browser on it sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl {
    pub url: String,
    /// `scheme://host[:port]`, lowercase, default ports omitted.
    pub origin: String,
    pub is_https: bool,
    pub is_loopback: bool,
}

/// One setting as it took effect: its value (secrets redacted) and where it
/// came from, for `tessera config show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    pub key: &'static str,
    pub value: String,
    pub source: String,
}

/// The validated configuration. (Its `Debug` shows the effective values
/// as `config show` prints them, secrets and URL passwords redacted: the
/// fields themselves hold them in clear.)
#[derive(Clone)]
pub struct Settings {
    pub addr: SocketAddr,
    pub public_url: PublicUrl,
    pub database_url: String,
    /// Most connections this process opens to a networked database.
    pub database_pool_size: u32,
    /// Longest a statement (or an idle moment in a transaction) may take on
    /// a networked database before it is cancelled.
    pub database_statement_timeout: Duration,
    /// How long a node trusts its revocation view without reading the logs
    /// (see `core::events`).
    pub revocation_max_staleness: Duration,
    /// Sessions and the revocation push in Redis (`store::redis`).
    pub redis_url: Option<String>,
    pub redis_key_prefix: String,
    /// Certificates for `rediss://` beyond the system's trust store.
    pub redis_tls: crate::store::redis::tls::TlsFiles,
    /// Longest a Redis command may wait for its answer.
    pub redis_timeout: Duration,
    pub session_idle_timeout: Duration,
    pub session_absolute_timeout: Duration,
    pub session_touch_interval: Duration,
    pub cookie_secure: bool,
    pub cookie_samesite: SameSite,
    pub session_cache_entries: usize,
    pub user_cache_entries: usize,
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
    pub hash_threads: usize,
    pub hash_queue: usize,
    pub token_alg: crate::core::keys::TokenAlg,
    pub hs256_secret: Option<SecretSetting>,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub clock_leeway: Duration,
    pub token_audience: String,
    pub key_rotation_interval: Option<Duration>,
    pub browser_mode: BrowserMode,
    pub allowed_scopes: Vec<String>,
    /// `client_id` values the password grant accepts besides none.
    pub public_clients: Vec<String>,
    /// Origins (`scheme://host[:port]`, lowercase, default port omitted)
    /// whose pages may call the JWKS, the metadata documents, `/v1/token`
    /// and `/v1/me` from a browser (`http::cors`).
    pub cors_origins: Vec<String>,
    pub max_sessions_per_user: u32,
    pub token_cache_entries: usize,
    pub ip_rate_limit: u32,
    pub login_failure_threshold: u32,
    pub login_backoff_max: Duration,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Origins (`scheme://host[:port]`, as [`origin_of`] writes them)
    /// besides the public URL's that `/login?return_to=` may return to.
    pub return_origins: Vec<String>,
    /// Client connections open at once (see `listener`); the default fits
    /// the open-file limit `serve` raises to (`fd_limit`).
    pub max_connections: usize,
    /// Connections open at once from one address or IPv6 /64; peers in
    /// `trusted_proxies` are exempt.
    pub max_connections_per_ip: usize,
    /// Which header the trusted proxies write; the other one is never read
    /// (a client could send it through a proxy that only appends to its own).
    pub trusted_proxy_header: tessera_wire::forwarded::ProxyHeader,
    pub audit_retention: Duration,
    /// Outgoing mail through SMTP (`mail::smtp`); unset, the log mailer.
    pub smtp: Option<crate::mail::smtp::SmtpTarget>,
    /// The `From` of every message.
    pub mail_from: String,
    /// How long a password reset link works.
    pub password_reset_ttl: Duration,
    /// Mail a user after a password login from a device (User-Agent) the
    /// account has not used before (`core::devices`).
    pub notify_new_device: bool,
    /// Who may create their own account.
    pub registration: crate::core::registration::Registration,
    /// The domains self-registration is open to (empty: any).
    pub allowed_email_domains: Vec<crate::core::registration::DomainRule>,
    pub email_verification: crate::core::verification::EmailVerification,
    pub email_verification_ttl: Duration,
    pub invitation_ttl: Duration,
    /// The name the pages show (header, titles).
    pub product_name: String,
    /// The pages' header logo: an `https://` URL (its origin joins the
    /// pages' `img-src`) or a path on this server.
    pub logo_url: Option<String>,
    /// A separate listener for `/metrics` (then it is not on `addr`).
    pub metrics_addr: Option<SocketAddr>,
    pub log: String,
    pub log_format: LogFormat,
    /// Every setting's effective value and origin.
    pub effective: Vec<Effective>,
    /// `TESSERA_*` variables left out because Kubernetes set them for a
    /// Service named `tessera` ([`is_kubernetes_service_variable`]).
    pub kubernetes_variables: Vec<String>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("effective", &self.effective)
            .finish_non_exhaustive()
    }
}

/// A setting that cannot be used; its `Display` is the one line to print.
/// The binary exits with status 2 on it (as on a usage error): nothing ran,
/// and the fix is in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// How values from [`Flags`] are named in errors and `config show`.
const FLAG_LAYER: &str = "command-line flag";

/// The flags as a configuration layer named [`FLAG_LAYER`] (figment would
/// name it after the Rust type), so a value from it is reported as the flag
/// that gave it (`--addr`).
struct FlagLayer(Flags);

impl figment::Provider for FlagLayer {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named(FLAG_LAYER)
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        Serialized::defaults(&self.0).data()
    }
}

/// The protocols a Kubernetes Service port can have.
const SERVICE_PROTOCOLS: [&str; 3] = ["tcp", "udp", "sctp"];

/// Whether `name=value` is one of the variables Kubernetes puts in every
/// container of a namespace for a Service named `tessera` (the docker-link
/// style ones, `enableServiceLinks`), rather than a setting:
/// `TESSERA_SERVICE_HOST` (the cluster IP), `TESSERA_SERVICE_PORT` and
/// `TESSERA_SERVICE_PORT_<PORT NAME>` (port numbers), `TESSERA_PORT`
/// (`tcp://10.0.0.1:8080`), and for each port `TESSERA_PORT_<N>_<PROTO>`
/// (the same URL form), `…_PROTO` (`tcp`), `…_PORT` (`N`) and `…_ADDR` (the
/// cluster IP). The value must have the shape Kubernetes gives it too, so
/// `TESSERA_PORT=8080`, someone's guess at a setting (there is none named
/// `port`: the port is part of `addr`), is still refused as unknown.
pub fn is_kubernetes_service_variable(name: &str, value: &str) -> bool {
    let Some(rest) = name.strip_prefix("TESSERA_") else {
        return false;
    };
    let is_port = |s: &str| {
        !s.is_empty()
            && s.bytes().all(|b| b.is_ascii_digit())
            && s.parse::<u16>().is_ok_and(|p| p > 0)
    };
    let is_ip = |s: &str| s.parse::<std::net::IpAddr>().is_ok();
    // `<proto>://<cluster IP>:<port>` (an IPv6 address in brackets).
    let is_url = |s: &str, proto: &str, port: Option<&str>| {
        s.strip_prefix(proto)
            .and_then(|s| s.strip_prefix("://"))
            .and_then(|s| s.parse::<SocketAddr>().ok())
            .is_some_and(|a| a.port() > 0 && port.is_none_or(|p| a.port().to_string() == p))
    };
    match rest {
        "SERVICE_HOST" => is_ip(value),
        "SERVICE_PORT" => is_port(value),
        "PORT" => SERVICE_PROTOCOLS.iter().any(|p| is_url(value, p, None)),
        _ => {
            if let Some(port_name) = rest.strip_prefix("SERVICE_PORT_") {
                // A port's name (lower-case letters, digits, `-`), upper-cased
                // with `-` turned into `_`.
                return !port_name.is_empty()
                    && port_name
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
                    && is_port(value);
            }
            let Some(port) = rest.strip_prefix("PORT_") else {
                return false;
            };
            let mut parts = port.splitn(3, '_');
            let (Some(number), Some(proto)) = (parts.next(), parts.next()) else {
                return false;
            };
            let Some(proto) = SERVICE_PROTOCOLS
                .iter()
                .find(|p| p.to_ascii_uppercase() == proto)
            else {
                return false;
            };
            if !is_port(number) {
                return false;
            }
            match parts.next() {
                None => is_url(value, proto, Some(number)),
                Some("PROTO") => value == *proto,
                Some("PORT") => value == number,
                Some("ADDR") => is_ip(value),
                Some(_) => false,
            }
        }
    }
}

/// The names of the `vars` (the process's environment) that Kubernetes set
/// for a Service named `tessera`, sorted: left out of the settings. A name
/// that is a setting's is never left out.
fn kubernetes_variables(
    vars: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Vec<String> {
    let mut names: Vec<String> = vars
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
        .filter(|(name, value)| {
            let key = name
                .strip_prefix("TESSERA_")
                .unwrap_or_default()
                .to_ascii_lowercase();
            !SETTINGS.iter().any(|(k, _, _)| *k == key)
                && is_kubernetes_service_variable(name, value)
        })
        .map(|(name, _)| name)
        .collect();
    names.sort();
    names
}

/// Values given on the command line (highest precedence).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Flags {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
}

impl Settings {
    /// Reads every layer. `config_file` is `--config`; without it
    /// `./tessera.toml` is used when present.
    pub fn load(config_file: Option<&Path>, flags: &Flags) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        match config_file {
            Some(path) => {
                if !path.is_file() {
                    return Err(ConfigError(format!(
                        "--config {}: no such file",
                        path.display()
                    )));
                }
                figment = figment.merge(Toml::file_exact(path));
            }
            None => figment = figment.merge(Toml::file("tessera.toml")),
        }
        let kubernetes = kubernetes_variables(std::env::vars_os());
        let skipped: Vec<String> = kubernetes
            .iter()
            .map(|name| name["TESSERA_".len()..].to_owned())
            .collect();
        let figment = figment
            .merge(
                Env::prefixed("TESSERA_")
                    .filter(move |key| !skipped.iter().any(|s| s.as_str() == key)),
            )
            .merge(FlagLayer(flags.clone()));
        let mut settings = Self::from_figment(&figment)?;
        settings.kubernetes_variables = kubernetes;
        Ok(settings)
    }

    /// Settings from explicit key/value pairs over the defaults (for tests and
    /// embedding); no file or environment is read.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Result<Self, ConfigError> {
        let map: BTreeMap<&str, &str> = pairs.iter().copied().collect();
        Self::from_figment(&Figment::from(Serialized::defaults(map)))
    }

    pub fn from_figment(figment: &Figment) -> Result<Self, ConfigError> {
        let values: BTreeMap<String, Value> = figment.extract().map_err(|e| {
            ConfigError(format!(
                "configuration cannot be read: {}",
                without_source_lines(&e.to_string())
            ))
        })?;
        let raw = Raw {
            figment,
            values,
            seen: std::cell::RefCell::new(Vec::new()),
        };
        raw.check_known_keys()?;

        let addr: SocketAddr = raw.parse("addr", "127.0.0.1:8080", |s| s.parse().ok())?;
        let default_public = format!("http://localhost:{}", addr.port());
        let public_url = raw.parse("public_url", &default_public, parse_public_url)?;
        let database_url = raw.parse("database_url", "sqlite://tessera.db", parse_database_url)?;
        let database_pool_size = raw.parse("database_pool_size", "16", range(1, 1000))?;
        let database_statement_timeout = raw.parse("database_statement_timeout", "5s", |s| {
            // PostgreSQL counts milliseconds, and 0 there means no limit.
            parse_duration(s)
                .filter(|d| (Duration::from_millis(1)..=Duration::from_secs(600)).contains(d))
        })?;
        let revocation_max_staleness = raw.parse("revocation_max_staleness", "5s", |s| {
            parse_duration(s)
                .filter(|d| (Duration::from_secs(1)..=Duration::from_secs(600)).contains(d))
        })?;
        let redis_url = match raw.text("redis_url").filter(|t| !t.trim().is_empty()) {
            None => None,
            Some(text) => match crate::store::redis::target::Target::parse(&text) {
                Ok(_) => Some(text.trim().to_owned()),
                Err(why) => {
                    return Err(raw.error(
                        "redis_url",
                        &text,
                        &format!(
                            "a Redis URL ({why}): redis:// or rediss://, cluster seed URLs \
                             comma-separated, or redis+sentinel://host:port/master_name"
                        ),
                    ));
                }
            },
        };
        let redis_key_prefix = raw.parse(
            "redis_key_prefix",
            crate::store::redis::DEFAULT_PREFIX,
            |s| {
                crate::store::redis::check_prefix(s)
                    .ok()
                    .map(|()| s.to_owned())
            },
        )?;
        let redis_tls = raw.redis_tls(redis_url.as_deref())?;
        let redis_timeout = raw.parse("redis_timeout", "1s", |s| {
            parse_duration(s)
                .filter(|d| (Duration::from_millis(10)..=Duration::from_secs(60)).contains(d))
        })?;
        // Any positive lifetime; only the relations between them are
        // enforced (idle ≤ absolute, touch < idle). A side the user did not
        // set follows the side they did, and only ever gets shorter than its
        // default: a default never lengthens a lifetime by itself. Two sides
        // the user set that conflict are refused, naming both.
        let absolute = raw.parse("session_absolute_timeout", "30d", |s| {
            parse_duration(s).filter(|d| {
                (Duration::from_secs(1)..=Duration::from_secs(400 * 86_400)).contains(d)
            })
        })?;
        let mut idle = raw.parse("session_idle_timeout", "2h", parse_duration)?;
        if idle > absolute {
            if raw.given("session_idle_timeout") {
                return Err(raw.conflict(
                    "session_idle_timeout",
                    "no longer than",
                    "session_absolute_timeout",
                ));
            }
            idle = absolute;
            raw.derived(
                "session_idle_timeout",
                idle,
                "at most session_absolute_timeout",
            );
        }
        let mut touch = raw.parse("session_touch_interval", "60s", parse_duration)?;
        if !raw.given("session_touch_interval") {
            // Activity is recorded at most this often, so a session in use
            // can idle out up to this much early: at most a tenth.
            if idle / 10 < touch {
                touch = idle / 10;
                raw.derived(
                    "session_touch_interval",
                    touch,
                    "a tenth of session_idle_timeout",
                );
            }
        } else if touch >= idle {
            return Err(raw.conflict(
                "session_touch_interval",
                "shorter than",
                "session_idle_timeout",
            ));
        }
        let cookie_secure = raw.parse("cookie_secure", "true", parse_bool)?;
        let cookie_samesite = raw.parse("cookie_samesite", "Lax", |s| {
            match s.to_ascii_lowercase().as_str() {
                "lax" => Some(SameSite::Lax),
                "strict" => Some(SameSite::Strict),
                "none" => Some(SameSite::None),
                _ => None,
            }
        })?;
        if cookie_samesite == SameSite::None && !cookie_secure {
            return Err(raw.error(
                "cookie_samesite",
                "None",
                "Lax or Strict when cookie_secure is false (browsers refuse SameSite=None without Secure)",
            ));
        }
        let token_alg = raw.parse("token_alg", "EdDSA", crate::core::keys::TokenAlg::parse)?;
        if matches!(
            raw.values.get("hs256_secret"),
            Some(Value::Dict(..) | Value::Array(..))
        ) {
            return Err(ConfigError(format!(
                "invalid setting TESSERA_HS256_SECRET (from {}): expected a string",
                raw.source("hs256_secret")
            )));
        }
        let hs256_secret = raw.text("hs256_secret").map(SecretSetting);
        raw.note(
            "hs256_secret",
            if hs256_secret.is_some() {
                "set"
            } else {
                "(unset)"
            },
            hs256_secret.is_some(),
        );
        match (&token_alg, &hs256_secret) {
            (crate::core::keys::TokenAlg::HS256, None) => {
                return Err(ConfigError(
                    "invalid setting TESSERA_HS256_SECRET: required (at least 32 bytes) when TESSERA_TOKEN_ALG is HS256".into(),
                ));
            }
            (_, Some(secret)) if secret.0.len() < 32 => {
                return Err(ConfigError(format!(
                    "invalid setting TESSERA_HS256_SECRET (from {}): it is {} bytes, expected at least 32",
                    raw.source("hs256_secret"),
                    secret.0.len()
                )));
            }
            _ => {}
        }
        let access_token_ttl = raw.parse("access_token_ttl", "10m", |s| {
            parse_duration(s).filter(|d| (1..=86_400).contains(&d.as_secs()))
        })?;
        let refresh_token_ttl = raw.parse("refresh_token_ttl", "30d", |s| {
            parse_duration(s).filter(|d| (1..=400 * 86_400).contains(&d.as_secs()))
        })?;
        let clock_leeway = raw.parse("clock_leeway", "60s", |s| {
            let d = if s.trim() == "0" {
                Duration::ZERO
            } else {
                humantime::parse_duration(s).ok()?
            };
            (d <= Duration::from_secs(300)).then_some(d)
        })?;
        let token_audience = raw.parse("token_audience", &public_url.url, |s| {
            (!s.is_empty() && s.len() <= 256 && !s.chars().any(char::is_control))
                .then(|| s.to_owned())
        })?;
        let key_rotation_interval = raw.parse("key_rotation_interval", "off", |s| {
            if s.eq_ignore_ascii_case("off") {
                Some(None)
            } else {
                parse_duration(s).map(Some)
            }
        })?;
        let browser_mode = raw.parse("browser_mode", "session", |s| {
            match s.to_ascii_lowercase().as_str() {
                "session" => Some(BrowserMode::Session),
                "jwt-cookie" => Some(BrowserMode::JwtCookie),
                _ => None,
            }
        })?;
        let allowed_scopes = raw.parse("allowed_scopes", "", |s| {
            let scopes: Vec<String> = s
                .split([' ', ','])
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect();
            scopes
                .iter()
                .all(|x| crate::core::tokens::is_scope_token(x))
                .then_some(scopes)
        })?;
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let hash_threads = raw.parse("hash_threads", &cores.to_string(), range(1, 256))?;
        let max_connections = raw.parse(
            "max_connections",
            &crate::fd_limit::default_max_connections(
                crate::fd_limit::attainable(),
                database_pool_size,
            )
            .to_string(),
            range(1, 1_000_000),
        )?;
        let max_connections_per_ip = raw.parse(
            "max_connections_per_ip",
            &crate::fd_limit::default_max_connections_per_ip(max_connections).to_string(),
            range(1, 1_000_000),
        )?;
        let mail_from_default = default_mail_from(&public_url);
        let settings = Settings {
            addr,
            public_url,
            database_url,
            database_pool_size,
            database_statement_timeout,
            revocation_max_staleness,
            redis_url,
            redis_key_prefix,
            redis_tls,
            redis_timeout,
            session_idle_timeout: idle,
            session_absolute_timeout: absolute,
            session_touch_interval: touch,
            cookie_secure,
            cookie_samesite,
            session_cache_entries: raw.parse(
                "session_cache_entries",
                "100000",
                range(0, 100_000_000),
            )?,
            user_cache_entries: raw.parse("user_cache_entries", "100000", range(1, 100_000_000))?,
            argon2_memory_kib: raw.parse("argon2_memory_kib", "19456", range(7168, 4_194_304))?,
            argon2_iterations: raw.parse("argon2_iterations", "2", range(1, 20))?,
            argon2_parallelism: raw.parse("argon2_parallelism", "1", range(1, 16))?,
            hash_threads,
            hash_queue: raw.parse(
                "hash_queue",
                &(16 * hash_threads).to_string(),
                range(1, 100_000),
            )?,
            token_alg,
            hs256_secret,
            access_token_ttl,
            refresh_token_ttl,
            clock_leeway,
            token_audience,
            key_rotation_interval,
            browser_mode,
            allowed_scopes,
            max_sessions_per_user: raw.parse("max_sessions_per_user", "100", range(1, 100_000))?,
            public_clients: raw.parse("public_clients", "", |s| {
                let ids: Vec<String> = s
                    .split([' ', ','])
                    .filter(|x| !x.is_empty())
                    .map(str::to_owned)
                    .collect();
                ids.iter()
                    .all(|id| crate::core::refresh::is_public_client_id(id))
                    .then_some(ids)
            })?,
            cors_origins: raw.parse("cors_origins", "", |s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|o| !o.is_empty())
                    .map(parse_origin)
                    .collect::<Option<Vec<_>>>()
            })?,
            token_cache_entries: raw.parse(
                "token_cache_entries",
                "100000",
                range(1, 100_000_000),
            )?,
            ip_rate_limit: raw.parse("ip_rate_limit", "30", range(0, 100_000))?,
            login_failure_threshold: raw.parse("login_failure_threshold", "5", range(1, 100))?,
            login_backoff_max: raw.parse("login_backoff_max", "15m", |s| {
                parse_duration(s).filter(|d| d.as_secs() <= 86_400)
            })?,
            trusted_proxies: raw.parse("trusted_proxies", "", parse_networks)?,
            return_origins: raw.parse("return_origins", "", |s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|o| !o.is_empty())
                    .map(parse_origin)
                    .collect::<Option<Vec<_>>>()
            })?,
            max_connections,
            max_connections_per_ip,
            trusted_proxy_header: raw.parse("trusted_proxy_header", "X-Forwarded-For", |s| {
                use tessera_wire::forwarded::ProxyHeader;
                match s.to_ascii_lowercase().as_str() {
                    "x-forwarded-for" => Some(ProxyHeader::XForwardedFor),
                    "forwarded" => Some(ProxyHeader::Forwarded),
                    _ => None,
                }
            })?,
            audit_retention: raw.parse("audit_retention", "90d", |s| {
                parse_duration(s).filter(|d| d.as_secs() <= 3650 * 86_400)
            })?,
            smtp: raw.parse("smtp_url", "", |s| {
                if s.is_empty() {
                    Some(None)
                } else {
                    crate::mail::smtp::SmtpTarget::parse(s).ok().map(Some)
                }
            })?,
            mail_from: raw.parse("mail_from", &mail_from_default, |s| {
                crate::mail::smtp::check_mailbox(s)
                    .ok()
                    .map(|()| s.to_owned())
            })?,
            password_reset_ttl: raw.parse("password_reset_ttl", "30m", |s| {
                parse_duration(s)
                    .filter(|d| (Duration::from_secs(60)..=Duration::from_secs(86_400)).contains(d))
            })?,
            notify_new_device: raw.parse("notify_new_device", "false", parse_bool)?,
            registration: raw.parse(
                "registration",
                "open",
                crate::core::registration::Registration::parse,
            )?,
            allowed_email_domains: raw.parse("allowed_email_domains", "", |s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|d| !d.is_empty())
                    .map(crate::core::registration::DomainRule::parse)
                    .collect::<Option<Vec<_>>>()
            })?,
            email_verification: raw.parse(
                "email_verification",
                "optional",
                crate::core::verification::EmailVerification::parse,
            )?,
            email_verification_ttl: raw.parse("email_verification_ttl", "24h", |s| {
                parse_duration(s).filter(|d| {
                    (Duration::from_secs(3600)..=Duration::from_secs(30 * 86_400)).contains(d)
                })
            })?,
            invitation_ttl: raw.parse("invitation_ttl", "7d", |s| {
                parse_duration(s).filter(|d| {
                    (Duration::from_secs(3600)..=Duration::from_secs(90 * 86_400)).contains(d)
                })
            })?,
            product_name: raw.parse("product_name", "Tessera", |s| {
                (!s.is_empty() && s.chars().count() <= 60 && !s.chars().any(char::is_control))
                    .then(|| s.to_owned())
            })?,
            logo_url: raw.parse("logo_url", "", |s| {
                if s.is_empty() {
                    Some(None)
                } else {
                    crate::http::pages::check_logo_url(s).map(|()| Some(s.to_owned()))
                }
            })?,
            metrics_addr: raw.parse("metrics_addr", "", |s| {
                if s.is_empty() {
                    Some(None)
                } else {
                    s.parse().ok().map(Some)
                }
            })?,
            log: raw.parse("log", "info", |s| {
                tracing_subscriber::EnvFilter::try_new(s)
                    .ok()
                    .map(|_| s.to_owned())
            })?,
            log_format: raw.parse("log_format", "text", |s| {
                match s.to_ascii_lowercase().as_str() {
                    "text" => Some(LogFormat::Text),
                    "json" => Some(LogFormat::Json),
                    _ => None,
                }
            })?,
            effective: Vec::new(),
            kubernetes_variables: Vec::new(),
        };
        let mut settings = settings;
        settings.effective = raw.seen.take();
        Ok(settings)
    }

    /// Name of the session cookie: `__Host-` prefixed unless cookies are not
    /// `Secure` (plain-HTTP development), which the prefix would forbid.
    pub fn session_cookie_name(&self) -> &'static str {
        if self.cookie_secure {
            "__Host-tessera_session"
        } else {
            "tessera_session"
        }
    }

    /// Cookie names for the jwt-cookie browser mode.
    pub fn access_cookie_name(&self) -> &'static str {
        if self.cookie_secure {
            "__Host-tessera_access"
        } else {
            "tessera_access"
        }
    }

    pub fn refresh_cookie_name(&self) -> &'static str {
        if self.cookie_secure {
            "__Host-tessera_refresh"
        } else {
            "tessera_refresh"
        }
    }

    /// The `iss` of every token: the public URL.
    pub fn issuer(&self) -> &str {
        &self.public_url.url
    }

    /// Warnings about settings that are allowed but probably wrong.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.cookie_secure && !self.public_url.is_loopback {
            out.push(format!(
                "TESSERA_COOKIE_SECURE=false with public URL {}: session cookies will travel over plain HTTP",
                self.public_url.url
            ));
        }
        if self.cookie_secure && !self.public_url.is_https && !self.public_url.is_loopback {
            out.push(format!(
                "public URL {} is plain HTTP on a host other than localhost: browsers will not keep Tessera's Secure session cookie from it, so signing in from a browser will not stick; serve it over HTTPS (TLS at a proxy in front) and set TESSERA_PUBLIC_URL=https://…, or, for development only, set TESSERA_COOKIE_SECURE=false",
                self.public_url.url
            ));
        }
        out.extend(
            self.incompatibilities()
                .into_iter()
                .map(|(problem, fix)| format!("{problem}; {fix}")),
        );
        out
    }

    /// Settings that each load but do not go together: (what is wrong, the
    /// fix). Warnings, not errors: what runs is safe (an unused secret
    /// signs nothing), only not what the operator seems to expect.
    pub fn incompatibilities(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.hs256_secret.is_some() && self.token_alg != crate::core::keys::TokenAlg::HS256 {
            out.push((
                format!(
                    "TESSERA_HS256_SECRET is set (from {}) but TESSERA_TOKEN_ALG is {} (from {}): the secret is not used, tokens are signed with {} and HS256 tokens are not accepted",
                    self.source_of("hs256_secret"),
                    self.token_alg.as_str(),
                    self.source_of("token_alg"),
                    self.token_alg.as_str(),
                ),
                "unset TESSERA_HS256_SECRET, or set TESSERA_TOKEN_ALG=HS256 if services verify tokens with that secret".to_owned(),
            ));
        }
        out
    }

    /// Where `key`'s effective value came from (`default`, `TOML file
    /// /path`, the environment, `command-line flag --name`).
    pub fn source_of(&self, key: &str) -> &str {
        self.effective
            .iter()
            .find(|e| e.key == key)
            .map_or("default", |e| e.source.as_str())
    }
}

/// The merged layers, with where each value came from.
struct Raw<'a> {
    figment: &'a Figment,
    values: BTreeMap<String, Value>,
    seen: std::cell::RefCell<Vec<Effective>>,
}

impl Raw<'_> {
    fn check_known_keys(&self) -> Result<(), ConfigError> {
        for key in self.values.keys() {
            if !SETTINGS.iter().any(|(k, _, _)| k == key) {
                let source = self.source(key);
                let known = SETTINGS
                    .iter()
                    .map(|(k, _, _)| *k)
                    .collect::<Vec<_>>()
                    .join(", ");
                // A file key is named as it is written there.
                let named = if self.given_in_file(key) {
                    format!("key {key}")
                } else {
                    format!("setting {}", env_name(key))
                };
                let hint = if key == "port" {
                    " (the port is part of TESSERA_ADDR, e.g. 0.0.0.0:8080)"
                } else {
                    ""
                };
                return Err(ConfigError(format!(
                    "unknown {named} ({source}){hint}; known settings: {known}"
                )));
            }
        }
        Ok(())
    }

    /// Where `key`'s value came from, as the operator would look for it:
    /// `default`, `TOML file /etc/tessera/tessera.toml` (the whole path),
    /// the environment, or `command-line flag --addr`.
    fn source(&self, key: &str) -> String {
        let Some(m) = self.figment.find_metadata(key) else {
            return "default".to_owned();
        };
        match &m.source {
            _ if m.name == FLAG_LAYER => format!("{FLAG_LAYER} --{}", key.replace('_', "-")),
            Some(figment::Source::File(path)) => format!(
                "{} {}",
                m.name,
                std::path::absolute(path)
                    .unwrap_or_else(|_| path.clone())
                    .display()
            ),
            _ => m.name.to_string(),
        }
    }

    /// Whether `key`'s value came from a configuration file.
    fn given_in_file(&self, key: &str) -> bool {
        self.figment
            .find_metadata(key)
            .is_some_and(|m| matches!(m.source, Some(figment::Source::File(_))))
    }

    fn text(&self, key: &str) -> Option<String> {
        self.values.get(key).and_then(value_text)
    }

    fn error(&self, key: &str, got: &str, allowed: &str) -> ConfigError {
        let source = if self.values.contains_key(key) {
            self.source(key)
        } else {
            "default".to_owned()
        };
        ConfigError(format!(
            "invalid setting {} (from {source}): got {:?}, expected {allowed}",
            env_name(key),
            shown(key, got)
        ))
    }

    /// The Redis TLS files: each a readable PEM file of its kind, a client
    /// key only with its certificate, and only beside a URL that uses TLS
    /// (certificates for a plain connection would be silently unused).
    fn redis_tls(
        &self,
        redis_url: Option<&str>,
    ) -> Result<crate::store::redis::tls::TlsFiles, ConfigError> {
        use crate::store::redis::tls::TlsFiles;
        let path = |key: &str| {
            let text = self.text(key).filter(|t| !t.trim().is_empty());
            let default = SETTINGS
                .iter()
                .find(|(k, _, _)| *k == key)
                .map_or("(unset)", |(_, d, _)| d);
            self.note(key, text.as_deref().unwrap_or(default), text.is_some());
            text.map(|t| std::path::PathBuf::from(t.trim()))
        };
        let files = TlsFiles {
            ca_file: path("redis_tls_ca_file"),
            cert_file: path("redis_tls_cert_file"),
            key_file: path("redis_tls_key_file"),
        };
        let Some(first) = [
            "redis_tls_ca_file",
            "redis_tls_cert_file",
            "redis_tls_key_file",
        ]
        .into_iter()
        .find(|k| self.given(k)) else {
            return Ok(files);
        };
        let uses_tls = redis_url
            .and_then(|u| crate::store::redis::target::Target::parse(u).ok())
            .is_some_and(|t| t.uses_tls());
        if !uses_tls {
            return Err(ConfigError(format!(
                "invalid setting {} (from {}): Redis certificates need a TLS URL, and \
                 TESSERA_REDIS_URL {} (use rediss:// or rediss+sentinel://)",
                env_name(first),
                self.source(first),
                if redis_url.is_some() {
                    "does not use TLS"
                } else {
                    "is unset"
                }
            )));
        }
        files.load().map_err(|e| {
            ConfigError(format!(
                "invalid setting {} (from {}): {}",
                env_name(e.setting),
                self.source(e.setting),
                e.problem
            ))
        })?;
        Ok(files)
    }

    /// Whether the user set `key` (in any layer above the defaults).
    fn given(&self, key: &str) -> bool {
        self.text(key).is_some()
    }

    /// Records that `key`, which the user did not set, took `value` from
    /// another setting instead of its own default (`why`).
    fn derived(&self, key: &str, value: Duration, why: &str) {
        let mut seen = self.seen.borrow_mut();
        if let Some(e) = seen.iter_mut().find(|e| e.key == key) {
            e.value = humantime::format_duration(value).to_string();
            e.source = format!("default, {why}");
        }
    }

    /// `key` (which the user set) breaks `relation` to `other`: one line
    /// naming both, with their values and where each came from. When
    /// `other` is a default, the way out is to set it too.
    fn conflict(&self, key: &str, relation: &str, other: &str) -> ConfigError {
        let (value, source) = self
            .seen
            .borrow()
            .iter()
            .find(|e| e.key == other)
            .map(|e| (e.value.clone(), e.source.clone()))
            .unwrap_or_default();
        let other_env = env_name(other);
        let way_out = if self.given(other) {
            "change one of them".to_owned()
        } else {
            format!("a default is never lengthened to fit: set {other_env} too, or change this one")
        };
        let at = if source.starts_with("default") {
            format!("{value}, {source}")
        } else {
            format!("{value}, from {source}")
        };
        let got = self.text(key).unwrap_or_default();
        self.error(
            key,
            got.trim(),
            &format!("{relation} {other_env} ({at}); {way_out}"),
        )
    }

    /// Records the effective value of `key` (redacting secrets).
    fn note(&self, key: &str, text: &str, given: bool) {
        let Some((key, _, _)) = SETTINGS.iter().find(|(k, _, _)| *k == key) else {
            return;
        };
        // A default is never a secret: an unset secret shows as unset, not
        // as a redacted value that would suggest one is configured.
        let value = if given {
            shown(key, text)
        } else {
            text.to_owned()
        };
        let source = if given {
            self.source(key)
        } else {
            "default".to_owned()
        };
        self.seen
            .borrow_mut()
            .push(Effective { key, value, source });
    }

    fn parse<T>(
        &self,
        key: &str,
        default: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<T, ConfigError> {
        let given = self.text(key);
        let text = given.as_deref().unwrap_or(default).trim();
        self.note(key, text, given.is_some());
        parse(text).ok_or_else(|| {
            let allowed = SETTINGS
                .iter()
                .find(|(k, _, _)| *k == key)
                .map_or("a valid value", |(_, _, allowed)| allowed);
            self.error(key, text, allowed)
        })
    }
}

/// A setting's value as it may be printed: secrets redacted, URLs without
/// their passwords.
fn shown(key: &str, text: &str) -> String {
    match key {
        "hs256_secret" => "[redacted]".to_owned(),
        "database_url" => redact_url(text),
        "smtp_url" => crate::mail::smtp::SmtpTarget::parse(text)
            .map_or_else(|_| redact_url(text), |t| t.shown()),
        // One URL, or several (cluster seeds), each redacted.
        "redis_url" => shown_redis_url(text),
        _ => text.to_owned(),
    }
}

/// A Redis URL (one, or several comma-separated) without its passwords.
pub fn shown_redis_url(text: &str) -> String {
    text.split(',')
        .map(|u| redact_url(u.trim()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Query parameters that carry a password (libpq's and sqlx's names).
const PASSWORD_PARAMS: [&str; 2] = ["password", "sslpassword"];

/// A URL without any password in it, for logs, errors and `config show`:
/// the password of `user:password@` and of a `?password=` parameter become
/// `redacted`. A URL that does not parse loses everything before its last
/// `@` after the scheme (where a password would be).
pub fn redact_url(url: &str) -> String {
    let Ok(mut u) = url::Url::parse(url) else {
        return match (url.find("://"), url.rfind('@')) {
            (Some(scheme_end), Some(at)) if at > scheme_end => {
                format!("{}://[redacted]@{}", &url[..scheme_end], &url[at + 1..])
            }
            _ => url.to_owned(),
        };
    };
    let mut changed = false;
    if u.password().is_some() {
        let _ = u.set_password(Some("redacted"));
        changed = true;
    }
    if u.query_pairs()
        .any(|(k, _)| PASSWORD_PARAMS.contains(&k.as_ref()))
    {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if PASSWORD_PARAMS.contains(&k.as_ref()) {
                    "redacted".to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
        changed = true;
    }
    if changed {
        u.to_string()
    } else {
        url.to_owned()
    }
}

/// A database URL Tessera can open: `sqlite:` with a path, or a
/// `postgres://` / `postgresql://` URL that PostgreSQL's client accepts.
fn parse_database_url(s: &str) -> Option<String> {
    let usable = match crate::store::Kind::of(s).ok()? {
        crate::store::Kind::Sqlite => s.len() > "sqlite:".len(),
        crate::store::Kind::Postgres => crate::store::postgres::parse_url(s).is_ok(),
    };
    usable.then(|| s.to_owned())
}

fn env_name(key: &str) -> String {
    format!("TESSERA_{}", key.to_ascii_uppercase())
}

fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::String(_, s) => Some(s.clone()),
        Value::Char(_, c) => Some(c.to_string()),
        Value::Bool(_, b) => Some(b.to_string()),
        // figment's `Num::to_i128` is `None` for unsigned variants, and an
        // environment value such as "3" arrives as `U8`.
        Value::Num(_, n) => n
            .to_u128()
            .map(|u| u.to_string())
            .or_else(|| n.to_i128().map(|i| i.to_string()))
            .or_else(|| n.to_f64().map(|f| f.to_string())),
        Value::Empty(..) => None,
        Value::Dict(..) | Value::Array(..) => Some(format!("{v:?}")),
    }
}

/// A parse error's text without the lines of the file it quotes: a TOML
/// syntax error shows the offending line with a caret under it, and that
/// line may be `hs256_secret = "…`. Position and reason are kept.
fn without_source_lines(message: &str) -> String {
    let quoted = |line: &str| {
        let t = line.trim_start();
        t.starts_with('|')
            || t.split_once('|')
                .is_some_and(|(n, _)| !n.is_empty() && n.trim().bytes().all(|b| b.is_ascii_digit()))
    };
    message
        .lines()
        .filter(|l| !l.trim().is_empty() && !quoted(l))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(": ")
}

/// Durations in the contract's forms (`90s`, `10m`, `2h`, `30d`) or any
/// humantime form (`1h 30m`).
pub fn parse_duration(s: &str) -> Option<Duration> {
    tessera_wire::duration::parse(s)
}

/// `10.0.0.1, 192.168.0.0/16, ::1`: addresses or CIDR networks.
fn parse_networks(s: &str) -> Option<Vec<ipnet::IpNet>> {
    s.split([',', ' '])
        .filter(|x| !x.is_empty())
        .map(|x| {
            x.parse::<ipnet::IpNet>()
                .ok()
                .or_else(|| x.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
        })
        .collect()
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn range<T>(min: u64, max: u64) -> impl Fn(&str) -> Option<T>
where
    T: TryFrom<u64>,
{
    move |s| {
        let n: u64 = s.replace('_', "").parse().ok()?;
        if (min..=max).contains(&n) {
            T::try_from(n).ok()
        } else {
            None
        }
    }
}

/// `Tessera <noreply@HOST>` with the public URL's host (`localhost` when
/// that is an IP address, which a mailbox cannot end with).
fn default_mail_from(public_url: &PublicUrl) -> String {
    let host = url::Url::parse(&public_url.url)
        .ok()
        .and_then(|u| match u.host() {
            Some(url::Host::Domain(d)) => Some(d.to_ascii_lowercase()),
            _ => None,
        })
        .unwrap_or_else(|| "localhost".to_owned());
    format!("Tessera <noreply@{host}>")
}

/// `scheme://host[:port]` of an `http` or `https` URL: lowercase, the
/// default port left out, an international name in its ASCII form. `None`
/// for any other scheme, or a URL with a user name or password.
pub fn origin_of(url: &url::Url) -> Option<String> {
    if !matches!(url.scheme(), "http" | "https")
        || !url.username().is_empty()
        || url.password().is_some()
        || url.host().is_none()
    {
        return None;
    }
    Some(url.origin().ascii_serialization())
}

/// One `return_origins` entry: an origin and nothing more (no path, query,
/// credentials or wildcard), written as [`origin_of`] writes it.
fn parse_origin(s: &str) -> Option<String> {
    if s.contains(['*', '\\']) || s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return None;
    }
    let url = url::Url::parse(s).ok()?;
    let rest = s.split_once("://")?.1;
    if rest.contains(['/', '?', '#', '@']) {
        return None;
    }
    origin_of(&url)
}

fn parse_public_url(s: &str) -> Option<PublicUrl> {
    let url = url::Url::parse(s).ok()?;
    let is_https = match url.scheme() {
        "https" => true,
        "http" => false,
        _ => return None,
    };
    if url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return None;
    }
    let host = url.host_str()?.to_ascii_lowercase();
    let origin = match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    };
    let is_loopback = host == "localhost"
        || host.ends_with(".localhost")
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    Some(PublicUrl {
        url: s.trim_end_matches('/').to_owned(),
        origin,
        is_https,
        is_loopback,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_redacts_passwords_and_secrets() {
        let s = Settings::from_pairs(&[
            (
                "database_url",
                "postgres://tessera:db-pass-123@db.internal/tessera",
            ),
            ("redis_url", "redis://:redis-pass-456@cache.internal:6379"),
            ("smtp_url", "smtp://mailer:smtp-pass-789@mail.internal:587"),
            ("token_alg", "HS256"),
            (
                "hs256_secret",
                "an-hs256-secret-that-is-long-enough-0123456789",
            ),
        ])
        .unwrap();
        let shown = format!("{s:?}");
        for secret in [
            "db-pass-123",
            "redis-pass-456",
            "smtp-pass-789",
            "an-hs256-secret",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("db.internal"), "{shown}");
    }

    #[test]
    fn return_origins_are_bare_origins() {
        let s = Settings::from_pairs(&[(
            "return_origins",
            "https://App.Example.com, http://127.0.0.1:3000,https://x.example:443",
        )])
        .unwrap();
        assert_eq!(
            s.return_origins,
            [
                "https://app.example.com",
                "http://127.0.0.1:3000",
                "https://x.example"
            ]
        );
        assert!(Settings::from_pairs(&[]).unwrap().return_origins.is_empty());
        for bad in [
            "https://app.example.com/",
            "https://app.example.com/path",
            "https://*.example.com",
            "*",
            "https://app.example.com?x",
            "https://user@app.example.com",
            "ftp://app.example.com",
            "javascript:alert(1)",
            "app.example.com",
            "https://",
        ] {
            let e = Settings::from_pairs(&[("return_origins", bad)]).unwrap_err();
            assert!(e.0.contains("TESSERA_RETURN_ORIGINS"), "{bad}: {}", e.0);
        }
    }

    /// A syntax error on the secret's line quoted the line, and with it
    /// the secret, in the start-up error (found by fuzz/config).
    #[test]
    fn a_broken_config_file_is_reported_without_quoting_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tessera.toml");
        let secret = "kept-out-of-errors-0123456789abcdef";
        std::fs::write(
            &path,
            format!("token_alg = \"HS256\"\nhs256_secret = \"{secret}\n"),
        )
        .unwrap();
        let e = Settings::load(Some(&path), &Flags::default()).unwrap_err();
        assert!(!e.0.contains(secret), "{}", e.0);
        assert!(e.0.contains("line 2"), "the position is kept: {}", e.0);

        let e = Settings::from_figment(&Figment::from(Toml::string(&format!(
            "token_alg = \"HS256\"\nhs256_secret = [\"{secret}\"]"
        ))))
        .unwrap_err();
        assert!(e.0.contains("expected a string"), "{}", e.0);
        assert!(!e.0.contains(secret), "{}", e.0);
    }

    #[test]
    fn defaults_are_secure_and_complete() {
        let s = Settings::from_pairs(&[]).unwrap();
        assert_eq!(s.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(s.public_url.origin, "http://localhost:8080");
        assert_eq!(s.database_url, "sqlite://tessera.db");
        assert_eq!(s.session_idle_timeout, Duration::from_secs(7200));
        assert_eq!(s.session_absolute_timeout, Duration::from_secs(30 * 86_400));
        assert!(s.cookie_secure);
        assert_eq!(s.cookie_samesite, SameSite::Lax);
        assert_eq!(s.session_cookie_name(), "__Host-tessera_session");
        assert_eq!(
            (
                s.argon2_memory_kib,
                s.argon2_iterations,
                s.argon2_parallelism
            ),
            (19456, 2, 1)
        );
    }

    #[test]
    fn contract_duration_forms_parse() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(
            parse_duration("30d"),
            Some(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration("soon"), None);
    }

    /// Any positive duration is accepted (operators and test suites use
    /// short ones; `tessera doctor` warns about unusual ones), except where
    /// the value is counted in whole seconds and would round to nothing.
    #[test]
    fn short_durations_are_accepted() {
        let s = Settings::from_pairs(&[
            ("session_idle_timeout", "2s"),
            ("session_absolute_timeout", "5s"),
            ("access_token_ttl", "5s"),
            ("refresh_token_ttl", "10s"),
            ("key_rotation_interval", "90s"),
            ("audit_retention", "1h"),
            ("database_statement_timeout", "20ms"),
            ("login_backoff_max", "500ms"),
        ])
        .unwrap();
        assert_eq!(s.session_idle_timeout, Duration::from_secs(2));
        assert_eq!(s.session_absolute_timeout, Duration::from_secs(5));
        assert_eq!(s.access_token_ttl, Duration::from_secs(5));
        assert_eq!(s.refresh_token_ttl, Duration::from_secs(10));
        assert_eq!(s.key_rotation_interval, Some(Duration::from_secs(90)));
        assert_eq!(s.audit_retention, Duration::from_secs(3600));
        assert_eq!(s.database_statement_timeout, Duration::from_millis(20));
        // The touch interval's default follows a short idle timeout.
        assert_eq!(s.session_touch_interval, Duration::from_millis(200));
        let s = Settings::from_pairs(&[("session_idle_timeout", "2s")]).unwrap();
        assert_eq!(s.session_idle_timeout, Duration::from_secs(2));
        assert_eq!(s.session_absolute_timeout, Duration::from_secs(30 * 86_400));
        assert!(s.session_touch_interval < s.session_idle_timeout);
        // `exp` and cookie `Max-Age` count whole seconds: under 1s they
        // would be 0 (a token expired when issued, a cookie deleted).
        for key in [
            "access_token_ttl",
            "refresh_token_ttl",
            "session_absolute_timeout",
        ] {
            let e = Settings::from_pairs(&[(key, "500ms")]).unwrap_err();
            assert!(e.0.contains(&env_name(key)) && e.0.contains("1s"), "{e}");
        }
        // Zero is not a duration; "off" (any case) turns rotation off.
        for key in ["session_idle_timeout", "key_rotation_interval"] {
            let e = Settings::from_pairs(&[(key, "0s")]).unwrap_err();
            assert!(e.0.contains(&env_name(key)), "{e}");
        }
        for off in ["off", "OFF", " Off "] {
            let s = Settings::from_pairs(&[("key_rotation_interval", off)]).unwrap();
            assert_eq!(s.key_rotation_interval, None, "{off:?}");
        }
        let e = Settings::from_pairs(&[("key_rotation_interval", "never")]).unwrap_err();
        assert!(e.0.contains("off, or a duration"), "{e}");
    }

    /// A setting the user did not give follows the one they did (only ever
    /// shorter than its default), and says so in `config show`.
    #[test]
    fn defaults_follow_the_session_timeouts_the_user_set() {
        let s = Settings::from_pairs(&[("session_absolute_timeout", "1h")]).unwrap();
        assert_eq!(s.session_absolute_timeout, Duration::from_secs(3600));
        assert_eq!(s.session_idle_timeout, Duration::from_secs(3600));
        assert_eq!(s.session_touch_interval, Duration::from_secs(60));
        let idle = s
            .effective
            .iter()
            .find(|e| e.key == "session_idle_timeout")
            .unwrap();
        assert_eq!(idle.value, "1h");
        assert!(
            idle.source.contains("default") && idle.source.contains("session_absolute_timeout"),
            "{idle:?}"
        );
        let s = Settings::from_pairs(&[("session_absolute_timeout", "30s")]).unwrap();
        assert_eq!(s.session_idle_timeout, Duration::from_secs(30));
        assert_eq!(s.session_touch_interval, Duration::from_secs(3));
        // Unchanged where the defaults already fit.
        let s = Settings::from_pairs(&[("session_idle_timeout", "10m")]).unwrap();
        assert_eq!(s.session_touch_interval, Duration::from_secs(60));
    }

    /// Relations that must hold still do: when the user set both sides the
    /// one line names both settings, their values and where each came from;
    /// when one side is a default that would have to grow, it says to set
    /// that one too (defaults never lengthen a lifetime by themselves).
    #[test]
    fn conflicting_settings_are_refused_naming_both() {
        let e = Settings::from_pairs(&[
            ("session_idle_timeout", "3h"),
            ("session_absolute_timeout", "1h"),
        ])
        .unwrap_err();
        for needle in [
            "TESSERA_SESSION_IDLE_TIMEOUT",
            "TESSERA_SESSION_ABSOLUTE_TIMEOUT",
            "\"3h\"",
            "1h",
        ] {
            assert!(e.0.contains(needle), "{needle}: {e}");
        }
        assert!(!e.0.contains('\n'));
        let e = Settings::from_pairs(&[
            ("session_touch_interval", "2m"),
            ("session_idle_timeout", "1m"),
        ])
        .unwrap_err();
        assert!(
            e.0.contains("TESSERA_SESSION_TOUCH_INTERVAL")
                && e.0.contains("TESSERA_SESSION_IDLE_TIMEOUT"),
            "{e}"
        );
        let e = Settings::from_pairs(&[("session_idle_timeout", "31d")]).unwrap_err();
        assert!(
            e.0.contains("TESSERA_SESSION_IDLE_TIMEOUT")
                && e.0
                    .contains("TESSERA_SESSION_ABSOLUTE_TIMEOUT (30d, default)"),
            "{e}"
        );
        let e = Settings::from_pairs(&[("session_touch_interval", "3h")]).unwrap_err();
        assert!(
            e.0.contains("TESSERA_SESSION_TOUCH_INTERVAL")
                && e.0.contains("TESSERA_SESSION_IDLE_TIMEOUT (2h, default)"),
            "{e}"
        );
    }

    /// The finding as reported: `TESSERA_SESSION_ABSOLUTE_TIMEOUT=1h` alone
    /// must start, and a conflict between layers names both sources.
    #[test]
    #[allow(clippy::result_large_err)]
    fn an_absolute_timeout_alone_in_the_environment_loads() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TESSERA_SESSION_ABSOLUTE_TIMEOUT", "1h");
            let s = Settings::load(None, &Flags::default()).unwrap();
            assert_eq!(s.session_idle_timeout, Duration::from_secs(3600));
            jail.create_file("tessera.toml", "session_idle_timeout = \"2h\"\n")?;
            let e = Settings::load(None, &Flags::default()).unwrap_err();
            assert!(
                e.0.contains("TESSERA_SESSION_IDLE_TIMEOUT (from TOML file")
                    && e.0
                        .contains("TESSERA_SESSION_ABSOLUTE_TIMEOUT (1h, from `TESSERA_`"),
                "{e}"
            );
            Ok(())
        });
    }

    /// Redis certificates are refused without a TLS URL (they would go
    /// unused), and a file that is not what its setting needs is named
    /// with the setting and where it came from.
    #[test]
    #[allow(clippy::result_large_err)]
    fn redis_tls_files_need_a_tls_url_and_usable_files() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "ca.pem",
                "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
            )?;
            jail.create_file("junk.pem", "junk\n")?;
            jail.set_env("TESSERA_REDIS_TLS_CA_FILE", "ca.pem");
            let e = Settings::load(None, &Flags::default()).unwrap_err();
            assert!(
                e.0.contains("TESSERA_REDIS_TLS_CA_FILE (from `TESSERA_`")
                    && e.0.contains("TESSERA_REDIS_URL is unset"),
                "{e}"
            );
            jail.set_env("TESSERA_REDIS_URL", "redis://127.0.0.1:6379");
            let e = Settings::load(None, &Flags::default()).unwrap_err();
            assert!(e.0.contains("does not use TLS"), "{e}");
            jail.set_env("TESSERA_REDIS_URL", "rediss://127.0.0.1:6379");
            let s = Settings::load(None, &Flags::default()).unwrap();
            assert_eq!(
                s.redis_tls.ca_file.as_deref(),
                Some(std::path::Path::new("ca.pem"))
            );
            jail.create_file(
                "tessera.toml",
                "redis_tls_cert_file = \"junk.pem\"\nredis_tls_key_file = \"junk.pem\"\n",
            )?;
            let e = Settings::load(None, &Flags::default()).unwrap_err();
            assert!(
                e.0.contains("TESSERA_REDIS_TLS_CERT_FILE (from TOML file")
                    && e.0.contains("junk.pem holds no PEM CERTIFICATE block"),
                "{e}"
            );
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_the_setting_in_one_line() {
        let e = Settings::from_pairs(&[("session_idle_timeout", "soon")]).unwrap_err();
        assert!(e.0.contains("TESSERA_SESSION_IDLE_TIMEOUT"), "{e}");
        assert!(e.0.contains("90s"), "{e}");
        assert!(!e.0.contains('\n'));
        let e = Settings::from_pairs(&[("cookie_samesite", "sometimes")]).unwrap_err();
        assert!(
            e.0.contains("TESSERA_COOKIE_SAMESITE") && e.0.contains("Strict"),
            "{e}"
        );
        let e = Settings::from_pairs(&[("session_idle_timeout", "31d")]).unwrap_err();
        assert!(
            e.0.contains("no longer than TESSERA_SESSION_ABSOLUTE_TIMEOUT"),
            "{e}"
        );
        let e = Settings::from_pairs(&[("sesion_idle_timeout", "1h")]).unwrap_err();
        assert!(
            e.0.contains("unknown setting TESSERA_SESION_IDLE_TIMEOUT"),
            "{e}"
        );
        let e = Settings::from_pairs(&[("public_url", "ftp://example.com")]).unwrap_err();
        assert!(e.0.contains("TESSERA_PUBLIC_URL"), "{e}");
        let e = Settings::from_pairs(&[("argon2_memory_kib", "64")]).unwrap_err();
        assert!(e.0.contains("TESSERA_ARGON2_MEMORY_KIB"), "{e}");
    }

    #[test]
    fn postgres_urls_are_accepted_and_their_passwords_never_printed() {
        for url in [
            "postgres://tessera:s3cret@db.example.com:5432/tessera?sslmode=verify-full",
            "postgresql://tessera@127.0.0.1/tessera",
        ] {
            let s = Settings::from_pairs(&[("database_url", url)]).unwrap();
            assert_eq!(s.database_url, url);
            let shown = s
                .effective
                .iter()
                .find(|e| e.key == "database_url")
                .unwrap();
            assert!(!shown.value.contains("s3cret"), "{}", shown.value);
        }
        // Refused URLs are echoed without their password too.
        for bad in [
            "postgres://tessera:s3cret@db.example.com:5432/tessera?sslmode=sometimes",
            "postgres://tessera:s3cret@db.example.com:notaport/tessera",
            "mysql://tessera:s3cret@db.example.com/tessera",
            "postgres://db.example.com/tessera?password=s3cret&sslmode=sometimes",
        ] {
            let e = Settings::from_pairs(&[("database_url", bad)]).unwrap_err();
            assert!(e.0.contains("TESSERA_DATABASE_URL"), "{e}");
            assert!(e.0.contains("postgres://"), "{e}");
            assert!(!e.0.contains("s3cret"), "{e}");
        }
    }

    #[test]
    fn database_pool_and_timeout_have_defaults_and_bounds() {
        let s = Settings::from_pairs(&[]).unwrap();
        assert_eq!(s.database_pool_size, 16);
        assert_eq!(s.database_statement_timeout, Duration::from_secs(5));
        let s = Settings::from_pairs(&[
            ("database_pool_size", "1000"),
            ("database_statement_timeout", "250ms"),
        ])
        .unwrap();
        assert_eq!(s.database_pool_size, 1000);
        assert_eq!(s.database_statement_timeout, Duration::from_millis(250));
        assert_eq!(s.revocation_max_staleness, Duration::from_secs(5));
        for (key, bad) in [
            ("revocation_max_staleness", "500ms"),
            ("revocation_max_staleness", "11m"),
            ("database_pool_size", "0"),
            ("database_pool_size", "1001"),
            ("database_statement_timeout", "500us"),
            ("database_statement_timeout", "11m"),
            ("database_statement_timeout", "soon"),
        ] {
            let e = Settings::from_pairs(&[(key, bad)]).unwrap_err();
            assert!(e.0.contains(&env_name(key)), "{e}");
        }
    }

    #[test]
    fn redacted_urls_keep_everything_but_the_password() {
        assert_eq!(
            redact_url("postgres://u:p%40ss@h:5432/db?sslmode=require"),
            "postgres://u:redacted@h:5432/db?sslmode=require"
        );
        assert_eq!(
            redact_url("postgresql://h/db?user=u&password=pw&sslmode=require"),
            "postgresql://h/db?user=u&password=redacted&sslmode=require"
        );
        assert_eq!(redact_url("sqlite://tessera.db"), "sqlite://tessera.db");
        assert_eq!(
            redact_url("postgres://u:pw@h:notaport/db"),
            "postgres://[redacted]@h:notaport/db"
        );
    }

    #[test]
    fn hs256_needs_a_long_secret_that_is_never_printed() {
        let e = Settings::from_pairs(&[("token_alg", "HS256")]).unwrap_err();
        assert!(e.0.contains("TESSERA_HS256_SECRET"), "{e}");
        let e =
            Settings::from_pairs(&[("token_alg", "HS256"), ("hs256_secret", "too-short-secret")])
                .unwrap_err();
        assert!(
            e.0.contains("at least 32") && !e.0.contains("too-short-secret"),
            "{e}"
        );
        let secret = "0123456789abcdef0123456789abcdef";
        let s = Settings::from_pairs(&[("token_alg", "HS256"), ("hs256_secret", secret)]).unwrap();
        assert!(!format!("{s:?}").contains(secret));
        let e = Settings::from_pairs(&[("access_token_ttl", "2d")]).unwrap_err();
        assert!(e.0.contains("TESSERA_ACCESS_TOKEN_TTL"), "{e}");
        let e = Settings::from_pairs(&[("token_alg", "none")]).unwrap_err();
        assert!(e.0.contains("EdDSA, ES256, RS256 or HS256"), "{e}");
    }

    #[test]
    fn mail_settings_are_checked_and_smtp_credentials_never_shown() {
        let s = Settings::from_pairs(&[]).unwrap();
        assert!(s.smtp.is_none());
        assert_eq!(s.mail_from, "Tessera <noreply@localhost>");
        assert_eq!(s.password_reset_ttl, Duration::from_secs(1800));
        let s = Settings::from_pairs(&[
            ("public_url", "https://Auth.Example.com"),
            ("smtp_url", "smtps://mailer:s3cr3t-pw@mail.example.com"),
            ("password_reset_ttl", "10m"),
        ])
        .unwrap();
        assert_eq!(s.mail_from, "Tessera <noreply@auth.example.com>");
        assert_eq!(s.password_reset_ttl, Duration::from_secs(600));
        let shown = s.effective.iter().find(|e| e.key == "smtp_url").unwrap();
        assert_eq!(shown.value, "smtps://[redacted]@mail.example.com:465");
        assert!(!format!("{s:?}").contains("s3cr3t-pw"));
        // A refused URL is named without its password.
        let e = Settings::from_pairs(&[("smtp_url", "smtpx://mailer:s3cr3t-pw@mail.example.com")])
            .unwrap_err();
        assert!(
            e.0.contains("TESSERA_SMTP_URL") && !e.0.contains("s3cr3t-pw"),
            "{e}"
        );
        let e = Settings::from_pairs(&[("mail_from", "not a mailbox")]).unwrap_err();
        assert!(e.0.contains("TESSERA_MAIL_FROM"), "{e}");
        let e = Settings::from_pairs(&[("password_reset_ttl", "2d")]).unwrap_err();
        assert!(e.0.contains("TESSERA_PASSWORD_RESET_TTL"), "{e}");
    }

    #[test]
    fn new_device_notices_are_off_unless_turned_on() {
        let s = Settings::from_pairs(&[]).unwrap();
        assert!(!s.notify_new_device);
        let shown = s
            .effective
            .iter()
            .find(|e| e.key == "notify_new_device")
            .unwrap();
        assert_eq!(shown.value, "false");
        for on in ["true", "on", "1", "yes"] {
            let s = Settings::from_pairs(&[("notify_new_device", on)]).unwrap();
            assert!(s.notify_new_device, "{on}");
        }
        let e = Settings::from_pairs(&[("notify_new_device", "sometimes")]).unwrap_err();
        assert!(e.0.contains("TESSERA_NOTIFY_NEW_DEVICE"), "{e}");
    }

    #[test]
    fn insecure_cookie_mode_drops_the_host_prefix_and_forbids_samesite_none() {
        let s = Settings::from_pairs(&[("cookie_secure", "false")]).unwrap();
        assert_eq!(s.session_cookie_name(), "tessera_session");
        assert!(
            Settings::from_pairs(&[("cookie_secure", "false"), ("cookie_samesite", "None")])
                .is_err()
        );
        let s = Settings::from_pairs(&[("cookie_samesite", "strict")]).unwrap();
        assert_eq!(s.cookie_samesite, SameSite::Strict);
    }

    #[test]
    fn public_url_origin_drops_default_ports_and_paths() {
        let p = parse_public_url("https://Auth.Example.com:443/base/").unwrap();
        assert_eq!(p.origin, "https://auth.example.com");
        assert!(p.is_https && !p.is_loopback);
        let p = parse_public_url("http://127.0.0.1:9000").unwrap();
        assert_eq!(p.origin, "http://127.0.0.1:9000");
        assert!(p.is_loopback);
        assert!(parse_public_url("https://example.com/?q=1").is_none());
    }

    /// Environment values that look like numbers or booleans reach figment
    /// as typed values; they must still take effect.
    #[test]
    #[allow(clippy::result_large_err)]
    fn numeric_and_boolean_environment_values_take_effect() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TESSERA_HASH_THREADS", "3");
            jail.set_env("TESSERA_IP_RATE_LIMIT", "0");
            jail.set_env("TESSERA_SESSION_CACHE_ENTRIES", "12345");
            jail.set_env("TESSERA_COOKIE_SECURE", "false");
            let s = Settings::load(None, &Flags::default()).unwrap();
            assert_eq!(s.hash_threads, 3);
            assert_eq!(s.ip_rate_limit, 0);
            assert_eq!(s.session_cache_entries, 12345);
            assert!(!s.cookie_secure);
            let shown = s
                .effective
                .iter()
                .find(|e| e.key == "hash_threads")
                .unwrap();
            assert_eq!(shown.value, "3");
            assert!(shown.source.contains("TESSERA_"), "{}", shown.source);
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn layers_override_in_order_file_env_flags() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "tessera.toml",
                "addr = \"127.0.0.1:9001\"\nsession_idle_timeout = \"1h\"\ncookie_secure = false\n",
            )?;
            jail.set_env("TESSERA_ADDR", "127.0.0.1:9002");
            let s = Settings::load(None, &Flags::default()).unwrap();
            assert_eq!(s.addr.port(), 9002);
            assert_eq!(s.session_idle_timeout, Duration::from_secs(3600));
            assert!(!s.cookie_secure);
            let flags = Flags {
                addr: Some("127.0.0.1:9003".into()),
                ..Flags::default()
            };
            let s = Settings::load(None, &flags).unwrap();
            assert_eq!(s.addr.port(), 9003);
            assert_eq!(s.public_url.origin, "http://localhost:9003");
            let shown = |key: &str| s.effective.iter().find(|e| e.key == key).unwrap().clone();
            assert_eq!(shown("addr").source, "command-line flag --addr");
            let file = shown("session_idle_timeout").source;
            assert!(
                file.starts_with("TOML file /") && file.ends_with("/tessera.toml"),
                "{file}"
            );
            Ok(())
        });
    }

    #[test]
    fn kubernetes_service_variables_are_recognised_by_name_and_value() {
        for (name, value) in [
            ("TESSERA_SERVICE_HOST", "10.96.0.10"),
            ("TESSERA_SERVICE_HOST", "fd00::10"),
            ("TESSERA_SERVICE_PORT", "8080"),
            ("TESSERA_SERVICE_PORT_HTTP", "8080"),
            ("TESSERA_SERVICE_PORT_METRICS_2", "9090"),
            ("TESSERA_PORT", "tcp://10.96.0.10:8080"),
            ("TESSERA_PORT", "udp://[fd00::10]:53"),
            ("TESSERA_PORT_8080_TCP", "tcp://10.96.0.10:8080"),
            ("TESSERA_PORT_53_UDP", "udp://10.96.0.10:53"),
            ("TESSERA_PORT_36412_SCTP", "sctp://10.96.0.10:36412"),
            ("TESSERA_PORT_8080_TCP_PROTO", "tcp"),
            ("TESSERA_PORT_8080_TCP_PORT", "8080"),
            ("TESSERA_PORT_8080_TCP_ADDR", "10.96.0.10"),
        ] {
            assert!(
                is_kubernetes_service_variable(name, value),
                "{name}={value}"
            );
        }
        for (name, value) in [
            // A real setting's name is never one of them.
            ("TESSERA_ADDR", "tcp://10.96.0.10:8080"),
            // The right names with values Kubernetes never gives them.
            ("TESSERA_PORT", "8080"),
            ("TESSERA_PORT", "http://10.96.0.10:8080"),
            ("TESSERA_SERVICE_HOST", "tessera.default.svc"),
            ("TESSERA_SERVICE_PORT", "0"),
            ("TESSERA_SERVICE_PORT_HTTP", "http"),
            ("TESSERA_PORT_8080_TCP", "tcp://10.96.0.10:9090"),
            ("TESSERA_PORT_8080_TCP_PROTO", "udp"),
            ("TESSERA_PORT_8080_TCP_PORT", "9090"),
            ("TESSERA_PORT_8080_TCP_ADDR", "localhost"),
            // Shapes that are not Kubernetes'.
            ("TESSERA_PORT_8080_HTTP", "tcp://10.96.0.10:8080"),
            ("TESSERA_PORT_8080_tcp", "tcp://10.96.0.10:8080"),
            ("TESSERA_PORT_HTTP_TCP", "tcp://10.96.0.10:8080"),
            ("TESSERA_PORT_8080_TCP_HOST", "10.96.0.10"),
            ("TESSERA_SERVICE_PORT_", "8080"),
            ("TESSERA_SERVICE_PORT_http", "8080"),
            ("TESSERA_SERVICE_HOSTNAME", "10.96.0.10"),
            ("TESSERA_METRICS_SERVICE_HOST", "10.96.0.11"),
            ("OTHER_SERVICE_HOST", "10.96.0.10"),
        ] {
            assert!(
                !is_kubernetes_service_variable(name, value),
                "{name}={value}"
            );
        }
        // No setting can be shadowed: a variable named like a setting is
        // always read as that setting.
        for (key, _, _) in SETTINGS {
            let name = env_name(key);
            let vars = [(name.clone().into(), "tcp://10.96.0.10:8080".into())];
            assert!(kubernetes_variables(vars.into_iter()).is_empty(), "{name}");
        }
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn kubernetes_service_variables_are_left_out_and_listed() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TESSERA_PORT", "tcp://10.96.0.10:8080");
            jail.set_env("TESSERA_SERVICE_HOST", "10.96.0.10");
            jail.set_env("TESSERA_PORT_8080_TCP_ADDR", "10.96.0.10");
            let s = Settings::load(None, &Flags::default()).unwrap();
            assert_eq!(
                s.kubernetes_variables,
                [
                    "TESSERA_PORT",
                    "TESSERA_PORT_8080_TCP_ADDR",
                    "TESSERA_SERVICE_HOST"
                ]
            );
            jail.set_env("TESSERA_SESION_IDLE_TIMEOUT", "1h");
            let e = Settings::load(None, &Flags::default()).unwrap_err();
            assert!(
                e.0.contains("unknown setting TESSERA_SESION_IDLE_TIMEOUT"),
                "{e}"
            );
            Ok(())
        });
    }

    #[test]
    fn unset_secrets_show_as_unset_and_a_stray_hs256_secret_is_reported() {
        let s = Settings::from_pairs(&[]).unwrap();
        let secret = s
            .effective
            .iter()
            .find(|e| e.key == "hs256_secret")
            .unwrap();
        assert_eq!(secret.value, "(unset)");
        assert!(s.incompatibilities().is_empty());
        let key = "0123456789abcdef0123456789abcdef";
        let s = Settings::from_pairs(&[("token_alg", "ES256"), ("hs256_secret", key)]).unwrap();
        let found = s.incompatibilities();
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].0.contains("TESSERA_HS256_SECRET") && found[0].0.contains("ES256"),
            "{found:?}"
        );
        assert!(!format!("{found:?}").contains(key));
        assert!(
            s.warnings()
                .iter()
                .any(|w| w.contains("TESSERA_HS256_SECRET"))
        );
        let s = Settings::from_pairs(&[("token_alg", "HS256"), ("hs256_secret", key)]).unwrap();
        assert!(s.incompatibilities().is_empty());
    }
}
