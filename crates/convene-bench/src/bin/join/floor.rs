//! `durable-floor`: the cheapest durable join we could write in Rust for this machine, to show
//! what the durable part of a join costs without convene's code. Like the ceiling, an axum POST
//! route on seed 002's path, plus what a durable join cannot do without: the Basic credentials
//! checked (one compare, as node-join does), an HS256 LiveKit-style access token signed with
//! `jsonwebtoken` (as convene does), and one row per join (`room`, `uid`, `at`) made durable
//! before the answer, in SQLite with convene's settings (WAL, `synchronous = FULL`) through sqlx,
//! group-committed: one task takes every join queued and writes them in one transaction.
//! convene writes more per join (two changes: the person twice, three events, the meeting's row),
//! so this is a floor, not a peer. Started by the benchmark as
//! `convene-join-bench serve-floor --port P --data-dir D` (a hidden mode).
//!
//! `log-floor` (`serve-floor --rows log`) is the same server writing, per join, the rows convene's
//! join writes, in tables of the same shape: the person (keyed by meeting and identity), three
//! events of about the same size (keyed by meeting and sequence number) and the meeting's row with
//! its last sequence number, all in one transaction per batch of the joins queued, each meeting's
//! sequence numbers kept in memory by the one writer. No version check, no rules, no event stream:
//! what writing convene's rows durably costs here, without convene. Given `--database-url`, it
//! writes them to PostgreSQL instead (`log-floor-pg`, the floor for convene on PostgreSQL), with
//! the same statements.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::{mpsc, oneshot};

use crate::servers::{KEY, SECRET};

#[derive(Deserialize)]
struct Join {
    #[serde(rename = "roomName")]
    room_name: Option<String>,
    uid: Option<String>,
}

#[derive(Serialize)]
struct Joined {
    msg: &'static str,
    livekit_socket_url: &'static str,
    access_token: String,
}

#[derive(Serialize)]
struct VideoGrant<'a> {
    room: &'a str,
    #[serde(rename = "roomJoin")]
    room_join: bool,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    nbf: u64,
    exp: u64,
    video: VideoGrant<'a>,
}

/// A join to make durable, and where to say it is.
struct Pending {
    room: String,
    uid: String,
    at: i64,
    done: oneshot::Sender<bool>,
}

#[derive(Clone)]
struct Floor {
    basic: String,
    key: jsonwebtoken::EncodingKey,
    queue: mpsc::UnboundedSender<Pending>,
}

type Failure = (StatusCode, Json<serde_json::Value>);

fn failure(status: StatusCode, msg: &str) -> Failure {
    (status, Json(serde_json::json!({ "msg": msg })))
}

async fn join(
    State(floor): State<Floor>,
    headers: HeaderMap,
    Json(join): Json<Join>,
) -> Result<Json<Joined>, Failure> {
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == floor.basic);
    if !authorized {
        return Err(failure(StatusCode::UNAUTHORIZED, "Unauthorized"));
    }
    let (Some(room), Some(uid)) = (join.room_name, join.uid) else {
        return Err(failure(
            StatusCode::BAD_REQUEST,
            "Missing required parameter",
        ));
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let claims = Claims {
        iss: KEY,
        sub: &uid,
        nbf: now.as_secs(),
        exp: now.as_secs() + 6 * 3600,
        video: VideoGrant {
            room: &room,
            room_join: true,
        },
    };
    let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &floor.key)
        .map_err(|_| failure(StatusCode::INTERNAL_SERVER_ERROR, "Error joining room"))?;
    let (done, durable) = oneshot::channel();
    let at = i64::try_from(now.as_millis()).unwrap_or(i64::MAX);
    floor
        .queue
        .send(Pending {
            room,
            uid,
            at,
            done,
        })
        .map_err(|_| failure(StatusCode::SERVICE_UNAVAILABLE, "Error joining room"))?;
    match durable.await {
        Ok(true) => Ok(Json(Joined {
            msg: "Success",
            livekit_socket_url: "ws://127.0.0.1",
            access_token: token,
        })),
        _ => Err(failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Error joining room",
        )),
    }
}

/// What the floor writes per join.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Rows {
    /// One row (`room`, `uid`, `at`).
    Join,
    /// The rows convene writes: the person, three events and the meeting's row.
    Log,
}

/// `log-floor`'s tables: convene's `meetings`, `participants` and `events`, the columns a join
/// writes. (`BIGINT` is an integer to SQLite as to PostgreSQL.)
const LOG_TABLES: &str = "\
    CREATE TABLE IF NOT EXISTS meetings (id TEXT NOT NULL PRIMARY KEY, last_seq BIGINT NOT NULL, \
        updated_at BIGINT NOT NULL, settings TEXT NOT NULL); \
    CREATE TABLE IF NOT EXISTS participants (meeting_id TEXT NOT NULL, identity TEXT NOT NULL, \
        name TEXT NOT NULL, role TEXT NOT NULL, state TEXT NOT NULL, admitted_in TEXT, \
        epoch BIGINT NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, \
        PRIMARY KEY (meeting_id, identity)); \
    CREATE TABLE IF NOT EXISTS events (meeting_id TEXT NOT NULL, seq BIGINT NOT NULL, \
        at BIGINT NOT NULL, instance_id TEXT NOT NULL, type TEXT NOT NULL, audience TEXT NOT NULL, \
        data TEXT NOT NULL, PRIMARY KEY (meeting_id, seq))";

/// How a statement marks its parameters.
#[derive(Clone, Copy)]
enum Marks {
    /// SQLite's `?`.
    Sqlite,
    /// PostgreSQL's `$1`, `$2`, ... in order.
    Postgres,
}

impl Marks {
    /// `count` copies of `row` (values with `?` for each parameter), comma-separated.
    fn rows(self, row: &str, count: usize) -> String {
        let text = vec![row; count].join(", ");
        match self {
            Marks::Sqlite => text,
            Marks::Postgres => {
                let mut out = String::with_capacity(text.len() * 2);
                let mut n = 0;
                for c in text.chars() {
                    if c == '?' {
                        n += 1;
                        out.push_str(&format!("${n}"));
                    } else {
                        out.push(c);
                    }
                }
                out
            }
        }
    }
}

/// A meeting's settings as convene stores them (about their size).
const SETTINGS: &str = r#"{"mode":"meeting","policy":"open","max_participants":null,"empty_timeout_s":300,"end_when_host_leaves":false,"auto_record":false,"webhook_url":null,"lobby_message":null,"name":"a room of the join floor"}"#;

/// Every join queued, once there is one (at most 4,096); `None` when the server stops.
async fn next_batch(queue: &mut mpsc::UnboundedReceiver<Pending>) -> Option<Vec<Pending>> {
    let mut batch = vec![queue.recv().await?];
    while batch.len() < 4096 {
        match queue.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// Writes one batch of joins with convene's rows in one transaction: the same statements for
/// either database, `$pool` a `SqlitePool` or a `PgPool` (sqlx's query types differ by database,
/// so the body is expanded once for each).
macro_rules! write_log {
    ($pool:expr, $marks:expr, $batch:expr, $seqs:expr, $touched:expr) => {
        async {
            let (batch, seqs, touched) = ($batch, $seqs, $touched);
            let mut tx = $pool.begin().await?;
            for (chunk, seqs) in batch.chunks(50).zip(seqs.chunks(50)) {
                let mut people = String::from(
                    "INSERT INTO participants (meeting_id, identity, name, role, state, admitted_in, \
                     epoch, created_at, updated_at) VALUES ",
                );
                people.push_str(&$marks.rows("(?, ?, ?, 'speaker', 'joined', ?, 0, ?, ?)", chunk.len()));
                people.push_str(
                    " ON CONFLICT (meeting_id, identity) DO UPDATE SET state = excluded.state, \
                     updated_at = excluded.updated_at",
                );
                let mut query = sqlx::query(&people);
                for join in chunk {
                    query = query
                        .bind(&join.room)
                        .bind(&join.uid)
                        .bind(&join.uid)
                        .bind(INSTANCE)
                        .bind(join.at)
                        .bind(join.at);
                }
                query.execute(&mut *tx).await?;
                let mut events = String::from(
                    "INSERT INTO events (meeting_id, seq, at, instance_id, type, audience, data) VALUES ",
                );
                events.push_str(&$marks.rows("(?, ?, ?, ?, ?, ?, ?)", chunk.len() * 3));
                let mut query = sqlx::query(&events);
                for (join, &seq) in chunk.iter().zip(seqs) {
                    let data = [
                        ("participant.entered", format!(r#"{{"identity":"{0}","name":"{0}","role":"speaker","state":"joined"}}"#, join.uid)),
                        ("participant.admitted", format!(r#"{{"identity":"{0}","run":"{INSTANCE}"}}"#, join.uid)),
                        ("participant.joined", format!(r#"{{"identity":"{0}","role":"speaker"}}"#, join.uid)),
                    ];
                    for (i, (kind, data)) in data.into_iter().enumerate() {
                        query = query
                            .bind(&join.room)
                            .bind(seq + i as i64)
                            .bind(join.at)
                            .bind(INSTANCE)
                            .bind(kind)
                            .bind(r#"{"kind":"hosts"}"#)
                            .bind(data);
                    }
                }
                query.execute(&mut *tx).await?;
            }
            let rooms: Vec<(&&str, &i64)> = touched.iter().collect();
            for chunk in rooms.chunks(50) {
                let mut meetings = String::from("INSERT INTO meetings (id, last_seq, updated_at, settings) VALUES ");
                meetings.push_str(&$marks.rows("(?, ?, ?, ?)", chunk.len()));
                meetings.push_str(
                    " ON CONFLICT (id) DO UPDATE SET last_seq = excluded.last_seq, \
                     updated_at = excluded.updated_at, settings = excluded.settings",
                );
                let mut query = sqlx::query(&meetings);
                for (room, seq) in chunk {
                    query = query.bind(*room).bind(**seq).bind(batch[0].at).bind(SETTINGS);
                }
                query.execute(&mut *tx).await?;
            }
            tx.commit().await
        }
    };
}

/// The run every log-floor event names.
const INSTANCE: &str = "run_0123456789abcdef01234567";

/// Where log-floor writes.
enum LogPool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// Writes every join queued in one transaction with convene's rows, answers them, and again.
async fn commit_log_loop(pool: LogPool, mut queue: mpsc::UnboundedReceiver<Pending>) {
    let mut last_seq: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    while let Some(batch) = next_batch(&mut queue).await {
        // Each join's three events, numbered after its meeting's last; then each meeting's row.
        let mut seqs = Vec::with_capacity(batch.len());
        let mut touched: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
        for join in &batch {
            let seq = touched
                .entry(join.room.as_str())
                .or_insert_with(|| last_seq.get(&join.room).copied().unwrap_or(0));
            seqs.push(*seq + 1);
            *seq += 3;
        }
        let written: Result<(), sqlx::Error> = match &pool {
            LogPool::Sqlite(pool) => write_log!(pool, Marks::Sqlite, &batch, &seqs, &touched).await,
            LogPool::Postgres(pool) => {
                write_log!(pool, Marks::Postgres, &batch, &seqs, &touched).await
            }
        };
        let written = written.is_ok();
        if written {
            for (room, seq) in touched {
                last_seq.insert(room.to_owned(), seq);
            }
        }
        for join in batch {
            let _ = join.done.send(written);
        }
    }
}

/// Writes every join queued in one transaction, answers them, and again.
async fn commit_loop(pool: sqlx::SqlitePool, mut queue: mpsc::UnboundedReceiver<Pending>) {
    const ROWS_PER_STATEMENT: usize = 100;
    while let Some(batch) = next_batch(&mut queue).await {
        let written = async {
            let mut tx = pool.begin().await?;
            for chunk in batch.chunks(ROWS_PER_STATEMENT) {
                let mut sql = String::from("INSERT OR REPLACE INTO joins (room, uid, at) VALUES ");
                sql.push_str(&vec!["(?, ?, ?)"; chunk.len()].join(", "));
                let mut query = sqlx::query(&sql);
                for join in chunk {
                    query = query.bind(&join.room).bind(&join.uid).bind(join.at);
                }
                query.execute(&mut *tx).await?;
            }
            tx.commit().await
        }
        .await
        .is_ok();
        for join in batch {
            let _ = join.done.send(written);
        }
    }
}

/// Serves on `127.0.0.1:port` until killed, its database in `data_dir` (log-floor: in the
/// PostgreSQL database `database_url` if given).
pub fn serve(
    port: u16,
    data_dir: PathBuf,
    rows: Rows,
    database_url: Option<String>,
) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            // SQLite with convene's settings, in the data directory.
            let sqlite = || async {
                let options = SqliteConnectOptions::new()
                    .filename(data_dir.join("floor.db"))
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full);
                SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(options)
                    .await
            };
            let (queue, pending) = mpsc::unbounded_channel();
            match rows {
                Rows::Join => {
                    let pool = sqlite().await?;
                    sqlx::query(
                        "CREATE TABLE IF NOT EXISTS joins \
                         (room TEXT NOT NULL, uid TEXT NOT NULL, at INTEGER NOT NULL, PRIMARY KEY (room, uid))",
                    )
                    .execute(&pool)
                    .await?;
                    tokio::spawn(commit_loop(pool, pending));
                }
                Rows::Log => {
                    let pool = match database_url {
                        Some(url) => LogPool::Postgres(
                            sqlx::postgres::PgPoolOptions::new()
                                .max_connections(1)
                                .connect(&url)
                                .await?,
                        ),
                        None => LogPool::Sqlite(sqlite().await?),
                    };
                    match &pool {
                        LogPool::Sqlite(p) => {
                            sqlx::raw_sql(LOG_TABLES).execute(p).await?;
                        }
                        LogPool::Postgres(p) => {
                            sqlx::raw_sql(LOG_TABLES).execute(p).await?;
                        }
                    }
                    tokio::spawn(commit_log_loop(pool, pending));
                }
            }
            let basic = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{KEY}:{SECRET}"))
            );
            let floor = Floor {
                basic,
                key: jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
                queue,
            };
            let app = Router::new()
                .route("/healthz", get(|| async { "ok" }))
                .route("/compat/livekit-join/", post(join))
                .with_state(floor);
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
            axum::serve(listener, app).await?;
            Ok(())
        })
}

#[cfg(test)]
mod tests {
    use super::Marks;

    #[test]
    fn postgres_marks_are_numbered_in_order_across_rows() {
        let row = "(?, 'speaker', ?)";
        assert_eq!(
            Marks::Sqlite.rows(row, 2),
            "(?, 'speaker', ?), (?, 'speaker', ?)"
        );
        assert_eq!(
            Marks::Postgres.rows(row, 2),
            "($1, 'speaker', $2), ($3, 'speaker', $4)"
        );
    }
}
