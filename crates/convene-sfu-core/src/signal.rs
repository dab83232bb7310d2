//! LiveKit protocol helpers: building JoinResponse / ParticipantInfo /
//! TrackInfo, parsing `/rtc` query parameters and trickle JSON, and routing
//! data packets. Pure functions, no IO.
// Deprecated protocol fields are still read by the clients we serve.
#![allow(deprecated)]

use std::collections::HashMap;

use livekit_protocol as proto;
use proto::{SignalResponse, signal_response};

use crate::{Admitted, Permission, SERVER_VERSION};

/// The protocol version we speak (LiveKit clients send 16 or 17 today).
pub const PROTOCOL_VERSION: i32 = 16;

/// Parameters of a `/rtc` connection, from its query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinParams {
    pub auto_subscribe: bool,
    pub reconnect: bool,
    pub client_protocol: i32,
    pub capabilities: Vec<i32>,
    pub sdk: String,
}

impl Default for JoinParams {
    fn default() -> Self {
        JoinParams {
            auto_subscribe: true,
            reconnect: false,
            client_protocol: 0,
            capabilities: Vec::new(),
            sdk: String::new(),
        }
    }
}

fn truthy(value: &str) -> bool {
    matches!(value, "1" | "true" | "True" | "TRUE")
}

impl JoinParams {
    /// Read the parameters the official clients send; absent `auto_subscribe` means true.
    pub fn from_query(query: &HashMap<String, String>) -> Self {
        let mut params = JoinParams::default();
        if let Some(value) = query.get("auto_subscribe") {
            params.auto_subscribe = truthy(value);
        }
        if let Some(value) = query.get("reconnect") {
            params.reconnect = truthy(value);
        }
        if let Some(value) = query.get("client_protocol") {
            params.client_protocol = value.parse().unwrap_or(0);
        }
        if let Some(value) = query.get("capabilities") {
            params.capabilities = value
                .split(',')
                .filter_map(|name| proto::client_info::Capability::from_str_name(name.trim()))
                .map(|c| c as i32)
                .collect();
        }
        if let Some(value) = query.get("sdk") {
            params.sdk = value.chars().take(32).collect();
        }
        params
    }
}

/// Our permission type as LiveKit's.
pub fn permission_to_proto(permission: Permission) -> proto::ParticipantPermission {
    proto::ParticipantPermission {
        can_subscribe: permission.can_subscribe,
        can_publish: permission.can_publish,
        can_publish_data: permission.can_publish_data,
        hidden: permission.hidden,
        can_update_metadata: permission.room_admin,
        ..Default::default()
    }
}

/// The ParticipantInfo of a participant that has just joined.
pub fn new_participant_info(
    sid: &str,
    admitted: &Admitted,
    joined_at_ms: i64,
    params: &JoinParams,
) -> proto::ParticipantInfo {
    proto::ParticipantInfo {
        sid: sid.to_owned(),
        identity: admitted.identity.clone(),
        state: proto::participant_info::State::Joined as i32,
        metadata: admitted.metadata.clone(),
        joined_at: joined_at_ms / 1000,
        joined_at_ms,
        name: admitted.name.clone(),
        version: 1,
        permission: Some(permission_to_proto(admitted.permission)),
        client_protocol: params.client_protocol,
        capabilities: params.capabilities.clone(),
        ..Default::default()
    }
}

/// The first message of every session.
pub fn join_response(
    room: proto::Room,
    participant: proto::ParticipantInfo,
    other_participants: Vec<proto::ParticipantInfo>,
    ping_interval_secs: u32,
    ping_timeout_secs: u32,
) -> proto::JoinResponse {
    proto::JoinResponse {
        room: Some(room),
        participant: Some(participant),
        other_participants,
        server_version: SERVER_VERSION.to_owned(),
        subscriber_primary: true,
        ping_interval: ping_interval_secs.max(1) as i32,
        ping_timeout: ping_timeout_secs.max(2) as i32,
        server_info: Some(proto::ServerInfo {
            edition: proto::server_info::Edition::Standard as i32,
            version: SERVER_VERSION.to_owned(),
            protocol: PROTOCOL_VERSION,
            node_id: "convene".to_owned(),
            ..Default::default()
        }),
        client_configuration: Some(proto::ClientConfiguration {
            resume_connection: proto::ClientConfigSetting::Disabled as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The TrackInfo announced for an AddTrackRequest.
pub fn track_info_from_request(request: &proto::AddTrackRequest, sid: &str) -> proto::TrackInfo {
    let video = request.r#type == proto::TrackType::Video as i32;
    proto::TrackInfo {
        sid: sid.to_owned(),
        r#type: if video {
            proto::TrackType::Video as i32
        } else {
            proto::TrackType::Audio as i32
        },
        name: request.name.chars().take(256).collect(),
        muted: request.muted,
        width: request.width,
        height: request.height,
        simulcast: request.layers.len() > 1,
        disable_dtx: request.disable_dtx,
        source: request.source,
        layers: request.layers.iter().take(4).cloned().collect(),
        mime_type: if video { "video/VP8" } else { "audio/opus" }.to_owned(),
        stereo: request.stereo,
        disable_red: request.disable_red,
        stream: request.stream.chars().take(256).collect(),
        ..Default::default()
    }
}

/// Wrap a message in a SignalResponse.
pub fn response(message: signal_response::Message) -> SignalResponse {
    SignalResponse {
        message: Some(message),
    }
}

/// A `leave` message telling the client what to do next.
pub fn leave(
    reason: proto::DisconnectReason,
    action: proto::leave_request::Action,
) -> SignalResponse {
    response(signal_response::Message::Leave(proto::LeaveRequest {
        can_reconnect: action == proto::leave_request::Action::Reconnect,
        reason: reason as i32,
        action: action as i32,
        regions: None,
    }))
}

/// Errors of parsing a trickled candidate.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TrickleError {
    #[error("trickle candidate is not valid JSON: {0}")]
    Json(String),
}

#[derive(serde::Deserialize)]
struct CandidateInit {
    #[serde(default)]
    candidate: String,
}

/// The candidate line of a trickle request; `None` for end-of-candidates.
pub fn parse_trickle(candidate_init: &str) -> Result<Option<String>, TrickleError> {
    let init: CandidateInit =
        serde_json::from_str(candidate_init).map_err(|e| TrickleError::Json(e.to_string()))?;
    let line = init.candidate.trim();
    let line = line.strip_prefix("a=").unwrap_or(line);
    Ok((!line.is_empty()).then(|| line.to_owned()))
}

/// Stamp the sender onto a client's data packet and return the identities
/// it goes to. `members` are the identities present in the room (sender
/// included). An empty destination list means everyone but the sender.
pub fn route_data(
    packet: &mut proto::DataPacket,
    sender_identity: &str,
    sender_sid: &str,
    members: &[&str],
) -> Vec<String> {
    packet.participant_identity = sender_identity.to_owned();
    packet.participant_sid = sender_sid.to_owned();
    let mut destinations = packet.destination_identities.clone();
    if let Some(proto::data_packet::Value::User(user)) = packet.value.as_mut() {
        user.participant_identity = sender_identity.to_owned();
        user.participant_sid = sender_sid.to_owned();
        if destinations.is_empty() {
            destinations = user.destination_identities.clone();
        }
    }
    members
        .iter()
        .filter(|identity| **identity != sender_identity)
        .filter(|identity| destinations.is_empty() || destinations.iter().any(|d| d == *identity))
        .map(|identity| (*identity).to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted() -> Admitted {
        Admitted {
            room: "r".into(),
            identity: "alice".into(),
            name: "Alice".into(),
            metadata: "{}".into(),
            permission: Permission::default(),
        }
    }

    #[test]
    fn join_response_has_what_clients_require() {
        let me = new_participant_info(
            "PA_x",
            &admitted(),
            1_700_000_000_000,
            &JoinParams::default(),
        );
        let room = proto::Room {
            sid: "RM_x".into(),
            name: "r".into(),
            ..Default::default()
        };
        let join = join_response(room, me, vec![], 5, 15);
        assert_eq!(join.room.as_ref().unwrap().sid, "RM_x");
        assert_eq!(join.participant.as_ref().unwrap().sid, "PA_x");
        assert!(join.subscriber_primary);
        assert_eq!((join.ping_interval, join.ping_timeout), (5, 15));
        let version = &join.server_info.as_ref().unwrap().version;
        let parts: Vec<_> = version.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.parse::<u32>().is_ok()));
        assert_eq!(
            join.client_configuration.unwrap().resume_connection,
            proto::ClientConfigSetting::Disabled as i32
        );
        let permission = join.participant.unwrap().permission.unwrap();
        assert!(permission.can_publish && permission.can_subscribe && permission.can_publish_data);
    }

    #[test]
    fn query_parameters() {
        let query: HashMap<String, String> = [
            ("auto_subscribe", "0"),
            ("client_protocol", "1"),
            ("capabilities", "CAP_PACKET_TRAILER,bogus"),
            ("reconnect", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let params = JoinParams::from_query(&query);
        assert!(!params.auto_subscribe && params.reconnect);
        assert_eq!(params.client_protocol, 1);
        assert!(JoinParams::from_query(&HashMap::new()).auto_subscribe);
    }

    #[test]
    fn trickle_parsing() {
        let json = r#"{"candidate":"candidate:1 1 udp 2122260223 192.0.2.2 5000 typ host","sdpMid":"0","sdpMLineIndex":0}"#;
        assert_eq!(
            parse_trickle(json).unwrap().as_deref(),
            Some("candidate:1 1 udp 2122260223 192.0.2.2 5000 typ host")
        );
        assert_eq!(parse_trickle(r#"{"candidate":""}"#).unwrap(), None);
        assert!(parse_trickle("not json").is_err());
    }

    #[test]
    fn data_routing_overwrites_sender_and_honours_destinations() {
        let mut packet = proto::DataPacket {
            participant_identity: "mallory".into(),
            participant_sid: "PA_fake".into(),
            value: Some(proto::data_packet::Value::User(proto::UserPacket {
                participant_identity: "mallory".into(),
                payload: b"hi".to_vec(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let members = ["alice", "bob", "carol"];
        let to = route_data(&mut packet, "alice", "PA_a", &members);
        assert_eq!(to, vec!["bob".to_owned(), "carol".to_owned()]);
        assert_eq!(packet.participant_identity, "alice");
        assert_eq!(packet.participant_sid, "PA_a");
        let Some(proto::data_packet::Value::User(user)) = &packet.value else {
            panic!("user packet expected")
        };
        assert_eq!(user.participant_identity, "alice");

        packet.destination_identities = vec!["carol".into(), "alice".into(), "nobody".into()];
        assert_eq!(
            route_data(&mut packet, "alice", "PA_a", &members),
            vec!["carol".to_owned()]
        );
    }
}
