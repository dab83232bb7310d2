//! Seed 001's wire types: the documented response bodies, plus the state documents (the Sync
//! maps and user documents of the original), computed from the core's participants.

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Verified {
    pub verified: bool,
}

#[derive(Debug, Serialize)]
pub struct Success {
    pub success: bool,
}

#[derive(Debug, Serialize)]
pub struct Sent {
    pub sent: bool,
}

#[derive(Debug, Serialize)]
pub struct Removed {
    pub removed: bool,
}

#[derive(Debug, Serialize)]
pub struct Deleted {
    pub deleted: bool,
}

/// The names of the state documents a client follows.
#[derive(Debug, Serialize)]
pub struct DocumentNames {
    pub speakers: &'static str,
    pub viewers: &'static str,
    pub raised_hands: &'static str,
    /// This user's own document (`user-<identity>`): shows a speaker invitation.
    pub user: String,
}

/// `/create-stream`, `/join-stream-as-speaker`, `/join-stream-as-viewer`: `{token}` as
/// documented, and what a convene client needs besides.
#[derive(Debug, Serialize)]
pub struct StreamToken {
    /// A LiveKit access token: a speaker (or the host) may publish, a viewer only subscribe.
    pub token: String,
    /// The token for convene's events and chat (convene addition): the same as `token` with the
    /// embedded media engine; a convene token when media runs on an external LiveKit, whose
    /// plain tokens convene does not take.
    pub api_token: String,
    pub identity: String,
    pub stream_name: String,
    /// `RM` + 32 hex digits, as `/send-speaker-invite` takes it.
    pub room_sid: String,
    /// `host`, `speaker` or `viewer`.
    pub role: &'static str,
    /// Where the LiveKit SDK connects.
    pub url: String,
    /// convene's meeting id behind the stream.
    pub meeting_id: String,
    /// convene's event channel (`GET`, `Authorization: Bearer <api_token>`, `?after=N`).
    pub events_url: String,
    /// The meeting chat (`POST {"text"}` with `Authorization: Bearer <api_token>`).
    pub chat_url: String,
    pub documents: DocumentNames,
}

/// An entry of the `speakers` document.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SpeakerItem {
    pub host: bool,
}

/// An entry of the `viewers` document.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ViewerItem {
    /// The viewer reported being connected to the stream (`/viewer-connected-to-player`).
    pub connected: bool,
}

/// An entry of the `raised_hands` document.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RaisedHandItem {
    pub hand_raised: bool,
}

/// A `user-<identity>` document.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct UserDocument {
    pub speaker_invite: bool,
}

/// `/stream-state`: every state document of the stream, keyed by identity like the Sync maps.
#[derive(Debug, Serialize)]
pub struct StreamState {
    pub stream_name: String,
    pub room_sid: String,
    pub speakers: BTreeMap<String, SpeakerItem>,
    pub viewers: BTreeMap<String, ViewerItem>,
    pub raised_hands: BTreeMap<String, RaisedHandItem>,
    /// The `user-<identity>` documents that show an open invitation.
    pub invitations: BTreeMap<String, UserDocument>,
    /// The asking user's own document, when `user_identity` was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<UserDocument>,
    /// The meeting's last event sequence number: follow the event channel with `?after=` this.
    pub last_seq: u64,
    /// The event channel to follow (with a speaker's or viewer's `token`).
    pub events_url: String,
}
