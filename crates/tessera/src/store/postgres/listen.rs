//! Push for the logs: LISTEN/NOTIFY on a connection of its own.
//!
//! Every append to the change log or the revocation log notifies
//! [`CHANNEL`] in its own transaction, so PostgreSQL delivers the
//! notification when (and only if) the append commits, to every node
//! listening, this one included. A task here owns a `PgListener` and turns
//! what it hears into [`Push`] states on a `watch` channel
//! ([`crate::store::EventStore::subscribe`]):
//!
//! - `Disconnected` until LISTEN has succeeded, and again the moment the
//!   connection is found dead (the server closed it, a read failed, or it
//!   left a heartbeat unanswered): appends made now would go unannounced,
//!   so the follower must read the log from its cursor and distrust its
//!   caches until it has;
//! - `Listening(n)` once LISTEN is (re-)established, `n` moving with every
//!   notification.
//!
//! sqlx's `PgListener` reconnects by itself inside `recv`/`try_recv`, which
//! would hide the gap: with `eager_reconnect` it even re-LISTENs before
//! `try_recv` reports the loss, and errors other than a few I/O kinds leave
//! a dead connection in place. So the task never lets it reconnect: on any
//! loss it publishes `Disconnected`, drops that listener, and builds a fresh
//! one (on a fresh one-connection pool) with a capped backoff, publishing
//! `Listening` only after its LISTEN has returned. A connection that dies
//! without a word (a silent network partition) is caught by a `SELECT 1`
//! after [`HEARTBEAT`] of silence. The listener's connection is not taken
//! from the store's pool, so a full pool never silences the push, and a
//! push outage never costs the pool a connection.
//!
//! The task stops on [`Listener::stop`] (the store's `close`) or when the
//! store's last handle is dropped; the watch then closes, which tells
//! subscribers there is no push any more.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use tokio::sync::{oneshot, watch};

use crate::store::Push;
use crate::store::push_task::PushTask;

/// The channel every log append notifies; the payload is the entry's
/// sequence number (a hint only: followers read the logs by cursor).
pub(super) const CHANNEL: &str = "tessera_log";

/// Silence after which the connection is checked with a query.
const HEARTBEAT: Duration = Duration::from_secs(10);
/// How long that check, or a connection attempt, may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// First wait before reconnecting, doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The running listener task and the state it publishes.
pub(super) struct Listener(PushTask);

impl Listener {
    /// Starts listening with `options` (its own connections, one at a time;
    /// named `tessera-listen` in `pg_stat_activity` unless the URL names
    /// the application itself).
    pub(super) fn start(options: PgConnectOptions) -> Self {
        let options = match options.get_application_name() {
            Some("tessera") => options.application_name("tessera-listen"),
            _ => options,
        };
        Self(PushTask::spawn(|publish, stopped| {
            run(options, publish, stopped)
        }))
    }

    /// A receiver of the current state, which wakes on the next change.
    pub(super) fn subscribe(&self) -> watch::Receiver<Push> {
        self.0.subscribe()
    }

    /// Stops the task and waits for it (its connection is closed).
    pub(super) async fn stop(&self) {
        self.0.stop().await;
    }
}

/// Why a listening connection was given up.
enum Lost {
    Stopped,
    Dropped(String),
}

async fn run(
    options: PgConnectOptions,
    publish: watch::Sender<Push>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut heard: u64 = 0;
    let mut backoff = MIN_BACKOFF;
    // Whether an outage has been reported (later failures are quieter).
    let mut quiet = false;
    loop {
        let attempt = tokio::select! {
            _ = &mut stopped => return,
            attempt = connect(&options) => attempt,
        };
        match attempt {
            Ok((pool, mut listener)) => {
                if quiet {
                    tracing::info!("database push (LISTEN) re-established");
                }
                backoff = MIN_BACKOFF;
                publish.send_replace(Push::Listening(heard));
                let lost = tokio::select! {
                    _ = &mut stopped => Lost::Stopped,
                    lost = follow(&mut listener, &publish, &mut heard) => lost,
                };
                // Whatever happens next, nothing is heard from now on.
                publish.send_replace(Push::Disconnected);
                drop(listener);
                match lost {
                    Lost::Stopped => {
                        // Lets the dropped listener hand back its connection,
                        // then closes it; a dead one is not waited for.
                        let _ = tokio::time::timeout(CHECK_TIMEOUT, pool.close()).await;
                        return;
                    }
                    Lost::Dropped(why) => {
                        tracing::warn!(reason = %why, "database push (LISTEN) connection lost; reconnecting");
                        quiet = true;
                    }
                }
            }
            Err(e) => {
                if quiet {
                    tracing::debug!(error = %e, "database push (LISTEN) still unavailable");
                } else {
                    tracing::warn!(error = %e, "database push (LISTEN) unavailable; retrying");
                    quiet = true;
                }
            }
        }
        tokio::select! {
            _ = &mut stopped => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// A fresh listener on a fresh one-connection pool, LISTENing on
/// [`CHANNEL`]; it never reconnects by itself.
async fn connect(options: &PgConnectOptions) -> Result<(PgPool, PgListener), sqlx::Error> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .acquire_timeout(CHECK_TIMEOUT)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_lazy_with(options.clone());
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.eager_reconnect(false);
    tokio::time::timeout(CHECK_TIMEOUT, listener.listen(CHANNEL))
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)??;
    Ok((pool, listener))
}

/// Publishes what `listener` hears until its connection is lost.
async fn follow(listener: &mut PgListener, publish: &watch::Sender<Push>, heard: &mut u64) -> Lost {
    loop {
        match tokio::time::timeout(HEARTBEAT, listener.try_recv()).await {
            Ok(Ok(Some(_))) => {
                // Pushes may be coalesced: everything already buffered
                // counts, and one state change announces it all.
                *heard += 1;
                while listener.next_buffered().is_some() {
                    *heard += 1;
                }
                publish.send_replace(Push::Listening(*heard));
            }
            Ok(Ok(None)) => return Lost::Dropped("the connection closed".into()),
            Ok(Err(e)) => return Lost::Dropped(e.to_string()),
            Err(_) => {
                // Nothing heard for a while: make sure someone is there.
                let check = sqlx::query("SELECT 1").execute(&mut *listener);
                match tokio::time::timeout(CHECK_TIMEOUT, check).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Lost::Dropped(e.to_string()),
                    Err(_) => return Lost::Dropped("heartbeat unanswered".into()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration as StdDuration;

    use time::OffsetDateTime;

    use crate::core::events::Change;
    use crate::store::postgres::{PostgresStore, harness};
    use crate::store::{EventStore, Push, StoreOptions};

    async fn wait_for(push: &mut tokio::sync::watch::Receiver<Push>, want: fn(Push) -> bool) {
        tokio::time::timeout(StdDuration::from_secs(10), async {
            while !want(*push.borrow_and_update()) {
                push.changed().await.unwrap();
            }
        })
        .await
        .unwrap_or_else(|_| panic!("push state stayed {:?}", *push.borrow()));
    }

    fn listening(p: Push) -> bool {
        matches!(p, Push::Listening(_))
    }

    /// A listening connection killed by the server is reported at once,
    /// replaced by a fresh one (LISTEN again before `Listening`), and
    /// pushes flow again; the store's pool is untouched by all this.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_killed_listener_reports_the_gap_and_listens_again() {
        let url = harness::fresh_postgres_url().await;
        let store = PostgresStore::open(&url, &StoreOptions::default())
            .await
            .unwrap();
        let mut push = store.subscribe().unwrap();
        wait_for(&mut push, listening).await;

        let killed: i64 = sqlx::query_scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = 'tessera-listen'",
        )
        .fetch_one(&store.pool)
        .await
        .unwrap();
        assert_eq!(killed, 1, "one listening connection");
        wait_for(&mut push, |p| p == Push::Disconnected).await;
        wait_for(&mut push, listening).await;

        let Push::Listening(before) = *push.borrow_and_update() else {
            unreachable!()
        };
        store
            .append(&Change::KeysChanged, OffsetDateTime::now_utc())
            .await
            .unwrap();
        tokio::time::timeout(StdDuration::from_secs(5), push.changed())
            .await
            .expect("the append is pushed on the new connection")
            .unwrap();
        assert_eq!(*push.borrow(), Push::Listening(before + 1));
    }

    /// Closing the store ends the task: subscribers see the channel close.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn close_ends_the_push() {
        let url = harness::fresh_postgres_url().await;
        let store = PostgresStore::open(&url, &StoreOptions::default())
            .await
            .unwrap();
        let mut push = store.subscribe().unwrap();
        wait_for(&mut push, listening).await;
        crate::store::Backend::close(&store).await;
        tokio::time::timeout(StdDuration::from_secs(5), async {
            while push.changed().await.is_ok() {}
        })
        .await
        .expect("the push channel closes");
    }
}
