//! Joining and leaving: a participant's arrival (with the eviction of an older session of the
//! same identity), its removal, and telling the room (`ParticipantUpdate` broadcasts).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use livekit_protocol as proto;
use proto::signal_response::Message as Resp;

use crate::ids::{ParticipantSid, RoomSid};
use crate::quality::{LinkWindow, NackMarks};
use crate::signal::{self, JoinParams};
use crate::speakers::SpeakerSet;
use crate::{Admitted, MediaEvent};

use super::state::{Channels, Participant, Peer, Room};
use super::{ConnId, Engine, Output, PcKind};

impl Engine {
    /// A new, admitted signalling connection.
    pub(super) fn join(
        &mut self,
        conn: ConnId,
        admitted: Admitted,
        params: JoinParams,
        wall_clock_ms: i64,
        now: Instant,
    ) {
        let unix_ms = self.unix_ms(now);
        // A new session with the same identity evicts the old one.
        let previous = self.rooms.get(&admitted.room).and_then(|room| {
            room.members.iter().copied().find(|c| {
                self.participants
                    .get(c)
                    .is_some_and(|p| p.identity() == admitted.identity)
            })
        });
        if let Some(old) = previous {
            self.disconnect(old, proto::DisconnectReason::DuplicateIdentity, now);
        }

        let room_sid = RoomSid::generate(&mut self.rng);
        let recording = self.recordings.get(&admitted.room).cloned();
        let room = self
            .rooms
            .entry(admitted.room.clone())
            .or_insert_with(|| Room {
                sid: room_sid,
                creation_ms: unix_ms,
                members: Vec::new(),
                speakers: SpeakerSet::default(),
                recording,
            });
        room.members.push(conn);
        let room_proto = super::recording::room_info(&admitted.room, room);
        let members = room.members.clone();

        let sid = ParticipantSid::generate(&mut self.rng);
        let info = signal::new_participant_info(sid.as_str(), &admitted, unix_ms, &params);
        let others: Vec<proto::ParticipantInfo> = members
            .iter()
            .filter(|c| **c != conn)
            .filter_map(|c| self.participants.get(c))
            .filter(|p| !p.permission.hidden)
            .map(Participant::snapshot)
            .collect();
        let mut join = signal::join_response(
            room_proto,
            info.clone(),
            others,
            self.config.ping_interval_secs,
            self.config.ping_timeout_secs,
        );
        if let Some(turn) = &self.config.turn {
            let now_unix_secs = u64::try_from(wall_clock_ms.max(0) / 1000).unwrap_or_default();
            join.ice_servers = turn.ice_servers(&admitted.identity, now_unix_secs);
        }
        self.send(conn, Resp::Join(join));

        let participant = Participant {
            room: admitted.room.clone(),
            info: info.clone(),
            permission: admitted.permission,
            auto_subscribe: params.auto_subscribe,
            last_seen: now,
            publisher: Peer::new(self.new_rtc(now, PcKind::Publisher), now),
            subscriber: Peer::new(self.new_rtc(now, PcKind::Subscriber), now),
            published: Vec::new(),
            unbound_mids: Vec::new(),
            down: Vec::new(),
            sub_offer_id: 0,
            sub_pending: None,
            sub_channels: Channels::default(),
            pub_channels: HashMap::new(),
            reliable_backlog: VecDeque::new(),
            subscribed: HashSet::new(),
            unsubscribed: HashSet::new(),
            last_rx: now,
            link: LinkWindow::default(),
            nacks: NackMarks::default(),
            quality: None,
            speakers_synced: false,
            quality_synced: false,
            track_settings: HashMap::new(),
            bwe_estimate: None,
            bwe_desired: 0,
            egress: HashMap::new(),
            loss_cap: Default::default(),
        };
        // Both new peers are due now.
        self.earliest_timeout = self.earliest_timeout.min(now);
        self.participants.insert(conn, participant);

        if !admitted.permission.hidden {
            self.broadcast(&admitted.room, vec![info], Some(conn));
        }
        self.outputs
            .push_back(Output::Event(MediaEvent::ParticipantJoined {
                room: admitted.room.clone(),
                identity: admitted.identity.clone(),
                sid: sid.to_string(),
            }));
        self.reconcile(conn);
        self.negotiate_subscriber(conn, now);
        self.process(now);
    }

    /// The signalling connection closed (or failed).
    pub(super) fn connection_closed(&mut self, conn: ConnId, now: Instant) {
        if self.participants.contains_key(&conn) {
            self.remove(conn, proto::DisconnectReason::SignalClose, now);
            self.process(now);
        }
    }

    /// Remove a participant, tell the room, and close its connection.
    pub(super) fn remove(&mut self, conn: ConnId, reason: proto::DisconnectReason, now: Instant) {
        let Some(mut participant) = self.participants.remove(&conn) else {
            return;
        };
        for pc in [PcKind::Publisher, PcKind::Subscriber] {
            participant.peer(pc).with(|rtc| rtc.disconnect());
        }
        let outputs = &mut self.outputs;
        self.route_cache.retain(|&(transport, source), (c, _)| {
            let keep = *c != conn;
            if !keep {
                outputs.push_back(Output::Unrouted { transport, source });
            }
            keep
        });
        let room_name = participant.room.clone();
        if let Some(room) = self.rooms.get_mut(&room_name) {
            room.members.retain(|c| *c != conn);
            room.speakers.forget(participant.sid());
            if room.members.is_empty() {
                self.rooms.remove(&room_name);
            }
        }
        let mut info = participant.snapshot();
        for track in info.tracks.drain(..) {
            self.outputs
                .push_back(Output::Event(MediaEvent::TrackUnpublished {
                    room: room_name.clone(),
                    identity: info.identity.clone(),
                    track_sid: track.sid,
                }));
        }
        info.state = proto::participant_info::State::Disconnected as i32;
        info.disconnect_reason = reason as i32;
        info.version += 1;
        if !participant.permission.hidden {
            self.broadcast(&room_name, vec![info.clone()], None);
        }
        self.outputs
            .push_back(Output::Event(MediaEvent::ParticipantLeft {
                room: room_name.clone(),
                identity: info.identity.clone(),
                sid: info.sid.clone(),
                reason: reason.as_str_name().to_owned(),
            }));
        self.outputs.push_back(Output::Close { conn });
        self.reconcile_room(&room_name, now);
    }

    pub(super) fn members(&self, room: &str) -> Vec<ConnId> {
        self.rooms
            .get(room)
            .map(|r| r.members.clone())
            .unwrap_or_default()
    }

    /// Send a ParticipantUpdate to every member of `room` (but `except`).
    pub(super) fn broadcast(
        &mut self,
        room: &str,
        participants: Vec<proto::ParticipantInfo>,
        except: Option<ConnId>,
    ) {
        for member in self.members(room) {
            if Some(member) == except {
                continue;
            }
            self.send(
                member,
                Resp::Update(proto::ParticipantUpdate {
                    participants: participants.clone(),
                }),
            );
        }
    }

    /// Bump a participant's version and tell the room (hidden: only itself).
    pub(super) fn announce(&mut self, conn: ConnId) {
        let Some(participant) = self.participants.get_mut(&conn) else {
            return;
        };
        participant.info.version += 1;
        let snapshot = participant.snapshot();
        let room = participant.room.clone();
        if participant.permission.hidden {
            self.send(
                conn,
                Resp::Update(proto::ParticipantUpdate {
                    participants: vec![snapshot],
                }),
            );
        } else {
            self.broadcast(&room, vec![snapshot], None);
        }
    }
}
