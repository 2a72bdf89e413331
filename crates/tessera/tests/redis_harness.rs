//! The Redis test harness itself (tests/common/redis.rs): a single server
//! starts, answers, restarts and stops by PID, freeing its port; a cluster
//! of 3 primaries with a replica each serves keys and promotes the replica
//! when a primary dies; sentinels promote the replica when the primary dies;
//! and nothing is left behind, a test process that dies without dropping
//! included.

mod common;

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::redis::{
    MASTER_NAME, RedisCluster, RedisSentinel, RedisServer, Role, cli, fresh_prefix,
    shared_redis_url,
};

/// Whether `pid` is a live process (not gone, not a zombie).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
        !matches!(state.and_then(|s| s.chars().next()), Some('Z' | 'X') | None)
    })
}

fn port_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// `field:value` from an `INFO` reply.
fn info_field(info: &str, field: &str) -> String {
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in INFO:\n{info}"))
        .to_owned()
}

/// Waits until the replica on `replica` has everything its primary on
/// `primary` has written (so a failover loses nothing).
async fn wait_replicated(primary: u16, replica: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let written = info_field(
            &cli(primary, &["INFO", "replication"]),
            "master_repl_offset",
        );
        let applied = info_field(&cli(replica, &["INFO", "replication"]), "slave_repl_offset");
        if written == applied {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replica {replica} at offset {applied}, primary {primary} at {written}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn single_server_answers_restarts_and_stops_by_pid() {
    let t = Instant::now();
    let mut redis = RedisServer::start().await;
    eprintln!("start: {:?}", t.elapsed());
    let port = redis.port();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}"));
    assert_eq!(cli(port, &["PING"]), "PONG");
    assert_eq!(cli(port, &["SET", "k", "v"]), "OK");
    assert_eq!(cli(port, &["GET", "k"]), "v");

    let pid = redis.pid();
    let t = Instant::now();
    redis.stop().await;
    eprintln!("stop: {:?}", t.elapsed());
    assert!(!running(pid), "redis-server {pid} still running after stop");
    assert!(port_free(port), "port {port} still taken after stop");

    let t = Instant::now();
    redis.restart().await;
    eprintln!("restart: {:?}", t.elapsed());
    assert_eq!(redis.port(), port);
    assert_ne!(redis.pid(), pid);
    assert_eq!(cli(port, &["PING"]), "PONG");
    assert_eq!(cli(port, &["GET", "k"]), "", "nothing persisted");

    let pid = redis.pid();
    redis.kill();
    assert!(!running(pid), "redis-server {pid} survived SIGKILL");
    redis.restart().await;
    assert_eq!(cli(port, &["PING"]), "PONG");

    let (pid, dir) = (redis.pid(), redis.dir().to_owned());
    assert!(dir.join("redis.pid").exists() && dir.join("redis.log").exists());
    drop(redis);
    assert!(!running(pid), "redis-server {pid} still running after drop");
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(port_free(port), "port {port} still taken after drop");
}

#[tokio::test]
async fn shared_server_and_fresh_prefixes() {
    let url = shared_redis_url().await;
    assert_eq!(shared_redis_url().await, url, "one per process");
    let port: u16 = url
        .strip_prefix("redis://127.0.0.1:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected shared URL {url}"));
    assert_eq!(cli(port, &["PING"]), "PONG");

    let (a, b) = (fresh_prefix(), fresh_prefix());
    assert_ne!(a, b);
    for p in [&a, &b] {
        assert_eq!(p.len(), 1 + 16 + 1, "{p}");
        assert!(p.starts_with('t') && p.ends_with(':'), "{p}");
    }
    cli(port, &["SET", &format!("{a}k"), "a"]);
    assert_eq!(cli(port, &["GET", &format!("{b}k")]), "");
    assert_eq!(cli(port, &["DEL", &format!("{a}k")]), "1");
}

#[tokio::test]
async fn cluster_serves_keys_and_promotes_a_replica() {
    let t = Instant::now();
    let mut cluster = RedisCluster::start(3, 1).await;
    eprintln!("cluster start: {:?}", t.elapsed());

    let nodes = cluster.nodes();
    assert_eq!(nodes.len(), 6);
    let primaries: Vec<u16> = nodes
        .iter()
        .filter(|n| n.role == Some(Role::Primary))
        .map(|n| n.port)
        .collect();
    assert_eq!(primaries.len(), 3, "{nodes:?}");
    assert!(nodes.iter().all(|n| n.pid.is_some_and(running)));
    let seeds: Vec<String> = primaries
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}"))
        .collect();
    assert_eq!(cluster.seed_urls(), seeds.join(","));
    for n in &nodes {
        let info = cli(n.port, &["CLUSTER", "INFO"]);
        assert_eq!(info_field(&info, "cluster_state"), "ok", "node {}", n.port);
        assert_eq!(info_field(&info, "cluster_known_nodes"), "6");
    }

    // Any node takes the write (redis-cli -c follows the MOVED), any reads it.
    let key = "harness:{k}";
    assert_eq!(cli(nodes[5].port, &["-c", "SET", key, "v1"]), "OK");
    for n in &nodes {
        assert_eq!(cli(n.port, &["-c", "GET", key]), "v1", "via {}", n.port);
    }

    let slot: u16 = cli(nodes[0].port, &["CLUSTER", "KEYSLOT", key])
        .parse()
        .unwrap();
    let old = cluster.primary_of_slot(slot);
    let replica = nodes
        .iter()
        .find(|n| {
            n.role == Some(Role::Replica)
                && info_field(&cli(n.port, &["INFO", "replication"]), "master_port")
                    == old.to_string()
        })
        .expect("a replica of the key's primary")
        .port;
    wait_replicated(old, replica).await;

    let t = Instant::now();
    assert_eq!(cluster.kill_primary_of_slot(slot), old);
    cluster.wait_ok().await;
    let failover = t.elapsed();
    eprintln!("failover: {failover:?}");
    assert!(
        failover < Duration::from_secs(15),
        "failover took {failover:?}"
    );
    assert_eq!(
        cluster.primary_of_slot(slot),
        replica,
        "the replica took over"
    );
    let now = cluster.nodes();
    let killed = now.iter().find(|n| n.port == old).unwrap();
    assert!(killed.pid.is_none() && killed.role.is_none(), "{killed:?}");
    let promoted = now.iter().find(|n| n.port == replica).unwrap();
    assert_eq!(promoted.role, Some(Role::Primary));
    assert_eq!(
        cli(
            primaries.iter().find(|&&p| p != old).copied().unwrap(),
            &["-c", "GET", key]
        ),
        "v1"
    );
    let info = cli(replica, &["CLUSTER", "INFO"]);
    assert_eq!(info_field(&info, "cluster_state"), "ok");

    let pids: Vec<u32> = now.iter().filter_map(|n| n.pid).collect();
    let dir = cluster.dir().to_owned();
    drop(cluster);
    assert!(
        pids.iter().all(|&p| !running(p)),
        "a node survived the drop"
    );
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[tokio::test]
async fn sentinels_promote_the_replica() {
    let t = Instant::now();
    let mut setup = RedisSentinel::start().await;
    eprintln!("sentinel start: {:?}", t.elapsed());

    let sentinels = setup.sentinel_ports();
    let hosts: Vec<String> = sentinels.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    assert_eq!(
        setup.url(),
        format!("redis+sentinel://{}/{MASTER_NAME}", hosts.join(","))
    );
    let primary = setup.primary_port();
    let replica = setup.replica_port();
    assert_ne!(primary, replica);
    for s in sentinels {
        let addr = cli(s, &["SENTINEL", "get-master-addr-by-name", MASTER_NAME]);
        assert_eq!(addr, format!("127.0.0.1\n{primary}"), "sentinel {s}");
    }
    assert!(cli(primary, &["ROLE"]).starts_with("master"));
    assert!(cli(replica, &["ROLE"]).starts_with("slave"));

    assert_eq!(cli(primary, &["SET", "k", "v"]), "OK");
    wait_replicated(primary, replica).await;

    let t = Instant::now();
    assert_eq!(setup.kill_primary(), primary);
    let promoted = setup.wait_failover().await;
    let failover = t.elapsed();
    eprintln!("failover: {failover:?}");
    assert!(
        failover < Duration::from_secs(15),
        "failover took {failover:?}"
    );
    assert_eq!(promoted, replica, "the replica took over");
    assert_eq!(setup.primary_port(), replica);
    assert!(cli(replica, &["ROLE"]).starts_with("master"));
    assert_eq!(cli(replica, &["GET", "k"]), "v");

    let dir = setup.dir().to_owned();
    drop(setup);
    assert!(!dir.exists(), "{} left behind", dir.display());
    for port in sentinels.into_iter().chain([replica]) {
        assert!(port_free(port), "port {port} still taken after drop");
    }
}

const ORPHAN_CHILD: &str = "TEST_REDIS_ORPHAN_CHILD";

/// Run by [`an_undropped_server_is_stopped_when_the_process_exits`] in a
/// child process: starts a server, reports it, and exits without dropping it.
#[tokio::test]
#[ignore = "helper: runs in a child process of another test"]
async fn orphaned_server_child() {
    if std::env::var_os(ORPHAN_CHILD).is_none() {
        return;
    }
    let redis = RedisServer::start().await;
    println!("orphan {} {}", redis.pid(), redis.dir().display());
    std::mem::forget(redis);
}

#[test]
fn an_undropped_server_is_stopped_when_the_process_exits() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "orphaned_server_child",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(ORPHAN_CHILD, "1")
        .output()
        .expect("run the child test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("orphan "))
        .unwrap_or_else(|| panic!("no report from the child:\n{stdout}"));
    let (pid, dir) = line.split_once(' ').unwrap();
    let (pid, dir): (u32, PathBuf) = (pid.parse().unwrap(), dir.into());

    let t = Instant::now();
    let gone = |dir: &Path| !running(pid) && !dir.exists();
    while !gone(&dir) {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "redis-server {pid} (running: {}) or {} (exists: {}) left behind",
            running(pid),
            dir.display(),
            dir.exists()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "watchdog cleaned up {:?} after the child exited",
        t.elapsed()
    );
}
