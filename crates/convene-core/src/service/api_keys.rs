//! API keys: creating, provisioning from configuration, listing and revoking them.

use crate::apikey::{ApiKey, ApiSecret};
use crate::error::{DomainError, ErrorCode};

use super::{Meetings, Result, ServiceError};

impl Meetings {
    pub async fn create_api_key(&self, description: &str) -> Result<ApiKey> {
        let key = ApiKey::generate(description, self.now(), &mut rand::rng());
        self.store.insert_api_key(&key).await?;
        Ok(key)
    }

    /// Stores a configured key pair (`CONVENE_API_KEY` / `CONVENE_API_SECRET`) unless present.
    pub async fn provision_api_key(&self, id: &str, secret: ApiSecret) -> Result<ApiKey> {
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
            created_at: self.now(),
            revoked_at: None,
        };
        self.store.insert_api_key(&key).await?;
        Ok(key)
    }

    pub async fn api_key(&self, id: &str) -> Result<Option<ApiKey>> {
        Ok(self.store.api_key(id).await?)
    }

    pub async fn api_keys(&self) -> Result<Vec<ApiKey>> {
        Ok(self.store.api_keys().await?)
    }

    pub async fn revoke_api_key(&self, id: &str) -> Result<()> {
        if self.store.revoke_api_key(id, self.now()).await? {
            Ok(())
        } else {
            Err(DomainError::code(ErrorCode::ApiKeyNotFound).into())
        }
    }
}
