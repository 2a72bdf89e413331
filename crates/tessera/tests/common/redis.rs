//! Real, private Redis servers for tests, run from Debian's `redis-server`
//! package (docs: /work/shared/DEPENDENCIES.md §5; the same recipe as
//! scripts/redis-for-tests): `redis-server` on ephemeral loopback ports,
//! nothing kept on disk (no RDB, no AOF), stopped by PID. No Docker, nothing
//! downloaded; a missing package is a panic saying how to install it, never
//! a skipped test.
//!
//! Three shapes: [`RedisServer`] (one server), [`RedisCluster`] (Redis
//! Cluster: primaries and their replicas, joined by `redis-cli --cluster
//! create`) and [`RedisSentinel`] (a primary, its replica and three
//! sentinels). A test that only needs *a* Redis takes the run's shared one,
//! [`shared_redis_url`], and keeps its keys under a [`fresh_prefix`].
//!
//! The harness talks to servers by running `redis-cli` ([`cli`]), not
//! through a client library: it depends on nothing the code under test may
//! change, and a test checks the server's state with a tool independent of
//! the client it is testing.
//!
//! Cleanup: `Drop` sends SIGTERM to every server and waits for it (SIGKILL
//! after 10 s), then removes the temp dir. Servers never dropped (the shared
//! one lives in a `static`; a test may abort) are stopped by their
//! watchdog: a small `sh` in its own process group that polls the test
//! process once a second and, once it has gone, sends SIGTERM to the PIDs in
//! the dir's `*.pid` files (SIGKILL after 10 s) and removes the dir. The
//! servers stay in the test's process group, the watchdog alone leaves it:
//! a Ctrl-C or a runner's kill of the group stops the servers at once, and
//! the watchdog survives it to remove the dir.
//!
//! Redis runs fine as root: unlike PostgreSQL, no user switch.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;
use tokio::sync::OnceCell;

/// Set by `scripts/test`: the URL of one Redis for the whole run.
/// (Not `TESSERA_…`: the server reads those as settings and refuses unknown ones.)
pub const SHARED_URL_VAR: &str = "TEST_REDIS_URL";

/// The master name the sentinels watch the primary under (the path of
/// [`RedisSentinel::url`]).
pub const MASTER_NAME: &str = "tessera";

const INSTALL: &str = "install it with: apt-get install redis-server";
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// A cluster forming or failing over, sentinels agreeing, a failover: with
/// the timeouts configured here each takes 1–5 s.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);
const ADDR_IN_USE: &str = "Address already in use";

/// Stops the servers of a test process that ended without dropping them.
/// `$1`: the test process's PID; `$2`: the temp dir holding `NAME.pid` files.
const WATCHDOG: &str = r#"
while kill -0 "$1" 2>/dev/null; do sleep 1; done
pids=
for f in "$2"/*.pid; do
  [ -f "$f" ] && read -r pid < "$f" || continue
  # Only a server of ours: the PID may have been reused.
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = redis-server ] || continue
  kill -TERM "$pid" 2>/dev/null && pids="$pids $pid"
done
i=0
while [ -n "$pids" ] && [ "$i" -lt 100 ]; do
  left=
  for pid in $pids; do
    if [ -e "/proc/$pid" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null; then
      left="$left $pid"
    fi
  done
  pids=$left
  sleep 0.1
  i=$((i + 1))
done
for pid in $pids; do kill -KILL "$pid" 2>/dev/null; done
rm -rf "$2"
"#;

/// One private Redis server on 127.0.0.1, in a temp dir.
pub struct RedisServer {
    procs: Procs,
    port: u16,
}

impl RedisServer {
    /// A running server on a free port (ready in < 0.1 s).
    pub async fn start() -> Self {
        let mut procs = Procs::new("tessera-redis-");
        let port = procs.start_server("redis", |_| Vec::new()).await;
        Self { procs, port }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's PID. Panics when it is stopped or killed.
    pub fn pid(&self) -> u32 {
        self.procs.pid(self.port).expect("Redis is stopped")
    }

    /// The temp dir holding `redis.log` and `redis.pid`.
    pub fn dir(&self) -> &Path {
        self.procs.dir()
    }

    /// SIGTERM (Redis closes its clients and exits; nothing to save);
    /// returns once the process has exited. No-op when stopped.
    pub async fn stop(&mut self) {
        self.procs.stop(self.port).await;
    }

    /// SIGKILL, as a crash: clients see their connections reset. Returns
    /// once the process is gone. No-op when stopped.
    pub fn kill(&mut self) {
        self.procs.kill(self.port);
    }

    /// Starts the server again on the same port and dir (stopping it first
    /// when it runs). Nothing is persisted: it comes back empty, as a
    /// cache server that lost its memory.
    pub async fn restart(&mut self) {
        self.procs.stop(self.port).await;
        self.procs.relaunch(self.port).await;
    }
}

/// A Redis that speaks TLS on a second port, with certificates made for
/// the test by `openssl` (a private CA; the server's certificate for
/// 127.0.0.1; a client certificate, which Redis asks for by default:
/// `tls-auth-clients yes`). Its plain port stays open on loopback for the
/// harness's `redis-cli`.
pub struct TlsRedis {
    pub server: RedisServer,
    /// The TLS port.
    pub tls_port: u16,
    /// PEM files: the CA, and this client's certificate and key.
    pub ca_file: std::path::PathBuf,
    pub cert_file: std::path::PathBuf,
    pub key_file: std::path::PathBuf,
}

impl TlsRedis {
    pub async fn start() -> Self {
        let mut procs = Procs::new("tessera-redis-tls-");
        let dir = procs.dir().to_owned();
        make_certificates(&dir);
        let tls_port = std::cell::Cell::new(0);
        let port = procs
            .start_server("redis", |second| {
                tls_port.set(second);
                let file = |name: &str| dir.join(name).into_os_string();
                vec![
                    "--tls-port".into(),
                    second.to_string().into(),
                    "--tls-cert-file".into(),
                    file("redis.crt"),
                    "--tls-key-file".into(),
                    file("redis.key"),
                    "--tls-ca-cert-file".into(),
                    file("ca.crt"),
                ]
            })
            .await;
        Self {
            tls_port: tls_port.get(),
            ca_file: dir.join("ca.crt"),
            cert_file: dir.join("client.crt"),
            key_file: dir.join("client.key"),
            server: RedisServer { procs, port },
        }
    }

    /// `rediss://127.0.0.1:TLS_PORT`.
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.tls_port)
    }
}

/// `ca.crt`/`ca.key`, `redis.crt`/`redis.key` (for 127.0.0.1) and
/// `client.crt`/`client.key` in `dir`, by the `openssl` command.
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run openssl ({e}); install it with: apt-get install openssl")
            });
        assert!(
            out.status.success(),
            "openssl {} failed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=tessera test CA"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.crt"]);
    openssl(&ca);
    for (name, ext) in [
        (
            "redis",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        let (key, csr, crt, ext_file) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("{name}.ext"),
        );
        std::fs::write(dir.join(&ext_file), ext).expect("write the extensions file");
        let subject = format!("/CN=tessera test {name}");
        let mut req = vec!["req", "-subj", &subject];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr]);
        openssl(&req);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext_file,
            "-out",
            &crt,
        ]);
    }
}

/// The role of a cluster node, as the node itself reports it (`ROLE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
}

/// One node of a [`RedisCluster`].
#[derive(Clone, Debug)]
pub struct ClusterNode {
    pub port: u16,
    /// `None` once killed or stopped.
    pub pid: Option<u32>,
    /// `None` when the node is not running.
    pub role: Option<Role>,
}

/// A private Redis Cluster on 127.0.0.1: `primaries` primaries sharing the
/// 16384 slots, each with `replicas_per_primary` replicas, node timeout 2 s
/// (a replica takes over 3–5 s after its primary dies).
pub struct RedisCluster {
    procs: Procs,
    seeds: Vec<u16>,
}

impl RedisCluster {
    /// A cluster in `cluster_state:ok` whose every replica is in sync with
    /// its primary (3 primaries with 1 replica each: ~3 s).
    pub async fn start(primaries: usize, replicas_per_primary: usize) -> Self {
        assert!(
            primaries >= 3,
            "a Redis Cluster needs at least 3 primaries (redis-cli --cluster create refuses fewer); got {primaries}"
        );
        let mut procs = Procs::new("tessera-redis-cluster-");
        let mut addrs = Vec::new();
        for i in 1..=primaries * (1 + replicas_per_primary) {
            let conf = procs.dir().join(format!("node-{i}.conf"));
            let port = procs
                .start_server(&format!("node-{i}"), |bus| {
                    // The bus on a port of its own (Redis 7's cluster-port)
                    // rather than the default port + 10000, which nobody
                    // checked was free.
                    args([
                        "--cluster-enabled",
                        "yes",
                        "--cluster-node-timeout",
                        "2000",
                        "--cluster-port",
                        &bus.to_string(),
                        "--cluster-config-file",
                    ])
                    .chain([conf.clone().into()])
                    .collect()
                })
                .await;
            addrs.push(format!("127.0.0.1:{port}"));
        }
        // redis-cli makes the first `primaries` named the primaries (and
        // warns that the replicas share their primary's host: expected).
        let out = tokio::process::Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", &replicas_per_primary.to_string()])
            .arg("--cluster-yes")
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap_or_else(|e| missing("redis-cli", &e));
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::write(procs.dir().join("cluster-create.log"), &report);
        assert!(
            out.status.success(),
            "redis-cli --cluster create {} failed ({}):\n{report}",
            addrs.join(" "),
            out.status
        );
        let mut cluster = Self {
            procs,
            seeds: Vec::new(),
        };
        cluster.wait_ok().await;
        cluster.seeds = cluster
            .nodes()
            .iter()
            .filter(|n| n.role == Some(Role::Primary))
            .map(|n| n.port)
            .collect();
        cluster
    }

    /// The primaries as started: `redis://127.0.0.1:P1,redis://127.0.0.1:P2,…`
    /// (what a cluster client takes as its seeds; it learns the rest).
    pub fn seed_urls(&self) -> String {
        self.seeds
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Every node started, in start order, with its state now.
    pub fn nodes(&self) -> Vec<ClusterNode> {
        self.procs
            .list
            .iter()
            .map(|p| {
                let pid = p.child.as_ref().map(Child::id);
                let role = pid.map(|_| own_role(&cli(p.port, &["ROLE"])));
                ClusterNode {
                    port: p.port,
                    pid,
                    role,
                }
            })
            .collect()
    }

    /// The temp dir: `node-N.{conf,log,pid,rdb}`, `cluster-create.log`.
    pub fn dir(&self) -> &Path {
        self.procs.dir()
    }

    /// The port of the primary serving `slot` (0–16383), as a running node
    /// sees the cluster now (after [`Self::wait_ok`], all agree).
    pub fn primary_of_slot(&self, slot: u16) -> u16 {
        let asked = self.procs.live_ports()[0];
        let nodes = cli(asked, &["CLUSTER", "NODES"]);
        parse_nodes(&nodes)
            .into_iter()
            .find(|n| n.flags.contains(&"master") && n.slots.iter().any(|r| r.contains(&slot)))
            .unwrap_or_else(|| {
                panic!("no primary serves slot {slot}; CLUSTER NODES of {asked}:\n{nodes}")
            })
            .port
    }

    /// SIGKILLs the primary serving `slot`; returns its port.
    pub fn kill_primary_of_slot(&mut self, slot: u16) -> u16 {
        let port = self.primary_of_slot(slot);
        self.kill_node(port);
        port
    }

    /// SIGKILLs the node on `port` (a crash). Returns once it is gone.
    pub fn kill_node(&mut self, port: u16) {
        self.procs.kill(port);
    }

    /// Polls until the cluster is whole again: every running node says
    /// `cluster_state:ok`, knows every other running node and none failing,
    /// all agree on who is primary (as each says itself) and which slots
    /// each serves, every slot is served by a running primary, and every
    /// replica's link to its primary is up. After a kill, this is the
    /// failover done (not the few seconds before the cluster notices, when
    /// `cluster_state` still says ok). Panics after 30 s with what is wrong.
    pub async fn wait_ok(&self) {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let Some(problem) = self.problem().await else {
                return;
            };
            assert!(
                Instant::now() < deadline,
                "the cluster is not ok after {SETTLE_TIMEOUT:?}: {problem}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// What keeps the cluster from being ok now, or `None`.
    async fn problem(&self) -> Option<String> {
        let live = self.procs.live_ports();
        let mut roles = Vec::new();
        for &port in &live {
            let role = match cli_async(port, &["ROLE"]).await {
                Ok(out) => own_role(&out),
                Err(e) => return Some(e),
            };
            if role == Role::Replica {
                let info = cli_async(port, &["INFO", "replication"]).await;
                if !info.is_ok_and(|i| i.lines().any(|l| l == "master_link_status:up")) {
                    return Some(format!("replica {port}'s link to its primary is not up"));
                }
            }
            roles.push((port, role));
        }
        // The first node's (port, slot ranges) of each primary, to compare.
        let mut first_view: Option<(u16, SlotMap)> = None;
        for &port in &live {
            let info = match cli_async(port, &["CLUSTER", "INFO"]).await {
                Ok(info) => info,
                Err(e) => return Some(e),
            };
            if !info.lines().any(|l| l == "cluster_state:ok") {
                return Some(format!("node {port}: CLUSTER INFO\n{info}"));
            }
            let text = match cli_async(port, &["CLUSTER", "NODES"]).await {
                Ok(text) => text,
                Err(e) => return Some(e),
            };
            let nodes = parse_nodes(&text);
            let bad = |why: &str| Some(format!("node {port}: {why}; CLUSTER NODES:\n{text}"));
            for &(p, role) in &roles {
                let Some(n) = nodes.iter().find(|n| n.port == p) else {
                    return bad(&format!("does not know node {p}"));
                };
                if n.flags
                    .iter()
                    .any(|f| f.starts_with("fail") || *f == "handshake" || *f == "noaddr")
                {
                    return bad(&format!("sees node {p} as {}", n.flags.join(",")));
                }
                let seen = if n.flags.contains(&"master") {
                    Role::Primary
                } else {
                    Role::Replica
                };
                if seen != role {
                    return bad(&format!("sees node {p} as {seen:?}, it says {role:?}"));
                }
            }
            let mut served = 0;
            let mut view = Vec::new();
            for n in nodes.iter().filter(|n| !n.slots.is_empty()) {
                if !live.contains(&n.port) {
                    return bad(&format!("has slots served by stopped node {}", n.port));
                }
                served += n.slots.iter().map(|r| r.len()).sum::<usize>();
                view.push((n.port, n.slot_text.clone()));
            }
            if served != 16384 {
                return bad(&format!("{served} of 16384 slots served"));
            }
            view.sort();
            match &first_view {
                None => first_view = Some((port, view)),
                Some((other, seen)) if *seen != view => {
                    return bad(&format!("disagrees with node {other} on slots: {seen:?}"));
                }
                Some(_) => {}
            }
        }
        None
    }
}

/// A private primary, its replica and three sentinels watching them under
/// [`MASTER_NAME`], quorum 2, `down-after-milliseconds` 1000 and
/// `failover-timeout` 3000 (a failover takes ~2.5 s).
pub struct RedisSentinel {
    procs: Procs,
    replica: u16,
    sentinels: [u16; 3],
}

impl RedisSentinel {
    /// Started and settled: the replica in sync, and every sentinel sees
    /// the primary, the replica and both other sentinels (~1.5 s).
    pub async fn start() -> Self {
        let mut procs = Procs::new("tessera-redis-sentinel-");
        let primary = procs.start_server("primary", |_| Vec::new()).await;
        let replica = procs
            .start_server("replica", |_| {
                args(["--replicaof", "127.0.0.1", &primary.to_string()]).collect()
            })
            .await;
        // Sentinels start once the replica is in sync: a sentinel learns of
        // replicas from the primary's INFO, which it asks at start and then
        // only every 10 s.
        let deadline = Instant::now() + READY_TIMEOUT;
        while !cli_async(replica, &["INFO", "replication"])
            .await
            .is_ok_and(|i| i.lines().any(|l| l == "master_link_status:up"))
        {
            assert!(
                Instant::now() < deadline,
                "replica {replica} not in sync with {primary} after {READY_TIMEOUT:?}; {}:\n{}",
                procs.dir().join("replica.log").display(),
                read_from(&procs.dir().join("replica.log"), 0)
            );
            tokio::time::sleep(POLL).await;
        }

        let mut attempt = 0;
        let sentinels = loop {
            attempt += 1;
            let ports = free_ports::<3>();
            match procs.start_sentinels(primary, ports).await {
                Ok(()) => break ports,
                Err(log) if attempt < 5 && log.contains(ADDR_IN_USE) => {
                    // Each names the others' ports: all three again, on new ones.
                    for port in ports {
                        procs.forget(port);
                    }
                }
                Err(log) => panic!("a sentinel did not start:\n{log}"),
            }
        };
        let setup = Self {
            procs,
            replica,
            sentinels,
        };
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        for &port in &setup.sentinels {
            while let Some(problem) = sentinel_problem(port).await {
                assert!(
                    Instant::now() < deadline,
                    "sentinel {port} not settled after {SETTLE_TIMEOUT:?}: {problem}"
                );
                tokio::time::sleep(POLL).await;
            }
        }
        setup
    }

    /// `redis+sentinel://127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3/tessera`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+sentinel://{}/{MASTER_NAME}", hosts.join(","))
    }

    pub fn sentinel_ports(&self) -> [u16; 3] {
        self.sentinels
    }

    /// The primary's port as the sentinels name it now (the first running
    /// sentinel asked). During a failover, that may still be the dead one.
    pub fn primary_port(&self) -> u16 {
        let live = self.procs.live_ports();
        let sentinel = self
            .sentinels
            .iter()
            .find(|p| live.contains(p))
            .expect("no sentinel running");
        master_addr(&cli(
            *sentinel,
            &["SENTINEL", "get-master-addr-by-name", MASTER_NAME],
        ))
        .unwrap_or_else(|| panic!("sentinel {sentinel} names no primary"))
    }

    /// The server started as the replica: the one a failover promotes.
    pub fn replica_port(&self) -> u16 {
        self.replica
    }

    /// The temp dir: `primary.*`, `replica.*`, `sentinel-N.{conf,log,pid}`.
    pub fn dir(&self) -> &Path {
        self.procs.dir()
    }

    /// SIGKILLs the current primary (per [`Self::primary_port`]); returns its port.
    pub fn kill_primary(&mut self) -> u16 {
        let port = self.primary_port();
        self.procs.kill(port);
        port
    }

    /// Polls until every running sentinel names the same running server as
    /// the primary and that server says it is one (after
    /// [`Self::kill_primary`]: the promoted replica); returns its port.
    /// Panics after 30 s with what the sentinels say.
    pub async fn wait_failover(&self) -> u16 {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let live = self.procs.live_ports();
            let mut named = Vec::new();
            for s in self.sentinels.iter().filter(|s| live.contains(s)) {
                let out =
                    cli_async(*s, &["SENTINEL", "get-master-addr-by-name", MASTER_NAME]).await;
                named.push(out.ok().as_deref().and_then(master_addr));
            }
            if let Some(Some(port)) = named.first().copied()
                && named.iter().all(|n| *n == Some(port))
                && live.contains(&port)
                && cli_async(port, &["ROLE"])
                    .await
                    .is_ok_and(|r| own_role(&r) == Role::Primary)
            {
                return port;
            }
            if Instant::now() >= deadline {
                let state = cli(self.sentinels[0], &["SENTINEL", "MASTER", MASTER_NAME]);
                panic!(
                    "no failover after {SETTLE_TIMEOUT:?}: the sentinels name {named:?}; \
                     SENTINEL MASTER on {}:\n{state}",
                    self.sentinels[0]
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// The URL of the Redis shared by this test process: `$TEST_REDIS_URL` when
/// set (the server `scripts/test` started for the whole run), else a private
/// [`RedisServer`] started on first use that lives until the process exits
/// (then its watchdog stops it). Tests sharing it keep apart by
/// [`fresh_prefix`].
pub async fn shared_redis_url() -> String {
    if let Some(url) = std::env::var_os(SHARED_URL_VAR).filter(|v| !v.is_empty()) {
        return url.into_string().expect("TEST_REDIS_URL is UTF-8");
    }
    static SHARED: OnceCell<RedisServer> = OnceCell::const_new();
    SHARED.get_or_init(RedisServer::start).await.url()
}

/// A key prefix no other call returns (`t` + 16 random hex digits + `:`),
/// so tests sharing one Redis never see each other's keys.
pub fn fresh_prefix() -> String {
    format!("t{}:", random_hex(8))
}

/// `bytes` random bytes from /dev/urandom, in hex.
fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    let mut hex = String::with_capacity(2 * bytes);
    for b in buf {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// `redis-cli -p PORT ARGS…` on 127.0.0.1: its stdout, trimmed (raw
/// format: one line per element of an array reply, an empty string for
/// nil). Panics when redis-cli fails, error replies included (it runs with
/// `-e`). Options may lead ARGS: `cli(port, &["-c", "GET", "k"])` follows
/// cluster redirections.
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .arg("-e")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| missing("redis-cli", &e));
    assert!(
        out.status.success(),
        "redis-cli -p {port} {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// [`cli`] for polling: `Err` (what went wrong) instead of a panic.
async fn cli_async(port: u16, args: &[&str]) -> Result<String, String> {
    let out = tokio::process::Command::new("redis-cli")
        .arg("-e")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| missing("redis-cli", &e));
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "redis-cli -p {port} {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ))
    }
}

/// Servers sharing one temp dir and one watchdog.
struct Procs {
    dir: TempDir,
    list: Vec<Proc>,
    watchdog: Child,
}

struct Proc {
    /// The stem of its files in the dir: NAME.log, NAME.pid (and NAME.rdb,
    /// NAME.conf).
    name: String,
    port: u16,
    /// Everything after `redis-server`: to start it again the same way.
    args: Vec<OsString>,
    child: Option<Child>,
}

impl Procs {
    fn new(prefix: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("temp dir for Redis");
        let watchdog = Command::new("sh")
            .args(["-c", WATCHDOG, "tessera-redis-watchdog"])
            .arg(std::process::id().to_string())
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn the Redis watchdog (sh)");
        Self {
            dir,
            list: Vec::new(),
            watchdog,
        }
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn index(&self, port: u16) -> usize {
        self.list
            .iter()
            .position(|p| p.port == port)
            .unwrap_or_else(|| panic!("no Redis of this harness on port {port}"))
    }

    fn pid(&self, port: u16) -> Option<u32> {
        self.list[self.index(port)].child.as_ref().map(Child::id)
    }

    /// The ports of the servers running (started, not stopped or killed).
    fn live_ports(&self) -> Vec<u16> {
        self.list
            .iter()
            .filter(|p| p.child.is_some())
            .map(|p| p.port)
            .collect()
    }

    /// A data server named `name` on fresh free ports, retried on others
    /// when one is taken before the server binds it; returns its port.
    /// `extra(bus)`: its arguments beyond the common ones, given a second
    /// free port (for a cluster bus). No persistence; and
    /// repl-diskless-sync-delay 0, or a replica's first sync waits 5 s for
    /// more replicas to share it; and a dbfilename per server, as a replica
    /// still writes the RDB it receives to disk (despite `--save ''`) before
    /// loading it: one `dump.rdb` in a shared dir, and replicas would load
    /// each other's.
    async fn start_server(&mut self, name: &str, extra: impl Fn(u16) -> Vec<OsString>) -> u16 {
        let dir = self.dir().to_owned();
        for attempt in 1.. {
            let [port, bus] = free_ports::<2>();
            let mut server_args: Vec<OsString> = args(["--port", &port.to_string()])
                .chain(args([
                    "--bind",
                    "127.0.0.1",
                    "--protected-mode",
                    "yes",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--repl-diskless-sync-delay",
                    "0",
                    "--daemonize",
                    "no",
                    "--dbfilename",
                    &format!("{name}.rdb"),
                    "--dir",
                ]))
                .chain([dir.clone().into(), "--logfile".into()])
                .chain([dir.join(format!("{name}.log")).into()])
                .collect();
            server_args.extend(extra(bus));
            match self.launch_new(name, port, server_args).await {
                Ok(()) => return port,
                Err(log) if attempt < 5 && log.contains(ADDR_IN_USE) => {}
                Err(log) => panic!("redis-server `{name}` did not start:\n{log}"),
            }
        }
        unreachable!()
    }

    /// Three sentinels on `ports` watching the primary on `primary`. Each
    /// one's id is chosen here and written with the others' into its config
    /// (the lines a sentinel saves itself), so they know each other from the
    /// start rather than after their first hellos, 2 s on. `Err`: the log
    /// of the one that did not start.
    async fn start_sentinels(&mut self, primary: u16, ports: [u16; 3]) -> Result<(), String> {
        let ids: Vec<String> = (0..3).map(|_| random_hex(20)).collect();
        for (i, &port) in ports.iter().enumerate() {
            let name = format!("sentinel-{}", i + 1);
            let conf_path = self.dir().join(format!("{name}.conf"));
            let dir = self.dir().display().to_string();
            let mut conf = format!(
                "port {port}\nbind 127.0.0.1\ndir \"{dir}\"\nlogfile \"{dir}/{name}.log\"\n\
                 sentinel myid {}\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {primary} 2\n\
                 sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                 sentinel failover-timeout {MASTER_NAME} 3000\n",
                ids[i]
            );
            for (j, other) in ports.iter().enumerate().filter(|&(j, _)| j != i) {
                let _ = writeln!(
                    conf,
                    "sentinel known-sentinel {MASTER_NAME} 127.0.0.1 {other} {}",
                    ids[j]
                );
            }
            std::fs::write(&conf_path, conf).expect("write the sentinel's config");
            // The config file first: a sentinel rewrites it (its state).
            let sentinel_args = vec![conf_path.into(), "--sentinel".into()];
            self.launch_new(&name, port, sentinel_args).await?;
        }
        Ok(())
    }

    /// Adds a server and starts it; on failure forgets it again.
    async fn launch_new(
        &mut self,
        name: &str,
        port: u16,
        args: Vec<OsString>,
    ) -> Result<(), String> {
        self.list.push(Proc {
            name: name.to_owned(),
            port,
            args,
            child: None,
        });
        let result = self.launch(self.list.len() - 1).await;
        if result.is_err() {
            self.list.pop();
        }
        result
    }

    /// Starts the stopped server on `port` again, same arguments (the port
    /// was ours: retried while someone else holds it, for up to 5 s).
    async fn relaunch(&mut self, port: u16) {
        let i = self.index(port);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.launch(i).await {
                Ok(()) => return,
                Err(log) if Instant::now() < deadline && log.contains(ADDR_IN_USE) => {
                    tokio::time::sleep(POLL).await;
                }
                Err(log) => panic!("redis-server on port {port} did not restart:\n{log}"),
            }
        }
    }

    /// Spawns server `i` and waits until its port answers with its PID
    /// (ours, not another server that took the port). `Err`: its log, when
    /// it exits first.
    async fn launch(&mut self, i: usize) -> Result<(), String> {
        let dir = self.dir().to_owned();
        let proc = &mut self.list[i];
        let log_path = dir.join(format!("{}.log", proc.name));
        let pid_path = dir.join(format!("{}.pid", proc.name));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open the Redis log");
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        // Not the test's stdout/stderr: a test runner waits for those to close.
        let child = Command::new("redis-server")
            .args(&proc.args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| missing("redis-server", &e));
        let pid = child.id();
        proc.child = Some(child);
        std::fs::write(&pid_path, format!("{pid}\n")).expect("write the PID file");

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let child = proc.child.as_mut().expect("just spawned");
            if let Some(status) = child.try_wait().expect("wait for redis-server") {
                proc.child = None;
                let _ = std::fs::remove_file(&pid_path);
                let args: Vec<_> = proc.args.iter().map(|a| a.to_string_lossy()).collect();
                return Err(format!(
                    "redis-server {} exited ({status}); {}:\n{}",
                    args.join(" "),
                    log_path.display(),
                    read_from(&log_path, log_start)
                ));
            }
            let info = cli_async(proc.port, &["INFO", "server"]).await;
            if info.is_ok_and(|i| i.lines().any(|l| l == format!("process_id:{pid}"))) {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} not ready after {READY_TIMEOUT:?}; {}:\n{}",
                proc.port,
                log_path.display(),
                read_from(&log_path, log_start)
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGTERM; returns once the server has exited (SIGKILL after 10 s).
    /// No-op when it is not running.
    async fn stop(&mut self, port: u16) {
        let i = self.index(port);
        let Some(child) = self.list[i].child.as_mut() else {
            return;
        };
        signal(child.id(), Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while child.try_wait().expect("wait for redis-server").is_none() {
            if Instant::now() > deadline {
                eprintln!(
                    "redis-server (PID {}) still running {STOP_TIMEOUT:?} after SIGTERM; killing it",
                    child.id()
                );
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.reaped(i);
    }

    /// SIGKILL; returns once the server is gone. No-op when not running.
    fn kill(&mut self, port: u16) {
        let i = self.index(port);
        if let Some(child) = self.list[i].child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
            self.reaped(i);
        }
    }

    /// Kills the server on `port` if there is one, and drops it from the list.
    fn forget(&mut self, port: u16) {
        if self.list.iter().any(|p| p.port == port) {
            self.kill(port);
            self.list.retain(|p| p.port != port);
        }
    }

    fn reaped(&mut self, i: usize) {
        self.list[i].child = None;
        let _ = std::fs::remove_file(self.dir().join(format!("{}.pid", self.list[i].name)));
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        // SIGTERM to all first, then wait: they shut down in parallel.
        for child in self.list.iter().filter_map(|p| p.child.as_ref()) {
            signal(child.id(), Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        for child in self.list.iter_mut().filter_map(|p| p.child.as_mut()) {
            super::postgres::wait_or_kill(child, deadline);
        }
        // The watchdog's process group: its sh and the sh's `sleep`.
        let _ = kill(Pid::from_raw(-(self.watchdog.id() as i32)), Signal::SIGKILL);
        let _ = self.watchdog.wait();
        // Then `dir` (a TempDir) removes the temp dir.
    }
}

/// What a sentinel does not see yet (the primary up, the replica up and
/// linked, both other sentinels connected), or `None`.
async fn sentinel_problem(port: u16) -> Option<String> {
    let ask = async |what: &str| cli_async(port, &["SENTINEL", what, MASTER_NAME]).await;
    let master = match ask("MASTER").await {
        Ok(out) => fields(&out),
        Err(e) => return Some(e),
    };
    let get = |k: &str| {
        master
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    if get("flags") != Some("master")
        || get("num-slaves") != Some("1")
        || get("num-other-sentinels") != Some("2")
    {
        return Some(format!("SENTINEL MASTER: {master:?}"));
    }
    let replicas = ask("REPLICAS")
        .await
        .map(|o| fields(&o))
        .unwrap_or_default();
    if !replicas
        .iter()
        .any(|(k, v)| k == "master-link-status" && v == "ok")
    {
        return Some(format!("SENTINEL REPLICAS: {replicas:?}"));
    }
    let sentinels = ask("SENTINELS")
        .await
        .map(|o| fields(&o))
        .unwrap_or_default();
    let connected = sentinels
        .iter()
        .filter(|(k, v)| k == "flags" && v == "sentinel")
        .count();
    if connected != 2 {
        return Some(format!("SENTINEL SENTINELS: {sentinels:?}"));
    }
    None
}

/// The `key, value` pairs of a raw reply that alternates them, one a line
/// (one map or several maps in a row).
fn fields(raw: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = raw.lines().collect();
    lines
        .chunks(2)
        .filter_map(|kv| Some((kv[0].to_owned(), kv.get(1)?.to_string())))
        .collect()
}

/// The port of a `SENTINEL get-master-addr-by-name` reply (`IP\nPORT`).
fn master_addr(raw: &str) -> Option<u16> {
    raw.lines().nth(1)?.trim().parse().ok()
}

/// The role a `ROLE` reply names.
fn own_role(raw: &str) -> Role {
    match raw.lines().next() {
        Some("master") => Role::Primary,
        Some("slave") => Role::Replica,
        other => panic!("unexpected ROLE reply {other:?} in {raw:?}"),
    }
}

/// Which slot ranges (as `CLUSTER NODES` writes them) each primary serves,
/// by port.
type SlotMap = Vec<(u16, Vec<String>)>;

/// One line of `CLUSTER NODES`.
struct NodeLine<'a> {
    port: u16,
    flags: Vec<&'a str>,
    slots: Vec<std::ops::RangeInclusive<u16>>,
    slot_text: Vec<String>,
}

/// `<id> <ip:port@cport> <flags> <primary> <ping> <pong> <epoch> <link> <slot>…`;
/// slots `N` or `N-M` (`[…]` entries, slots migrating, are left out).
fn parse_nodes(text: &str) -> Vec<NodeLine<'_>> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let addr = f.get(1)?.split('@').next()?;
            let port = addr.rsplit(':').next()?.parse().ok()?;
            let slot_text: Vec<String> = f
                .iter()
                .skip(8)
                .filter(|s| !s.starts_with('['))
                .map(|s| s.to_string())
                .collect();
            let slots = slot_text
                .iter()
                .filter_map(|s| {
                    let (a, b) = s.split_once('-').unwrap_or((s, s));
                    Some(a.parse().ok()?..=b.parse().ok()?)
                })
                .collect();
            Some(NodeLine {
                port,
                flags: f.get(2)?.split(',').collect(),
                slots,
                slot_text,
            })
        })
        .collect()
}

/// `N` different ports free right now on 127.0.0.1 (held together while picked).
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("local addr").port())
}

fn args<const N: usize>(list: [&str; N]) -> impl Iterator<Item = OsString> {
    list.map(OsString::from).into_iter()
}

fn missing(program: &str, e: &std::io::Error) -> ! {
    if e.kind() == ErrorKind::NotFound {
        panic!("{program} not found (Debian's redis-server package); {INSTALL}");
    }
    panic!("run {program}: {e}");
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
