//! argon2 with working memory kept by each hashing thread.
//!
//! `argon2`'s own hashing allocates its working memory (19 MiB at the
//! default parameters) for every hash and frees it afterwards. The
//! allocator then keeps freed chunks around, fragmented: with one hashing
//! thread the server's peak RSS under a login load was 112 MB, with two
//! 245 MB, well beyond the `threads × m_cost` the pool promises. The
//! hashing threads hash nothing else, so each keeps one buffer of the
//! configured size for its whole life instead (36 and 56 MB in the same
//! runs; the hashing time is unchanged). The buffer is wiped whenever its
//! thread is about to wait for work ([`wipe_kept_memory`], called by the
//! hashing pool): its blocks would let whoever reads them test password
//! guesses more cheaply. Between hashes of a busy pool it is not wiped: the
//! next hash overwrites every block in its first pass, so a hash's blocks
//! outlive it by at most half a hash, while the hash being computed is in
//! memory anyway; wiping after every hash cost 2.5 ms (7% of a login).
//!
//! Hashes with other parameters (stored under older settings) use a
//! temporary buffer, so a stored hash can never make a thread keep more
//! memory than the settings allow.

use std::cell::{Cell, RefCell};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::password_hash::{self, CustomizedPasswordHasher, PasswordHasher};
use argon2::{Algorithm, Argon2, Block, Params, Version};

thread_local! {
    /// This thread's argon2 working memory (empty until its first hash).
    static WORK_MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
    /// Whether `WORK_MEMORY` holds blocks of a hash.
    static HOLDS_BLOCKS: Cell<bool> = const { Cell::new(false) };
}

/// Zeroes this thread's kept memory if a hash left blocks in it.
pub(super) fn wipe_kept_memory() {
    if HOLDS_BLOCKS.replace(false) {
        // The buffer outlives this call, so these stores cannot be
        // optimised away.
        WORK_MEMORY.with_borrow_mut(|memory| memory.fill(Block::default()));
    }
}

/// argon2id at the configured parameters, hashing in the calling thread's
/// kept memory. Produces and verifies the same PHC strings as [`Argon2`].
pub(super) struct KeptMemoryArgon2 {
    params: Params,
}

impl KeptMemoryArgon2 {
    pub(super) fn new(params: Params) -> Self {
        Self { params }
    }

    /// `argon2` over `password` and `salt` into `out`.
    fn hash_into(
        &self,
        argon2: &Argon2<'_>,
        password: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> Result<(), argon2::Error> {
        let blocks = argon2.params().block_count();
        if blocks != self.params.block_count() {
            return argon2.hash_password_into(password, salt, out);
        }
        WORK_MEMORY.with_borrow_mut(|memory| {
            if memory.len() != blocks {
                *memory = vec![Block::default(); blocks];
            }
            HOLDS_BLOCKS.set(true);
            argon2.hash_password_into_with_memory(password, salt, out, &mut memory[..])
        })
    }
}

impl PasswordHasher<PasswordHash> for KeptMemoryArgon2 {
    fn hash_password_with_salt(
        &self,
        password: &[u8],
        salt: &[u8],
    ) -> password_hash::Result<PasswordHash> {
        self.hash_password_customized(password, salt, None, None, self.params.clone())
    }
}

impl CustomizedPasswordHasher<PasswordHash> for KeptMemoryArgon2 {
    type Params = Params;

    /// What [`Argon2`]'s implementation does, with [`Self::hash_into`]
    /// instead of an allocation per hash; verification (the blanket
    /// `PasswordVerifier` over this) recomputes with the stored hash's
    /// algorithm, version, parameters and salt and compares in constant time.
    fn hash_password_customized(
        &self,
        password: &[u8],
        salt: &[u8],
        algorithm: Option<&str>,
        version: Option<u32>,
        params: Params,
    ) -> password_hash::Result<PasswordHash> {
        let algorithm = algorithm
            .map(Algorithm::try_from)
            .transpose()?
            .unwrap_or(Algorithm::Argon2id);
        let version = version
            .map(Version::try_from)
            .transpose()?
            .unwrap_or(Version::V0x13);
        let salt = Salt::new(salt)?;
        let output_len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
        let mut buffer = [0u8; Output::MAX_LENGTH];
        let out = buffer
            .get_mut(..output_len)
            .ok_or(password_hash::Error::OutputSize)?;
        let argon2 = Argon2::new(algorithm, version, params.clone());
        self.hash_into(&argon2, password, &salt, out)?;
        Ok(PasswordHash {
            algorithm: algorithm.ident(),
            version: Some(version.into()),
            params: ParamsString::try_from(&params)?,
            salt: Some(salt),
            hash: Some(Output::new(out)?),
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use argon2::password_hash::PasswordVerifier;

    use super::*;

    fn params(memory_kib: u32) -> Params {
        Params::new(memory_kib, 1, 1, None).unwrap()
    }

    #[test]
    fn hashes_are_interchangeable_with_the_crates_own() {
        let kept = KeptMemoryArgon2::new(params(1024));
        let crate_own = Argon2::new(Algorithm::Argon2id, Version::V0x13, params(1024));
        let ours = kept.hash_password(b"correct horse").unwrap();
        let theirs = crate_own.hash_password(b"correct horse").unwrap();
        assert_eq!(ours.algorithm, theirs.algorithm);
        assert_eq!(ours.params, theirs.params);
        assert!(crate_own.verify_password(b"correct horse", &ours).is_ok());
        assert!(kept.verify_password(b"correct horse", &theirs).is_ok());
        assert!(kept.verify_password(b"correct horse", &ours).is_ok());
        assert!(kept.verify_password(b"wrong horse", &ours).is_err());
        assert!(kept.verify_password(b"wrong horse", &theirs).is_err());
        // Same inputs, same output as the crate's.
        let salt = b"sixteen byte salt";
        assert_eq!(
            kept.hash_password_with_salt(b"pw", salt).unwrap().hash,
            crate_own.hash_password_with_salt(b"pw", salt).unwrap().hash
        );
    }

    #[test]
    fn hashes_under_other_parameters_verify_without_being_kept() {
        let kept = KeptMemoryArgon2::new(params(1024));
        let older = Argon2::new(Algorithm::Argon2id, Version::V0x13, params(2048));
        let stored = older.hash_password(b"pw").unwrap();
        assert!(kept.verify_password(b"pw", &stored).is_ok());
        assert!(kept.verify_password(b"pw!", &stored).is_err());
        WORK_MEMORY.with_borrow(|memory| {
            assert!(
                memory.is_empty() || memory.len() == params(1024).block_count(),
                "only the configured size is ever kept"
            );
        });
    }

    /// Whether this thread's kept memory is all zero.
    pub(in crate::core) fn kept_memory_is_clean() -> bool {
        let zero = Block::default();
        WORK_MEMORY.with_borrow(|memory| memory.iter().all(|b| b.as_ref() == zero.as_ref()))
    }

    #[test]
    fn the_kept_memory_holds_blocks_until_wiped() {
        let kept = KeptMemoryArgon2::new(params(1024));
        kept.hash_password(b"pw").unwrap();
        WORK_MEMORY.with_borrow(|memory| assert_eq!(memory.len(), params(1024).block_count()));
        assert!(!kept_memory_is_clean());
        wipe_kept_memory();
        assert!(kept_memory_is_clean());
    }
}
