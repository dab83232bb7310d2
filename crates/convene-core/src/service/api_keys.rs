//! API keys: creating, provisioning from configuration, listing and revoking them. A service of
//! its own over the store, so the binary picks its signing key (and `convene api-key` manages
//! keys) without a meeting service; [`Meetings::keys`] reaches the same one.
//!
//! [`Meetings::keys`]: super::Meetings::keys

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::apikey::{ApiKey, ApiSecret};
use crate::error::{DomainError, ErrorCode};
use crate::ports::Store;
use crate::random::Entropy;
use crate::time::{Clock, Timestamp};

/// How long a key read from the store answers [`ApiKeys::get`] without reading it again: a key
/// revoked elsewhere (`convene api-key revoke`, another node) stops working within this.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(2);
/// Keys held at most (the deployment's keys are few; unknown ids are not held).
const KEY_CACHE_MAX: usize = 1024;

use super::{Result, ServiceError};

/// The API key service. Cheap to share behind an `Arc`.
pub struct ApiKeys {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    /// Keys read lately, with when they were read: every call made with the API key checks it.
    held: Mutex<HashMap<String, (ApiKey, Timestamp)>>,
}

impl ApiKeys {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, entropy: Arc<dyn Entropy>) -> Self {
        Self {
            store,
            clock,
            entropy,
            held: Mutex::default(),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, (ApiKey, Timestamp)>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
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

    /// The key with this id, as read from the store at most [`KEY_CACHE_TTL`] ago.
    pub async fn get(&self, id: &str) -> Result<Option<ApiKey>> {
        let now = self.clock.now();
        if let Some((key, read_at)) = self.held().get(id)
            && now.as_millis() - read_at.as_millis() < KEY_CACHE_TTL.as_millis() as i64
            && now >= *read_at
        {
            return Ok(Some(key.clone()));
        }
        let key = self.store.api_key(id).await?;
        let mut held = self.held();
        match &key {
            Some(key) => {
                if held.len() >= KEY_CACHE_MAX {
                    held.clear();
                }
                held.insert(key.id.clone(), (key.clone(), now));
            }
            None => {
                held.remove(id);
            }
        }
        Ok(key)
    }

    pub async fn list(&self) -> Result<Vec<ApiKey>> {
        Ok(self.store.api_keys().await?)
    }

    pub async fn revoke(&self, id: &str) -> Result<()> {
        self.held().remove(id);
        if self.store.revoke_api_key(id, self.clock.now()).await? {
            Ok(())
        } else {
            Err(DomainError::code(ErrorCode::ApiKeyNotFound).into())
        }
    }
}
