//! The revocation fan-out's receiving end: a Redis pub/sub subscription.
//!
//! Every append to the change log or the revocation log is published on
//! the deployment's channel (`fanout`) once it is durable in the database.
//! A task here holds a subscription of its own and turns what it hears
//! into [`Push`] states on a `watch`
//! ([`crate::store::EventStore::subscribe`]), exactly as the database's
//! LISTEN does where there is no Redis:
//!
//! - `Disconnected` until SUBSCRIBE is confirmed, and again the moment the
//!   subscription is found dead (the connection closed, `CLIENT KILL TYPE
//!   pubsub`, Redis restarted, or a heartbeat went unanswered): anything
//!   published now is lost, so the follower reads the logs from its
//!   cursor and distrusts its caches until it has;
//! - `Listening(n)` once subscribed again, `n` moving with every message.
//!
//! A message is only a wake-up: the payload is not trusted (whoever can
//! publish on the channel can at most make nodes read the log early).
//! redis-rs's pub/sub connection does not reconnect by itself, and
//! resubscribing on the client's side would hide the gap, so the task
//! builds a fresh subscription (with a capped backoff) after every loss.

use std::time::Duration;

use ::redis::Client;
use futures_util::StreamExt;
use tokio::sync::{oneshot, watch};

use super::link::{CONNECT_TIMEOUT, SentinelLink};
use super::tls::{self, Certificates};
use crate::store::Push;
use crate::store::push_task::PushTask;

/// Silence after which the subscription is checked with a PING.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// First wait before subscribing again, doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Where a subscription connects.
pub(super) enum Source {
    /// One server, by URL (and TLS certificates).
    Url(String, Certificates),
    /// A cluster's seed nodes: any node hears every publish (classic
    /// pub/sub is broadcast across the cluster); the next seed is tried
    /// after a loss.
    Seeds(Vec<String>, Certificates),
    /// The primary the sentinels name now.
    Sentinel(std::sync::Arc<SentinelLink>),
}

impl Source {
    async fn client(&self, attempt: usize) -> ::redis::RedisResult<Client> {
        match self {
            Source::Url(url, certs) => tls::client(url.as_str(), certs),
            Source::Seeds(seeds, certs) => {
                tls::client(seeds[attempt % seeds.len()].as_str(), certs)
            }
            Source::Sentinel(link) => link.primary_client().await,
        }
    }
}

/// The running subscription task and the state it publishes.
pub(super) struct Subscriber(PushTask);

impl Subscriber {
    pub(super) fn start(source: Source, channel: String) -> Self {
        Self(PushTask::spawn(|publish, stopped| {
            run(source, channel, publish, stopped)
        }))
    }

    /// A receiver of the current state, which wakes on the next change.
    pub(super) fn subscribe(&self) -> watch::Receiver<Push> {
        self.0.subscribe()
    }

    /// Stops the task and waits for it.
    pub(super) async fn stop(&self) {
        self.0.stop().await;
    }
}

async fn run(
    source: Source,
    channel: String,
    publish: watch::Sender<Push>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut heard: u64 = 0;
    let mut backoff = MIN_BACKOFF;
    let mut attempt = 0usize;
    // Whether an outage has been reported (later failures are quieter).
    let mut quiet = false;
    loop {
        let subscribed = tokio::select! {
            _ = &mut stopped => return,
            s = subscribe(&source, attempt, &channel) => s,
        };
        match subscribed {
            Ok(pubsub) => {
                if quiet {
                    tracing::info!("Redis push (SUBSCRIBE) re-established");
                }
                backoff = MIN_BACKOFF;
                publish.send_replace(Push::Listening(heard));
                let lost = tokio::select! {
                    _ = &mut stopped => None,
                    why = follow(pubsub, &publish, &mut heard) => Some(why),
                };
                publish.send_replace(Push::Disconnected);
                let Some(why) = lost else { return };
                tracing::warn!(reason = %why, "Redis push (SUBSCRIBE) lost; subscribing again");
                crate::store::redis::count_reconnect();
                quiet = true;
            }
            Err(e) => {
                if quiet {
                    tracing::debug!(error = %e, "Redis push (SUBSCRIBE) still unavailable");
                } else {
                    tracing::warn!(error = %e, "Redis push (SUBSCRIBE) unavailable; retrying");
                    quiet = true;
                }
            }
        }
        attempt = attempt.wrapping_add(1);
        tokio::select! {
            _ = &mut stopped => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn subscribe(
    source: &Source,
    attempt: usize,
    channel: &str,
) -> ::redis::RedisResult<::redis::aio::PubSub> {
    let connect = async {
        let client = source.client(attempt).await?;
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok(pubsub)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| {
            ::redis::RedisError::from((
                ::redis::ErrorKind::Io,
                "no answer within the connect timeout",
            ))
        })?
}

/// Publishes what the subscription hears until it is lost; says why.
async fn follow(
    pubsub: ::redis::aio::PubSub,
    publish: &watch::Sender<Push>,
    heard: &mut u64,
) -> String {
    let (mut sink, mut stream) = pubsub.split();
    loop {
        match tokio::time::timeout(HEARTBEAT, stream.next()).await {
            Ok(Some(message)) => {
                crate::store::redis::record_fanout(message.get_payload_bytes());
                *heard += 1;
                publish.send_replace(Push::Listening(*heard));
            }
            Ok(None) => return "the connection closed".into(),
            Err(_) => {
                let check = sink.ping::<::redis::Value>();
                match tokio::time::timeout(CONNECT_TIMEOUT, check).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return e.to_string(),
                    Err(_) => return "heartbeat unanswered".into(),
                }
            }
        }
    }
}
