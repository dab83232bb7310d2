//! Seed 000: the waiting-room meeting API (Twilio Video + Sync), at `/compat/waiting-room`.

use axum::Router;
use convene_api::AppState;

/// The surface's routes (to be built).
pub fn router(state: AppState) -> Router {
    Router::new().with_state(state)
}
