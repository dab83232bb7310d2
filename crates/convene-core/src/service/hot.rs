//! What this node holds of a meeting between queries, so that the operations on one meeting are
//! not one round of reads and one durable commit each, one after the other.
//!
//! Each meeting in use has a [`Slot`]:
//!
//! - **the durable view**: the meeting and the people read or written here, as committed. Pure
//!   reads (a meeting's settings, a person's role and epoch for a token check) answer from it. It
//!   is updated by this node's commits, in commit order, and dropped whenever it may be behind:
//!   a commit that failed, a commit of another node (the cross-node notifications call
//!   [`Slots::observe`]), the notification connection lost ([`Slots::forget_all`]).
//! - **the view ahead**: the meeting and the people as the changes queued for the store and not
//!   yet durable leave them. The next operation on the meeting is computed on it, so operations
//!   on one meeting are pipelined: the store commits them in groups ([`crate::ports::Store::submit`]),
//!   and a change computed on one that fails fails too (its version never appears) and is
//!   computed again. A person leaves it once the change that wrote them last is durable (they
//!   move to the durable view), so under a steady stream of changes it holds only what is on its
//!   way, not everyone written since the queue was last empty.
//! - **the turn**: what follows a commit (events to the sink, commands to the media engine) is
//!   done in the order the changes were queued, whatever order their callers wake up in.
//!
//! The durable view is bounded: past [`MAX_HELD`] people it lets go of those no longer in the
//! meeting (left, removed, banned), who are read from the store if they come back; a meeting too
//! large to hold whole ([`MAX_ROSTER`] people ever) is counted once per view, and then each
//! person it needs is read and held.
//!
//! An operation that reads lists (everyone waiting, everyone present, a count) waits until
//! nothing is queued and reads the store, as does a read of a person not in the views while a
//! queued change admits everyone waiting (that change moves people the views do not hold).
//! Everyone waiting comes from the durable view instead when it holds everyone in the meeting:
//! a host's join that admits 10,000 guests does not read 10,000 rows first.
//!
//! When another node writes the meeting (a commit here failed, or another node's commit was
//! notified), the slot turns *careful*: the next operation waits until nothing is queued and reads
//! only the meeting and the people it needs, so a retry is not computed on a pipeline of changes
//! that will fail, and no whole-meeting read widens the window for the next conflict. The first
//! change of this node that commits ends it.
//!
//! Correctness never rests on the views: every change still carries the version it was computed
//! from, and the store refuses it if the meeting moved (another node, a stale view).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::channel::oneshot;

use crate::change::Change;
use crate::error::StoreError;
use crate::ids::{Identity, MeetingId, RoomName};
use crate::meeting::Meeting;
use crate::participant::{Participant, ParticipantState};

/// Meetings whose slots are kept; past this, idle slots are dropped (their views are a cache).
const MAX_SLOTS: usize = 8192;
/// People ever in a meeting (in any state) up to which a durable view holds them all; a larger
/// meeting's people are read one by one.
pub(super) const MAX_ROSTER: u64 = 20_000;
/// People a durable view holds before it lets go of those no longer in the meeting (left,
/// removed, banned): a meeting that runs for days with people coming and going does not grow
/// its view with everyone who ever came. Those let go are read from the store if they return.
const MAX_HELD: usize = 50_000;

/// The slots of the meetings in use on this node, and the rooms' meetings seen.
#[derive(Default)]
pub(super) struct Slots {
    slots: Mutex<HashMap<MeetingId, Arc<Slot>>>,
    /// A room name's meeting as last read. A hint only: the meeting is read (from its view) and
    /// its room name checked before the hint is used.
    rooms: Mutex<HashMap<RoomName, MeetingId>>,
    /// Bumped whenever any view changes: a read made before, of a meeting not known then, may
    /// not fill a view.
    changes: Arc<AtomicU64>,
}

impl Slots {
    fn map(&self) -> MutexGuard<'_, HashMap<MeetingId, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn rooms(&self) -> MutexGuard<'_, HashMap<RoomName, MeetingId>> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The count of view changes so far, to pass to [`Slots::fill_new`].
    pub(super) fn changes(&self) -> u64 {
        self.changes.load(Ordering::SeqCst)
    }

    /// A meeting read from the store when [`Slots::changes`] was `changes`, before its slot was
    /// known: held if no view changed since.
    pub(super) fn fill_new(&self, meeting: &Meeting, changes: u64) {
        let slot = self.get(&meeting.id);
        let version = slot.version();
        if self.changes() == changes {
            slot.fill_meeting(meeting, version, false);
        }
    }

    /// The meeting last seen with this room name.
    pub(super) fn room_hint(&self, room: &RoomName) -> Option<MeetingId> {
        self.rooms().get(room).cloned()
    }

    pub(super) fn remember_room(&self, room: &RoomName, id: &MeetingId) {
        let mut rooms = self.rooms();
        if rooms.len() >= MAX_SLOTS {
            rooms.clear();
        }
        rooms.insert(room.clone(), id.clone());
    }

    /// The meeting's slot, made when missing.
    pub(super) fn get(&self, id: &MeetingId) -> Arc<Slot> {
        let mut map = self.map();
        if let Some(slot) = map.get(id) {
            return slot.clone();
        }
        if map.len() >= MAX_SLOTS {
            map.retain(|_, slot| Arc::strong_count(slot) > 1 || slot.busy());
        }
        let slot = Arc::new(Slot {
            compute: futures::lock::Mutex::new(()),
            state: Mutex::default(),
            changes: self.changes.clone(),
        });
        map.insert(id.clone(), slot.clone());
        slot
    }

    /// The meeting's slot if there is one.
    pub(super) fn peek(&self, id: &MeetingId) -> Option<Arc<Slot>> {
        self.map().get(id).cloned()
    }

    /// A node committed the meeting up to `seq`: a durable view behind it is dropped, unless the
    /// commit may be this node's own (its notification can arrive before the commit settles
    /// here). Another node's commit that this node has not seen has a `seq` past every change
    /// this node queued, or those changes fail and drop the views anyway.
    pub(super) fn observe(&self, id: &MeetingId, seq: u64) {
        if let Some(slot) = self.peek(id) {
            let mut state = slot.state();
            state.known_seq = state.known_seq.max(seq);
            if seq > state.submitted_seq
                && state
                    .durable
                    .as_ref()
                    .is_some_and(|view| view.meeting.last_seq < seq)
            {
                // Another node writes this meeting: read little, pipeline nothing, until a
                // change of this node's commits again.
                state.careful = true;
                state.durable = None;
                state.bump(&slot.changes);
            }
        }
    }

    /// Every durable view is dropped (commits of other nodes may have been missed).
    pub(super) fn forget_all(&self) {
        for slot in self.map().values() {
            let mut state = slot.state();
            state.durable = None;
            state.bump(&slot.changes);
        }
    }
}

/// One meeting's views and queue.
pub(super) struct Slot {
    /// Held while an operation loads and computes its change (one at a time per meeting here;
    /// across nodes, the store's version check decides).
    pub(super) compute: futures::lock::Mutex<()>,
    state: Mutex<State>,
    changes: Arc<AtomicU64>,
}

#[derive(Default)]
struct State {
    durable: Option<View>,
    ahead: Option<Ahead>,
    /// Changes queued and not settled.
    queued: usize,
    /// The highest `last_seq` of a change queued here since the views were last dropped.
    submitted_seq: u64,
    /// The highest `last_seq` known committed: settled here or notified from any node.
    known_seq: u64,
    /// The last change settled failed (another node wrote the meeting, most likely): the next
    /// operation waits until nothing is queued and computes on what is committed, instead of on
    /// a pipeline of changes that fail one after the other.
    careful: bool,
    /// Bumped whenever the durable view changes: a store read started before may not fill it.
    version: u64,
    /// The previous queued change's turn: resolved (or dropped) once it is done.
    turn: Option<oneshot::Receiver<()>>,
    /// Told when nothing is queued any more.
    drained: Vec<oneshot::Sender<()>>,
}

impl State {
    fn bump(&mut self, changes: &AtomicU64) {
        self.version += 1;
        changes.fetch_add(1, Ordering::SeqCst);
    }
}

/// People by identity, each behind a pointer: a crowd's view grows by doubling its table, and
/// moving 16-byte entries instead of the people themselves keeps that pause short (a room of
/// 130,000 people moved some 40 MB at once, and a join waited 30-110 ms for it).
type People = HashMap<Identity, Box<Participant>>;

struct View {
    meeting: Meeting,
    people: People,
    roster: Roster,
    /// Past this many people, [`View::bound`] lets go of those not in the meeting.
    bound_at: usize,
}

/// Whom a durable view's `people` hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Roster {
    /// Everyone in the meeting (read whole, then kept by the commits): someone not held is not
    /// in the meeting.
    Whole,
    /// Some of them: the next change on the meeting reads them all, if there are not too many.
    Part,
    /// Some of them, in a meeting too large to hold whole (or whose view let go of those who
    /// left): each person not held is read from the store, and the meeting is not counted again.
    Large,
}

impl View {
    fn new(meeting: &Meeting, people: People, roster: Roster) -> Self {
        Self {
            meeting: meeting.clone(),
            people,
            roster,
            bound_at: MAX_HELD,
        }
    }

    /// Past `bound_at` people, lets go of those not in the meeting; then waits until the view
    /// has doubled (or is back past `limit`) before looking again, so that a meeting where
    /// everyone stays is not searched at every commit.
    fn bound(&mut self, limit: usize) {
        if self.people.len() <= self.bound_at {
            return;
        }
        let before = self.people.len();
        self.people.retain(|_, person| person.state.is_present());
        if self.people.len() < before {
            self.people.shrink_to_fit();
            if self.roster == Roster::Whole {
                self.roster = Roster::Large;
            }
        }
        self.bound_at = limit.max(self.people.len().saturating_mul(2));
    }
}

struct Ahead {
    meeting: Meeting,
    /// Those the queued changes wrote, with the `last_seq` of the last change to write each
    /// (every change carries an event, so no two queued changes share one): once that change is
    /// durable, the durable view holds the same and the entry goes.
    people: HashMap<Identity, Queued>,
    /// A queued change admits everyone waiting.
    admits: bool,
}

struct Queued {
    seq: u64,
    person: Box<Participant>,
}

impl Ahead {
    /// The person as the change with `last_seq` `seq` wrote them, taken out if no later queued
    /// change wrote them since (that change being durable, the durable view holds the same).
    fn take_settled(&mut self, identity: &Identity, seq: u64) -> Option<Box<Participant>> {
        match self.people.get(identity) {
            Some(queued) if queued.seq == seq => self.people.remove(identity).map(|q| q.person),
            _ => None,
        }
    }
}

/// Where to find a person for an operation.
pub(super) enum Lookup {
    Found(Participant),
    /// Not in the meeting (the view holds everyone).
    Absent,
    /// Not held: read the store, then [`Slot::fill_person`] with this version.
    Read(u64),
    /// Not held, and a queued change may move them: wait until nothing is queued.
    Drain,
}

/// Someone waiting is admitted to the meeting's current run, as the store does it; `true` if
/// they were waiting.
fn admit(person: &mut Participant, meeting: &Meeting) -> bool {
    if person.state != ParticipantState::Waiting {
        return false;
    }
    person.state = ParticipantState::Admitted;
    person.admitted_in = Some(meeting.run.instance_id.clone());
    person.updated_at = meeting.updated_at;
    true
}

impl Slot {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn busy(&self) -> bool {
        self.state().queued > 0
    }

    /// The last change settled failed: compute the next one on what is committed.
    pub(super) fn careful(&self) -> bool {
        self.state().careful
    }

    pub(super) fn version(&self) -> u64 {
        self.state().version
    }

    /// The meeting as committed, if held.
    pub(super) fn durable_meeting(&self) -> Option<Meeting> {
        self.state().durable.as_ref().map(|v| v.meeting.clone())
    }

    /// A person as committed, if held.
    pub(super) fn durable_person(&self, identity: &Identity) -> Option<Participant> {
        self.state()
            .durable
            .as_ref()
            .and_then(|v| v.people.get(identity).map(|p| Participant::clone(p)))
    }

    /// The meeting to compute the next change on, if held.
    pub(super) fn meeting_ahead(&self) -> Option<Meeting> {
        let state = self.state();
        match &state.ahead {
            Some(ahead) => Some(ahead.meeting.clone()),
            None => state.durable.as_ref().map(|v| v.meeting.clone()),
        }
    }

    pub(super) fn person_ahead(&self, identity: &Identity) -> Lookup {
        let state = self.state();
        if let Some(ahead) = &state.ahead {
            if let Some(queued) = ahead.people.get(identity) {
                return Lookup::Found(Participant::clone(&queued.person));
            }
            if ahead.admits {
                // Not written by a queued change: as the durable view holds them, unless the
                // queued admission moves them (or the view does not say).
                let held = state.durable.as_ref().and_then(|v| v.people.get(identity));
                return match held {
                    Some(person) if person.state != ParticipantState::Waiting => {
                        Lookup::Found(Participant::clone(person))
                    }
                    _ => Lookup::Drain,
                };
            }
        }
        match &state.durable {
            Some(view) => match view.people.get(identity) {
                Some(person) => Lookup::Found(Participant::clone(person)),
                None if view.roster == Roster::Whole => Lookup::Absent,
                None => Lookup::Read(state.version),
            },
            None => Lookup::Read(state.version),
        }
    }

    /// A meeting read from the store when `version` was current. `large`: it was counted too
    /// large to hold everyone in it (else its people are read whole at the next change).
    pub(super) fn fill_meeting(&self, meeting: &Meeting, version: u64, large: bool) {
        let mut state = self.state();
        if state.version != version {
            return;
        }
        let roster = if large { Roster::Large } else { Roster::Part };
        match &mut state.durable {
            Some(view) if view.meeting.last_seq == meeting.last_seq => {
                if view.roster == Roster::Part {
                    view.roster = roster;
                }
            }
            durable => *durable = Some(View::new(meeting, HashMap::new(), roster)),
        }
    }

    /// The durable view holds neither everyone in the meeting nor a meeting known too large to:
    /// read everyone (or count them) before computing on it.
    pub(super) fn roster_missing(&self) -> bool {
        self.state()
            .durable
            .as_ref()
            .is_none_or(|view| view.roster == Roster::Part)
    }

    /// The meeting and everyone in it, read from the store (the meeting first). Held unless the
    /// read is behind a commit known here (settled here, or notified from another node): judged
    /// by sequence number rather than by the version, so that under a steady stream of commits a
    /// read still fills the view (the commits settled after it chain on it or are in it).
    pub(super) fn fill_roster(&self, meeting: &Meeting, people: Vec<Participant>) {
        let mut state = self.state();
        if meeting.last_seq < state.known_seq
            || state.durable.as_ref().is_some_and(|view| {
                view.roster == Roster::Whole && view.meeting.last_seq >= meeting.last_seq
            })
        {
            return;
        }
        // Person reads started before this one must not fill it.
        state.bump(&self.changes);
        let people = people
            .into_iter()
            .map(|p| (p.identity.clone(), Box::new(p)))
            .collect();
        state.durable = Some(View::new(meeting, people, Roster::Whole));
    }

    /// A person read from the store when `version` was current.
    pub(super) fn fill_person(&self, person: &Participant, version: u64) {
        let mut state = self.state();
        if state.version != version {
            return;
        }
        if let Some(view) = &mut state.durable {
            view.people
                .insert(person.identity.clone(), Box::new(person.clone()));
            view.bound(MAX_HELD);
        }
    }

    /// Everyone waiting, in byte order (as the store gives them), from the durable view: when it
    /// holds everyone in the meeting, at `last_seq`, and nothing is queued. `None`: read them
    /// from the store.
    pub(super) fn waiting(&self, last_seq: u64) -> Option<Vec<Identity>> {
        let mut waiting: Vec<Identity> = {
            let state = self.state();
            let view = state.durable.as_ref().filter(|view| {
                view.roster == Roster::Whole
                    && view.meeting.last_seq == last_seq
                    && state.queued == 0
            })?;
            view.people
                .values()
                .filter(|person| person.state == ParticipantState::Waiting)
                .map(|person| person.identity.clone())
                .collect()
        };
        // Sorted outside the lock: the committer settles through it.
        waiting.sort_unstable();
        Some(waiting)
    }

    /// Resolves once nothing is queued.
    pub(super) async fn drained(&self) {
        let waiting = {
            let mut state = self.state();
            if state.queued == 0 {
                return;
            }
            let (told, waiting) = oneshot::channel();
            state.drained.push(told);
            waiting
        };
        let _ = waiting.await;
    }

    /// `change` was submitted to the store (in the same critical section as the computation, so
    /// in order): the view ahead moves, and the change takes its turn.
    pub(super) fn queue(&self, change: &Change) -> Turn {
        let mut state = self.state();
        let mut ahead = state.ahead.take().unwrap_or_else(|| Ahead {
            meeting: change.meeting.clone(),
            people: HashMap::new(),
            admits: false,
        });
        let seq = change.meeting.last_seq;
        if change.admit_waiting.is_some() {
            for queued in ahead.people.values_mut() {
                if admit(&mut queued.person, &change.meeting) {
                    queued.seq = seq;
                }
            }
            ahead.admits = true;
        }
        ahead.meeting = change.meeting.clone();
        for person in &change.participants {
            let person = Box::new(person.clone());
            ahead
                .people
                .insert(person.identity.clone(), Queued { seq, person });
        }
        state.ahead = Some(ahead);
        state.queued += 1;
        state.submitted_seq = state.submitted_seq.max(change.meeting.last_seq);
        let (next, turn) = oneshot::channel();
        let previous = state.turn.replace(turn);
        Turn {
            previous,
            _next: next,
        }
    }

    /// How the store answered a queued change (called by the store in the order the changes
    /// were queued, whether or not their callers still wait): the durable view follows a
    /// commit, anything else drops the views.
    pub(super) fn settle(&self, change: &Change, result: &Result<(), StoreError>) {
        let mut state = self.state();
        state.bump(&self.changes);
        match result {
            Ok(()) => {
                let seq = change.meeting.last_seq;
                state.careful = false;
                state.known_seq = state.known_seq.max(seq);
                // Those this change wrote last leave the view ahead: durable now, they are
                // what the durable view holds (moved there, not copied again).
                // One for each of the change's participants, in order.
                let settled: Vec<Option<Box<Participant>>> = change
                    .participants
                    .iter()
                    .map(|p| state.ahead.as_mut()?.take_settled(&p.identity, seq))
                    .collect();
                state.durable = match state.durable.take() {
                    Some(mut view) if Some(view.meeting.last_seq) == change.expected_seq => {
                        if change.admit_waiting.is_some() {
                            for person in view.people.values_mut() {
                                admit(person, &change.meeting);
                            }
                        }
                        view.meeting = change.meeting.clone();
                        for (person, held) in change.participants.iter().zip(settled) {
                            let held = held.unwrap_or_else(|| Box::new(person.clone()));
                            view.people.insert(person.identity.clone(), held);
                        }
                        view.bound(MAX_HELD);
                        Some(view)
                    }
                    // Read from the store after this commit: it holds the commit already.
                    Some(view) if view.meeting.last_seq >= seq => Some(view),
                    _ => None,
                };
            }
            Err(_) => {
                state.durable = None;
                state.ahead = None;
                state.submitted_seq = 0;
                state.careful = true;
            }
        }
        state.queued = state.queued.saturating_sub(1);
        if state.queued == 0 {
            state.ahead = None;
            for told in state.drained.drain(..) {
                let _ = told.send(());
            }
        }
    }
}

/// A queued change's place in its meeting's order, for what its caller does after the commit
/// (commands to the media engine). Dropped, it hands the turn to the next change.
pub(super) struct Turn {
    previous: Option<oneshot::Receiver<()>>,
    _next: oneshot::Sender<()>,
}

impl Turn {
    /// Waits until the callers of the changes queued before this one are done (or gone).
    pub(super) async fn wait(&mut self) {
        if let Some(previous) = self.previous.take() {
            let _ = previous.await;
        }
    }
}

#[cfg(test)]
#[path = "hot_tests.rs"]
mod tests;
