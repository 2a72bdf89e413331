//! SMTP through lettre, on rustls with the platform's certificate verifier.
//!
//! - `smtps://host[:465]`: implicit TLS from the first byte.
//! - `smtp://host[:587]`: upgrades with STARTTLS when the server offers it.
//!   With credentials to a host that is not loopback, STARTTLS is required:
//!   a server that does not offer it gets nothing (the send fails), so
//!   credentials never cross a network in clear. Without credentials, or
//!   on loopback (a local relay), a server without STARTTLS gets the
//!   message in clear.
//!
//! The URL's user and password (percent-encoded) are the SMTP AUTH
//! credentials; they are never printed ([`SmtpTarget::shown`]).
//!
//! A failure is permanent (the outbox gives the message up without
//! retrying) when the server answered with a 5xx reply, RFC 5321's
//! "permanent negative completion" (`550` mailbox unavailable, `553`
//! mailbox name not allowed, `554` transaction failed, …), or when the
//! message cannot even be built; anything else (a 4xx reply, a refused or
//! dropped connection, TLS trouble, a timeout) may pass and is retried
//! ([`failure`]).

use std::time::Duration;

use async_trait::async_trait;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::response::{Code, Severity};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use zeroize::Zeroizing;

use super::{Mail, SendError, Transport};

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// `smtps://`: TLS from the start.
    Implicit,
    /// `smtp://` with credentials off loopback: STARTTLS or nothing.
    StartTlsRequired,
    /// `smtp://` otherwise: STARTTLS when offered.
    StartTlsOpportunistic,
}

/// A parsed, validated `smtp_url`.
#[derive(Clone)]
pub struct SmtpTarget {
    pub host: String,
    pub port: u16,
    pub security: Security,
    credentials: Option<(String, Zeroizing<String>)>,
}

impl std::fmt::Debug for SmtpTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown())
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl SmtpTarget {
    /// Parses `smtp://[user:password@]host[:port]` or `smtps://…`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = url::Url::parse(text.trim()).map_err(|e| format!("not a URL ({e})"))?;
        let implicit = match url.scheme() {
            "smtps" => true,
            "smtp" => false,
            other => return Err(format!("the scheme must be smtp or smtps, not {other}")),
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("a host is required")?
            .to_ascii_lowercase();
        if url.path() != "" && url.path() != "/"
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err("no path, query or fragment is allowed".into());
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(std::borrow::Cow::into_owned)
                .map_err(|_| "the user or password is not valid UTF-8".to_owned())
        };
        let credentials = match (url.username(), url.password()) {
            ("", None) => None,
            (_, None) => return Err("a user needs a password (user:password@host)".into()),
            (user, Some(password)) => Some((decode(user)?, Zeroizing::new(decode(password)?))),
        };
        let security = if implicit {
            Security::Implicit
        } else if credentials.is_some() && !is_loopback(&host) {
            Security::StartTlsRequired
        } else {
            Security::StartTlsOpportunistic
        };
        Ok(Self {
            port: url.port().unwrap_or(if implicit { 465 } else { 587 }),
            host,
            security,
            credentials,
        })
    }

    /// The URL without credentials, for the banner and `config show`.
    pub fn shown(&self) -> String {
        let scheme = match self.security {
            Security::Implicit => "smtps",
            _ => "smtp",
        };
        let user = if self.credentials.is_some() {
            "[redacted]@"
        } else {
            ""
        };
        format!("{scheme}://{user}{}:{}", self.host, self.port)
    }
}

/// Sends through one SMTP server (a connection per message: mail here is
/// rare, and a connection pool would hold sockets open for nothing).
pub struct SmtpTransport {
    from: Mailbox,
    inner: AsyncSmtpTransport<Tokio1Executor>,
}

/// Longest one SMTP conversation may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

impl SmtpTransport {
    pub fn new(target: &SmtpTarget, from: &str) -> Result<Self, String> {
        let from: Mailbox = from
            .parse()
            .map_err(|e| format!("mail_from is not a mailbox: {e}"))?;
        let tls = TlsParameters::new(target.host.clone())
            .map_err(|e| format!("cannot set up TLS for {}: {e}", target.host))?;
        let tls = match target.security {
            Security::Implicit => Tls::Wrapper(tls),
            Security::StartTlsRequired => Tls::Required(tls),
            Security::StartTlsOpportunistic => Tls::Opportunistic(tls),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&target.host)
            .port(target.port)
            .tls(tls)
            .timeout(Some(SMTP_TIMEOUT));
        if let Some((user, password)) = &target.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.to_string()));
        }
        Ok(Self {
            from,
            inner: builder.build(),
        })
    }
}

/// Whether a failure with this reply code (none: the failure was not a
/// reply) is permanent: only a 5xx reply is.
fn is_permanent(status: Option<Code>) -> bool {
    status.is_some_and(|code| code.severity == Severity::PermanentNegativeCompletion)
}

/// lettre's error as the outbox sees it: permanent after a 5xx reply,
/// transient otherwise (see the module's doc).
fn failure(e: &lettre::transport::smtp::Error) -> SendError {
    let message = format!("SMTP: {e}");
    if is_permanent(e.status()) {
        SendError::permanent(message)
    } else {
        SendError::transient(message)
    }
}

#[async_trait]
impl Transport for SmtpTransport {
    async fn send(&self, mail: &Mail) -> Result<(), SendError> {
        // A message that cannot be built now never will be.
        let to: Mailbox = mail
            .to
            .parse()
            .map_err(|e| SendError::permanent(format!("the recipient is not a mailbox: {e}")))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .multipart(MultiPart::alternative_plain_html(
                mail.text.clone(),
                mail.html.clone(),
            ))
            .map_err(|e| SendError::permanent(format!("cannot build the message: {e}")))?;
        self.inner
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| failure(&e))
    }
}

/// Checks a `mail_from` value: a mailbox (`Name <addr@host>` or
/// `addr@host`) lettre accepts.
pub fn check_mailbox(text: &str) -> Result<(), String> {
    text.parse::<Mailbox>()
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_pick_the_protection_and_hide_credentials() {
        let t = SmtpTarget::parse("smtps://mailer:s%40cret@mail.example.com").unwrap();
        assert_eq!((t.port, t.security), (465, Security::Implicit));
        assert_eq!(t.shown(), "smtps://[redacted]@mail.example.com:465");
        assert!(!format!("{t:?}").contains("cret"));
        assert_eq!(t.credentials.as_ref().unwrap().1.as_str(), "s@cret");
        let t = SmtpTarget::parse("smtp://u:p@mail.example.com:2525").unwrap();
        assert_eq!((t.port, t.security), (2525, Security::StartTlsRequired));
        let t = SmtpTarget::parse("smtp://u:p@127.0.0.1:25").unwrap();
        assert_eq!(t.security, Security::StartTlsOpportunistic);
        let t = SmtpTarget::parse("smtp://mail.example.com").unwrap();
        assert_eq!((t.port, t.security), (587, Security::StartTlsOpportunistic));
        assert_eq!(t.shown(), "smtp://mail.example.com:587");
        for bad in [
            "http://mail.example.com",
            "smtp://",
            "smtp://u@mail.example.com",
            "smtp://mail.example.com/x",
            "smtp://mail.example.com?tls=no",
        ] {
            assert!(SmtpTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_5xx_replies_are_permanent() {
        let code = |reply: &str| {
            format!("{reply} said the server\r\n")
                .parse::<lettre::transport::smtp::response::Response>()
                .expect("a reply")
                .code()
        };
        for permanent in ["550", "551", "552", "553", "554", "521", "530", "535"] {
            assert!(is_permanent(Some(code(permanent))), "{permanent}");
        }
        for transient in ["421", "450", "451", "452", "454"] {
            assert!(!is_permanent(Some(code(transient))), "{transient}");
        }
        // Not a reply at all: a refused or dropped connection, TLS, a
        // timeout.
        assert!(!is_permanent(None));
    }

    /// A one-connection SMTP server on loopback that accepts everything up
    /// to `RCPT TO`, answers that with `rcpt_reply`, and says how many
    /// `RCPT` commands it got.
    async fn refusing_server(rcpt_reply: &'static str) -> (u16, tokio::task::JoinHandle<u32>) {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            write.write_all(b"220 test ESMTP\r\n").await.unwrap();
            let mut rcpts = 0;
            while let Ok(Some(line)) = lines.next_line().await {
                let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
                let reply = match verb.as_str() {
                    "EHLO" | "HELO" => "250 test\r\n",
                    "RCPT" => {
                        rcpts += 1;
                        rcpt_reply
                    }
                    "QUIT" => "221 bye\r\n",
                    _ => "250 OK\r\n",
                };
                if write.write_all(reply.as_bytes()).await.is_err() || verb == "QUIT" {
                    break;
                }
            }
            rcpts
        });
        (port, task)
    }

    fn message() -> Mail {
        Mail {
            to: "gone@example.com".into(),
            subject: "s".into(),
            text: "t".into(),
            html: "h".into(),
        }
    }

    fn transport_to(port: u16) -> SmtpTransport {
        let target = SmtpTarget::parse(&format!("smtp://127.0.0.1:{port}")).unwrap();
        SmtpTransport::new(&target, "Tessera <noreply@localhost>").unwrap()
    }

    #[tokio::test]
    async fn lettre_errors_are_classified_by_their_reply() {
        let (port, server) = refusing_server("550 5.1.1 mailbox unavailable\r\n").await;
        let e = transport_to(port).send(&message()).await.unwrap_err();
        assert!(e.permanent, "{e}");
        assert!(e.message.contains("550"), "{e}");
        assert_eq!(server.await.unwrap(), 1);

        let (port, server) = refusing_server("451 4.3.0 try again later\r\n").await;
        let e = transport_to(port).send(&message()).await.unwrap_err();
        assert!(!e.permanent, "{e}");
        assert!(e.message.contains("451"), "{e}");
        assert_eq!(server.await.unwrap(), 1);

        // Nobody listening: a connection error, transient.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = transport_to(port).send(&message()).await.unwrap_err();
        assert!(!e.permanent, "{e}");

        // A recipient that is not a mailbox never will be.
        let mut bad = message();
        bad.to = "not a mailbox".into();
        let e = transport_to(port).send(&bad).await.unwrap_err();
        assert!(e.permanent, "{e}");
    }

    #[test]
    fn mailboxes_are_checked() {
        assert!(check_mailbox("Tessera <noreply@example.com>").is_ok());
        assert!(check_mailbox("noreply@example.com").is_ok());
        assert!(check_mailbox("not a mailbox").is_err());
    }
}
