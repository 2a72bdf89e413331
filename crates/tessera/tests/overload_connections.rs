//! Connection floods (issue #19, finding 3), loopback only and bounded in
//! time: bodies that never arrive are answered 408 and closed after the
//! read deadline; connections past the per-address cap are closed at once
//! while other addresses are served and the server's descriptors stay
//! bounded; past the overall cap new connections wait for a free slot; a
//! trusted proxy is not held to the per-address cap.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::node::{Node, Store};
use common::{PASSWORD, TestApp};
use tessera::listener::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

/// Cheap hashing and no login rate limit: every request of these tests
/// comes from 127.0.0.1.
const SETTINGS: [(&str, &str); 3] = [
    ("argon2_memory_kib", "7168"),
    ("argon2_iterations", "1"),
    ("ip_rate_limit", "0"),
];

async fn start(t: &TestApp, limits: Limits) -> (SocketAddr, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let cancelled = stop.clone();
    tokio::spawn(tessera::listener::serve_with(
        listener,
        t.app.router(),
        limits,
        async move { cancelled.cancelled().await },
    ));
    (addr, stop)
}

/// Reads until the server closes the connection (or `within` passes):
/// what it sent, and whether it closed.
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut seen = Vec::new();
    let closed = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&seen).into_owned(), closed)
}

/// One request on a fresh connection from `from` (any loopback address),
/// answered and closed within 5 s: the whole answer.
async fn request_from(from: &str, addr: SocketAddr, request: &str) -> String {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let (answer, closed) = read_to_close(&mut stream, Duration::from_secs(5)).await;
    assert!(closed, "no complete answer in 5 s: {answer:?}");
    answer
}

fn healthz() -> &'static str {
    "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
}

fn login(email: &str) -> String {
    let body = format!(r#"{{"email":"{email}","password":"{PASSWORD}"}}"#);
    format!(
        "POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn bodies_that_never_arrive_are_answered_408_and_closed_while_others_are_served() {
    let t = TestApp::with(&SETTINGS).await;
    t.register("patient@example.com").await;
    let timeout = Duration::from_secs(3);
    let (addr, stop) = start(&t, Limits::read_timeout(timeout)).await;

    // 200 logins whose headers promise 1000 bytes of body, of which a few
    // arrive.
    let started = Instant::now();
    let mut flood = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 1000\r\n\r\n{\"email\":",
        )
        .await
        .unwrap();
        flood.push(s);
    }

    // Meanwhile everyone else is served at once.
    let answer = request_from("127.0.0.1", addr, healthz()).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    let answer = request_from("127.0.0.1", addr, &login("patient@example.com")).await;
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(
        started.elapsed() < timeout,
        "the other requests waited for the flood: {:?}",
        started.elapsed()
    );

    // Each of the flood is told why and closed, about one timeout after its
    // headers (plus the second the 408 is given to leave).
    for mut s in flood {
        let (answer, closed) = read_to_close(&mut s, Duration::from_secs(10)).await;
        assert!(closed, "still open after {:?}", started.elapsed());
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(head.contains("connection: close"), "{head}");
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"], "invalid_request", "{body}");
    }
    let waited = started.elapsed();
    assert!(
        waited >= timeout && waited < timeout + Duration::from_secs(5),
        "closed after {waited:?}"
    );
    stop.cancel();
}

#[tokio::test]
async fn a_body_that_arrives_within_the_deadline_is_served_and_the_deadline_is_per_request() {
    let t = TestApp::with(&SETTINGS).await;
    t.register("slow@example.com").await;
    let timeout = Duration::from_millis(1000);
    let (addr, stop) = start(&t, Limits::read_timeout(timeout)).await;

    // Keep-alive: three logins, each body sent in two halves 600 ms apart
    // (1.8 s on one connection, each body within its own deadline).
    let body = format!(r#"{{"email":"slow@example.com","password":"{PASSWORD}"}}"#);
    let (first, second) = body.split_at(10);
    let mut s = TcpStream::connect(addr).await.unwrap();
    for _ in 0..3 {
        s.write_all(
            format!(
                "POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n{first}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        s.write_all(second.as_bytes()).await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        let answer = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
                seen.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&seen).into_owned();
                if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    if rest.len() >= length {
                        return text;
                    }
                }
            }
        })
        .await
        .expect("answered in time");
        assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    }
    stop.cancel();
}

/// Opens `n` connections from 127.0.0.1 that send nothing.
async fn idle_connections(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(TcpStream::connect(addr).await.unwrap());
    }
    out
}

/// How many of `streams` the server has closed (read gives end of file or
/// a reset within `within`); the others are still open.
async fn closed_count(streams: &mut [TcpStream], within: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + within;
    let mut closed = 0;
    for s in streams.iter_mut() {
        let mut buf = [0u8; 64];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            closed += 1;
        }
    }
    closed
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[tokio::test]
async fn an_idle_flood_past_the_per_address_cap_is_closed_at_once_and_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let db = Store::Sqlite.fresh_url(dir.path()).await;
    let node = Node::start_with(&db, &[("TESSERA_MAX_CONNECTIONS_PER_IP", "50")]).await;
    let pid = node.pid().unwrap();
    let before = open_files(pid);

    // 400 connections from one address, sending nothing (the deadline would
    // close them only after 10 s; this test is done before that).
    let started = Instant::now();
    let mut flood = idle_connections(node.addr, 400).await;
    let closed = closed_count(&mut flood, Duration::from_millis(1500)).await;
    assert!(started.elapsed() < Duration::from_secs(8));
    // The node's own client may hold a pooled connection from 127.0.0.1.
    assert!(
        (349..=360).contains(&closed),
        "{closed} of 400 closed at once with a cap of 50\n{}",
        node.log()
    );
    let during = open_files(pid);
    assert!(
        during <= before + 55,
        "the server holds {during} descriptors (from {before}) during the flood"
    );

    // Another address is served; the flooding one is not.
    let answer = request_from("127.0.0.2", node.addr, healthz()).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    let mut more = idle_connections(node.addr, 1).await;
    assert_eq!(
        closed_count(&mut more, Duration::from_millis(1000)).await,
        1
    );

    // Once the flood ends, the address is served again.
    drop(flood);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let socket = TcpSocket::new_v4().unwrap();
        let mut stream = socket.connect(node.addr).await.unwrap();
        stream.write_all(healthz().as_bytes()).await.unwrap();
        let (answer, _) = read_to_close(&mut stream, Duration::from_secs(2)).await;
        if answer.starts_with("HTTP/1.1 200 OK") {
            break;
        }
        assert!(Instant::now() < deadline, "127.0.0.1 still refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn past_the_overall_cap_new_connections_wait_for_a_free_slot() {
    let t = TestApp::with(&SETTINGS).await;
    let limits = Limits {
        max_connections: Some(4),
        ..Limits::read_timeout(Duration::from_secs(10))
    };
    let (addr, stop) = start(&t, limits).await;

    let mut held = idle_connections(addr, 4).await;
    assert_eq!(closed_count(&mut held, Duration::from_millis(300)).await, 0);

    // A fifth connects (the kernel queues it) but is not served...
    let mut fifth = TcpStream::connect(addr).await.unwrap();
    fifth.write_all(healthz().as_bytes()).await.unwrap();
    let (answer, closed) = read_to_close(&mut fifth, Duration::from_millis(700)).await;
    assert!(
        !closed && answer.is_empty(),
        "served past the cap: {answer}"
    );

    // ...until one of the four closes.
    drop(held.pop());
    let (answer, closed) = read_to_close(&mut fifth, Duration::from_secs(5)).await;
    assert!(closed && answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    stop.cancel();
}

#[tokio::test]
async fn a_trusted_proxy_is_not_held_to_the_per_address_cap() {
    let t = TestApp::with(&SETTINGS).await;
    let capped = |exempt: &str| Limits {
        max_connections_per_ip: Some(3),
        exempt: vec![exempt.parse().unwrap()],
        ..Limits::read_timeout(Duration::from_secs(10))
    };

    // 127.0.0.1 is the proxy: ten connections are all served.
    let (proxied, stop_proxied) = start(&t, capped("127.0.0.1/32")).await;
    let mut streams = idle_connections(proxied, 10).await;
    assert_eq!(
        closed_count(&mut streams, Duration::from_millis(300)).await,
        0
    );
    for s in &mut streams {
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let (answer, _) = read_to_close(s, Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    }

    // Another proxy is trusted: 127.0.0.1 is an ordinary client, held to 3.
    let (direct, stop_direct) = start(&t, capped("10.0.0.0/8")).await;
    let mut streams = idle_connections(direct, 10).await;
    assert_eq!(
        closed_count(&mut streams, Duration::from_millis(500)).await,
        7
    );
    stop_proxied.cancel();
    stop_direct.cancel();
}
