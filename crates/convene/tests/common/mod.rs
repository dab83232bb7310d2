//! `TestApp`: the real server on port 0 with a fresh database (SQLite in a temp dir, or a fresh
//! PostgreSQL database), and request helpers.

#![allow(dead_code)]

use std::collections::HashMap;

use convene::{Config, Running};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection;

pub const SECRET: &str = "test-secret-0123456789-0123456789-abcdef";
pub const KEY: &str = "APItestsuite";

/// Which store a test runs against.
#[derive(Clone, Copy, Debug)]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    running: Option<Running>,
    dir: tempfile::TempDir,
    pg: Option<PgDatabase>,
    /// Settings added to the test defaults (`CONVENE_*` variables).
    extra_env: Vec<(String, String)>,
}

fn postgres_base_url() -> String {
    std::env::var("CONVENE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

async fn fresh_postgres_database() -> Option<PgDatabase> {
    let base = postgres_base_url();
    let mut conn = match sqlx::PgConnection::connect(&base).await {
        Ok(conn) => conn,
        Err(e) => {
            if std::env::var("CONVENE_TEST_SKIP_POSTGRES").as_deref() == Ok("1") {
                eprintln!(
                    "PostgreSQL unreachable ({e}); skipped because CONVENE_TEST_SKIP_POSTGRES=1"
                );
                return None;
            }
            panic!(
                "PostgreSQL at {base} is unreachable ({e}); start it, set CONVENE_TEST_POSTGRES_URL, or set CONVENE_TEST_SKIP_POSTGRES=1"
            );
        }
    };
    let name = format!("convene_e2e_{}", std::process::id()) + &format!("_{:x}", rand_suffix());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create database");
    let url = match base.rfind('/') {
        Some(i) => format!("{}/{name}", &base[..i]),
        None => panic!("CONVENE_TEST_POSTGRES_URL needs a database path"),
    };
    Some(PgDatabase {
        admin_url: base,
        name,
        url,
    })
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    nanos ^ (COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed) << 48)
}

impl TestApp {
    /// `None` only when PostgreSQL is unreachable and CONVENE_TEST_SKIP_POSTGRES=1.
    pub async fn start(kind: StoreKind) -> Option<Self> {
        Self::start_with(kind, &[]).await
    }

    /// Like [`TestApp::start`], with these settings on top of the test defaults.
    pub async fn start_with(kind: StoreKind, extra_env: &[(&str, &str)]) -> Option<Self> {
        let pg = match kind {
            StoreKind::Sqlite => None,
            StoreKind::Postgres => Some(fresh_postgres_database().await?),
        };
        let mut app = Self {
            base: String::new(),
            client: reqwest::Client::new(),
            running: None,
            dir: tempfile::tempdir().unwrap(),
            pg,
            extra_env: extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        app.boot().await;
        Some(app)
    }

    /// Another node on this node's PostgreSQL database (its own data directory and ports), with
    /// `extra_env` on top of this node's settings. Stopping it leaves the database alone.
    pub async fn another_node(&self, extra_env: &[(&str, &str)]) -> Self {
        let pg = self.pg.as_ref().expect("nodes share a PostgreSQL database");
        let mut env = self.extra_env.clone();
        env.push(("CONVENE_DATABASE_URL".into(), pg.url.clone()));
        env.extend(
            extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let mut app = Self {
            base: String::new(),
            client: reqwest::Client::new(),
            running: None,
            dir: tempfile::tempdir().unwrap(),
            pg: None,
            extra_env: env,
        };
        app.boot().await;
        app
    }

    /// The PostgreSQL database's name, its URL, and the URL of the server's maintenance database.
    pub fn postgres(&self) -> Option<(&str, &str, &str)> {
        self.pg
            .as_ref()
            .map(|pg| (pg.name.as_str(), pg.url.as_str(), pg.admin_url.as_str()))
    }

    /// Starts a second server with this one's configuration (same data directory or database).
    pub async fn start_second_server(&self) -> anyhow::Result<Running> {
        convene::start(self.config()).await
    }

    fn config(&self) -> Config {
        let mut env: HashMap<String, String> = HashMap::new();
        env.insert("CONVENE_HTTP_ADDR".into(), "127.0.0.1:0".into());
        env.insert("CONVENE_RTC_UDP_PORT".into(), "0".into());
        env.insert("CONVENE_RTC_TCP_PORT".into(), "0".into());
        env.insert(
            "CONVENE_DATA_DIR".into(),
            self.dir.path().display().to_string(),
        );
        env.insert("CONVENE_API_KEY".into(), KEY.into());
        env.insert("CONVENE_API_SECRET".into(), SECRET.into());
        if let Some(pg) = &self.pg {
            env.insert("CONVENE_DATABASE_URL".into(), pg.url.clone());
        }
        env.extend(self.extra_env.iter().cloned());
        Config::load(None, &env).unwrap()
    }

    async fn boot(&mut self) {
        let running = convene::start(self.config()).await.expect("server starts");
        self.base = format!("http://{}", running.addr);
        self.running = Some(running);
    }

    /// Stops the server (gracefully), keeping its database for the other nodes; `stop` still
    /// cleans up.
    pub async fn stop_server(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await.unwrap();
        }
    }

    /// Stops the server and starts it again on the same database.
    pub async fn restart(&mut self) {
        self.running.take().unwrap().stop().await.unwrap();
        self.boot().await;
    }

    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await.unwrap();
        }
        if let Some(pg) = self.pg.take() {
            let mut conn = sqlx::PgConnection::connect(&pg.admin_url).await.unwrap();
            sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", pg.name))
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }

    /// The unauthenticated `/metrics` listener's address (`CONVENE_METRICS_ADDR`), when set.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.running
            .as_ref()
            .and_then(|running| running.metrics_addr)
    }

    /// PostgreSQL only: the database refuses connections (`false`) or takes them again (`true`);
    /// refusing also ends the connections open now, so the server's pool loses them.
    pub async fn set_database_reachable(&self, reachable: bool) {
        let pg = self.pg.as_ref().expect("a PostgreSQL TestApp");
        let mut conn = sqlx::PgConnection::connect(&pg.admin_url).await.unwrap();
        sqlx::query(&format!(
            "ALTER DATABASE {} WITH ALLOW_CONNECTIONS {reachable}",
            pg.name
        ))
        .execute(&mut conn)
        .await
        .unwrap();
        if !reachable {
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            )
            .bind(&pg.name)
            .execute(&mut conn)
            .await
            .unwrap();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    /// Admin call with Basic key:secret.
    pub async fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method.parse().unwrap(), self.url(path))
            .basic_auth(KEY, Some(SECRET));
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(request).await
    }

    /// Call with a bearer token.
    pub async fn bearer(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method.parse().unwrap(), self.url(path))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(request).await
    }

    pub async fn anonymous(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method.parse().unwrap(), self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(request).await
    }

    pub async fn create_meeting(&self, body: Value) -> Value {
        let (status, meeting) = self.admin("POST", "/v1/meetings", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{meeting}");
        meeting
    }

    /// Enters with a credential; returns the enter response.
    pub async fn enter(&self, meeting: &Value, credential: &str, identity: &str) -> Value {
        let id = meeting["meeting_id"].as_str().unwrap();
        let (status, body) = self
            .anonymous(
                "POST",
                &format!("/v1/meetings/{id}/enter"),
                Some(json!({"credential": credential, "name": identity, "identity": identity})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// `POST /v1/meetings/{id}/join` with `token` (a waiting-room or access token): the answer,
    /// whatever it is.
    pub async fn try_join(&self, meeting_id: &str, token: &str) -> (StatusCode, Value) {
        self.bearer(
            "POST",
            &format!("/v1/meetings/{meeting_id}/join"),
            token,
            None,
        )
        .await
    }

    /// Joins with `token`, which must succeed: the join response (`access_token`, `api_token`...).
    pub async fn join(&self, meeting_id: &str, token: &str) -> Value {
        let (status, body) = self.try_join(meeting_id, token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    pub async fn events(&self, meeting_id: &str, token: &str, after: u64) -> Vec<Value> {
        let (status, page) = self
            .bearer(
                "GET",
                &format!("/v1/meetings/{meeting_id}/events?after={after}"),
                token,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        page["events"].as_array().unwrap().clone()
    }
}

/// The claims of a JWT, read without verifying (the server verified it; tests look inside).
pub fn claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

pub fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

/// Runs a scenario against SQLite and PostgreSQL.
#[macro_export]
macro_rules! on_both_stores {
    ($($scenario:ident),+ $(,)?) => {
        $(
            mod $scenario {
                use super::*;
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let app = common::TestApp::start(common::StoreKind::Sqlite).await.unwrap();
                    super::$scenario(app).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(app) = common::TestApp::start(common::StoreKind::Postgres).await {
                        super::$scenario(app).await;
                    }
                }
            }
        )+
    };
}

// Helpers over the API's JSON answers, shared by the test files.

/// The id of a created meeting.
pub fn id_of(meeting: &Value) -> String {
    meeting["meeting_id"].as_str().unwrap().to_owned()
}

/// The credential (PIN) of `role` in a created meeting.
pub fn pin<'a>(meeting: &'a Value, role: &str) -> &'a str {
    meeting["credentials"][role].as_str().unwrap()
}

/// The token an `enter` answer carries.
pub fn token(entered: &Value) -> String {
    entered["token"].as_str().unwrap().to_owned()
}

/// Chat `text` to everyone as `token`; answers the event's seq.
pub async fn chat(app: &TestApp, meeting_id: &str, token: &str, text: &str) -> u64 {
    let (status, body) = app
        .bearer(
            "POST",
            &format!("/v1/meetings/{meeting_id}/chat"),
            token,
            Some(json!({"text": text})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["seq"].as_u64().unwrap()
}

/// The meeting's last seq, as the admin API tells it.
pub async fn last_seq(app: &TestApp, meeting_id: &str) -> u64 {
    let (_, meeting) = app
        .admin("GET", &format!("/v1/meetings/{meeting_id}"), None)
        .await;
    meeting["last_seq"].as_u64().unwrap()
}

/// `seqs` are exactly `from..=to`: no gap and no duplicate.
pub fn assert_contiguous(seqs: &[u64], from: u64, to: u64) {
    let expected: Vec<u64> = (from..=to).collect();
    assert_eq!(seqs, expected, "no gap and no duplicate");
}
