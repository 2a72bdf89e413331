//! Wiring: settings → stores → core → router, and the server's lifecycle.

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::core::accounts::UserQuery;
use crate::core::clock::{Clock, SystemClock};
use crate::core::events::ChangeListener;
use crate::core::limits::LimitPolicy;
use crate::core::passwords::{HashParams, PoolSize};
use crate::core::registration::AccountPolicy;
use crate::core::sessions::SessionPolicy;
use crate::core::tokens::TokenPolicy;
use crate::core::{CoreOptions, Tessera};
use crate::http::{self, AppState};
use crate::store::cache::{CachingSessionStore, CachingUserStore};
use crate::store::{SessionStore, StoreOptions, Stores};
use zeroize::Zeroizing;

/// A built application: the core, its stores and its router.
pub struct App {
    pub core: Arc<Tessera>,
    pub settings: Arc<Settings>,
    stores: Stores,
}

fn duration(d: std::time::Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

impl App {
    /// Opens (creating and migrating if needed) the store and builds the core,
    /// as the server does: a newly configured token algorithm gets its key.
    pub async fn open(settings: Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        Self::open_with(settings, clock, true).await
    }

    /// As [`App::open`] for CLI commands: they never switch the server's
    /// signing algorithm (only `tessera keys rotate` or a restarted server
    /// with the new setting does).
    pub async fn open_for_cli(settings: Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        Self::open_with(settings, clock, false).await
    }

    async fn open_with(
        settings: Settings,
        clock: Arc<dyn Clock>,
        switch_alg: bool,
    ) -> anyhow::Result<Self> {
        let store_options = StoreOptions {
            pool_size: settings.database_pool_size,
            statement_timeout: settings.database_statement_timeout,
            redis: settings
                .redis_url
                .as_ref()
                .map(|url| crate::store::redis::RedisOptions {
                    url: url.clone(),
                    key_prefix: settings.redis_key_prefix.clone(),
                    tls: settings.redis_tls.clone(),
                    timeout: settings.redis_timeout,
                }),
            session_idle: settings.session_idle_timeout,
        };
        let stores = crate::store::open(&settings.database_url, &store_options)
            .await
            .with_context(|| {
                format!(
                    "cannot open the database {}",
                    crate::config::redact_url(&settings.database_url)
                )
            })?;
        let options = CoreOptions {
            sessions: SessionPolicy {
                idle: duration(settings.session_idle_timeout),
                absolute: duration(settings.session_absolute_timeout),
                touch_every: duration(settings.session_touch_interval),
                max_per_user: settings.max_sessions_per_user,
            },
            hash_params: HashParams {
                memory_kib: settings.argon2_memory_kib,
                iterations: settings.argon2_iterations,
                parallelism: settings.argon2_parallelism,
            },
            hash_pool: PoolSize {
                threads: settings.hash_threads,
                queue: settings.hash_queue,
            },
            tokens: TokenPolicy {
                issuer: settings.issuer().to_owned(),
                audience: settings.token_audience.clone(),
                access_ttl: duration(settings.access_token_ttl),
                refresh_ttl: duration(settings.refresh_token_ttl),
                leeway: duration(settings.clock_leeway),
                allowed_scopes: settings.allowed_scopes.clone(),
                public_clients: settings.public_clients.clone(),
                rotation_interval: settings.key_rotation_interval.map(duration),
            },
            token_alg: settings.token_alg,
            hs256_secret: settings
                .hs256_secret
                .as_ref()
                .map(|s| Zeroizing::new(s.0.as_bytes().to_vec())),
            token_cache_entries: settings.token_cache_entries,
            limits: LimitPolicy {
                ip_per_minute: settings.ip_rate_limit,
                failure_threshold: settings.login_failure_threshold,
                max_backoff: duration(settings.login_backoff_max),
            },
            audit_retention: duration(settings.audit_retention),
            revocation_max_staleness: settings.revocation_max_staleness,
            accounts: AccountPolicy {
                registration: settings.registration,
                allowed_email_domains: settings.allowed_email_domains.clone(),
                email_verification: settings.email_verification,
                verification_ttl: duration(settings.email_verification_ttl),
                invitation_ttl: duration(settings.invitation_ttl),
            },
        };
        sessions_where_the_servers_keep_them(&stores, &settings, clock.now(), switch_alg).await?;
        let (cached, listeners) = with_caches(stores.clone(), &settings);
        let core = Tessera::new(cached, listeners, clock, options)?;
        core.load_state(switch_alg)
            .await
            .context("cannot load signing keys and revocations")?;
        let core = Arc::new(core);
        start_mail(&core, &settings)?;
        Ok(Self {
            core,
            settings: Arc::new(settings),
            stores,
        })
    }

    pub fn router(&self) -> http::Endpoint {
        let state = AppState {
            core: Arc::clone(&self.core),
            settings: Arc::clone(&self.settings),
        };
        http::Endpoint::new(http::router(state.clone()), state)
    }

    /// Starts the change-log follower (cache coherence across processes).
    pub fn spawn_background(&self, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(Arc::clone(&self.core).follow_changes(cancel))
    }

    /// Closes the store's connections; later store calls fail (closed).
    pub async fn close(&self) {
        self.stores.backend.close().await;
    }
}

/// The outbox in front of the configured transport (SMTP, or the log
/// mailer), handed to the core with what links are built from.
fn start_mail(core: &Arc<Tessera>, settings: &Settings) -> anyhow::Result<()> {
    use crate::mail::{LogTransport, Outbox, Transport, smtp::SmtpTransport};
    let transport: Arc<dyn Transport> = match &settings.smtp {
        None => Arc::new(LogTransport {
            from: settings.mail_from.clone(),
        }),
        Some(target) => {
            Arc::new(SmtpTransport::new(target, &settings.mail_from).map_err(anyhow::Error::msg)?)
        }
    };
    let report = Arc::new(crate::core::links::CoreReport(Arc::downgrade(core)));
    core.set_mail(crate::core::links::MailSetup {
        outbox: Outbox::start(transport, report),
        public_url: settings.public_url.url.clone(),
        product: settings.product_name.clone(),
        reset_ttl: duration(settings.password_reset_ttl),
        notify_new_device: settings.notify_new_device,
    });
    Ok(())
}

/// The banner's line about mail: where it goes, never with credentials.
pub fn mail_banner(settings: &Settings) -> String {
    match &settings.smtp {
        None => format!(
            "mail: log (SMTP unset: each message, links included, is written to the log; set TESSERA_SMTP_URL to send it), from {}",
            settings.mail_from
        ),
        Some(target) => format!("mail: {} from {}", target.shown(), settings.mail_from),
    }
}

/// The deployment fact naming where sessions live: `database`, or `redis`
/// and the key prefix (never the URL: nodes may name Redis differently,
/// and URLs carry passwords).
const SESSIONS_STORE: &str = "sessions_store";

fn sessions_store(settings: &Settings) -> String {
    match &settings.redis_url {
        None => "database".to_owned(),
        Some(_) => format!("redis {}", settings.redis_key_prefix),
    }
}

/// A server records where it keeps sessions; any other command checks that
/// it keeps them in the same place, and stops if not. Without this, a
/// `tessera user revoke` run without `TESSERA_REDIS_URL` beside servers
/// that keep sessions in Redis would end sessions in the database (there
/// are none) and report success, while the user stayed signed in.
async fn sessions_where_the_servers_keep_them(
    stores: &Stores,
    settings: &Settings,
    now: time::OffsetDateTime,
    server: bool,
) -> anyhow::Result<()> {
    let here = sessions_store(settings);
    if server {
        let before = stores
            .keys
            .set_deployment_fact(SESSIONS_STORE, &here, now)
            .await?;
        if let Some(before) = before.filter(|b| *b != here) {
            tracing::warn!(
                "this database's servers kept sessions in {before}; this server keeps them in \
                 {here}: sessions kept there are not seen here (their users sign in again). \
                 Every node and command must have the same TESSERA_REDIS_URL and \
                 TESSERA_REDIS_KEY_PREFIX"
            );
        }
        return Ok(());
    }
    match stores.keys.deployment_fact(SESSIONS_STORE).await? {
        // A configuration mistake (exit status 2): nothing ran.
        Some(theirs) if theirs != here => Err(crate::config::ConfigError(format!(
            "the servers of this database keep sessions in {theirs}, this command in {here}: \
             it would miss every session. Run it with the servers' TESSERA_REDIS_URL and \
             TESSERA_REDIS_KEY_PREFIX{}",
            if theirs == "database" {
                " (unset both, as they do)"
            } else {
                ""
            }
        ))
        .into()),
        _ => Ok(()),
    }
}

/// Puts the bounded caches in front of the hot reads (sessions by hash,
/// users by id); the caches are returned as the change listeners that keep
/// them coherent.
///
/// `session_cache_entries = 0` means no session cache: the session store
/// is used as it is (every check reads it: one Redis round trip, or one
/// database query) and nothing needs keeping coherent for it.
fn with_caches(stores: Stores, settings: &Settings) -> (Stores, Vec<Arc<dyn ChangeListener>>) {
    let users = Arc::new(CachingUserStore::new(
        stores.users,
        settings.user_cache_entries,
    ));
    let mut listeners: Vec<Arc<dyn ChangeListener>> = vec![users.clone()];
    let sessions: Arc<dyn SessionStore> = if settings.session_cache_entries == 0 {
        stores.sessions
    } else {
        let cached = Arc::new(CachingSessionStore::new(
            stores.sessions,
            settings.session_cache_entries,
        ));
        listeners.insert(0, cached.clone());
        cached
    };
    let stores = Stores {
        sessions,
        users,
        ..stores
    };
    (stores, listeners)
}

/// The banner's lines for people: which address to open in a browser and,
/// when the listen address differs from the public URL, why the listen
/// address will not do (forms are accepted only from the public URL's
/// origin, see `http::csrf`).
fn browser_hint(listening: std::net::SocketAddr, public: &crate::config::PublicUrl) -> String {
    let listen = format!("http://{listening}");
    if url::Url::parse(&public.url).is_ok_and(|u| u.port() == Some(0)) {
        return format!(
            "the public URL {} names port 0, which no browser can open: set TESSERA_PUBLIC_URL \
             to the address browsers use (here http://localhost:{}), or listen on a fixed port",
            public.url,
            listening.port()
        );
    }
    let listen_origin = url::Url::parse(&listen).map(|u| u.origin().ascii_serialization());
    if listen_origin.is_ok_and(|o| o.eq_ignore_ascii_case(&public.origin)) {
        return format!("open {} in a browser", public.url);
    }
    format!(
        "open {} in a browser (the public URL)\n  \
         {listen}, the listen address, will not work for signing in from a browser: a page \
         opened there sends {listen} as its origin, and Tessera accepts forms only from pages at \
         its public URL (set TESSERA_PUBLIC_URL to change it)",
        public.url
    )
}

/// `tessera serve`: runs until SIGTERM or Ctrl-C, then drains in-flight
/// requests and stops.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    for warning in settings.warnings() {
        tracing::warn!("{warning}");
    }
    // Before anything opens files: every connection is one (`fd_limit`).
    let open_files = crate::fd_limit::raise();
    if let Some(files) = open_files
        && let Some(warning) = crate::fd_limit::shortfall(
            files.now.soft,
            settings.max_connections,
            settings.database_pool_size,
        )
    {
        tracing::warn!(
            "{warning}; lower TESSERA_MAX_CONNECTIONS or raise the hard limit (LimitNOFILE=, ulimit -Hn)"
        );
    }
    // The addresses first: a port in use (or not ours to take) stops
    // start-up before a database is created or migrated.
    let addr = settings.addr;
    let listener = TcpListener::bind(addr).await.with_context(|| {
        format!(
            "cannot listen on {addr} (TESSERA_ADDR, {}); nothing was created",
            settings.source_of("addr")
        )
    })?;
    let metrics_listener = match settings.metrics_addr {
        Some(metrics_addr) => Some(TcpListener::bind(metrics_addr).await.with_context(|| {
            format!(
                "cannot listen on {metrics_addr} (TESSERA_METRICS_ADDR, {}); nothing was created",
                settings.source_of("metrics_addr")
            )
        })?),
        None => None,
    };
    crate::store::migrate_reporting(&settings.database_url).await?;
    let app = App::open(settings, Arc::new(SystemClock)).await?;
    let local = listener.local_addr()?;
    let no_users = app
        .core
        .list_users(&UserQuery {
            limit: 1,
            ..UserQuery::default()
        })
        .await
        .map(|u| u.is_empty())
        .unwrap_or(false);
    let shutdown = shutdown_signal();
    eprintln!(
        "tessera listening on http://{local} (public URL {}), store {}",
        app.settings.public_url.url,
        crate::config::redact_url(&app.settings.database_url)
    );
    if let Some(redis) = &app.settings.redis_url {
        eprintln!(
            "sessions and the revocation push in Redis {} (key prefix {:?})",
            crate::config::shown_redis_url(redis),
            app.settings.redis_key_prefix
        );
    }
    eprintln!("{}", browser_hint(local, &app.settings.public_url));
    eprintln!("{}", mail_banner(&app.settings));
    let limits = crate::listener::Limits::from_settings(&app.settings);
    match open_files {
        Some(files) => eprintln!("{}; {files}", limits.describe()),
        None => eprintln!("{}", limits.describe()),
    }
    if no_users {
        eprintln!(
            "no users yet: create an admin with `tessera user create --email you@example.com --role admin`"
        );
    }
    let cancel = CancellationToken::new();
    let background = app.spawn_background(cancel.clone());
    let metrics = match metrics_listener {
        Some(listener) => {
            eprintln!("metrics on http://{}/metrics", listener.local_addr()?);
            let router = http::metrics_router(AppState {
                core: Arc::clone(&app.core),
                settings: Arc::clone(&app.settings),
            });
            let stop = cancel.clone();
            Some(tokio::spawn(crate::listener::serve_with(
                listener,
                router,
                crate::listener::Limits::metrics(),
                async move { stop.cancelled().await },
            )))
        }
        None => None,
    };
    let core = Arc::clone(&app.core);
    let shutdown = async move {
        shutdown.await;
        core.shutdown.cancel();
    };
    crate::listener::serve_with(listener, app.router(), limits, shutdown).await;
    cancel.cancel();
    let _ = background.await;
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    app.close().await;
    eprintln!("tessera stopped");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C. The handlers are installed when this is
/// called, not when the future is first polled, so a signal sent as soon as
/// the banner is printed already stops the server gracefully.
#[cfg(unix)]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let terminate = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        let wait = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
            match s {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = wait(terminate) => {},
            () = wait(interrupt) => {},
        }
        tracing::info!("shutting down: finishing requests in flight");
    }
}

#[cfg(not(unix))]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down: finishing requests in flight");
    }
}

#[cfg(test)]
mod tests {
    use super::browser_hint;

    #[test]
    fn the_banner_names_the_mailer_without_credentials() {
        let banner = |pairs: &[(&str, &str)]| {
            super::mail_banner(&crate::config::Settings::from_pairs(pairs).expect("settings"))
        };
        let log = banner(&[]);
        assert!(log.starts_with("mail: log (SMTP unset"), "{log}");
        let smtp = banner(&[("smtp_url", "smtp://u:s3cr3t-pw@mail.example.com:2525")]);
        assert_eq!(
            smtp,
            "mail: smtp://[redacted]@mail.example.com:2525 from Tessera <noreply@localhost>"
        );
    }

    fn hint(listen: &str, public_url: &str) -> String {
        let settings =
            crate::config::Settings::from_pairs(&[("public_url", public_url)]).expect("settings");
        browser_hint(listen.parse().expect("addr"), &settings.public_url)
    }

    #[test]
    fn the_banner_names_the_address_to_open_and_why_the_listen_address_will_not_do() {
        assert_eq!(
            hint("127.0.0.1:8080", "http://127.0.0.1:8080"),
            "open http://127.0.0.1:8080 in a browser"
        );
        assert_eq!(
            hint("127.0.0.1:80", "http://127.0.0.1/"),
            "open http://127.0.0.1 in a browser"
        );
        let differ = hint("127.0.0.1:8080", "http://localhost:8080");
        assert!(
            differ.starts_with("open http://localhost:8080 in a browser (the public URL)\n"),
            "{differ}"
        );
        assert!(
            differ.contains("http://127.0.0.1:8080, the listen address, will not work"),
            "{differ}"
        );
        let proxied = hint("[::]:8080", "https://auth.example.com");
        assert!(
            proxied.starts_with("open https://auth.example.com in a browser"),
            "{proxied}"
        );
        assert!(
            proxied.contains("http://[::]:8080, the listen address"),
            "{proxied}"
        );
        let zero = hint("127.0.0.1:41234", "http://localhost:0");
        assert!(zero.contains("names port 0"), "{zero}");
        assert!(zero.contains("http://localhost:41234"), "{zero}");
    }
}
