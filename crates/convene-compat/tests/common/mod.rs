//! `TestApp` for the compatibility surfaces: the native API and the surfaces in-process over a
//! fresh SQLite store, driven with `tower::ServiceExt::oneshot`, and helpers that send one
//! parameter set as JSON or as a form.

#![allow(dead_code)]

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine;
use convene_api::{AppState, Hub, Limits, PublicUrls};
use convene_compat::CompatConfig;
use convene_core::apikey::ApiSecret;
use convene_core::ids::MeetingIdDigits;
use convene_core::login::{LoginCodeMail, Logins, MailError, Mailer};
use convene_core::ports::NoMedia;
use convene_core::random::SeededEntropy;
use convene_core::service::Meetings;
use convene_core::time::{Clock, Timestamp};
use convene_store::SqlStore;
use convene_token::Signer;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

pub const KEY: &str = "APIcompattests";
pub const SECRET: &str = "compat-test-secret-0123456789-0123456789";
pub const PASSCODE: &str = "live-passcode-1234";
pub const BBB_TOKEN: &str = "bbb-token-5678";

/// How a request carries its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Form,
}

pub const BOTH: [Encoding; 2] = [Encoding::Json, Encoding::Form];

/// The system's clock, moved forward by what a test asks ([`TestApp::advance`]).
#[derive(Default)]
pub struct TestClock {
    ahead_millis: AtomicI64,
}

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis();
        Timestamp::from_millis(millis as i64 + self.ahead_millis.load(Ordering::SeqCst))
    }
}

/// Keeps every login-code mail instead of sending it.
#[derive(Default)]
pub struct RecordingMailer(Mutex<Vec<LoginCodeMail>>);

impl RecordingMailer {
    /// The code of the last mail to `to`.
    pub fn code_for(&self, to: &str) -> String {
        let mails = self.0.lock().unwrap();
        let mail = mails
            .iter()
            .rev()
            .find(|m| m.to.as_str() == to)
            .unwrap_or_else(|| panic!("no mail to {to}"));
        mail.code.reveal().to_owned()
    }

    pub fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

#[async_trait::async_trait]
impl Mailer for RecordingMailer {
    async fn send_login_code(&self, mail: &LoginCodeMail) -> Result<(), MailError> {
        self.0.lock().unwrap().push(mail.clone());
        Ok(())
    }
}

pub struct TestApp {
    pub app: Router,
    pub state: AppState,
    pub mailer: Arc<RecordingMailer>,
    pub clock: Arc<TestClock>,
    /// The store under the service (for its commit counts).
    pub store: Arc<SqlStore>,
    _dir: tempfile::TempDir,
}

/// A response: status and JSON body (`Value::Null` when empty or not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    /// The `Location` header, when there is one.
    pub location: Option<String>,
    pub headers: axum::http::HeaderMap,
}

impl TestApp {
    pub async fn start() -> Self {
        Self::start_with(Some(PASSCODE.to_owned()), Limits::new(1000, 100_000)).await
    }

    pub async fn start_with(live_passcode: Option<String>, limits: Limits) -> Self {
        Self::start_full(live_passcode, Some(BBB_TOKEN.to_owned()), limits).await
    }

    pub async fn start_full(
        live_passcode: Option<String>,
        bbb_token: Option<String>,
        limits: Limits,
    ) -> Self {
        Self::start_engine(
            live_passcode,
            bbb_token,
            limits,
            convene_api::MediaTokens::Embedded,
        )
        .await
    }

    /// Every surface on, with media tokens minted for `media` (the embedded engine, or an
    /// external LiveKit).
    pub async fn start_engine(
        live_passcode: Option<String>,
        bbb_token: Option<String>,
        limits: Limits,
        media: convene_api::MediaTokens,
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqlStore::sqlite(&dir.path().join("convene.db"))
            .await
            .expect("sqlite store");
        store.migrate().await.expect("migrations");
        let hub = Hub::default();
        let store = Arc::new(store);
        let mailer = Arc::new(RecordingMailer::default());
        let clock = Arc::new(TestClock::default());
        // One stream of randomness per test server, seeded from the operating system: two test
        // servers never hand out the same ids.
        let entropy = Arc::new(SeededEntropy::new(rand::random()));
        let logins = Arc::new(Logins::new(
            store.clone(),
            clock.clone(),
            entropy.clone(),
            mailer.clone(),
        ));
        let meetings = Arc::new(Meetings::new(
            store.clone(),
            clock.clone(),
            entropy,
            Arc::new(NoMedia),
            Arc::new(hub.clone()),
            MeetingIdDigits::new(9).expect("9 digits"),
        ));
        let secret = ApiSecret::parse(SECRET).expect("secret");
        let key = meetings
            .keys()
            .provision(KEY, secret)
            .await
            .expect("API key");
        let state = AppState {
            meetings,
            signer: Signer::new(key.id.clone(), key.secret.clone()),
            urls: PublicUrls {
                http: "http://convene.test".into(),
                rtc: "ws://convene.test".into(),
            },
            limits: Arc::new(limits),
            hub,
            media,
            logins,
            placement: None,
            recording_files: None,
        };
        let config = CompatConfig {
            live_passcode,
            bbb_token,
            ..CompatConfig::default()
        };
        let app = convene_api::router(state.clone())
            .merge(convene_compat::router(state.clone(), &config));
        Self {
            app,
            state,
            mailer,
            clock,
            store,
            _dir: dir,
        }
    }

    /// Moves the server's clock forward.
    pub fn advance(&self, by: Duration) {
        self.clock
            .ahead_millis
            .fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }

    /// Like [`TestApp::start`], with the seed 002 surface pointed at an external LiveKit.
    pub async fn start_with_config(config: CompatConfig) -> Self {
        let mut app = Self::start().await;
        app.app = convene_api::router(app.state.clone())
            .merge(convene_compat::router(app.state.clone(), &config));
        app
    }

    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.app.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let location = headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            body,
            location,
            headers,
        }
    }

    /// POSTs `params` (a JSON object) to `path` as JSON or as a form, with an optional
    /// `Authorization` header value.
    pub async fn post(
        &self,
        encoding: Encoding,
        path: &str,
        params: Value,
        authorization: Option<&str>,
    ) -> Reply {
        self.post_from(None, encoding, path, params, authorization)
            .await
    }

    /// Like [`TestApp::post`], from the client address `client` (as a trusted proxy would name
    /// it in `X-Forwarded-For`), or from the one address requests have without it.
    pub async fn post_from(
        &self,
        client: Option<&str>,
        encoding: Encoding,
        path: &str,
        params: Value,
        authorization: Option<&str>,
    ) -> Reply {
        let mut request = Request::post(path);
        if let Some(client) = client {
            // Requests sent in-process come from 0.0.0.0; trusting it makes the header count.
            request = request.header("x-forwarded-for", client).extension(
                convene_api::auth::TrustedProxies::new(vec![
                    "0.0.0.0/32".parse().expect("a network"),
                ]),
            );
        }
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        let request = match encoding {
            Encoding::Json => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(params.to_string())),
            Encoding::Form => {
                let mut form = url::form_urlencoded::Serializer::new(String::new());
                for (key, value) in params.as_object().expect("params are an object") {
                    let text = match value {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    form.append_pair(key, &text);
                }
                request
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(Body::from(form.finish()))
            }
        };
        self.send(request.expect("request")).await
    }

    /// Reads the meeting's event channel with a handed-out token.
    pub async fn events(&self, meeting_id: &str, token: &str, after: u64) -> Reply {
        let request = Request::get(format!("/v1/meetings/{meeting_id}/events?after={after}"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .expect("request");
        self.send(request).await
    }

    /// The event types in a page of events.
    pub async fn event_types(
        &self,
        meeting_id: &str,
        token: &str,
        after: u64,
    ) -> Vec<(String, Value)> {
        let reply = self.events(meeting_id, token, after).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        reply.body["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| {
                (
                    e["type"].as_str().unwrap_or_default().to_owned(),
                    e["data"].clone(),
                )
            })
            .collect()
    }
}

/// `Authorization: Basic key:secret`.
pub fn basic() -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{KEY}:{SECRET}"))
    )
}

/// The claims of a JWT, read without verifying (the tests check what the server signed).
pub fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}
