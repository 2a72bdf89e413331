//! Password hashing on a bounded pool.
//!
//! argon2id is meant to be slow and memory-hungry (19 MiB per hash by default),
//! so it runs on a fixed number of dedicated threads fed by a bounded queue:
//! a flood of logins waits in the queue, and beyond it gets
//! [`CoreError::Busy`] (503) at once. Memory use is therefore capped at
//! `threads × m_cost` no matter the load, and the async runtime is never
//! blocked. Unknown emails are verified against a dummy hash made with the same
//! parameters so they cost the same time as a wrong password.
//!
//! The pool is shared fairly: each job names who it is for (its client's
//! address and, when known, its account, see [`Principals`]), and no one
//! principal may hold more than a quarter of the pool's places at once. A
//! flood from one address, or against one account from many addresses,
//! then waits on itself (429) instead of making everyone else's logins 503.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Instant;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::oneshot;

use super::accounts::Password;
use super::argon2_kept::{KeptMemoryArgon2, wipe_kept_memory};
use super::error::{CoreError, CoreResult};
use super::latency::LatencyHistogram;

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for HashParams {
    /// OWASP's first recommended argon2id configuration.
    fn default() -> Self {
        Self {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl HashParams {
    fn params(&self) -> Result<Params, argon2::Error> {
        Params::new(self.memory_kib, self.iterations, self.parallelism, None)
    }

    fn argon2(&self) -> Result<Argon2<'static>, argon2::Error> {
        Ok(Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            self.params()?,
        ))
    }

    /// The hasher the pool's threads use (see [`KeptMemoryArgon2`]).
    fn kept_memory(&self) -> Result<KeptMemoryArgon2, argon2::Error> {
        Ok(KeptMemoryArgon2::new(self.params()?))
    }
}

/// Size of the hashing pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolSize {
    pub threads: usize,
    /// Jobs that may wait for a thread before new ones are refused.
    pub queue: usize,
}

type Job = Box<dyn FnOnce() + Send>;

/// Wipes a hashing thread's kept argon2 memory however the thread ends (the
/// pool dropped right after a hash, or a panic).
struct WipeOnExit;

impl Drop for WipeOnExit {
    fn drop(&mut self) {
        wipe_kept_memory();
    }
}

/// The next job for a hashing thread, waiting for one if need be; `None`
/// once the pool is gone. The lock is held only while taking a job.
fn next_job(receiver: &Mutex<mpsc::Receiver<Job>>) -> Option<Job> {
    // Bound first: a guard in the match scrutinee would live through the
    // arms and deadlock the second lock below.
    let waiting = receiver.lock().ok()?.try_recv();
    match waiting {
        Ok(job) => Some(job),
        Err(mpsc::TryRecvError::Disconnected) => None,
        Err(mpsc::TryRecvError::Empty) => {
            // Idle: leave no password-derived blocks behind.
            wipe_kept_memory();
            receiver.lock().ok()?.recv().ok()
        }
    }
}

/// How long the pool's jobs waited for a thread and then ran on one: an
/// operator sizes the pool from the first and tunes the argon2 cost from the
/// second (the time one login's hash takes on this machine, under its load).
#[derive(Default)]
pub struct PoolTimings {
    pub waited: LatencyHistogram,
    pub worked: LatencyHistogram,
}

/// Who a hashing job is for: the client's address (an IPv6 client by its
/// /64, see [`super::limits::address_key`]) and, when known, the account.
#[derive(Debug, Clone, Default)]
pub struct Principals {
    address: Option<IpAddr>,
    account: Option<String>,
}

impl Principals {
    /// A job for no one in particular (the CLI, an operator).
    pub fn nobody() -> Self {
        Self::default()
    }

    pub fn new(address: Option<IpAddr>, account: Option<&str>) -> Self {
        Self {
            address: address.map(super::limits::address_key),
            account: account.map(str::to_owned),
        }
    }
}

/// Places each principal holds in the pool (jobs accepted, not finished).
/// Keys are salted hashes, so an entry is 16 bytes whatever was typed.
#[derive(Default)]
struct Shares {
    held: HashMap<u64, u32>,
}

/// A fixed set of threads with a bounded queue.
pub struct HashPool {
    sender: mpsc::SyncSender<Job>,
    queued: Arc<AtomicUsize>,
    /// Jobs the pool holds at most: one per thread and the queue.
    capacity: usize,
    /// Places one principal may hold at once.
    fair_share: u32,
    shares: Arc<Mutex<Shares>>,
    salt: foldhash::fast::RandomState,
    timings: Arc<PoolTimings>,
}

impl HashPool {
    pub fn new(size: PoolSize) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::sync_channel::<Job>(size.queue);
        let receiver = Arc::new(Mutex::new(receiver));
        for n in 0..size.threads.max(1) {
            let receiver = Arc::clone(&receiver);
            std::thread::Builder::new()
                .name(format!("tessera-hash-{n}"))
                .spawn(move || {
                    let _wipe = WipeOnExit;
                    while let Some(job) = next_job(&receiver) {
                        job();
                    }
                })?;
        }
        let capacity = size.threads.max(1) + size.queue;
        Ok(Self {
            sender,
            queued: Arc::new(AtomicUsize::new(0)),
            capacity,
            fair_share: u32::try_from(capacity / 4).unwrap_or(u32::MAX).max(1),
            shares: Arc::default(),
            salt: foldhash::fast::RandomState::default(),
            timings: Arc::default(),
        })
    }

    /// The share keys of `who`: one per principal named.
    fn share_keys(&self, who: &Principals) -> Vec<u64> {
        let address = who.address.map(|ip| self.salt.hash_one(("address", ip)));
        let account = who
            .account
            .as_deref()
            .map(|a| self.salt.hash_one(("account", a)));
        address.into_iter().chain(account).collect()
    }

    /// Takes a place for each of `keys`, or none if one is at its share.
    fn take_shares(&self, keys: &[u64]) -> CoreResult<()> {
        let mut shares = self.shares.lock().map_err(|_| CoreError::Unavailable)?;
        if keys
            .iter()
            .any(|k| shares.held.get(k).is_some_and(|n| *n >= self.fair_share))
        {
            return Err(CoreError::RateLimited(1));
        }
        for k in keys {
            *shares.held.entry(*k).or_insert(0) += 1;
        }
        Ok(())
    }

    /// Jobs accepted but not yet finished.
    pub fn depth(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Whether a job submitted now would be refused: every thread busy and
    /// the queue full. A hint (the pool may drain or fill meanwhile); `run`
    /// decides.
    pub fn is_full(&self) -> bool {
        self.depth() >= self.capacity
    }

    pub fn timings(&self) -> &PoolTimings {
        &self.timings
    }

    /// Runs `work` on the pool, or refuses at once with `Busy` when full.
    pub async fn run<R, F>(&self, work: F) -> CoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static,
    {
        self.run_for(&Principals::nobody(), work).await
    }

    /// Runs `work` for `who`, or refuses at once: `RateLimited` when one of
    /// its principals already holds its fair share of the pool, `Busy` when
    /// the pool is full. A place is held until the job has run (a client
    /// that hangs up does not free it early).
    pub async fn run_for<R, F>(&self, who: &Principals, work: F) -> CoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static,
    {
        let keys = self.share_keys(who);
        self.take_shares(&keys)?;
        let held = HeldShares {
            shares: Arc::clone(&self.shares),
            keys,
        };
        let (tx, rx) = oneshot::channel();
        let queued = Arc::clone(&self.queued);
        let timings = Arc::clone(&self.timings);
        queued.fetch_add(1, Ordering::Relaxed);
        let accepted = Instant::now();
        let job: Job = Box::new(move || {
            let started = Instant::now();
            timings.waited.record(started - accepted);
            // A panicking job must not take its thread with it: the pool
            // would shrink with every one until no login could hash. The
            // caller sees its reply dropped (503); the thread goes on.
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            timings.worked.record(started.elapsed());
            // Places are given back before the caller hears: its next
            // request must find them free.
            queued.fetch_sub(1, Ordering::Relaxed);
            drop(held);
            match out {
                Ok(out) => {
                    let _ = tx.send(out);
                }
                Err(_) => tracing::error!("a password hashing job panicked"),
            }
        });
        if self.sender.try_send(job).is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(CoreError::Busy);
        }
        rx.await.map_err(|_| CoreError::Unavailable)
    }
}

/// Places in the pool held by one job, given back when it is dropped (the
/// job ran, or was refused by a full queue).
struct HeldShares {
    shares: Arc<Mutex<Shares>>,
    keys: Vec<u64>,
}

impl Drop for HeldShares {
    fn drop(&mut self) {
        if self.keys.is_empty() {
            return;
        }
        let Ok(mut shares) = self.shares.lock() else {
            return;
        };
        for k in &self.keys {
            if let Some(n) = shares.held.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    shares.held.remove(k);
                }
            }
        }
    }
}

/// Hashes and verifies passwords with argon2id on a [`HashPool`].
pub struct PasswordHasher {
    params: HashParams,
    pool: HashPool,
    dummy_hash: String,
}

impl PasswordHasher {
    pub fn new(params: HashParams, size: PoolSize) -> anyhow::Result<Self> {
        let argon2 = params
            .argon2()
            .map_err(|e| anyhow::anyhow!("argon2 parameters rejected: {e}"))?;
        let dummy = super::secret::BearerSecret::generate();
        let dummy_hash: PasswordHash = argon2
            .hash_password(dummy.expose().as_bytes())
            .map_err(|e| anyhow::anyhow!("cannot make the dummy hash: {e}"))?;
        let dummy_hash = dummy_hash.to_string();
        Ok(Self {
            params,
            pool: HashPool::new(size)?,
            dummy_hash,
        })
    }

    pub fn pool(&self) -> &HashPool {
        &self.pool
    }

    pub async fn hash(&self, who: &Principals, password: Password) -> CoreResult<String> {
        let params = self.params;
        self.pool
            .run_for(who, move || {
                let argon2 = params.kept_memory().map_err(|_| CoreError::Unavailable)?;
                let hash: PasswordHash = argon2
                    .hash_password(password.expose().as_bytes())
                    .map_err(|_| CoreError::Unavailable)?;
                Ok(hash.to_string())
            })
            .await?
    }

    /// Verifies `password` against `stored`, or against the dummy hash when
    /// there is no stored hash (unknown account), which always fails.
    pub async fn verify(
        &self,
        who: &Principals,
        password: Password,
        stored: Option<String>,
    ) -> CoreResult<bool> {
        let real = stored.is_some();
        let phc = stored.unwrap_or_else(|| self.dummy_hash.clone());
        let params = self.params;
        let matched = self
            .pool
            .run_for(who, move || {
                let Ok(parsed) = PasswordHash::new(&phc) else {
                    tracing::error!("a stored password hash cannot be parsed");
                    return false;
                };
                let Ok(argon2) = params.kept_memory() else {
                    return false;
                };
                argon2
                    .verify_password(password.expose().as_bytes(), &parsed)
                    .is_ok()
            })
            .await?;
        Ok(real && matched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cheap() -> HashParams {
        HashParams {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        }
    }

    #[tokio::test]
    async fn hashes_verify_and_unknown_accounts_never_match() {
        let h = PasswordHasher::new(
            cheap(),
            PoolSize {
                threads: 1,
                queue: 4,
            },
        )
        .unwrap();
        let phc = h
            .hash(&Principals::nobody(), Password::new("correct horse".into()))
            .await
            .unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
        assert!(
            h.verify(
                &Principals::nobody(),
                Password::new("correct horse".into()),
                Some(phc.clone())
            )
            .await
            .unwrap()
        );
        assert!(
            !h.verify(
                &Principals::nobody(),
                Password::new("wrong horse!".into()),
                Some(phc)
            )
            .await
            .unwrap()
        );
        assert!(
            !h.verify(
                &Principals::nobody(),
                Password::new("anything at all".into()),
                None
            )
            .await
            .unwrap()
        );
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let pool = HashPool::new(PoolSize {
            threads: 1,
            queue: 1,
        })
        .unwrap();
        let pool = Arc::new(pool);
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        // One job occupies the thread, one waits in the queue.
        let mut running = Vec::new();
        for _ in 0..2 {
            let pool = Arc::clone(&pool);
            let rx = Arc::clone(&release_rx);
            running.push(tokio::spawn(async move {
                pool.run(move || {
                    let _ = rx.lock().unwrap().recv_timeout(Duration::from_secs(10));
                })
                .await
            }));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(pool.depth(), 2);
        assert!(pool.is_full());
        let refused = pool.run(|| ()).await;
        assert!(matches!(refused, Err(CoreError::Busy)));
        release_tx.send(()).unwrap();
        release_tx.send(()).unwrap();
        for job in running {
            job.await.unwrap().unwrap();
        }
        assert_eq!(pool.depth(), 0);
        assert!(!pool.is_full());
        pool.run(|| ()).await.unwrap();
    }

    /// Waits (a loaded machine may take a while to run spawned tasks) until
    /// the pool holds `n` jobs.
    async fn wait_for_depth(pool: &HashPool, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while pool.depth() != n {
            assert!(
                std::time::Instant::now() < deadline,
                "the pool holds {} jobs, not {n}",
                pool.depth()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Issue #19 finding 1: one principal filling the pool made everyone
    /// else's logins 503. It now gets a quarter of the places; the rest
    /// stay for others, and a place is given back when its job has run.
    #[tokio::test]
    async fn one_principal_gets_a_fair_share_and_others_keep_the_rest() {
        let pool = Arc::new(
            HashPool::new(PoolSize {
                threads: 1,
                queue: 7,
            })
            .unwrap(),
        );
        let greedy = Principals::new(Some("2001:db8::1".parse().unwrap()), Some("usr_a"));
        // Same /64, another account: still the same address principal.
        let greedy_again = Principals::new(Some("2001:db8::2".parse().unwrap()), Some("usr_b"));
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        let mut running = Vec::new();
        for _ in 0..2 {
            let (pool, rx, who) = (Arc::clone(&pool), Arc::clone(&release_rx), greedy.clone());
            running.push(tokio::spawn(async move {
                pool.run_for(&who, move || {
                    let _ = rx.lock().unwrap().recv_timeout(Duration::from_secs(10));
                })
                .await
            }));
        }
        wait_for_depth(&pool, 2).await;
        assert!(matches!(
            pool.run_for(&greedy, || ()).await,
            Err(CoreError::RateLimited(1))
        ));
        assert!(matches!(
            pool.run_for(&greedy_again, || ()).await,
            Err(CoreError::RateLimited(1))
        ));
        // Someone else is queued behind the greedy jobs, not refused.
        let other = Principals::new(Some("192.0.2.9".parse().unwrap()), None);
        let waiting = {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move { pool.run_for(&other, || 7).await })
        };
        wait_for_depth(&pool, 3).await;
        release_tx.send(()).unwrap();
        release_tx.send(()).unwrap();
        assert_eq!(waiting.await.unwrap().unwrap(), 7);
        for job in running {
            job.await.unwrap().unwrap();
        }
        // The shares were given back.
        pool.run_for(&greedy, || ()).await.unwrap();
        assert!(pool.shares.lock().unwrap().held.is_empty());
    }

    #[tokio::test]
    async fn a_panicking_job_is_refused_and_its_thread_goes_on() {
        let pool = HashPool::new(PoolSize {
            threads: 1,
            queue: 4,
        })
        .unwrap();
        let panicked = pool.run(|| -> u8 { panic!("a job that panics") }).await;
        assert!(matches!(panicked, Err(CoreError::Unavailable)));
        assert_eq!(pool.depth(), 0);
        // The pool's only thread survived to run the next job.
        let next = tokio::time::timeout(Duration::from_secs(10), pool.run(|| 7)).await;
        assert_eq!(next.expect("no thread took the job").unwrap(), 7);
        assert_eq!(pool.timings().worked.count(), 2);
    }

    #[tokio::test]
    async fn a_thread_wipes_its_argon2_memory_before_it_waits() {
        use crate::core::argon2_kept::tests::kept_memory_is_clean;

        let pool = HashPool::new(PoolSize {
            threads: 1,
            queue: 4,
        })
        .unwrap();
        let params = argon2::Params::new(1024, 1, 1, None).unwrap();
        let hashed = pool
            .run(move || {
                let kept = KeptMemoryArgon2::new(params);
                argon2::password_hash::PasswordHasher::hash_password(&kept, b"pw").is_ok()
                    && !kept_memory_is_clean()
            })
            .await
            .unwrap();
        assert!(
            hashed,
            "the hash left its blocks until the thread went idle"
        );
        // The thread wipes once it finds the queue empty; a probe queued
        // right after the hash may still get in first, so ask again.
        for _ in 0..100 {
            if pool.run(kept_memory_is_clean).await.unwrap() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the idle hashing thread kept a hash's blocks");
    }
}
