//! Janus (its VideoRoom plugin) as a peer SFU for the bench: the `janus` binary started as a
//! child process on a generated configuration, and a client of its HTTP API (Janus API sessions
//! and handles, the VideoRoom's requests) for str0m participants.
//!
//! [`Janus::start`] writes a configuration to a fresh temporary directory (only the VideoRoom
//! plugin and the plain HTTP transport loaded, the HTTP API on a free port of 127.0.0.1, no admin
//! API, no STUN/TURN, half-trickle ICE on one local address, warnings only, to a log file in that
//! directory) and starts `janus -C <dir>/janus.jcfg -F <dir>`, killed when the [`Janus`] is
//! dropped.
//!
//! Janus cannot do ICE over 127.0.0.1. Janus 1.1 never gathers candidates on a loopback
//! interface (`ice.c` skips `IFF_LOOPBACK` interfaces, even when `ice_enforce_list` names `lo`),
//! and libnice pins each of its sockets to its interface (`IP_UNICAST_IF`), so Janus's packets to
//! a client on 127.0.0.1 leave by that interface and are lost: ICE fails. So Janus gathers on one
//! address, the host's own (the source address of its default route), and its clients bind their
//! sockets to that same address ([`Janus::ice_address`]). Packets between two local addresses
//! still never leave the machine: the kernel delivers them over `lo`.
//!
//! A [`Session`] is one Janus API session: a task long-polls its events and routes each to the
//! request waiting for it (by transaction) or to the [`Handle`] it is for, and another sends a
//! keepalive within Janus's session timeout. Each [`Handle`] is one attachment to the VideoRoom
//! plugin, so one PeerConnection: a publisher ([`Handle::publish`]) or a multistream subscriber
//! ([`Handle::subscribe`], then [`Handle::start`]). Rooms are created and listed through any
//! handle. SDP goes in and out as strings (str0m's `to_sdp_string` / `from_sdp_string`); every
//! offer and answer given to Janus carries all its candidates (`trickle: false`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

/// The VideoRoom plugin's package name (what `attach` names).
const VIDEOROOM: &str = "janus.plugin.videoroom";
/// The only plugin the generated configuration loads (the others found are disabled).
const PLUGIN_LIBRARY: &str = "libjanus_videoroom.so";
/// The only transport the generated configuration loads (the others found are disabled).
const TRANSPORT_LIBRARY: &str = "libjanus_http.so";
/// Janus's log level: 3 is warnings (4, the default, logs every handle's setup and teardown).
const LOG_LEVEL: u8 = 3;
/// Janus drops a session that has sent nothing for this long (its `session_timeout`, seconds).
const SESSION_TIMEOUT_SECONDS: u64 = 60;
/// How often a [`Session`] sends a keepalive (well within the session timeout).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// Events one long poll may return at once (`maxev`).
const MAX_EVENTS: usize = 64;
/// How long Janus may take to answer `info` after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long an asynchronous VideoRoom request may wait for its event (or a handle for its
/// PeerConnection to come up).
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Where the Janus binary and its libraries are, and how many event loops it runs.
#[derive(Debug, Clone)]
pub struct JanusOptions {
    /// The `janus` binary (found on `PATH` when it is a bare name).
    pub bin: PathBuf,
    /// The folder holding Janus's `plugins`, `transports`, `events` and `loggers` folders.
    pub lib_dir: PathBuf,
    /// Janus's `event_loops`: that many media threads shared by every handle, each handle put on
    /// one of them when it attaches. `None` keeps Janus's default, one event loop (and thread)
    /// per handle, which on a small machine means many more threads than cores.
    pub event_loops: Option<usize>,
}

impl Default for JanusOptions {
    /// `janus` on `PATH` and Debian's library folder for this architecture
    /// (`/usr/lib/x86_64-linux-gnu/janus` on amd64, as the `janus` package installs it).
    fn default() -> JanusOptions {
        JanusOptions {
            bin: PathBuf::from("janus"),
            lib_dir: PathBuf::from(format!(
                "/usr/lib/{}-linux-gnu/janus",
                std::env::consts::ARCH
            )),
            event_loops: None,
        }
    }
}

/// A Janus server started for the bench; killed (and its directory removed) when dropped.
pub struct Janus {
    child: Child,
    /// `http://127.0.0.1:<port>/janus`, the Janus API's root.
    url: String,
    /// The address of Janus's ICE candidates, which its clients must bind to.
    ice: Ipv4Addr,
    /// The configuration and the log.
    dir: tempfile::TempDir,
}

impl Drop for Janus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Janus {
    /// Writes the configuration (see the module's documentation) for `options` to a new temporary
    /// directory, starts Janus on it and waits until its HTTP API answers `info`.
    pub async fn start(options: &JanusOptions) -> anyhow::Result<Janus> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .context("no free TCP port for Janus's HTTP API")?
            .port();
        let ice = host_address()?;
        let dir = tempfile::tempdir().context("a directory for Janus's configuration")?;
        write_config(dir.path(), options, port, ice)?;
        let child = Command::new(&options.bin)
            .arg("-C")
            .arg(dir.path().join("janus.jcfg"))
            .arg("-F")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start {} (Debian's package `janus` installs it)",
                    options.bin.display()
                )
            })?;
        let mut janus = Janus {
            child,
            url: format!("http://127.0.0.1:{port}/janus"),
            ice,
            dir,
        };
        janus.wait_ready().await?;
        Ok(janus)
    }

    /// The process id, to read Janus's CPU time from /proc.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The address Janus's ICE candidates are on, which its clients' sockets must be bound to
    /// (see the module's documentation: a client on 127.0.0.1 never hears from Janus).
    pub fn ice_address(&self) -> Ipv4Addr {
        self.ice
    }

    /// The Janus API's root URL, what [`Session::connect`] takes.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Waits until `GET <url>/info` answers `server_info`, failing with the log's end if Janus
    /// exits or does not answer in time.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().context("Janus's status")? {
                bail!("Janus exited ({status}) at startup:\n{}", self.log_tail());
            }
            if let Ok(response) = http.get(format!("{}/info", self.url)).send().await
                && let Ok(info) = response.json::<Value>().await
                && info["janus"] == "server_info"
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "Janus did not answer info within {START_TIMEOUT:?}:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines of Janus's log, for errors.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("janus.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// The local address Janus gathers its ICE candidates on: the host's primary address (its
/// default route's source, as the SFU finds its own). Janus 1.1 skips loopback interfaces when
/// gathering, so 127.0.0.1 cannot be used.
fn host_address() -> anyhow::Result<Ipv4Addr> {
    match convene_sfu::primary_ip() {
        Some(IpAddr::V4(ip)) => Ok(ip),
        Some(ip) => {
            bail!("the default route's source address {ip} is not IPv4, as Janus's ICE here needs")
        }
        None => bail!(
            "Janus gathers ICE candidates only on non-loopback interfaces, and this host has no \
             default route to pick one by"
        ),
    }
}

/// Writes `janus.jcfg`, `janus.transport.http.jcfg` and `janus.plugin.videoroom.jcfg` to `dir`.
fn write_config(
    dir: &Path,
    options: &JanusOptions,
    port: u16,
    ice: Ipv4Addr,
) -> anyhow::Result<()> {
    let folder = |name: &str| options.lib_dir.join(name);
    let plugins = disabled_libraries(&folder("plugins"), PLUGIN_LIBRARY)?;
    let transports = disabled_libraries(&folder("transports"), TRANSPORT_LIBRARY)?;
    // Loggers are optional: disable whatever is there.
    let loggers = disabled_libraries(&folder("loggers"), "").unwrap_or_default();
    let event_loops = options
        .event_loops
        .map(|n| format!("\tevent_loops = {n}\n"))
        .unwrap_or_default();
    let janus = format!(
        r#"general: {{
	configs_folder = "{dir}"
	plugins_folder = "{plugins_folder}"
	transports_folder = "{transports_folder}"
	events_folder = "{events_folder}"
	loggers_folder = "{loggers_folder}"
	log_to_stdout = false
	log_to_file = "{log}"
	debug_level = {LOG_LEVEL}
	debug_colors = false
	interface = "{ice}"
	session_timeout = {SESSION_TIMEOUT_SECONDS}
{event_loops}}}
media: {{
	ipv6 = false
}}
nat: {{
	nice_debug = false
	full_trickle = false
	ignore_mdns = true
	ice_enforce_list = "{ice}"
}}
plugins: {{
	disable = "{plugins}"
}}
transports: {{
	disable = "{transports}"
}}
loggers: {{
	disable = "{loggers}"
}}
events: {{
	broadcast = false
}}
"#,
        dir = dir.display(),
        plugins_folder = folder("plugins").display(),
        transports_folder = folder("transports").display(),
        events_folder = folder("events").display(),
        loggers_folder = folder("loggers").display(),
        log = dir.join("janus.log").display(),
    );
    let http = format!(
        r#"general: {{
	json = "compact"
	base_path = "/janus"
	http = true
	port = {port}
	ip = "127.0.0.1"
	https = false
}}
admin: {{
	admin_http = false
	admin_https = false
}}
"#
    );
    let videoroom = "general: {\n\tevents = false\n}\n";
    for (name, text) in [
        ("janus.jcfg", janus.as_str()),
        ("janus.transport.http.jcfg", http.as_str()),
        ("janus.plugin.videoroom.jcfg", videoroom),
    ] {
        std::fs::write(dir.join(name), text)
            .with_context(|| format!("writing {}", dir.join(name).display()))?;
    }
    Ok(())
}

/// The comma-separated names of the libraries (`*.so`) in `folder` other than `keep`: what a
/// `disable` list of janus.jcfg takes.
fn disabled_libraries(folder: &Path, keep: &str) -> anyhow::Result<String> {
    let mut names = Vec::new();
    let entries = std::fs::read_dir(folder)
        .with_context(|| format!("Janus's library folder {}", folder.display()))?;
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".so") && name != keep {
            names.push(name);
        }
    }
    names.sort();
    Ok(names.join(","))
}

/// A publisher of a room, as the VideoRoom lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feed {
    /// Its participant id in the room, what a subscription names.
    pub id: u64,
    /// The display name it joined with.
    pub display: String,
}

/// What joining a room as a publisher gave.
#[derive(Debug, Clone)]
pub struct Joined {
    /// The publisher's id in the room (its feed).
    pub id: u64,
    /// Janus's SDP answer to the publisher's offer.
    pub answer_sdp: String,
    /// The room's other publishers at the time of the join.
    pub publishers: Vec<Feed>,
}

/// Where the events of a session go: each to the request waiting for its transaction, or else
/// to the handle it is for.
#[derive(Default)]
struct Routes {
    /// Asynchronous requests waiting for their event, by transaction.
    waiting: HashMap<String, oneshot::Sender<Value>>,
    /// Every handle's other events (`webrtcup`, `hangup`, `media`, VideoRoom notifications).
    handles: HashMap<u64, mpsc::UnboundedSender<Value>>,
    /// Why events stopped coming (the long poll failed, or Janus timed the session out).
    closed: Option<String>,
}

impl Routes {
    /// Hands `event` to whoever waits for it; drops it if nobody does.
    fn route(&mut self, event: Value) {
        if event["janus"] == "timeout" {
            self.close("Janus timed the session out".to_owned());
            return;
        }
        if let Some(waiter) = event["transaction"]
            .as_str()
            .and_then(|transaction| self.waiting.remove(transaction))
        {
            let _ = waiter.send(event);
        } else if let Some(handle) = event["sender"]
            .as_u64()
            .and_then(|id| self.handles.get(&id))
        {
            let _ = handle.send(event);
        }
    }

    /// No more events will come: fails every waiting request and handle (their senders drop).
    fn close(&mut self, reason: String) {
        self.closed.get_or_insert(reason);
        self.waiting.clear();
        self.handles.clear();
    }
}

/// The state of a session shared by its [`Session`] and [`Handle`]s; the background tasks end
/// when the last of them is dropped.
struct Inner {
    http: reqwest::Client,
    /// `<Janus API root>/<session id>`.
    url: String,
    next_transaction: AtomicU64,
    routes: Arc<Mutex<Routes>>,
    /// The long poll and the keepalive.
    tasks: [AbortHandle; 2],
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Inner {
    /// A transaction id unique in this session.
    fn transaction(&self) -> String {
        format!("t{}", self.next_transaction.fetch_add(1, Ordering::Relaxed))
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().expect("Janus routes lock")
    }

    /// POSTs `body` (with `transaction`) to the session, or to `handle` of it, and returns
    /// Janus's synchronous reply, failing on a Janus API error.
    async fn post(
        &self,
        handle: Option<u64>,
        transaction: &str,
        mut body: Value,
    ) -> anyhow::Result<Value> {
        body["transaction"] = json!(transaction);
        let url = match handle {
            Some(id) => format!("{}/{id}", self.url),
            None => self.url.clone(),
        };
        post(&self.http, &url, &body).await
    }

    /// A synchronous VideoRoom request on `handle`: its `plugindata.data`.
    async fn request(&self, handle: u64, body: Value) -> anyhow::Result<Value> {
        let what = body["request"].clone();
        let message = json!({"janus": "message", "body": body});
        let reply = self
            .post(Some(handle), &self.transaction(), message)
            .await?;
        if reply["janus"] != "success" {
            bail!("Janus answered VideoRoom {what} with {reply}");
        }
        plugin_data(&reply).with_context(|| format!("VideoRoom {what}"))
    }

    /// An asynchronous VideoRoom request on `handle` (with `jsep`, if any): acknowledged at once,
    /// answered by an event. Returns the event's `plugindata.data` and its JSEP, if any.
    async fn message(
        &self,
        handle: u64,
        body: Value,
        jsep: Option<Value>,
    ) -> anyhow::Result<(Value, Option<Value>)> {
        let what = body["request"].clone();
        let transaction = self.transaction();
        let (tx, rx) = oneshot::channel();
        {
            let mut routes = self.routes();
            if let Some(reason) = &routes.closed {
                bail!("VideoRoom {what}: the session's events stopped: {reason}");
            }
            routes.waiting.insert(transaction.clone(), tx);
        }
        let mut message = json!({"janus": "message", "body": body});
        if let Some(jsep) = jsep {
            message["jsep"] = jsep;
        }
        let event = async {
            let reply = self.post(Some(handle), &transaction, message).await?;
            if reply["janus"] != "ack" {
                bail!("Janus answered {reply}");
            }
            match tokio::time::timeout(EVENT_TIMEOUT, rx).await {
                Ok(event) => event.map_err(|_| self.closed_error()),
                Err(_) => bail!("no answer within {EVENT_TIMEOUT:?}"),
            }
        }
        .await;
        if event.is_err() {
            // Nothing will take the answer if it ever comes.
            self.routes().waiting.remove(&transaction);
        }
        let event = event.with_context(|| format!("VideoRoom {what}"))?;
        let data = plugin_data(&event).with_context(|| format!("VideoRoom {what}"))?;
        Ok((data, event.get("jsep").cloned()))
    }

    /// Why the session's events stopped.
    fn closed_error(&self) -> anyhow::Error {
        let reason = self.routes().closed.clone();
        anyhow::anyhow!(
            "the session's events stopped: {}",
            reason.as_deref().unwrap_or("unknown")
        )
    }
}

/// POSTs `body` to `url` and returns the JSON reply, failing on a Janus API error.
async fn post(http: &reqwest::Client, url: &str, body: &Value) -> anyhow::Result<Value> {
    let reply: Value = http
        .post(url)
        .json(body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?
        .error_for_status()
        .with_context(|| format!("POST {url}"))?
        .json()
        .await
        .with_context(|| format!("the reply of POST {url}"))?;
    if reply["janus"] == "error" {
        bail!(
            "Janus refused {}: {} (code {})",
            body["janus"],
            reply["error"]["reason"],
            reply["error"]["code"]
        );
    }
    Ok(reply)
}

/// The VideoRoom's answer in a reply or event (`plugindata.data`), failing on its error.
fn plugin_data(reply: &Value) -> anyhow::Result<Value> {
    let data = &reply["plugindata"]["data"];
    if data.is_null() {
        bail!("no plugin data in {reply}");
    }
    if let Some(error) = data.get("error") {
        bail!(
            "the VideoRoom refused: {error} (code {})",
            data["error_code"]
        );
    }
    Ok(data.clone())
}

/// The SDP of a JSEP object of `kind` (`offer` or `answer`).
fn jsep_sdp(jsep: Option<Value>, kind: &str) -> anyhow::Result<String> {
    let jsep = jsep.with_context(|| format!("no JSEP {kind}"))?;
    if jsep["type"] != kind {
        bail!("expected a JSEP {kind}, got {jsep}");
    }
    jsep["sdp"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no SDP in the JSEP {kind}"))
}

/// The publishers listed in a VideoRoom answer's `field` (`publishers` or `participants`),
/// keeping only those that publish when `field` lists participants.
fn feeds(data: &Value, field: &str) -> anyhow::Result<Vec<Feed>> {
    let list = data[field]
        .as_array()
        .with_context(|| format!("no {field} list in {data}"))?;
    Ok(list
        .iter()
        .filter(|entry| entry.get("publisher").is_none_or(|p| p == true))
        .filter_map(|entry| {
            Some(Feed {
                id: entry["id"].as_u64()?,
                display: entry["display"].as_str().unwrap_or_default().to_owned(),
            })
        })
        .collect())
}

/// One Janus API session, its events long-polled by a background task and routed to the
/// requests and handles they are for. Share it between participants by attaching a handle each.
pub struct Session {
    inner: Arc<Inner>,
}

impl Session {
    /// Creates a session on the Janus API at `janus_url` (see [`Janus::url`]) and starts its
    /// long poll and keepalive tasks (on the current tokio runtime).
    pub async fn connect(janus_url: &str) -> anyhow::Result<Session> {
        let http = reqwest::Client::new();
        let created = post(
            &http,
            janus_url,
            &json!({"janus": "create", "transaction": "create"}),
        )
        .await
        .context("creating a Janus session")?;
        let id = created["data"]["id"]
            .as_u64()
            .with_context(|| format!("no session id in {created}"))?;
        let url = format!("{janus_url}/{id}");
        let routes = Arc::new(Mutex::new(Routes::default()));
        let poll = tokio::spawn(long_poll(http.clone(), url.clone(), routes.clone()));
        let keepalive = tokio::spawn(keepalive(http.clone(), url.clone()));
        Ok(Session {
            inner: Arc::new(Inner {
                http,
                url,
                next_transaction: AtomicU64::new(0),
                routes,
                tasks: [poll.abort_handle(), keepalive.abort_handle()],
            }),
        })
    }

    /// Attaches a new handle to the VideoRoom plugin (one per PeerConnection).
    pub async fn attach(&self) -> anyhow::Result<Handle> {
        let inner = &self.inner;
        let reply = inner
            .post(
                None,
                &inner.transaction(),
                json!({"janus": "attach", "plugin": VIDEOROOM}),
            )
            .await
            .context("attaching to the VideoRoom")?;
        let id = reply["data"]["id"]
            .as_u64()
            .with_context(|| format!("no handle id in {reply}"))?;
        let (tx, events) = mpsc::unbounded_channel();
        {
            let mut routes = inner.routes();
            if let Some(reason) = &routes.closed {
                bail!("the session's events stopped: {reason}");
            }
            routes.handles.insert(id, tx);
        }
        Ok(Handle {
            inner: inner.clone(),
            id,
            events,
        })
    }
}

/// Long-polls the session's events at `url` and routes them until the poll fails (Janus is
/// gone), then closes the routes so that everyone waiting learns it.
async fn long_poll(http: reqwest::Client, url: String, routes: Arc<Mutex<Routes>>) {
    let poll_url = format!("{url}?maxev={MAX_EVENTS}");
    let reason = loop {
        let events = match http.get(&poll_url).send().await {
            Ok(response) => match response.json::<Value>().await {
                Ok(events) => events,
                Err(e) => break format!("a bad long-poll reply: {e}"),
            },
            Err(e) => break format!("the long poll failed: {e}"),
        };
        let mut routes = routes.lock().expect("Janus routes lock");
        match events {
            Value::Array(events) => events.into_iter().for_each(|event| routes.route(event)),
            event => routes.route(event),
        }
        if routes.closed.is_some() {
            return;
        }
    };
    routes.lock().expect("Janus routes lock").close(reason);
}

/// Sends a keepalive to the session at `url` every [`KEEPALIVE_INTERVAL`] (a failure is left to
/// the long poll to notice).
async fn keepalive(http: reqwest::Client, url: String) {
    let body = json!({"janus": "keepalive", "transaction": "keepalive"});
    loop {
        tokio::time::sleep(KEEPALIVE_INTERVAL).await;
        let _ = post(&http, &url, &body).await;
    }
}

/// One handle attached to the VideoRoom: one PeerConnection, a publisher's or a subscriber's.
pub struct Handle {
    inner: Arc<Inner>,
    id: u64,
    /// The handle's events that answer no request.
    events: mpsc::UnboundedReceiver<Value>,
}

impl Drop for Handle {
    /// Stops routing the handle's events (Janus keeps the handle until the session ends).
    fn drop(&mut self) {
        self.inner.routes().handles.remove(&self.id);
    }
}

impl Handle {
    /// Creates room `room` (not kept in Janus's configuration) for up to `publishers`
    /// publishers, forcing Opus and VP8, without a bitrate cap or periodic keyframe requests.
    pub async fn create_room(&self, room: u64, publishers: usize) -> anyhow::Result<()> {
        let body = json!({
            "request": "create",
            "room": room,
            "permanent": false,
            "is_private": true,
            "publishers": publishers,
            "audiocodec": "opus",
            "videocodec": "vp8",
            "bitrate": 0,
            "fir_freq": 0,
        });
        let data = self.inner.request(self.id, body).await?;
        if data["videoroom"] != "created" {
            bail!("VideoRoom create answered {data}");
        }
        Ok(())
    }

    /// The publishers of `room` now (`listparticipants`, those publishing).
    pub async fn publishers(&self, room: u64) -> anyhow::Result<Vec<Feed>> {
        let body = json!({"request": "listparticipants", "room": room});
        let data = self.inner.request(self.id, body).await?;
        feeds(&data, "participants")
    }

    /// Joins `room` as publisher `display` and publishes with the SDP offer `offer_sdp`
    /// (`joinandconfigure`). Simulcast rids in the offer are taken lowest first (`rid_order`
    /// `lmh`, as the bench's q, h, f).
    pub async fn publish(
        &self,
        room: u64,
        display: &str,
        offer_sdp: &str,
    ) -> anyhow::Result<Joined> {
        let body = json!({
            "request": "joinandconfigure",
            "ptype": "publisher",
            "room": room,
            "display": display,
        });
        let jsep = json!({"type": "offer", "sdp": offer_sdp, "trickle": false, "rid_order": "lmh"});
        let (data, jsep) = self.inner.message(self.id, body, Some(jsep)).await?;
        if data["videoroom"] != "joined" {
            bail!("VideoRoom joinandconfigure answered {data}");
        }
        Ok(Joined {
            id: data["id"]
                .as_u64()
                .with_context(|| format!("no publisher id in {data}"))?,
            answer_sdp: jsep_sdp(jsep, "answer")?,
            publishers: feeds(&data, "publishers")?,
        })
    }

    /// Subscribes this handle to every stream of `feeds` in `room` (a multistream subscriber's
    /// `join`) and returns Janus's SDP offer; answer it with [`Handle::start`].
    pub async fn subscribe(&self, room: u64, feeds: &[u64]) -> anyhow::Result<String> {
        let streams: Vec<Value> = feeds.iter().map(|feed| json!({"feed": feed})).collect();
        let body = json!({
            "request": "join",
            "ptype": "subscriber",
            "room": room,
            "streams": streams,
        });
        let (data, jsep) = self.inner.message(self.id, body, None).await?;
        if data["videoroom"] != "attached" {
            bail!("VideoRoom subscriber join answered {data}");
        }
        jsep_sdp(jsep, "offer")
    }

    /// Answers the subscription's offer with `answer_sdp`, which starts the media.
    pub async fn start(&self, answer_sdp: &str) -> anyhow::Result<()> {
        let jsep = json!({"type": "answer", "sdp": answer_sdp, "trickle": false});
        let (data, _) = self
            .inner
            .message(self.id, json!({"request": "start"}), Some(jsep))
            .await?;
        if data["started"] != "ok" {
            bail!("VideoRoom start answered {data}");
        }
        Ok(())
    }

    /// Waits (up to 30 s) for Janus to tell that this handle's PeerConnection is up
    /// (`webrtcup`: ICE and DTLS done): a publisher's feed can be subscribed to from then on.
    /// Fails if Janus hangs the PeerConnection up first.
    pub async fn webrtc_up(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .with_context(|| format!("handle {} not up within {EVENT_TIMEOUT:?}", self.id))?
                .ok_or_else(|| self.inner.closed_error())?;
            match event["janus"].as_str() {
                Some("webrtcup") => return Ok(()),
                Some("hangup") => bail!("Janus hung up handle {}: {}", self.id, event["reason"]),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disables_every_other_library_of_a_folder() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "libjanus_videoroom.so",
            "libjanus_videoroom.so.1",
            "libjanus_sip.so",
            "libjanus_echotest.so",
            "libjanus_echotest.so.1.1.2",
        ] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let disabled = disabled_libraries(dir.path(), PLUGIN_LIBRARY).unwrap();
        assert_eq!(disabled, "libjanus_echotest.so,libjanus_sip.so");
        assert!(disabled_libraries(&dir.path().join("missing"), "").is_err());
    }

    #[test]
    fn lists_publishers_of_a_join_answer_and_of_listparticipants() {
        let joined = json!({"videoroom": "joined", "publishers": [
            {"id": 7, "display": "bob", "streams": []},
            {"id": 8},
        ]});
        let feed = |id, display: &str| Feed {
            id,
            display: display.to_owned(),
        };
        assert_eq!(
            feeds(&joined, "publishers").unwrap(),
            [feed(7, "bob"), feed(8, "")]
        );
        let participants = json!({"videoroom": "participants", "participants": [
            {"id": 7, "display": "bob", "publisher": true},
            {"id": 9, "display": "eve", "publisher": false},
        ]});
        assert_eq!(
            feeds(&participants, "participants").unwrap(),
            [feed(7, "bob")]
        );
        assert!(feeds(&json!({}), "publishers").is_err());
    }

    #[test]
    fn plugin_errors_and_missing_jsep_are_errors() {
        let refused = json!({"plugindata": {"data": {"videoroom": "event", "error_code": 426, "error": "No such room"}}});
        let error = plugin_data(&refused).unwrap_err().to_string();
        assert!(
            error.contains("No such room") && error.contains("426"),
            "{error}"
        );
        assert!(plugin_data(&json!({"janus": "ack"})).is_err());
        assert!(jsep_sdp(None, "answer").is_err());
        let offer = json!({"type": "offer", "sdp": "v=0"});
        assert!(jsep_sdp(Some(offer.clone()), "answer").is_err());
        assert_eq!(jsep_sdp(Some(offer), "offer").unwrap(), "v=0");
    }

    #[test]
    fn routes_answers_by_transaction_and_the_rest_by_handle() {
        let mut routes = Routes::default();
        let (tx, mut answer) = oneshot::channel();
        routes.waiting.insert("t1".to_owned(), tx);
        let (handle_tx, mut handle) = mpsc::unbounded_channel();
        routes.handles.insert(5, handle_tx);

        routes.route(json!({"janus": "event", "sender": 5, "transaction": "t1"}));
        assert_eq!(answer.try_recv().unwrap()["transaction"], "t1");
        routes.route(json!({"janus": "webrtcup", "sender": 5}));
        assert_eq!(handle.try_recv().unwrap()["janus"], "webrtcup");
        routes.route(json!({"janus": "media", "sender": 6}));
        assert!(handle.try_recv().is_err());

        let (tx, mut answer) = oneshot::channel();
        routes.waiting.insert("t2".to_owned(), tx);
        routes.route(json!({"janus": "timeout", "session_id": 1}));
        assert!(answer.try_recv().is_err() && handle.try_recv().is_err());
        assert_eq!(
            routes.closed.as_deref(),
            Some("Janus timed the session out")
        );
    }
}
