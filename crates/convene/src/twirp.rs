//! LiveKit's server API (`/twirp/livekit.RoomService/<Method>` and `/twirp/livekit.Egress/<Method>`)
//! on the embedded engine, so LiveKit's server SDKs work against convene. Protobuf or JSON in, the
//! same out; errors as Twirp's JSON `{code, msg}`. Authorised as LiveKit does: a JWT signed with an
//! API secret whose `video` grant has `roomCreate` (CreateRoom, DeleteRoom), `roomList`
//! (ListRooms), `roomAdmin` for the room (the rest of RoomService) or `roomRecord` (Egress).
//! Moderation goes through the core, so it is stored and applies to later joins.
//!
//! Egress is convene's own recording of the room's meeting: a room composite egress is a
//! recording (its id is the egress id; a meeting not live is started, as a join would), stopping
//! it stops the recording, and once the recording
//! is ready its composite MP4 is the egress's file result (named by the file output's path, found
//! at the recording's download URL). One MP4 file output, audio and video: other outputs, uploads
//! and the other egress kinds are refused. The requests are remembered in memory only (the last
//! [`MAX_REMEMBERED_EGRESSES`]): after a restart an egress is still listed by room, without them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use convene_api::auth::{StoredKeyError, bearer, verify_with_stored_key};
use convene_core::ErrorCode;
use convene_core::event::RecordingFileKind;
use convene_core::event::TrackSelector;
use convene_core::ids::{DisplayName, Identity, MeetingId, RecordingId, RoomName};
use convene_core::meeting::{
    Meeting, MeetingSettings, MeetingStatus, Metadata, Mode, WaitingPolicy,
};
use convene_core::participant::Role;
use convene_core::recording::{Recording, RecordingState};
use convene_core::service::{Caller, Meetings, NewMeeting, ServiceError};
use convene_core::time::Timestamp;
use convene_sfu::{DataKind, SfuControl, SfuError};
use convene_token::TokenError;
use livekit_api::access_token::{TokenVerifier, VideoGrants};
use livekit_protocol as proto;
use prost::Message;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest request body accepted.
const MAX_BODY: usize = 1024 * 1024;
/// Egress requests remembered (for their file paths), the oldest forgotten first.
pub const MAX_REMEMBERED_EGRESSES: usize = 4096;

#[derive(Clone)]
struct TwirpState {
    meetings: Arc<Meetings>,
    control: SfuControl,
    egresses: Arc<Mutex<Egresses>>,
    /// This server's public URL (a file result's location is its download URL).
    public_url: Arc<str>,
}

/// The room composite egresses started here: each one's meeting and request, by recording id.
#[derive(Default)]
struct Egresses {
    started: HashMap<RecordingId, StartedEgress>,
    order: VecDeque<RecordingId>,
}

#[derive(Clone)]
struct StartedEgress {
    meeting: MeetingId,
    request: proto::RoomCompositeEgressRequest,
}

impl Egresses {
    fn remember(&mut self, recording: RecordingId, egress: StartedEgress) {
        if self.started.insert(recording.clone(), egress).is_none() {
            self.order.push_back(recording);
        }
        while self.order.len() > MAX_REMEMBERED_EGRESSES {
            if let Some(oldest) = self.order.pop_front() {
                self.started.remove(&oldest);
            }
        }
    }
}

/// The RoomService and Egress routes; `public_url` is this server's.
pub fn router(meetings: Arc<Meetings>, control: SfuControl, public_url: String) -> Router {
    Router::new()
        .route(
            "/twirp/livekit.RoomService/{method}",
            axum::routing::post(dispatch),
        )
        .route(
            "/twirp/livekit.Egress/{method}",
            axum::routing::post(dispatch_egress),
        )
        .with_state(TwirpState {
            meetings,
            control,
            egresses: Arc::default(),
            public_url: public_url.trim_end_matches('/').into(),
        })
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
    fn unimplemented(msg: impl Into<String>) -> Self {
        Self::new("unimplemented", StatusCode::NOT_IMPLEMENTED, msg)
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
            ErrorCode::MeetingNotFound
            | ErrorCode::ParticipantNotFound
            | ErrorCode::RecordingNotFound => Self::not_found(message),
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

fn bearer_token(headers: &HeaderMap) -> Result<&str, TwirpError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| TwirpError::unauthenticated("missing Authorization"))?;
    bearer(value)
        .ok_or_else(|| TwirpError::unauthenticated("expected Authorization: Bearer <token>"))
}

fn refused(e: StoredKeyError) -> TwirpError {
    match e {
        StoredKeyError::Store(e) => e.into(),
        StoredKeyError::Token(_) | StoredKeyError::UnknownKey => {
            TwirpError::unauthenticated(e.to_string())
        }
    }
}

async fn grants(state: &TwirpState, headers: &HeaderMap) -> Result<VideoGrants, TwirpError> {
    let token = bearer_token(headers)?;
    let now = state.meetings.now();
    verify_with_stored_key(&state.meetings, token, |key| {
        convene_token::verify_room_service(token, &key.secret, now)
    })
    .await
    .map_err(refused)
}

/// Egress needs `roomRecord` (LiveKit's server SDKs sign Egress calls with that grant alone).
async fn require_room_record(state: &TwirpState, headers: &HeaderMap) -> Result<(), TwirpError> {
    let token = bearer_token(headers)?;
    let now = state.meetings.now();
    let record = verify_with_stored_key(&state.meetings, token, |key| {
        match convene_token::verify_room_service(token, &key.secret, now) {
            Ok(grants) => Ok(grants.room_record),
            // Signed with the key, in time, no participant token of convene's: a server token
            // without RoomService grants, whose grants LiveKit's verifier reads.
            Err(TokenError::MissingGrant) => {
                TokenVerifier::with_api_key(&key.id, key.secret.expose())
                    .verify(token)
                    .map(|claims| claims.video.room_record)
                    .map_err(|_| TokenError::Malformed)
            }
            Err(e) => Err(e),
        }
    })
    .await
    .map_err(refused)?;
    if record {
        Ok(())
    } else {
        Err(TwirpError::denied("needs roomRecord"))
    }
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

/// A request body over [`MAX_BODY`] is refused before it is decoded.
fn check_size(body: &Bytes) -> Result<(), TwirpError> {
    if body.len() > MAX_BODY {
        return Err(TwirpError::new(
            "resource_exhausted",
            StatusCode::PAYLOAD_TOO_LARGE,
            "request too large",
        ));
    }
    Ok(())
}

async fn handle(
    state: &TwirpState,
    method: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, TwirpError> {
    check_size(body)?;
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

async fn dispatch_egress(
    State(state): State<TwirpState>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match handle_egress(&state, &method, &headers, &body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn handle_egress(
    state: &TwirpState,
    method: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, TwirpError> {
    check_size(body)?;
    let encoding = encoding(headers)?;
    require_room_record(state, headers).await?;
    let admin = Caller::Admin;
    match method {
        "StartRoomCompositeEgress" => {
            let request: proto::RoomCompositeEgressRequest = decode(encoding, body)?;
            check_composite_request(&request)?;
            let mut meeting = meeting_for(state, &request.room_name).await?;
            if meeting.status != MeetingStatus::Live {
                // A LiveKit room that exists is open: the recorder joining it starts the
                // meeting, as a plain LiveKit token's join does.
                meeting = state.meetings.start_meeting(&meeting.id, &admin).await?;
            }
            let recording = state.meetings.start_recording(&meeting.id, &admin).await?;
            let started = StartedEgress {
                meeting: meeting.id.clone(),
                request,
            };
            lock(&state.egresses).remember(recording.id.clone(), started.clone());
            let info = egress_info(state, &meeting, &recording, Some(&started.request)).await;
            Ok(encode(encoding, &info))
        }
        "StopEgress" => {
            let request: proto::StopEgressRequest = decode(encoding, body)?;
            let (recording_id, started) = remembered(state, &request.egress_id)?;
            let meeting = state.meetings.meeting(&started.meeting).await?;
            let recording = state
                .meetings
                .stop_recording(&meeting.id, &admin, &recording_id)
                .await?;
            let info = egress_info(state, &meeting, &recording, Some(&started.request)).await;
            Ok(encode(encoding, &info))
        }
        "ListEgress" => {
            let request: proto::ListEgressRequest = decode(encoding, body)?;
            let items = list_egress(state, &request).await?;
            Ok(encode(
                encoding,
                &proto::ListEgressResponse {
                    items,
                    next_page_token: None,
                },
            ))
        }
        "StartWebEgress"
        | "StartParticipantEgress"
        | "StartTrackCompositeEgress"
        | "StartTrackEgress"
        | "StartEgress"
        | "UpdateLayout"
        | "UpdateStream" => Err(TwirpError::unimplemented(format!(
            "{method}: convene records a room as a room composite egress only"
        ))),
        other => Err(TwirpError::new(
            "bad_route",
            StatusCode::NOT_FOUND,
            format!("no method {other:?} on livekit.Egress"),
        )),
    }
}

fn lock(egresses: &Mutex<Egresses>) -> std::sync::MutexGuard<'_, Egresses> {
    egresses.lock().unwrap_or_else(|e| e.into_inner())
}

/// An egress started here, by its id.
fn remembered(
    state: &TwirpState,
    egress_id: &str,
) -> Result<(RecordingId, StartedEgress), TwirpError> {
    let not_found = || TwirpError::not_found(format!("egress {egress_id:?} not found"));
    let recording = RecordingId::parse(egress_id).map_err(|_| not_found())?;
    let started = lock(&state.egresses)
        .started
        .get(&recording)
        .cloned()
        .ok_or_else(not_found)?;
    Ok((recording, started))
}

/// What convene's recording does: one MP4 of the room's audio and video, kept in its own store.
fn check_composite_request(request: &proto::RoomCompositeEgressRequest) -> Result<(), TwirpError> {
    use proto::room_composite_egress_request::Output;
    #[allow(deprecated)]
    let legacy_file = match &request.output {
        None => None,
        Some(Output::File(file)) => Some(file),
        Some(_) => return Err(TwirpError::invalid(ONE_MP4)),
    };
    let files: Vec<&proto::EncodedFileOutput> =
        request.file_outputs.iter().chain(legacy_file).collect();
    if files.len() != 1
        || !request.stream_outputs.is_empty()
        || !request.segment_outputs.is_empty()
        || !request.image_outputs.is_empty()
    {
        return Err(TwirpError::invalid(ONE_MP4));
    }
    let file = files[0];
    let mp4 = [
        proto::EncodedFileType::DefaultFiletype as i32,
        proto::EncodedFileType::Mp4 as i32,
    ];
    if !mp4.contains(&file.file_type) {
        return Err(TwirpError::invalid(ONE_MP4));
    }
    if file.output.is_some() {
        return Err(TwirpError::invalid(
            "the file is kept in convene's recording storage (CONVENE_RECORDING_URL): upload targets are not taken",
        ));
    }
    if request.audio_only || request.video_only {
        return Err(TwirpError::invalid(
            "convene's composite carries the room's audio and video together",
        ));
    }
    Ok(())
}

const ONE_MP4: &str = "convene's egress writes one MP4 file output: no streams, segments or images";

async fn list_egress(
    state: &TwirpState,
    request: &proto::ListEgressRequest,
) -> Result<Vec<proto::EgressInfo>, TwirpError> {
    // The meetings to look in, and (by egress id) the one recording wanted.
    let mut wanted: Option<RecordingId> = None;
    let meetings: Vec<MeetingId> = if !request.egress_id.is_empty() {
        match remembered(state, &request.egress_id) {
            Ok((recording, started)) => {
                wanted = Some(recording);
                vec![started.meeting]
            }
            Err(_) => return Ok(Vec::new()),
        }
    } else if !request.room_name.is_empty() {
        match RoomName::parse(&request.room_name) {
            Ok(room) => state
                .meetings
                .meeting_by_room(&room)
                .await?
                .map(|m| m.id)
                .into_iter()
                .collect(),
            Err(_) => Vec::new(),
        }
    } else {
        let egresses = lock(&state.egresses);
        let mut ids: Vec<MeetingId> = egresses
            .order
            .iter()
            .filter_map(|r| egresses.started.get(r).map(|s| s.meeting.clone()))
            .collect();
        ids.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        ids.dedup();
        ids
    };
    let mut items = Vec::new();
    for id in meetings {
        let meeting = match state.meetings.meeting(&id).await {
            Ok(meeting) => meeting,
            Err(e) if e.code() == ErrorCode::MeetingNotFound => continue,
            Err(e) => return Err(e.into()),
        };
        if !request.room_name.is_empty() && meeting.room_name.as_str() != request.room_name {
            continue;
        }
        for recording in state.meetings.recordings(&id, &Caller::Admin).await? {
            if wanted.as_ref().is_some_and(|w| *w != recording.id) {
                continue;
            }
            let running = matches!(
                recording.state,
                RecordingState::Recording | RecordingState::Processing
            );
            if request.active && !running {
                continue;
            }
            let started = lock(&state.egresses).started.get(&recording.id).cloned();
            let request = started.as_ref().map(|s| &s.request);
            items.push(egress_info(state, &meeting, &recording, request).await);
        }
    }
    Ok(items)
}

/// A recording as LiveKit's `EgressInfo` of a room composite egress.
async fn egress_info(
    state: &TwirpState,
    meeting: &Meeting,
    recording: &Recording,
    request: Option<&proto::RoomCompositeEgressRequest>,
) -> proto::EgressInfo {
    let live_sid = match state.control.list_rooms().await {
        Ok(rooms) => rooms
            .into_iter()
            .find(|r| r.name == meeting.room_name.as_str())
            .map(|r| r.sid),
        Err(_) => None,
    };
    let download = format!(
        "{}/v1/meetings/{}/recordings/{}/files/",
        state.public_url, meeting.id, recording.id
    );
    EgressView {
        meeting: &meeting.id,
        room_name: &meeting.room_name,
        recording,
        request,
        room_sid: live_sid.unwrap_or_else(|| format!("RM_{}", meeting.id)),
        download: &download,
        now: state.meetings.now(),
    }
    .info()
}

/// What an `EgressInfo` is made of (pure, so the mapping is tested without a server).
struct EgressView<'a> {
    meeting: &'a MeetingId,
    room_name: &'a RoomName,
    recording: &'a Recording,
    request: Option<&'a proto::RoomCompositeEgressRequest>,
    room_sid: String,
    /// The recording's download URL, to which a file's name is appended.
    download: &'a str,
    now: Timestamp,
}

fn nanos(at: Timestamp) -> i64 {
    at.as_millis().saturating_mul(1_000_000)
}

impl EgressView<'_> {
    /// The path the file output asked for (`{room_name}` filled in; a folder gets the
    /// composite's name), or convene's own storage key.
    fn filename(&self) -> String {
        use proto::room_composite_egress_request::Output;
        #[allow(deprecated)]
        let legacy = match self.request.and_then(|r| r.output.as_ref()) {
            Some(Output::File(file)) => Some(file.filepath.as_str()),
            _ => None,
        };
        let asked = self
            .request
            .and_then(|r| r.file_outputs.first().map(|f| f.filepath.as_str()))
            .or(legacy)
            .unwrap_or("")
            .replace("{room_name}", self.room_name.as_str())
            .replace("{room_id}", &self.room_sid);
        let composite = crate::recording::COMPOSITE_NAME;
        if asked.is_empty() {
            format!("{}/{}/{composite}", self.meeting, self.recording.id)
        } else if asked.ends_with('/') {
            format!("{asked}{composite}")
        } else {
            asked
        }
    }

    fn info(&self) -> proto::EgressInfo {
        let recording = self.recording;
        let status = match recording.state {
            RecordingState::Recording => proto::EgressStatus::EgressActive,
            RecordingState::Processing => proto::EgressStatus::EgressEnding,
            RecordingState::Ready => proto::EgressStatus::EgressComplete,
            RecordingState::Failed => proto::EgressStatus::EgressFailed,
        };
        let ended = matches!(
            recording.state,
            RecordingState::Ready | RecordingState::Failed
        );
        let composite = recording
            .files
            .iter()
            .find(|f| f.kind == RecordingFileKind::Composite);
        let file_results = match composite {
            Some(file) => {
                let started_at = nanos(recording.started_at) + file.start_ms as i64 * 1_000_000;
                let duration = file.duration_ms as i64 * 1_000_000;
                vec![proto::FileInfo {
                    filename: self.filename(),
                    started_at,
                    ended_at: started_at + duration,
                    duration,
                    size: file.bytes as i64,
                    location: format!("{}{}", self.download, file.name),
                }]
            }
            // Named from the start, as LiveKit does; written once the recording is ready.
            None if !ended => vec![proto::FileInfo {
                filename: self.filename(),
                ..proto::FileInfo::default()
            }],
            None => Vec::new(),
        };
        proto::EgressInfo {
            egress_id: recording.id.to_string(),
            room_id: self.room_sid.clone(),
            room_name: self.room_name.to_string(),
            source_type: proto::EgressSourceType::Web as i32,
            status: status as i32,
            started_at: nanos(recording.started_at),
            ended_at: match (ended, recording.stopped_at) {
                (true, Some(at)) => nanos(at),
                _ => 0,
            },
            updated_at: nanos(self.now),
            error: recording.error.clone().unwrap_or_default(),
            file_results,
            request: self
                .request
                .map(|r| proto::egress_info::Request::RoomComposite(r.clone())),
            ..proto::EgressInfo::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use convene_core::event::RecordingFile;

    use super::*;

    fn meeting() -> MeetingId {
        MeetingId::parse("5550001111").unwrap()
    }

    fn room() -> RoomName {
        RoomName::parse("standup").unwrap()
    }

    fn recording(state: RecordingState, files: Vec<RecordingFile>) -> Recording {
        Recording {
            id: RecordingId::parse("rec_00000000000000000000000a").unwrap(),
            state,
            started_at: Timestamp::from_millis(1_000_000),
            started_by: None,
            stopped_at: Some(Timestamp::from_millis(1_020_000)),
            stop_reason: None,
            bytes: files.iter().map(|f| f.bytes).sum(),
            files,
            duration_ms: 20_000,
            error: None,
            index: Vec::new(),
        }
    }

    fn composite() -> RecordingFile {
        RecordingFile {
            name: "composite.mp4".into(),
            kind: RecordingFileKind::Composite,
            identity: None,
            track_sid: None,
            codec: "mp4".into(),
            bytes: 4096,
            start_ms: 250,
            duration_ms: 19_500,
            location: None,
        }
    }

    fn track() -> RecordingFile {
        RecordingFile {
            name: "alice-TR_a.webm".into(),
            kind: RecordingFileKind::Audio,
            identity: Some(Identity::parse("alice").unwrap()),
            track_sid: Some("TR_a".into()),
            codec: "opus".into(),
            bytes: 100,
            start_ms: 0,
            duration_ms: 20_000,
            location: None,
        }
    }

    fn asked(filepath: &str) -> proto::RoomCompositeEgressRequest {
        proto::RoomCompositeEgressRequest {
            room_name: "standup".into(),
            file_outputs: vec![proto::EncodedFileOutput {
                file_type: proto::EncodedFileType::Mp4 as i32,
                filepath: filepath.into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn info(
        recording: &Recording,
        request: Option<&proto::RoomCompositeEgressRequest>,
    ) -> proto::EgressInfo {
        EgressView {
            meeting: &meeting(),
            room_name: &room(),
            recording,
            request,
            room_sid: "RM_live".into(),
            download: "http://convene.test/v1/meetings/5550001111/recordings/rec_00000000000000000000000a/files/",
            now: Timestamp::from_millis(1_030_000),
        }
        .info()
    }

    #[test]
    fn a_ready_recording_is_a_complete_egress_whose_file_is_the_composite_at_the_path_asked() {
        let request = asked("convene/77/rec_x/composite.mp4");
        let info = info(
            &recording(RecordingState::Ready, vec![track(), composite()]),
            Some(&request),
        );
        assert_eq!(info.egress_id, "rec_00000000000000000000000a");
        assert_eq!(
            (info.room_name.as_str(), info.room_id.as_str()),
            ("standup", "RM_live")
        );
        assert_eq!(info.status, proto::EgressStatus::EgressComplete as i32);
        assert_eq!(
            (info.started_at, info.ended_at),
            (1_000_000_000_000, 1_020_000_000_000)
        );
        assert_eq!(
            info.file_results,
            [proto::FileInfo {
                filename: "convene/77/rec_x/composite.mp4".into(),
                started_at: 1_000_250_000_000,
                ended_at: 1_019_750_000_000,
                duration: 19_500_000_000,
                size: 4096,
                location: "http://convene.test/v1/meetings/5550001111/recordings/rec_00000000000000000000000a/files/composite.mp4".into(),
            }]
        );
        assert_eq!(
            info.request,
            Some(proto::egress_info::Request::RoomComposite(request)),
            "the request comes back, as LiveKit's EgressInfo carries it"
        );
    }

    #[test]
    fn running_stopping_and_failed_recordings_are_active_ending_and_failed_egresses() {
        let request = asked("");
        let running = info(
            &recording(RecordingState::Recording, vec![]),
            Some(&request),
        );
        assert_eq!(running.status, proto::EgressStatus::EgressActive as i32);
        assert_eq!(running.ended_at, 0);
        assert_eq!(
            running
                .file_results
                .iter()
                .map(|f| (f.filename.as_str(), f.size))
                .collect::<Vec<_>>(),
            [("5550001111/rec_00000000000000000000000a/composite.mp4", 0)],
            "named from the start; no path asked: convene's own key"
        );
        let stopping = info(&recording(RecordingState::Processing, vec![]), None);
        assert_eq!(stopping.status, proto::EgressStatus::EgressEnding as i32);
        assert_eq!(stopping.request, None);
        let mut failed = recording(RecordingState::Failed, vec![track()]);
        failed.error = Some("no composite: ffmpeg failed".into());
        let failed = info(&failed, None);
        assert_eq!(failed.status, proto::EgressStatus::EgressFailed as i32);
        assert_eq!(failed.error, "no composite: ffmpeg failed");
        assert!(
            failed.file_results.is_empty(),
            "the tracks are no composite"
        );
    }

    #[test]
    fn the_path_asked_may_name_the_room_or_a_folder() {
        let recording = recording(RecordingState::Recording, vec![]);
        let (meeting, room) = (meeting(), room());
        let view = |path: &str| {
            let request = asked(path);
            EgressView {
                meeting: &meeting,
                room_name: &room,
                recording: &recording,
                request: Some(&request),
                room_sid: "RM_live".into(),
                download: "",
                now: Timestamp::from_millis(0),
            }
            .filename()
        };
        assert_eq!(
            view("rec/{room_name}-{room_id}.mp4"),
            "rec/standup-RM_live.mp4"
        );
        assert_eq!(view("rec/"), "rec/composite.mp4");
    }

    #[test]
    fn only_one_mp4_of_audio_and_video_kept_here_is_taken() {
        assert!(check_composite_request(&asked("a.mp4")).is_ok());
        let code = |request: proto::RoomCompositeEgressRequest| {
            check_composite_request(&request).map_err(|e| e.code).err()
        };
        assert_eq!(
            code(proto::RoomCompositeEgressRequest::default()),
            Some("invalid_argument"),
            "no output"
        );
        let mut two = asked("a.mp4");
        two.file_outputs.push(two.file_outputs[0].clone());
        assert_eq!(code(two), Some("invalid_argument"));
        let mut ogg = asked("a.ogg");
        ogg.file_outputs[0].file_type = proto::EncodedFileType::Ogg as i32;
        assert_eq!(code(ogg), Some("invalid_argument"));
        let mut streamed = asked("a.mp4");
        streamed.stream_outputs.push(proto::StreamOutput::default());
        assert_eq!(code(streamed), Some("invalid_argument"));
        let mut uploaded = asked("a.mp4");
        uploaded.file_outputs[0].output = Some(proto::encoded_file_output::Output::S3(
            proto::S3Upload::default(),
        ));
        assert_eq!(code(uploaded), Some("invalid_argument"));
        let mut audio = asked("a.mp4");
        audio.audio_only = true;
        assert_eq!(code(audio), Some("invalid_argument"));
        #[allow(deprecated)]
        let legacy = proto::RoomCompositeEgressRequest {
            output: Some(proto::room_composite_egress_request::Output::File(
                asked("a.mp4").file_outputs[0].clone(),
            )),
            ..Default::default()
        };
        assert!(
            check_composite_request(&legacy).is_ok(),
            "the deprecated single output"
        );
    }

    #[test]
    fn the_oldest_remembered_egresses_are_forgotten_first() {
        let mut egresses = Egresses::default();
        let id = |n: usize| RecordingId::parse(&format!("rec_{n:024x}")).unwrap();
        for n in 0..=MAX_REMEMBERED_EGRESSES {
            egresses.remember(
                id(n),
                StartedEgress {
                    meeting: meeting(),
                    request: asked("a.mp4"),
                },
            );
        }
        assert_eq!(egresses.started.len(), MAX_REMEMBERED_EGRESSES);
        assert!(!egresses.started.contains_key(&id(0)));
        assert!(egresses.started.contains_key(&id(MAX_REMEMBERED_EGRESSES)));
    }
}
