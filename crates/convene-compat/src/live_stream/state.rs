//! The stream's state documents (the original's Sync objects) as views of the core's
//! participants, and the stream's room sid.
//!
//! | document | holds | changed by events |
//! |---|---|---|
//! | `speakers` | hosts and speakers of the current run | `participant.joined`, `participant.role_changed`, `participant.removed`, `participant.left`, `meeting.ended` |
//! | `viewers` | viewers, `connected` once they called `/viewer-connected-to-player` | `participant.joined`, `participant.role_changed`, `participant.removed`, `meeting.ended` |
//! | `raised_hands` | people with a raised hand | `stage.hand_raised`, `stage.hand_lowered` |
//! | `user-<identity>` | `speaker_invite` | `stage.invited` (seen by that user and hosts), `participant.role_changed` |

use std::collections::BTreeMap;

use convene_api::AppState;
use convene_core::ids::{Identity, MeetingId};
use convene_core::meeting::Meeting;
use convene_core::participant::{Participant, ParticipantState, Role};

use super::SURFACE;
use super::error::{LiveStreamError, Result};
use super::wire::{RaisedHandItem, SpeakerItem, StreamState, UserDocument, ViewerItem};
use crate::created_by;

pub const SPEAKERS: &str = "speakers";
pub const VIEWERS: &str = "viewers";
pub const RAISED_HANDS: &str = "raised_hands";

/// The name of a user's own document.
pub fn user_document(identity: &Identity) -> String {
    format!("user-{identity}")
}

/// Present in the stream's current run.
pub fn in_run(meeting: &Meeting, participant: &Participant) -> bool {
    participant.state.is_member()
        && participant.admitted_in.as_ref() == Some(&meeting.run.instance_id)
}

/// FNV-1a, 64 bits: a stable, dependency-free digest of the run id for the room sid.
fn fnv64(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The stream's room sid as Twilio shapes it (`RM` + 32 hex digits): the meeting id, then a
/// digest of the current run, so a sid names one run of one stream.
pub fn room_sid(meeting: &Meeting) -> String {
    format!(
        "RM{:016x}{:016x}",
        meeting.id.as_u64(),
        fnv64(meeting.run.instance_id.as_str())
    )
}

/// The live stream a room sid names, or 404 (malformed, unknown, another surface's, or an
/// earlier run).
pub async fn resolve_room_sid(state: &AppState, sid: &str) -> Result<Meeting> {
    let unknown = || {
        LiveStreamError::stream_not_found(format!("No current stream has the room sid '{sid}'."))
    };
    let hex = sid
        .strip_prefix("RM")
        .filter(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(unknown)?;
    let number = u64::from_str_radix(&hex[..16], 16).map_err(|_| unknown())?;
    let id = MeetingId::parse(&number.to_string()).map_err(|_| unknown())?;
    let meeting = match state.meetings.meeting(&id).await {
        Ok(meeting) => meeting,
        Err(e) if e.code() == convene_core::ErrorCode::MeetingNotFound => return Err(unknown()),
        Err(e) => return Err(e.into()),
    };
    if !created_by(&meeting, SURFACE)
        || !meeting.is_live()
        || room_sid(&meeting) != format!("RM{}", hex.to_ascii_lowercase())
    {
        return Err(unknown());
    }
    Ok(meeting)
}

/// Every document of the stream, computed now.
pub async fn documents(
    state: &AppState,
    meeting: &Meeting,
    user: Option<&Identity>,
) -> Result<StreamState> {
    let present = state
        .meetings
        .participants(
            &meeting.id,
            Some(&[ParticipantState::Admitted, ParticipantState::Joined]),
        )
        .await?;
    let mut documents = StreamState {
        stream_name: meeting.room_name.to_string(),
        room_sid: room_sid(meeting),
        speakers: BTreeMap::new(),
        viewers: BTreeMap::new(),
        raised_hands: BTreeMap::new(),
        invitations: BTreeMap::new(),
        user: None,
        last_seq: meeting.last_seq,
        events_url: state.urls.events(meeting.id.as_str()),
    };
    for p in present.iter().filter(|p| in_run(meeting, p)) {
        let key = p.identity.to_string();
        match p.role {
            Role::Host | Role::Speaker => {
                documents.speakers.insert(
                    key.clone(),
                    SpeakerItem {
                        host: p.role == Role::Host,
                    },
                );
            }
            Role::Viewer => {
                let connected = p.state == ParticipantState::Joined || p.media_connected;
                documents
                    .viewers
                    .insert(key.clone(), ViewerItem { connected });
            }
        }
        if p.hand_raised {
            documents
                .raised_hands
                .insert(key.clone(), RaisedHandItem { hand_raised: true });
        }
        if p.invited {
            documents.invitations.insert(
                key,
                UserDocument {
                    speaker_invite: true,
                },
            );
        }
    }
    if let Some(user) = user {
        let invited = present
            .iter()
            .any(|p| &p.identity == user && p.invited && in_run(meeting, p));
        documents.user = Some(UserDocument {
            speaker_invite: invited,
        });
    }
    Ok(documents)
}
