//! Recording a run's meeting through convene's native API, as an operator would (the bench's
//! API key as HTTP Basic credentials): the meeting behind the room the participants joined with
//! their LiveKit tokens (the first join created it), `POST /v1/meetings/{id}/recordings` to
//! start, `POST .../recordings/{rid}/stop` to stop, then `GET .../recordings/{rid}` until the
//! recording is `ready` or `failed` (the server finishes the files and builds the composite with
//! ffmpeg after the stop, outside the window) — proof that it really recorded.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::server::{KEY, Running, SECRET};

/// A recording the bench started.
pub struct Started {
    client: reqwest::Client,
    /// `http://127.0.0.1:<port>/v1/meetings/<meeting id>/recordings/<recording id>`.
    url: String,
    pub id: String,
}

/// How a recording ended, after the stop.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub id: String,
    /// `ready` or `failed`, or the state it was still in when the bench stopped waiting.
    pub state: String,
    /// Its files (each track's, and the composite once built) and their bytes in total.
    pub files: usize,
    pub bytes: u64,
    /// Why it failed.
    pub error: Option<String>,
    /// From the stop to that state.
    pub waited: Duration,
}

/// The JSON body of a successful answer to `request`, or an error with the status and body.
async fn call(request: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Value> {
    let response = request
        .basic_auth(KEY, Some(SECRET))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .with_context(|| format!("{what}: no answer"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{what}: {status}: {body}");
    }
    serde_json::from_str(&body).with_context(|| format!("{what}: not JSON: {body}"))
}

fn string(value: &Value, field: &str) -> anyhow::Result<String> {
    value[field]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no {field} in {value}"))
}

/// Starts recording the meeting of `room` on `server` (convene's only: Janus does not record here).
pub async fn start(server: &Running, room: &str) -> anyhow::Result<Started> {
    let Running::Convene(convene) = server else {
        bail!("only convene records in this bench");
    };
    let client = reqwest::Client::new();
    let meetings = call(
        client.get(format!("{}/v1/meetings?limit=1000", convene.base())),
        "listing the meetings",
    )
    .await?;
    let meeting = meetings["meetings"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["room_name"] == room)
        .with_context(|| format!("no meeting of the room {room} in {meetings}"))?;
    let recordings = format!(
        "{}/v1/meetings/{}/recordings",
        convene.base(),
        string(meeting, "meeting_id")?
    );
    let started = call(client.post(&recordings), "starting the recording").await?;
    let id = string(&started, "recording_id")?;
    Ok(Started {
        url: format!("{recordings}/{id}"),
        client,
        id,
    })
}

impl Started {
    /// Stops the recording; answers when the stop was.
    pub async fn stop(&self) -> anyhow::Result<Instant> {
        call(
            self.client.post(format!("{}/stop", self.url)),
            "stopping the recording",
        )
        .await?;
        Ok(Instant::now())
    }

    /// Polls the recording until it is `ready` or `failed`, for at most `timeout` after
    /// `stopped`; answers what it was then.
    pub async fn wait(&self, stopped: Instant, timeout: Duration) -> anyhow::Result<Recorded> {
        loop {
            let view = call(self.client.get(&self.url), "reading the recording").await?;
            let state = string(&view, "state")?;
            let done = state == "ready" || state == "failed";
            if done || stopped.elapsed() >= timeout {
                let files = view["files"].as_array().cloned().unwrap_or_default();
                return Ok(Recorded {
                    id: self.id.clone(),
                    state,
                    files: files.len(),
                    bytes: files.iter().filter_map(|f| f["bytes"].as_u64()).sum(),
                    error: view["error"].as_str().map(str::to_owned),
                    waited: stopped.elapsed(),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
