//! The realtime hub: an [`EventSink`] that fans each meeting's committed events out to the live
//! subscribers of that meeting (SSE and WebSocket streams), without ever blocking the committer.
//!
//! Invariants:
//! - `publish` takes only short, non-async locks and uses `try_send`: a subscriber whose bounded
//!   queue is full is dropped on the spot (it reconnects with `after=N`; the log is in the store).
//! - Routing is by audience through an index (per class and per identity): an event about one
//!   guest costs work for the hosts and that guest only, not for every other waiting client.
//! - Each event is serialized once, however many subscribers receive it. (The one exception is
//!   rendered by each receiving stream: a guest let in with many others sees its own
//!   `participant.admitted`, see `Event::view_for`.)
//! - Each meeting's events are delivered once and in order, with no gap: the hub keeps the last
//!   sequence number it delivered per meeting and takes only the next one. Its first comes from
//!   the first subscriber's read of the store ([`Subscription::known`]) or the first publish.
//!   On one node commits are published in order (under the meeting's lock); with several nodes
//!   on PostgreSQL another node's commits arrive from the store (the binary's follower, which
//!   reads after [`Hub::position`]), and a local commit that comes before them is left out here
//!   and read back with them.
//! - A subscriber's class follows its own events (admitted, sent back, role changed, ...) in the
//!   order they are published; the stream task re-checks it against the store at its seam
//!   ([`Subscription::settle`]) and re-reads the store when the hub had it wrong.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use convene_core::event::{Audience, Event, EventKind, ViewerClass};
use convene_core::ids::{Identity, InstanceId, MeetingId};
use convene_core::ports::EventSink;
use convene_core::standing::{self, Movers, Standing};
use rustc_hash::{FxHashMap, FxHashSet};
use smallvec::SmallVec;
use tokio::sync::mpsc;

use crate::realtime::direct::{Conn, Inject, text_frame_header};
use crate::realtime::render::Published;

/// What applying an event to a subscriber's [`Standing`] means for its stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Unchanged,
    Changed,
    /// The viewer's token no longer stands (removed, denied, sent back, banned, a new run).
    Close(CloseReason),
}

impl Step {
    /// Applies one event to a copy of `standing` ([`Standing::apply`], the core's rule), and
    /// moves `standing` only when the stream goes on.
    pub fn apply(
        standing: &mut Standing,
        me: Option<&Identity>,
        run: Option<&InstanceId>,
        kind: &EventKind,
    ) -> Self {
        Self::of(standing, |next| next.apply(me, run, kind))
    }

    /// [`Step::apply`] for a subscriber found through a bulk admission's list
    /// ([`Standing::apply_listed`]).
    fn apply_listed(
        standing: &mut Standing,
        me: Option<&Identity>,
        run: Option<&InstanceId>,
        kind: &EventKind,
    ) -> Self {
        Self::of(standing, |next| next.apply_listed(me, run, kind, true))
    }

    fn of(standing: &mut Standing, apply: impl FnOnce(&mut Standing) -> standing::Step) -> Self {
        let mut next = *standing;
        match apply(&mut next) {
            standing::Step::Unchanged => Self::Unchanged,
            standing::Step::Changed => {
                *standing = next;
                Self::Changed
            }
            standing::Step::Revoked => Self::Close(CloseReason::Revoked),
            standing::Step::NewRun => Self::Close(CloseReason::NewRun),
        }
    }
}

/// Why a stream ends on the server's initiative.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The server is shutting down.
    Shutdown,
    /// The store could not be read; reconnect with `after`.
    Unavailable,
    /// Removed, denied, sent back or banned: the token was revoked.
    Revoked,
    /// The meeting started a new run; tokens of the earlier run no longer work.
    NewRun,
    /// The subscriber's queue overflowed (it did not read fast enough); reconnect with `after`.
    Overflow,
    /// The token the stream was opened with expired; reconnect with a fresh one.
    Expired,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shutdown => "server shutting down",
            Self::Unavailable => "events unavailable: reconnect with after=<last seq>",
            Self::Revoked => "token revoked",
            Self::NewRun => "the meeting started a new run",
            Self::Overflow => "too slow: reconnect with after=<last seq>",
            Self::Expired => "token expired",
        }
    }
}

/// Queue bounds per subscriber, by class at subscription (hosts see every guest's admission at
/// once, so their bursts are larger).
#[derive(Clone, Copy, Debug)]
pub struct HubConfig {
    pub waiting_queue: usize,
    pub member_queue: usize,
    pub host_queue: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            waiting_queue: 64,
            member_queue: 1024,
            host_queue: 16 * 1024,
        }
    }
}

/// The realtime hub. Cheap to clone; one per process.
#[derive(Clone, Default)]
pub struct Hub {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    rooms: Mutex<HashMap<MeetingId, Arc<Mutex<Room>>>>,
    next_key: AtomicU64,
    config: HubConfig,
    closed: AtomicBool,
    /// The second writer of large publishes ([`Writes`]), started by the first (`None`: it could
    /// not start; the publishing thread writes alone). It stops with the hub.
    helper: OnceLock<Option<Helper>>,
}

/// Where a publish hands its [`Writes`] to the hub's helper thread.
type Helper = std::sync::mpsc::Sender<Arc<Writes>>;

/// A stream whose staged events must go through its subscriber's queue instead, with them.
type Back = (Key, Vec<Arc<Published>>);

/// Below this many streams to write, a publish's own thread writes them all (waking the helper
/// would cost more than it saves).
const SPLIT_AT: usize = 64;
/// Streams a writer takes at a time.
const CHUNK: usize = 32;

/// A publish's writes, shared by its thread and the hub's helper thread so that both cores send:
/// each takes chunks of streams from a shared counter, so a helper late to get a core leaves
/// more to the publishing thread, which then waits only for a chunk the helper is still writing.
/// Each stream is written once, by one of them; streams are independent of each other.
struct Writes {
    staged: Vec<(Key, Arc<Direct>)>,
    /// The first stream no writer has taken.
    next: AtomicUsize,
    /// Streams written.
    done: AtomicUsize,
    /// What must go through a subscriber's queue instead ([`Direct::flush`]).
    back: Mutex<Vec<Back>>,
}

/// Writes each stream's staged events; those that must go through the subscriber's queue
/// instead go into `back`.
fn flush_each(staged: &[(Key, Arc<Direct>)], buf: &mut Vec<u8>, back: &mut Vec<Back>) {
    for (key, direct) in staged {
        let events = direct.flush(buf);
        if !events.is_empty() {
            back.push((*key, events));
        }
    }
}

impl Writes {
    /// Takes chunks until none is left, writing each stream's staged frames.
    fn take_chunks(&self, buf: &mut Vec<u8>) {
        let len = self.staged.len();
        loop {
            let from = self.next.fetch_add(CHUNK, Ordering::AcqRel);
            if from >= len {
                return;
            }
            let to = (from + CHUNK).min(len);
            let mut back = Vec::new();
            flush_each(&self.staged[from..to], buf, &mut back);
            if !back.is_empty() {
                lock(&self.back).append(&mut back);
            }
            self.done.fetch_add(to - from, Ordering::AcqRel);
        }
    }
}

impl Inner {
    /// The helper thread's queue, the thread started at the first call.
    fn helper(&self) -> Option<&Helper> {
        self.helper
            .get_or_init(|| {
                let (jobs, receiver) = std::sync::mpsc::channel::<Arc<Writes>>();
                let started = std::thread::Builder::new()
                    .name("convene-hub-writer".into())
                    .spawn(move || {
                        let mut buf = Vec::new();
                        for writes in receiver {
                            writes.take_chunks(&mut buf);
                        }
                    });
                match started {
                    Ok(_) => Some(jobs),
                    Err(e) => {
                        tracing::warn!(error = %e, "the hub's second writer could not start");
                        None
                    }
                }
            })
            .as_ref()
    }
}

type Key = u64;

struct Sub {
    tx: mpsc::Sender<Arc<Published>>,
    /// A WebSocket stream the hub may write into itself while it is idle.
    direct: Option<Arc<Direct>>,
    identity: Option<Identity>,
    run: Option<InstanceId>,
    standing: Standing,
    /// Sequence number of the last own event the hub applied to `standing`.
    last_own_seq: u64,
}

/// Events a stream holds for a host's join (`meeting.started`, the admission, the host's
/// `participant.joined`) and one more, inside its [`Direct`]: a bulk admission stages and writes
/// them for each of thousands of guests, and reaches each guest's in the lines it already loaded.
type Held<T> = SmallVec<[T; 4]>;

/// What the hub wrote into a stream since its task last took them, in order.
pub type Written = Held<Arc<Published>>;

/// Events the hub wrote straight into an idle stream's connection, for its task to take in (the
/// task is not woken for them; see [`crate::realtime::direct`]).
#[derive(Default)]
struct Inbox {
    /// The stream has nothing queued, unsent or being replayed: the hub may write its next
    /// events itself. Set by the stream task, cleared by the hub when it queues an event.
    open: bool,
    /// The highest sequence number the stream has handled or the hub has taken to write.
    after: u64,
    /// What the hub wrote, in order, for the task to fold into its standing.
    written: Written,
    /// Taken to write at the end of the current publish, in order (one write for all of a
    /// commit's events).
    staged: Held<(Arc<Published>, Form)>,
}

/// How a staged event is written.
#[derive(Clone, Copy)]
enum Form {
    /// Its shared JSON.
    Shared,
    /// Its own form, around the receiver's identity ([`Published::own_parts`]).
    Own,
    /// Not at all: the stream would not show it (it still folds it).
    Hidden,
}

/// Events written into one stream before its task must be woken to take them in.
const INBOX_LIMIT: usize = 32;

struct Direct {
    conn: Arc<Conn>,
    /// Kept here, not behind a pointer of its own, with what it holds ([`Held`]): a bulk
    /// admission stages three events for each of thousands of guests, then writes them, and
    /// each guest's state is in one place.
    inbox: Mutex<Inbox>,
    /// The subscriber's identity as a JSON string, for its own form of an event.
    name: Option<Box<str>>,
}

impl Direct {
    /// Takes the event to write at the end of the publish if the stream is idle, deciding as the
    /// stream would (same filter, same form). `listed`: the subscriber was routed as one of the
    /// people a bulk admission lists, so it sees the event in its own form (the list is not
    /// searched again). `Ok(true)`: the first staged in this publish.
    /// `Err`: the stream task must get this event through its queue, after the events returned
    /// (staged earlier in this publish, now not to be written here).
    fn stage(
        &self,
        published: &Arc<Published>,
        class: ViewerClass,
        identity: Option<&Identity>,
        listed: bool,
    ) -> Result<bool, Vec<Arc<Published>>> {
        let mut inbox = lock(&self.inbox);
        let event = &published.event;
        // A listed viewer (never a host) is one `visible_to` and `has_own_view` say yes to.
        let form = if !inbox.open
            || event.seq <= inbox.after
            || inbox.written.len() + inbox.staged.len() >= INBOX_LIMIT
        {
            None
        } else if !(listed || event.visible_to(class, identity)) {
            Some(Form::Hidden)
        } else if listed || event.has_own_view(class, identity) {
            // Without the hub's rendering, the stream renders this form itself.
            (published.own_parts().is_some() && self.name.is_some()).then_some(Form::Own)
        } else {
            Some(Form::Shared)
        };
        let Some(form) = form else {
            inbox.open = false;
            return Err(inbox.staged.drain(..).map(|(p, _)| p).collect());
        };
        inbox.after = event.seq;
        inbox.staged.push((published.clone(), form));
        Ok(inbox.staged.len() == 1)
    }

    /// Writes what was staged in one go. Returns what the task must get through its queue
    /// instead, in order: everything if the connection was busy, or the last event when part of
    /// the write is left for the task to flush (it wakes, takes the events in as written, skips
    /// that one in its queue).
    fn flush(&self, buf: &mut Vec<u8>) -> Vec<Arc<Published>> {
        let mut guard = lock(&self.inbox);
        let inbox = &mut *guard;
        if inbox.staged.is_empty() {
            return Vec::new();
        }
        buf.clear();
        for (published, form) in &inbox.staged {
            match form {
                Form::Hidden => {}
                Form::Shared => frame(buf, &[published.json.as_str()]),
                Form::Own => {
                    if let (Some((before, after)), Some(name)) = (published.own_parts(), &self.name)
                    {
                        frame(buf, &[before, name, after]);
                    }
                }
            }
        }
        let outcome = if buf.is_empty() {
            Inject::Whole
        } else {
            self.conn.inject(buf)
        };
        // Drained, not taken: the staging buffer keeps its room for the next publish.
        let staged = inbox.staged.drain(..).map(|(p, _)| p);
        match outcome {
            Inject::Whole => {
                inbox.written.extend(staged);
                Vec::new()
            }
            Inject::Partial => {
                inbox.written.extend(staged);
                inbox.open = false;
                inbox.written.last().cloned().into_iter().collect()
            }
            Inject::Busy => {
                let back = staged.collect();
                inbox.open = false;
                back
            }
        }
    }
}

/// Gives a subscriber the event: staged to write at the end of the publish while its stream is
/// idle (the stream added to `staged` with its first), else through its queue after what it had
/// staged. `listed`: see [`Direct::stage`]. `false`: its queue overflowed, drop it.
fn offer(
    key: Key,
    sub: &Sub,
    published: &Arc<Published>,
    listed: bool,
    staged: &mut Vec<(Key, Arc<Direct>)>,
) -> bool {
    let earlier = match &sub.direct {
        Some(direct) => {
            let (class, identity) = (sub.standing.class(), sub.identity.as_ref());
            match direct.stage(published, class, identity, listed) {
                Ok(first) => {
                    if first {
                        staged.push((key, direct.clone()));
                    }
                    return true;
                }
                Err(earlier) => earlier,
            }
        }
        None => Vec::new(),
    };
    Room::queue(sub, earlier) && sub.tx.try_send(published.clone()).is_ok()
}

/// Appends a WebSocket text frame of the concatenated `parts`.
fn frame(buf: &mut Vec<u8>, parts: &[&str]) {
    let len = parts.iter().map(|p| p.len()).sum();
    let (header, used) = text_frame_header(len);
    buf.extend_from_slice(&header[..used]);
    for part in parts {
        buf.extend_from_slice(part.as_bytes());
    }
}

/// One meeting's subscribers, indexed by class and by identity.
#[derive(Default)]
struct Room {
    // Keys are the hub's own counter, so a fast hash is safe here; identities (chosen by
    // clients) keep the standard, flood-resistant one.
    subs: FxHashMap<Key, Sub>,
    hosts: FxHashSet<Key>,
    members: FxHashSet<Key>,
    waiting: FxHashSet<Key>,
    by_identity: HashMap<Identity, Vec<Key>>,
    /// Reused buffer of recipients.
    scratch: Vec<Key>,
    /// Everyone a bulk admission lists who has a stream here, hosts too, found by [`Room::route`]
    /// for [`Room::follow`] (which then need not look the identities up again), and the sequence
    /// number of that admission.
    listed: Vec<Key>,
    listed_of: Option<u64>,
    /// Subscribers with events staged to write at the end of the current publish, with their
    /// stream (so the write does not look each up again).
    staged: Vec<(Key, Arc<Direct>)>,
    /// Reused buffer for those writes.
    frames: Vec<u8>,
    /// The last sequence number delivered (`None`: not known yet).
    published: Option<u64>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// What [`Subscription::settle`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settle {
    /// The hub routed by the right standing.
    Settled,
    /// The hub had another standing (it is fixed now): events after `as_of` may have been
    /// routed wrongly, so read them from the store.
    Corrected,
    /// The hub has applied a later own event; settle again after processing it.
    Later,
}

impl Room {
    fn class_set(&mut self, class: ViewerClass) -> &mut FxHashSet<Key> {
        match class {
            ViewerClass::Host => &mut self.hosts,
            ViewerClass::Member => &mut self.members,
            ViewerClass::Waiting => &mut self.waiting,
        }
    }

    fn insert(&mut self, key: Key, sub: Sub) {
        self.class_set(sub.standing.class()).insert(key);
        if let Some(identity) = &sub.identity {
            self.by_identity
                .entry(identity.clone())
                .or_default()
                .push(key);
        }
        self.subs.insert(key, sub);
    }

    fn remove(&mut self, key: Key) {
        // What was staged for it goes out first (e.g. the event that ends its stream).
        if let Some(sub) = self.subs.get(&key) {
            Self::flush_one(sub, &mut self.frames);
        }
        let Some(sub) = self.subs.remove(&key) else {
            return;
        };
        self.class_set(sub.standing.class()).remove(&key);
        if let Some(identity) = &sub.identity
            && let Some(keys) = self.by_identity.get_mut(identity)
        {
            keys.retain(|k| *k != key);
            if keys.is_empty() {
                self.by_identity.remove(identity);
            }
        }
    }

    fn set_standing(&mut self, key: Key, standing: Standing) {
        let Some(sub) = self.subs.get_mut(&key) else {
            return;
        };
        let (old, new) = (sub.standing.class(), standing.class());
        sub.standing = standing;
        if old != new {
            self.class_set(old).remove(&key);
            self.class_set(new).insert(key);
        }
    }

    /// Writes a subscriber's staged events; `false` when its queue overflowed taking those
    /// that could not be written.
    fn flush_one(sub: &Sub, frames: &mut Vec<u8>) -> bool {
        let Some(direct) = &sub.direct else {
            return true;
        };
        Self::queue(sub, direct.flush(frames))
    }

    /// Queues what the hub could not write for the stream; `false` when its queue overflowed.
    fn queue(sub: &Sub, back: Vec<Arc<Published>>) -> bool {
        back.into_iter().all(|p| sub.tx.try_send(p).is_ok())
    }

    /// Writes every staged event (the end of a publish): on this thread, or given the `helper`
    /// (a large publish), on two ([`Writes`]). Earlier tries spawned a thread per publish, which
    /// each publish then waited for; a helper kept running took a 1,000-guest admission's writes
    /// from 11.3 to 7.7 ms (docs/benchmarks.md, "Join storms").
    fn flush_staged(&mut self, helper: Option<&Helper>) {
        let back = match helper {
            Some(helper) => {
                let writes = Arc::new(Writes {
                    staged: std::mem::take(&mut self.staged),
                    next: AtomicUsize::new(0),
                    done: AtomicUsize::new(0),
                    back: Mutex::new(Vec::new()),
                });
                // If the helper is gone, this thread takes every chunk.
                let _ = helper.send(writes.clone());
                writes.take_chunks(&mut self.frames);
                while writes.done.load(Ordering::Acquire) < writes.staged.len() {
                    std::thread::yield_now();
                }
                std::mem::take(&mut *lock(&writes.back))
            }
            None => {
                let mut back = Vec::new();
                flush_each(&self.staged, &mut self.frames, &mut back);
                self.staged.clear();
                back
            }
        };
        let mut dropped = Vec::new();
        for (key, events) in back {
            // Looked up only when something must go through the queue (a subscriber removed
            // since staging had what it staged written when it was removed).
            if let Some(sub) = self.subs.get(&key)
                && !Self::queue(sub, events)
            {
                dropped.push(key);
            }
        }
        for key in dropped {
            tracing::debug!("dropped a realtime subscriber whose queue was full");
            self.remove(key);
        }
    }

    fn identity_keys(&self, identity: &Identity) -> &[Key] {
        self.by_identity
            .get(identity)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The subscribers an event goes to, into `scratch`. Those from the returned index on are
    /// not hosts and were found through a bulk admission's list.
    fn route(&mut self, event: &Event) -> usize {
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        let mut listed_from = usize::MAX;
        match &event.audience {
            // Not routed through keys: `deliver` goes over the subscribers themselves.
            Audience::Everyone => {}
            Audience::Members => out.extend(self.hosts.iter().chain(self.members.iter())),
            Audience::Hosts => out.extend(self.hosts.iter()),
            Audience::Subject { identity } => {
                out.extend(self.hosts.iter());
                out.extend(
                    self.identity_keys(identity)
                        .iter()
                        .filter(|k| !self.hosts.contains(k)),
                );
            }
            Audience::MembersAndSubject { identity } => {
                out.extend(self.hosts.iter().chain(self.members.iter()));
                out.extend(
                    self.identity_keys(identity)
                        .iter()
                        .filter(|k| self.waiting.contains(k)),
                );
            }
            Audience::Pair { from, to } => {
                out.extend(self.identity_keys(from));
                if to != from {
                    out.extend(self.identity_keys(to));
                }
            }
            Audience::Admitted => {
                out.extend(self.hosts.iter());
                listed_from = out.len();
                if let EventKind::ParticipantsAdmitted { identities, .. } = &event.kind {
                    let mut listed = std::mem::take(&mut self.listed);
                    listed.clear();
                    for identity in identities {
                        listed.extend_from_slice(self.identity_keys(identity));
                    }
                    out.extend(listed.iter().filter(|k| !self.hosts.contains(k)));
                    self.listed = listed;
                    self.listed_of = Some(event.seq);
                }
            }
        }
        self.scratch = out;
        listed_from
    }

    /// Whether `seq` is the next event to deliver (and then it is taken as delivered).
    fn next_in_order(&mut self, seq: u64) -> bool {
        match self.published {
            Some(last) if seq <= last => false,
            Some(last) if seq > last + 1 => {
                tracing::debug!(
                    last,
                    seq,
                    "an event ahead of a gap waits for the store read"
                );
                false
            }
            _ => {
                self.published = Some(seq);
                true
            }
        }
    }

    fn deliver(&mut self, event: &Event) {
        if !self.next_in_order(event.seq) {
            return;
        }
        let mut dropped = Vec::new();
        if matches!(event.audience, Audience::Everyone) {
            // Every subscriber, in one pass over them rather than a lookup for each.
            if !self.subs.is_empty() {
                let published = Arc::new(Published::new(event));
                for (key, sub) in &self.subs {
                    if !offer(*key, sub, &published, false, &mut self.staged) {
                        dropped.push(*key);
                    }
                }
            }
        } else {
            let listed_from = self.route(event);
            let recipients = std::mem::take(&mut self.scratch);
            if !recipients.is_empty() {
                let published = Arc::new(Published::new(event));
                for (index, key) in recipients.iter().enumerate() {
                    if let Some(sub) = self.subs.get(key)
                        && !offer(
                            *key,
                            sub,
                            &published,
                            index >= listed_from,
                            &mut self.staged,
                        )
                    {
                        dropped.push(*key);
                    }
                }
            }
            self.scratch = recipients;
        }
        for key in dropped {
            tracing::debug!(meeting = %event.meeting_id, "dropped a realtime subscriber whose queue was full");
            self.remove(key);
        }
        self.follow(event);
    }

    /// Updates the standing of the subscribers the event is about.
    fn follow(&mut self, event: &Event) {
        let movers = Standing::moved_by(&event.kind);
        let listed = matches!(movers, Movers::Listed(_));
        let affected: Vec<Key> = match movers {
            Movers::One(identity) => self.identity_keys(identity).to_vec(),
            // Found by `route` when it routed this very event.
            Movers::Listed(_) if self.listed_of == Some(event.seq) => {
                self.listed_of = None;
                std::mem::take(&mut self.listed)
            }
            Movers::Listed(identities) => identities
                .iter()
                .flat_map(|identity| self.identity_keys(identity).iter().copied())
                .collect(),
            Movers::Everyone => return self.follow_everyone(event),
            Movers::Nobody => return,
        };
        for &key in &affected {
            let Some(sub) = self.subs.get_mut(&key) else {
                continue;
            };
            let mut standing = sub.standing;
            let (me, run) = (sub.identity.as_ref(), sub.run.as_ref());
            // Found through the event's list: the list need not be searched again.
            let step = if listed {
                Step::apply_listed(&mut standing, me, run, &event.kind)
            } else {
                Step::apply(&mut standing, me, run, &event.kind)
            };
            match step {
                Step::Unchanged => sub.last_own_seq = event.seq,
                Step::Changed => {
                    sub.last_own_seq = event.seq;
                    self.set_standing(key, standing);
                }
                // The stream task sees the same event in its queue and closes itself; the hub
                // stops routing to it now.
                Step::Close(_) => self.remove(key),
            }
        }
        // Its room is kept for the next admission.
        if affected.capacity() > self.listed.capacity() {
            self.listed = affected;
        }
    }

    /// [`Room::follow`] for an event that may move everyone (a meeting started or ended): one
    /// pass over the subscribers instead of a lookup for each, the moves applied after it.
    fn follow_everyone(&mut self, event: &Event) {
        let mut moved = Vec::new();
        for (key, sub) in &mut self.subs {
            let Some(me) = &sub.identity else {
                continue;
            };
            let mut standing = sub.standing;
            let step = Step::apply(&mut standing, Some(me), sub.run.as_ref(), &event.kind);
            if step != Step::Unchanged {
                moved.push((*key, step, standing));
            }
            if !matches!(step, Step::Close(_)) {
                sub.last_own_seq = event.seq;
            }
        }
        for (key, step, standing) in moved {
            match step {
                Step::Close(_) => self.remove(key),
                _ => self.set_standing(key, standing),
            }
        }
    }
}

impl Hub {
    pub fn new(config: HubConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                ..Inner::default()
            }),
        }
    }

    fn room(&self, meeting: &MeetingId) -> Option<Arc<Mutex<Room>>> {
        lock(&self.inner.rooms).get(meeting).cloned()
    }

    /// Registers a subscriber with the standing known at authentication; it receives every event
    /// published from now on that this standing may see. Given its connection (a WebSocket
    /// stream's), the hub writes into it directly while the stream is idle ([`Inbox`]).
    pub fn subscribe(
        &self,
        meeting: &MeetingId,
        identity: Option<Identity>,
        run: Option<InstanceId>,
        standing: Standing,
        conn: Option<Arc<Conn>>,
    ) -> Subscription {
        let capacity = match standing.class() {
            ViewerClass::Host => self.inner.config.host_queue,
            ViewerClass::Member => self.inner.config.member_queue,
            ViewerClass::Waiting => self.inner.config.waiting_queue,
        };
        let (tx, rx) = mpsc::channel(capacity.max(1));
        if self.is_closed() {
            // Shutting down: a subscription whose queue is already closed.
            drop(tx);
            return Subscription {
                hub: self.clone(),
                meeting: meeting.clone(),
                key: u64::MAX,
                rx,
                direct: None,
            };
        }
        let key = self.inner.next_key.fetch_add(1, Ordering::Relaxed);
        let direct = conn.map(|conn| {
            Arc::new(Direct {
                conn,
                inbox: Mutex::default(),
                name: identity
                    .as_ref()
                    .and_then(|i| serde_json::to_string(i.as_str()).ok())
                    .map(String::into_boxed_str),
            })
        });
        let sub = Sub {
            tx,
            direct: direct.clone(),
            identity,
            run,
            standing,
            last_own_seq: 0,
        };
        // Holding the map lock while inserting: `unsubscribe` removes empty rooms under it too.
        let mut rooms = lock(&self.inner.rooms);
        let room = rooms.entry(meeting.clone()).or_default().clone();
        lock(&room).insert(key, sub);
        drop(rooms);
        Subscription {
            hub: self.clone(),
            meeting: meeting.clone(),
            key,
            rx,
            direct,
        }
    }

    fn unsubscribe(&self, meeting: &MeetingId, key: Key) {
        let mut rooms = lock(&self.inner.rooms);
        let Some(room) = rooms.get(meeting).cloned() else {
            return;
        };
        let mut guard = lock(&room);
        guard.remove(key);
        if guard.subs.is_empty() {
            drop(guard);
            rooms.remove(meeting);
        }
    }

    /// Ends every stream (server shutdown): each sees its queue close after what it holds.
    pub fn close_all(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        let rooms = std::mem::take(&mut *lock(&self.inner.rooms));
        for room in rooms.values() {
            let mut room = lock(room);
            room.subs.clear();
            room.hosts.clear();
            room.members.clear();
            room.waiting.clear();
            room.by_identity.clear();
        }
    }

    /// Whether [`Hub::close_all`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst)
    }

    /// Live subscribers of every meeting (the `/metrics` gauge): each room is locked in turn,
    /// briefly, at scrape time only.
    pub fn total_subscribers(&self) -> usize {
        let rooms: Vec<Arc<Mutex<Room>>> = lock(&self.inner.rooms).values().cloned().collect();
        rooms.iter().map(|room| lock(room).subs.len()).sum()
    }

    /// The last sequence number delivered for a meeting this node has subscribers for: what a
    /// reader of the store publishes after. `None`: no subscriber here, or not known yet (the
    /// subscribers are reading the store themselves).
    pub fn position(&self, meeting: &MeetingId) -> Option<u64> {
        self.room(meeting).and_then(|room| lock(&room).published)
    }

    /// Every meeting with subscribers here and a known [`Hub::position`].
    pub fn watched(&self) -> Vec<(MeetingId, u64)> {
        let rooms: Vec<_> = lock(&self.inner.rooms)
            .iter()
            .map(|(id, room)| (id.clone(), room.clone()))
            .collect();
        rooms
            .into_iter()
            .filter_map(|(id, room)| lock(&room).published.map(|seq| (id, seq)))
            .collect()
    }

    /// Live subscribers of a meeting (for tests and metrics).
    pub fn subscribers(&self, meeting: &MeetingId) -> usize {
        self.room(meeting)
            .map(|room| lock(&room).subs.len())
            .unwrap_or(0)
    }
}

impl EventSink for Hub {
    fn publish(&self, events: &[Event]) {
        let mut current: Option<(MeetingId, Arc<Mutex<Room>>)> = None;
        let mut started = Instant::now();
        for (index, event) in events.iter().enumerate() {
            if current
                .as_ref()
                .is_none_or(|(id, _)| id != &event.meeting_id)
            {
                current = self
                    .room(&event.meeting_id)
                    .map(|room| (event.meeting_id.clone(), room));
            }
            if let Some((_, room)) = &current {
                let mut room = lock(room);
                room.deliver(event);
                // A commit's events for one meeting come together: one write per stream for
                // all of them, after the last.
                if events
                    .get(index + 1)
                    .is_none_or(|next| next.meeting_id != event.meeting_id)
                {
                    let (routed, streams) = (Instant::now(), room.staged.len());
                    let helper = if streams >= SPLIT_AT {
                        self.inner.helper()
                    } else {
                        None
                    };
                    room.flush_staged(helper);
                    // Where a large fan-out's time goes (docs/benchmarks.md, "Join storms").
                    tracing::debug!(
                        meeting = %event.meeting_id,
                        last_seq = event.seq,
                        streams,
                        routed_us = (routed - started).as_micros(),
                        written_us = routed.elapsed().as_micros(),
                        "published"
                    );
                    started = Instant::now();
                }
            }
        }
    }
}

/// A live subscription; dropping it unsubscribes.
pub struct Subscription {
    hub: Hub,
    meeting: MeetingId,
    key: Key,
    pub rx: mpsc::Receiver<Arc<Published>>,
    /// Shared with the hub's subscriber when the hub may write into the stream itself.
    direct: Option<Arc<Direct>>,
}

impl Subscription {
    /// The subscriber read the store up to `seq` after subscribing: the hub, if it has no
    /// position for the meeting yet, delivers from `seq + 1` on (every event up to `seq` is
    /// committed, so a subscriber reading the store after this call has it).
    pub fn known(&self, seq: u64) {
        if let Some(room) = self.hub.room(&self.meeting) {
            let mut room = lock(&room);
            room.published.get_or_insert(seq);
        }
    }

    /// The events the hub wrote into the connection since the last call, in order.
    pub fn take_written(&self) -> Written {
        self.direct
            .as_ref()
            .map(|direct| std::mem::take(&mut lock(&direct.inbox).written))
            .unwrap_or_default()
    }

    /// The stream has sent and flushed everything up to `after` and holds nothing else: the
    /// hub may write its next events itself, unless one is already queued.
    pub fn idle(&self, after: u64) {
        if let Some(direct) = &self.direct {
            let mut inbox = lock(&direct.inbox);
            if self.rx.is_empty() && inbox.written.is_empty() {
                inbox.open = true;
                inbox.after = inbox.after.max(after);
            }
        }
    }

    /// Tells the hub the subscriber's exact standing as of sequence number `as_of` (worked out
    /// from the store and the events since). See [`Settle`].
    pub fn settle(&self, standing: Standing, as_of: u64) -> Settle {
        let Some(room) = self.hub.room(&self.meeting) else {
            return Settle::Settled;
        };
        let mut room = lock(&room);
        let Some(sub) = room.subs.get(&self.key) else {
            return Settle::Settled;
        };
        if sub.last_own_seq > as_of {
            return Settle::Later;
        }
        if sub.standing == standing {
            return Settle::Settled;
        }
        room.set_standing(self.key, standing);
        Settle::Corrected
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(&self.meeting, self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::realtime::fixtures::{admitted, event, id, meeting, run};
    use convene_core::meeting::MeetingStatus;
    use convene_core::participant::{ParticipantState, Role};

    fn waiting() -> Standing {
        Standing::Participant {
            role: Role::Speaker,
            state: ParticipantState::Waiting,
        }
    }

    /// A bulk admission of `names`.
    fn let_in(names: &[&str]) -> EventKind {
        EventKind::ParticipantsAdmitted {
            identities: names.iter().map(|n| id(n)).collect(),
            room_name: "r".into(),
            status: MeetingStatus::Live,
        }
    }

    /// An event for members only.
    fn hand_raised(seq: u64, r: &InstanceId) -> Event {
        let kind = EventKind::HandRaised {
            identity: id("dave"),
        };
        event(seq, r, Audience::Members, kind)
    }

    /// An admitted guest's standing.
    fn member() -> Standing {
        Standing::Participant {
            role: Role::Speaker,
            state: ParticipantState::Admitted,
        }
    }

    /// A waiting guest's subscription, written into directly when given its connection.
    fn guest(hub: &Hub, name: &str, run: &InstanceId, conn: Option<Arc<Conn>>) -> Subscription {
        hub.subscribe(
            &meeting(),
            Some(id(name)),
            Some(run.clone()),
            waiting(),
            conn,
        )
    }

    fn drain(sub: &mut Subscription) -> Vec<u64> {
        let mut seqs = Vec::new();
        while let Ok(p) = sub.rx.try_recv() {
            seqs.push(p.event.seq);
        }
        seqs
    }

    #[test]
    fn admission_reaches_the_guest_and_hosts_only_and_makes_the_guest_a_member() {
        let hub = Hub::default();
        let r = run();
        let mut alice = guest(&hub, "alice", &r, None);
        let mut bob = guest(&hub, "bob", &r, None);
        let mut admin = hub.subscribe(&meeting(), None, None, Standing::Admin, None);
        hub.publish(&[admitted(1, &r, "alice")]);
        hub.publish(&[event(
            2,
            &r,
            Audience::Members,
            EventKind::HandRaised {
                identity: id("carol"),
            },
        )]);
        assert_eq!(drain(&mut alice), [1, 2]);
        assert_eq!(drain(&mut bob), Vec::<u64>::new());
        assert_eq!(drain(&mut admin), [1, 2]);
    }

    /// Reads one unmasked text frame (as the hub writes them) from the client's socket.
    async fn read_frame(client: &mut tokio::net::TcpStream) -> String {
        use tokio::io::AsyncReadExt;
        let mut head = [0u8; 2];
        client.read_exact(&mut head).await.unwrap();
        assert_eq!(head[0], 0x81, "a final text frame");
        let len = match head[1] {
            126 => client.read_u16().await.unwrap() as usize,
            127 => client.read_u64().await.unwrap() as usize,
            n => n as usize,
        };
        let mut body = vec![0u8; len];
        client.read_exact(&mut body).await.unwrap();
        String::from_utf8(body).unwrap()
    }

    #[tokio::test]
    async fn an_idle_stream_gets_its_events_written_by_the_hub_as_it_would_send_them() {
        let hub = Hub::default();
        let r = run();
        let (io, mut client) = crate::realtime::direct::pair().await;
        let (other_io, _other_client) = crate::realtime::direct::pair().await;
        let quoted = r#"al"ice"#;
        let mut alice = guest(&hub, quoted, &r, Some(io.conn()));
        let mut bob = guest(&hub, "bob", &r, Some(other_io.conn()));
        let started = event(
            1,
            &r,
            Audience::Everyone,
            EventKind::MeetingStarted {
                instance_id: r.clone(),
                run: 1,
                room_name: "r".into(),
            },
        );
        // Not idle yet: queued for the stream task.
        hub.publish(std::slice::from_ref(&started));
        assert_eq!(drain(&mut alice), [1]);
        alice.idle(1);
        let bulk = event(2, &r, Audience::Admitted, let_in(&[quoted, "bob"]));
        hub.publish(std::slice::from_ref(&bulk));
        // Written, not queued: the task is not woken, and takes it in later.
        assert_eq!(drain(&mut alice), Vec::<u64>::new());
        let written: Vec<u64> = alice.take_written().iter().map(|p| p.event.seq).collect();
        assert_eq!(written, [2]);
        let expected = Published::new(&bulk).own_view(&id(quoted)).unwrap();
        assert_eq!(read_frame(&mut client).await, expected.as_str());
        // Bob's stream never said it was idle: his copy is queued.
        assert_eq!(drain(&mut bob), [1, 2]);
        // The hub moved Alice along (now a member): a members' event is written too, whole.
        let raised = event(
            3,
            &r,
            Audience::Members,
            EventKind::HandRaised {
                identity: id("bob"),
            },
        );
        hub.publish(std::slice::from_ref(&raised));
        assert_eq!(
            read_frame(&mut client).await,
            Published::new(&raised).json.as_str()
        );
        // An event delivered already is not delivered again.
        alice.take_written();
        hub.publish(&[raised]);
        assert_eq!(drain(&mut alice), Vec::<u64>::new());
        assert!(alice.take_written().is_empty());
        let member = Standing::Participant {
            role: Role::Speaker,
            state: ParticipantState::Admitted,
        };
        assert_eq!(alice.settle(member, 3), Settle::Settled);
    }

    #[tokio::test]
    async fn a_bulk_admission_writes_every_idle_stream_once_in_its_own_form() {
        let hub = Hub::default();
        let r = run();
        let mut clients = Vec::new();
        let mut subs = Vec::new();
        let names: Vec<String> = (0..100).map(|i| format!("guest-{i:03}")).collect();
        for name in &names {
            let (io, client) = crate::realtime::direct::pair().await;
            let sub = guest(&hub, name, &r, Some(io.conn()));
            sub.idle(0);
            clients.push((io, client));
            subs.push(sub);
        }
        // Someone still waiting, not in the list, and an admin: both written into directly too.
        let (outsider_io, _outsider_client) = crate::realtime::direct::pair().await;
        let mut outsider = guest(&hub, "outsider", &r, Some(outsider_io.conn()));
        outsider.idle(0);
        let (admin_io, mut admin_client) = crate::realtime::direct::pair().await;
        let admin = hub.subscribe(
            &meeting(),
            None,
            None,
            Standing::Admin,
            Some(admin_io.conn()),
        );
        admin.idle(0);
        let bulk = event(
            1,
            &r,
            Audience::Admitted,
            let_in(&names.iter().map(String::as_str).collect::<Vec<_>>()),
        );
        let published = Published::new(&bulk);
        // The listed guests are members now: the next members' event reaches them.
        let members_only = event(
            2,
            &r,
            Audience::Members,
            EventKind::HandRaised {
                identity: id("guest-000"),
            },
        );
        let next = Published::new(&members_only);
        hub.publish(&[bulk]);
        assert!(
            hub.inner.helper.get().is_some_and(Option::is_some),
            "a publish to this many streams is written on two threads"
        );
        hub.publish(&[members_only]);
        for ((_, client), (name, sub)) in clients.iter_mut().zip(names.iter().zip(&mut subs)) {
            let expected = published.own_view(&id(name)).unwrap();
            assert_eq!(read_frame(client).await, expected.as_str());
            assert_eq!(read_frame(client).await, next.json.as_str());
            assert_eq!(sub.take_written().len(), 2, "written once each, by the hub");
            assert_eq!(drain(sub), Vec::<u64>::new(), "not queued as well");
        }
        assert_eq!(read_frame(&mut admin_client).await, published.json.as_str());
        assert_eq!(read_frame(&mut admin_client).await, next.json.as_str());
        assert_eq!(admin.take_written().len(), 2);
        assert!(outsider.take_written().is_empty(), "not in the list");
        assert_eq!(drain(&mut outsider), Vec::<u64>::new());
        assert_eq!(
            outsider.settle(waiting(), 2),
            Settle::Settled,
            "still waiting"
        );
    }

    #[test]
    fn a_bulk_admission_reaches_the_listed_guests_and_hosts_and_makes_them_members() {
        let (hub, r) = (Hub::default(), run());
        let [mut alice, mut bob, mut carol] =
            ["alice", "bob", "carol"].map(|name| guest(&hub, name, &r, None));
        let mut admin = hub.subscribe(&meeting(), None, None, Standing::Admin, None);
        hub.publish(&[event(1, &r, Audience::Admitted, let_in(&["alice", "bob"]))]);
        hub.publish(&[hand_raised(2, &r)]);
        assert_eq!(drain(&mut alice), [1, 2], "let in, then a member");
        assert_eq!(drain(&mut bob), [1, 2]);
        assert_eq!(drain(&mut carol), Vec::<u64>::new(), "not in the list");
        assert_eq!(drain(&mut admin), [1, 2]);
        assert_eq!(alice.settle(member(), 2), Settle::Settled);
        assert_eq!(carol.settle(waiting(), 2), Settle::Settled);
    }

    #[test]
    fn each_bulk_admission_moves_its_own_list_whoever_it_was_routed_to() {
        let (hub, r) = (Hub::default(), run());
        let [mut alice, mut bob, mut carol] =
            ["alice", "bob", "carol"].map(|name| guest(&hub, name, &r, None));
        hub.publish(&[event(1, &r, Audience::Admitted, let_in(&["alice"]))]);
        // Listing bob, but shown to hosts only: the hub finds whom it moves from this event's
        // list, not from the keys it routed the previous admission by.
        hub.publish(&[event(2, &r, Audience::Hosts, let_in(&["bob"]))]);
        hub.publish(&[hand_raised(3, &r)]);
        assert_eq!(drain(&mut alice), [1, 3]);
        assert_eq!(drain(&mut bob), [3], "moved by the event it was not shown");
        assert_eq!(drain(&mut carol), Vec::<u64>::new());
        assert_eq!(bob.settle(member(), 3), Settle::Settled);
        assert_eq!(carol.settle(waiting(), 3), Settle::Settled);
    }

    #[test]
    fn a_full_queue_drops_that_subscriber_only() {
        let hub = Hub::new(HubConfig {
            waiting_queue: 2,
            ..HubConfig::default()
        });
        let r = run();
        let mut slow = guest(&hub, "slow", &r, None);
        let mut fast = guest(&hub, "fast", &r, None);
        for seq in 1..=5 {
            hub.publish(&[event(
                seq,
                &r,
                Audience::Everyone,
                EventKind::ParticipantLeft { identity: id("x") },
            )]);
            if seq < 5 {
                drain(&mut fast);
            }
        }
        assert_eq!(hub.subscribers(&meeting()), 1);
        assert_eq!(hub.total_subscribers(), 1);
        assert_eq!(
            drain(&mut slow),
            [1, 2],
            "queued events stay readable, then the queue ends"
        );
        assert!(slow.rx.try_recv().is_err());
        assert_eq!(drain(&mut fast), [5]);
    }

    #[test]
    fn revocation_and_new_runs_close_the_stream_and_settle_corrects_a_stale_standing() {
        let hub = Hub::default();
        let r = run();
        let alice = guest(&hub, "alice", &r, None);
        let _bob = guest(&hub, "bob", &r, None);
        let member = Standing::Participant {
            role: Role::Speaker,
            state: ParticipantState::Admitted,
        };
        assert_eq!(alice.settle(member, 3), Settle::Corrected);
        assert_eq!(alice.settle(member, 3), Settle::Settled);
        hub.publish(&[event(
            4,
            &r,
            Audience::Subject {
                identity: id("alice"),
            },
            EventKind::ParticipantRemoved {
                identity: id("alice"),
            },
        )]);
        assert_eq!(hub.subscribers(&meeting()), 1);
        hub.publish(&[event(
            5,
            &run(),
            Audience::Everyone,
            EventKind::MeetingStarted {
                instance_id: run(),
                run: 2,
                room_name: "r".into(),
            },
        )]);
        assert_eq!(hub.subscribers(&meeting()), 0);
        drop(alice);
        assert!(
            lock(&hub.inner.rooms).is_empty(),
            "an empty room is forgotten"
        );
    }

    #[test]
    fn standing_follows_own_events_only() {
        let r = run();
        let mut s = waiting();
        let me = id("me");
        assert_eq!(
            Step::apply(&mut s, Some(&me), Some(&r), &admitted(1, &r, "other").kind),
            Step::Unchanged
        );
        assert_eq!(
            Step::apply(&mut s, Some(&me), Some(&r), &admitted(2, &r, "me").kind),
            Step::Changed
        );
        assert_eq!(s.class(), ViewerClass::Member);
        let promote = EventKind::ParticipantRoleChanged {
            identity: me.clone(),
            role: Role::Host,
        };
        assert_eq!(
            Step::apply(&mut s, Some(&me), Some(&r), &promote),
            Step::Changed
        );
        assert_eq!(s.class(), ViewerClass::Host);
        let ended = EventKind::MeetingEnded {
            instance_id: r.clone(),
            run: 1,
        };
        assert_eq!(
            Step::apply(&mut s, Some(&me), Some(&r), &ended),
            Step::Changed
        );
        assert_eq!(s.class(), ViewerClass::Waiting);
        let sent_back = EventKind::ParticipantSentBack {
            identity: me.clone(),
        };
        assert_eq!(
            Step::apply(&mut s, Some(&me), Some(&r), &sent_back),
            Step::Close(CloseReason::Revoked)
        );
    }
}
