//! A real, private PostgreSQL for tests, run from Debian's `postgresql`
//! package (docs: /work/shared/DEPENDENCIES.md §5): `initdb` into a temp dir,
//! `postgres` on an ephemeral loopback port, one database per test.
//!
//! PostgreSQL refuses to run as root, so when the tests do, `initdb` and
//! `postgres` run as the `postgres` user (the PID held is the postmaster's).
//! Cleanup: `Drop` stops the postmaster (SIGINT, fast shutdown) and removes
//! the temp dir. A cluster that is never dropped (the shared one lives in a
//! `static`; a test may abort) is stopped by its watchdog: a small `sh` in its
//! own process group that polls the test process once a second and, once it
//! has gone, sends SIGINT to the PID in `postmaster.pid` and removes the dir.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, User, geteuid};
use sqlx::Connection;
use tempfile::TempDir;
use tokio::sync::OnceCell;

/// Set by `scripts/test`: the admin URL of one cluster for the whole run.
/// (Not `TESSERA_…`: the server reads those as settings and refuses unknown ones.)
pub const SHARED_URL_VAR: &str = "TEST_POSTGRES_URL";

const INSTALL: &str = "install it with: apt-get install postgresql";
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);

/// Fast and loose by default: nothing here has to survive a power cut.
const FAST: [&str; 3] = [
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
];
/// What a production server runs with (benchmarks, crash tests).
const DURABLE: [&str; 3] = ["fsync=on", "synchronous_commit=on", "full_page_writes=on"];

/// Stops the cluster of a test process that ended without dropping it.
/// `$1`: the test process's PID; `$2`: the cluster's temp dir.
const WATCHDOG: &str = r#"
while kill -0 "$1" 2>/dev/null; do sleep 1; done
if read -r pg < "$2/data/postmaster.pid"; then
  kill -INT "$pg"
  i=0
  while [ -f "$2/data/postmaster.pid" ] && [ "$i" -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
fi 2>/dev/null
rm -rf "$2"
"#;

/// A private PostgreSQL cluster in a temp dir, listening on 127.0.0.1 only,
/// user `tessera` with trust authentication.
pub struct PgCluster {
    bin: PathBuf,
    dir: TempDir,
    port: u16,
    durable: bool,
    /// `(uid, gid)` of `postgres` when we are root.
    run_as: Option<(u32, u32)>,
    postmaster: Option<Child>,
    watchdog: Child,
}

impl PgCluster {
    /// A running cluster with fsync, synchronous commit and full page writes off.
    pub async fn new() -> Self {
        Self::create(false).await
    }

    /// A running cluster with PostgreSQL's durable defaults (fsync on,
    /// synchronous commit on), for benchmarks and crash tests.
    pub async fn durable() -> Self {
        Self::create(true).await
    }

    async fn create(durable: bool) -> Self {
        let bin = bindir();
        let run_as = run_as();
        let dir = tempfile::Builder::new()
            .prefix("tessera-pg-")
            .tempdir()
            .expect("temp dir for PostgreSQL");
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("chown the PostgreSQL temp dir to postgres");
        }
        let watchdog = Command::new("sh")
            .args(["-c", WATCHDOG, "tessera-pg-watchdog"])
            .arg(std::process::id().to_string())
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn the PostgreSQL watchdog (sh)");
        let mut cluster = Self {
            bin,
            dir,
            port: 0,
            durable,
            run_as,
            postmaster: None,
            watchdog,
        };

        let out = tokio::process::Command::from(cluster.command("initdb"))
            .arg("-D")
            .arg(cluster.data_dir())
            .args(["-U", "tessera", "--auth=trust", "-E", "UTF8", "--locale=C"])
            .args(["--no-sync", "--no-instructions"])
            .output()
            .await
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        // The port is free when we look and may be taken before postgres
        // binds it: then try another.
        for attempt in 1.. {
            cluster.port = free_port();
            match cluster.launch().await {
                Ok(()) => break,
                Err(log) if attempt < 5 && log.contains("Address already in use") => {}
                Err(log) => panic!("PostgreSQL did not start:\n{log}"),
            }
        }
        cluster
    }

    /// `postgres://tessera@127.0.0.1:PORT/postgres`.
    pub fn admin_url(&self) -> String {
        format!("postgres://tessera@127.0.0.1:{}/postgres", self.port)
    }

    /// A new empty database; returns its URL.
    pub async fn fresh_database(&self) -> String {
        create_database(&self.admin_url()).await
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's PID. Panics when the cluster is stopped.
    pub fn pid(&self) -> u32 {
        self.postmaster
            .as_ref()
            .expect("PostgreSQL is stopped")
            .id()
    }

    /// The temp dir holding `data/`, the socket and `postgres.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Fast shutdown (SIGINT: open sessions are ended, then a checkpoint);
    /// returns once the postmaster has exited. No-op when stopped.
    pub async fn stop(&mut self) {
        let Some(child) = self.postmaster.as_mut() else {
            return;
        };
        signal(child.id(), Signal::SIGINT);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while child.try_wait().expect("wait for postgres").is_none() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL (PID {}) still running {STOP_TIMEOUT:?} after SIGINT",
                child.id()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.postmaster = None;
    }

    /// Starts the stopped cluster again, on the same port and data.
    pub async fn start(&mut self) {
        if let Some(child) = self.postmaster.as_mut() {
            // Killed from outside (a crash test): reap it and start again.
            let exited = child.try_wait().expect("wait for postgres").is_some();
            assert!(exited, "PostgreSQL is already running");
            self.postmaster = None;
        }
        // The port was ours; someone may have taken it meanwhile.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.launch().await {
                Ok(()) => return,
                Err(log) if Instant::now() < deadline && log.contains("Address already in use") => {
                    tokio::time::sleep(POLL).await;
                }
                Err(log) => panic!("PostgreSQL did not restart:\n{log}"),
            }
        }
    }

    /// Spawns the postmaster on `self.port` and waits until it accepts
    /// connections. `Err` (its log) when it exits first.
    async fn launch(&mut self) -> Result<(), String> {
        let log_path = self.dir.path().join("postgres.log");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open postgres.log");
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let mut cmd = self.command("postgres");
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=200",
            ]);
        for setting in if self.durable { DURABLE } else { FAST } {
            cmd.arg("-c").arg(setting);
        }
        // Not the test's stdout/stderr: a test runner waits for those to close.
        cmd.stdout(log.try_clone().expect("dup log")).stderr(log);
        self.postmaster = Some(cmd.spawn().expect("spawn postgres"));

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let child = self.postmaster.as_mut().expect("just spawned");
            if let Some(status) = child.try_wait().expect("wait for postgres") {
                self.postmaster = None;
                let log = read_from(&log_path, log_start);
                return Err(format!(
                    "postgres exited ({status}); {}:\n{log}",
                    log_path.display()
                ));
            }
            let pid = child.id();
            if self.is_ready(pid).await {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL on port {} not ready after {READY_TIMEOUT:?}; {}:\n{}",
                self.port,
                log_path.display(),
                read_from(&log_path, log_start)
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Our postmaster says it is ready (not another server that took the
    /// port meanwhile), and `pg_isready` agrees.
    async fn is_ready(&self, pid: u32) -> bool {
        let status = std::fs::read_to_string(self.data_dir().join("postmaster.pid"));
        let ours_and_ready = status.is_ok_and(|s| {
            let lines: Vec<&str> = s.lines().map(str::trim).collect();
            lines.first() == Some(&pid.to_string().as_str()) && lines.get(7) == Some(&"ready")
        });
        ours_and_ready
            && tokio::process::Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-U", "tessera", "-d", "postgres"])
                .arg("-p")
                .arg(self.port.to_string())
                .stdin(Stdio::null())
                .status()
                .await
                .expect("run pg_isready")
                .success()
    }

    /// A PostgreSQL program, run as `postgres` when we are root.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.current_dir(self.dir.path()).stdin(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            // std also drops supplementary groups when root sets a uid.
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Some(mut child) = self.postmaster.take() {
            signal(child.id(), Signal::SIGINT);
            wait_or_kill(&mut child, Instant::now() + STOP_TIMEOUT);
        }
        // The watchdog's process group: its sh and the sh's `sleep`.
        let _ = kill(Pid::from_raw(-(self.watchdog.id() as i32)), Signal::SIGKILL);
        let _ = self.watchdog.wait();
        // Then `dir` (a TempDir) removes the temp dir.
    }
}

/// The admin URL (database `postgres`) of the cluster shared by this test
/// process: `$TEST_POSTGRES_URL` when set (a cluster `scripts/test` started
/// for the whole run), else a private [`PgCluster`] started on first use that
/// lives until the process exits (then its watchdog stops it).
pub async fn shared_admin_url() -> String {
    if let Some(url) = std::env::var_os(SHARED_URL_VAR).filter(|v| !v.is_empty()) {
        return url.into_string().expect("TEST_POSTGRES_URL is UTF-8");
    }
    static SHARED: OnceCell<PgCluster> = OnceCell::const_new();
    SHARED.get_or_init(PgCluster::new).await.admin_url()
}

/// A new empty database on the shared cluster; returns its URL.
pub async fn fresh_postgres_url() -> String {
    create_database(&shared_admin_url().await).await
}

/// `CREATE DATABASE t_<random hex>` through `admin_url`; returns the new
/// database's URL (the admin URL with its path replaced).
pub async fn create_database(admin_url: &str) -> String {
    let mut bytes = [0u8; 8];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    let name: String = std::iter::once("t_".to_owned())
        .chain(bytes.iter().map(|b| format!("{b:02x}")))
        .collect();
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .unwrap_or_else(|e| panic!("connect to {admin_url}: {e}"));
    // PG15's default STRATEGY WAL_LOG: FILE_COPY measured the same on the fast
    // cluster (~25 ms) and slower on the durable one (~120 ms vs 35–85 ms).
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    let _ = conn.close().await;
    let mut url = url::Url::parse(admin_url).expect("admin URL");
    url.set_path(&name);
    url.into()
}

/// The directory holding `initdb`, `postgres` and `pg_isready`: from
/// `pg_config --bindir`, else the newest `/usr/lib/postgresql/*/bin`.
fn bindir() -> PathBuf {
    let pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .collect();
    versions.sort();
    pg_config
        .into_iter()
        .chain(versions.into_iter().rev().map(|(_, bin)| bin))
        .find(|bin| {
            ["initdb", "postgres", "pg_isready"]
                .iter()
                .all(|p| bin.join(p).is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "PostgreSQL server programs (initdb, postgres) not found via `pg_config --bindir` \
                 or in /usr/lib/postgresql/*/bin; {INSTALL}"
            )
        })
}

/// `(uid, gid)` of `postgres` when we are root (PostgreSQL refuses root).
fn run_as() -> Option<(u32, u32)> {
    if !geteuid().is_root() {
        return None;
    }
    let user = User::from_name("postgres")
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("tests run as root but there is no `postgres` user; {INSTALL}"));
    Some((user.uid.as_raw(), user.gid.as_raw()))
}

/// A port free right now on 127.0.0.1.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

fn signal(pid: u32, sig: Signal) {
    let _ = kill(Pid::from_raw(pid as i32), sig);
}

/// The end of a log file from byte `start` on.
fn read_from(path: &Path, start: u64) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.seek(SeekFrom::Start(start));
        let _ = f.read_to_string(&mut text);
    }
    text
}

/// Blocks until `child` has exited or `deadline` has passed, then kills and
/// reaps it: the last step of a harness's `Drop`, which cannot await (the
/// Redis harness's too).
pub fn wait_or_kill(child: &mut Child, deadline: Instant) {
    while let Ok(None) = child.try_wait() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
