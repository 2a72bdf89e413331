//! The accept loop: real TCP, a header-read timeout against slow clients,
//! and the peer address reaching handlers.

mod common;

use std::time::{Duration, Instant};

use common::TestApp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

async fn start(t: &TestApp, header_timeout: Duration) -> (std::net::SocketAddr, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let cancelled = stop.clone();
    tokio::spawn(tessera::listener::serve(
        listener,
        t.app.router(),
        header_timeout,
        async move { cancelled.cancelled().await },
    ));
    (addr, stop)
}

/// Reads until the server closes the connection; returns what it sent.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut seen)).await;
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let t = TestApp::new().await;
    let (addr, stop) = start(&t, Duration::from_millis(500)).await;

    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let started = Instant::now();
    let answer = read_to_close(&mut slow).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
    assert!(!answer.contains("200 OK"), "{answer}");

    // A normal client on the same server is answered, and handlers see its
    // address (the login limiter keys on it, so a login answers, not 500).
    let mut ok = TcpStream::connect(addr).await.unwrap();
    ok.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut ok).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    let body = r#"{"email":"nobody@example.com","password":"wrong password 123"}"#;
    let mut login = TcpStream::connect(addr).await.unwrap();
    login
        .write_all(
            format!(
                "POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let answer = read_to_close(&mut login).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    stop.cancel();
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let t = TestApp::new().await;
    let (addr, stop) = start(&t, Duration::from_secs(5)).await;
    assert!(TcpStream::connect(addr).await.is_ok());
    stop.cancel();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if TcpStream::connect(addr).await.is_err() {
            break;
        }
        assert!(Instant::now() < deadline, "still accepting after shutdown");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
