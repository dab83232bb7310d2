//! Group commit: the changes queued while a commit is under way are committed together in the
//! next one: one transaction, and on SQLite one sync of the WAL to disk, for all of them. Each
//! caller is answered once the transaction holding its change is durable.
//!
//! One task per store (the committer) takes everything queued, up to [`MAX_BATCH`] changes, and
//! cuts it into *segments*: consecutive changes of one meeting, each computed from the one
//! before (its `expected_seq` is the previous one's `last_seq`). A segment is written as if it
//! were one change: one `UPDATE meetings ... WHERE last_seq = <the first's expected_seq>` with
//! the last change's meeting row, each participant's last version in one multi-row upsert, every
//! event in order, one webhook enqueue and one notification. A change that admits everyone
//! waiting starts a segment (its `UPDATE` of the waiting must come before the participants of
//! the changes before it... and after them, so it cannot be merged with them).
//!
//! The batch is first written without savepoints: when its segments are of different meetings
//! and none admits everyone waiting, every meeting's row is written by one `UPDATE ... FROM
//! (VALUES ...)` whose `WHERE` holds each one's version check, so a storm across 200 rooms is not
//! 200 round trips to the database. A segment whose check fails is left out and the batch written
//! again. Anything else falls back to segments isolated by savepoints: a conflict in one meeting
//! (another node wrote it) rolls back that segment only, and its callers retry; the later
//! segments of that meeting then find the version moved and conflict too, as they must (they
//! were computed on top of it). The optimistic-concurrency check across nodes is the same
//! condition as without batching.
//!
//! The committer writes on one connection it keeps, new meetings included (each in a
//! transaction of its own, in its place in the queue): SQLite keeps a page cache per connection,
//! valid only while no other connection writes, and one writer never waits for SQLite's write
//! lock behind another.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use convene_core::ids::MeetingId;
use convene_core::ops::Change;
use convene_core::ports::{Settled, StoreError};
use futures::FutureExt;
use futures::future::BoxFuture;
use sqlx::pool::PoolConnection;
use sqlx::{Acquire, Any, AnyConnection, AnyPool};
use tokio::sync::{mpsc, oneshot};

use crate::error::{backend, shared, unique_violation};
use crate::rows::{EventValues, MeetingValues, ParticipantValues};
use crate::store::{
    Bulk, Encoded, Script, WaitingGen, admit_waiting, after_writes, append_events,
    enqueue_webhooks, insert_events, meetings_written, push_events, push_meetings, push_people,
    upsert_participants, upsert_people,
};
use crate::{Backend, SqlStore, StoreFault};

/// Most changes in one transaction. A large admission is one change, so this bounds the number
/// of callers one commit answers, not its rows.
pub(crate) const MAX_BATCH: usize = 1024;

/// A change waiting for the committer, and where to send how it ended.
struct Queued {
    change: Change,
    settled: Settled,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// The handle of a store's committer task (started at the first change), and its counts.
#[derive(Default)]
pub(crate) struct Committer {
    queue: OnceLock<mpsc::UnboundedSender<Queued>>,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    transactions: AtomicU64,
    changes: AtomicU64,
    fallbacks: AtomicU64,
}

/// How much the group commit has grouped: queued changes committed, and the transactions that
/// committed them (for `/metrics` and the tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitCounts {
    /// Transactions the committer ran (committed or not).
    pub transactions: u64,
    /// Changes those transactions held.
    pub changes: u64,
    /// Batches that could not be written as one and were written again, one savepoint per
    /// meeting (a conflict the fast path could not put down to one meeting, or an error).
    pub fallbacks: u64,
}

/// What the committer needs of the store (the pool is shared with it).
#[derive(Clone)]
struct Writer {
    pool: AnyPool,
    backend: Backend,
    bulk: Bulk,
    counts: Arc<Counts>,
}

/// How the fast path's transaction begins.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Begin {
    /// Begun (by sqlx) before its statements.
    Done,
    /// By the script's first statement (SQLite).
    InScript,
}

/// Why a batch written without savepoints failed.
enum FastError {
    /// This segment's version check or admission failed (the others may be fine).
    Segment(usize, StoreError),
    /// Something that cannot be put down to one segment.
    Batch(StoreError),
}

/// Meetings whose own webhook endpoint this process wrote, with the URL it wrote (`None`: none):
/// a commit that does not change it does not write it again.
#[derive(Default)]
struct Synced(HashMap<String, Option<String>>);

const MAX_SYNCED: usize = 100_000;

impl SqlStore {
    /// Queues `change` behind every change queued before it (see the module comment). A change
    /// without `expected_seq` creates its meeting, in a transaction of its own on the
    /// committer's connection, in its place in the queue.
    pub(crate) fn queue(
        &self,
        change: Change,
        settled: Settled,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        let sender = self.committer.queue.get_or_init(|| {
            let (sender, receiver) = mpsc::unbounded_channel();
            self.writer().start(receiver);
            sender
        });
        let (done, answer) = oneshot::channel();
        if let Err(refused) = sender.send(Queued {
            change,
            settled,
            done,
        }) {
            let Queued {
                change, settled, ..
            } = refused.0;
            let result = Err(stopped());
            settled(&change, &result);
            return futures::future::ready(result).boxed();
        }
        async move { answer.await.unwrap_or_else(|_| Err(stopped())) }.boxed()
    }

    fn writer(&self) -> Writer {
        Writer {
            pool: self.pool().clone(),
            backend: self.backend(),
            bulk: self.bulk(),
            counts: self.committer.counts.clone(),
        }
    }

    /// The group commit's counts so far.
    pub fn commit_counts(&self) -> CommitCounts {
        let counts = &self.committer.counts;
        CommitCounts {
            transactions: counts.transactions.load(Ordering::Relaxed),
            changes: counts.changes.load(Ordering::Relaxed),
            fallbacks: counts.fallbacks.load(Ordering::Relaxed),
        }
    }

    /// Inserts a new meeting with its first events (see [`convene_core::ports::Store::create_meeting`]),
    /// through the committer like every change.
    pub(crate) async fn create(&self, change: &Change) -> Result<(), StoreError> {
        if change.expected_seq.is_some() {
            return Err(backend(StoreFault::Config(
                "a new meeting's change has a version".into(),
            )));
        }
        self.queue(
            change.clone(),
            Box::new(|_: &Change, _: &Result<(), StoreError>| {}),
        )
        .await
    }
}

/// A change without a version makes a new meeting.
fn is_create(change: &Change) -> bool {
    change.expected_seq.is_none()
}

/// Inserts a new meeting with its first events, in a transaction of its own.
async fn create(
    connection: &mut AnyConnection,
    backend_kind: Backend,
    bulk: Bulk,
    change: &Change,
) -> Result<(), StoreError> {
    let encoded = Encoded::of(change)?;
    let mut tx = connection.begin().await.map_err(backend)?;
    crate::store::insert_meeting(&mut tx, &encoded.meeting).await?;
    upsert_participants(&mut tx, &encoded.participants, bulk, 0)
        .await
        .map_err(backend)?;
    insert_events(&mut tx, &encoded.events, bulk)
        .await
        .map_err(crate::store::meeting_duplicate)?;
    after_writes(&mut tx, backend_kind, &change.meeting, seq_range(change)).await?;
    tx.commit().await.map_err(backend)
}

fn stopped() -> StoreError {
    backend(StoreFault::Config(
        "the store's committer has stopped (the server is shutting down, or it could not start)"
            .into(),
    ))
}

/// Changes of one meeting written as one: indexes into the batch, in order.
struct Segment {
    changes: Vec<usize>,
}

impl Writer {
    /// Starts the committer. On SQLite it runs on a thread of its own: every statement is a
    /// hand-off to the connection's thread and back, and a committer among the runtime's tasks
    /// waits behind the requests in its queues at each one. On PostgreSQL it is a task of the
    /// runtime: a connection's socket belongs to the runtime that opened it, and the committer's
    /// connection comes from (and goes back to) the pool the requests use.
    ///
    /// The committer stops once every sender is gone (the store dropped); if its thread cannot
    /// start, the receiver is dropped and every change queued fails with [`stopped`].
    fn start(self, receiver: mpsc::UnboundedReceiver<Queued>) {
        if self.backend == Backend::Postgres {
            tokio::spawn(self.run(receiver));
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("convene-committer".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(self.run(receiver)),
                    Err(e) => tracing::error!(error = %e, "the store's committer could not start"),
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "the store's committer could not start");
        }
    }

    async fn run(self, mut receiver: mpsc::UnboundedReceiver<Queued>) {
        let mut synced = Synced::default();
        let mut batch = Vec::with_capacity(MAX_BATCH);
        // One connection, kept (see the module comment): commits taking turns over the pool's
        // connections re-read from disk every page the last commit touched.
        let mut held: Option<PoolConnection<Any>> = None;
        loop {
            let first = if held.is_some() {
                // A closing pool waits for every connection it lent: give this one back.
                tokio::select! {
                    biased;
                    first = receiver.recv() => first,
                    () = self.pool.close_event() => {
                        held = None;
                        receiver.recv().await
                    }
                }
            } else {
                receiver.recv().await
            };
            let Some(first) = first else {
                break;
            };
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            // In queue order: each run of changes to existing meetings in one transaction, each
            // new meeting in one of its own (it is rare, and its insert fails alone).
            let mut results = Vec::with_capacity(batch.len());
            let all: Vec<&Change> = batch.iter().map(|q| &q.change).collect();
            for changes in all.chunk_by(|a, b| is_create(a) == is_create(b)) {
                let connection = match self.connection(&mut held).await {
                    Ok(connection) => connection,
                    Err(e) => {
                        results.extend(changes.iter().map(|_| Err(shared(&e))));
                        continue;
                    }
                };
                let done = if is_create(changes[0]) {
                    let mut done = Vec::with_capacity(changes.len());
                    for change in changes {
                        done.push(create(connection, self.backend, self.bulk, change).await);
                    }
                    done
                } else {
                    let done = self.commit_batch(connection, changes, &mut synced).await;
                    self.counts.transactions.fetch_add(1, Ordering::Relaxed);
                    self.counts
                        .changes
                        .fetch_add(changes.len() as u64, Ordering::Relaxed);
                    done
                };
                if done
                    .iter()
                    .any(|r| matches!(r, Err(StoreError::Backend(_))))
                    && let Some(mut connection) = held.take()
                {
                    // Perhaps the connection broke, or is still inside a transaction: it is
                    // closed, not given back to the pool. The next run takes another.
                    connection.close_on_drop();
                }
                results.extend(done);
            }
            for (queued, result) in batch.drain(..).zip(results) {
                (queued.settled)(&queued.change, &result);
                // A caller that went away does not stop the others.
                let _ = queued.done.send(result);
            }
        }
    }

    /// The committer's connection, taken from the pool when it has none.
    async fn connection<'h>(
        &self,
        held: &'h mut Option<PoolConnection<Any>>,
    ) -> Result<&'h mut AnyConnection, StoreError> {
        if held.is_none() {
            *held = Some(self.pool.acquire().await.map_err(backend)?);
        }
        Ok(held.as_mut().expect("just set"))
    }

    /// Commits `changes` in one transaction; one result per change, in order. First without
    /// savepoints, every meeting's row checked, then everyone's rows in shared statements; a
    /// segment whose check fails is left out and the rest written again; anything else falls
    /// back to one savepoint per segment, which tells which one failed.
    async fn commit_batch(
        &self,
        connection: &mut AnyConnection,
        changes: &[&Change],
        synced: &mut Synced,
    ) -> Vec<Result<(), StoreError>> {
        let mut results: Vec<Option<Result<(), StoreError>>> =
            changes.iter().map(|_| None).collect();
        let mut encoded: Vec<Option<Encoded>> = Vec::with_capacity(changes.len());
        for (i, change) in changes.iter().enumerate() {
            match Encoded::of(change) {
                Ok(e) => encoded.push(Some(e)),
                Err(e) => {
                    results[i] = Some(Err(e));
                    encoded.push(None);
                }
            }
        }
        let mut segments = segments(changes, &encoded);
        let outcome = loop {
            match self
                .write_fast(connection, changes, &encoded, &segments, synced)
                .await
            {
                Ok(()) => break Ok(()),
                Err(FastError::Segment(s, e)) => {
                    let failed = segments.remove(s);
                    fail(&mut results, &failed, &e);
                }
                Err(FastError::Batch(e)) => {
                    tracing::debug!(error = %e, "group commit: writing the batch again, one savepoint per meeting");
                    self.counts.fallbacks.fetch_add(1, Ordering::Relaxed);
                    break self
                        .write_segments(connection, changes, &encoded, &segments, &mut results)
                        .await;
                }
            }
        };
        if let Err(e) = outcome {
            // The transaction as a whole failed: nobody's change is durable.
            for result in &mut results {
                if !matches!(result, Some(Err(_))) {
                    *result = Some(Err(shared(&e)));
                }
            }
        }
        results.into_iter().map(|r| r.unwrap_or(Ok(()))).collect()
    }

    /// The batch in one transaction without savepoints: each segment's meeting row (and
    /// admission), then every person and event of the batch in shared multi-row statements, then
    /// each meeting's webhook rows and notification.
    async fn write_fast(
        &self,
        connection: &mut AnyConnection,
        changes: &[&Change],
        encoded: &[Option<Encoded>],
        segments: &[Segment],
        synced: &mut Synced,
    ) -> Result<(), FastError> {
        if segments.is_empty() {
            return Ok(());
        }
        let batch = |e: sqlx::Error| FastError::Batch(backend(e));
        // One look for any endpoint in the whole batch, not one queueing statement per meeting
        // when there is none (a storm across 200 rooms is 200 meetings a batch).
        let together = together(changes, encoded, segments)?;
        let wrote = if self.backend == Backend::Sqlite && together.is_some() {
            // Every call is a hand-off to SQLite's thread and back, and sqlx's `begin` and
            // `commit` wait for an acknowledgement on top: `BEGIN` goes with the batch's script
            // (nothing is read before it), `COMMIT` or `ROLLBACK` is a plain statement.
            let outcome = self
                .write_fast_in(
                    connection,
                    Begin::InScript,
                    together,
                    changes,
                    encoded,
                    segments,
                    synced,
                )
                .await;
            let end = if outcome.is_ok() {
                "COMMIT"
            } else {
                "ROLLBACK"
            };
            let ended = sqlx::query(end).execute(&mut *connection).await;
            match (outcome, ended) {
                (Ok(wrote), Ok(_)) => wrote,
                (Err(e), Ok(_)) => return Err(e),
                // `COMMIT` failed (SQLite keeps the transaction open when it is busy), or
                // `ROLLBACK` did: rolled back if it can be, and written again with savepoints. If
                // the transaction is still open, their `BEGIN` fails and the connection is closed
                // (see `run`).
                (_, Err(e)) => {
                    let _ = sqlx::query("ROLLBACK").execute(&mut *connection).await;
                    return Err(batch(e));
                }
            }
        } else {
            let mut tx = connection.begin().await.map_err(batch)?;
            let wrote = self
                .write_fast_in(
                    &mut tx,
                    Begin::Done,
                    together,
                    changes,
                    encoded,
                    segments,
                    synced,
                )
                .await?;
            tx.commit().await.map_err(batch)?;
            wrote
        };
        if synced.0.len() + wrote.len() > MAX_SYNCED {
            synced.0.clear();
        }
        synced.0.extend(wrote);
        Ok(())
    }

    /// [`Writer::write_fast`]'s statements, in its transaction (begun, or begun by the script);
    /// the meetings whose own webhook endpoint it wrote, with their URL.
    #[allow(clippy::too_many_arguments)]
    async fn write_fast_in(
        &self,
        tx: &mut AnyConnection,
        begin: Begin,
        together: Option<Vec<(&MeetingValues, i64)>>,
        changes: &[&Change],
        encoded: &[Option<Encoded>],
        segments: &[Segment],
        synced: &Synced,
    ) -> Result<Vec<(String, Option<String>)>, FastError> {
        let batch = |e: sqlx::Error| FastError::Batch(backend(e));
        // Each person's `waiting_gen`: read in the same call when the meetings' rows are written
        // there, else from each segment's check, made now.
        let waiting_gens = match &together {
            Some(_) => vec![WaitingGen::OfMeeting; segments.len()],
            None => {
                let mut gens = Vec::with_capacity(segments.len());
                for (s, segment) in segments.iter().enumerate() {
                    let admissions = self
                        .check_segment(tx, changes, encoded, segment)
                        .await
                        .map_err(|e| FastError::Segment(s, e))?;
                    gens.push(WaitingGen::Known(admissions));
                }
                gens
            }
        };
        // The meetings' rows (if not checked above), people, events and the look for an endpoint
        // in one script: on SQLite one call to the database.
        let (people, events) = rows_of(encoded, segments.iter().zip(waiting_gens));
        // On PostgreSQL one statement (one round trip), not one each: none of them reads what
        // another writes (a person's `waiting_gen` reads the meeting's admission count, which
        // the meetings' statement does not change).
        let mut script = Script::combined(self.bulk.params);
        if begin == Begin::InScript {
            script.push("BEGIN");
        }
        if let Some(meetings) = &together {
            push_meetings(&mut script, meetings, self.bulk);
        }
        push_people(&mut script, &people, self.bulk);
        push_events(&mut script, &events, self.bulk);
        crate::webhooks::push_any_active(&mut script);
        if self.backend == crate::Backend::Postgres {
            // The other nodes hear of every meeting of the batch through one statement.
            let commits: Vec<(&MeetingId, u64)> = segments
                .iter()
                .filter_map(|segment| {
                    let last = *segment.changes.last()?;
                    let (_, to) = seq_range(changes[last])?;
                    Some((&changes[last].meeting.id, to))
                })
                .collect();
            crate::listen::push_notify_all(&mut script, &commits);
        }
        let rows = script.run(tx).await.map_err(batch)?;
        if let Some(meetings) = &together {
            let written = meetings_written(&rows).map_err(FastError::Batch)?;
            if let Some(s) = meetings
                .iter()
                .position(|(row, _)| !written.contains_key(&row.id))
            {
                // Rolled back with the transaction; the batch is written again without it.
                return Err(FastError::Segment(s, StoreError::Conflict));
            }
        }
        let endpoints = crate::webhooks::any_active_in(&rows).map_err(batch)?;
        let mut wrote: Vec<(String, Option<String>)> = Vec::new();
        for segment in segments {
            let Some(&last) = segment.changes.last() else {
                continue;
            };
            let meeting = &changes[last].meeting;
            let url = meeting
                .settings
                .webhook_url
                .as_ref()
                .map(|u| u.as_str().to_owned());
            if synced.0.get(meeting.id.as_str()) != Some(&url) {
                crate::webhooks::sync_meeting_endpoint(tx, meeting)
                    .await
                    .map_err(batch)?;
                wrote.push((meeting.id.as_str().to_owned(), url));
            }
        }
        for segment in segments {
            let (Some(&first), Some(&last)) = (segment.changes.first(), segment.changes.last())
            else {
                continue;
            };
            let meeting = &changes[last].meeting;
            let seqs = seq_range(changes[first]).zip(seq_range(changes[last]));
            if let Some(((from, _), (_, to))) = seqs
                && endpoints
            {
                enqueue_webhooks(tx, &meeting.id, from, to)
                    .await
                    .map_err(FastError::Batch)?;
            }
        }
        Ok(wrote)
    }

    /// A segment's meeting row, written if still at the version its first change was computed
    /// from, and its admission of everyone waiting; the meeting's admission count after them.
    async fn check_segment(
        &self,
        connection: &mut AnyConnection,
        changes: &[&Change],
        encoded: &[Option<Encoded>],
        segment: &Segment,
    ) -> Result<i64, StoreError> {
        let (Some(&first), Some(&last)) = (segment.changes.first(), segment.changes.last()) else {
            return Ok(0);
        };
        let expected_seq = changes[first]
            .expected_seq
            .ok_or_else(|| backend(StoreFault::Config("a queued change has no version".into())))?;
        let expected_seq = crate::rows::signed("expected_seq", expected_seq)?;
        let (Some(final_row), Some(first_row)) = (
            encoded[last].as_ref().map(|e| &e.meeting),
            encoded[first].as_ref().map(|e| &e.meeting),
        ) else {
            return Ok(0);
        };
        let admissions =
            crate::store::update_meeting(connection, final_row, expected_seq, self.bulk).await?;
        match changes[first].admit_waiting {
            Some(waiting) => admit_waiting(connection, first_row, waiting, admissions).await,
            None => Ok(admissions),
        }
    }

    /// Writes every segment and commits. A segment's own failure is recorded in `results`; an
    /// error returned means the whole transaction failed.
    async fn write_segments(
        &self,
        connection: &mut AnyConnection,
        changes: &[&Change],
        encoded: &[Option<Encoded>],
        segments: &[Segment],
        results: &mut [Option<Result<(), StoreError>>],
    ) -> Result<(), StoreError> {
        if segments.is_empty() {
            return Ok(());
        }
        let mut tx = connection.begin().await.map_err(backend)?;
        if let [only] = segments {
            // No other segment to protect: a failure rolls the transaction back.
            if let Err(e) = self.write_segment(&mut tx, changes, encoded, only).await {
                fail(results, only, &e);
                return Ok(());
            }
        } else {
            for segment in segments {
                let mut savepoint = tx.begin().await.map_err(backend)?;
                match self
                    .write_segment(&mut savepoint, changes, encoded, segment)
                    .await
                {
                    Ok(()) => savepoint.commit().await.map_err(backend)?,
                    Err(e) => {
                        savepoint.rollback().await.map_err(backend)?;
                        fail(results, segment, &e);
                    }
                }
            }
        }
        tx.commit().await.map_err(backend)
    }

    async fn write_segment(
        &self,
        connection: &mut AnyConnection,
        changes: &[&Change],
        encoded: &[Option<Encoded>],
        segment: &Segment,
    ) -> Result<(), StoreError> {
        let (Some(&first), Some(&last)) = (segment.changes.first(), segment.changes.last()) else {
            return Ok(());
        };
        let admissions = self
            .check_segment(connection, changes, encoded, segment)
            .await?;
        let (people, events) = rows_of(
            encoded,
            std::iter::once((segment, WaitingGen::Known(admissions))),
        );
        upsert_people(connection, &people, self.bulk)
            .await
            .map_err(backend)?;
        append_events(connection, &events, self.bulk)
            .await
            .map_err(|e| match unique_violation(&e) {
                // An event with this (meeting, seq) exists: another writer appended first.
                Some(_) => StoreError::Conflict,
                None => backend(e),
            })?;
        let seqs = seq_range(changes[first]).zip(seq_range(changes[last]));
        after_writes(
            connection,
            self.backend,
            &changes[last].meeting,
            seqs.map(|((from, _), (_, to))| (from, to)),
        )
        .await
    }
}

/// Each segment's meeting row with the version it must be at, when the batch's meeting rows can
/// all be written by one statement: each segment of another meeting, none admitting everyone
/// waiting (that one's count of the waiting must see the rows before it).
fn together<'a>(
    changes: &[&Change],
    encoded: &'a [Option<Encoded>],
    segments: &[Segment],
) -> Result<Option<Vec<(&'a MeetingValues, i64)>>, FastError> {
    let mut rows = Vec::with_capacity(segments.len());
    let mut meetings = HashSet::with_capacity(segments.len());
    for segment in segments {
        let (Some(&first), Some(&last)) = (segment.changes.first(), segment.changes.last()) else {
            return Ok(None);
        };
        let (Some(expected_seq), None, Some(row)) = (
            changes[first].expected_seq,
            changes[first].admit_waiting,
            encoded[last].as_ref().map(|e| &e.meeting),
        ) else {
            return Ok(None);
        };
        if !meetings.insert(row.id.as_str()) {
            return Ok(None);
        }
        let expected_seq =
            crate::rows::signed("expected_seq", expected_seq).map_err(FastError::Batch)?;
        rows.push((row, expected_seq));
    }
    Ok(Some(rows))
}

/// Each person's last version in the segments, with their meeting's admission count, and every
/// event in order.
fn rows_of<'a, 's>(
    encoded: &'a [Option<Encoded>],
    segments: impl IntoIterator<Item = (&'s Segment, WaitingGen)>,
) -> (
    Vec<(&'a ParticipantValues, WaitingGen)>,
    Vec<&'a EventValues>,
) {
    let mut people: Vec<(&ParticipantValues, WaitingGen)> = Vec::new();
    let mut position: HashMap<(&str, &str), usize> = HashMap::new();
    let mut events: Vec<&EventValues> = Vec::new();
    for (segment, admissions) in segments {
        for e in segment.changes.iter().filter_map(|&i| encoded[i].as_ref()) {
            for p in &e.participants {
                let key = (p.meeting_id.as_str(), p.identity.as_str());
                match position.get(&key) {
                    Some(&at) => people[at] = (p, admissions),
                    None => {
                        position.insert(key, people.len());
                        people.push((p, admissions));
                    }
                }
            }
            events.extend(e.events.iter());
        }
    }
    (people, events)
}

fn fail(results: &mut [Option<Result<(), StoreError>>], segment: &Segment, error: &StoreError) {
    for &i in &segment.changes {
        results[i] = Some(Err(shared(error)));
    }
}

fn seq_range(change: &Change) -> Option<(u64, u64)> {
    Some((change.events.first()?.seq, change.events.last()?.seq))
}

/// Cuts the batch into segments (see the module comment). Changes that could not be encoded
/// (already failed) are left out; the next change of their meeting then starts a segment of
/// its own, which conflicts as it must.
fn segments(changes: &[&Change], encoded: &[Option<Encoded>]) -> Vec<Segment> {
    let mut segments: Vec<Segment> = Vec::new();
    // The index in `segments` of each meeting's latest segment.
    let mut open: HashMap<&str, usize> = HashMap::new();
    for (i, change) in changes.iter().enumerate() {
        if encoded[i].is_none() {
            open.remove(change.meeting.id.as_str());
            continue;
        }
        let follows = open.get(change.meeting.id.as_str()).copied().filter(|&s| {
            let previous = changes[*segments[s].changes.last().expect("never empty")];
            change.admit_waiting.is_none() && change.expected_seq == Some(previous.meeting.last_seq)
        });
        match follows {
            Some(s) => segments[s].changes.push(i),
            None => {
                open.insert(change.meeting.id.as_str(), segments.len());
                segments.push(Segment { changes: vec![i] });
            }
        }
    }
    segments
}
