//! The command line: `serve` and account administration. Every command reads
//! the same configuration as `serve` and works while a server runs on the same
//! database (its caches learn of changes through the change log).

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use crate::app::{self, App};
use crate::config::{Flags, Settings};
use crate::core::accounts::UserQuery;
use crate::core::accounts::{NewAccount, Password, User, UserStatus};
use crate::core::clock::SystemClock;

#[derive(Debug, Parser)]
#[command(
    name = "tessera",
    version,
    about = "Sessions, JWTs and cookies done right"
)]
pub struct Cli {
    /// Configuration file (default: ./tessera.toml when present).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Database URL (overrides TESSERA_DATABASE_URL).
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (creates the database and schema if missing).
    Serve(ServeArgs),
    /// Create the database (SQLite) or schema (PostgreSQL) if missing and
    /// apply pending schema migrations, then exit. Other commands never
    /// create a database: they stop and say where they looked.
    Migrate,
    /// Manage user accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage service clients (callers of introspection and the revocation
    /// feed).
    #[command(subcommand)]
    Client(ClientCommand),
    /// Signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Work with tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Show the effective configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Sessions of every user (incident response).
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Check the configuration (and, with --url, a running server) against
    /// known pitfalls; exits 1 on danger.
    Doctor(DoctorArgs),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Write every matching audit event to standard output, oldest first
    /// (read from the database page by page, so any size of log streams).
    Export {
        /// Only events at or after this time: RFC 3339
        /// (2026-01-31T08:00:00Z) or a duration back from now (90m, 24h,
        /// 7d, 2w).
        #[arg(long, value_name = "TIME", value_parser = parse_since)]
        since: Option<Since>,
        /// Output format (CSV columns: id, at, type, user_id, ip,
        /// user_agent, detail as JSON).
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
        /// Only events of this type.
        #[arg(long = "type", value_name = "TYPE", value_parser = clap::builder::PossibleValuesParser::new(crate::core::audit::AUDIT_TYPES))]
        event_type: Option<String>,
    },
}

/// The output format of `audit export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated values with a header row.
    Csv,
}

/// `--since`: a moment, or a duration back from when the command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    At(time::OffsetDateTime),
    Ago(std::time::Duration),
}

/// Parses `--since`: RFC 3339, or a duration such as `24h` or `7d`.
fn parse_since(s: &str) -> Result<Since, String> {
    let s = s.trim();
    if let Ok(at) = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return Ok(Since::At(at));
    }
    humantime::parse_duration(s).map(Since::Ago).map_err(|_| {
        format!(
            "{s:?} is neither an RFC 3339 time (2026-01-31T08:00:00Z) nor a duration back from now (90m, 24h, 7d)"
        )
    })
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Also examine the server running at this URL: metadata, JWKS, clock,
    /// security headers (and, with --email, a login's cookie).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// With --url: sign in as this user to check the session cookie, then
    /// sign out again. Prompts for the password unless --password-stdin.
    #[arg(long, value_name = "EMAIL", requires = "url")]
    pub email: Option<String>,
    /// Read that password from the first line of standard input.
    #[arg(long, requires = "email")]
    pub password_stdin: bool,
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// Log everyone out: end every session and refresh-token family and cut
    /// off every access token issued until now, user by user (each audited
    /// as logout_all). Asks first unless --yes.
    RevokeAll {
        /// Do not ask for confirmation (required without a terminal).
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Every setting's effective value (secrets redacted) and its origin.
    Show,
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Create a service client; its secret is printed once and never again.
    Create {
        /// What the client is (e.g. the calling service's name), 1 to 100
        /// printable characters.
        name: String,
        /// Print `client_id`, `client_secret` and `name` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List service clients, oldest first, with their state.
    List {
        /// Print `{"clients": [{client_id, name, created_at, disabled}]}`
        /// (the shape of GET /v1/admin/clients).
        #[arg(long)]
        json: bool,
    },
    /// Disable a client: it fails authentication from its next request on,
    /// on every server (its secret is kept; `client enable` undoes this).
    Disable {
        /// The client's id (`cli_…`).
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Enable a disabled client again (with the secret it had).
    Enable {
        /// The client's id (`cli_…`).
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Delete a client for good: it fails authentication from its next
    /// request on, on every server.
    Delete {
        /// The client's id (`cli_…`).
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Give a client a new secret, printed once and never again; the old
    /// secret stops working at once (a disabled client stays disabled).
    RotateSecret {
        /// The client's id (`cli_…`).
        #[arg(value_name = "ID")]
        id: String,
        /// Print `client_id` and `client_secret` as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List signing keys and their status.
    List {
        /// Print `{"keys": [...]}` (the shape of GET /v1/admin/keys).
        #[arg(long)]
        json: bool,
    },
    /// Make a new signing key active now (running servers follow at once).
    Rotate {
        /// Also retire the previous keys at once (key compromise): tokens
        /// they signed are refused immediately instead of expiring.
        #[arg(long)]
        retire_previous: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Decode a JWT without trusting it, and lint it.
    Inspect {
        /// The token (or - to read it from standard input).
        token: String,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (overrides TESSERA_ADDR).
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: Option<String>,
    /// Public URL browsers use (overrides TESSERA_PUBLIC_URL).
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user; prompts for the password unless --password-stdin.
    Create {
        /// The new user's email (their login).
        #[arg(long)]
        email: String,
        /// A role to grant (repeatable).
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Print the created user as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List users.
    List {
        /// Only users whose email contains this text.
        #[arg(long, value_name = "TEXT")]
        query: Option<String>,
        /// Print `{"users": [...]}` (no header row).
        #[arg(long)]
        json: bool,
    },
    /// Suspend a user: every session ends and logins are refused.
    Suspend {
        /// The user's id (`usr_…`) or email (any case).
        #[arg(value_name = "ID|EMAIL")]
        id: String,
    },
    /// Reactivate a suspended user.
    Activate {
        /// The user's id (`usr_…`) or email (any case).
        #[arg(value_name = "ID|EMAIL")]
        id: String,
    },
    /// Replace a user's roles (none given: remove all roles).
    Roles {
        /// The user's id (`usr_…`) or email (any case).
        #[arg(value_name = "ID|EMAIL")]
        id: String,
        /// The roles the user has from now on (none: no roles).
        #[arg(value_name = "ROLE")]
        roles: Vec<String>,
    },
    /// Log a user out everywhere: every session, refresh token and earlier
    /// access token ends (like POST /v1/admin/users/{id}/revoke).
    Revoke {
        /// The user's id (`usr_…`) or email (any case).
        #[arg(value_name = "ID|EMAIL")]
        id: String,
    },
    /// Set a user's password (the current one is not needed): every
    /// session, refresh token and earlier access token of the user ends.
    /// Prompts twice unless --password-stdin.
    SetPassword {
        /// The user's id (`usr_…`) or email (any case).
        #[arg(value_name = "ID|EMAIL")]
        id: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Print a one-time password reset link for a user (for operators
    /// without mail): it works once, within password_reset_ttl, and is
    /// built from public_url. Give it to the user only.
    ResetLink {
        /// The user's id (`usr_…`) or email (any case).
        #[arg(value_name = "ID|EMAIL")]
        id: String,
    },
    /// Give a user a new email (their login from now on). The operator
    /// vouches for it: it is marked verified (a CLI process cannot count on
    /// mailing a link before it exits). Their earlier verification and
    /// reset links stop working.
    SetEmail {
        /// The user's id (`usr_…`) or current email (any case).
        #[arg(value_name = "ID|EMAIL")]
        id: String,
        /// The new email.
        #[arg(value_name = "NEW_EMAIL")]
        email: String,
    },
    /// Invite an email address to register (for `registration = invite`,
    /// though it works under any setting but `closed`): prints a one-time
    /// link, valid for invitation_ttl and built from public_url, that
    /// registers only this address, with these roles. Give it to them only.
    Invite {
        /// The address invited; only it can register with the link.
        email: String,
        /// A role the new account gets (repeatable).
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// Print `{"url": …, "expires_at": …}`.
        #[arg(long)]
        json: bool,
    },
    /// Delete a user for good: every session and token ends at once, the
    /// audit log keeps the id but loses the email, and the email can be
    /// registered again. Asks first unless --yes.
    Delete {
        /// The user's id (`usr_…`) or email (any case).
        #[arg(value_name = "ID|EMAIL")]
        id: String,
        /// Do not ask for confirmation (required without a terminal).
        #[arg(long)]
        yes: bool,
    },
}

impl Cli {
    pub fn flags(&self) -> Flags {
        let (addr, public_url) = match &self.command {
            Command::Serve(args) => (args.addr.clone(), args.public_url.clone()),
            _ => (None, None),
        };
        Flags {
            addr,
            public_url,
            database_url: self.database_url.clone(),
        }
    }

    pub fn is_serve(&self) -> bool {
        matches!(self.command, Command::Serve(_))
    }
}

/// Runs a parsed command with validated settings.
pub async fn run(cli: Cli, settings: Settings) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(_) => app::serve(settings).await,
        Command::Migrate => migrate(&settings).await,
        Command::Token(TokenCommand::Inspect { token }) => inspect_token(&token),
        Command::Config(ConfigCommand::Show) => show_config(&settings),
        Command::Doctor(args) => doctor(settings, args).await,
        command => {
            let app = open_app(settings).await?;
            let result = match command {
                Command::User(cmd) => run_user(&app, cmd).await,
                Command::Client(cmd) => run_client(&app, cmd).await,
                Command::Keys(cmd) => run_keys(&app, cmd).await,
                Command::Sessions(cmd) => run_sessions(&app, cmd).await,
                Command::Audit(cmd) => run_audit(&app, cmd).await,
                Command::Serve(_)
                | Command::Migrate
                | Command::Token(_)
                | Command::Config(_)
                | Command::Doctor(_) => Ok(()),
            };
            app.close().await;
            result
        }
    }
}

/// Opens the app for a command, reporting schema migrations on stderr.
/// The database must be there already, with Tessera's schema: only `serve`
/// and `migrate` create one (a command run from the wrong directory would
/// otherwise "succeed" on a new empty database the server never reads).
async fn open_app(settings: Settings) -> anyhow::Result<App> {
    require_database(&settings).await?;
    crate::store::migrate_reporting(&settings.database_url).await?;
    App::open_for_cli(settings, Arc::new(SystemClock)).await
}

/// Stops (a [`ConfigError`](crate::config::ConfigError): exit status 2)
/// unless the configured database exists and holds Tessera's schema; the
/// message says where this command looked, where that setting came from
/// and how to point the command at the right database.
async fn require_database(settings: &Settings) -> anyhow::Result<()> {
    use crate::store::Presence;
    let url = &settings.database_url;
    let shown = crate::config::redact_url(url);
    let from = match settings.source_of("database_url") {
        "default" => "the default".to_owned(),
        source => format!("from {source}"),
    };
    let setting = format!("TESSERA_DATABASE_URL={shown}, {from}");
    let found = crate::store::presence(url)
        .await
        .with_context(|| format!("checking the database ({setting})"))?;
    let postgres = crate::store::Kind::of(url) == Ok(crate::store::Kind::Postgres);
    // A relative SQLite path is read from the working directory.
    let relative = !postgres && {
        let path = url.trim_start_matches("sqlite:").trim_start_matches("//");
        let path = path.split('?').next().unwrap_or_default();
        !std::path::Path::new(path).is_absolute()
    };
    let cwd = match std::env::current_dir() {
        Ok(dir) if relative => format!(
            "; a relative path, read from the working directory {}",
            dir.display()
        ),
        _ => String::new(),
    };
    let mut start_anew = "tessera migrate".to_owned();
    let problem = match found {
        Presence::Ready => return Ok(()),
        Presence::NoDatabase(message) => {
            start_anew = "create the database (e.g. createdb), then tessera migrate".to_owned();
            format!(
                "no database {shown}: the server says {message} ({setting}). Nothing was created: Tessera never creates a PostgreSQL database"
            )
        }
        Presence::Missing(path) => format!(
            "no database at {} ({setting}{cwd}). Nothing was created: only `tessera serve` and `tessera migrate` create a database",
            path.display()
        ),
        Presence::NoSchema => {
            let at = match crate::store::sqlite::migrate::file_path(url) {
                Some(path) if !postgres => format!("the file {}", path.display()),
                _ => format!("the database {shown}"),
            };
            format!(
                "{at} has no Tessera schema: it is empty, or another program's ({setting}{cwd}). Nothing was changed: only `tessera serve` and `tessera migrate` create the schema"
            )
        }
    };
    let example = if postgres {
        "postgres://tessera@db.example.com/tessera"
    } else {
        "sqlite:///var/lib/tessera/tessera.db"
    };
    Err(crate::config::ConfigError(format!(
        "{problem}.\n  To reach the server's database, point this command at it: --database-url {example}, TESSERA_DATABASE_URL={example}, or --config FILE (the configuration the server reads).\n  To start a new one here on purpose: {start_anew}"
    ))
    .into())
}

/// `tessera migrate`: what `serve` does to the database before serving
/// (the first signing key is still made by `serve`, which knows the
/// algorithm the servers sign with).
async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let url = &settings.database_url;
    let created = match crate::store::presence(url).await? {
        crate::store::Presence::Missing(path) => Some(path),
        _ => None,
    };
    let applied = crate::store::migrate_reporting(url).await?;
    let shown = crate::config::redact_url(url);
    let mut out = std::io::stdout().lock();
    match (created, applied) {
        (Some(path), _) => writeln!(
            out,
            "created the database {} ({shown}): {applied} migrations applied",
            path.display()
        )?,
        (None, 0) => writeln!(out, "the database {shown} is up to date")?,
        (None, n) => writeln!(out, "the database {shown}: {n} migrations applied")?,
    }
    Ok(())
}

async fn run_sessions(app: &App, cmd: SessionsCommand) -> anyhow::Result<()> {
    let SessionsCommand::RevokeAll { yes } = cmd;
    let ids = crate::bulk::all_user_ids(app).await?;
    if ids.is_empty() {
        writeln!(std::io::stdout(), "no users: nothing to revoke")?;
        return Ok(());
    }
    if !yes {
        confirm(&format!(
            "This logs out all {} users: every session, refresh token and access token issued until now ends.",
            ids.len()
        ))?;
    }
    let actor = operator().label();
    crate::bulk::revoke_all(app, &actor, &ids, &mut std::io::stdout().lock()).await
}

/// Asks on the terminal; without one, refuses (the caller wants `--yes`).
fn confirm(what: &str) -> anyhow::Result<()> {
    confirm_or(what, "cancelled: nothing was revoked")
}

/// [`confirm`], saying `cancelled` when the answer is not "yes".
fn confirm_or(what: &str, cancelled: &str) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        bail!("{what} Refusing without confirmation: standard input is not a terminal; pass --yes");
    }
    eprint!("{what}\nType \"yes\" to continue: ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() != "yes" {
        bail!("{cancelled}");
    }
    Ok(())
}

async fn run_client(app: &App, cmd: ClientCommand) -> anyhow::Result<()> {
    use crate::http::api::admin_clients::ClientView;
    let core = &app.core;
    let actor = operator();
    let mut out = std::io::stdout().lock();
    match cmd {
        ClientCommand::Create { name, json } => {
            let new = core.create_client_by(Some(&actor), &name).await?;
            if json {
                serde_json::to_writer(
                    &mut out,
                    &serde_json::json!({
                        "client_id": new.client.id,
                        "client_secret": new.secret.expose(),
                        "name": new.client.name,
                    }),
                )?;
                writeln!(out)?;
            } else {
                writeln!(out, "client_id:     {}", new.client.id)?;
                writeln!(out, "client_secret: {}", new.secret.expose())?;
                writeln!(
                    out,
                    "Store the secret now: it is kept only as a hash and cannot be shown again."
                )?;
            }
        }
        ClientCommand::List { json } => {
            let clients = core.list_clients().await?;
            if json {
                let clients: Vec<ClientView> = clients.iter().map(ClientView::from).collect();
                serde_json::to_writer(&mut out, &serde_json::json!({ "clients": clients }))?;
                writeln!(out)?;
            } else {
                if clients.is_empty() {
                    eprintln!("no service clients (tessera client create NAME makes one)");
                }
                for c in &clients {
                    writeln!(
                        out,
                        "{}  {}  {:<8}  {}",
                        c.id,
                        crate::core::time::rfc3339(c.created_at),
                        if c.disabled() { "disabled" } else { "enabled" },
                        c.name
                    )?;
                }
            }
        }
        ClientCommand::Disable { id } => {
            let c = core.set_client_disabled(&actor, &id, true).await?;
            writeln!(
                out,
                "disabled {} ({}): it fails authentication from its next request on; `tessera client enable {}` undoes this",
                c.id, c.name, c.id
            )?;
        }
        ClientCommand::Enable { id } => {
            let c = core.set_client_disabled(&actor, &id, false).await?;
            writeln!(out, "enabled {} ({})", c.id, c.name)?;
        }
        ClientCommand::Delete { id } => {
            let c = core.delete_client(&actor, &id).await?;
            writeln!(
                out,
                "deleted {} ({}): it fails authentication from its next request on",
                c.id, c.name
            )?;
        }
        ClientCommand::RotateSecret { id, json } => {
            let new = core.rotate_client_secret(&actor, &id).await?;
            if json {
                serde_json::to_writer(
                    &mut out,
                    &serde_json::json!({
                        "client_id": new.client.id,
                        "client_secret": new.secret.expose(),
                    }),
                )?;
                writeln!(out)?;
            } else {
                writeln!(out, "client_id:     {}", new.client.id)?;
                writeln!(out, "client_secret: {}", new.secret.expose())?;
                writeln!(
                    out,
                    "The old secret no longer works. Store this one now: it is kept only as a hash and cannot be shown again."
                )?;
            }
        }
    }
    Ok(())
}

/// Events per page read by `audit export`.
const EXPORT_PAGE: u32 = 500;

/// `tessera audit export`: every matching event, oldest first, page by page
/// (a page is written out before the next is read).
async fn run_audit(app: &App, cmd: AuditCommand) -> anyhow::Result<()> {
    use crate::core::audit::AuditExportQuery;
    let AuditCommand::Export {
        since,
        format,
        event_type,
    } = cmd;
    let since = match since {
        None => None,
        Some(Since::At(at)) => Some(at),
        Some(Since::Ago(back)) => Some(
            time::Duration::try_from(back)
                .ok()
                .and_then(|back| app.core.now().checked_sub(back))
                .context("--since is too far back")?,
        ),
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if format == ExportFormat::Csv {
        writeln!(out, "id,at,type,user_id,ip,user_agent,detail")?;
    }
    let mut query = AuditExportQuery {
        event_type,
        since,
        after: None,
        limit: EXPORT_PAGE,
    };
    loop {
        let page = app.core.audit_export_page(&query).await?;
        for event in &page {
            match format {
                ExportFormat::Jsonl => {
                    serde_json::to_writer(&mut out, event)?;
                    writeln!(out)?;
                }
                ExportFormat::Csv => {
                    let fields = [
                        event.id.clone(),
                        crate::core::time::rfc3339(event.at),
                        event.event_type.clone(),
                        event.user_id.clone().unwrap_or_default(),
                        event.ip.clone().unwrap_or_default(),
                        event.user_agent.clone().unwrap_or_default(),
                        event.detail.to_string(),
                    ];
                    let row: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
                    writeln!(out, "{}", row.join(","))?;
                }
            }
        }
        out.flush()?;
        match page.last() {
            Some(last) if page.len() == EXPORT_PAGE as usize => {
                query.after = Some((last.at, last.id.clone()));
            }
            _ => return Ok(()),
        }
    }
}

/// One CSV field (RFC 4180): quoted when it holds a comma, a quote or a
/// line break, quotes doubled. A field a spreadsheet would run as a
/// formula (`=`, `+`, `-`, `@`, tab, carriage return first: user agents are
/// chosen by whoever sent the request) is prefixed with `'`.
fn csv_field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

/// Who runs a command, for the audit log: `cli` and, when the environment
/// names one (`USER`, else `LOGNAME`), the operating-system user.
fn operator() -> crate::core::clients::Actor {
    let name = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok();
    crate::core::clients::Actor::cli(name.as_deref())
}

async fn run_keys(app: &App, cmd: KeysCommand) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match cmd {
        KeysCommand::List { json } => {
            let keys = app.core.key_list().await?;
            if json {
                serde_json::to_writer(&mut out, &serde_json::json!({ "keys": keys }))?;
                writeln!(out)?;
            } else {
                for k in keys {
                    writeln!(
                        out,
                        "{}  {}  {}  {}",
                        k.kid,
                        k.alg,
                        crate::core::time::rfc3339(k.created_at),
                        k.status.as_str()
                    )?;
                }
            }
        }
        KeysCommand::Rotate { retire_previous } => {
            let actor = operator().label();
            let key = app
                .core
                .rotate_keys_with(Some(&actor), retire_previous)
                .await?;
            let earlier = if retire_previous {
                "earlier keys are retired: their tokens are refused now"
            } else {
                "earlier keys stay accepted until their tokens expire"
            };
            writeln!(out, "new active key {} ({}); {earlier}", key.kid, key.alg)?;
        }
    }
    Ok(())
}

fn show_config(settings: &Settings) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let width = settings
        .effective
        .iter()
        .map(|e| e.key.len())
        .max()
        .unwrap_or(0);
    for e in &settings.effective {
        writeln!(out, "{:<width$} = {:<30} # {}", e.key, e.value, e.source)?;
    }
    for warning in settings.warnings() {
        eprintln!("warning: {warning}");
    }
    if !settings.kubernetes_variables.is_empty() {
        eprintln!(
            "ignored {}: Kubernetes sets these for a Service named `tessera`; they are not settings",
            settings.kubernetes_variables.join(", ")
        );
    }
    Ok(())
}

/// Exit status 1 when something is dangerous (or the server at `--url`, or
/// Redis, cannot be reached).
async fn doctor(settings: Settings, args: DoctorArgs) -> anyhow::Result<()> {
    // A --url that is not one stops the doctor before any check runs (a
    // usage mistake: exit 2, as for a bad setting).
    if let Some(url) = &args.url {
        crate::doctor::remote::Target::parse(url)
            .map_err(|e| crate::config::ConfigError(format!("--url {e}")))?;
    }
    // Read the password before anything is printed or fetched.
    let credentials = match &args.email {
        Some(email) => Some(crate::doctor::probe::Credentials {
            email: email.clone(),
            password: if args.password_stdin {
                read_password_line()?
            } else {
                Password::new(
                    rpassword::prompt_password(format!("Password for {email}: ")).context(
                        "cannot prompt for a password (no terminal?); use --password-stdin",
                    )?,
                )
            },
        }),
        None => None,
    };
    let mut local = Vec::new();
    let not_yet = match crate::store::presence(&settings.database_url).await {
        Ok(crate::store::Presence::Missing(path)) => {
            Some(format!("no database at {}", path.display()))
        }
        Ok(crate::store::Presence::NoSchema) => Some(format!(
            "no Tessera schema in {}",
            crate::config::redact_url(&settings.database_url)
        )),
        Ok(crate::store::Presence::NoDatabase(message)) => Some(format!(
            "no database {} ({message})",
            crate::config::redact_url(&settings.database_url)
        )),
        // Not there or not reachable: opening it below says why.
        Ok(crate::store::Presence::Ready) | Err(_) => None,
    };
    let key_age = if let Some(not_yet) = not_yet {
        eprintln!("({not_yet} yet: key age and database clock not checked)");
        None
    } else {
        match open_app(settings.clone()).await {
            Ok(app) => {
                let now = app.core.now();
                let age = app
                    .core
                    .key_list()
                    .await
                    .ok()
                    .and_then(|keys| {
                        keys.into_iter()
                            .find(|k| k.status == crate::core::keys::KeyStatus::Active)
                    })
                    .and_then(|k| std::time::Duration::try_from(now - k.created_at).ok());
                // What re-keying emails left unresolved (a dry run: the
                // step itself already ran when the app was opened).
                let key_of = |email: &str| crate::core::accounts::email_key(email);
                match app
                    .core
                    .stores
                    .users
                    .rekey_emails(crate::store::rekey::EMAIL_KEYS_STEP, &key_of, false, now)
                    .await
                {
                    Ok(outcome) => {
                        local.extend(crate::doctor::accounts::email_key_findings(&outcome))
                    }
                    Err(e) => eprintln!("(could not check the stored email keys: {e})"),
                }
                app.close().await;
                if crate::store::Kind::of(&settings.database_url)
                    == Ok(crate::store::Kind::Postgres)
                {
                    match crate::store::postgres::facts::read(&settings.database_url).await {
                        Ok(facts) => local.extend(crate::doctor::database::postgres_findings(
                            &facts,
                            settings.database_pool_size,
                        )),
                        Err(e) => {
                            eprintln!("(could not read the PostgreSQL server's settings: {e:#})")
                        }
                    }
                }
                match crate::store::clock_skew(&settings.database_url).await {
                    Ok((skew, what)) => {
                        local.push(crate::doctor::clock_skew(what, skew, settings.clock_leeway))
                    }
                    Err(e) => eprintln!("(could not read the database's clock: {e:#})"),
                }
                age
            }
            // A database that is there but cannot be opened (down,
            // unreachable, refusing these credentials): nothing can run.
            Err(e) => {
                local.push(crate::doctor::Finding::new(
                    crate::inspect::Severity::Danger,
                    format!("the database cannot be opened: {e:#}"),
                    "check database_url (TESSERA_DATABASE_URL): that the database server runs, \
                     is reachable from this machine and accepts these credentials",
                ));
                None
            }
        }
    };
    let mut findings = crate::doctor::check(&settings, key_age);
    findings.extend(
        settings
            .incompatibilities()
            .into_iter()
            .map(|(problem, fix)| {
                crate::doctor::Finding::new(crate::inspect::Severity::Warning, problem, fix)
            }),
    );
    findings.extend(crate::doctor::connections(
        &settings,
        crate::fd_limit::attainable(),
    ));
    findings.extend(local);
    // The Redis that holds the sessions, when there is one.
    let redis = match &settings.redis_url {
        Some(url) => crate::doctor::redis::examine(url, &settings.redis_tls).await,
        None => crate::doctor::redis::RedisReport::default(),
    };
    findings.extend(redis.findings);
    let down = redis.unreachable.as_deref();
    let mut out = std::io::stdout().lock();
    if args.url.is_some() {
        writeln!(out, "configuration:")?;
    }
    print_findings(&mut out, &findings)?;
    let remote = match &args.url {
        Some(url) => {
            writeln!(out, "server at {url}:")?;
            out.flush()?;
            match crate::doctor::probe::examine(url, &settings, credentials).await {
                Ok(remote) => remote,
                Err(e) => {
                    // The summary says the server was not examined at all.
                    let server_down = format!("the server at {url} cannot be reached");
                    let both = match down {
                        Some(redis) => format!("{redis}; {server_down}"),
                        None => server_down,
                    };
                    print_summary(&mut out, &findings, Some(&both))?;
                    return Err(e);
                }
            }
        }
        None => Vec::new(),
    };
    print_findings(&mut out, &remote)?;
    findings.extend(remote);
    let dangers = print_summary(&mut out, &findings, down)?;
    if let Some(down) = down {
        anyhow::bail!("{dangers} dangerous finding(s); {down}");
    }
    if dangers > 0 {
        anyhow::bail!("{dangers} dangerous finding(s)");
    }
    Ok(())
}

fn print_findings(out: &mut impl Write, findings: &[crate::doctor::Finding]) -> anyhow::Result<()> {
    for f in findings {
        writeln!(out, "{:>7}: {}", f.severity.label(), f.problem)?;
        writeln!(out, "         fix: {}", f.fix)?;
    }
    Ok(())
}

/// Prints "N dangerous, M warnings" (and what could not be reached);
/// returns N.
fn print_summary(
    out: &mut impl Write,
    findings: &[crate::doctor::Finding],
    unreachable: Option<&str>,
) -> anyhow::Result<usize> {
    let count = |s| findings.iter().filter(|f| f.severity == s).count();
    let dangers = count(crate::inspect::Severity::Danger);
    let warnings = count(crate::inspect::Severity::Warning);
    match unreachable {
        Some(down) => writeln!(out, "{dangers} dangerous, {warnings} warnings; {down}")?,
        None => writeln!(out, "{dangers} dangerous, {warnings} warnings")?,
    }
    Ok(dangers)
}

fn inspect_token(token: &str) -> anyhow::Result<()> {
    let token = if token == "-" {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim().to_owned()
    } else {
        token.to_owned()
    };
    let found = crate::inspect::inspect(&token).map_err(|e| anyhow::anyhow!("not a JWT: {e}"))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "NOT VERIFIED: decoded without checking the signature.")?;
    writeln!(out, "header: {}", found.header)?;
    writeln!(
        out,
        "claims: {}",
        serde_json::to_string_pretty(&found.claims)?
    )?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for line in crate::inspect::time_claims(&found.claims, now) {
        writeln!(out, "{line}")?;
    }
    for lint in &found.lints {
        writeln!(out, "{:>7}: {}", lint.severity.label(), lint.message)?;
    }
    out.flush()?;
    // A script or CI step can rely on the exit status: any danger fails.
    let dangers = found
        .lints
        .iter()
        .filter(|l| l.severity == crate::inspect::Severity::Danger)
        .count();
    if dangers > 0 {
        anyhow::bail!("the token has {dangers} danger finding(s), listed above");
    }
    Ok(())
}

async fn run_user(app: &App, cmd: UserCommand) -> anyhow::Result<()> {
    let core = &app.core;
    // Who acts, as the audit log names them (`detail.actor`).
    let actor = operator().label();
    let mut out = std::io::stdout().lock();
    match cmd {
        UserCommand::Create {
            email,
            roles,
            password_stdin,
            json,
        } => {
            let password = if password_stdin {
                read_password_line()?
            } else {
                prompt_password()?
            };
            let user = core
                .create_user_by(
                    Some(&actor),
                    NewAccount {
                        email,
                        password,
                        roles,
                    },
                )
                .await?;
            // The operator vouches for the address (a CLI process cannot
            // count on mailing a link before it exits), so the account can
            // sign in under email_verification = required too.
            let user = core.verify_email_by(Some(&actor), &user.id).await?;
            print_user(&mut out, &user, json)?;
        }
        UserCommand::List { query, json } => {
            let users = all_users(app, query).await?;
            if json {
                serde_json::to_writer(&mut out, &serde_json::json!({ "users": users }))?;
                writeln!(out)?;
            } else {
                print_user_table(&mut out, &users)?;
            }
        }
        UserCommand::Suspend { id } => {
            let user = find_user(app, &id).await?;
            let user = core
                .set_status_by(Some(&actor), &user.id, UserStatus::Suspended)
                .await?;
            writeln!(
                out,
                "suspended {} ({}); all sessions ended",
                user.id, user.email
            )?;
        }
        UserCommand::Activate { id } => {
            let user = find_user(app, &id).await?;
            let user = core
                .set_status_by(Some(&actor), &user.id, UserStatus::Active)
                .await?;
            writeln!(out, "reactivated {} ({})", user.id, user.email)?;
        }
        UserCommand::Roles { id, roles } => {
            let user = find_user(app, &id).await?;
            let user = core.set_roles_by(Some(&actor), &user.id, &roles).await?;
            writeln!(out, "{} now has roles: {}", user.id, user.roles.join(","))?;
        }
        UserCommand::SetPassword { id, password_stdin } => {
            let user = find_user(app, &id).await?;
            let password = if password_stdin {
                read_password_line()?
            } else {
                prompt_password()?
            };
            core.set_password_by(Some(&actor), &user.id, password)
                .await?;
            writeln!(
                out,
                "set the password of {} ({}): every session, refresh token and earlier access token is revoked",
                user.id, user.email
            )?;
        }
        UserCommand::ResetLink { id } => {
            let user = find_user(app, &id).await?;
            let link = core.password_reset_link(&user.id).await?;
            writeln!(out, "{link}")?;
            writeln!(
                out,
                "a one-time link to set the password of {} ({}), valid for {}: give it to them only",
                user.id,
                user.email,
                humantime::format_duration(app.settings.password_reset_ttl)
            )?;
        }
        UserCommand::SetEmail { id, email } => {
            let user = find_user(app, &id).await?;
            core.set_email_by(Some(&actor), &user.id, &email).await?;
            let user = core.verify_email_by(Some(&actor), &user.id).await?;
            writeln!(
                out,
                "{} now signs in as {} (verified: you vouch for it)",
                user.id, user.email
            )?;
        }
        UserCommand::Invite { email, roles, json } => {
            // Not mailed: this process may end before its outbox sends.
            let invitation = core.invite_by(Some(&actor), &email, &roles, false).await?;
            let expires_at = crate::core::time::rfc3339(invitation.expires_at);
            if json {
                serde_json::to_writer(
                    &mut out,
                    &serde_json::json!({"url": invitation.url, "expires_at": expires_at}),
                )?;
                writeln!(out)?;
            } else {
                writeln!(out, "{}", invitation.url)?;
                writeln!(
                    out,
                    "a one-time link to register {} (roles: {}), valid until {expires_at}: give it to them only",
                    email.trim(),
                    if roles.is_empty() {
                        "none".to_owned()
                    } else {
                        roles.join(", ")
                    },
                )?;
            }
        }
        UserCommand::Delete { id, yes } => {
            let user = find_user(app, &id).await?;
            if !yes {
                confirm_or(
                    &format!(
                        "This deletes {} ({}) for good: every session and token of theirs ends, and their audit events lose the email.",
                        user.id, user.email
                    ),
                    "cancelled: nothing was deleted",
                )?;
            }
            core.delete_user_by(Some(&actor), &user.id).await?;
            writeln!(
                out,
                "deleted {} ({}): every session and token ended; the email can be registered again",
                user.id, user.email
            )?;
        }
        UserCommand::Revoke { id } => {
            let user = find_user(app, &id).await?;
            core.logout_all_by(Some(&actor), &user.id).await?;
            writeln!(
                out,
                "logged out {} ({}) everywhere: every session, refresh token and earlier access token is revoked",
                user.id, user.email
            )?;
        }
    }
    Ok(())
}

/// The user a command names by id or email; an unknown one is an error
/// naming what was given.
async fn find_user(app: &App, named: &str) -> anyhow::Result<User> {
    app.core
        .find_user(named)
        .await
        .with_context(|| named.trim().to_owned())
}

async fn all_users(app: &App, query: Option<String>) -> anyhow::Result<Vec<User>> {
    let mut users = Vec::new();
    let mut after_id = None;
    loop {
        let page = app
            .core
            .list_users(&UserQuery {
                email_contains: query.clone(),
                limit: 500,
                after_id: after_id.take(),
            })
            .await?;
        let done = page.len() < 500;
        after_id = page.last().map(|u| u.id.clone());
        users.extend(page);
        if done {
            return Ok(users);
        }
    }
}

/// `user list` as a table: a header row, then a user a line, in columns.
fn print_user_table(out: &mut impl Write, users: &[User]) -> anyhow::Result<()> {
    let id_width = users.iter().map(|u| u.id.len()).max().unwrap_or(0).max(2);
    let email_width = users
        .iter()
        .map(|u| u.email.chars().count())
        .max()
        .unwrap_or(0)
        .max(5);
    writeln!(
        out,
        "{:<id_width$}  {:<email_width$}  {:<9}  {:<8}  ROLES",
        "ID", "EMAIL", "STATUS", "VERIFIED"
    )?;
    for u in users {
        writeln!(
            out,
            "{:<id_width$}  {:<email_width$}  {:<9}  {:<8}  {}",
            u.id,
            u.email,
            u.status.as_str(),
            if u.email_verified { "yes" } else { "no" },
            u.roles.join(",")
        )?;
    }
    if users.is_empty() {
        eprintln!("no users match");
    }
    Ok(())
}

fn print_user(out: &mut impl Write, user: &User, json: bool) -> anyhow::Result<()> {
    if json {
        serde_json::to_writer(&mut *out, user)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "created {} ({}) roles: {}",
            user.id,
            user.email,
            if user.roles.is_empty() {
                "none".to_owned()
            } else {
                user.roles.join(",")
            }
        )?;
    }
    Ok(())
}

fn read_password_line() -> anyhow::Result<Password> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let trimmed = line.trim_end_matches(['\n', '\r']).to_owned();
    zeroize::Zeroize::zeroize(&mut line);
    if trimmed.is_empty() {
        bail!("no password on standard input");
    }
    Ok(Password::new(trimmed))
}

fn prompt_password() -> anyhow::Result<Password> {
    let first = rpassword::prompt_password("Password: ")
        .context("cannot prompt for a password (no terminal?); use --password-stdin")?;
    let second =
        rpassword::prompt_password("Repeat password: ").context("cannot prompt for a password")?;
    let (first, second) = (Password::new(first), Password::new(second));
    if !crate::core::secret::secrets_equal(first.expose(), second.expose()) {
        bail!("the passwords do not match");
    }
    Ok(first)
}
