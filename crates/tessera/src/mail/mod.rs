//! Outgoing mail: what Tessera sends (password reset links, "your password
//! was changed") and how, without ever making a request wait for it.
//!
//! - **The outbox** ([`Outbox`]) is a bounded queue drained by one
//!   background task. Queuing never blocks: a full queue drops the message
//!   (counted and audited as a failure), so a flood of requests cannot
//!   hold requests up or grow memory. A message that fails for a reason
//!   that may pass (a 4xx reply, a refused or dropped connection, a
//!   timeout) is tried up to [`MAX_ATTEMPTS`] times with exponential
//!   backoff (1 s, 2 s, 4 s, …), then given up; one that fails for good (a
//!   5xx reply such as `550` mailbox unavailable, or a recipient that is
//!   not a mailbox: see [`SendError`]) is given up at once, since trying
//!   again would only be refused again. Sent messages count in
//!   `tessera_mail_sent_total`, given-up ones in `tessera_mail_failed_total`
//!   and as a `mail_failed` audit event that names the kind of mail, the
//!   attempts made and the error, never the message (which may carry a
//!   link).
//! - **Callers queue a message only after their own work committed** (the
//!   link's token is stored before the mail naming it is queued), so a mail
//!   never points at something that does not exist.
//! - **Transports**: [`log`](LogTransport) (the default, when no SMTP URL
//!   is set) and [`smtp`](smtp::SmtpTransport). Links in mail are built
//!   from the configured public URL only, never from a request's `Host`.

pub mod signup;
pub mod smtp;
pub mod templates;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

/// One message: plain text and HTML bodies of the same content.
#[derive(Clone)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// The bodies may carry a link with a token: never printed by `Debug`.
impl fmt::Debug for Mail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mail")
            .field("to", &self.to)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// Why a message was not delivered (without the message in it), and
/// whether trying it again later may help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendError {
    pub message: String,
    /// The failure will not pass (an SMTP 5xx reply, a recipient that is
    /// not a mailbox): the message is given up without retries.
    pub permanent: bool,
}

impl SendError {
    /// A failure that may pass: the message is tried again later.
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            permanent: false,
        }
    }

    /// A failure that will not pass: the message is given up at once.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            permanent: true,
        }
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Delivers one message, or says why not.
#[async_trait]
pub trait Transport: Send + Sync {
    async fn send(&self, mail: &Mail) -> Result<(), SendError>;
}

/// The `log` mailer: writes each message, **link included**, to the log at
/// `info` (target `tessera::mail`). It exists for development and for
/// operators without mail, who read links from the log: it is the one place
/// where Tessera writes a token to its log, on purpose. With SMTP set it is
/// not used.
pub struct LogTransport {
    pub from: String,
}

#[async_trait]
impl Transport for LogTransport {
    async fn send(&self, mail: &Mail) -> Result<(), SendError> {
        tracing::info!(
            target: "tessera::mail",
            from = %self.from,
            to = %mail.to,
            subject = %mail.subject,
            "mail (log mailer; set TESSERA_SMTP_URL to send it):\n{}",
            mail.text
        );
        Ok(())
    }
}

/// How many times a message is tried before it is given up (when its
/// failures may pass; a permanent one ends it at the first).
pub const MAX_ATTEMPTS: u32 = 5;
/// Messages waiting at most; beyond, new ones are dropped (and counted).
pub const QUEUE_CAPACITY: usize = 1024;
/// The first retry's delay; each later one doubles it.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);

/// A queued message with what the audit says about it if it fails.
pub struct Queued {
    pub mail: Mail,
    /// What kind of mail (`password_reset`, `password_changed`, `welcome`, …).
    pub kind: &'static str,
    /// The user it is for.
    pub user_id: Option<String>,
}

/// What the outbox reports: each message sent or given up.
#[async_trait]
pub trait Report: Send + Sync {
    fn sent(&self, kind: &'static str);
    async fn failed(&self, kind: &'static str, user_id: Option<&str>, attempts: u32, error: &str);
}

/// The queue in front of a transport (see the module's doc).
pub struct Outbox {
    queue: mpsc::Sender<Queued>,
    report: Arc<dyn Report>,
}

impl Outbox {
    /// Starts the sender task on the current runtime. It ends when the
    /// outbox is dropped and the queue is drained.
    pub fn start(transport: Arc<dyn Transport>, report: Arc<dyn Report>) -> Self {
        Self::start_with(transport, report, FIRST_RETRY)
    }

    /// As [`Outbox::start`] with another first retry delay.
    pub fn start_with(
        transport: Arc<dyn Transport>,
        report: Arc<dyn Report>,
        first_retry: Duration,
    ) -> Self {
        let (queue, mut waiting) = mpsc::channel::<Queued>(QUEUE_CAPACITY);
        let reporter = Arc::clone(&report);
        tokio::spawn(async move {
            while let Some(q) = waiting.recv().await {
                deliver(transport.as_ref(), reporter.as_ref(), q, first_retry).await;
            }
        });
        Self { queue, report }
    }

    /// Queues a message; never waits. A full queue drops it (reported as a
    /// failure).
    pub async fn send(&self, q: Queued) {
        if let Err(mpsc::error::TrySendError::Full(q) | mpsc::error::TrySendError::Closed(q)) =
            self.queue.try_send(q)
        {
            tracing::warn!(
                kind = q.kind,
                "the mail queue is full: a message was dropped"
            );
            self.report
                .failed(q.kind, q.user_id.as_deref(), 0, "the mail queue is full")
                .await;
        }
    }
}

async fn deliver(transport: &dyn Transport, report: &dyn Report, q: Queued, first_retry: Duration) {
    let mut delay = first_retry;
    for attempt in 1..=MAX_ATTEMPTS {
        match transport.send(&q.mail).await {
            Ok(()) => {
                report.sent(q.kind);
                return;
            }
            Err(e) if e.permanent => {
                tracing::error!(kind = q.kind, attempts = attempt, error = %e, "a mail could not be sent: refused for good, given up without retrying");
                report
                    .failed(q.kind, q.user_id.as_deref(), attempt, &e.message)
                    .await;
                return;
            }
            Err(e) if attempt == MAX_ATTEMPTS => {
                tracing::error!(kind = q.kind, attempts = attempt, error = %e, "a mail could not be sent: given up");
                report
                    .failed(q.kind, q.user_id.as_deref(), attempt, &e.message)
                    .await;
            }
            Err(e) => {
                tracing::warn!(kind = q.kind, attempt, error = %e, retry_in = ?delay, "a mail could not be sent: will retry");
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Fails the first `fail_first` tries (for good when `permanent`),
    /// then delivers.
    struct Flaky {
        fail_first: u32,
        permanent: bool,
        tries: AtomicU32,
    }

    #[async_trait]
    impl Transport for Flaky {
        async fn send(&self, _: &Mail) -> Result<(), SendError> {
            let n = self.tries.fetch_add(1, Ordering::SeqCst) + 1;
            if n <= self.fail_first {
                Err(SendError {
                    message: format!("refused #{n}"),
                    permanent: self.permanent,
                })
            } else {
                Ok(())
            }
        }
    }

    #[derive(Default)]
    struct Seen(Mutex<Vec<String>>);

    #[async_trait]
    impl Report for Seen {
        fn sent(&self, kind: &'static str) {
            self.0.lock().unwrap().push(format!("sent {kind}"));
        }
        async fn failed(&self, kind: &'static str, _: Option<&str>, attempts: u32, error: &str) {
            self.0
                .lock()
                .unwrap()
                .push(format!("failed {kind} after {attempts}: {error}"));
        }
    }

    fn queued() -> Queued {
        Queued {
            mail: Mail {
                to: "a@example.com".into(),
                subject: "s".into(),
                text: "t".into(),
                html: "h".into(),
            },
            kind: "password_reset",
            user_id: None,
        }
    }

    async fn run(fail_first: u32) -> (u32, Vec<String>) {
        let (tries, log, _) = run_timed(fail_first, false).await;
        (tries, log)
    }

    /// Queues one message on a transport that fails `fail_first` times;
    /// returns the tries it got and what was reported, plus the (paused)
    /// seconds it took.
    async fn run_timed(fail_first: u32, permanent: bool) -> (u32, Vec<String>, u32) {
        let transport = Arc::new(Flaky {
            fail_first,
            permanent,
            tries: AtomicU32::new(0),
        });
        let seen = Arc::new(Seen::default());
        let outbox = Outbox::start_with(transport.clone(), seen.clone(), Duration::from_secs(1));
        let started = tokio::time::Instant::now();
        outbox.send(queued()).await;
        // Paused time: the backoff sleeps pass at once, in order.
        while seen.0.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let waited = started.elapsed().as_secs() as u32;
        let log = seen.0.lock().unwrap().clone();
        assert!(waited < 60, "{waited}");
        (transport.tries.load(Ordering::SeqCst), log, waited)
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_is_retried_with_backoff_until_sent() {
        let (tries, log) = run(2).await;
        assert_eq!(tries, 3);
        assert_eq!(log, ["sent password_reset"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_is_given_up_after_the_last_attempt() {
        let (tries, log) = run(100).await;
        assert_eq!(tries, MAX_ATTEMPTS);
        assert_eq!(
            log,
            [format!(
                "failed password_reset after {MAX_ATTEMPTS}: refused #5"
            )]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_failure_is_given_up_at_once() {
        let (tries, log, waited) = run_timed(100, true).await;
        assert_eq!(tries, 1, "no retry after a permanent failure");
        assert_eq!(log, ["failed password_reset after 1: refused #1"]);
        // Reported before the first retry would even have been due.
        assert_eq!(waited, 0);
        // Transient failures still back off and retry: 1 + 2 + 4 + 8 s.
        let (tries, _, waited) = run_timed(100, false).await;
        assert_eq!(tries, MAX_ATTEMPTS);
        assert!(waited >= 15, "{waited}");
    }

    #[test]
    fn debug_never_shows_the_bodies() {
        let shown = format!("{:?}", queued().mail);
        assert!(
            shown.contains("a@example.com") && !shown.contains("\"t\""),
            "{shown}"
        );
    }
}
