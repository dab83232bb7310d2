//! Data packets: a client's packets from its publisher channels and the server's own, stamped with
//! their sender and routed to their destinations' subscriber channels (reliable ones held back
//! until the channel opens).

use std::time::Instant;

use livekit_protocol as proto;
use prost::Message;

use crate::signal;

use super::{ConnId, DataKind, Engine, PcKind};

const MAX_RELIABLE_BACKLOG: usize = 256;

impl Engine {
    pub(super) fn on_client_data(
        &mut self,
        conn: ConnId,
        kind: DataKind,
        bytes: &[u8],
        now: Instant,
    ) {
        let Some(participant) = self.participants.get(&conn) else {
            return;
        };
        if !participant.permission.can_publish_data {
            return;
        }
        let Ok(mut packet) = proto::DataPacket::decode(bytes) else {
            tracing::debug!(?conn, "undecodable data packet");
            return;
        };
        let (identity, sid, room) = (
            participant.identity().to_owned(),
            participant.sid().to_owned(),
            participant.room.clone(),
        );
        self.route_packet(&room, &mut packet, kind, &identity, &sid, now);
    }

    pub(super) fn route_packet(
        &mut self,
        room: &str,
        packet: &mut proto::DataPacket,
        kind: DataKind,
        sender_identity: &str,
        sender_sid: &str,
        now: Instant,
    ) {
        let members = self.members(room);
        let identities: Vec<(ConnId, String)> = members
            .iter()
            .filter_map(|c| {
                self.participants
                    .get(c)
                    .map(|p| (*c, p.identity().to_owned()))
            })
            .collect();
        let names: Vec<&str> = identities.iter().map(|(_, i)| i.as_str()).collect();
        let recipients = signal::route_data(packet, sender_identity, sender_sid, &names);
        let encoded = packet.encode_to_vec();
        for (member, identity) in &identities {
            if !recipients.contains(identity) {
                continue;
            }
            let Some(participant) = self.participants.get_mut(member) else {
                continue;
            };
            let channels = &participant.sub_channels;
            let (id, open) = match kind {
                DataKind::Reliable => (channels.reliable, channels.reliable_open),
                DataKind::Lossy => (channels.lossy, channels.lossy_open),
            };
            match (id, open) {
                (Some(id), true) => {
                    participant
                        .subscriber
                        .with(|rtc| rtc.channel(id).map(|mut ch| ch.write(true, &encoded)));
                    self.drain(*member, PcKind::Subscriber, now);
                }
                _ if kind == DataKind::Reliable
                    && participant.reliable_backlog.len() < MAX_RELIABLE_BACKLOG =>
                {
                    participant.reliable_backlog.push_back(encoded.clone());
                }
                _ => {}
            }
        }
    }
}
