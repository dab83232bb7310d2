//! Seed 001: the interactive live-stream API (Twilio Live), at `/compat/live-stream`.

use axum::Router;
use convene_api::AppState;

/// The surface's routes (to be built); every request needs `Authorization: <passcode>`.
pub fn router(state: AppState, _passcode: String) -> Router {
    Router::new().with_state(state)
}
