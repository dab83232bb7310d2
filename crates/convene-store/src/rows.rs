//! Rows <-> domain types. Reading goes through the domain types' parse functions or serde, and a
//! value that does not parse is a `Backend` error, never a panic. Nothing here builds wire JSON:
//! the JSON columns hold the domain types' own serde form.

use convene_core::Timestamp;
use convene_core::apikey::{ApiKey, ApiSecret};
use convene_core::event::{Audience, Event, EventKind};
use convene_core::ids::{DisplayName, Identity, InstanceId, MeetingId, RoomName};
use convene_core::lockout::FailureRecord;
use convene_core::meeting::{Meeting, MeetingStatus, Run};
use convene_core::participant::{Participant, ParticipantState, Role};
use convene_core::ports::StoreError;
use convene_core::webhook::{DeliveryStatus, DueDelivery, EndpointScope, Lane, WebhookDelivery};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::any::AnyRow;
use sqlx::{Any, Row};

use crate::error::{backend, corrupt, unrepresentable};

pub(crate) const MEETING_COLUMNS: &str = "id, room_name, status, last_seq, created_at, updated_at, \
     instance_id, run_number, opened_at, live_at, ended_at, settings, credentials, recording";
pub(crate) const PARTICIPANT_COLUMNS: &str = "meeting_id, identity, name, role, state, hand_raised, \
     invited, media_connected, admitted_in, banned_until, epoch, created_at, updated_at";
pub(crate) const EVENT_COLUMNS: &str = "meeting_id, seq, at, instance_id, type, audience, data";
pub(crate) const API_KEY_COLUMNS: &str = "id, secret, description, created_at, revoked_at";

// ----- reading ---------------------------------------------------------------------------------

pub(crate) fn get<'r, T>(row: &'r AnyRow, column: &'static str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, Any> + sqlx::Type<Any>,
{
    row.try_get(column).map_err(backend)
}

pub(crate) fn text(row: &AnyRow, column: &'static str) -> Result<String, StoreError> {
    get(row, column)
}

pub(crate) fn parsed<T, E: std::fmt::Display>(
    row: &AnyRow,
    column: &'static str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, StoreError> {
    let raw = text(row, column)?;
    parse(&raw).map_err(|e| corrupt(column, e))
}

/// A unit enum stored as its serde string (`"live"`, `"host"`).
fn serde_enum<T: DeserializeOwned>(row: &AnyRow, column: &'static str) -> Result<T, StoreError> {
    let raw = text(row, column)?;
    serde_json::from_value(serde_json::Value::String(raw)).map_err(|e| corrupt(column, e))
}

fn json<T: DeserializeOwned>(row: &AnyRow, column: &'static str) -> Result<T, StoreError> {
    let raw = text(row, column)?;
    serde_json::from_str(&raw).map_err(|e| corrupt(column, e))
}

fn int(row: &AnyRow, column: &'static str) -> Result<i64, StoreError> {
    get(row, column)
}

pub(crate) fn uint<T: TryFrom<i64>>(row: &AnyRow, column: &'static str) -> Result<T, StoreError> {
    let value = int(row, column)?;
    T::try_from(value).map_err(|_| corrupt(column, format!("{value} is out of range")))
}

pub(crate) fn flag(row: &AnyRow, column: &'static str) -> Result<bool, StoreError> {
    match int(row, column)? {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(corrupt(
            column,
            format!("{other} is not a boolean (0 or 1)"),
        )),
    }
}

pub(crate) fn timestamp(row: &AnyRow, column: &'static str) -> Result<Timestamp, StoreError> {
    int(row, column).map(Timestamp::from_millis)
}

fn optional_timestamp(row: &AnyRow, column: &'static str) -> Result<Option<Timestamp>, StoreError> {
    Ok(get::<Option<i64>>(row, column)?.map(Timestamp::from_millis))
}

pub(crate) fn meeting(row: &AnyRow) -> Result<Meeting, StoreError> {
    Ok(Meeting {
        id: parsed(row, "id", MeetingId::parse)?,
        room_name: parsed(row, "room_name", RoomName::parse)?,
        settings: json(row, "settings")?,
        credentials: json(row, "credentials")?,
        status: serde_enum::<MeetingStatus>(row, "status")?,
        run: Run {
            instance_id: InstanceId::from_stored(text(row, "instance_id")?),
            number: uint(row, "run_number")?,
            opened_at: timestamp(row, "opened_at")?,
            live_at: optional_timestamp(row, "live_at")?,
            ended_at: optional_timestamp(row, "ended_at")?,
        },
        created_at: timestamp(row, "created_at")?,
        updated_at: timestamp(row, "updated_at")?,
        last_seq: uint(row, "last_seq")?,
        recording: match get::<Option<String>>(row, "recording")? {
            Some(text) => {
                Some(serde_json::from_str(&text).map_err(|e| corrupt("recording", e.to_string()))?)
            }
            None => None,
        },
    })
}

pub(crate) fn participant(row: &AnyRow) -> Result<Participant, StoreError> {
    Ok(Participant {
        meeting_id: parsed(row, "meeting_id", MeetingId::parse)?,
        identity: parsed(row, "identity", Identity::parse)?,
        name: parsed(row, "name", DisplayName::parse)?,
        role: serde_enum::<Role>(row, "role")?,
        state: parsed(row, "state", |raw| {
            ParticipantState::parse(raw).ok_or("unknown participant state")
        })?,
        hand_raised: flag(row, "hand_raised")?,
        invited: flag(row, "invited")?,
        media_connected: flag(row, "media_connected")?,
        admitted_in: get::<Option<String>>(row, "admitted_in")?.map(InstanceId::from_stored),
        banned_until: optional_timestamp(row, "banned_until")?,
        epoch: uint(row, "epoch")?,
        created_at: timestamp(row, "created_at")?,
        updated_at: timestamp(row, "updated_at")?,
    })
}

pub(crate) fn event(row: &AnyRow) -> Result<Event, StoreError> {
    let kind_type = text(row, "type")?;
    let data: serde_json::Value = json(row, "data")?;
    let mut tagged = serde_json::Map::new();
    tagged.insert("type".into(), serde_json::Value::String(kind_type));
    if !data.is_null() {
        tagged.insert("data".into(), data);
    }
    let kind: EventKind = serde_json::from_value(serde_json::Value::Object(tagged))
        .map_err(|e| corrupt("data", e))?;
    Ok(Event {
        meeting_id: parsed(row, "meeting_id", MeetingId::parse)?,
        seq: uint(row, "seq")?,
        at: timestamp(row, "at")?,
        instance_id: InstanceId::from_stored(text(row, "instance_id")?),
        audience: json::<Audience>(row, "audience")?,
        kind,
    })
}

pub(crate) fn api_key(row: &AnyRow) -> Result<ApiKey, StoreError> {
    Ok(ApiKey {
        id: text(row, "id")?,
        secret: parsed(row, "secret", ApiSecret::parse)?,
        description: text(row, "description")?,
        created_at: timestamp(row, "created_at")?,
        revoked_at: optional_timestamp(row, "revoked_at")?,
    })
}

/// A delivery joined with its endpoint (`url`), event (`EVENT_COLUMNS`) and meeting (`room_name`).
pub(crate) fn due_delivery(row: &AnyRow) -> Result<DueDelivery, StoreError> {
    let event = event(row)?;
    Ok(DueDelivery {
        lane: Lane {
            endpoint_id: text(row, "endpoint_id")?,
            meeting_id: event.meeting_id.clone(),
        },
        url: text(row, "url")?,
        attempts: uint(row, "attempts")?,
        room_name: parsed(row, "room_name", RoomName::parse)?,
        event,
    })
}

/// A delivery joined with its endpoint (`url`) and its event's `type`.
pub(crate) fn webhook_delivery(row: &AnyRow) -> Result<WebhookDelivery, StoreError> {
    let endpoint_id = text(row, "endpoint_id")?;
    let status = parsed(row, "status", DeliveryStatus::parse)?;
    Ok(WebhookDelivery {
        meeting_id: parsed(row, "meeting_id", MeetingId::parse)?,
        seq: uint(row, "seq")?,
        event_type: text(row, "type")?,
        url: text(row, "url")?,
        scope: EndpointScope::of_endpoint(&endpoint_id),
        status,
        attempts: uint(row, "attempts")?,
        next_attempt_at: if status == DeliveryStatus::Pending {
            Some(timestamp(row, "next_attempt_at")?)
        } else {
            None
        },
        last_status: get::<Option<i64>>(row, "last_status")?.and_then(|s| u16::try_from(s).ok()),
        last_error: get(row, "last_error")?,
        created_at: timestamp(row, "created_at")?,
        updated_at: timestamp(row, "updated_at")?,
    })
}

pub(crate) fn failure_record(row: &AnyRow) -> Result<FailureRecord, StoreError> {
    Ok(FailureRecord {
        failures: uint(row, "failures")?,
        last_failure_at: optional_timestamp(row, "last_failure_at")?,
    })
}

// ----- writing ---------------------------------------------------------------------------------

pub(crate) fn signed(what: &'static str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value)
        .map_err(|_| unrepresentable(what, format!("{value} exceeds the signed 64-bit range")))
}

fn enum_text<T: Serialize>(what: &'static str, value: &T) -> Result<String, StoreError> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => Ok(text),
        Ok(other) => Err(unrepresentable(
            what,
            format!("serializes as {other}, not a string"),
        )),
        Err(e) => Err(unrepresentable(what, e)),
    }
}

fn json_text<T: Serialize>(what: &'static str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| unrepresentable(what, e))
}

/// A meeting's column values, in [`MEETING_COLUMNS`] order.
pub(crate) struct MeetingValues {
    pub id: String,
    pub room_name: String,
    pub status: String,
    pub last_seq: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub instance_id: String,
    pub run_number: i64,
    pub opened_at: i64,
    pub live_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub settings: String,
    pub credentials: String,
    pub recording: Option<String>,
}

impl MeetingValues {
    pub(crate) fn of(meeting: &Meeting) -> Result<Self, StoreError> {
        Ok(Self {
            id: meeting.id.as_str().to_owned(),
            room_name: meeting.room_name.as_str().to_owned(),
            status: enum_text("meeting status", &meeting.status)?,
            last_seq: signed("last_seq", meeting.last_seq)?,
            created_at: meeting.created_at.as_millis(),
            updated_at: meeting.updated_at.as_millis(),
            instance_id: meeting.run.instance_id.as_str().to_owned(),
            run_number: i64::from(meeting.run.number),
            opened_at: meeting.run.opened_at.as_millis(),
            live_at: meeting.run.live_at.map(Timestamp::as_millis),
            ended_at: meeting.run.ended_at.map(Timestamp::as_millis),
            settings: json_text("meeting settings", &meeting.settings)?,
            credentials: json_text("meeting credentials", &meeting.credentials)?,
            recording: match &meeting.recording {
                Some(recording) => Some(json_text("meeting recording", recording)?),
                None => None,
            },
        })
    }
}

/// A participant's column values, in [`PARTICIPANT_COLUMNS`] order.
pub(crate) struct ParticipantValues {
    pub meeting_id: String,
    pub identity: String,
    pub name: String,
    pub role: String,
    pub state: &'static str,
    pub hand_raised: i64,
    pub invited: i64,
    pub media_connected: i64,
    pub admitted_in: Option<String>,
    pub banned_until: Option<i64>,
    pub epoch: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl ParticipantValues {
    pub(crate) const COUNT: usize = 13;

    pub(crate) fn of(participant: &Participant) -> Result<Self, StoreError> {
        Ok(Self {
            meeting_id: participant.meeting_id.as_str().to_owned(),
            identity: participant.identity.as_str().to_owned(),
            name: participant.name.as_str().to_owned(),
            role: enum_text("role", &participant.role)?,
            state: participant.state.as_str(),
            hand_raised: i64::from(participant.hand_raised),
            invited: i64::from(participant.invited),
            media_connected: i64::from(participant.media_connected),
            admitted_in: participant
                .admitted_in
                .as_ref()
                .map(|id| id.as_str().to_owned()),
            banned_until: participant.banned_until.map(Timestamp::as_millis),
            epoch: i64::from(participant.epoch),
            created_at: participant.created_at.as_millis(),
            updated_at: participant.updated_at.as_millis(),
        })
    }
}

/// An event's column values, in [`EVENT_COLUMNS`] order.
pub(crate) struct EventValues {
    pub meeting_id: String,
    pub seq: i64,
    pub at: i64,
    pub instance_id: String,
    pub kind_type: String,
    pub audience: String,
    pub data: String,
}

impl EventValues {
    pub(crate) const COUNT: usize = 7;

    pub(crate) fn of(event: &Event) -> Result<Self, StoreError> {
        // EventKind is adjacently tagged: {"type": "...", "data": {...}}. Store the two halves.
        let mut tagged = match serde_json::to_value(&event.kind) {
            Ok(serde_json::Value::Object(map)) => map,
            Ok(other) => {
                return Err(unrepresentable(
                    "event",
                    format!("serializes as {other}, not an object"),
                ));
            }
            Err(e) => return Err(unrepresentable("event", e)),
        };
        let kind_type = match tagged.remove("type") {
            Some(serde_json::Value::String(kind_type)) => kind_type,
            _ => {
                return Err(unrepresentable(
                    "event",
                    "its kind has no string `type` tag",
                ));
            }
        };
        let data = tagged.remove("data").unwrap_or(serde_json::Value::Null);
        Ok(Self {
            meeting_id: event.meeting_id.as_str().to_owned(),
            seq: signed("event seq", event.seq)?,
            at: event.at.as_millis(),
            instance_id: event.instance_id.as_str().to_owned(),
            kind_type,
            audience: json_text("event audience", &event.audience)?,
            data: json_text("event data", &data)?,
        })
    }
}

pub(crate) fn api_key_values(key: &ApiKey) -> (String, String, String, i64, Option<i64>) {
    (
        key.id.clone(),
        key.secret.expose().to_owned(),
        key.description.clone(),
        key.created_at.as_millis(),
        key.revoked_at.map(Timestamp::as_millis),
    )
}
