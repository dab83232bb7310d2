//! Health (liveness) and readiness.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Extension;
use axum::http::StatusCode;
use axum::{Json, response::IntoResponse};
use futures::future::BoxFuture;

use crate::wire::{Health, Readiness};

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "system", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// What readiness asks: the store answers a trivial query. The binary supplies it as an
/// `Extension<ReadinessProbe>` over the whole app; its error is logged, not sent.
pub trait StoreProbe: Send + Sync {
    fn ping(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// The probe `/readyz` runs, with the time it is given.
#[derive(Clone)]
pub struct ReadinessProbe {
    pub store: Arc<dyn StoreProbe>,
    pub timeout: Duration,
}

/// Readiness: 200 when the store answers a trivial query within a short timeout, else 503 naming
/// the cause. A load balancer sends traffic only to a ready node; `/healthz` is liveness.
#[utoipa::path(get, path = "/readyz", tag = "system", responses(
    (status = 200, description = "Ready: the store answers.", body = Readiness),
    (status = 503, description = "Not ready; `cause` says why.", body = Readiness),
))]
pub async fn readyz(Extension(probe): Extension<ReadinessProbe>) -> impl IntoResponse {
    let cause = match tokio::time::timeout(probe.timeout, probe.store.ping()).await {
        Ok(Ok(())) => None,
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness: the store answered with an error");
            Some("store_error")
        }
        Err(_) => {
            tracing::warn!(timeout = ?probe.timeout, "readiness: the store did not answer in time");
            Some("store_timeout")
        }
    };
    match cause {
        None => (
            StatusCode::OK,
            Json(Readiness {
                status: "ready".into(),
                cause: None,
            }),
        ),
        Some(cause) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Readiness {
                status: "unavailable".into(),
                cause: Some(cause.into()),
            }),
        ),
    }
}
