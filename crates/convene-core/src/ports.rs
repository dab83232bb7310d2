//! Ports: what the core needs from the outside world, as traits. The store, media engine and
//! event sink are implemented by other crates; tests use in-memory ones.

use std::collections::HashMap;

use async_trait::async_trait;
use futures::future::BoxFuture;

use crate::apikey::ApiKey;
use crate::change::{Change, MediaCommand};
use crate::event::Event;
use crate::ids::{Identity, MeetingId, RoomName};
use crate::lockout::{FailureRecord, FailureScope};
use crate::meeting::Meeting;
use crate::participant::{Participant, ParticipantState};
use crate::time::Timestamp;

/// The store's error lives with the other errors; re-exported where the port is.
pub use crate::error::StoreError;

/// How many people are in a meeting now, by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeopleCount {
    pub waiting: u64,
    pub admitted: u64,
    pub joined: u64,
}

/// What [`Store::submit`] calls with a change's outcome.
pub type Settled = Box<dyn FnOnce(&Change, &Result<(), StoreError>) + Send>;

/// Persistent state. Implementations: SQLite and PostgreSQL in `convene-store`. The webhook
/// outbox is part of it: its rows are written in the same transactions as the events.
#[async_trait]
pub trait Store: crate::webhook::WebhookStore + Send + Sync + 'static {
    /// Inserts a new meeting with its first events. `Duplicate("meeting_id" | "room_name")` on a clash.
    async fn create_meeting(&self, change: &Change) -> Result<(), StoreError>;
    /// Atomically: the meeting's `last_seq` must still be `change.expected_seq` (else `Conflict`);
    /// writes the meeting, upserts the participants, appends the events, and queues them for
    /// the active webhook endpoints (the deployment's and the meeting's own `webhook_url`).
    ///
    /// Queues the change behind every change submitted before it (the order is fixed when this
    /// returns, before the future is polled), so a caller may compute the next change of the
    /// meeting on top of this one while it is committed. Changes queued together are committed
    /// together (group commit: one transaction, one sync to disk). A change after one that failed
    /// fails too (`Conflict`: its version is not there), so it can be computed again.
    ///
    /// `settled` is called once with the outcome, in the order the changes were submitted, before
    /// the future resolves, and whether or not anyone still awaits the future: what must follow
    /// a commit in order (events to the sinks) goes there. It runs on the committer: it must be
    /// quick and must not block.
    fn submit(
        &self,
        change: Change,
        settled: Settled,
    ) -> BoxFuture<'static, Result<(), StoreError>>;
    /// [`Store::submit`], awaited, with nothing to do when settled.
    async fn commit(&self, change: &Change) -> Result<(), StoreError> {
        self.submit(change.clone(), Box::new(|_, _| {})).await
    }

    async fn meeting(&self, id: &MeetingId) -> Result<Option<Meeting>, StoreError>;
    async fn meeting_by_room(&self, room: &RoomName) -> Result<Option<Meeting>, StoreError>;
    /// Meetings ordered by id, after the given id (keyset pagination).
    async fn meetings(
        &self,
        after: Option<&MeetingId>,
        limit: u32,
    ) -> Result<Vec<Meeting>, StoreError>;
    /// Every meeting with a recording running, ordered by id (read at start, to find the
    /// recordings a stop cut short).
    async fn recording_meetings(&self) -> Result<Vec<Meeting>, StoreError>;

    async fn participant(
        &self,
        meeting: &MeetingId,
        identity: &Identity,
    ) -> Result<Option<Participant>, StoreError>;
    /// Participants ordered by identity, optionally only those in the given states.
    async fn participants(
        &self,
        meeting: &MeetingId,
        states: Option<&[ParticipantState]>,
    ) -> Result<Vec<Participant>, StoreError>;
    /// The identities of everyone waiting in the meeting, in byte order.
    async fn waiting_identities(&self, meeting: &MeetingId) -> Result<Vec<Identity>, StoreError>;
    async fn count_participants(
        &self,
        meeting: &MeetingId,
        states: &[ParticipantState],
    ) -> Result<u64, StoreError>;
    /// How many people wait, are admitted and have joined, per meeting, for the given meetings
    /// (one query); meetings with nobody present may be absent.
    async fn people_counts(
        &self,
        meetings: &[MeetingId],
    ) -> Result<HashMap<MeetingId, PeopleCount>, StoreError>;
    /// How many people wait in the meeting who entered the waiting room before `since` (by
    /// `updated_at`; ties by identity before `identity`): a waiting guest's place in the queue.
    async fn count_waiting_before(
        &self,
        meeting: &MeetingId,
        since: Timestamp,
        identity: &Identity,
    ) -> Result<u64, StoreError>;
    /// How many joined participants other than `except` are connected to media (the room's
    /// occupancy, for its capacity).
    async fn count_media_connected(
        &self,
        meeting: &MeetingId,
        except: &Identity,
    ) -> Result<u64, StoreError>;

    /// Events with `seq > after`, in order, at most `limit`.
    async fn events_after(
        &self,
        meeting: &MeetingId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError>;

    async fn insert_api_key(&self, key: &ApiKey) -> Result<(), StoreError>;
    async fn api_key(&self, id: &str) -> Result<Option<ApiKey>, StoreError>;
    async fn api_keys(&self) -> Result<Vec<ApiKey>, StoreError>;
    /// Marks a key revoked; `false` when no such key.
    async fn revoke_api_key(&self, id: &str, at: Timestamp) -> Result<bool, StoreError>;

    async fn failures(
        &self,
        scope: FailureScope,
        subject: &str,
    ) -> Result<FailureRecord, StoreError>;
    /// Counts one failure atomically; a count whose last failure is before `forget_before` restarts at 1.
    async fn record_failure(
        &self,
        scope: FailureScope,
        subject: &str,
        now: Timestamp,
        forget_before: Option<Timestamp>,
    ) -> Result<FailureRecord, StoreError>;
    async fn clear_failures(&self, scope: FailureScope, subject: &str) -> Result<(), StoreError>;
    /// Drops the `scope` counters whose last failure was before `last_before`; returns how many.
    async fn prune_failures(
        &self,
        scope: FailureScope,
        last_before: Timestamp,
    ) -> Result<u64, StoreError>;

    /// Marks a one-time nonce (a join link's) used: `true` the first time, `false` when it was
    /// used already. Atomic: of concurrent calls with one nonce, exactly one gets `true`, on every
    /// node. Used nonces whose `expires_at` is before `forget_before` are dropped.
    async fn use_nonce(
        &self,
        nonce: &str,
        expires_at: Timestamp,
        forget_before: Timestamp,
    ) -> Result<bool, StoreError>;
}

/// The media engine, as the core drives it (embedded SFU or external LiveKit).
#[async_trait]
pub trait MediaEngine: Send + Sync + 'static {
    /// Carries out commands after their change is committed. Failures are the engine's to log:
    /// the stored state is the truth, and admission re-checks it on every join.
    async fn apply(&self, commands: &[MediaCommand]);

    /// Whether it records meetings (`StartRecording`): when not, starting a recording and
    /// meetings that record themselves are refused as unavailable.
    fn records(&self) -> bool {
        true
    }
}

/// Receives committed events, in order per meeting (the realtime hub, webhooks outbox, ...).
pub trait EventSink: Send + Sync + 'static {
    fn publish(&self, events: &[Event]);
}

/// A media engine that does nothing (for deployments and tests without media).
pub struct NoMedia;

#[async_trait]
impl MediaEngine for NoMedia {
    async fn apply(&self, _commands: &[MediaCommand]) {}
}

/// An event sink that drops everything.
pub struct NoSink;

impl EventSink for NoSink {
    fn publish(&self, _events: &[Event]) {}
}
