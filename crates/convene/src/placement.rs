//! Each meeting's media on one node (several nodes on PostgreSQL, each running the embedded SFU;
//! docs/multi-node.md). A node is named by its public signalling URL and keeps a lease in the
//! store ([`keep`]: renewed every [`RENEW_EVERY`], good for [`LEASE`], ended at shutdown). A
//! room is placed at its first join answer on the least loaded live node
//! ([`Placement::url_for`], which every join answer's `url` comes from), and a client that
//! reaches a node's `/rtc` is let in only where its room is ([`Placement::admit_here`]: a room
//! with no live holder is placed on the node the client reached, so after a node dies its rooms
//! move to where their people rejoin). Media commands for a room held elsewhere are sent to its
//! node through PostgreSQL (`pg_notify` on `convene_media`, [`Forward`]), which carries them out
//! on its engine ([`crate::nodes::follow`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use convene_api::state::MediaPlacement;
use convene_core::change::MediaCommand;
use convene_core::ids::RoomName;
use convene_core::ports::StoreError;
use convene_core::time::Clock;
use convene_sfu::SfuControl;
use convene_store::SqlStore;
use convene_store::placement::Target;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// How long a node is taken as alive after its last renewal.
pub const LEASE: Duration = Duration::from_secs(6);
/// How often a node renews its lease (and reports its load).
pub const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How long a room's holder read from the store is used before it is read again.
const KNOWN_FOR: Duration = Duration::from_secs(1);
/// A room placed on this node that its engine does not have open is released after this long (a
/// room is placed at the join answer, a little before its first client connects).
const RELEASE_AFTER: Duration = Duration::from_secs(60);
/// Media commands in one notification (each is at most a few hundred bytes).
const COMMANDS_PER_NOTICE: usize = 16;
/// Rooms are released every this many renewals.
const RELEASE_EVERY: u32 = 15;

/// Where rooms are, as this node reads and writes it.
pub struct Placement {
    store: Arc<SqlStore>,
    /// This node's signalling URL, its name among nodes.
    own: String,
    /// This process (a restart is a new instance of the same node).
    instance: String,
    /// Holders read lately: room -> (URL, when read).
    known: Mutex<HashMap<String, (String, Instant)>>,
    /// The wall clock leases are written and compared in.
    clock: Arc<dyn Clock>,
}

impl Placement {
    pub fn new(store: Arc<SqlStore>, own: String, instance: String, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            own,
            instance,
            known: Mutex::new(HashMap::new()),
            clock,
        }
    }

    /// Now, in ms since the epoch.
    fn now_ms(&self) -> i64 {
        self.clock.now().as_millis()
    }

    /// This node's signalling URL.
    pub fn own(&self) -> &str {
        &self.own
    }

    fn recall(&self, room: &str) -> Option<String> {
        let known = self.known.lock().expect("placement cache");
        known
            .get(room)
            .filter(|(_, at)| at.elapsed() < KNOWN_FOR)
            .map(|(url, _)| url.clone())
    }

    fn remember(&self, room: &str, url: &str) {
        let mut known = self.known.lock().expect("placement cache");
        if known.len() > 100_000 {
            known.retain(|_, (_, at)| at.elapsed() < KNOWN_FOR);
        }
        known.insert(room.to_owned(), (url.to_owned(), Instant::now()));
    }

    /// The signalling URL of the node holding `room`, placing it on the least loaded live node
    /// when it has no live holder.
    pub async fn url_for(&self, room: &str) -> Result<String, StoreError> {
        if let Some(url) = self.recall(room) {
            return Ok(url);
        }
        let url = self
            .store
            .place_media_room(
                room,
                Target::LeastLoaded {
                    fallback: &self.own,
                },
                self.now_ms(),
            )
            .await?;
        self.remember(room, &url);
        Ok(url)
    }

    /// A client reached this node to join `room`: `None` when the room is here (placed here now
    /// if it had no live holder), or the URL of the node holding it.
    pub async fn admit_here(&self, room: &str) -> Result<Option<String>, StoreError> {
        let url = self
            .store
            .place_media_room(room, Target::Here(&self.own), self.now_ms())
            .await?;
        self.remember(room, &url);
        Ok((url != self.own).then_some(url))
    }

    /// The URL of the live node holding `room` when that is another node; `None` when it is here
    /// or nowhere alive (commands are then carried out here, where they find nobody or the room).
    pub async fn elsewhere(&self, room: &str) -> Result<Option<String>, StoreError> {
        let url = match self.recall(room) {
            Some(url) => Some(url),
            None => match self.store.media_room_holder(room, self.now_ms()).await? {
                Some(holder) if holder.live => {
                    self.remember(room, &holder.rtc_url);
                    Some(holder.rtc_url)
                }
                _ => None,
            },
        };
        Ok(url.filter(|url| *url != self.own))
    }

    /// Sends `commands` to the node at `to`, in order (a notification carries at most
    /// [`COMMANDS_PER_NOTICE`], well under PostgreSQL's 8,000-byte payload).
    pub async fn forward(&self, to: &str, commands: &[MediaCommand]) -> Result<(), StoreError> {
        for chunk in commands.chunks(COMMANDS_PER_NOTICE) {
            let payload = serde_json::to_string(&Forward {
                to: to.to_owned(),
                commands: chunk.to_vec(),
            })
            .expect("commands serialize");
            self.store.notify_media(&payload).await?;
        }
        Ok(())
    }
}

/// Media commands sent to the node holding their room (the payload on `convene_media`).
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Forward {
    /// The receiving node's signalling URL; the others ignore it.
    pub to: String,
    pub commands: Vec<MediaCommand>,
}

impl Forward {
    /// The commands in `payload` when they are for the node at `own`.
    pub fn for_node(payload: &str, own: &str) -> Option<Vec<MediaCommand>> {
        match serde_json::from_str::<Forward>(payload) {
            Ok(forward) => (forward.to == own).then_some(forward.commands),
            Err(error) => {
                tracing::warn!(%error, "ignored a media notification convene cannot read");
                None
            }
        }
    }
}

#[async_trait]
impl MediaPlacement for Placement {
    async fn url(&self, room: &RoomName) -> Result<String, StoreError> {
        self.url_for(room.as_str()).await
    }
}

/// Keeps this node's lease until shutdown (then ends it, so its rooms move at their next join),
/// reporting the people connected to its engine, and releases the rooms placed here that the
/// engine no longer has.
pub async fn keep(placement: Arc<Placement>, control: SfuControl, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(RENEW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned = false;
    let mut renewals: u32 = 0;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let rooms = control.list_rooms().await.unwrap_or_default();
        let load: u64 = rooms.iter().map(|r| u64::from(r.num_participants)).sum();
        let now = placement.now_ms();
        match placement
            .store
            .renew_media_node(
                &placement.own,
                &placement.instance,
                load,
                now,
                now + LEASE.as_millis() as i64,
            )
            .await
        {
            Ok(Some(other)) if !warned => {
                warned = true;
                tracing::warn!(
                    url = placement.own,
                    other,
                    "another process held this node's media lease moments ago: unless this node was just restarted, two running nodes have the same public URL (CONVENE_PUBLIC_URL), and each needs its own"
                );
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot renew this node's media lease"),
        }
        renewals = renewals.wrapping_add(1);
        if renewals.is_multiple_of(RELEASE_EVERY) {
            let open: HashSet<String> = rooms.into_iter().map(|r| r.name).collect();
            release_closed(&placement, &open, now).await;
        }
    }
    if let Err(error) = placement
        .store
        .end_media_node(&placement.own, &placement.instance)
        .await
    {
        tracing::warn!(%error, "cannot end this node's media lease at shutdown");
    }
}

/// Releases the rooms placed here a while ago that the engine does not have open.
async fn release_closed(placement: &Placement, open: &HashSet<String>, now: i64) {
    let before = now - RELEASE_AFTER.as_millis() as i64;
    let placed = match placement.store.media_rooms_of(&placement.own, before).await {
        Ok(placed) => placed,
        Err(error) => {
            tracing::warn!(%error, "cannot read the rooms placed on this node");
            return;
        }
    };
    for room in placed.iter().filter(|room| !open.contains(*room)) {
        if let Err(error) = placement
            .store
            .release_media_room(room, &placement.own)
            .await
        {
            tracing::warn!(%error, room, "cannot release a media room");
        }
    }
}

#[cfg(test)]
mod tests {
    use convene_core::event::TrackSelector;
    use convene_core::ids::Identity;
    use convene_core::participant::Role;

    use super::*;

    #[test]
    fn forwarded_commands_read_back_only_on_their_node() {
        let room = RoomName::parse("1234567890").unwrap();
        let identity = Identity::parse("ann").unwrap();
        let commands = vec![
            MediaCommand::Disconnect {
                room: room.clone(),
                identity: identity.clone(),
            },
            MediaCommand::SetRole {
                room: room.clone(),
                identity: identity.clone(),
                role: Role::Viewer,
            },
            MediaCommand::Mute {
                room: room.clone(),
                identity,
                track: TrackSelector::Track("TR_abc".into()),
                muted: true,
            },
            MediaCommand::CloseRoom { room },
        ];
        let payload = serde_json::to_string(&Forward {
            to: "ws://b:7880".into(),
            commands: commands.clone(),
        })
        .unwrap();
        assert!(
            payload.len() < 8000,
            "a notification payload is under 8000 bytes"
        );
        assert_eq!(Forward::for_node(&payload, "ws://b:7880"), Some(commands));
        assert_eq!(Forward::for_node(&payload, "ws://a:7880"), None);
        assert_eq!(Forward::for_node("not json", "ws://b:7880"), None);
        // A command naming an invalid room is refused whole, never carried out in part.
        let bad = payload.replace("1234567890", &"x".repeat(129));
        assert_eq!(Forward::for_node(&bad, "ws://b:7880"), None);
    }
}
