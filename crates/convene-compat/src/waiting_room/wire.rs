//! Seed 000's wire types: the documented response bodies, plus the waiting-room document.

use serde::Serialize;

/// `POST /admin/create`.
#[derive(Debug, Serialize)]
pub struct CreateResponse {
    /// A JSON number of exactly `n_digits` digits.
    pub meeting_id: u64,
}

/// `POST /admin/join` and `POST /user/join`: what a video SDK needs to join the room.
#[derive(Debug, Serialize)]
pub struct JoinResponse {
    pub room_id: String,
    pub identity: String,
    /// A LiveKit access token for `room_id`.
    pub token: String,
    /// The token for convene's own API, `events_url` included (convene addition): the same as
    /// `token` with the embedded media engine; a convene token when media runs on an external
    /// LiveKit, whose plain tokens convene does not take.
    pub api_token: String,
    /// Where the LiveKit SDK connects (convene addition).
    pub url: String,
    /// convene's event channel for the meeting, read with `api_token` (convene addition).
    pub events_url: String,
}

/// The waiting-room document's value: whether the room is open to this guest, and which room.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WaitingRoomState {
    /// The meeting has started and this guest is let in: call `/user/join` with `room_id`.
    pub room_open: bool,
    /// The room to join once open (`null` while closed).
    pub room_id: Option<String>,
    /// `created`, `live` or `ended`.
    pub meeting_status: &'static str,
}

/// `POST /user/enter-waiting-room`: which document to follow, as whom, with which token.
#[derive(Debug, Serialize)]
pub struct EnterResponse {
    /// The waiting-room document's name (`waiting-room.<meeting_id>`).
    pub document: String,
    pub identity: String,
    /// A waiting-room token: reads this guest's own waiting-room state and events, nothing more.
    pub token: String,
    /// convene's event channel for the meeting (`GET` with `Authorization: Bearer <token>`).
    pub events_url: String,
    /// The document's current value.
    pub state: WaitingRoomState,
}

/// `POST /user/waiting-room-state`: the document, read with the waiting-room token.
#[derive(Debug, Serialize)]
pub struct DocumentResponse {
    pub document: String,
    pub identity: String,
    pub state: WaitingRoomState,
    /// The meeting's last event sequence number: follow the event channel with `?after=` this.
    pub last_seq: u64,
}
