//! Wire types of the native API: what goes over HTTP, with OpenAPI schemas, mapped to and from
//! the core's domain types. The core never sees these.

use convene_core::event::Event;
use convene_core::meeting::{Meeting, MeetingStatus, Mode, QualityPreset, WaitingPolicy};
use convene_core::participant::{Participant, ParticipantState, Role};
use convene_core::time::Timestamp;
use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

/// RFC 3339 text for a timestamp.
pub fn rfc3339(at: Timestamp) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(at.as_millis()) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

pub fn parse_rfc3339(field: &str, raw: &str) -> Result<Timestamp, convene_core::ValidationError> {
    let at = OffsetDateTime::parse(raw, &Rfc3339)
        .map_err(|_| convene_core::ValidationError::new(field, "must be an RFC 3339 date-time"))?;
    Ok(Timestamp::from_millis(
        (at.unix_timestamp_nanos() / 1_000_000) as i64,
    ))
}

/// Present-but-null vs absent, for PATCH fields that can be cleared.
pub fn double_option<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

macro_rules! wire_enum {
    ($(#[$doc:meta])* $wire:ident <=> $domain:ident { $($variant:ident),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $wire { $($variant),+ }
        impl From<$domain> for $wire {
            fn from(value: $domain) -> Self { match value { $($domain::$variant => Self::$variant),+ } }
        }
        impl From<$wire> for $domain {
            fn from(value: $wire) -> Self { match value { $($wire::$variant => Self::$variant),+ } }
        }
    };
}

wire_enum!(
    /// `meeting`: everyone may publish. `stream`: speakers on a stage, viewers watch.
    WireMode <=> Mode { Meeting, Stream });
wire_enum!(
    /// Who gets in, and when.
    WirePolicy <=> WaitingPolicy { Open, WaitForHost, AskHost, Deny });
wire_enum!(
    /// Video quality preset.
    WireQuality <=> QualityPreset { Default, Qvga, Vga, Hd, Fhd, Uhd });
wire_enum!(
    /// The meeting's lifecycle status.
    WireStatus <=> MeetingStatus { Created, Live, Ended });
wire_enum!(
    /// A participant's role.
    WireRole <=> Role { Host, Speaker, Viewer });
wire_enum!(
    /// A participant's state.
    WireState <=> ParticipantState { Waiting, Admitted, Joined, Left, Removed, Banned });

/// Credentials to set; each absent one is generated as an 8-digit PIN.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialsInput {
    #[schema(max_length = 128)]
    pub host: Option<String>,
    #[schema(max_length = 128)]
    pub participant: Option<String>,
    #[schema(max_length = 128)]
    pub viewer: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleWire {
    /// RFC 3339 date-time.
    pub starts_at: String,
    /// RFC 3339 date-time, after `starts_at`.
    pub ends_at: Option<String>,
}

/// Creates a meeting. Only `name` is required.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMeetingRequest {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    pub mode: Option<WireMode>,
    /// Default `wait_for_host`.
    pub policy: Option<WirePolicy>,
    /// Length of the generated meeting id (4 to 18; default `MEETING_ID_DIGITS`).
    #[schema(minimum = 4, maximum = 18)]
    pub n_digits: Option<i64>,
    /// Media room name; default the meeting id.
    #[schema(min_length = 1, max_length = 128)]
    pub room_name: Option<String>,
    /// Most people joined at once (hosts always get in).
    #[schema(minimum = 1)]
    pub capacity: Option<u32>,
    pub quality: Option<WireQuality>,
    #[schema(max_length = 2048)]
    pub logout_url: Option<String>,
    /// This meeting's events are POSTed here (signed as LiveKit signs webhooks), besides the
    /// deployment-wide `CONVENE_WEBHOOK_URLS`.
    #[schema(max_length = 2048)]
    pub webhook_url: Option<String>,
    /// Free JSON object, at most 16 KiB.
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    pub schedule: Option<ScheduleWire>,
    pub credentials: Option<CredentialsInput>,
    /// Let people in the waiting room chat with the hosts (default false).
    pub waiting_room_chat: Option<bool>,
}

/// Changes a meeting's settings; absent fields stay, `null` clears optional ones.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMeetingRequest {
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    pub mode: Option<WireMode>,
    pub policy: Option<WirePolicy>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<u32>, minimum = 1)]
    pub capacity: Option<Option<u32>>,
    pub quality: Option<WireQuality>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, max_length = 2048)]
    pub logout_url: Option<Option<String>>,
    /// `null` removes it: pending deliveries to it are then failed.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, max_length = 2048)]
    pub webhook_url: Option<Option<String>>,
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<ScheduleWire>)]
    pub schedule: Option<Option<ScheduleWire>>,
    pub credentials: Option<CredentialsInput>,
    pub waiting_room_chat: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialsView {
    pub host: String,
    pub participant: String,
    pub viewer: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunView {
    /// The run's id; tokens and join links name it.
    pub instance_id: String,
    pub number: u32,
    pub opened_at: String,
    pub live_at: Option<String>,
    pub ended_at: Option<String>,
}

/// A meeting as an admin sees it (with credentials).
#[derive(Debug, Serialize, ToSchema)]
pub struct MeetingView {
    pub meeting_id: String,
    pub room_name: String,
    pub name: String,
    pub mode: WireMode,
    pub policy: WirePolicy,
    pub status: WireStatus,
    pub capacity: Option<u32>,
    pub quality: WireQuality,
    pub logout_url: Option<String>,
    pub webhook_url: Option<String>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub schedule: Option<ScheduleWire>,
    pub credentials: CredentialsView,
    pub run: RunView,
    pub created_at: String,
    pub updated_at: String,
    /// Sequence number of the meeting's last event.
    pub last_seq: u64,
    /// People in the waiting room may chat with the hosts.
    pub waiting_room_chat: bool,
    /// How many people are in the meeting now (in the meeting list only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub people: Option<PeopleCountView>,
}

/// How many people are in a meeting now.
#[derive(Debug, Serialize, ToSchema)]
pub struct PeopleCountView {
    /// In the waiting room.
    pub waiting: u64,
    /// Let in, not (or no longer) on the call.
    pub admitted: u64,
    /// In the meeting now.
    pub joined: u64,
}

impl From<convene_core::ports::PeopleCount> for PeopleCountView {
    fn from(c: convene_core::ports::PeopleCount) -> Self {
        Self {
            waiting: c.waiting,
            admitted: c.admitted,
            joined: c.joined,
        }
    }
}

impl From<&Meeting> for MeetingView {
    fn from(m: &Meeting) -> Self {
        Self {
            meeting_id: m.id.to_string(),
            room_name: m.room_name.to_string(),
            name: m.settings.name.to_string(),
            mode: m.settings.mode.into(),
            policy: m.settings.policy.into(),
            status: m.status.into(),
            capacity: m.settings.capacity,
            quality: m.settings.quality.into(),
            logout_url: m
                .settings
                .logout_url
                .as_ref()
                .map(|u| u.as_str().to_owned()),
            webhook_url: m
                .settings
                .webhook_url
                .as_ref()
                .map(|u| u.as_str().to_owned()),
            metadata: m.settings.metadata.as_map().clone(),
            schedule: m.settings.schedule.as_ref().map(|s| ScheduleWire {
                starts_at: rfc3339(s.starts_at),
                ends_at: s.ends_at.map(rfc3339),
            }),
            credentials: CredentialsView {
                host: m.credentials.host.reveal().to_owned(),
                participant: m.credentials.participant.reveal().to_owned(),
                viewer: m.credentials.viewer.reveal().to_owned(),
            },
            run: RunView {
                instance_id: m.run.instance_id.to_string(),
                number: m.run.number,
                opened_at: rfc3339(m.run.opened_at),
                live_at: m.run.live_at.map(rfc3339),
                ended_at: m.run.ended_at.map(rfc3339),
            },
            created_at: rfc3339(m.created_at),
            updated_at: rfc3339(m.updated_at),
            last_seq: m.last_seq,
            waiting_room_chat: m.settings.waiting_room_chat,
            people: None,
        }
    }
}

/// A meeting as a participant sees it (no credentials).
#[derive(Debug, Serialize, ToSchema)]
pub struct MeetingPublicView {
    pub meeting_id: String,
    pub room_name: String,
    pub name: String,
    pub mode: WireMode,
    pub status: WireStatus,
    /// Who gets in: what a waiting guest waits for.
    pub policy: WirePolicy,
    pub quality: WireQuality,
    pub logout_url: Option<String>,
    /// People in the waiting room may chat with the hosts.
    pub waiting_room_chat: bool,
}

impl From<&Meeting> for MeetingPublicView {
    fn from(m: &Meeting) -> Self {
        Self {
            meeting_id: m.id.to_string(),
            room_name: m.room_name.to_string(),
            name: m.settings.name.to_string(),
            mode: m.settings.mode.into(),
            status: m.status.into(),
            policy: m.settings.policy.into(),
            quality: m.settings.quality.into(),
            logout_url: m
                .settings
                .logout_url
                .as_ref()
                .map(|u| u.as_str().to_owned()),
            waiting_room_chat: m.settings.waiting_room_chat,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MeetingList {
    pub meetings: Vec<MeetingView>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ParticipantView {
    pub identity: String,
    pub name: String,
    pub role: WireRole,
    pub state: WireState,
    pub hand_raised: bool,
    pub invited: bool,
    pub media_connected: bool,
    pub banned_until: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&Participant> for ParticipantView {
    fn from(p: &Participant) -> Self {
        Self {
            identity: p.identity.to_string(),
            name: p.name.to_string(),
            role: p.role.into(),
            state: p.state.into(),
            hand_raised: p.hand_raised,
            invited: p.invited,
            media_connected: p.media_connected,
            banned_until: p.banned_until.map(rfc3339),
            created_at: rfc3339(p.created_at),
            updated_at: rfc3339(p.updated_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ParticipantList {
    pub participants: Vec<ParticipantView>,
}

/// Enter a meeting with its id (in the path) and a credential.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnterRequest {
    /// The host, participant or viewer credential; it decides the role.
    #[schema(min_length = 1, max_length = 128)]
    pub credential: String,
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// Your identity in the meeting; generated when absent.
    #[schema(min_length = 1, max_length = 128)]
    pub identity: Option<String>,
}

/// Where you stand after entering, with a waiting-room token.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnterResponse {
    pub identity: String,
    pub role: WireRole,
    /// `waiting` or `admitted`.
    pub state: WireState,
    /// Waiting-room token: reads your own state and the meeting's events; exchange it at `join`.
    pub token: String,
    pub events_url: String,
    pub meeting: MeetingPublicView,
}

/// Places a person directly (trusted caller) with a role.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddParticipantRequest {
    #[schema(min_length = 1, max_length = 128)]
    pub identity: String,
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    pub role: WireRole,
}

/// Media access for an admitted participant.
#[derive(Debug, Serialize, ToSchema)]
pub struct JoinResponse {
    /// LiveKit access token for the meeting's room, for the media server at `url`.
    pub access_token: String,
    /// convene token for this person's own calls to convene (events, leave, me, hand, and a
    /// host's moderation). The same as `access_token` with the embedded media engine; with an
    /// external LiveKit server, `access_token` is a short-lived token for that server only.
    pub api_token: String,
    /// LiveKit signalling URL to connect to.
    pub url: String,
    pub room_name: String,
    pub identity: String,
    pub role: WireRole,
    pub events_url: String,
    pub meeting: MeetingPublicView,
}

/// A one-time join link to exchange (the `join` query parameter of a BigBlueButton surface
/// redirect to `/meet`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinLinkRequest {
    #[schema(max_length = 8192)]
    pub join_link: String,
}

/// The answer to a join-link exchange: the waiting-room answer of `enter` (state and a
/// waiting-room token), plus the media answer of `join` when the person is in at once.
#[derive(Debug, Serialize, ToSchema)]
pub struct JoinLinkResponse {
    pub identity: String,
    pub role: WireRole,
    /// `joined` (then `join` is present) or `waiting` (a guest waiting for a host).
    pub state: WireState,
    /// Waiting-room token: reads your own state and the meeting's events; exchange it at `join`
    /// once admitted.
    pub token: String,
    pub events_url: String,
    pub meeting: MeetingPublicView,
    /// Media access, when the person joined at once.
    pub join: Option<JoinResponse>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MeView {
    pub participant: ParticipantView,
    pub meeting: MeetingPublicView,
    /// While you wait where hosts admit one by one (`ask_host`, or a meeting locked while you
    /// waited): your place in the queue, 1 = next. Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub position: Option<u64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HandRequest {
    pub raised: bool,
}

/// Who gets in from now on.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyRequest {
    pub policy: WirePolicy,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleRequest {
    pub role: WireRole,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BanRequest {
    /// Ban for this long; absent = until lifted.
    #[schema(minimum = 1, maximum = 315360000)]
    pub duration_seconds: Option<u64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MuteRequest {
    /// `audio`, `video`, or a track sid (`TR_...`).
    #[schema(min_length = 1, max_length = 64)]
    pub track: String,
    /// Default true.
    pub muted: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    #[schema(min_length = 1, max_length = 4096)]
    pub text: String,
    /// Send only to this identity.
    #[schema(min_length = 1, max_length = 128)]
    pub to: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatResponse {
    /// Sequence number of the message's event.
    pub seq: u64,
}

/// One event of a meeting's log.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub seq: u64,
    pub at: String,
    /// The run the event happened in.
    pub instance_id: String,
    /// e.g. `participant.admitted`.
    #[serde(rename = "type")]
    pub kind: String,
    pub data: serde_json::Value,
}

impl From<&Event> for EventView {
    fn from(e: &Event) -> Self {
        let mut body = serde_json::to_value(&e.kind).unwrap_or_default();
        let kind = body
            .get("type")
            .and_then(|t| t.as_str())
            .unwrap_or_default()
            .to_owned();
        let data = body
            .get_mut("data")
            .map(serde_json::Value::take)
            .unwrap_or_else(|| serde_json::json!({}));
        Self {
            seq: e.seq,
            at: rfc3339(e.at),
            instance_id: e.instance_id.to_string(),
            kind,
            data,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    /// The events you may see, in order.
    pub events: Vec<EventView>,
    /// Continue with `after` = this (the last sequence number read, seen or not).
    pub next_after: u64,
    /// The meeting's last sequence number when read; poll again with `after` = the last event's `seq`.
    pub last_seq: u64,
}

/// One webhook delivery: an event on its way to one endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDeliveryView {
    pub meeting_id: String,
    /// The event's sequence number.
    pub seq: u64,
    /// The event's type, e.g. `participant.admitted`.
    pub event_type: String,
    pub url: String,
    /// `deployment` (`CONVENE_WEBHOOK_URLS`) or `meeting` (the meeting's `webhook_url`).
    #[schema(value_type = String, example = "deployment")]
    pub scope: convene_core::webhook::EndpointScope,
    /// `pending`, `delivered` or `failed` (given up).
    #[schema(value_type = String, example = "pending")]
    pub status: convene_core::webhook::DeliveryStatus,
    pub attempts: u32,
    /// When the next attempt is due (pending only).
    pub next_attempt_at: Option<String>,
    /// HTTP status of the last attempt, when the endpoint answered.
    pub last_status: Option<u16>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&convene_core::webhook::WebhookDelivery> for WebhookDeliveryView {
    fn from(d: &convene_core::webhook::WebhookDelivery) -> Self {
        Self {
            meeting_id: d.meeting_id.to_string(),
            seq: d.seq,
            event_type: d.event_type.clone(),
            url: d.url.clone(),
            scope: d.scope,
            status: d.status,
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at.map(rfc3339),
            last_status: d.last_status,
            last_error: d.last_error.clone(),
            created_at: rfc3339(d.created_at),
            updated_at: rfc3339(d.updated_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDeliveryList {
    pub deliveries: Vec<WebhookDeliveryView>,
    /// With `meeting_id`: pass as `after` for the next page; absent on the last page.
    pub next_after: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub version: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Ok {
    pub ok: bool,
}
