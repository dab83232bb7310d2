//! The application service: loads what an operation needs from the [`Store`], runs the pure
//! operation from [`crate::ops`], commits the [`Change`] with optimistic concurrency, then hands
//! events to the [`EventSink`] and commands to the [`MediaEngine`]. Every front end (native API,
//! compatibility surfaces, media engine) calls this and nothing below it.
//!
//! One file per use case, each adding its calls to [`Meetings`]: `meetings.rs` (create, configure,
//! start, end, read), `entry.rs` (entering, the waiting room, joining, tokens and join links),
//! `guessing.rs` (the guessing limits around credentials and ids), `moderation.rs` (the stage and
//! moderation), `chat.rs`, `media.rs` (the media engine's admission and reports), `api_keys.rs`.
//! This file holds the service itself and its machinery: loading, the per-meeting lock, the
//! optimistic-concurrency loop and what follows a commit.

mod api_keys;
mod chat;
mod entry;
mod guessing;
mod hot;
mod media;
mod meetings;
mod moderation;
mod recordings;

use std::sync::Arc;

use crate::access::{TokenRuns, check_token};
use crate::error::{DomainError, ErrorCode, StoreError};
use crate::ids::{Identity, InstanceId, MeetingId, MeetingIdDigits, RoomName};
use crate::lockout::GuessLimits;
use crate::meeting::Meeting;
use crate::ops::{Actor, Change, Tx};
use crate::participant::{Participant, ParticipantState};
use crate::ports::{EventSink, MediaEngine, Settled, Store};
use crate::random::Entropy;
use crate::time::{Clock, Timestamp};

/// How many times an operation is retried when another node changed the meeting concurrently
/// (two nodes writing one meeting as fast as they can needed more than 16 in one test run of
/// four: see the stop notes of 2026-12-03).
const MAX_ATTEMPTS: usize = 64;
/// Largest page of events or meetings one call returns.
pub const MAX_PAGE: u32 = 1000;

// The rule lives in `crate::access`; other crates use it from here too.
pub use crate::access::may_connect_media;
pub use crate::error::{Result, ServiceError};
pub use api_keys::{ApiKeys, KEY_CACHE_TTL};
pub use media::{MediaAdmission, MediaReport};
pub use meetings::NewMeeting;

/// Who calls, as established by the transport layer (API key, or a verified participant token).
#[derive(Clone, Debug)]
pub enum Caller {
    Admin,
    /// A participant token: names the person, the run and the epoch it was issued for.
    Participant {
        identity: Identity,
        instance: InstanceId,
        epoch: u32,
    },
}

#[derive(Default)]
struct Needs {
    target: Option<Identity>,
    waiting: bool,
    /// `waiting`, only while the meeting is not live (a join that may start it).
    waiting_unless_live: bool,
    present: bool,
    joined_count: bool,
    /// `joined_count`, only when the meeting has a capacity.
    joined_count_if_capacity: bool,
    /// The runs a participant token may be of (a host may present a token of an ended run to
    /// start the next one).
    token_runs: TokenRuns,
}

struct Loaded {
    actor: Actor,
    subject: Option<Participant>,
    target: Option<Participant>,
    waiting: Vec<Identity>,
    present: Vec<Participant>,
    joined_count: u64,
}

/// The meeting service. Cheap to share behind an `Arc`.
pub struct Meetings {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    media: Arc<dyn MediaEngine>,
    sink: Arc<dyn EventSink>,
    slots: hot::Slots,
    default_digits: MeetingIdDigits,
    keys: ApiKeys,
    guess_limits: GuessLimits,
}

impl Meetings {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
        media: Arc<dyn MediaEngine>,
        sink: Arc<dyn EventSink>,
        default_digits: MeetingIdDigits,
    ) -> Self {
        Self {
            keys: ApiKeys::new(store.clone(), clock.clone(), entropy.clone()),
            store,
            clock,
            entropy,
            media,
            sink,
            slots: hot::Slots::default(),
            default_digits,
            guess_limits: GuessLimits::default(),
        }
    }

    /// The same service with these guessing limits (the defaults otherwise).
    pub fn with_guess_limits(mut self, limits: GuessLimits) -> Self {
        self.guess_limits = limits;
        self
    }

    /// A fresh generator for one operation (see [`crate::random`]).
    fn rng(&self) -> rand::rngs::StdRng {
        crate::random::rng(self.entropy.as_ref())
    }

    /// The API keys, on the same store.
    pub fn keys(&self) -> &ApiKeys {
        &self.keys
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn default_digits(&self) -> MeetingIdDigits {
        self.default_digits
    }

    async fn on_target<T>(
        &self,
        id: &MeetingId,
        caller: &Caller,
        target: &Identity,
        op: impl Fn(&mut Tx, &Actor, Participant) -> Result<T, DomainError>,
    ) -> Result<T> {
        let needs = Needs {
            target: Some(target.clone()),
            ..Needs::default()
        };
        self.mutate(id, caller, needs, |tx, loaded| {
            let target = loaded
                .target
                .ok_or_else(|| DomainError::code(ErrorCode::ParticipantNotFound))?;
            op(tx, &loaded.actor, target)
        })
        .await
        .map(|(_, value)| value)
    }

    /// The meeting to compute a change on: the view ahead, else the durable view. When the
    /// durable view does not hold everyone in the meeting, the meeting and all its people are
    /// read (once per meeting in use: afterwards a person not held is not in the meeting, and
    /// looking someone up costs no query), unless the meeting is too large to hold.
    async fn meeting_ahead(&self, slot: &hot::Slot, id: &MeetingId) -> Result<Meeting> {
        let read = if slot.roster_missing() {
            let version = slot.version();
            let meeting = self
                .store
                .meeting(id)
                .await?
                .ok_or_else(|| DomainError::code(ErrorCode::MeetingNotFound))?;
            // After a failed commit, read as little as possible: another node is writing this
            // meeting, and a long read only widens the window for the next conflict.
            let count = if slot.careful() {
                None
            } else {
                Some(
                    self.store
                        .count_participants(id, &ParticipantState::ALL)
                        .await?,
                )
            };
            match count {
                Some(people) if people <= hot::MAX_ROSTER => {
                    let people = self.store.participants(id, None).await?;
                    slot.fill_roster(&meeting, people);
                }
                // Careful (not counted), or counted too large: not counted again until this
                // view is dropped.
                _ => slot.fill_meeting(&meeting, version, count.is_some()),
            }
            Some(meeting)
        } else {
            None
        };
        match slot.meeting_ahead().or(read) {
            Some(meeting) => Ok(meeting),
            None => Err(DomainError::code(ErrorCode::MeetingNotFound).into()),
        }
    }

    /// A person to compute a change on: the views, else the store.
    async fn person_ahead(
        &self,
        slot: &hot::Slot,
        id: &MeetingId,
        identity: &Identity,
    ) -> Result<Option<Participant>> {
        loop {
            match slot.person_ahead(identity) {
                hot::Lookup::Found(person) => return Ok(Some(person)),
                hot::Lookup::Absent => return Ok(None),
                hot::Lookup::Drain => slot.drained().await,
                hot::Lookup::Read(version) => {
                    let person = self.store.participant(id, identity).await?;
                    if let Some(person) = &person {
                        slot.fill_person(person, version);
                    }
                    return Ok(person);
                }
            }
        }
    }

    async fn load(
        &self,
        slot: &hot::Slot,
        meeting: &Meeting,
        caller: &Caller,
        needs: &Needs,
    ) -> Result<Loaded> {
        let id = &meeting.id;
        let (actor, subject) = match caller {
            Caller::Admin => (Actor::Admin, None),
            Caller::Participant {
                identity,
                instance,
                epoch,
            } => {
                let participant = self
                    .person_ahead(slot, id, identity)
                    .await?
                    .ok_or_else(|| DomainError::code(ErrorCode::InvalidToken))?;
                check_token(meeting, &participant, instance, *epoch, needs.token_runs)?;
                (Actor::Participant(participant.clone()), Some(participant))
            }
        };
        let target = match &needs.target {
            Some(identity) => self.person_ahead(slot, id, identity).await?,
            None => None,
        };
        let waiting = needs.waiting || (needs.waiting_unless_live && !meeting.is_live());
        let joined_count = needs.joined_count
            || (needs.joined_count_if_capacity && meeting.settings.capacity.is_some());
        if waiting || needs.present || joined_count {
            // Lists and counts come from the store: nothing may be on its way there.
            slot.drained().await;
        }
        let waiting = if waiting {
            match slot.waiting(meeting.last_seq) {
                Some(held) => held,
                None => self.store.waiting_identities(id).await?,
            }
        } else {
            Vec::new()
        };
        let present = if needs.present {
            self.store
                .participants(
                    id,
                    Some(&[
                        ParticipantState::Waiting,
                        ParticipantState::Admitted,
                        ParticipantState::Joined,
                    ]),
                )
                .await?
        } else {
            Vec::new()
        };
        let joined_count = if joined_count {
            self.store
                .count_participants(id, &[ParticipantState::Joined])
                .await?
        } else {
            0
        };
        Ok(Loaded {
            actor,
            subject,
            target,
            waiting,
            present,
            joined_count,
        })
    }

    /// Loads what the operation needs, computes its change and commits it (see `hot.rs`: the
    /// change is computed on the changes still being committed, and retried when one fails).
    async fn mutate<T>(
        &self,
        id: &MeetingId,
        caller: &Caller,
        needs: Needs,
        mut op: impl FnMut(&mut Tx, Loaded) -> Result<T, DomainError>,
    ) -> Result<(Meeting, T)> {
        let slot = self.slots.get(id);
        for _ in 0..MAX_ATTEMPTS {
            let computing = slot.compute.lock().await;
            if slot.careful() {
                // After a failed commit: no pipelining until one succeeds again.
                slot.drained().await;
            }
            let meeting = self.meeting_ahead(&slot, id).await?;
            let loaded = self.load(&slot, &meeting, caller, &needs).await?;
            let mut tx = Tx::new(meeting, self.now());
            let value = op(&mut tx, loaded)?;
            let unchanged = tx.meeting().clone();
            let Some(mut change) = tx.finish() else {
                return Ok((unchanged, value));
            };
            // Once settled (in commit order, even if this caller goes away), the views follow
            // and the events go to the sinks.
            let settled: Settled = {
                let (slot, sink) = (slot.clone(), self.sink.clone());
                Box::new(move |change: &Change, result: &Result<(), StoreError>| {
                    slot.settle(change, result);
                    if result.is_ok() {
                        sink.publish(&change.events);
                    }
                })
            };
            // Queued in the views first: the store may settle the change before `submit` returns.
            let mut turn = slot.queue(&change);
            // The store takes the change; the caller keeps what it needs after (the store does
            // not read the media commands).
            let (meeting, media) = (change.meeting.clone(), std::mem::take(&mut change.media));
            let durable = self.store.submit(change, settled);
            drop(computing);
            match durable.await {
                Ok(()) => {
                    if !media.is_empty() {
                        turn.wait().await;
                        self.media.apply(&media).await;
                    }
                    return Ok((meeting, value));
                }
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(DomainError::code(ErrorCode::Busy).into())
    }

    /// Another node committed the meeting up to `seq` (a cross-node notification): what this
    /// node holds of it is dropped if older.
    pub fn observe_commit(&self, id: &MeetingId, seq: u64) {
        self.slots.observe(id, seq);
    }

    /// Commits of other nodes may have been missed (the notification connection was lost):
    /// everything this node holds of meetings is dropped.
    pub fn forget_held(&self) {
        self.slots.forget_all();
    }

    /// A meeting as committed: held, else read (and held).
    async fn committed_meeting(&self, id: &MeetingId) -> Result<Option<Meeting>> {
        if let Some(meeting) = self.slots.peek(id).and_then(|s| s.durable_meeting()) {
            return Ok(Some(meeting));
        }
        let Some(slot) = self.slots.peek(id) else {
            let changes = self.slots.changes();
            let meeting = self.store.meeting(id).await?;
            if let Some(meeting) = &meeting {
                // A meeting that exists gets a slot; an unknown id does not.
                self.slots.fill_new(meeting, changes);
            }
            return Ok(meeting);
        };
        let version = slot.version();
        let meeting = self.store.meeting(id).await?;
        if let Some(meeting) = &meeting {
            slot.fill_meeting(meeting, version, false);
        }
        Ok(meeting)
    }

    /// A room's meeting as committed: through the room's last known meeting when its view is
    /// held and still has that room name, else read.
    async fn committed_meeting_by_room(&self, room: &RoomName) -> Result<Option<Meeting>> {
        if let Some(id) = self.slots.room_hint(room)
            && let Some(meeting) = self.slots.peek(&id).and_then(|s| s.durable_meeting())
            && &meeting.room_name == room
        {
            return Ok(Some(meeting));
        }
        let changes = self.slots.changes();
        let meeting = self.store.meeting_by_room(room).await?;
        if let Some(meeting) = &meeting {
            self.slots.remember_room(room, &meeting.id);
            self.slots.fill_new(meeting, changes);
        }
        Ok(meeting)
    }

    /// A person as committed: held, else read (and held).
    async fn committed_person(
        &self,
        id: &MeetingId,
        identity: &Identity,
    ) -> Result<Option<Participant>> {
        let slot = self.slots.peek(id);
        if let Some(person) = slot.as_ref().and_then(|s| s.durable_person(identity)) {
            return Ok(Some(person));
        }
        let version = slot.as_ref().map(|s| s.version());
        let person = self.store.participant(id, identity).await?;
        if let (Some(slot), Some(version), Some(person)) = (slot, version, &person) {
            slot.fill_person(person, version);
        }
        Ok(person)
    }

    async fn after_commit(&self, change: &Change) {
        self.sink.publish(&change.events);
        if !change.media.is_empty() {
            self.media.apply(&change.media).await;
        }
    }
}
