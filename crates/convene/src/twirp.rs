//! LiveKit's server API (`/twirp/livekit.RoomService/<Method>`) on the embedded engine, so
//! LiveKit's server SDKs work against convene. Protobuf or JSON in, the same out; errors as Twirp's
//! JSON `{code, msg}`. Authorised as LiveKit does: a JWT signed with an API secret whose `video`
//! grant has `roomCreate` (CreateRoom, DeleteRoom), `roomList` (ListRooms) or `roomAdmin` for the
//! room (the rest). Moderation goes through the core, so it is stored and applies to later joins.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use convene_api::auth::{StoredKeyError, bearer, verify_with_stored_key};
use convene_core::ErrorCode;
use convene_core::event::TrackSelector;
use convene_core::ids::{DisplayName, Identity, RoomName};
use convene_core::meeting::{MeetingSettings, MeetingStatus, Metadata, Mode, WaitingPolicy};
use convene_core::participant::Role;
use convene_core::service::{Caller, Meetings, NewMeeting, ServiceError};
use convene_sfu::{DataKind, SfuControl, SfuError};
use livekit_api::access_token::VideoGrants;
use livekit_protocol as proto;
use prost::Message;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest request body accepted.
const MAX_BODY: usize = 1024 * 1024;

#[derive(Clone)]
struct TwirpState {
    meetings: Arc<Meetings>,
    control: SfuControl,
}

/// The RoomService routes.
pub fn router(meetings: Arc<Meetings>, control: SfuControl) -> Router {
    Router::new()
        .route(
            "/twirp/livekit.RoomService/{method}",
            axum::routing::post(dispatch),
        )
        .with_state(TwirpState { meetings, control })
}

/// A Twirp error.
struct TwirpError {
    code: &'static str,
    status: StatusCode,
    msg: String,
}

impl TwirpError {
    fn new(code: &'static str, status: StatusCode, msg: impl Into<String>) -> Self {
        Self {
            code,
            status,
            msg: msg.into(),
        }
    }
    fn unauthenticated(msg: impl Into<String>) -> Self {
        Self::new("unauthenticated", StatusCode::UNAUTHORIZED, msg)
    }
    fn denied(msg: impl Into<String>) -> Self {
        Self::new("permission_denied", StatusCode::FORBIDDEN, msg)
    }
    fn invalid(msg: impl Into<String>) -> Self {
        Self::new("invalid_argument", StatusCode::BAD_REQUEST, msg)
    }
    fn not_found(msg: impl Into<String>) -> Self {
        Self::new("not_found", StatusCode::NOT_FOUND, msg)
    }
}

impl From<ServiceError> for TwirpError {
    fn from(e: ServiceError) -> Self {
        let code = e.code();
        let message = match &e {
            ServiceError::Domain(d) => d.message.clone(),
            ServiceError::Store(_) => {
                tracing::error!(error = %e, "RoomService: store failure");
                "internal error".into()
            }
        };
        match code {
            ErrorCode::MeetingNotFound | ErrorCode::ParticipantNotFound => Self::not_found(message),
            ErrorCode::InvalidRequest => Self::invalid(message),
            ErrorCode::AlreadyExists => Self::new("already_exists", StatusCode::CONFLICT, message),
            ErrorCode::Forbidden | ErrorCode::Banned => Self::denied(message),
            ErrorCode::InvalidState | ErrorCode::MeetingEnded | ErrorCode::MeetingNotLive => {
                Self::new(
                    "failed_precondition",
                    StatusCode::PRECONDITION_FAILED,
                    message,
                )
            }
            ErrorCode::Internal | ErrorCode::Busy => {
                Self::new("internal", StatusCode::INTERNAL_SERVER_ERROR, message)
            }
            _ => Self::invalid(message),
        }
    }
}

impl From<SfuError> for TwirpError {
    fn from(e: SfuError) -> Self {
        match e {
            SfuError::NotFound(what) => Self::not_found(format!("{what} not found")),
            SfuError::Invalid(what) => Self::invalid(what),
            other => Self::new(
                "unavailable",
                StatusCode::SERVICE_UNAVAILABLE,
                other.to_string(),
            ),
        }
    }
}

impl IntoResponse for TwirpError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(serde_json::json!({ "code": self.code, "msg": self.msg })),
        )
            .into_response()
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    Protobuf,
    Json,
}

fn encoding(headers: &HeaderMap) -> Result<Encoding, TwirpError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let base = content_type.split(';').next().unwrap_or("").trim();
    match base {
        "application/protobuf" | "application/x-protobuf" => Ok(Encoding::Protobuf),
        "application/json" => Ok(Encoding::Json),
        _ => Err(TwirpError::new(
            "bad_route",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "use Content-Type application/protobuf or application/json",
        )),
    }
}

fn decode<T: Message + Default + DeserializeOwned>(
    encoding: Encoding,
    body: &Bytes,
) -> Result<T, TwirpError> {
    match encoding {
        Encoding::Protobuf => T::decode(body.as_ref()).map_err(|e| {
            TwirpError::new(
                "malformed",
                StatusCode::BAD_REQUEST,
                format!("bad protobuf: {e}"),
            )
        }),
        Encoding::Json => {
            if body.is_empty() {
                return Ok(T::default());
            }
            serde_json::from_slice(body).map_err(|e| {
                TwirpError::new(
                    "malformed",
                    StatusCode::BAD_REQUEST,
                    format!("bad JSON: {e}"),
                )
            })
        }
    }
}

fn encode<T: Message + Serialize>(encoding: Encoding, message: &T) -> Response {
    match encoding {
        Encoding::Protobuf => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/protobuf"),
            )],
            message.encode_to_vec(),
        )
            .into_response(),
        Encoding::Json => axum::Json(message).into_response(),
    }
}

async fn grants(state: &TwirpState, headers: &HeaderMap) -> Result<VideoGrants, TwirpError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| TwirpError::unauthenticated("missing Authorization"))?;
    let token = bearer(value)
        .ok_or_else(|| TwirpError::unauthenticated("expected Authorization: Bearer <token>"))?;
    let now = state.meetings.now();
    verify_with_stored_key(&state.meetings, token, |key| {
        convene_token::verify_room_service(token, &key.secret, now)
    })
    .await
    .map_err(|e| match e {
        StoredKeyError::Store(e) => e.into(),
        StoredKeyError::Token(_) | StoredKeyError::UnknownKey => {
            TwirpError::unauthenticated(e.to_string())
        }
    })
}

fn require_room_admin(grants: &VideoGrants, room: &str) -> Result<(), TwirpError> {
    if grants.room_admin && (grants.room.is_empty() || grants.room == room) {
        Ok(())
    } else {
        Err(TwirpError::denied(format!(
            "needs roomAdmin for room {room:?}"
        )))
    }
}

fn room_name(raw: &str) -> Result<RoomName, TwirpError> {
    RoomName::parse(raw).map_err(|e| TwirpError::invalid(e.to_string()))
}

fn identity(raw: &str) -> Result<Identity, TwirpError> {
    Identity::parse(raw).map_err(|e| TwirpError::invalid(e.to_string()))
}

async fn meeting_for(
    state: &TwirpState,
    room: &str,
) -> Result<convene_core::meeting::Meeting, TwirpError> {
    state
        .meetings
        .meeting_by_room(&room_name(room)?)
        .await?
        .ok_or_else(|| TwirpError::not_found(format!("room {room:?} not found")))
}

fn room_info(
    meeting: &convene_core::meeting::Meeting,
    live: Option<&convene_sfu::RoomSummary>,
) -> proto::Room {
    proto::Room {
        sid: live
            .map(|r| r.sid.clone())
            .unwrap_or_else(|| format!("RM_{}", meeting.id)),
        name: meeting.room_name.to_string(),
        max_participants: meeting.settings.capacity.unwrap_or(0),
        creation_time: meeting.created_at.as_secs(),
        creation_time_ms: meeting.created_at.as_millis(),
        metadata: serde_json::Value::from(meeting.settings.metadata.clone()).to_string(),
        num_participants: live.map(|r| r.num_participants).unwrap_or(0),
        num_publishers: live.map(|r| r.num_publishers).unwrap_or(0),
        ..proto::Room::default()
    }
}

async fn dispatch(
    State(state): State<TwirpState>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match handle(&state, &method, &headers, &body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn handle(
    state: &TwirpState,
    method: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, TwirpError> {
    if body.len() > MAX_BODY {
        return Err(TwirpError::new(
            "resource_exhausted",
            StatusCode::PAYLOAD_TOO_LARGE,
            "request too large",
        ));
    }
    let encoding = encoding(headers)?;
    let grants = grants(state, headers).await?;
    let admin = Caller::Admin;
    match method {
        "CreateRoom" => {
            let request: proto::CreateRoomRequest = decode(encoding, body)?;
            if !grants.room_create {
                return Err(TwirpError::denied("needs roomCreate"));
            }
            let room = room_name(&request.name)?;
            let name = DisplayName::parse(room.as_str())
                .map_err(|e| TwirpError::invalid(e.to_string()))?;
            let metadata = match request.metadata.trim() {
                "" => Metadata::default(),
                text => match serde_json::from_str::<serde_json::Value>(text) {
                    Ok(value @ serde_json::Value::Object(_)) => {
                        Metadata::parse(value).map_err(|e| TwirpError::invalid(e.to_string()))?
                    }
                    _ => Metadata::parse(serde_json::json!({ "livekit_metadata": text }))
                        .map_err(|e| TwirpError::invalid(e.to_string()))?,
                },
            };
            let capacity = (request.max_participants > 0).then_some(request.max_participants);
            let meeting = state
                .meetings
                .ensure_room(&room, || NewMeeting {
                    id: None,
                    digits: None,
                    room_name: None,
                    settings: MeetingSettings {
                        capacity,
                        metadata: metadata.clone(),
                        ..MeetingSettings::new(name.clone(), Mode::Meeting, WaitingPolicy::Open)
                    },
                    host_credential: None,
                    participant_credential: None,
                    viewer_credential: None,
                })
                .await?;
            let live = state
                .control
                .list_rooms()
                .await?
                .into_iter()
                .find(|r| r.name == meeting.room_name.as_str());
            Ok(encode(encoding, &room_info(&meeting, live.as_ref())))
        }
        "ListRooms" => {
            let request: proto::ListRoomsRequest = decode(encoding, body)?;
            if !grants.room_list {
                return Err(TwirpError::denied("needs roomList"));
            }
            let live = state.control.list_rooms().await?;
            let mut meetings = Vec::new();
            if request.names.is_empty() {
                let mut after = None;
                loop {
                    let page = state.meetings.meetings(after.as_ref(), 1000).await?;
                    let last = page.last().map(|m| m.id.clone());
                    meetings.extend(
                        page.into_iter()
                            .filter(|m| m.status != MeetingStatus::Ended),
                    );
                    match last {
                        Some(id) if meetings.len() < 10_000 => after = Some(id),
                        _ => break,
                    }
                }
            } else {
                for name in request.names.iter().take(1000) {
                    if let Ok(room) = RoomName::parse(name)
                        && let Some(meeting) = state.meetings.meeting_by_room(&room).await?
                    {
                        meetings.push(meeting);
                    }
                }
            }
            let rooms = meetings
                .iter()
                .map(|m| room_info(m, live.iter().find(|r| r.name == m.room_name.as_str())))
                .collect();
            Ok(encode(encoding, &proto::ListRoomsResponse { rooms }))
        }
        "DeleteRoom" => {
            let request: proto::DeleteRoomRequest = decode(encoding, body)?;
            if !grants.room_create {
                return Err(TwirpError::denied("needs roomCreate"));
            }
            let meeting = meeting_for(state, &request.room).await?;
            state.meetings.end_meeting(&meeting.id, &admin).await?;
            Ok(encode(encoding, &proto::DeleteRoomResponse {}))
        }
        "ListParticipants" => {
            let request: proto::ListParticipantsRequest = decode(encoding, body)?;
            require_room_admin(&grants, &request.room)?;
            meeting_for(state, &request.room).await?;
            let participants = match state.control.list_participants(&request.room).await {
                Ok(list) => list,
                Err(SfuError::NotFound(_)) => Vec::new(),
                Err(e) => return Err(e.into()),
            };
            Ok(encode(
                encoding,
                &proto::ListParticipantsResponse { participants },
            ))
        }
        "GetParticipant" => {
            let request: proto::RoomParticipantIdentity = decode(encoding, body)?;
            require_room_admin(&grants, &request.room)?;
            let info = state
                .control
                .get_participant(&request.room, &request.identity)
                .await?;
            Ok(encode(encoding, &info))
        }
        "RemoveParticipant" => {
            let request: proto::RoomParticipantIdentity = decode(encoding, body)?;
            require_room_admin(&grants, &request.room)?;
            let meeting = meeting_for(state, &request.room).await?;
            state
                .meetings
                .remove(&meeting.id, &admin, &identity(&request.identity)?)
                .await?;
            Ok(encode(encoding, &proto::RemoveParticipantResponse {}))
        }
        "MutePublishedTrack" => {
            let request: proto::MuteRoomTrackRequest = decode(encoding, body)?;
            require_room_admin(&grants, &request.room)?;
            let meeting = meeting_for(state, &request.room).await?;
            let who = identity(&request.identity)?;
            let info = state
                .control
                .get_participant(&request.room, &request.identity)
                .await?;
            if !info.tracks.iter().any(|t| t.sid == request.track_sid) {
                return Err(TwirpError::not_found(format!(
                    "track {:?} not found",
                    request.track_sid
                )));
            }
            state
                .meetings
                .mute(
                    &meeting.id,
                    &admin,
                    &who,
                    TrackSelector::Track(request.track_sid.clone()),
                    request.muted,
                )
                .await?;
            let info = state
                .control
                .get_participant(&request.room, &request.identity)
                .await?;
            let track = info.tracks.into_iter().find(|t| t.sid == request.track_sid);
            Ok(encode(encoding, &proto::MuteRoomTrackResponse { track }))
        }
        "UpdateParticipant" => {
            let request: proto::UpdateParticipantRequest = decode(encoding, body)?;
            require_room_admin(&grants, &request.room)?;
            let meeting = meeting_for(state, &request.room).await?;
            let who = identity(&request.identity)?;
            if let Some(permission) = &request.permission {
                // Publishing rights are a role in convene: stored, and applied to later joins too.
                let current = state.meetings.participant(&meeting.id, &who).await?;
                let role = match (current.role, permission.can_publish) {
                    (Role::Host, _) => Role::Host,
                    (_, true) => Role::Speaker,
                    (_, false) => Role::Viewer,
                };
                state
                    .meetings
                    .set_role(&meeting.id, &admin, &who, role)
                    .await?;
            }
            let name = (!request.name.is_empty()).then(|| request.name.clone());
            let metadata = (!request.metadata.is_empty()).then(|| request.metadata.clone());
            let attributes = (!request.attributes.is_empty()).then(|| request.attributes.clone());
            let permission = request
                .permission
                .as_ref()
                .map(|p| convene_sfu::Permission {
                    can_publish: p.can_publish,
                    can_subscribe: p.can_subscribe,
                    can_publish_data: p.can_publish_data,
                    hidden: p.hidden,
                    room_admin: false,
                });
            let info = state
                .control
                .update_participant(
                    &request.room,
                    &request.identity,
                    name,
                    metadata,
                    attributes,
                    permission,
                )
                .await?;
            Ok(encode(encoding, &info))
        }
        "SendData" => {
            let request: proto::SendDataRequest = decode(encoding, body)?;
            require_room_admin(&grants, &request.room)?;
            let kind = if request.kind == proto::data_packet::Kind::Lossy as i32 {
                DataKind::Lossy
            } else {
                DataKind::Reliable
            };
            state
                .control
                .send_data(
                    &request.room,
                    request.data,
                    kind,
                    request.destination_identities,
                    request.topic,
                )
                .await?;
            Ok(encode(encoding, &proto::SendDataResponse {}))
        }
        other => Err(TwirpError::new(
            "bad_route",
            StatusCode::NOT_FOUND,
            format!("no method {other:?} on livekit.RoomService"),
        )),
    }
}
