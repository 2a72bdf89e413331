//! A real SMTP server for the mail tests: `aiosmtpd` (PyPI; `scripts/test`
//! installs it) on an ephemeral loopback port, run by a few lines of Python
//! that store each delivered message, parsed by Python's own `email`
//! package, as a JSON file: the envelope, the headers and both bodies
//! decoded. Stopped by PID on drop (SIGTERM, then SIGKILL after 10 s). A
//! missing `aiosmtpd` is a panic saying how to install it, never a skip.
//! [`SmtpServer::start_rejecting`] makes it refuse the recipients of one
//! domain for good (`550` at `RCPT TO`), noting each refusal.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use tempfile::TempDir;

const INSTALL: &str = "install it with: python3 -m pip install 'aiosmtpd>=1.4' (scripts/test does)";

/// The server: aiosmtpd's SMTP protocol on an asyncio server bound to port
/// 0 on 127.0.0.1; the port it got is written to `DIR/port` once it
/// listens, each message to `DIR/NNNNNN.json` (renamed into place whole).
/// With a second argument, a domain, `RCPT TO` an address of that domain
/// is answered `550` and noted as `DIR/NNNNNN.rejected` (the address).
const SERVER: &str = r#"
import asyncio, email, email.policy, itertools, json, os, sys
from aiosmtpd.smtp import SMTP

out = sys.argv[1]
reject = sys.argv[2].lower() if len(sys.argv) > 2 else None
numbers = itertools.count()

def keep(suffix, text):
    n = next(numbers)
    tmp = os.path.join(out, f".{n}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, os.path.join(out, f"{n:06}.{suffix}"))

class Store:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if reject is not None and address.lower().endswith("@" + reject):
            keep("rejected", address)
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        m = email.message_from_bytes(envelope.content, policy=email.policy.default)
        def body(kind):
            part = m.get_body((kind,))
            return part.get_content() if part is not None else None
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "from": str(m["From"]),
            "to": str(m["To"]),
            "subject": str(m["Subject"]),
            "text": body("plain"),
            "html": body("html"),
        }
        keep("json", json.dumps(record))
        return "250 OK"

async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(Store()), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    with open(os.path.join(out, ".port"), "w") as f:
        f.write(str(port))
    os.rename(os.path.join(out, ".port"), os.path.join(out, "port"))
    await server.serve_forever()

asyncio.run(main())
"#;

/// One delivered message.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub envelope_from: String,
    pub envelope_to: Vec<String>,
    pub from: String,
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl Delivered {
    /// The first `http(s)://…` in the plain-text body that contains `needle`.
    pub fn link_with(&self, needle: &str) -> Option<String> {
        self.text
            .split_whitespace()
            .find(|w| (w.starts_with("http://") || w.starts_with("https://")) && w.contains(needle))
            .map(str::to_owned)
    }
}

pub struct SmtpServer {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl SmtpServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A server that refuses every recipient at `domain` for good: `550
    /// 5.1.1 mailbox unavailable` at `RCPT TO` (see [`SmtpServer::rejected`]).
    pub fn start_rejecting(domain: &str) -> Self {
        Self::start_with(&[domain])
    }

    fn start_with(args: &[&str]) -> Self {
        let check = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run python3 ({e}); {INSTALL}"));
        assert!(
            check.status.success(),
            "aiosmtpd is missing: {}; {INSTALL}",
            String::from_utf8_lossy(&check.stderr).trim()
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("server.log");
        let mut child = Command::new("python3")
            .args(["-c", SERVER])
            .arg(dir.path())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("server log"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the SMTP server ({e}); {INSTALL}"));
        let port_file = dir.path().join("port");
        let started = Instant::now();
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                break text.trim().parse().expect("port");
            }
            if let Ok(Some(status)) = child.try_wait() {
                let err = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("the SMTP server exited ({status}): {err}; {INSTALL}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the SMTP server did not listen within 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Self { child, port, dir }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `smtp_url` setting that sends here.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Every message delivered so far, in order.
    pub fn messages(&self) -> Vec<Delivered> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir())
            .expect("mail dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| {
                let v: Value =
                    serde_json::from_str(&std::fs::read_to_string(f).expect("read")).expect("json");
                let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
                Delivered {
                    envelope_from: s("mail_from"),
                    envelope_to: v["rcpt_tos"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|x| x.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default(),
                    from: s("from"),
                    to: s("to"),
                    subject: s("subject"),
                    text: s("text"),
                    html: s("html"),
                }
            })
            .collect()
    }

    /// Every recipient refused so far (one entry per `RCPT TO` refused),
    /// in order.
    pub fn rejected(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir())
            .expect("mail dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "rejected"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| std::fs::read_to_string(f).expect("read"))
            .collect()
    }

    /// The messages to `to` (the envelope recipient).
    pub fn messages_to(&self, to: &str) -> Vec<Delivered> {
        self.messages()
            .into_iter()
            .filter(|m| m.envelope_to.iter().any(|r| r.eq_ignore_ascii_case(to)))
            .collect()
    }

    /// Waits (yielding to the runtime, so the app's tasks run) until `to`
    /// has received `n` messages; returns them. Panics after 15 s.
    pub async fn wait_for(&self, to: &str, n: usize) -> Vec<Delivered> {
        let started = Instant::now();
        loop {
            let got = self.messages_to(to);
            if got.len() >= n {
                return got;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "{to} received {} messages, not {n}, within 15 s: {got:#?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits (as [`SmtpServer::wait_for`]) until `to` has received a
    /// message with this subject, whatever else it received; returns the
    /// newest such. Panics after 15 s.
    pub async fn wait_for_subject(&self, to: &str, subject: &str) -> Delivered {
        let started = Instant::now();
        loop {
            let got = self.messages_to(to);
            if let Some(m) = got.iter().rev().find(|m| m.subject == subject) {
                return m.clone();
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "{to} received no message {subject:?} within 15 s: {got:#?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = kill(pid, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}
