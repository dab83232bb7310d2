//! `impl Store for SqlStore`: the queries, written once for SQLite and PostgreSQL.

use std::collections::HashMap;

use async_trait::async_trait;
use convene_core::Timestamp;
use convene_core::apikey::ApiKey;
use convene_core::event::Event;
use convene_core::ids::{Identity, MeetingId, RoomName};
use convene_core::lockout::{FailureRecord, FailureScope};
use convene_core::meeting::Meeting;
use convene_core::ops::Change;
use convene_core::participant::{Participant, ParticipantState};
use convene_core::ports::{PeopleCount, Settled, Store, StoreError};
use futures::future::BoxFuture;
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Any, AnyConnection, Arguments, Encode, Row, Type};

use crate::SqlStore;
use crate::error::{backend, unique_violation, unrepresentable};
use crate::rows::{
    self, API_KEY_COLUMNS, EVENT_COLUMNS, EventValues, MEETING_COLUMNS, MeetingValues,
    PARTICIPANT_COLUMNS, ParticipantValues,
};

/// What an upsert of a participant overwrites: everything but the key.
const PARTICIPANT_UPDATE: &str = "name = excluded.name, role = excluded.role, state = excluded.state, \
     hand_raised = excluded.hand_raised, invited = excluded.invited, \
     media_connected = excluded.media_connected, admitted_in = excluded.admitted_in, \
     banned_until = excluded.banned_until, epoch = excluded.epoch, created_at = excluded.created_at, \
     updated_at = excluded.updated_at, waiting_gen = excluded.waiting_gen";

/// How bound parameters are written in a statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Params {
    /// `$1, $2, ...`: PostgreSQL's only form.
    Numbered,
    /// `?, ?, ...`: SQLite. sqlx-sqlite looks up the name of every numbered parameter, and
    /// SQLite finds a parameter's name by a linear scan, so binding a statement of n numbered
    /// parameters costs O(n^2); anonymous ones are bound in order at O(n).
    Anonymous,
}

/// A multi-row statement's shape: rows per statement and parameter style.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bulk {
    pub rows: usize,
    pub params: Params,
}

/// Statements sent to the database together. On SQLite (anonymous parameters) they are one text
/// run in one call: sqlx-sqlite runs each statement of a text in turn, binding the arguments in
/// order, so a commit's statements cost one hand-off to its worker thread, not one each.
/// PostgreSQL's protocol takes one statement with parameters at a time: a plain script sends
/// them one by one, a [`Script::combined`] one as one statement of common table expressions
/// (one round trip for all of them; see [`Script::run`]).
pub(crate) struct Script<'q> {
    mode: Mode,
    statements: Vec<Statement<'q>>,
    error: Option<sqlx::error::BoxDynError>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One statement sent at a time.
    Separate,
    /// The statements' texts joined into one (SQLite).
    Together,
    /// The statements as the parts of one `WITH` statement (PostgreSQL).
    Combined,
}

/// The columns a statement returns, each with its PostgreSQL type, for a combined script's
/// rows (see [`Script::push_returning`]).
pub(crate) type Returns = &'static [(&'static str, &'static str)];

/// One statement sent to the database: its parts (one unless the script joins them) and their
/// arguments, in order.
struct Statement<'q> {
    parts: Vec<(String, Returns)>,
    arguments: AnyArguments<'q>,
}

/// Most parameters PostgreSQL takes in one statement (its protocol counts them in 16 bits).
const MAX_PG_PARAMS: usize = 65_535;

impl<'q> Script<'q> {
    pub(crate) fn new(params: Params) -> Self {
        Self::with_mode(match params {
            Params::Anonymous => Mode::Together,
            Params::Numbered => Mode::Separate,
        })
    }

    /// A script whose statements are one round trip on PostgreSQL as well: sent as one
    /// statement, each a common table expression of it. Its statements must not depend on each
    /// other's writes (all of them see the database as it was before the statement), and those
    /// that return rows must say which columns ([`Script::push_returning`]).
    pub(crate) fn combined(params: Params) -> Self {
        Self::with_mode(match params {
            Params::Anonymous => Mode::Together,
            Params::Numbered => Mode::Combined,
        })
    }

    fn with_mode(mode: Mode) -> Self {
        Self {
            mode,
            statements: Vec::new(),
            error: None,
        }
    }

    /// Adds `sql`, which returns no rows; its parameters are then bound in order with
    /// [`Script::bind`].
    pub(crate) fn push(&mut self, sql: &str) -> &mut Self {
        self.push_returning(sql, &[])
    }

    /// Adds `sql`, which returns rows of the columns `returns` (their names and PostgreSQL
    /// types). In a combined script every row of the script has all the columns its statements
    /// return, those of the other statements `NULL`: a reader looks for its own columns, not
    /// NULL.
    pub(crate) fn push_returning(&mut self, sql: &str, returns: Returns) -> &mut Self {
        let joins = match (self.mode, self.statements.last()) {
            (Mode::Separate, _) | (_, None) => false,
            (Mode::Together, Some(_)) => true,
            (Mode::Combined, Some(last)) => {
                last.arguments.len() + highest_param(sql) <= MAX_PG_PARAMS
            }
        };
        match self.statements.last_mut() {
            Some(last) if joins => {
                let sql = if self.mode == Mode::Combined {
                    shift_params(sql, last.arguments.len())
                } else {
                    sql.to_owned()
                };
                last.parts.push((sql, returns));
            }
            _ => self.statements.push(Statement {
                parts: vec![(sql.to_owned(), returns)],
                arguments: AnyArguments::default(),
            }),
        }
        self
    }

    /// Binds the next parameter of the last statement pushed.
    pub(crate) fn bind<T: 'q + Encode<'q, Any> + Type<Any>>(&mut self, value: T) -> &mut Self {
        if let Some(last) = self.statements.last_mut()
            && let Err(e) = last.arguments.add(value)
            && self.error.is_none()
        {
            self.error = Some(e);
        }
        self
    }

    /// Runs every statement, in order; the rows any of them returned.
    pub(crate) async fn run(
        self,
        connection: &mut AnyConnection,
    ) -> Result<Vec<AnyRow>, sqlx::Error> {
        if let Some(e) = self.error {
            return Err(sqlx::Error::Encode(e));
        }
        let mut rows = Vec::new();
        for statement in self.statements {
            let sql = statement.text(self.mode);
            rows.extend(
                sqlx::query_with(&sql, statement.arguments)
                    .fetch_all(&mut *connection)
                    .await?,
            );
        }
        Ok(rows)
    }
}

impl Statement<'_> {
    /// The text sent: the one part, the parts joined (SQLite), or the parts as the expressions
    /// of one `WITH` statement whose rows are those of the parts that return any, each row with
    /// every column they return (PostgreSQL runs a data-modifying expression whether or not the
    /// statement reads it, and a `SELECT` one only if it does: each is read).
    fn text(&self, mode: Mode) -> String {
        match (mode, self.parts.as_slice()) {
            (_, [(only, _)]) => only.clone(),
            (Mode::Combined, parts) => combine(parts),
            (_, parts) => parts
                .iter()
                .map(|(sql, _)| sql.as_str())
                .collect::<Vec<_>>()
                .join(";\n"),
        }
    }
}

/// One `WITH` statement of `parts` (see [`Statement::text`]).
fn combine(parts: &[(String, Returns)]) -> String {
    let mut columns: Vec<(&str, &str)> = Vec::new();
    for (_, returns) in parts {
        for column in *returns {
            if !columns.iter().any(|(name, _)| *name == column.0) {
                columns.push(*column);
            }
        }
    }
    let mut sql = String::from("WITH ");
    for (i, (part, _)) in parts.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!("s{i} AS ({part})"));
    }
    let selects: Vec<String> = parts
        .iter()
        .enumerate()
        .filter(|(_, (_, returns))| !returns.is_empty())
        .map(|(i, (_, returns))| {
            let list: Vec<String> = columns
                .iter()
                .map(|(name, kind)| {
                    if returns.iter().any(|(own, _)| own == name) {
                        (*name).to_owned()
                    } else {
                        format!("NULL::{kind} AS {name}")
                    }
                })
                .collect();
            format!("SELECT {} FROM s{i}", list.join(", "))
        })
        .collect();
    if selects.is_empty() {
        sql.push_str(" SELECT 1 AS done WHERE false");
    } else {
        sql.push(' ');
        sql.push_str(&selects.join(" UNION ALL "));
    }
    sql
}

/// Each `$n` in `sql`: where its digits are, and `n`.
fn params(sql: &str) -> impl Iterator<Item = (std::ops::Range<usize>, usize)> + '_ {
    sql.match_indices('$').filter_map(move |(at, _)| {
        let start = at + 1;
        let digits = sql[start..].bytes().take_while(u8::is_ascii_digit).count();
        let n = sql[start..start + digits].parse().ok()?;
        Some((start..start + digits, n))
    })
}

/// The highest `$n` in `sql` (0 if none).
fn highest_param(sql: &str) -> usize {
    params(sql).map(|(_, n)| n).max().unwrap_or(0)
}

/// `sql` with every `$n` made `$(n + by)`.
fn shift_params(sql: &str, by: usize) -> String {
    let mut out = String::with_capacity(sql.len() + sql.len() / 8);
    let mut copied = 0;
    for (digits, n) in params(sql) {
        out.push_str(&sql[copied..digits.start]);
        out.push_str(&(n + by).to_string());
        copied = digits.end;
    }
    out.push_str(&sql[copied..]);
    out
}

/// A participant's `waiting_gen` as written: known, or the meeting's admission count as the
/// statement finds it (when the meeting's row is written by the same call).
#[derive(Clone, Copy, Debug)]
pub(crate) enum WaitingGen {
    Known(i64),
    OfMeeting,
}

/// `($1, $2), ($3, $4)` (or `(?, ?), (?, ?)`) for `rows` rows of `columns` columns.
pub(crate) fn placeholders(rows: usize, columns: usize, params: Params) -> String {
    let mut sql = String::with_capacity(rows * columns * 6);
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..columns {
            if column > 0 {
                sql.push_str(", ");
            }
            param(&mut sql, row * columns + column + 1, params);
        }
        sql.push(')');
    }
    sql
}

/// Parameter `n` (counted from 1) of a statement: `$n`, or `?`.
fn param(sql: &mut String, n: usize, params: Params) {
    match params {
        Params::Numbered => {
            sql.push('$');
            sql.push_str(&n.to_string());
        }
        Params::Anonymous => sql.push('?'),
    }
}

/// `$first, $first+1, ...` for a list of `count` values.
fn list_placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The change's rows, encoded before any transaction starts (a value that cannot be stored fails
/// without touching the database). Participants and events must belong to the changed meeting.
pub(crate) struct Encoded {
    pub(crate) meeting: MeetingValues,
    pub(crate) participants: Vec<ParticipantValues>,
    pub(crate) events: Vec<EventValues>,
}

impl Encoded {
    pub(crate) fn of(change: &Change) -> Result<Self, StoreError> {
        let id = &change.meeting.id;
        if let Some(p) = change.participants.iter().find(|p| &p.meeting_id != id) {
            return Err(unrepresentable(
                "participant",
                format!(
                    "{} belongs to meeting {}, not {id}",
                    p.identity, p.meeting_id
                ),
            ));
        }
        if let Some(e) = change.events.iter().find(|e| &e.meeting_id != id) {
            return Err(unrepresentable(
                "event",
                format!(
                    "seq {} belongs to meeting {}, not {id}",
                    e.seq, e.meeting_id
                ),
            ));
        }
        Ok(Self {
            meeting: MeetingValues::of(&change.meeting)?,
            participants: change
                .participants
                .iter()
                .map(ParticipantValues::of)
                .collect::<Result<_, _>>()?,
            events: change
                .events
                .iter()
                .map(EventValues::of)
                .collect::<Result<_, _>>()?,
        })
    }
}

/// Writes the participants; `waiting_gen` is the meeting's admission count now (those written as
/// waiting wait for the next admission of everyone waiting).
pub(crate) async fn upsert_participants(
    connection: &mut AnyConnection,
    rows: &[ParticipantValues],
    bulk: Bulk,
    waiting_gen: i64,
) -> Result<(), sqlx::Error> {
    let rows: Vec<_> = rows
        .iter()
        .map(|p| (p, WaitingGen::Known(waiting_gen)))
        .collect();
    upsert_people(connection, &rows, bulk).await
}

/// Writes participants, each with its meeting's admission count (see [`upsert_participants`]).
pub(crate) async fn upsert_people(
    connection: &mut AnyConnection,
    rows: &[(&ParticipantValues, WaitingGen)],
    bulk: Bulk,
) -> Result<(), sqlx::Error> {
    let mut script = Script::new(bulk.params);
    push_people(&mut script, rows, bulk);
    script.run(connection).await.map(drop)
}

/// [`upsert_people`]'s statements, added to `script`.
pub(crate) fn push_people<'q>(
    script: &mut Script<'q>,
    rows: &[(&'q ParticipantValues, WaitingGen)],
    bulk: Bulk,
) {
    for chunk in rows.chunks(bulk.rows) {
        let mut values = String::with_capacity(chunk.len() * 64);
        let mut n = 0;
        for (i, (_, waiting_gen)) in chunk.iter().enumerate() {
            values.push_str(if i == 0 { "(" } else { ", (" });
            for _ in 0..ParticipantValues::COUNT {
                n += 1;
                param(&mut values, n, bulk.params);
                values.push_str(", ");
            }
            n += 1;
            match waiting_gen {
                WaitingGen::Known(_) => param(&mut values, n, bulk.params),
                WaitingGen::OfMeeting => {
                    values.push_str("(SELECT admission_gen FROM meetings WHERE id = ");
                    param(&mut values, n, bulk.params);
                    values.push(')');
                }
            }
            values.push(')');
        }
        script.push(&format!(
            "INSERT INTO participants ({PARTICIPANT_COLUMNS}, waiting_gen) VALUES {values} \
             ON CONFLICT (meeting_id, identity) DO UPDATE SET {PARTICIPANT_UPDATE}"
        ));
        for (p, waiting_gen) in chunk {
            script
                .bind(p.meeting_id.as_str())
                .bind(p.identity.as_str())
                .bind(p.name.as_str())
                .bind(p.role.as_str())
                .bind(p.state)
                .bind(p.hand_raised)
                .bind(p.invited)
                .bind(p.media_connected)
                .bind(p.admitted_in.as_deref())
                .bind(p.banned_until)
                .bind(p.epoch)
                .bind(p.created_at)
                .bind(p.updated_at);
            match waiting_gen {
                WaitingGen::Known(n) => script.bind(*n),
                WaitingGen::OfMeeting => script.bind(p.meeting_id.as_str()),
            };
        }
    }
}

/// Everyone waiting in the meeting is admitted to its current run by one `admissions` row for
/// the meeting's admission count `admissions` (see migration 0005), before the change's own
/// participants are written, so their state wins. `expected` is how many the operation saw waiting; any other
/// number means the state moved since: a conflict. Returns the meeting's new admission count.
pub(crate) async fn admit_waiting(
    connection: &mut AnyConnection,
    m: &MeetingValues,
    expected: usize,
    admissions: i64,
) -> Result<i64, StoreError> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS n FROM participants \
         WHERE meeting_id = $1 AND state = 'waiting' AND waiting_gen = $2",
    )
    .bind(m.id.as_str())
    .bind(admissions)
    .fetch_one(&mut *connection)
    .await
    .map_err(backend)?;
    let waiting: u64 = rows::uint(&row, "n")?;
    if usize::try_from(waiting).ok() != Some(expected) {
        return Err(StoreError::Conflict);
    }
    sqlx::query(
        "INSERT INTO admissions (meeting_id, gen, instance_id, at) VALUES ($1, $2, $3, $4)",
    )
    .bind(m.id.as_str())
    .bind(admissions)
    .bind(m.instance_id.as_str())
    .bind(m.updated_at)
    .execute(&mut *connection)
    .await
    .map_err(|e| match unique_violation(&e) {
        Some(_) => StoreError::Conflict,
        None => backend(e),
    })?;
    let next = admissions + 1;
    sqlx::query("UPDATE meetings SET admission_gen = $2 WHERE id = $1")
        .bind(m.id.as_str())
        .bind(next)
        .execute(&mut *connection)
        .await
        .map_err(backend)?;
    Ok(next)
}

pub(crate) async fn insert_events(
    connection: &mut AnyConnection,
    rows: &[EventValues],
    bulk: Bulk,
) -> Result<(), sqlx::Error> {
    let rows: Vec<&EventValues> = rows.iter().collect();
    append_events(connection, &rows, bulk).await
}

/// Appends events (see [`insert_events`]).
pub(crate) async fn append_events(
    connection: &mut AnyConnection,
    rows: &[&EventValues],
    bulk: Bulk,
) -> Result<(), sqlx::Error> {
    let mut script = Script::new(bulk.params);
    push_events(&mut script, rows, bulk);
    script.run(connection).await.map(drop)
}

/// [`append_events`]'s statements, added to `script`.
pub(crate) fn push_events<'q>(script: &mut Script<'q>, rows: &[&'q EventValues], bulk: Bulk) {
    for chunk in rows.chunks(bulk.rows) {
        script.push(&format!(
            "INSERT INTO events ({EVENT_COLUMNS}) VALUES {}",
            placeholders(chunk.len(), EventValues::COUNT, bulk.params)
        ));
        for e in chunk {
            script
                .bind(e.meeting_id.as_str())
                .bind(e.seq)
                .bind(e.at)
                .bind(e.instance_id.as_str())
                .bind(e.kind_type.as_str())
                .bind(e.audience.as_str())
                .bind(e.data.as_str());
        }
    }
}

/// Inside a commit: the meeting's own webhook endpoint follows its settings, the events
/// `first..=last` are queued for every active endpoint (see `webhooks.rs`), and on PostgreSQL the
/// other nodes are told of them (the notification goes out when the commit does, never for one
/// rolled back).
pub(crate) async fn after_writes(
    connection: &mut AnyConnection,
    backend_kind: crate::Backend,
    meeting: &Meeting,
    seqs: Option<(u64, u64)>,
) -> Result<(), StoreError> {
    crate::webhooks::sync_meeting_endpoint(connection, meeting)
        .await
        .map_err(backend)?;
    if let Some((first, last)) = seqs {
        queue_webhooks(connection, backend_kind, &meeting.id, first, last, true).await?;
    }
    Ok(())
}

/// The meeting's events `from..=to` go to every active webhook endpoint (unless `endpoints` is
/// false: the caller saw none active in this transaction); on PostgreSQL the other nodes are told
/// (inside the commit, so only if it commits).
pub(crate) async fn queue_webhooks(
    connection: &mut AnyConnection,
    backend_kind: crate::Backend,
    meeting: &MeetingId,
    from: u64,
    to: u64,
    endpoints: bool,
) -> Result<(), StoreError> {
    if endpoints {
        enqueue_webhooks(connection, meeting, from, to).await?;
    }
    if backend_kind == crate::Backend::Postgres {
        crate::listen::notify(connection, meeting, to)
            .await
            .map_err(backend)?;
    }
    Ok(())
}

/// The meeting's events `from..=to` go to every active webhook endpoint.
pub(crate) async fn enqueue_webhooks(
    connection: &mut AnyConnection,
    meeting: &MeetingId,
    from: u64,
    to: u64,
) -> Result<(), StoreError> {
    crate::webhooks::enqueue(
        connection,
        meeting,
        rows::signed("seq", from)?,
        rows::signed("seq", to)?,
    )
    .await
    .map_err(backend)
}

/// Inserts a new meeting's row (`Duplicate` on a clash of id or room name).
pub(crate) async fn insert_meeting(
    connection: &mut AnyConnection,
    m: &MeetingValues,
) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO meetings ({MEETING_COLUMNS}) VALUES {}",
        placeholders(1, 14, Params::Numbered)
    );
    sqlx::query(&sql)
        .bind(m.id.as_str())
        .bind(m.room_name.as_str())
        .bind(m.status.as_str())
        .bind(m.last_seq)
        .bind(m.created_at)
        .bind(m.updated_at)
        .bind(m.instance_id.as_str())
        .bind(m.run_number)
        .bind(m.opened_at)
        .bind(m.live_at)
        .bind(m.ended_at)
        .bind(m.settings.as_str())
        .bind(m.credentials.as_str())
        .bind(m.recording.as_deref())
        .execute(connection)
        .await
        .map_err(meeting_duplicate)?;
    Ok(())
}

/// Writes the meeting's row if its `last_seq` is still `expected_seq`, else `Conflict`; returns
/// its admission count. The first statement of a commit: it takes the row (PostgreSQL) or
/// database (SQLite) write lock at once, and a concurrent writer from the same version finds 0
/// rows afterwards.
pub(crate) async fn update_meeting(
    connection: &mut AnyConnection,
    m: &MeetingValues,
    expected_seq: i64,
    bulk: Bulk,
) -> Result<i64, StoreError> {
    let mut script = Script::new(bulk.params);
    push_meetings(&mut script, &[(m, expected_seq)], bulk);
    let rows = script.run(connection).await.map_err(meeting_duplicate)?;
    meetings_written(&rows)?
        .get(&m.id)
        .copied()
        .ok_or(StoreError::Conflict)
}

/// [`update_meeting`] for several meetings in one statement (one round trip to the database, not
/// one per meeting), added to `script`: each row written if its meeting is still at its expected
/// `last_seq`. At most one row per meeting. The script's rows then hold `id` and
/// `admission_gen` for each meeting written ([`meetings_written`]); a meeting missing from them
/// moved (a conflict).
pub(crate) fn push_meetings<'q>(
    script: &mut Script<'q>,
    rows: &[(&'q MeetingValues, i64)],
    bulk: Bulk,
) {
    const COLUMNS: usize = 14;
    for chunk in rows.chunks(bulk.rows) {
        // VALUES' columns are column1, column2, ... in both databases.
        let sql = format!(
            "UPDATE meetings SET room_name = v.column2, status = v.column3, last_seq = v.column4, \
             updated_at = v.column5, instance_id = v.column6, run_number = v.column7, \
             opened_at = v.column8, live_at = v.column9, ended_at = v.column10, \
             settings = v.column11, credentials = v.column12, recording = v.column14 \
             FROM (VALUES {}) AS v WHERE meetings.id = v.column1 AND meetings.last_seq = v.column13 \
             RETURNING id AS written_id, admission_gen",
            placeholders(chunk.len(), COLUMNS, bulk.params)
        );
        script.push_returning(&sql, &[("written_id", "text"), ("admission_gen", "bigint")]);
        for (m, expected_seq) in chunk {
            script
                .bind(m.id.as_str())
                .bind(m.room_name.as_str())
                .bind(m.status.as_str())
                .bind(m.last_seq)
                .bind(m.updated_at)
                .bind(m.instance_id.as_str())
                .bind(m.run_number)
                .bind(m.opened_at)
                .bind(m.live_at)
                .bind(m.ended_at)
                .bind(m.settings.as_str())
                .bind(m.credentials.as_str())
                .bind(*expected_seq)
                .bind(m.recording.as_deref());
        }
    }
}

/// The meetings a script's [`push_meetings`] wrote, each with its admission count.
pub(crate) fn meetings_written(rows: &[AnyRow]) -> Result<HashMap<String, i64>, StoreError> {
    let mut written = HashMap::new();
    for row in rows {
        // A combined script's other rows have the column, NULL.
        if row.try_column("written_id").is_ok()
            && let Some(id) = row
                .try_get::<Option<String>, _>("written_id")
                .map_err(backend)?
        {
            written.insert(id, rows::get(row, "admission_gen")?);
        }
    }
    Ok(written)
}

pub(crate) fn meeting_duplicate(error: sqlx::Error) -> StoreError {
    match unique_violation(&error) {
        Some(text) if text.contains("room_name") => StoreError::Duplicate("room_name"),
        Some(_) => StoreError::Duplicate("meeting_id"),
        None => backend(error),
    }
}

#[async_trait]
impl Store for SqlStore {
    async fn create_meeting(&self, change: &Change) -> Result<(), StoreError> {
        self.create(change).await
    }

    fn submit(
        &self,
        change: Change,
        settled: Settled,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        self.queue(change, settled)
    }

    async fn meeting(&self, id: &MeetingId) -> Result<Option<Meeting>, StoreError> {
        let sql = format!("SELECT {MEETING_COLUMNS} FROM meetings WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id.as_str())
            .fetch_optional(self.pool())
            .await
            .map_err(backend)?;
        row.as_ref().map(rows::meeting).transpose()
    }

    async fn meeting_by_room(&self, room: &RoomName) -> Result<Option<Meeting>, StoreError> {
        let sql = format!("SELECT {MEETING_COLUMNS} FROM meetings WHERE room_name = $1");
        let row = sqlx::query(&sql)
            .bind(room.as_str())
            .fetch_optional(self.pool())
            .await
            .map_err(backend)?;
        row.as_ref().map(rows::meeting).transpose()
    }

    async fn meetings(
        &self,
        after: Option<&MeetingId>,
        limit: u32,
    ) -> Result<Vec<Meeting>, StoreError> {
        let found = match after {
            Some(after) => {
                let sql = format!(
                    "SELECT {MEETING_COLUMNS} FROM meetings WHERE id > $1 ORDER BY id LIMIT $2"
                );
                sqlx::query(&sql)
                    .bind(after.as_str())
                    .bind(i64::from(limit))
                    .fetch_all(self.pool())
                    .await
            }
            None => {
                let sql = format!("SELECT {MEETING_COLUMNS} FROM meetings ORDER BY id LIMIT $1");
                sqlx::query(&sql)
                    .bind(i64::from(limit))
                    .fetch_all(self.pool())
                    .await
            }
        }
        .map_err(backend)?;
        found.iter().map(rows::meeting).collect()
    }

    async fn recording_meetings(&self) -> Result<Vec<Meeting>, StoreError> {
        let sql = format!(
            "SELECT {MEETING_COLUMNS} FROM meetings WHERE recording IS NOT NULL ORDER BY id"
        );
        let found = sqlx::query(&sql)
            .fetch_all(self.pool())
            .await
            .map_err(backend)?;
        found.iter().map(rows::meeting).collect()
    }

    async fn participant(
        &self,
        meeting: &MeetingId,
        identity: &Identity,
    ) -> Result<Option<Participant>, StoreError> {
        let sql = format!(
            "SELECT {PARTICIPANT_COLUMNS} FROM people WHERE meeting_id = $1 AND identity = $2"
        );
        let row = sqlx::query(&sql)
            .bind(meeting.as_str())
            .bind(identity.as_str())
            .fetch_optional(self.pool())
            .await
            .map_err(backend)?;
        row.as_ref().map(rows::participant).transpose()
    }

    async fn participants(
        &self,
        meeting: &MeetingId,
        states: Option<&[ParticipantState]>,
    ) -> Result<Vec<Participant>, StoreError> {
        let found = match states {
            Some([]) => return Ok(Vec::new()),
            Some(states) => {
                let sql = format!(
                    "SELECT {PARTICIPANT_COLUMNS} FROM people WHERE meeting_id = $1 AND state IN ({})",
                    list_placeholders(2, states.len())
                );
                let mut query = sqlx::query(&sql).bind(meeting.as_str());
                for state in states {
                    query = query.bind(state.as_str());
                }
                query.fetch_all(self.pool()).await
            }
            None => {
                let sql = format!("SELECT {PARTICIPANT_COLUMNS} FROM people WHERE meeting_id = $1");
                sqlx::query(&sql).bind(meeting.as_str()).fetch_all(self.pool()).await
            }
        }
        .map_err(backend)?;
        let mut participants = found
            .iter()
            .map(rows::participant)
            .collect::<Result<Vec<_>, _>>()?;
        // Byte order of the identity, whatever the database's collation.
        participants.sort_by(|a, b| a.identity.cmp(&b.identity));
        Ok(participants)
    }

    async fn waiting_identities(&self, meeting: &MeetingId) -> Result<Vec<Identity>, StoreError> {
        // One row, not one per guest: a host's join can admit 10,000 at once, and each row
        // decoded through sqlx's `Any` driver costs more than the query itself. Identities hold
        // no control characters (`Identity::parse`), so a newline separates them safely.
        let row = sqlx::query(
            "SELECT string_agg(identity, $2) AS identities FROM participants \
             WHERE meeting_id = $1 AND state = 'waiting' \
             AND waiting_gen = (SELECT admission_gen FROM meetings WHERE id = $1)",
        )
        .bind(meeting.as_str())
        .bind("\n")
        .fetch_one(self.pool())
        .await
        .map_err(backend)?;
        let joined: Option<String> = row.try_get("identities").map_err(backend)?;
        let mut identities = joined
            .as_deref()
            .map(|all| {
                all.split('\n')
                    .map(|one| {
                        Identity::parse(one).map_err(|e| crate::error::corrupt("identity", e))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        // Byte order of the identity, whatever the database's collation.
        identities.sort_unstable();
        Ok(identities)
    }

    async fn count_participants(
        &self,
        meeting: &MeetingId,
        states: &[ParticipantState],
    ) -> Result<u64, StoreError> {
        if states.is_empty() {
            return Ok(0);
        }
        let sql = format!(
            "SELECT COUNT(*) AS n FROM people WHERE meeting_id = $1 AND state IN ({})",
            list_placeholders(2, states.len())
        );
        let mut query = sqlx::query(&sql).bind(meeting.as_str());
        for state in states {
            query = query.bind(state.as_str());
        }
        let row = query.fetch_one(self.pool()).await.map_err(backend)?;
        rows::uint(&row, "n")
    }

    async fn people_counts(
        &self,
        meetings: &[MeetingId],
    ) -> Result<HashMap<MeetingId, PeopleCount>, StoreError> {
        let mut counts: HashMap<MeetingId, PeopleCount> = HashMap::new();
        if meetings.is_empty() {
            return Ok(counts);
        }
        let present = [
            ParticipantState::Waiting,
            ParticipantState::Admitted,
            ParticipantState::Joined,
        ];
        let sql = format!(
            "SELECT meeting_id, state, COUNT(*) AS n FROM people \
             WHERE meeting_id IN ({}) AND state IN ({}) GROUP BY meeting_id, state",
            list_placeholders(1, meetings.len()),
            list_placeholders(1 + meetings.len(), present.len())
        );
        let mut query = sqlx::query(&sql);
        for id in meetings {
            query = query.bind(id.as_str());
        }
        for state in present {
            query = query.bind(state.as_str());
        }
        for row in query.fetch_all(self.pool()).await.map_err(backend)? {
            let id = rows::parsed(&row, "meeting_id", MeetingId::parse)?;
            let n: u64 = rows::uint(&row, "n")?;
            let count = counts.entry(id).or_default();
            match ParticipantState::parse(&rows::text(&row, "state")?) {
                Some(ParticipantState::Waiting) => count.waiting = n,
                Some(ParticipantState::Admitted) => count.admitted = n,
                Some(ParticipantState::Joined) => count.joined = n,
                _ => {}
            }
        }
        Ok(counts)
    }

    async fn count_waiting_before(
        &self,
        meeting: &MeetingId,
        since: Timestamp,
        identity: &Identity,
    ) -> Result<u64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM participants WHERE meeting_id = $1 AND state = 'waiting' \
             AND waiting_gen = (SELECT admission_gen FROM meetings WHERE id = $1) \
             AND (updated_at < $2 OR (updated_at = $2 AND identity < $3))",
        )
        .bind(meeting.as_str())
        .bind(since.as_millis())
        .bind(identity.as_str())
        .fetch_one(self.pool())
        .await
        .map_err(backend)?;
        rows::uint(&row, "n")
    }

    async fn count_media_connected(
        &self,
        meeting: &MeetingId,
        except: &Identity,
    ) -> Result<u64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM people \
             WHERE meeting_id = $1 AND state = $2 AND media_connected = 1 AND identity <> $3",
        )
        .bind(meeting.as_str())
        .bind(ParticipantState::Joined.as_str())
        .bind(except.as_str())
        .fetch_one(self.pool())
        .await
        .map_err(backend)?;
        rows::uint(&row, "n")
    }

    async fn events_after(
        &self,
        meeting: &MeetingId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        let Ok(after) = i64::try_from(after) else {
            return Ok(Vec::new()); // No stored seq exceeds the signed 64-bit range.
        };
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE meeting_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        );
        let found = sqlx::query(&sql)
            .bind(meeting.as_str())
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await
            .map_err(backend)?;
        found.iter().map(rows::event).collect()
    }

    async fn insert_api_key(&self, key: &ApiKey) -> Result<(), StoreError> {
        let (id, secret, description, created_at, revoked_at) = rows::api_key_values(key);
        let sql = format!("INSERT INTO api_keys ({API_KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5)");
        sqlx::query(&sql)
            .bind(id)
            .bind(secret)
            .bind(description)
            .bind(created_at)
            .bind(revoked_at)
            .execute(self.pool())
            .await
            .map_err(|e| match unique_violation(&e) {
                Some(_) => StoreError::Duplicate("api_key_id"),
                None => backend(e),
            })?;
        Ok(())
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKey>, StoreError> {
        let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(backend)?;
        row.as_ref().map(rows::api_key).transpose()
    }

    async fn api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys");
        let found = sqlx::query(&sql)
            .fetch_all(self.pool())
            .await
            .map_err(backend)?;
        let mut keys = found
            .iter()
            .map(rows::api_key)
            .collect::<Result<Vec<_>, _>>()?;
        keys.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(keys)
    }

    async fn revoke_api_key(&self, id: &str, at: Timestamp) -> Result<bool, StoreError> {
        // A key revoked twice keeps its first revocation time.
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1")
                .bind(id)
                .bind(at.as_millis())
                .execute(self.pool())
                .await
                .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn failures(
        &self,
        scope: FailureScope,
        subject: &str,
    ) -> Result<FailureRecord, StoreError> {
        let row = sqlx::query(
            "SELECT failures, last_failure_at FROM auth_failures WHERE scope = $1 AND subject = $2",
        )
        .bind(scope.as_str())
        .bind(subject)
        .fetch_optional(self.pool())
        .await
        .map_err(backend)?;
        match row {
            Some(row) => rows::failure_record(&row),
            None => Ok(FailureRecord::default()),
        }
    }

    async fn record_failure(
        &self,
        scope: FailureScope,
        subject: &str,
        now: Timestamp,
        forget_before: Option<Timestamp>,
    ) -> Result<FailureRecord, StoreError> {
        // One statement, so concurrent failures from several nodes are all counted.
        let row = sqlx::query(
            "INSERT INTO auth_failures (scope, subject, failures, last_failure_at) VALUES ($1, $2, 1, $3) \
             ON CONFLICT (scope, subject) DO UPDATE SET \
               failures = CASE \
                 WHEN auth_failures.last_failure_at IS NULL OR auth_failures.last_failure_at < $4 THEN 1 \
                 ELSE auth_failures.failures + 1 END, \
               last_failure_at = $3 \
             RETURNING failures, last_failure_at",
        )
        .bind(scope.as_str())
        .bind(subject)
        .bind(now.as_millis())
        // No window: nothing is older than i64::MIN, so the count only grows.
        .bind(forget_before.map_or(i64::MIN, Timestamp::as_millis))
        .fetch_one(self.pool())
        .await
        .map_err(backend)?;
        rows::failure_record(&row)
    }

    async fn prune_failures(
        &self,
        scope: FailureScope,
        last_before: Timestamp,
    ) -> Result<u64, StoreError> {
        let done =
            sqlx::query("DELETE FROM auth_failures WHERE scope = $1 AND last_failure_at < $2")
                .bind(scope.as_str())
                .bind(last_before.as_millis())
                .execute(self.pool())
                .await
                .map_err(backend)?;
        Ok(done.rows_affected())
    }

    async fn clear_failures(&self, scope: FailureScope, subject: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM auth_failures WHERE scope = $1 AND subject = $2")
            .bind(scope.as_str())
            .bind(subject)
            .execute(self.pool())
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn use_nonce(
        &self,
        nonce: &str,
        expires_at: Timestamp,
        forget_before: Timestamp,
    ) -> Result<bool, StoreError> {
        sqlx::query("DELETE FROM used_join_links WHERE expires_at < $1")
            .bind(forget_before.as_millis())
            .execute(self.pool())
            .await
            .map_err(backend)?;
        // One statement decides: the primary key lets exactly one insert of a nonce through.
        let inserted = sqlx::query("INSERT INTO used_join_links (nonce, expires_at) VALUES ($1, $2) ON CONFLICT (nonce) DO NOTHING")
            .bind(nonce)
            .bind(expires_at.as_millis())
            .execute(self.pool())
            .await
            .map_err(backend)?;
        Ok(inserted.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_number_rows_then_columns() {
        assert_eq!(
            placeholders(2, 3, Params::Numbered),
            "($1, $2, $3), ($4, $5, $6)"
        );
        assert_eq!(placeholders(1, 1, Params::Numbered), "($1)");
        assert_eq!(placeholders(2, 2, Params::Anonymous), "(?, ?), (?, ?)");
        assert_eq!(list_placeholders(2, 3), "$2, $3, $4");
    }

    #[test]
    fn parameters_are_found_and_shifted_past_the_statements_before() {
        let sql = "UPDATE t SET a = $2 WHERE b = $10 AND c = $1";
        assert_eq!(highest_param(sql), 10);
        assert_eq!(highest_param("SELECT 1"), 0);
        assert_eq!(
            shift_params(sql, 5),
            "UPDATE t SET a = $7 WHERE b = $15 AND c = $6"
        );
        assert_eq!(shift_params("SELECT $1", 0), "SELECT $1");
    }

    /// On PostgreSQL a combined script is one `WITH` statement, its parameters numbered across
    /// the parts, every part that returns rows read (with the others' columns NULL); on SQLite
    /// the same script is its texts joined; a plain PostgreSQL script stays one per statement.
    #[test]
    fn a_combined_script_is_one_statement_of_expressions() {
        let fill = |script: &mut Script<'_>| {
            script.push_returning(
                "UPDATE m SET v = $2 WHERE id = $1 RETURNING id AS written_id",
                &[("written_id", "text")],
            );
            script.bind("a").bind(1_i64);
            script.push("INSERT INTO p (x) VALUES ($1)");
            script.bind(2_i64);
            script.push_returning(
                "SELECT COUNT(*) AS n FROM q WHERE y = $1",
                &[("n", "bigint")],
            );
            script.bind(3_i64);
        };
        let mut combined = Script::combined(Params::Numbered);
        fill(&mut combined);
        assert_eq!(combined.statements.len(), 1);
        assert_eq!(combined.statements[0].arguments.len(), 4);
        assert_eq!(
            combined.statements[0].text(combined.mode),
            "WITH s0 AS (UPDATE m SET v = $2 WHERE id = $1 RETURNING id AS written_id), \
             s1 AS (INSERT INTO p (x) VALUES ($3)), \
             s2 AS (SELECT COUNT(*) AS n FROM q WHERE y = $4) \
             SELECT written_id, NULL::bigint AS n FROM s0 \
             UNION ALL SELECT NULL::text AS written_id, n FROM s2"
        );

        let mut plain = Script::new(Params::Numbered);
        fill(&mut plain);
        let texts: Vec<String> = plain
            .statements
            .iter()
            .map(|s| s.text(plain.mode))
            .collect();
        assert_eq!(
            texts,
            [
                "UPDATE m SET v = $2 WHERE id = $1 RETURNING id AS written_id",
                "INSERT INTO p (x) VALUES ($1)",
                "SELECT COUNT(*) AS n FROM q WHERE y = $1",
            ]
        );

        let mut sqlite = Script::combined(Params::Anonymous);
        sqlite.push("INSERT INTO p (x) VALUES (?)").bind(1_i64);
        sqlite.push("INSERT INTO p (x) VALUES (?)").bind(2_i64);
        assert_eq!(sqlite.statements.len(), 1);
        assert_eq!(
            sqlite.statements[0].text(sqlite.mode),
            "INSERT INTO p (x) VALUES (?);\nINSERT INTO p (x) VALUES (?)"
        );
    }

    /// A part whose parameters would take the statement past PostgreSQL's limit starts the next
    /// statement, numbered from 1 again.
    #[test]
    fn a_combined_script_starts_a_new_statement_at_the_parameter_limit() {
        let mut script = Script::combined(Params::Numbered);
        script.push("INSERT INTO p (x) VALUES ($1)");
        for _ in 0..MAX_PG_PARAMS - 1 {
            script.bind(0_i64);
        }
        script.push("INSERT INTO p (x, y) VALUES ($1, $2)");
        script.bind(1_i64).bind(2_i64);
        assert_eq!(script.statements.len(), 2);
        assert_eq!(
            script.statements[1].text(script.mode),
            "INSERT INTO p (x, y) VALUES ($1, $2)"
        );
        let mut fits = Script::combined(Params::Numbered);
        fits.push("INSERT INTO p (x) VALUES ($1)");
        for _ in 0..MAX_PG_PARAMS - 1 {
            fits.bind(0_i64);
        }
        fits.push("INSERT INTO p (x) VALUES ($1)");
        assert_eq!(fits.statements.len(), 1);
        assert!(
            fits.statements[0]
                .text(fits.mode)
                .contains("VALUES ($65535)")
        );
    }
}
