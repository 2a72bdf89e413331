//! Operations over every account, for incidents: `tessera sessions
//! revoke-all` logs everyone out. It walks the users in pages and calls the
//! same core function as `POST /v1/admin/users/{id}/revoke` for each, so
//! every user gets the same revocations (sessions deleted, refresh families
//! revoked, an access-token cut-off at now) and the same `logout_all` audit
//! event, and running servers follow through the change log at once.
//!
//! It can take a while on a large database, so it reports progress on
//! standard error: a progress bar on a terminal, plain lines otherwise
//! (logs, CI). Repeating it is harmless; an interrupted run can simply be
//! started again.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::app::App;
use crate::core::accounts::UserQuery;

const PAGE: u32 = 500;

/// Without a terminal, a progress line at least this often...
const LINE_EVERY: Duration = Duration::from_secs(5);
/// ...and at every tenth of the way.
const LINE_PARTS: usize = 10;

/// When a plain progress line is due (`done` of `total`, the last line at
/// `last_line_done`, `since_last` ago).
pub fn line_due(done: usize, total: usize, last_line_done: usize, since_last: Duration) -> bool {
    if done == total {
        return done != last_line_done;
    }
    let step = (total / LINE_PARTS).max(1);
    done / step > last_line_done / step || since_last >= LINE_EVERY
}

/// Progress of a walk over `total` items on standard error.
pub struct Progress {
    total: usize,
    done: usize,
    noun: &'static str,
    verb: &'static str,
    bar: Option<ProgressBar>,
    last_line: Instant,
    last_line_done: usize,
}

impl Progress {
    /// A bar when standard error is a terminal, plain lines otherwise.
    pub fn new(total: usize, verb: &'static str, noun: &'static str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{msg} [{bar:40}] {pos}/{len} ({per_sec}, {eta} left)",
            )
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_message(format!("{verb} {noun}"));
            bar
        });
        Self {
            total,
            done: 0,
            noun,
            verb,
            bar,
            last_line: Instant::now(),
            last_line_done: 0,
        }
    }

    pub fn inc(&mut self) {
        self.done += 1;
        match &self.bar {
            Some(bar) => bar.inc(1),
            None => {
                if line_due(
                    self.done,
                    self.total,
                    self.last_line_done,
                    self.last_line.elapsed(),
                ) {
                    eprintln!("{} {}/{} {}", self.verb, self.done, self.total, self.noun);
                    self.last_line = Instant::now();
                    self.last_line_done = self.done;
                }
            }
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Every user's id, walked in pages (the list is taken first so the
/// progress has a total).
pub async fn all_user_ids(app: &App) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    let mut after_id = None;
    loop {
        let page = app
            .core
            .list_users(&UserQuery {
                email_contains: None,
                limit: PAGE,
                after_id: after_id.take(),
            })
            .await?;
        let done = page.len() < PAGE as usize;
        after_id = page.last().map(|u| u.id.clone());
        ids.extend(page.into_iter().map(|u| u.id));
        if done {
            return Ok(ids);
        }
    }
}

/// Logs every user out everywhere, each event naming `actor` (who ran it,
/// `cli`/`cli:NAME`); the summary goes to `out`.
pub async fn revoke_all(
    app: &App,
    actor: &str,
    ids: &[String],
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut progress = Progress::new(ids.len(), "revoked", "users");
    for (n, id) in ids.iter().enumerate() {
        if let Err(e) = app.core.logout_all_by(Some(actor), id).await {
            progress.finish();
            anyhow::bail!(
                "stopped after {n} of {} users: {e}; it is safe to run it again",
                ids.len()
            );
        }
        progress.inc();
    }
    progress.finish();
    writeln!(
        out,
        "logged out {} user{} in {:.1} s: every session, refresh token and earlier access token is revoked",
        ids.len(),
        if ids.len() == 1 { "" } else { "s" },
        started.elapsed().as_secs_f64()
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_come_every_tenth_every_few_seconds_and_at_the_end() {
        let quick = Duration::from_millis(10);
        // 20000 users: a line each 2000, not in between.
        assert!(!line_due(1999, 20_000, 0, quick));
        assert!(line_due(2000, 20_000, 0, quick));
        assert!(!line_due(2001, 20_000, 2000, quick));
        assert!(line_due(2001, 20_000, 2000, LINE_EVERY));
        assert!(line_due(20_000, 20_000, 18_000, quick));
        assert!(!line_due(20_000, 20_000, 20_000, quick));
        // Few users: every one.
        assert!(line_due(1, 3, 0, quick));
        assert!(line_due(2, 3, 1, quick));
        assert!(line_due(3, 3, 2, quick));
    }
}
