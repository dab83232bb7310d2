//! The engine's inputs by name: everything the engine takes is an [`Input`], a plain value that
//! can be listed, logged (`Debug`) and replayed, and [`Engine::handle`] is the one way in.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use livekit_protocol as proto;

use crate::signal::JoinParams;
use crate::{Admitted, EngineError, Permission};

use super::{ConnId, DataKind, Engine, RoomSummary, Transport};

/// One input to the engine; the current time comes beside it, to [`Engine::handle`].
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // handed over at once, never stored: boxing would only allocate
pub enum Input {
    /// A new, admitted signalling connection.
    Join {
        conn: ConnId,
        admitted: Admitted,
        params: JoinParams,
        /// The wall-clock time of the join (ms since the Unix epoch), read by the IO layer: the
        /// TURN credentials' expiry counts from it, since the TURN server checks it against its
        /// own clock (the engine's anchor, advanced by the monotonic clock, falls behind the
        /// wall clock over a suspend).
        unix_ms: i64,
    },
    /// A decoded `SignalRequest` from `conn`.
    Signal {
        conn: ConnId,
        request: proto::SignalRequest,
    },
    /// `conn`'s signalling connection closed (or failed, or could not keep up).
    ConnectionClosed { conn: ConnId },
    /// A packet arrived at the local address `destination` from `source`: a UDP datagram, or
    /// one RFC 4571 frame (without its length) read from the TCP connection between them.
    Datagram {
        transport: Transport,
        source: SocketAddr,
        destination: SocketAddr,
        bytes: Vec<u8>,
    },
    /// Time passed: str0m's timers, keepalive checks and housekeeping. Due at
    /// [`Engine::poll_timeout`].
    Timeout,
    /// Send the participant `leave{DISCONNECT}` with `reason` and close its session.
    RemoveParticipant {
        room: String,
        identity: String,
        reason: proto::DisconnectReason,
    },
    /// Change what a connected participant may do; takes effect at once.
    UpdatePermission {
        room: String,
        identity: String,
        permission: Permission,
    },
    /// Server-initiated mute (or unmute) of a published track. Answers [`Answer::Track`].
    MutePublishedTrack {
        room: String,
        identity: String,
        track_sid: String,
        muted: bool,
    },
    /// Change name, metadata, attributes (an empty value deletes one) and/or permission, and
    /// tell the room. Answers [`Answer::Participant`].
    UpdateParticipant {
        room: String,
        identity: String,
        name: Option<String>,
        metadata: Option<String>,
        attributes: Option<HashMap<String, String>>,
        permission: Option<Permission>,
    },
    /// Server-originated user data to a room (everyone, or only `destination_identities`).
    SendData {
        room: String,
        payload: Vec<u8>,
        kind: DataKind,
        destination_identities: Vec<String>,
        topic: Option<String>,
    },
    /// Disconnect everyone in the room.
    CloseRoom { room: String },
    /// Record the room from now on as `recording` (`Some`), or stop (`None`): every published
    /// track's best layer comes out as [`Output::Record`](super::Output::Record) packets, and the
    /// members are told (the room's `active_recording`). Kept for a room that has no session
    /// yet, so every shard takes it. Answers [`Answer::Done`].
    Record {
        room: String,
        recording: Option<String>,
    },
    /// A recorded track lost a frame: ask its publisher for a keyframe (throttled). Answers
    /// [`Answer::Done`] (an unknown track is not an error: it may have just gone).
    RecordKeyframe { room: String, track_sid: String },
    /// Disconnect everyone everywhere (shutdown).
    CloseAll,
    /// Answers [`Answer::Rooms`].
    ListRooms,
    /// Answers [`Answer::Participants`].
    ListParticipants { room: String },
    /// Answers [`Answer::Participant`].
    GetParticipant { room: String, identity: String },
}

/// What [`Engine::handle`] answers besides the outputs it queues: [`Answer::Done`], or what a
/// query found or a control command changed.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Done,
    Rooms(Vec<RoomSummary>),
    Participants(Vec<proto::ParticipantInfo>),
    Participant(proto::ParticipantInfo),
    Track(proto::TrackInfo),
}

impl Input {
    /// The room a control command or query is about; `None` for the inputs of peers and time,
    /// and for those about every room.
    pub fn room(&self) -> Option<&str> {
        match self {
            Input::RemoveParticipant { room, .. }
            | Input::UpdatePermission { room, .. }
            | Input::MutePublishedTrack { room, .. }
            | Input::UpdateParticipant { room, .. }
            | Input::SendData { room, .. }
            | Input::CloseRoom { room }
            | Input::Record { room, .. }
            | Input::RecordKeyframe { room, .. }
            | Input::ListParticipants { room }
            | Input::GetParticipant { room, .. } => Some(room),
            Input::Join { .. }
            | Input::Signal { .. }
            | Input::ConnectionClosed { .. }
            | Input::Datagram { .. }
            | Input::Timeout
            | Input::CloseAll
            | Input::ListRooms => None,
        }
    }
}

impl Engine {
    /// Take one input at time `now`. Outputs queue up for [`Engine::poll_output`]; the answer
    /// is for whoever sent a control command or query (a room or participant that is not there
    /// is [`EngineError::NotFound`]; inputs from peers and time always answer [`Answer::Done`]).
    pub fn handle(&mut self, input: Input, now: Instant) -> Result<Answer, EngineError> {
        let answer = match input {
            Input::Join {
                conn,
                admitted,
                params,
                unix_ms,
            } => {
                self.join(conn, admitted, params, unix_ms, now);
                Answer::Done
            }
            Input::Signal { conn, request } => {
                self.handle_signal(conn, request, now);
                Answer::Done
            }
            Input::ConnectionClosed { conn } => {
                self.connection_closed(conn, now);
                Answer::Done
            }
            Input::Datagram {
                transport,
                source,
                destination,
                bytes,
            } => {
                self.handle_datagram(transport, source, destination, &bytes, now);
                Answer::Done
            }
            Input::Timeout => {
                self.handle_timeout(now);
                Answer::Done
            }
            Input::RemoveParticipant {
                room,
                identity,
                reason,
            } => {
                self.remove_participant(&room, &identity, reason, now)?;
                Answer::Done
            }
            Input::UpdatePermission {
                room,
                identity,
                permission,
            } => {
                self.update_permission(&room, &identity, permission, now)?;
                Answer::Done
            }
            Input::MutePublishedTrack {
                room,
                identity,
                track_sid,
                muted,
            } => {
                Answer::Track(self.mute_published_track(&room, &identity, &track_sid, muted, now)?)
            }
            Input::UpdateParticipant {
                room,
                identity,
                name,
                metadata,
                attributes,
                permission,
            } => Answer::Participant(self.update_participant(
                &room, &identity, name, metadata, attributes, permission, now,
            )?),
            Input::SendData {
                room,
                payload,
                kind,
                destination_identities,
                topic,
            } => {
                self.send_data(&room, payload, kind, destination_identities, topic, now)?;
                Answer::Done
            }
            Input::CloseRoom { room } => {
                self.close_room(&room, now)?;
                Answer::Done
            }
            Input::Record { room, recording } => {
                self.set_recording(room, recording, now);
                Answer::Done
            }
            Input::RecordKeyframe { room, track_sid } => {
                self.record_keyframe(&room, &track_sid, now);
                Answer::Done
            }
            Input::CloseAll => {
                self.close_all(now);
                Answer::Done
            }
            Input::ListRooms => Answer::Rooms(self.list_rooms()),
            Input::ListParticipants { room } => {
                Answer::Participants(self.list_participants(&room)?)
            }
            Input::GetParticipant { room, identity } => {
                Answer::Participant(self.get_participant(&room, &identity)?)
            }
        };
        Ok(answer)
    }
}
