//! The PostgreSQL test harness itself (tests/common/postgres.rs): a private
//! cluster starts, hands out separate databases, survives a stop and start
//! with its data, and leaves no process or directory behind.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::postgres::{PgCluster, fresh_postgres_url};
use sqlx::{Connection, PgConnection};

/// Whether `pid` is a live process (not gone, not a zombie).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
        !matches!(state.and_then(|s| s.chars().next()), Some('Z' | 'X') | None)
    })
}

async fn count(url: &str, sql: &'static str) -> i64 {
    let mut conn = PgConnection::connect(url).await.expect("connect");
    let n = sqlx::query_scalar(sql)
        .fetch_one(&mut conn)
        .await
        .expect(sql);
    conn.close().await.expect("close");
    n
}

#[tokio::test]
async fn private_cluster_keeps_its_data_over_a_restart_and_cleans_up() {
    let t = Instant::now();
    let mut pg = PgCluster::new().await;
    eprintln!("initdb + start: {:?}", t.elapsed());

    let t = Instant::now();
    let a = pg.fresh_database().await;
    eprintln!("CREATE DATABASE: {:?}", t.elapsed());
    let b = pg.fresh_database().await;
    assert_ne!(a, b);
    let prefix = format!("postgres://tessera@127.0.0.1:{}/t_", pg.port());
    assert!(a.starts_with(&prefix), "{a}");

    let mut conn = PgConnection::connect(&a).await.expect("connect to a");
    sqlx::query("CREATE TABLE kept (v text)")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO kept VALUES ('row')")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let tables = "SELECT count(*) FROM pg_tables WHERE tablename = 'kept'";
    assert_eq!(count(&b, tables).await, 0, "databases are separate");

    let (port, pid) = (pg.port(), pg.pid());
    // An open session does not hold up the fast shutdown.
    let mut open = PgConnection::connect(&a).await.unwrap();
    let t = Instant::now();
    pg.stop().await;
    eprintln!("stop: {:?}", t.elapsed());
    assert!(!running(pid), "postmaster {pid} still running after stop");
    assert!(sqlx::query("SELECT 1").execute(&mut open).await.is_err());
    assert!(
        PgConnection::connect(&a).await.is_err(),
        "connects while stopped"
    );

    let t = Instant::now();
    pg.start().await;
    eprintln!("start to ready: {:?}", t.elapsed());
    assert_eq!(pg.port(), port);
    assert_ne!(pg.pid(), pid);
    assert_eq!(count(&a, "SELECT count(*) FROM kept").await, 1);

    let (pid, dir) = (pg.pid(), pg.dir().to_owned());
    let t = Instant::now();
    drop(pg);
    eprintln!("drop: {:?}", t.elapsed());
    assert!(!running(pid), "postmaster {pid} still running after drop");
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[tokio::test]
async fn durable_cluster_starts() {
    let pg = PgCluster::durable().await;
    let mut conn = PgConnection::connect(&pg.fresh_database().await)
        .await
        .unwrap();
    let sync: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let fsync: String = sqlx::query_scalar("SHOW fsync")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!((sync.as_str(), fsync.as_str()), ("on", "on"));
}

#[tokio::test]
async fn shared_cluster_hands_out_fresh_databases() {
    let (a, b) = (fresh_postgres_url().await, fresh_postgres_url().await);
    assert_ne!(a, b);
    for url in [a, b] {
        let n = count(
            &url,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
        );
        assert_eq!(n.await, 0, "{url} is not empty");
    }
}

const ORPHAN_CHILD: &str = "TEST_PG_ORPHAN_CHILD";

/// Run by [`an_undropped_cluster_is_stopped_when_the_process_exits`] in a
/// child process: starts a cluster, reports it, and exits without dropping it.
#[tokio::test]
#[ignore = "helper: runs in a child process of another test"]
async fn orphaned_cluster_child() {
    if std::env::var_os(ORPHAN_CHILD).is_none() {
        return;
    }
    let pg = PgCluster::new().await;
    println!("orphan {} {}", pg.pid(), pg.dir().display());
    std::mem::forget(pg);
}

#[test]
fn an_undropped_cluster_is_stopped_when_the_process_exits() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "orphaned_cluster_child",
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
            "postmaster {pid} (running: {}) or {} (exists: {}) left behind",
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
