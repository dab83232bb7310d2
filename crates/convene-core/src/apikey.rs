//! API keys: an id (`iss` of admin JWTs) and a secret (HMAC key for every token convene signs).
//!
//! The secret is a symmetric signing key, so it is stored as is (like LiveKit's key file) and the
//! database must be protected like a key file. It never appears in `Debug` output or logs.

use std::fmt;

use rand::{CryptoRng, Rng};
use serde::{Deserialize, Serialize};

use crate::error::ValidationError;
use crate::time::Timestamp;

/// Shortest accepted secret (RFC 7518 3.2: an HS256 key of at least 256 bits).
pub const MIN_SECRET_BYTES: usize = 32;

/// A signing secret; redacted in `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ApiSecret(String);

impl ApiSecret {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        if raw.len() < MIN_SECRET_BYTES {
            return Err(ValidationError::new(
                "api_secret",
                format!(
                    "must be at least {MIN_SECRET_BYTES} bytes (got {})",
                    raw.len()
                ),
            ));
        }
        if raw.len() > 512 || raw.chars().any(char::is_control) {
            return Err(ValidationError::new(
                "api_secret",
                "must be at most 512 printable bytes",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn generate(rng: &mut impl CryptoRng) -> Self {
        Self(random_alnum(rng, 48))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiSecret(<redacted>)")
    }
}

fn random_alnum(rng: &mut impl CryptoRng, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// An API key as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: String,
    pub secret: ApiSecret,
    pub description: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

impl ApiKey {
    /// Validates a key id: 3 to 64 letters, digits, `_` or `-`.
    pub fn parse_id(raw: &str) -> Result<String, ValidationError> {
        if raw.len() < 3
            || raw.len() > 64
            || !raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(ValidationError::new(
                "api_key",
                "must be 3 to 64 letters, digits, '_' or '-'",
            ));
        }
        Ok(raw.to_owned())
    }

    pub fn generate(description: &str, now: Timestamp, rng: &mut impl CryptoRng) -> Self {
        Self {
            id: format!("API{}", random_alnum(rng, 12)),
            secret: ApiSecret::generate(rng),
            description: description.to_owned(),
            created_at: now,
            revoked_at: None,
        }
    }

    pub fn is_active(&self) -> bool {
        self.revoked_at.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn short_secrets_are_refused_with_a_clear_message() {
        let err = ApiSecret::parse("too-short").unwrap_err();
        assert_eq!(
            err.to_string(),
            "api_secret: must be at least 32 bytes (got 9)"
        );
        assert!(ApiSecret::parse(&"s".repeat(32)).is_ok());
    }

    #[test]
    fn generated_keys_are_valid_and_secrets_never_print() {
        let key = ApiKey::generate(
            "dev",
            Timestamp::from_millis(0),
            &mut StdRng::seed_from_u64(5),
        );
        assert!(ApiKey::parse_id(&key.id).is_ok());
        assert!(ApiSecret::parse(key.secret.expose()).is_ok());
        assert!(!format!("{key:?}").contains(key.secret.expose()));
    }
}
