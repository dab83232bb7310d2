//! Seed 004's wire types: the documented response bodies, field for field (names, and numbers
//! versus strings as in the seed's sample: `gid`, `ts`, `type`, `publish` are numbers; `pin`,
//! `spin` and `resolution` are strings).

use serde::Serialize;

/// `op=login` without `code`: the code is on its way.
#[derive(Debug, Serialize)]
pub struct LoginSent {
    pub op: &'static str,
    pub ts: i64,
    pub result: &'static str,
}

/// `op=login` with the right `code`: the user's token.
#[derive(Debug, Serialize)]
pub struct LoginOk {
    pub op: &'static str,
    pub ts: i64,
    /// The user token (`token=` of every later call; also a session for seed 002's surface).
    pub token: String,
    /// The user id (a number, as mesibo's).
    pub uid: u64,
    pub name: String,
    pub result: &'static str,
}

/// `op=setgroup`: the new room.
#[derive(Debug, Serialize)]
pub struct SetGroupOk {
    pub op: &'static str,
    pub ts: i64,
    pub gid: u64,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: i64,
    /// The quality preset, `"0"` (default) to `"5"` (UHD), as a string like the seed's sample.
    pub resolution: String,
    /// The creator may publish: always 1.
    pub publish: u8,
    /// Lets people publish and view.
    pub pin: String,
    /// Lets people view only.
    pub spin: String,
    pub result: &'static str,
}

/// `op=joingroup`: whether the user may publish, and what the media client needs.
#[derive(Debug, Serialize)]
pub struct JoinGroupOk {
    pub op: &'static str,
    pub ts: i64,
    pub gid: u64,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: i64,
    pub resolution: String,
    /// 1 when the user may publish (entered with `pin`, or is the creator), 0 (`spin`).
    pub publish: u8,
    /// A LiveKit access token for the room (convene addition: convene's media is LiveKit's).
    pub access_token: String,
    /// The LiveKit signalling URL to connect to with `access_token`.
    pub url: String,
    /// The room's pins, for its creator only (as the original).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spin: Option<String>,
    pub result: &'static str,
}
