//! The handle on a backend's push task (PostgreSQL's LISTEN, Redis's
//! SUBSCRIBE): the [`Push`] states it publishes on a `watch`, and a way to
//! stop it and wait until it has.

use std::future::Future;

use tokio::sync::{Mutex, oneshot, watch};
use tokio::task::JoinHandle;

use super::Push;

pub(crate) struct PushTask {
    push: watch::Receiver<Push>,
    stop: std::sync::Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl PushTask {
    /// Spawns `run`, which publishes its states (starting `Disconnected`)
    /// and returns when the receiver it is given fires.
    pub(crate) fn spawn<F, Fut>(run: F) -> Self
    where
        F: FnOnce(watch::Sender<Push>, oneshot::Receiver<()>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (publish, push) = watch::channel(Push::Disconnected);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(publish, stopped));
        Self {
            push,
            stop: std::sync::Mutex::new(Some(stop)),
            task: Mutex::new(Some(task)),
        }
    }

    /// A receiver of the current state, which wakes on the next change.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Push> {
        let mut rx = self.push.clone();
        rx.mark_unchanged();
        rx
    }

    /// Stops the task and waits for it (its connection is closed).
    pub(crate) async fn stop(&self) {
        let stop = self.stop.lock().map(|mut s| s.take()).unwrap_or(None);
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }
}
