//! A deployment-wide secret that clients send as `Authorization` (seed 001's passcode, seed 003's
//! token): compared in constant time, and every try counted by the core's guessing limits.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use convene_api::AppState;
use convene_api::auth::ClientAddr;
use convene_core::ErrorCode;
use convene_core::service::ServiceError;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Clone)]
pub struct HeaderSecret {
    /// The key its failures are counted under.
    key: &'static str,
    digest: Arc<[u8; 32]>,
}

impl HeaderSecret {
    pub fn new(key: &'static str, secret: &str) -> Self {
        Self {
            key,
            digest: Arc::new(Sha256::digest(secret.as_bytes()).into()),
        }
    }

    /// `Ok(true)`: the request carried the secret; `Ok(false)`: it did not (the failure is
    /// counted); `Err`: refused before comparing (locked out, rate limited) or a store fault.
    pub async fn check(&self, app: &AppState, parts: &mut Parts) -> Result<bool, ServiceError> {
        let client = match ClientAddr::from_request_parts(parts, &()).await {
            Ok(client) => client,
            Err(never) => match never {},
        };
        let given = parts
            .headers
            .get(AUTHORIZATION)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        // Digests have one length, so the comparison time says nothing about the secret.
        let given: [u8; 32] = Sha256::digest(given).into();
        let correct = bool::from(given.ct_eq(self.digest.as_ref()));
        match app
            .meetings
            .check_guess(self.key, &client.key(), correct)
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if e.code() == ErrorCode::MeetingAccessDenied => Ok(false),
            Err(e) => Err(e),
        }
    }
}
