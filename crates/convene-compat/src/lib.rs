//! convene's compatibility surfaces: each seed backend's documented API, served faithfully over
//! the one core. Each surface is its own module with its own wire types and error shape and calls
//! only [`convene_core::service::Meetings`] (through [`convene_api::AppState`]); surfaces never
//! reach into storage or into each other.
//!
//! | module | seed | mounted at |
//! |---|---|---|
//! | [`waiting_room`] | `000` meeting with a waiting room (Twilio Video + Sync) | `/compat/waiting-room` |
//! | [`live_stream`] | `001` interactive live stream (Twilio Live) | `/compat/live-stream` |
//! | [`livekit_join`] | `002` LiveKit room-join function (Appwrite) | `/compat/livekit-join` |
//! | [`bbb`] | `003` BigBlueButton interface | `/compat/bbb` |
//! | [`mesibo`] | `004` mesibo conferencing backend | `/compat/mesibo/api` |
//!
//! [`params`] reads POST parameters as JSON or as a form for any surface that needs both;
//! [`session`] issues and checks the user sessions of the email one-time-code login (seed 004's
//! `login`), which seed 002's surface accepts too.

pub mod bbb;
pub mod live_stream;
pub mod livekit_join;
pub mod mesibo;
pub mod params;
mod secret;
pub mod session;
pub mod waiting_room;

use axum::Router;
use convene_api::AppState;
use convene_core::apikey::ApiSecret;
use convene_core::meeting::Meeting;
use convene_token::Signer;

/// Whether `meeting` was created by the surface named `surface`: each surface records itself in
/// its meetings' metadata as `{"compat": <surface>}` and acts only on its own meetings.
pub(crate) fn created_by(meeting: &Meeting, surface: &str) -> bool {
    meeting
        .settings
        .metadata
        .as_map()
        .get("compat")
        .and_then(|v| v.as_str())
        == Some(surface)
}

/// Settings of the compatibility surfaces (a surface whose secret is unset is off).
#[derive(Clone, Default)]
pub struct CompatConfig {
    /// `CONVENE_COMPAT_LIVE_PASSCODE`: turns on seed 001's surface.
    pub live_passcode: Option<String>,
    /// `LIVEKIT_API_KEY` and `LIVEKIT_API_SECRET`: seed 002's tokens are signed with this pair
    /// (an external LiveKit) instead of convene's key.
    pub livekit_api: Option<(String, ApiSecret)>,
    /// `LIVEKIT_SOCKET_URL`: the URL seed 002 hands out instead of convene's signalling URL.
    pub livekit_socket_url: Option<String>,
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
            .field(
                "livekit_api",
                &self.livekit_api.as_ref().map(|(key, _)| key),
            )
            .field("livekit_socket_url", &self.livekit_socket_url)
            .field("bbb_token", &self.bbb_token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// All compatibility surfaces, to be merged into the server's app.
pub fn router(state: AppState, config: &CompatConfig) -> Router {
    let target = livekit_join::Target {
        signer: config
            .livekit_api
            .as_ref()
            .map(|(key, secret)| Signer::new(key.clone(), secret.clone())),
        socket_url: config.livekit_socket_url.clone(),
    };
    let mut router = Router::new()
        .nest("/compat/waiting-room", waiting_room::router(state.clone()))
        .nest("/compat/mesibo", mesibo::router(state.clone()))
        .merge(livekit_join::router(state.clone(), target));
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
