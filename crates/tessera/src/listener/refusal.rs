//! hyper's own refusals (400, 414, 431), rewritten on their way to the
//! socket into the contract's JSON error shape.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A connection's socket. hyper answers a request it cannot parse itself,
/// before any service sees it, with an empty body; on the way to the socket
/// such an answer is replaced by the contract's JSON error (see
/// [`json_refusal`]). Everything else passes through untouched: the check
/// on each write is one comparison of its first ten bytes.
pub(super) struct Socket {
    stream: TcpStream,
    /// A replacement answer, and how much of it is written.
    pending: Option<(Vec<u8>, usize)>,
}

impl Socket {
    pub(super) fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            pending: None,
        }
    }

    /// Writes what is left of a replacement answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let Some((bytes, sent)) = self.pending.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            if *sent >= bytes.len() {
                self.pending = None;
                return Poll::Ready(Ok(()));
            }
            let n = ready!(Pin::new(&mut self.stream).poll_write(cx, &bytes[*sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *sent += n;
        }
    }

    /// When `buf` starts with hyper's own refusal: takes its head in place
    /// of writing it, and writes the replacement (now or on the next write
    /// or flush).
    fn take_refusal(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Option<io::Result<usize>> {
        let (consumed, replacement) = json_refusal(buf)?;
        self.pending = Some((replacement, 0));
        if let Poll::Ready(Err(e)) = self.poll_pending(cx) {
            return Some(Err(e));
        }
        Some(Ok(consumed))
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if let Some(taken) = this.take_refusal(cx, buf) {
            return Poll::Ready(taken);
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if let Some(first) = bufs.iter().find(|b| !b.is_empty())
            && let Some(taken) = this.take_refusal(cx, first)
        {
            return Poll::Ready(taken);
        }
        Pin::new(&mut this.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}

/// hyper refuses, before any service runs and with an empty body, a request
/// that is not HTTP/1.1 (400), whose target is over 65,534 bytes (414), or
/// with more than 100 header fields or a header section over its read
/// buffer (about 400 KiB; 431). When `bytes` starts with such an answer:
/// the length of hyper's head and the contract's JSON error to send
/// instead. hyper's head is known by its exact shape (one of those
/// statuses, and no header but `connection`, `content-length: 0` and
/// `date`); every answer of the application carries a `content-type`, so
/// none is taken for one.
pub(super) fn json_refusal(bytes: &[u8]) -> Option<(usize, Vec<u8>)> {
    if !bytes.starts_with(b"HTTP/1.1 4") {
        return None;
    }
    let description = match bytes.get(9..13)? {
        b"400 " => "the request is not valid HTTP/1.1",
        b"414 " => "the request target is too long",
        b"431 " => "the request has too many or too large header fields",
        _ => return None,
    };
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&bytes[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let mut date = None;
    let mut empty = false;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("date") {
            date = Some(value);
        } else if name.eq_ignore_ascii_case("content-length") {
            empty = value == "0";
        } else if !name.eq_ignore_ascii_case("connection") {
            return None;
        }
    }
    if !empty {
        return None;
    }
    let body = serde_json::json!({
        "error": "invalid_request",
        "error_description": description,
    })
    .to_string();
    let mut answer = format!(
        "{status_line}\r\ncontent-type: application/json\r\ncache-control: no-store\r\n\
         x-content-type-options: nosniff\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    if let Some(date) = date {
        answer.push_str("date: ");
        answer.push_str(date);
        answer.push_str("\r\n");
    }
    answer.push_str("\r\n");
    answer.push_str(&body);
    Some((end + 4, answer.into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_own_refusals_become_contract_json() {
        let hyper_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\n\
                          content-length: 0\r\ndate: Mon, 07 Dec 2026 14:14:11 GMT\r\n\r\n";
        let (consumed, answer) = json_refusal(hyper_431).unwrap();
        assert_eq!(consumed, hyper_431.len());
        let answer = String::from_utf8(answer).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{head}"
        );
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(
            head.contains("date: Mon, 07 Dec 2026 14:14:11 GMT"),
            "{head}"
        );
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"], "invalid_request");

        for status in ["400 Bad Request", "414 URI Too Long"] {
            let head = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
            assert!(json_refusal(head.as_bytes()).is_some(), "{status}");
        }
    }

    #[test]
    fn the_applications_answers_pass_untouched() {
        for bytes in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 20\r\n\r\n{\"error\":\"x\"}",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n",
            b"{\"error\":\"HTTP/1.1 400 \"}",
        ] {
            assert!(
                json_refusal(bytes).is_none(),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
}
