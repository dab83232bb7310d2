//! Randomness as a port, as time is ([`crate::Clock`]): meeting ids, identities, PINs, API
//! secrets, join-link nonces, run ids and one-time codes come from a generator seeded from an
//! [`Entropy`] that the binary hands in (the operating system's) and tests seed themselves. The
//! core reads nothing from the operating system, randomness included (`tests/no_io.rs`).

use std::sync::Mutex;

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

/// Where fresh randomness comes from.
pub trait Entropy: Send + Sync + 'static {
    /// 32 bytes from a cryptographically secure source, different at every call.
    fn seed(&self) -> [u8; 32];
}

/// A cryptographically secure generator for one operation, seeded from `entropy`.
pub fn rng(entropy: &dyn Entropy) -> StdRng {
    StdRng::from_seed(entropy.seed())
}

/// A deterministic [`Entropy`] for tests: the same seed gives the same ids, PINs and secrets.
pub struct SeededEntropy(Mutex<StdRng>);

impl SeededEntropy {
    pub fn new(seed: u64) -> Self {
        Self(Mutex::new(StdRng::seed_from_u64(seed)))
    }
}

impl Entropy for SeededEntropy {
    fn seed(&self) -> [u8; 32] {
        let mut seed = [0; 32];
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .fill_bytes(&mut seed);
        seed
    }
}

#[cfg(test)]
mod tests {
    use rand::Rng;

    use super::*;

    #[test]
    fn a_seed_gives_the_same_stream_and_each_call_a_fresh_generator() {
        let (a, b) = (SeededEntropy::new(7), SeededEntropy::new(7));
        let first: u64 = rng(&a).random();
        assert_eq!(first, rng(&b).random::<u64>());
        assert_ne!(first, rng(&a).random::<u64>());
        assert_ne!(first, rng(&SeededEntropy::new(8)).random::<u64>());
    }
}
