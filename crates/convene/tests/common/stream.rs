//! Stream clients for tests: a WebSocket and an SSE reader of `GET /v1/meetings/{id}/events`,
//! each waiting on conditions with deadlines (never sleeping as synchronisation).

#![allow(dead_code)]

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::common::{KEY, SECRET, TestApp};

pub const DEADLINE: Duration = Duration::from_secs(20);

/// How a stream authenticates.
#[derive(Clone, Debug)]
pub enum Auth {
    /// The API key as Basic credentials.
    Admin,
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// `?access_token=<token>`.
    Query(String),
    None,
}

/// What ended a WebSocket.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    Close(u16),
    /// EOF or reset without a close frame.
    Dropped,
}

pub struct WsClient {
    pub socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub received: Vec<Value>,
    pub ended: Option<End>,
}

fn events_url(
    app: &TestApp,
    meeting_id: &str,
    auth: &Auth,
    after: Option<u64>,
    scheme: &str,
) -> String {
    let mut url = app
        .url(&format!("/v1/meetings/{meeting_id}/events"))
        .replacen("http", scheme, 1);
    let mut query = Vec::new();
    if let Some(after) = after {
        query.push(format!("after={after}"));
    }
    if let Auth::Query(token) = auth {
        query.push(format!("access_token={token}"));
    }
    if !query.is_empty() {
        url = format!("{url}?{}", query.join("&"));
    }
    url
}

fn authorization(auth: &Auth) -> Option<String> {
    use base64::Engine;
    match auth {
        Auth::Admin => Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{KEY}:{SECRET}"))
        )),
        Auth::Bearer(token) => Some(format!("Bearer {token}")),
        Auth::Query(_) | Auth::None => None,
    }
}

/// Opens a WebSocket; `Err(status)` when the server answered the handshake with an HTTP error.
pub async fn ws_connect(
    app: &TestApp,
    meeting_id: &str,
    auth: Auth,
    after: Option<u64>,
) -> Result<WsClient, u16> {
    ws_connect_with(app, meeting_id, auth, after, None).await
}

/// Like [`ws_connect`], with a small receive buffer on the client socket (a client that reads slowly).
pub async fn ws_connect_with(
    app: &TestApp,
    meeting_id: &str,
    auth: Auth,
    after: Option<u64>,
    recv_buffer: Option<u32>,
) -> Result<WsClient, u16> {
    let url = events_url(app, meeting_id, &auth, after, "ws");
    let mut request = url.into_client_request().unwrap();
    if let Some(value) = authorization(&auth) {
        request
            .headers_mut()
            .insert("authorization", value.parse().unwrap());
    }
    let addr: std::net::SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    let tcp = socket.connect(addr).await.unwrap();
    match tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(tcp)).await {
        Ok((socket, _)) => Ok(WsClient {
            socket,
            received: Vec::new(),
            ended: None,
        }),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("WebSocket handshake failed: {e}"),
    }
}

impl WsClient {
    /// Reads one frame (JSON text) into `received`; `false` once the stream has ended.
    pub async fn read_one(&mut self) -> bool {
        if self.ended.is_some() {
            return false;
        }
        loop {
            match tokio::time::timeout(DEADLINE, self.socket.next())
                .await
                .expect("a frame or the end within the deadline")
            {
                Some(Ok(Message::Text(text))) => {
                    self.received
                        .push(serde_json::from_str(text.as_str()).unwrap());
                    return true;
                }
                Some(Ok(Message::Close(frame))) => {
                    self.ended = Some(End::Close(frame.map(|f| u16::from(f.code)).unwrap_or(1005)));
                    return false;
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => {
                    self.ended = Some(End::Dropped);
                    return false;
                }
            }
        }
    }

    /// Reads until `done(received)` holds; panics at the deadline or if the stream ends first.
    pub async fn read_until(&mut self, mut done: impl FnMut(&[Value]) -> bool) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while !done(&self.received) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "condition not met; received {:?}",
                self.types()
            );
            assert!(
                self.read_one().await,
                "stream ended ({:?}) before the condition; received {:?}",
                self.ended,
                self.types()
            );
        }
    }

    /// Reads until an event with this sequence number (or a later one) has arrived.
    pub async fn read_through(&mut self, seq: u64) {
        self.read_until(|r| {
            r.last()
                .is_some_and(|e| e["seq"].as_u64().unwrap_or(0) >= seq)
        })
        .await;
    }

    /// Reads until the stream ends; returns how.
    pub async fn read_to_end(&mut self) -> &End {
        while self.read_one().await {}
        self.ended.as_ref().unwrap()
    }

    pub async fn send(&mut self, message: Message) {
        self.socket.send(message).await.unwrap();
    }

    /// The event frames' sequence numbers (the snapshot excluded).
    pub fn seqs(&self) -> Vec<u64> {
        self.received
            .iter()
            .filter(|e| e["type"] != "snapshot")
            .map(|e| e["seq"].as_u64().unwrap())
            .collect()
    }

    pub fn types(&self) -> Vec<String> {
        self.received
            .iter()
            .map(|e| e["type"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

pub fn close_code(end: &End) -> Option<u16> {
    match end {
        End::Close(code) => Some(*code),
        End::Dropped => None,
    }
}

pub fn code(code: CloseCode) -> u16 {
    code.into()
}

/// An SSE reader over reqwest.
pub struct SseClient {
    response: reqwest::Response,
    buffer: String,
    /// `(id, event, data)` per message.
    pub received: Vec<(Option<String>, String, Value)>,
}

/// Opens an SSE stream; `Err((status, body))` on an HTTP error.
pub async fn sse_connect(
    app: &TestApp,
    meeting_id: &str,
    auth: Auth,
    after: Option<u64>,
    last_event_id: Option<u64>,
) -> Result<SseClient, (u16, Value)> {
    let url = events_url(app, meeting_id, &auth, after, "http");
    let mut request = app.client.get(url).header("accept", "text/event-stream");
    if let Some(value) = authorization(&auth) {
        request = request.header("authorization", value);
    }
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id.to_string());
    }
    let response = request.send().await.unwrap();
    if !response.status().is_success() {
        let status = response.status().as_u16();
        return Err((status, response.json().await.unwrap_or(Value::Null)));
    }
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    Ok(SseClient {
        response,
        buffer: String::new(),
        received: Vec::new(),
    })
}

impl SseClient {
    /// Reads until `done(received)` holds, within the deadline.
    pub async fn read_until(
        &mut self,
        mut done: impl FnMut(&[(Option<String>, String, Value)]) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while !done(&self.received) {
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .expect("SSE condition within the deadline");
            let chunk = chunk
                .unwrap()
                .expect("the SSE stream ended before the condition");
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, String::from("message"), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if !data.is_empty() {
                    self.received
                        .push((id, event, serde_json::from_str(&data).unwrap()));
                }
            }
        }
    }

    pub fn seqs(&self) -> Vec<u64> {
        self.received
            .iter()
            .filter(|(_, e, _)| e != "snapshot" && e != "close")
            .map(|(_, _, d)| d["seq"].as_u64().unwrap())
            .collect()
    }
}
