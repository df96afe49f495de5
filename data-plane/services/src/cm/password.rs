//! Client passwords: argon2id hashing and verification, off the async threads and bounded.
//!
//! Hashes are PHC strings (`$argon2id$v=19$m=..,t=..,p=..$salt$hash`) that carry their own cost,
//! so raising the configured cost affects new passwords only and old ones keep verifying.
//! Verification compares outputs in constant time (the `password-hash` crate's `Output`).
//!
//! An unknown username is verified against a dummy hash of the same cost, so a failed login
//! takes as long whether or not the user exists (no username probing by timing). Each hash costs
//! `memoryKib` of RAM and a CPU core for its duration, so at most one runs per core at a time;
//! the rest wait their turn instead of exhausting memory.

use std::sync::Arc;

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version,
    password_hash::{SaltString, rand_core::OsRng},
};
use kaa_blueprint::config::PasswordHashSettings;
use tokio::sync::Semaphore;

use super::Secret;

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("invalid password hash settings: {0}")]
    Settings(argon2::Error),
    #[error("cannot hash the password: {0}")]
    Hash(argon2::password_hash::Error),
    #[error("the password hashing task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("the password hashing limiter is closed")]
    Closed,
}

/// Hashes and verifies passwords with one set of argon2id parameters.
#[derive(Debug, Clone)]
pub(crate) struct Passwords {
    hasher: Argon2<'static>,
    /// A hash of a random password, verified against when the username is unknown.
    dummy: Arc<str>,
    /// At most one hash per core at a time.
    slots: Arc<Semaphore>,
}

impl Passwords {
    /// Checks the settings and prepares the dummy hash (one hash of the configured cost).
    pub(crate) fn new(settings: &PasswordHashSettings) -> Result<Self, PasswordError> {
        let params = Params::new(
            settings.memory_kib,
            settings.iterations,
            settings.parallelism,
            None,
        )
        .map_err(PasswordError::Settings)?;
        let hasher = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let dummy = hash_with(&hasher, super::generate_token().expose())?;
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Ok(Passwords {
            hasher,
            dummy: Arc::from(dummy),
            slots: Arc::new(Semaphore::new(cores)),
        })
    }

    /// A PHC hash string of `password` with a fresh random salt.
    pub(crate) async fn hash(&self, password: &Secret) -> Result<String, PasswordError> {
        let _slot = self.slots.acquire().await.map_err(|_| PasswordError::Closed)?;
        let (hasher, password) = (self.hasher.clone(), password.clone());
        tokio::task::spawn_blocking(move || hash_with(&hasher, password.expose())).await?
    }

    /// Whether `password` matches `hash`; with no hash (unknown user) the dummy is verified and
    /// the answer is `false`. An unparsable stored hash never matches.
    pub(crate) async fn verify(&self, password: &Secret, hash: Option<&str>) -> bool {
        let Ok(_slot) = self.slots.acquire().await else {
            return false;
        };
        let known = hash.is_some();
        let hash: Arc<str> = hash.map_or_else(|| Arc::clone(&self.dummy), Arc::from);
        let (hasher, password) = (self.hasher.clone(), password.clone());
        let verified = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash).is_ok_and(|parsed| {
                hasher
                    .verify_password(password.expose().as_bytes(), &parsed)
                    .is_ok()
            })
        })
        .await
        .unwrap_or(false);
        known && verified
    }
}

fn hash_with(hasher: &Argon2<'_>, password: &str) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    hasher
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(PasswordError::Hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Passwords {
        Passwords::new(&PasswordHashSettings {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn hash_then_verify() {
        let p = cheap();
        let pw = Secret::new("correct horse");
        let hash = p.hash(&pw).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{hash}");
        assert!(!hash.contains("correct horse"));
        assert!(p.verify(&pw, Some(&hash)).await);
        assert!(!p.verify(&Secret::new("correct hors"), Some(&hash)).await);
        assert!(!p.verify(&pw, None).await, "unknown user");
        assert!(!p.verify(&pw, Some("not a hash")).await);
        // Salted: the same password hashes differently each time.
        assert_ne!(p.hash(&pw).await.unwrap(), hash);
    }

    #[tokio::test]
    async fn hashes_keep_their_own_cost() {
        let old = cheap();
        let pw = Secret::new("pw");
        let hash = old.hash(&pw).await.unwrap();
        let new = Passwords::new(&PasswordHashSettings {
            memory_kib: 128,
            iterations: 2,
            parallelism: 1,
        })
        .unwrap();
        assert!(new.verify(&pw, Some(&hash)).await);
        assert!(new.hash(&pw).await.unwrap().contains("m=128,t=2,p=1"));
    }

    #[test]
    fn bad_settings_are_refused() {
        let err = Passwords::new(&PasswordHashSettings {
            memory_kib: 1,
            iterations: 0,
            parallelism: 1,
        })
        .unwrap_err();
        assert!(matches!(err, PasswordError::Settings(_)), "{err}");
    }
}
