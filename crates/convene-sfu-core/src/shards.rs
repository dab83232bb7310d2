//! The rules that spread media over several engines (*shards*), each owning its rooms on a thread
//! of its own: which shard a room is on ([`RoomTable`]), and which shard a packet from a
//! peer's address goes to ([`Routes`]). Pure: the IO layer holds them behind a lock.
//!
//! A room is never split: every session of a room goes to the shard the room was placed on, and
//! a room is placed, at its first session, on the shard with the fewest sessions (then the
//! fewest rooms, then the lowest index). A room leaves the table when its last session has
//! ended, so the next session of that name is placed afresh.
//!
//! Packets are routed by their source: an engine says when it starts receiving from an address
//! (`Output::Routed`, queued before anything it sends there) and when it stops (`Output::Unrouted`,
//! when the participant goes). A packet from an address no engine receives from can only be the
//! first STUN binding request of a peer (ICE comes first: str0m takes DTLS, RTP and RTCP only
//! on a pair that STUN checked), so it goes to every shard and the one whose peer it is for
//! claims the address; anything else from an unknown address is dropped, as one engine drops it.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::SocketAddr;

use crate::engine::Transport;

/// Where each room is, and how loaded each shard is.
#[derive(Debug, Clone)]
pub struct RoomTable {
    loads: Vec<Load>,
    rooms: HashMap<String, Place>,
}

/// A shard's load: its sessions (signalling connections) and rooms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    pub sessions: u32,
    pub rooms: u32,
}

#[derive(Debug, Clone, Copy)]
struct Place {
    shard: usize,
    sessions: u32,
}

impl RoomTable {
    /// A table over `shards` shards (at least one).
    pub fn new(shards: usize) -> RoomTable {
        RoomTable {
            loads: vec![Load::default(); shards.max(1)],
            rooms: HashMap::new(),
        }
    }

    /// A session opens in `room`: the shard it goes to (the room's, or the least loaded for a
    /// room that has no session).
    pub fn open(&mut self, room: &str) -> usize {
        let place = match self.rooms.get_mut(room) {
            Some(place) => place,
            None => {
                let shard = self.least_loaded();
                self.loads[shard].rooms += 1;
                self.rooms
                    .entry(room.to_owned())
                    .or_insert(Place { shard, sessions: 0 })
            }
        };
        place.sessions += 1;
        self.loads[place.shard].sessions += 1;
        place.shard
    }

    /// A session of `room` ended (its connection closed); the room leaves the table with its last.
    pub fn close(&mut self, room: &str) {
        let Entry::Occupied(mut entry) = self.rooms.entry(room.to_owned()) else {
            return;
        };
        let place = entry.get_mut();
        place.sessions = place.sessions.saturating_sub(1);
        let load = &mut self.loads[place.shard];
        load.sessions = load.sessions.saturating_sub(1);
        if place.sessions == 0 {
            load.rooms = load.rooms.saturating_sub(1);
            entry.remove();
        }
    }

    /// The shard `room` is on, if it has a session.
    pub fn shard_of(&self, room: &str) -> Option<usize> {
        self.rooms.get(room).map(|place| place.shard)
    }

    /// Each shard's load, by index.
    pub fn loads(&self) -> &[Load] {
        &self.loads
    }

    fn least_loaded(&self) -> usize {
        (0..self.loads.len())
            .min_by_key(|&i| (self.loads[i].sessions, self.loads[i].rooms, i))
            .unwrap_or(0)
    }
}

/// Which shard receives from each peer address.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    routes: HashMap<(Transport, SocketAddr), usize>,
}

/// Where a packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To this shard.
    Shard(usize),
    /// To every shard: the first STUN binding request from an address (one shard claims it).
    Every,
    /// Nowhere: no engine takes it.
    Drop,
}

impl Routes {
    /// `shard` now receives from `source` (a later claim by another shard wins).
    pub fn claim(&mut self, transport: Transport, source: SocketAddr, shard: usize) {
        self.routes.insert((transport, source), shard);
    }

    /// `shard` no longer receives from `source`; a claim by another shard since stays.
    pub fn release(&mut self, transport: Transport, source: SocketAddr, shard: usize) {
        if let Entry::Occupied(entry) = self.routes.entry((transport, source))
            && *entry.get() == shard
        {
            entry.remove();
        }
    }

    /// Where the packet `bytes` from `source` goes.
    pub fn route(&self, transport: Transport, source: SocketAddr, bytes: &[u8]) -> Route {
        match self.routes.get(&(transport, source)) {
            Some(&shard) => Route::Shard(shard),
            None if is_stun(bytes) => Route::Every,
            None => Route::Drop,
        }
    }

    /// Addresses routed (tests, metrics).
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// A STUN message (RFC 5389: the first two bits zero, the magic cookie at bytes 4-7, a 20-byte
/// header at least), as RFC 7983 tells it from DTLS, RTP and RTCP.
pub fn is_stun(bytes: &[u8]) -> bool {
    bytes.len() >= 20 && bytes[0] < 4 && bytes[4..8] == [0x21, 0x12, 0xA4, 0x42]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    #[test]
    fn a_room_stays_on_one_shard_and_new_rooms_go_to_the_least_loaded() {
        let mut table = RoomTable::new(2);
        assert_eq!(table.open("a"), 0);
        assert_eq!(table.open("b"), 1, "shard 0 has a session, shard 1 none");
        // Three more in "a": all on its shard, however loaded.
        for _ in 0..3 {
            assert_eq!(table.open("a"), 0);
        }
        assert_eq!(table.open("c"), 1);
        assert_eq!(table.open("d"), 1, "1 has two sessions against 0's four");
        assert_eq!(
            table.loads(),
            &[
                Load {
                    sessions: 4,
                    rooms: 1
                },
                Load {
                    sessions: 3,
                    rooms: 3
                }
            ]
        );
        assert_eq!(table.open("e"), 1, "3 < 4");
        assert_eq!(table.open("f"), 0, "equal sessions: fewer rooms");
    }

    #[test]
    fn a_room_leaves_the_table_with_its_last_session_and_is_placed_afresh() {
        let mut table = RoomTable::new(3);
        assert_eq!(table.open("a"), 0);
        assert_eq!(table.open("a"), 0);
        assert_eq!(table.open("b"), 1);
        table.close("a");
        assert_eq!(table.shard_of("a"), Some(0), "one session left");
        table.close("a");
        assert_eq!(table.shard_of("a"), None);
        assert_eq!(table.loads()[0], Load::default());
        // Shard 0 is empty again, so "a" is placed there, but only by load.
        assert_eq!(table.open("c"), 0);
        assert_eq!(table.open("a"), 2);
        // A close of a room not in the table (its count already at zero) changes nothing.
        table.close("zzz");
        assert_eq!(table.loads().iter().map(|l| l.sessions).sum::<u32>(), 3);
    }

    #[test]
    fn one_shard_takes_everything() {
        let mut table = RoomTable::new(0);
        assert_eq!(table.open("a"), 0);
        assert_eq!(table.open("b"), 0);
        assert_eq!(table.loads().len(), 1);
    }

    fn binding_request() -> Vec<u8> {
        let mut bytes = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
        bytes.extend([7; 12]);
        bytes
    }

    #[test]
    fn packets_follow_claims_and_only_stun_from_strangers_goes_everywhere() {
        let mut routes = Routes::default();
        let stun = binding_request();
        let rtp = [0x80u8; 40];
        let dtls = [22u8; 40];
        assert_eq!(routes.route(Transport::Udp, addr(1), &stun), Route::Every);
        assert_eq!(routes.route(Transport::Udp, addr(1), &rtp), Route::Drop);
        assert_eq!(routes.route(Transport::Udp, addr(1), &dtls), Route::Drop);
        assert_eq!(
            routes.route(Transport::Udp, addr(1), &stun[..19]),
            Route::Drop
        );

        routes.claim(Transport::Udp, addr(1), 1);
        assert_eq!(routes.route(Transport::Udp, addr(1), &rtp), Route::Shard(1));
        assert_eq!(
            routes.route(Transport::Udp, addr(1), &stun),
            Route::Shard(1)
        );
        // Another transport from the same address is another route.
        assert_eq!(routes.route(Transport::Tcp, addr(1), &rtp), Route::Drop);

        // The address moves to a peer on shard 0; shard 1's late release leaves it there.
        routes.claim(Transport::Udp, addr(1), 0);
        routes.release(Transport::Udp, addr(1), 1);
        assert_eq!(routes.route(Transport::Udp, addr(1), &rtp), Route::Shard(0));
        routes.release(Transport::Udp, addr(1), 0);
        assert!(routes.is_empty());
    }
}
