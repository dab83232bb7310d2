//! API keys: creating, provisioning from configuration, listing and revoking them. A service of
//! its own over the store, so the binary picks its signing key (and `convene api-key` manages
//! keys) without a meeting service; [`Meetings::keys`] reaches the same one.
//!
//! [`Meetings::keys`]: super::Meetings::keys

use std::sync::Arc;

use crate::apikey::{ApiKey, ApiSecret};
use crate::error::{DomainError, ErrorCode};
use crate::ports::Store;
use crate::random::Entropy;
use crate::time::Clock;

use super::{Result, ServiceError};

/// The API key service. Cheap to share behind an `Arc`.
pub struct ApiKeys {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
}

impl ApiKeys {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, entropy: Arc<dyn Entropy>) -> Self {
        Self {
            store,
            clock,
            entropy,
        }
    }

    pub async fn create(&self, description: &str) -> Result<ApiKey> {
        let mut rng = crate::random::rng(self.entropy.as_ref());
        let key = ApiKey::generate(description, self.clock.now(), &mut rng);
        self.store.insert_api_key(&key).await?;
        Ok(key)
    }

    /// Stores a configured key pair (`CONVENE_API_KEY` / `CONVENE_API_SECRET`) unless present.
    pub async fn provision(&self, id: &str, secret: ApiSecret) -> Result<ApiKey> {
        let id = ApiKey::parse_id(id).map_err(DomainError::from)?;
        if let Some(existing) = self.store.api_key(&id).await? {
            if existing.secret == secret && existing.is_active() {
                return Ok(existing);
            }
            return Err(ServiceError::domain(
                ErrorCode::AlreadyExists,
                format!(
                    "API key {id} is stored with another secret or revoked; revoke it or choose another key id"
                ),
            ));
        }
        let key = ApiKey {
            id,
            secret,
            description: "provisioned from configuration".into(),
            created_at: self.clock.now(),
            revoked_at: None,
        };
        self.store.insert_api_key(&key).await?;
        Ok(key)
    }

    pub async fn get(&self, id: &str) -> Result<Option<ApiKey>> {
        Ok(self.store.api_key(id).await?)
    }

    pub async fn list(&self) -> Result<Vec<ApiKey>> {
        Ok(self.store.api_keys().await?)
    }

    pub async fn revoke(&self, id: &str) -> Result<()> {
        if self.store.revoke_api_key(id, self.clock.now()).await? {
            Ok(())
        } else {
            Err(DomainError::code(ErrorCode::ApiKeyNotFound).into())
        }
    }
}
