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

/// Writes every join queued in one transaction, answers them, and again.
async fn commit_loop(pool: sqlx::SqlitePool, mut queue: mpsc::UnboundedReceiver<Pending>) {
    const ROWS_PER_STATEMENT: usize = 100;
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < 4096 {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
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

/// Serves on `127.0.0.1:port` until killed, its database in `data_dir`.
pub fn serve(port: u16, data_dir: PathBuf) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let options = SqliteConnectOptions::new()
                .filename(data_dir.join("floor.db"))
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full);
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await?;
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS joins \
                 (room TEXT NOT NULL, uid TEXT NOT NULL, at INTEGER NOT NULL, PRIMARY KEY (room, uid))",
            )
            .execute(&pool)
            .await?;
            let (queue, pending) = mpsc::unbounded_channel();
            tokio::spawn(commit_loop(pool, pending));
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
