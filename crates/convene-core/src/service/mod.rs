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
mod media;
mod meetings;
mod moderation;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use crate::access::{TokenRuns, check_token};
use crate::error::{DomainError, ErrorCode, StoreError};
use crate::ids::{Identity, InstanceId, MeetingId, MeetingIdDigits};
use crate::meeting::Meeting;
use crate::ops::{Actor, Change, Tx};
use crate::participant::{Participant, ParticipantState};
use crate::ports::{EventSink, MediaEngine, Store};
use crate::random::Entropy;
use crate::time::{Clock, Timestamp};

/// How many times an operation is retried when another node changed the meeting concurrently.
const MAX_ATTEMPTS: usize = 16;
/// Largest page of events or meetings one call returns.
pub const MAX_PAGE: u32 = 1000;

// The rule lives in `crate::access`; other crates use it from here too.
pub use crate::access::may_connect_media;
pub use crate::error::{Result, ServiceError};
pub use api_keys::ApiKeys;
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
    present: bool,
    joined_count: bool,
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

/// One async mutex per meeting on this node, so operations on one meeting do not race each other
/// here (across nodes, optimistic concurrency in the store decides).
#[derive(Default)]
struct LockTable(Mutex<HashMap<MeetingId, Weak<futures::lock::Mutex<()>>>>);

impl LockTable {
    fn get(&self, id: &MeetingId) -> Arc<futures::lock::Mutex<()>> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lock) = map.get(id).and_then(Weak::upgrade) {
            return lock;
        }
        if map.len() > 1024 {
            map.retain(|_, weak| weak.strong_count() > 0);
        }
        let lock = Arc::new(futures::lock::Mutex::new(()));
        map.insert(id.clone(), Arc::downgrade(&lock));
        lock
    }
}

/// The meeting service. Cheap to share behind an `Arc`.
pub struct Meetings {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    media: Arc<dyn MediaEngine>,
    sink: Arc<dyn EventSink>,
    locks: LockTable,
    default_digits: MeetingIdDigits,
    keys: ApiKeys,
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
            locks: LockTable::default(),
            default_digits,
        }
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

    async fn load(&self, meeting: &Meeting, caller: &Caller, needs: &Needs) -> Result<Loaded> {
        let id = &meeting.id;
        let (actor, subject) = match caller {
            Caller::Admin => (Actor::Admin, None),
            Caller::Participant {
                identity,
                instance,
                epoch,
            } => {
                let participant = self
                    .store
                    .participant(id, identity)
                    .await?
                    .ok_or_else(|| DomainError::code(ErrorCode::InvalidToken))?;
                check_token(meeting, &participant, instance, *epoch, needs.token_runs)?;
                (Actor::Participant(participant.clone()), Some(participant))
            }
        };
        let target = match &needs.target {
            Some(identity) => self.store.participant(id, identity).await?,
            None => None,
        };
        let waiting = if needs.waiting {
            self.store.waiting_identities(id).await?
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
        let joined_count = if needs.joined_count {
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

    async fn mutate<T>(
        &self,
        id: &MeetingId,
        caller: &Caller,
        needs: Needs,
        mut op: impl FnMut(&mut Tx, Loaded) -> Result<T, DomainError>,
    ) -> Result<(Meeting, T)> {
        let lock = self.locks.get(id);
        let _guard = lock.lock().await;
        for _ in 0..MAX_ATTEMPTS {
            let meeting = self.meeting(id).await?;
            let loaded = self.load(&meeting, caller, &needs).await?;
            let mut tx = Tx::new(meeting, self.now());
            let value = op(&mut tx, loaded)?;
            let unchanged = tx.meeting().clone();
            let Some(change) = tx.finish() else {
                return Ok((unchanged, value));
            };
            match self.store.commit(&change).await {
                Ok(()) => {
                    self.after_commit(&change).await;
                    return Ok((change.meeting, value));
                }
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(DomainError::code(ErrorCode::Busy).into())
    }

    async fn after_commit(&self, change: &Change) {
        self.sink.publish(&change.events);
        if !change.media.is_empty() {
            self.media.apply(&change.media).await;
        }
    }
}
