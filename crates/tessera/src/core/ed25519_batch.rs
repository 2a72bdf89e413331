//! Ed25519 signature checks gathered into batches.
//!
//! Checking n signatures together costs about half of checking them one by
//! one once n reaches 8 or so (one multi-scalar multiplication instead of n
//! double-scalar ones). Under load many requests carrying tokens not seen
//! before wait for their signature at the same moment, so each one queues its
//! check here and awaits the answer. A drain task, spawned when the first
//! check arrives, first yields, so that every request already runnable on this
//! worker queues its check too, then checks what is queued in batches of up to
//! [`MAX_BATCH`]. With one check queued it checks that one alone; when a
//! batch fails, each of its signatures is checked alone, so one bad token
//! never refuses a good one. A failed batch is wasted work, so after one the
//! checks go one by one until a whole round of them passes: a flood of
//! forged tokens costs what it cost without batching, not half as much again.
//!
//! A batch is one random linear combination of its signatures' equations,
//! `[8]([-Σ zᵢsᵢ]B + Σ [zᵢ]Rᵢ + Σ [zᵢkᵢ]Aᵢ) = 0` with secret random 128-bit
//! `zᵢ`, as ed25519-dalek's `verify_batch` computes it, except that the
//! terms of one key are added up first: nearly every token in a batch is
//! signed by the same key, so `Σ [zᵢkᵢ]A` is one multiplication by
//! `Σ zᵢkᵢ`, and `A` is decompressed once per batch instead of once per
//! signature (about 10 µs a signature instead of 17 in batches of 32).
//!
//! A batch accepts exactly the signatures the cofactored equation
//! `[8][s]B = [8]R + [8][k]A` accepts, a single check the cofactorless one
//! (RFC 8032 allows either). They differ only on signatures whose `R` carries
//! a small-order component, which only the holder of the private key can
//! make, so they let no one forge a token. `s` must be canonical in both.
//!
//! Failure is refusal: a check whose answer is lost (its drain task gone with
//! the runtime) is a bad signature.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use aws_lc_rs::digest;
use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use tokio::sync::oneshot;

/// Most signatures checked in one batch: beyond this the gain per signature
/// is flat while the batch's wait for its slowest member grows.
pub const MAX_BATCH: usize = 32;

/// Queued checks at which a second drain task starts on a multi-threaded
/// runtime while the first is busy.
const SPLIT_AT: usize = 16;

/// The queue of signature checks and the tasks draining it.
pub struct BatchVerifier {
    queue: Mutex<Queue>,
    /// Set by a failed batch, cleared by a round of single checks that all
    /// passed: while set, checks are not batched.
    distrust: AtomicBool,
}

#[derive(Default)]
struct Queue {
    checks: Vec<Check>,
    drainers: usize,
}

struct Check {
    message: Vec<u8>,
    signature: Signature,
    key: VerifyingKey,
    answer: oneshot::Sender<bool>,
}

impl Default for BatchVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchVerifier {
    pub fn new() -> Self {
        Self {
            queue: Mutex::new(Queue::default()),
            distrust: AtomicBool::new(false),
        }
    }

    /// Whether `signature` is `key`'s signature of `message`.
    pub async fn verify(
        self: &Arc<Self>,
        message: &[u8],
        signature: &Signature,
        key: &VerifyingKey,
    ) -> bool {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return key.verify(message, signature).is_ok();
        };
        let (answer, answered) = oneshot::channel();
        let start_drainer = {
            let mut queue = self.lock();
            queue.checks.push(Check {
                message: message.to_vec(),
                signature: *signature,
                key: *key,
                answer,
            });
            let wanted = queue.drainers == 0
                || (queue.drainers < runtime.metrics().num_workers()
                    && queue.checks.len() >= SPLIT_AT);
            if wanted {
                queue.drainers += 1;
            }
            wanted
        };
        if start_drainer {
            runtime.spawn(Arc::clone(self).drain());
        }
        answered.await.unwrap_or(false)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // The queue holds no invariant a panic could break halfway.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Checks queued signatures until the queue is empty.
    async fn drain(self: Arc<Self>) {
        let mut slot = DrainerSlot {
            verifier: &self,
            held: true,
        };
        tokio::task::yield_now().await;
        loop {
            let batch: Vec<Check> = {
                let mut queue = self.lock();
                if queue.checks.is_empty() {
                    // Released under the lock, so a check queued after this
                    // sees no drainer and starts one.
                    queue.drainers -= 1;
                    slot.held = false;
                    return;
                }
                let take = queue.checks.len().min(MAX_BATCH);
                queue.checks.drain(..take).collect()
            };
            let answers = check_all(&batch, &self.distrust);
            for (check, valid) in batch.into_iter().zip(answers) {
                // The request may have gone; nothing to tell it then.
                let _ = check.answer.send(valid);
            }
        }
    }
}

/// Gives the drainer's place back if its task ends early (a panic, the
/// runtime shutting down), so later checks start a new one, and refuses the
/// checks still queued rather than leave them waiting for nobody.
struct DrainerSlot<'a> {
    verifier: &'a BatchVerifier,
    held: bool,
}

impl Drop for DrainerSlot<'_> {
    fn drop(&mut self) {
        if self.held {
            let mut queue = self.verifier.lock();
            queue.drainers -= 1;
            queue.checks.clear();
        }
    }
}

/// One answer per check: all at once when they are all good, else one by
/// one (and straight away one by one while `distrust` is set; see the
/// module docs).
fn check_all(batch: &[Check], distrust: &AtomicBool) -> Vec<bool> {
    if batch.len() > 1 && !distrust.load(Ordering::Relaxed) {
        if all_hold(batch) {
            return vec![true; batch.len()];
        }
        distrust.store(true, Ordering::Relaxed);
    }
    let answers: Vec<bool> = batch
        .iter()
        .map(|c| c.key.verify(&c.message, &c.signature).is_ok())
        .collect();
    if answers.iter().all(|valid| *valid) {
        distrust.store(false, Ordering::Relaxed);
    }
    answers
}

/// Whether every signature of `batch` holds, by one combined equation (see
/// the module docs); false if any one does not, or if randomness for the
/// coefficients cannot be had.
fn all_hold(batch: &[Check]) -> bool {
    all_signed(
        batch
            .iter()
            .map(|c| (c.message.as_slice(), &c.signature, &c.key)),
    )
}

/// Whether each `(message, signature, key)` holds, checked together as a
/// batch is (public for the benchmark's signature floor).
pub fn all_signed<'a, I>(signed: I) -> bool
where
    I: ExactSizeIterator<Item = (&'a [u8], &'a Signature, &'a VerifyingKey)>,
{
    let count = signed.len();
    let mut coefficients = vec![0u8; 16 * count];
    if aws_lc_rs::rand::fill(&mut coefficients).is_err() {
        return false;
    }
    let mut scalars = Vec::with_capacity(count + 4);
    let mut points = Vec::with_capacity(count + 4);
    let mut b_coefficient = Scalar::ZERO;
    // (key, its coefficient): rarely more than one, two during a rotation.
    let mut keys: Vec<(&VerifyingKey, Scalar)> = Vec::with_capacity(2);
    for ((message, signature, key), z) in signed.zip(coefficients.chunks_exact(16)) {
        let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(*signature.s_bytes()))
        else {
            return false;
        };
        let r_bytes = signature.r_bytes();
        let Some(r) = CompressedEdwardsY(*r_bytes).decompress() else {
            return false;
        };
        let mut hram = digest::Context::new(&digest::SHA512);
        hram.update(r_bytes);
        hram.update(key.as_bytes());
        hram.update(message);
        let Ok(wide) = <[u8; 64]>::try_from(hram.finish().as_ref()) else {
            return false;
        };
        let k = Scalar::from_bytes_mod_order_wide(&wide);
        let mut z_bytes = [0u8; 32];
        z_bytes[..16].copy_from_slice(z);
        let z = Scalar::from_bytes_mod_order(z_bytes);
        b_coefficient -= z * s;
        match keys.iter_mut().find(|(seen, _)| *seen == key) {
            Some((_, coefficient)) => *coefficient += z * k,
            None => keys.push((key, z * k)),
        }
        scalars.push(z);
        points.push(r);
    }
    for (key, coefficient) in keys {
        let Some(a) = CompressedEdwardsY(key.to_bytes()).decompress() else {
            return false;
        };
        scalars.push(coefficient);
        points.push(a);
    }
    scalars.push(b_coefficient);
    points.push(ED25519_BASEPOINT_POINT);
    EdwardsPoint::vartime_multiscalar_mul(scalars, points)
        .mul_by_cofactor()
        .is_identity()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    /// The group order L, little-endian.
    const ORDER: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn check(
        key: &SigningKey,
        message: &[u8],
        signature: Signature,
    ) -> (Check, oneshot::Receiver<bool>) {
        let (answer, answered) = oneshot::channel();
        let check = Check {
            message: message.to_vec(),
            signature,
            key: key.verifying_key(),
            answer,
        };
        (check, answered)
    }

    /// The same signature with `s + L` in place of `s`: the same point
    /// arithmetic, so only the canonical-encoding check refuses it.
    fn non_canonical(signature: &Signature) -> Signature {
        let mut bytes = signature.to_bytes();
        let mut carry = 0u16;
        for (byte, add) in bytes[32..].iter_mut().zip(ORDER) {
            let sum = u16::from(*byte) + u16::from(add) + carry;
            *byte = sum as u8;
            carry = sum >> 8;
        }
        Signature::from_bytes(&bytes)
    }

    #[test]
    fn a_failing_batch_answers_each_check_alone() {
        let (a, b) = (key(1), key(2));
        let mut checks = Vec::new();
        let mut expected = Vec::new();
        for i in 0..12u8 {
            let message = [b'm', i];
            let signer = if i % 2 == 0 { &a } else { &b };
            let mut signature = signer.sign(&message);
            let valid = match i {
                3 => {
                    signature = b.sign(b"another message");
                    false
                }
                7 => {
                    signature = non_canonical(&signature);
                    false
                }
                // Signed by the other key.
                10 => {
                    signature = b.sign(&message);
                    false
                }
                _ => true,
            };
            checks.push(check(signer, &message, signature).0);
            expected.push(valid);
        }
        assert_eq!(check_all(&checks, &AtomicBool::new(false)), expected);
        let good: Vec<Check> = checks
            .into_iter()
            .zip(&expected)
            .filter(|(_, valid)| **valid)
            .map(|(c, _)| c)
            .collect();
        assert_eq!(
            check_all(&good, &AtomicBool::new(false)),
            vec![true; good.len()]
        );
    }

    #[test]
    fn after_a_failed_batch_checks_go_one_by_one_until_a_round_passes() {
        let k = key(7);
        let good = |m: u8| check(&k, &[m], k.sign(&[m])).0;
        let bad = |m: u8| check(&k, &[m], k.sign(b"something else")).0;
        let distrust = AtomicBool::new(false);
        assert_eq!(check_all(&[good(1), good(2)], &distrust), [true, true]);
        assert!(!distrust.load(Ordering::Relaxed));
        assert_eq!(check_all(&[good(1), bad(2)], &distrust), [true, false]);
        assert!(distrust.load(Ordering::Relaxed), "a failed batch");
        assert_eq!(check_all(&[bad(3), good(4)], &distrust), [false, true]);
        assert!(
            distrust.load(Ordering::Relaxed),
            "still forged tokens about"
        );
        assert_eq!(check_all(&[good(5), good(6)], &distrust), [true, true]);
        assert!(
            !distrust.load(Ordering::Relaxed),
            "a clean round restores batching"
        );
    }

    #[test]
    fn non_canonical_s_is_refused_in_a_batch_and_alone() {
        let k = key(3);
        let signature = k.sign(b"token");
        assert!(k.verifying_key().verify(b"token", &signature).is_ok());
        let forged = non_canonical(&signature);
        assert_eq!(
            check_all(&[check(&k, b"token", forged).0], &AtomicBool::new(false)),
            vec![false]
        );
        let pair = [check(&k, b"token", forged).0, check(&k, b"token", forged).0];
        assert_eq!(
            check_all(&pair, &AtomicBool::new(false)),
            vec![false, false]
        );
    }

    /// A signature whose `R` is `[r]B + T`, `T` of order 2, made with the
    /// private key: it satisfies the cofactored equation only.
    fn with_small_order_r(key: &SigningKey, message: &[u8]) -> Signature {
        let mut p_minus_one = [0xff; 32];
        p_minus_one[0] = 0xec;
        p_minus_one[31] = 0x7f;
        let t = CompressedEdwardsY(p_minus_one).decompress().unwrap();
        assert!(!t.is_identity() && (t + t).is_identity());
        let r = Scalar::from_bytes_mod_order([9; 32]);
        let big_r = (ED25519_BASEPOINT_POINT * r + t).compress();
        let mut hram = digest::Context::new(&digest::SHA512);
        hram.update(big_r.as_bytes());
        hram.update(key.verifying_key().as_bytes());
        hram.update(message);
        let k = Scalar::from_bytes_mod_order_wide(hram.finish().as_ref().try_into().unwrap());
        let s = r + k * key.to_scalar();
        let mut bytes = [0u8; 64];
        bytes[..32].copy_from_slice(big_r.as_bytes());
        bytes[32..].copy_from_slice(s.as_bytes());
        Signature::from_bytes(&bytes)
    }

    #[test]
    fn a_batch_holds_to_the_cofactored_equation_and_a_single_check_to_the_other() {
        let k = key(8);
        let odd = with_small_order_r(&k, b"token");
        assert!(k.verifying_key().verify(b"token", &odd).is_err());
        let batch = [
            check(&k, b"token", odd).0,
            check(&k, b"other", k.sign(b"other")).0,
        ];
        assert!(all_hold(&batch));
        // Anything else changed, the batch fails.
        let tampered = [
            check(&k, b"token!", odd).0,
            check(&k, b"other", k.sign(b"other")).0,
        ];
        assert!(!all_hold(&tampered));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn concurrent_checks_get_their_own_answers() {
        let verifier = Arc::new(BatchVerifier::new());
        let (a, b) = (key(4), key(5));
        let cases: Vec<(Vec<u8>, Signature, VerifyingKey, bool)> = (0..80u8)
            .map(|i| {
                let message = vec![b'x', i];
                let signer = if i % 3 == 0 { &a } else { &b };
                let signature = signer.sign(&message);
                if i % 9 == 4 {
                    (
                        message,
                        non_canonical(&signature),
                        signer.verifying_key(),
                        false,
                    )
                } else if i % 9 == 8 {
                    (vec![b'y', i], signature, signer.verifying_key(), false)
                } else {
                    (message, signature, signer.verifying_key(), true)
                }
            })
            .collect();
        let answers = futures_util::future::join_all(
            cases
                .iter()
                .map(|(message, signature, key, _)| verifier.verify(message, signature, key)),
        )
        .await;
        let expected: Vec<bool> = cases.iter().map(|c| c.3).collect();
        assert_eq!(answers, expected);
        // Every drainer gave its place back.
        assert_eq!(verifier.lock().drainers, 0);
        assert!(verifier.lock().checks.is_empty());
    }

    #[test]
    fn outside_a_runtime_the_check_runs_inline() {
        let k = key(6);
        let verifier = Arc::new(BatchVerifier::new());
        let signature = k.sign(b"m");
        let verify = |message: &'static [u8]| {
            futures_util::FutureExt::now_or_never(verifier.verify(
                message,
                &signature,
                &k.verifying_key(),
            ))
        };
        assert_eq!(verify(b"m"), Some(true));
        assert_eq!(verify(b"n"), Some(false));
    }
}
