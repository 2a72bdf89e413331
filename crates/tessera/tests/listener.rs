//! The accept loop: real TCP, a header-read timeout against slow clients
//! (kept per connection: it must neither cut a response in progress nor let
//! an idle connection live on), the peer address reaching handlers, and the
//! requests hyper refuses itself answered in the contract's error shape.
//! Floods and connection caps are in `overload_connections.rs`.

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

/// Sends one keep-alive request and reads its whole (bodiless or short)
/// answer.
async fn ask(stream: &mut TcpStream, path: &str) -> String {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before answering");
            seen.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&seen);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if body.len() >= length {
                    return text.into_owned();
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("answered in time")
}

#[tokio::test]
async fn a_connection_idle_after_its_answer_is_closed_but_a_busy_one_is_kept() {
    let t = TestApp::new().await;
    let (addr, stop) = start(&t, Duration::from_millis(500)).await;

    // A request every 150 ms for 1.5 s: three timeouts' worth, one connection.
    let mut busy = TcpStream::connect(addr).await.unwrap();
    for _ in 0..10 {
        let answer = ask(&mut busy, "/healthz").await;
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }

    // Then silence: the connection is closed about one timeout later.
    let started = Instant::now();
    let rest = read_to_close(&mut busy).await;
    let waited = started.elapsed();
    assert!(rest.is_empty(), "{rest}");
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );

    // The direct verify path counts as a request like any other.
    let mut verifying = TcpStream::connect(addr).await.unwrap();
    let answer = ask(&mut verifying, "/v1/verify").await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let started = Instant::now();
    read_to_close(&mut verifying).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    stop.cancel();
}

#[tokio::test]
async fn a_response_still_streaming_is_not_cut_by_the_header_timeout() {
    let t = TestApp::new().await;
    let (addr, stop) = start(&t, Duration::from_millis(300)).await;
    let mut body = common::revocation_stream(&t, addr).await.bytes_stream();

    // Several timeouts later the stream still delivers what happens.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let pair = t.tokens_for("streamer@example.com").await;
    let access = pair["access_token"].as_str().unwrap();
    t.send(common::Req::post("/v1/token/revoke").form(&[("token", access)]))
        .await;
    let jti = common::jwt::decode_part(access, 1)["jti"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains(&jti) {
        let chunk = tokio::time::timeout_at(deadline, futures_util::StreamExt::next(&mut body))
            .await
            .expect("the revocation arrived in time")
            .expect("the stream is still open")
            .expect("the stream is still open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    t.app.core.shutdown.cancel();
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

/// hyper refuses some requests itself, before the application sees them;
/// they get the contract's JSON error like every other refusal.
#[tokio::test]
async fn requests_hyper_refuses_get_the_json_error_shape() {
    let t = TestApp::new().await;
    let (addr, stop) = start(&t, Duration::from_secs(5)).await;
    let many_headers: String = (0..120).map(|i| format!("X-Header-{i}: y\r\n")).collect();
    let huge_header = format!("X-Big: {}\r\n", "y".repeat(500 * 1024));
    let cases = [
        // More than 100 header fields.
        (
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many_headers}\r\n"),
            "431",
        ),
        // A header section larger than hyper's read buffer.
        (
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{huge_header}\r\n"),
            "431",
        ),
        // A request target over 65,534 bytes.
        (
            format!(
                "GET /healthz?q={} HTTP/1.1\r\nHost: x\r\n\r\n",
                "a".repeat(70_000)
            ),
            "414",
        ),
        // Not HTTP at all.
        ("HELLO THERE\r\n\r\n".to_owned(), "400"),
    ];
    for (request, status) in cases {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        // The server may answer (and close) before reading all of a huge
        // request: a failed write is fine, the answer is what counts.
        let _ = stream.write_all(request.as_bytes()).await;
        let answer = read_to_close(&mut stream).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{status}: {answer}"
        );
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"], "invalid_request", "{status}: {body}");
        assert!(
            body["error_description"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "{body}"
        );
    }

    // The application's own errors are untouched, and the server serves on.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 404 "), "{answer}");
    assert!(answer.contains(r#""error":"not_found""#), "{answer}");
    stop.cancel();
}
