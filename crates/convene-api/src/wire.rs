//! Wire types of the native API: what goes over HTTP, with OpenAPI schemas, mapped to and from
//! the core's domain types. The core never sees these.
//!
//! The schemas say exactly what the server takes, in both directions: a request the schema
//! allows is not refused as malformed, and one it forbids is refused. What `#[schema]`
//! attributes cannot say (the patterns of names, identities, meeting ids, credentials and URLs,
//! built from the core's rules) [`Exact`] writes into the document; [`check_http_url`] makes the
//! server hold URLs to the same pattern.

use convene_core::event::Event;
use convene_core::meeting::{Meeting, MeetingStatus, Mode, QualityPreset, WaitingPolicy};
use convene_core::participant::{Participant, ParticipantState, Role};
use convene_core::time::Timestamp;
use std::sync::LazyLock;

use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::openapi::{RefOr, Schema};
use utoipa::{Modify, ToSchema};

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

/// A JSON integer as JSON Schema counts integers: `11`, or `11.0` (a number whose fraction is
/// zero), which serde would refuse for an integer type. Out of `T`'s range is an error.
fn whole<T: TryFrom<i128>, E: serde::de::Error>(value: serde_json::Value) -> Result<T, E> {
    let whole = match &value {
        serde_json::Value::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 1e38)
                    .map(|f| f as i128)
            }),
        _ => None,
    };
    let Some(whole) = whole else {
        return Err(E::custom(format!(
            "invalid type: {value}, expected an integer"
        )));
    };
    T::try_from(whole).map_err(|_| E::custom(format!("{whole} is out of range")))
}

/// An optional integer field, read as [`whole`] reads it.
pub fn optional_integer<'de, T: TryFrom<i128>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(value) => whole(value).map(Some),
    }
}

/// A PATCH integer field (absent, `null`, or an integer), read as [`whole`] reads it.
pub fn double_option_integer<'de, T: TryFrom<i128>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(Some(None)),
        value => whole(value).map(|v| Some(Some(v))),
    }
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

/// Credentials to set; each absent one is generated as an 8-digit PIN. 1 to 128 characters, no
/// control characters; the three must differ (else 422 `invalid_combination`).
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
    #[schema(format = DateTime)]
    pub starts_at: String,
    /// RFC 3339 date-time, after `starts_at` (else 422 `invalid_combination`).
    #[schema(format = DateTime)]
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
    #[serde(default, deserialize_with = "optional_integer")]
    #[schema(minimum = 4, maximum = 18)]
    pub n_digits: Option<i64>,
    /// Media room name; default the meeting id.
    #[schema(min_length = 1, max_length = 128)]
    pub room_name: Option<String>,
    /// Most people joined at once (hosts always get in), 1 to 1,000,000.
    #[serde(default, deserialize_with = "optional_integer")]
    #[schema(minimum = 1, maximum = 1000000)]
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
    /// Record the meeting whenever it goes live (default false).
    pub auto_record: Option<bool>,
}

/// Changes a meeting's settings; absent fields stay, `null` clears optional ones.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMeetingRequest {
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    pub mode: Option<WireMode>,
    pub policy: Option<WirePolicy>,
    /// 1 to 1,000,000; `null` removes the limit.
    #[serde(default, deserialize_with = "double_option_integer")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 1000000)]
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
    /// Record the meeting whenever it goes live.
    pub auto_record: Option<bool>,
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
    /// The meeting is recorded whenever it goes live.
    pub auto_record: bool,
    /// The recording running now, if any.
    pub recording_id: Option<String>,
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
            auto_record: m.settings.auto_record,
            recording_id: m.recording.as_ref().map(|r| r.id.to_string()),
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
    /// The meeting is being recorded now: everyone in it is told.
    pub recording: bool,
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
            recording: m.recording.is_some(),
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
    /// It never moderates, a host's included: hosts moderate with the token `join` answers.
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
    #[serde(default, deserialize_with = "optional_integer")]
    #[schema(minimum = 1, maximum = 315360000)]
    pub duration_seconds: Option<u64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MuteRequest {
    /// `audio`, `video`, or a track sid (`TR_...`, at most 64 characters).
    #[schema(pattern = "^(audio|video|TR_[A-Za-z0-9_]{0,61})$")]
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

/// `/readyz`: `ready`, or `unavailable` with the cause (`store_error`: the store answered with an
/// error; `store_timeout`: it did not answer in time).
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Ok {
    pub ok: bool,
}

// ----- exactness: the patterns the schema states and the server holds -----------------------

/// What `str::trim` removes (Unicode White_Space), as the inside of a regex class.
const TRIMMED: &str = r"\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";
/// One character that is neither a control character nor trimmed whitespace.
const VISIBLE: &str = r"[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]";
/// One character that is not a control character (Unicode Cc, as `char::is_control`).
const NOT_CONTROL: &str = r"[^\x00-\x1f\x7f-\x9f]";

/// A text the core trims and then takes when it is 1 to `max` characters without control
/// characters (`DisplayName`, `Identity`, `RoomName`, `ChatText`): whitespace around is allowed,
/// since it is trimmed away.
pub fn text_pattern(max: usize) -> String {
    format!(
        "^[{TRIMMED}]*{VISIBLE}(?:{NOT_CONTROL}{{0,{}}}{VISIBLE})?[{TRIMMED}]*$",
        max - 2
    )
}

/// A meeting id as `MeetingId::parse` takes it: 4 to 18 digits, not starting with 0, trimmed.
pub fn meeting_id_pattern() -> String {
    format!("^[{TRIMMED}]*[1-9][0-9]{{3,17}}[{TRIMMED}]*$")
}

/// A credential as `Credential::parse` takes it (not trimmed).
pub const CREDENTIAL_PATTERN: &str = r"^[^\x00-\x1f\x7f-\x9f]{1,128}$";

/// The absolute http(s) URLs convene takes (`logout_url`, `webhook_url`): a host name (dotted
/// labels of letters and digits with single inner hyphens, the last starting with a letter, so
/// it is never read as an IPv4 number, and no `xn--` label) or a dotted-quad IPv4 address, an
/// optional port up to 65535, then printable ASCII but for the characters a URL parser
/// percent-encodes (`"` `'` `<` `>` `` ` `` `{` `}`: encode them, and everything else). No user
/// information, no IPv6 literal. Every URL that matches is one the `url` crate parses, at most
/// one character longer (a `/` after a bare host), so at most [`HTTP_URL_MAX`] + 1 bytes stored.
pub const HTTP_URL_PATTERN: &str = concat!(
    r"^[hH][tT][tT][pP][sS]?://",
    r"(?:(?:[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*\.)*[A-Za-z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)*",
    r"|(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9]))",
    r"(?::(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}|0))?",
    r"(?:[/?#][!#-&(-;=?-_a-z|~]*)?$",
);

/// Longest URL, in characters (the pattern allows ASCII only, so bytes too): one under the core's
/// 2048-byte limit on the parsed URL, which may gain a `/`.
pub const HTTP_URL_MAX: usize = 2047;

static HTTP_URL: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(HTTP_URL_PATTERN).expect("a valid pattern"));

/// Holds a URL field to [`HTTP_URL_PATTERN`], as the schema states it; the core parses it after.
pub fn check_http_url(field: &str, raw: &str) -> Result<(), convene_core::ValidationError> {
    if raw.len() > HTTP_URL_MAX {
        return Err(convene_core::ValidationError::new(
            field,
            format!("must be at most {HTTP_URL_MAX} characters"),
        ));
    }
    if !HTTP_URL.is_match(raw) {
        return Err(convene_core::ValidationError::new(
            field,
            "must be an absolute http or https URL: a host name or IPv4 address, an optional \
             port, then printable ASCII (no user information, no IPv6 literal)",
        ));
    }
    Ok(())
}

/// Writes into the OpenAPI document the constraints `#[schema]` attributes cannot say: the
/// patterns of texts, meeting ids, credentials and URLs (lengths come with them, so the
/// attributes' `maxLength`/`minLength`, which would forbid the whitespace the server trims
/// away, are dropped). Applied by [`crate::api`].
pub struct Exact;

impl Exact {
    /// Request body properties: (schema, property, pattern, `maxLength`).
    fn properties() -> Vec<(&'static str, &'static str, String, Option<usize>)> {
        let name = text_pattern(convene_core::ids::DisplayName::MAX_LEN);
        let identity = text_pattern(convene_core::ids::Identity::MAX_LEN);
        let room = text_pattern(convene_core::ids::RoomName::MAX_LEN);
        let text = text_pattern(convene_core::ids::ChatText::MAX_LEN);
        let url = || (HTTP_URL_PATTERN.to_owned(), Some(HTTP_URL_MAX));
        let mut list = Vec::new();
        for schema in ["CreateMeetingRequest", "UpdateMeetingRequest"] {
            list.push((schema, "name", name.clone(), None));
            let (pattern, max) = url();
            list.push((schema, "logout_url", pattern, max));
            let (pattern, max) = url();
            list.push((schema, "webhook_url", pattern, max));
        }
        list.push(("CreateMeetingRequest", "room_name", room, None));
        for who in ["host", "participant", "viewer"] {
            list.push(("CredentialsInput", who, CREDENTIAL_PATTERN.to_owned(), None));
        }
        list.push(("EnterRequest", "name", name.clone(), None));
        list.push(("EnterRequest", "identity", identity.clone(), None));
        list.push(("AddParticipantRequest", "identity", identity.clone(), None));
        list.push(("AddParticipantRequest", "name", name, None));
        list.push(("ChatRequest", "text", text, None));
        list.push(("ChatRequest", "to", identity, None));
        list
    }
}

fn object(schema: &mut RefOr<Schema>) -> Option<&mut utoipa::openapi::schema::Object> {
    match schema {
        RefOr::T(Schema::Object(object)) => Some(object),
        _ => None,
    }
}

fn is_string(object: &utoipa::openapi::schema::Object) -> bool {
    use utoipa::openapi::schema::{SchemaType, Type};
    match &object.schema_type {
        SchemaType::Type(Type::String) => true,
        SchemaType::Array(types) => types.contains(&Type::String),
        _ => false,
    }
}

impl Modify for Exact {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (schema, property, pattern, max_length) in Self::properties() {
            let Some(target) = components
                .schemas
                .get_mut(schema)
                .and_then(object)
                .and_then(|o| o.properties.get_mut(property))
                .and_then(object)
            else {
                panic!("the OpenAPI document has no {schema}.{property}");
            };
            target.pattern = Some(pattern);
            target.min_length = None;
            target.max_length = max_length;
        }
        let meeting_id = meeting_id_pattern();
        let identity = text_pattern(convene_core::ids::Identity::MAX_LEN);
        // As `RecordingId::parse` takes it.
        let recording_id = "^rec_[0-9a-f]{24}$".to_owned();
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.post,
                &mut item.patch,
                &mut item.put,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                for parameter in operation.parameters.iter_mut().flatten() {
                    let Some(schema) = parameter.schema.as_mut().and_then(object) else {
                        continue;
                    };
                    let pattern = match parameter.name.as_str() {
                        // The meetings list's `after` is a meeting id too.
                        "meeting_id" | "after" if is_string(schema) => &meeting_id,
                        "identity" => &identity,
                        "recording_id" => &recording_id,
                        _ => continue,
                    };
                    schema.pattern = Some(pattern.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use convene_core::ids::{ChatText, Credential, DisplayName, Identity, MeetingId, RoomName};
    use convene_core::meeting::LogoutUrl;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn regex(pattern: &str) -> regex::Regex {
        regex::RegexBuilder::new(pattern)
            .size_limit(1 << 30)
            .build()
            .unwrap()
    }

    /// Random strings over the characters where the rules differ: ASCII, control characters
    /// (some of them whitespace), every kind of whitespace `trim` removes, and wider characters.
    fn corpus(max_len: usize, seed: u64) -> Vec<String> {
        const CHARS: &[char] = &[
            'a', 'Z', '0', '9', '-', '_', ' ', '.', '/', ':', '\t', '\n', '\r', '\u{0b}', '\u{0c}',
            '\u{00}', '\u{01}', '\u{1f}', '\u{7f}', '\u{85}', '\u{9f}', '\u{a0}', '\u{a1}',
            '\u{1680}', '\u{2000}', '\u{200a}', '\u{200b}', '\u{2028}', '\u{2029}', '\u{202f}',
            '\u{205f}', '\u{3000}', '\u{feff}', 'é', '中', '😀',
        ];
        let mut rng = StdRng::seed_from_u64(seed);
        let mut out = vec![String::new()];
        for _ in 0..4000 {
            let len = match rng.random_range(0..4) {
                0 => rng.random_range(0..4),
                1 => rng.random_range(max_len.saturating_sub(3)..max_len + 4),
                _ => rng.random_range(0..max_len + 4),
            };
            // Mostly plain text with a few odd characters, so long valid values occur too.
            let odd = rng.random_range(0..6);
            out.push(
                (0..len)
                    .map(|i| {
                        if i < 2 || i + 2 >= len || rng.random_range(0..len.max(1)) < odd {
                            CHARS[rng.random_range(0..CHARS.len())]
                        } else {
                            CHARS[rng.random_range(0..4)]
                        }
                    })
                    .collect(),
            );
        }
        out
    }

    fn agree(pattern: &str, max: usize, parse: impl Fn(&str) -> bool) {
        let re = regex(pattern);
        for (n, text) in corpus(max, max as u64).iter().enumerate() {
            assert_eq!(
                re.is_match(text),
                parse(text),
                "case {n}: {text:?} ({} chars)",
                text.chars().count()
            );
        }
    }

    #[test]
    fn text_patterns_say_what_the_core_takes() {
        agree(&text_pattern(DisplayName::MAX_LEN), 200, |t| {
            DisplayName::parse(t).is_ok()
        });
        agree(&text_pattern(Identity::MAX_LEN), 128, |t| {
            Identity::parse(t).is_ok()
        });
        agree(&text_pattern(RoomName::MAX_LEN), 128, |t| {
            RoomName::parse(t).is_ok()
        });
        agree(&text_pattern(ChatText::MAX_LEN), 4096, |t| {
            ChatText::parse(t).is_ok()
        });
        agree(CREDENTIAL_PATTERN, 128, |t| Credential::parse(t).is_ok());
    }

    #[test]
    fn the_meeting_id_pattern_says_what_the_core_takes() {
        let re = regex(&meeting_id_pattern());
        let mut cases: Vec<String> = [
            "1234",
            "123",
            "0123",
            "123456789012345678",
            "1234567890123456789",
            " 1234",
            "1234\u{3000}",
            "\t1234\n",
            "12 34",
            "12a4",
            "",
            "１２３４",
            "1234\u{feff}",
        ]
        .map(str::to_owned)
        .to_vec();
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..2000 {
            let len = rng.random_range(0..22);
            cases.push(
                (0..len)
                    .map(|_| ['0', '1', '9', ' ', '\t', 'x', '\u{a0}'][rng.random_range(0..7)])
                    .collect(),
            );
        }
        for case in &cases {
            assert_eq!(
                re.is_match(case),
                MeetingId::parse(case).is_ok(),
                "{case:?}"
            );
        }
    }

    #[test]
    fn urls_that_match_the_pattern_are_taken_and_the_rest_refused() {
        let taken = [
            "http://a",
            "https://example.com/bye?x=1#top",
            "HTTPS://Example.COM:443/",
            "http://127.0.0.1:8080/hook",
            "http://255.255.255.255:65535",
            "http://host:0",
            "http://a-b.c-d.example/~p/%zz/\\x",
            "http://x1.y2/|^[]@!$&()*+,;=:?/#?",
        ];
        let refused = [
            "",
            "ftp://example.com",
            "javascript:alert(1)",
            "http://",
            "http:/a",
            "http:a",
            "//example.com",
            "http://user:pw@example.com",
            "http://[::1]:8080/",
            "http://a.1",
            "http://a.0x1",
            "http://1.2.3",
            "http://256.1.1.1",
            "http://01.1.1.1",
            "http://xn--nxasmq6b.example",
            "http://-a.example",
            "http://a-.example",
            "http://a..b",
            "http://a_b.example",
            "http://exämple.com",
            "http://a:65536",
            "http://a:080",
            "http://a:",
            "http://a/b c",
            "http://a/é",
            "http://a/\"",
            "http://a/'",
            "http://a/<>",
            "http://a/`",
            "http://a/{}",
            " http://a",
            "http://a\n",
        ];
        for url in taken {
            assert!(check_http_url("logout_url", url).is_ok(), "{url}");
            assert!(LogoutUrl::parse(url).is_ok(), "{url}");
        }
        for url in refused {
            assert!(check_http_url("logout_url", url).is_err(), "{url:?}");
        }
        let long = format!("http://a/{}", "x".repeat(HTTP_URL_MAX - 9));
        assert!(check_http_url("logout_url", &long).is_ok());
        assert!(check_http_url("logout_url", &format!("{long}x")).is_err());
        // Whatever matches, the url crate parses as an http(s) URL.
        let mut rng = StdRng::seed_from_u64(11);
        let pieces = [
            "http://", "https://", "a", "b1", "-", ".", "1", "25", "0", ":", "/", "?", "#", "%",
            "x", "Z", "9", "255", "\\", "..", "\"", "{", "@", "'",
        ];
        for _ in 0..20_000 {
            let url: String = (0..rng.random_range(1..12))
                .map(|_| pieces[rng.random_range(0..pieces.len())])
                .collect();
            if check_http_url("u", &url).is_ok() {
                let parsed = LogoutUrl::parse(&url).unwrap_or_else(|e| panic!("{url}: {e}"));
                assert!(parsed.as_str().len() <= url.len() + 1, "{url}");
            }
        }
    }

    #[test]
    fn integers_are_read_as_json_schema_counts_them() {
        let read = |text: &str| {
            serde_json::from_str::<BanRequest>(&format!(r#"{{"duration_seconds": {text}}}"#))
                .map(|r| r.duration_seconds)
                .map_err(|e| e.to_string())
        };
        assert_eq!(read("60"), Ok(Some(60)));
        assert_eq!(read("60.0"), Ok(Some(60)));
        assert_eq!(read("6e1"), Ok(Some(60)));
        assert_eq!(read("null"), Ok(None));
        for bad in ["60.5", "-1", "\"60\"", "true", "1e300"] {
            assert!(read(bad).is_err(), "{bad}");
        }
        let patch = |text: &str| {
            serde_json::from_str::<UpdateMeetingRequest>(text)
                .map(|r| r.capacity)
                .map_err(|e| e.to_string())
        };
        assert_eq!(patch("{}"), Ok(None));
        assert_eq!(patch(r#"{"capacity": null}"#), Ok(Some(None)));
        assert_eq!(patch(r#"{"capacity": 3.0}"#), Ok(Some(Some(3))));
        assert!(patch(r#"{"capacity": 4294967296}"#).is_err());
    }

    #[test]
    fn the_recording_id_pattern_is_what_the_core_parses() {
        let doc = serde_json::to_value(crate::openapi()).unwrap();
        let parameter = doc["paths"]["/v1/meetings/{meeting_id}/recordings/{recording_id}"]["get"]
            ["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "recording_id")
            .unwrap()
            .clone();
        let pattern = regex(parameter["schema"]["pattern"].as_str().unwrap());
        let mut samples = corpus(30, 24);
        samples.extend([
            "rec_0123456789abcdef01234567".to_owned(),
            "rec_0123456789ABCDEF01234567".to_owned(),
            "rec_0123456789abcdef0123456".to_owned(),
        ]);
        for sample in samples {
            assert_eq!(
                pattern.is_match(&sample),
                convene_core::ids::RecordingId::parse(&sample).is_ok(),
                "{sample:?}"
            );
        }
    }

    #[test]
    fn every_request_string_is_constrained() {
        let doc = serde_json::to_value(crate::openapi()).unwrap();
        // Secrets to check are any text up to a length: a wrong one is refused with 401 or 403.
        let free = [
            ("JoinLinkRequest", "join_link"),
            ("EnterRequest", "credential"),
        ];
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for (name, schema) in schemas {
            if !(name.ends_with("Request") || name.ends_with("Input") || name == "ScheduleWire") {
                continue;
            }
            for (property, spec) in schema["properties"].as_object().unwrap() {
                let is_string = spec["type"] == "string"
                    || spec["type"]
                        .as_array()
                        .is_some_and(|t| t.iter().any(|t| t == "string"));
                if !is_string {
                    continue;
                }
                if free.contains(&(name.as_str(), property.as_str())) {
                    assert!(spec.get("maxLength").is_some(), "{name}.{property}");
                    continue;
                }
                assert!(
                    spec.get("pattern").is_some() || spec.get("format").is_some(),
                    "{name}.{property} has no pattern or format: {spec}"
                );
            }
        }
        for (path, operations) in doc["paths"].as_object().unwrap() {
            for operation in operations.as_object().unwrap().values() {
                for parameter in operation["parameters"].as_array().into_iter().flatten() {
                    let name = parameter["name"].as_str().unwrap();
                    if ["meeting_id", "identity", "recording_id"].contains(&name) {
                        assert!(
                            parameter["schema"].get("pattern").is_some(),
                            "{path} {name}"
                        );
                    }
                }
            }
        }
    }
}

/// One stored file of a recording.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordingFileView {
    /// Unique in its recording; the download path's last part.
    pub name: String,
    /// `audio` or `video` (one published track, as it arrived), or `composite` (everyone, one MP4).
    pub kind: String,
    /// Whose track (absent for the composite).
    pub identity: Option<String>,
    pub track_sid: Option<String>,
    /// `opus`, `vp8`, `h264`, or `mp4`.
    pub codec: String,
    pub bytes: u64,
    /// When its first frame was, in milliseconds from the recording's start.
    pub start_ms: u64,
    pub duration_ms: u64,
    /// Where to download it from convene (range requests answered).
    pub url: String,
    /// Where the file is kept when convene does not keep it: with an external LiveKit, the
    /// egress storage's location (downloads from convene then answer 503).
    pub location: Option<String>,
}

/// A recording of a meeting, with its files and its index.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordingView {
    pub recording_id: String,
    pub meeting_id: String,
    /// `recording`, `processing` (stopped, files being finished), `ready` or `failed`.
    pub state: String,
    pub started_at: String,
    /// The host who started it; absent for an admin or an automatic recording.
    pub started_by: Option<String>,
    pub stopped_at: Option<String>,
    /// `requested`, `meeting_ended`, `failed` or `server_stopped`.
    pub stop_reason: Option<String>,
    pub duration_ms: u64,
    pub bytes: u64,
    /// Why it failed.
    pub error: Option<String>,
    pub files: Vec<RecordingFileView>,
    /// Who was there and what changed, from the event log: each entry has `offset_ms` (from the
    /// recording's start), `identity` and `change` (`present`, `joined`, `left`, `role_changed`,
    /// `muted`, `track_published`, `track_unpublished`, `hand_raised`, `hand_lowered`) with
    /// its details (`name`, `role`, `track`, `muted`, `track_sid`, `kind`).
    #[schema(value_type = Vec<Object>)]
    pub index: Vec<serde_json::Value>,
}

impl RecordingView {
    pub fn of(
        meeting: &convene_core::ids::MeetingId,
        r: &convene_core::recording::Recording,
    ) -> Self {
        Self {
            recording_id: r.id.to_string(),
            meeting_id: meeting.to_string(),
            state: serde_name(&r.state),
            started_at: rfc3339(r.started_at),
            started_by: r.started_by.as_ref().map(ToString::to_string),
            stopped_at: r.stopped_at.map(rfc3339),
            stop_reason: r.stop_reason.as_ref().map(serde_name),
            duration_ms: r.duration_ms,
            bytes: r.bytes,
            error: r.error.clone(),
            files: r
                .files
                .iter()
                .map(|f| RecordingFileView {
                    name: f.name.clone(),
                    kind: serde_name(&f.kind),
                    identity: f.identity.as_ref().map(ToString::to_string),
                    track_sid: f.track_sid.clone(),
                    codec: f.codec.clone(),
                    bytes: f.bytes,
                    start_ms: f.start_ms,
                    duration_ms: f.duration_ms,
                    url: format!(
                        "/v1/meetings/{meeting}/recordings/{}/files/{}",
                        r.id, f.name
                    ),
                    location: f.location.clone(),
                })
                .collect(),
            index: r
                .index
                .iter()
                .filter_map(|e| serde_json::to_value(e).ok())
                .collect(),
        }
    }
}

/// A unit enum's serde name (`meeting_ended`).
fn serde_name<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecordingList {
    pub recordings: Vec<RecordingView>,
}
