//! convene's compatibility surfaces: each seed backend's documented API, served faithfully over
//! the one core. Each surface is its own module with its own wire types and error shape and calls
//! only [`convene_core::service::Meetings`] (through [`convene_api::AppState`]); surfaces never
//! reach into storage or into each other.
//!
//! | module | seed | mounted at |
//! |---|---|---|
//! | [`waiting_room`] | `000` meeting with a waiting room (Twilio Video + Sync) | `/compat/waiting-room` |
//! | [`live_stream`] | `001` interactive live stream (Twilio Live) | `/compat/live-stream` |
//! | [`bbb`] | `003` BigBlueButton interface | `/compat/bbb` |
//!
//! [`params`] reads POST parameters as JSON or as a form for any surface that needs both.

pub mod bbb;
pub mod live_stream;
pub mod params;
pub mod waiting_room;

use axum::Router;
use convene_api::AppState;

/// Settings of the compatibility surfaces (a surface whose secret is unset is off).
#[derive(Clone, Default)]
pub struct CompatConfig {
    /// `CONVENE_COMPAT_LIVE_PASSCODE`: turns on seed 001's surface.
    pub live_passcode: Option<String>,
    /// `CONVENE_COMPAT_BBB_TOKEN`: turns on seed 003's surface.
    pub bbb_token: Option<String>,
}

impl std::fmt::Debug for CompatConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompatConfig")
            .field(
                "live_passcode",
                &self.live_passcode.as_ref().map(|_| "<set>"),
            )
            .field("bbb_token", &self.bbb_token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// All compatibility surfaces, to be merged into the server's app.
pub fn router(state: AppState, config: &CompatConfig) -> Router {
    let mut router =
        Router::new().nest("/compat/waiting-room", waiting_room::router(state.clone()));
    match &config.bbb_token {
        Some(token) => {
            router = router.nest("/compat/bbb", bbb::router(state.clone(), token.clone()))
        }
        None => tracing::info!(
            "seed 003 surface /compat/bbb is off: set CONVENE_COMPAT_BBB_TOKEN to turn it on"
        ),
    }
    match &config.live_passcode {
        Some(passcode) => {
            router = router.nest(
                "/compat/live-stream",
                live_stream::router(state, passcode.clone()),
            )
        }
        None => tracing::info!(
            "seed 001 surface /compat/live-stream is off: set CONVENE_COMPAT_LIVE_PASSCODE to turn it on"
        ),
    }
    router
}
