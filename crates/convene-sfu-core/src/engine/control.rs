//! Control commands (moderation and LiveKit's RoomService): remove, change permissions, mute,
//! close rooms, list, update participants, send server data.

use std::collections::HashMap;
use std::time::Instant;

use livekit_protocol as proto;
use proto::signal_response::Message as Resp;

use crate::signal;
use crate::{EngineError, Permission};

use super::state::Participant;
use super::{ConnId, DataKind, Engine, RoomSummary};

impl Engine {
    pub(super) fn find(&self, room: &str, identity: &str) -> Result<ConnId, EngineError> {
        let room_state = self
            .rooms
            .get(room)
            .ok_or_else(|| EngineError::NotFound(format!("room {room}")))?;
        room_state
            .members
            .iter()
            .copied()
            .find(|c| {
                self.participants
                    .get(c)
                    .is_some_and(|p| p.identity() == identity)
            })
            .ok_or_else(|| EngineError::NotFound(format!("participant {identity}")))
    }

    /// Send `leave{DISCONNECT}` and close.
    pub(super) fn remove_participant(
        &mut self,
        room: &str,
        identity: &str,
        reason: proto::DisconnectReason,
        now: Instant,
    ) -> Result<(), EngineError> {
        let conn = self.find(room, identity)?;
        self.disconnect(conn, reason, now);
        self.process(now);
        Ok(())
    }

    /// Change a participant's permission live.
    pub(super) fn update_permission(
        &mut self,
        room: &str,
        identity: &str,
        permission: Permission,
        now: Instant,
    ) -> Result<(), EngineError> {
        let conn = self.find(room, identity)?;
        let participant = self.participants.get_mut(&conn).expect("found");
        let was_hidden = participant.permission.hidden;
        participant.permission = permission;
        participant.info.permission = Some(signal::permission_to_proto(permission));
        let revoked: Vec<String> = if permission.can_publish {
            Vec::new()
        } else {
            participant
                .published
                .iter()
                .map(|t| t.sid.to_string())
                .collect()
        };
        if !revoked.is_empty() {
            self.unpublish(conn, &revoked, true, now);
        }
        self.announce(conn);
        if was_hidden && !permission.hidden {
            // Now visible: others learn about it through the broadcast above.
        }
        self.reconcile(conn);
        self.negotiate_subscriber(conn, now);
        self.process(now);
        Ok(())
    }

    /// Server-initiated mute of a published track.
    pub(super) fn mute_published_track(
        &mut self,
        room: &str,
        identity: &str,
        track_sid: &str,
        muted: bool,
        now: Instant,
    ) -> Result<proto::TrackInfo, EngineError> {
        let conn = self.find(room, identity)?;
        if !self.set_muted(conn, track_sid, muted) {
            return Err(EngineError::NotFound(format!("track {track_sid}")));
        }
        self.send(
            conn,
            Resp::Mute(proto::MuteTrackRequest {
                sid: track_sid.to_owned(),
                muted,
            }),
        );
        self.process(now);
        let participant = self.participants.get(&conn).expect("found");
        Ok(participant
            .published
            .iter()
            .find(|t| t.sid.as_str() == track_sid)
            .map(|t| t.info.clone())
            .unwrap_or_default())
    }

    /// Disconnect everyone in `room`.
    pub(super) fn close_room(&mut self, room: &str, now: Instant) -> Result<(), EngineError> {
        if !self.rooms.contains_key(room) {
            return Err(EngineError::NotFound(format!("room {room}")));
        }
        for conn in self.members(room) {
            self.disconnect(conn, proto::DisconnectReason::RoomDeleted, now);
        }
        self.process(now);
        Ok(())
    }

    /// Disconnect everyone everywhere (shutdown).
    pub(super) fn close_all(&mut self, now: Instant) {
        let rooms: Vec<String> = self.rooms.keys().cloned().collect();
        for room in rooms {
            for conn in self.members(&room) {
                self.disconnect(conn, proto::DisconnectReason::ServerShutdown, now);
            }
        }
        self.process(now);
    }

    pub(super) fn list_rooms(&self) -> Vec<RoomSummary> {
        self.rooms
            .iter()
            .map(|(name, room)| RoomSummary {
                name: name.clone(),
                sid: room.sid.to_string(),
                num_participants: room.members.len() as u32,
                num_publishers: room
                    .members
                    .iter()
                    .filter_map(|c| self.participants.get(c))
                    .filter(|p| p.published.iter().any(|t| t.mid.is_some()))
                    .count() as u32,
                creation_time_ms: room.creation_ms,
            })
            .collect()
    }

    pub(super) fn list_participants(
        &self,
        room: &str,
    ) -> Result<Vec<proto::ParticipantInfo>, EngineError> {
        let room_state = self
            .rooms
            .get(room)
            .ok_or_else(|| EngineError::NotFound(format!("room {room}")))?;
        Ok(room_state
            .members
            .iter()
            .filter_map(|c| self.participants.get(c))
            .map(Participant::snapshot)
            .collect())
    }

    pub(super) fn get_participant(
        &self,
        room: &str,
        identity: &str,
    ) -> Result<proto::ParticipantInfo, EngineError> {
        let conn = self.find(room, identity)?;
        Ok(self.participants[&conn].snapshot())
    }

    /// Change name, metadata, attributes and/or permission; broadcast the result.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn update_participant(
        &mut self,
        room: &str,
        identity: &str,
        name: Option<String>,
        metadata: Option<String>,
        attributes: Option<HashMap<String, String>>,
        permission: Option<Permission>,
        now: Instant,
    ) -> Result<proto::ParticipantInfo, EngineError> {
        let conn = self.find(room, identity)?;
        let participant = self.participants.get_mut(&conn).expect("found");
        if let Some(name) = name {
            participant.info.name = name;
        }
        if let Some(metadata) = metadata {
            participant.info.metadata = metadata;
        }
        if let Some(attributes) = attributes {
            for (key, value) in attributes {
                if value.is_empty() {
                    participant.info.attributes.remove(&key);
                } else {
                    participant.info.attributes.insert(key, value);
                }
            }
        }
        match permission {
            Some(permission) => self.update_permission(room, identity, permission, now)?,
            None => {
                self.announce(conn);
                self.process(now);
            }
        }
        self.get_participant(room, identity)
    }

    /// Server-originated data to a room (all, or `destination_identities`).
    pub(super) fn send_data(
        &mut self,
        room: &str,
        payload: Vec<u8>,
        kind: DataKind,
        destination_identities: Vec<String>,
        topic: Option<String>,
        now: Instant,
    ) -> Result<(), EngineError> {
        if !self.rooms.contains_key(room) {
            return Err(EngineError::NotFound(format!("room {room}")));
        }
        let mut packet = proto::DataPacket {
            kind: match kind {
                DataKind::Reliable => proto::data_packet::Kind::Reliable as i32,
                DataKind::Lossy => proto::data_packet::Kind::Lossy as i32,
            },
            destination_identities: destination_identities.clone(),
            value: Some(proto::data_packet::Value::User(proto::UserPacket {
                payload,
                topic,
                destination_identities,
                ..Default::default()
            })),
            ..Default::default()
        };
        self.route_packet(room, &mut packet, kind, "", "", now);
        self.process(now);
        Ok(())
    }
}
