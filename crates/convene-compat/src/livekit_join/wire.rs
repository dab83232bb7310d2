//! Seed 002's wire types: the documented success body.

use serde::Serialize;

/// `200`: where to connect and with which token.
#[derive(Debug, Serialize)]
pub struct Joined {
    /// Always `"Success"`.
    pub msg: &'static str,
    pub livekit_socket_url: String,
    /// A LiveKit access token: `room` = `roomName`, identity = `uid`.
    pub access_token: String,
}
