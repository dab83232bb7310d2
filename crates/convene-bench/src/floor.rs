//! `rust-floor`: the cheapest fan-out this benchmark can be run against, to show what even an ideal
//! server reaches on the machine (docs/benchmarks.md, "Waiting-room fan-out").
//!
//! Started by the load generator as `convene-bench serve-floor --port P` (a hidden mode of the same
//! binary). It speaks the subset of the API that `bench/node-ws/server.js` speaks, with the same
//! paths, JSON shapes and status codes, in memory, no auth beyond random tokens: create a meeting,
//! enter, the events WebSocket with `?access_token=`, the host's join, `/healthz`.
//!
//! Nothing else is in the way: HTTP/1.1 heads are parsed with `httparse` (only what the load generator
//! sends: `Content-Length` bodies, keep-alive), and after the WebSocket handshake the connection is a bare
//! TCP socket that this module frames itself (server frames are unmasked text frames, so a frame
//! is a 2- or 4-byte header and the JSON). Each guest's frame tail (`"type"` and `"data"`, its own
//! identity already escaped) is rendered when its stream opens; the host's join renders the part
//! all frames share (`seq`, `at`) once.
//!
//! The fan-out: the join handler writes every waiting guest's frame straight into its socket
//! (one non-blocking `send` per guest: no task woken, no queue, no copy but the frame's ~110
//! bytes), on two threads so that both cores send: the handler's own and a fan-out thread started
//! with the server, which the join hands the work to through a channel. The two take chunks of
//! guests from a shared counter, so if the fan-out thread is late to get a core (the load
//! generator shares the two), the handler's thread simply writes more; it then waits only for a
//! chunk the other thread is still writing. A socket that would block (not expected of an idle
//! loopback socket; the join reports how many did) gets the rest of its frame from a task that
//! waits until it is writable.
//!
//! The host's join response is written only after every frame has been handed to the kernel, as
//! the Node.js server does (its `socket.send` loop runs before it answers), so its "from the
//! response" latencies are ~0 by construction and "from the request" is the figure compared.
//!
//! `store-floor` (`serve-floor --data-dir D`) is the same server doing, in addition, the two things
//! convene's admission cannot skip and rust-floor does not do, so that the benchmark can show what
//! they alone cost on this machine:
//! - **the admission made durable before anyone hears of it**: one transaction in SQLite with
//!   convene's settings (WAL, `synchronous = FULL`) through sqlx, as convene's store writes it: the
//!   meeting's row (live, its last sequence number), the host's row, and the three events of the
//!   join (`meeting.started`, the one event listing everyone admitted, the host's
//!   `participant.joined`) with their JSON;
//! - **the frames convene sends each waiting guest**: those three events, the admission in the
//!   guest's own form, in one `send`, of the same shape and about the same size as convene's.
//!
//! Guests' entries are not stored (the benchmark does not time them). Its tables are the shape of
//! convene's, not convene's schema: no version check, no indexes but the keys. A guest whose stream
//! opens while the admission is being committed gets its frames before the commit (the benchmark
//! opens none then).
//!
//! Also tried, and slower in the same small runs: per-connection tasks woken by one shared
//! `tokio::sync::Notify`, each writing its own frame (every guest also costs a wake-up and a poll),
//! the join's thread writing every frame alone, and a fixed split in two halves with a thread
//! spawned per join (the join waited for that thread to be scheduled).

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Value, json};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// The largest request head accepted (the load generator's are a few hundred bytes).
const MAX_HEAD: usize = 16 * 1024;
/// Below this many guests the join's own thread writes every frame (waking the helper would cost
/// more than it saves).
const SPLIT_AT: usize = 64;
/// Guests a thread takes at a time.
const CHUNK: usize = 32;

/// Runs the server on `127.0.0.1:port` until killed, on a two-worker runtime; with `data_dir`,
/// as `store-floor` (its SQLite database in that directory).
pub fn serve(port: u16, data_dir: Option<&Path>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (jobs, next) = std::sync::mpsc::channel::<Arc<Fanout>>();
    std::thread::Builder::new()
        .name("fan-out".into())
        .spawn(move || {
            while let Ok(job) = next.recv() {
                job.work();
            }
        })?;
    runtime.block_on(async move {
        let store = match data_dir {
            Some(dir) => Some(Store::open(dir).await?),
            None => None,
        };
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let state = Arc::new(State {
            helper: jobs,
            meetings: Mutex::default(),
            store,
        });
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, most likely: wait for some to close.
                    eprintln!("[rust-floor] accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(connection(stream, state.clone()));
        }
    })
}

struct State {
    /// The fan-out thread: a join hands it its [`Fanout`] so that two threads write the frames.
    helper: std::sync::mpsc::Sender<Arc<Fanout>>,
    meetings: Mutex<HashMap<String, Arc<Meeting>>>,
    /// `store-floor`'s database.
    store: Option<Store>,
}

struct Meeting {
    id: String,
    host_pin: String,
    guest_pin: String,
    room: Mutex<Room>,
}

#[derive(Default)]
struct Room {
    /// Set by the host's first join, with the start every admission frame shares.
    admission: Option<Arc<[u8]>>,
    seq: u64,
    tokens: HashMap<String, Caller>,
    /// Guests whose stream is open and who have not been admitted, by identity.
    waiting: HashMap<String, Waiting>,
}

#[derive(Clone)]
struct Caller {
    identity: Value,
    role: &'static str,
}

struct Waiting {
    stream: Arc<TcpStream>,
    /// `,"type":"participant.admitted","data":{...}}`: the end of this guest's admission frame.
    tail: Box<[u8]>,
}

struct Request {
    method: String,
    path: String,
    query: String,
    authorization: Option<String>,
    websocket_key: Option<String>,
    body: Vec<u8>,
}

/// One accepted connection: HTTP requests (keep-alive) until it closes or becomes a stream.
async fn connection(mut stream: TcpStream, state: Arc<State>) {
    let mut buf = Vec::with_capacity(1024);
    while let Ok(Some(request)) = read_request(&mut stream, &mut buf).await {
        let reply = match route(&state, request) {
            Route::Reply(status, body) => response(status, &body),
            Route::Created(id, body) => {
                if let Some(store) = &state.store
                    && let Err(e) = store.create(&id).await
                {
                    eprintln!("[store-floor] create: {e}");
                    return;
                }
                response(201, &body)
            }
            Route::Join(meeting, caller) => {
                let identity = caller.identity.as_str().unwrap_or_default();
                if let Err(e) = join(&meeting, identity, &state).await {
                    eprintln!("[store-floor] join: {e}");
                    return;
                }
                response(
                    200,
                    &json!({"identity": caller.identity, "role": caller.role}),
                )
            }
            Route::Events(meeting, caller, key) => {
                events(stream, meeting, caller, key, state.store.is_some()).await;
                return;
            }
        };
        if stream.write_all(&reply).await.is_err() {
            return;
        }
    }
}

enum Route {
    Reply(u16, Value),
    /// A new meeting (`store-floor` stores its row before answering).
    Created(String, Value),
    Join(Arc<Meeting>, Caller),
    Events(Arc<Meeting>, Caller, String),
}

fn route(state: &State, request: Request) -> Route {
    let method = request.method.as_str();
    if method == "GET" && request.path == "/healthz" {
        return Route::Reply(200, json!({"status": "ok"}));
    }
    if method == "POST" && request.path == "/v1/meetings" {
        let id = rand::random_range(1_000_000_000u64..10_000_000_000).to_string();
        let meeting = Meeting {
            id: id.clone(),
            host_pin: pin(),
            guest_pin: pin(),
            room: Mutex::default(),
        };
        let body = json!({
            "meeting_id": id,
            "credentials": {"host": meeting.host_pin, "participant": meeting.guest_pin},
        });
        lock(&state.meetings).insert(id.clone(), Arc::new(meeting));
        return Route::Created(id, body);
    }
    let parts: Vec<&str> = request.path.split('/').filter(|p| !p.is_empty()).collect();
    let meeting = match parts.as_slice() {
        ["v1", "meetings", id, ..] => lock(&state.meetings).get(*id).cloned(),
        _ => None,
    };
    let Some(meeting) = meeting else {
        return not_found();
    };
    match (method, parts.get(3).copied()) {
        ("POST", Some("enter")) => {
            let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
            let credential = body["credential"].as_str();
            let role = if credential == Some(meeting.host_pin.as_str()) {
                "host"
            } else if credential == Some(meeting.guest_pin.as_str()) {
                "speaker"
            } else {
                return Route::Reply(403, json!({"error": {"code": "meeting_access_denied"}}));
            };
            let token = token();
            let identity = body["identity"].clone();
            let mut room = lock(&meeting.room);
            let admitted = role == "host" || room.admission.is_some();
            room.tokens.insert(
                token.clone(),
                Caller {
                    identity: identity.clone(),
                    role,
                },
            );
            let state = if admitted { "admitted" } else { "waiting" };
            Route::Reply(
                200,
                json!({"identity": identity, "role": role, "state": state, "token": token}),
            )
        }
        ("POST", Some("join")) => {
            let token = request
                .authorization
                .as_deref()
                .and_then(|a| a.strip_prefix("Bearer "));
            let caller = token.and_then(|t| lock(&meeting.room).tokens.get(t).cloned());
            match caller {
                Some(caller) if caller.role == "host" => Route::Join(meeting, caller),
                _ => Route::Reply(403, json!({"error": {"code": "forbidden"}})),
            }
        }
        ("GET", Some("events")) => {
            let token = request
                .query
                .split('&')
                .find_map(|pair| pair.strip_prefix("access_token="));
            let caller = token.and_then(|t| lock(&meeting.room).tokens.get(t).cloned());
            match (caller, request.websocket_key) {
                (Some(caller), Some(key)) => Route::Events(meeting, caller, key),
                (None, _) => Route::Reply(401, json!({"error": {"code": "unauthorized"}})),
                (Some(_), None) => Route::Reply(400, json!({"error": {"code": "not_websocket"}})),
            }
        }
        _ => not_found(),
    }
}

fn not_found() -> Route {
    Route::Reply(404, json!({"error": {"code": "not_found"}}))
}

/// The host's join: the meeting goes live and every waiting guest gets its admission frame, all
/// handed to the kernel before this returns. As `store-floor`: the admission committed first, and
/// each guest sent convene's three frames.
async fn join(meeting: &Meeting, host: &str, state: &State) -> anyhow::Result<()> {
    let started = Instant::now();
    let (guests, start, frames, admission) = {
        let mut room = lock(&meeting.room);
        if room.admission.is_some() {
            return Ok(());
        }
        let at = time::OffsetDateTime::now_utc();
        let mut guests: Vec<(String, Waiting)> = room.waiting.drain().collect();
        let first = room.seq + 1;
        let (start, frames, admission) = if state.store.is_some() {
            room.seq = first + 2;
            let (start, frames, admission) = convene_join(meeting, host, first, at, &mut guests);
            (start, frames, Some(admission))
        } else {
            room.seq = first;
            let start = format!(r#"{{"seq":{first},"at":"{}""#, rfc3339(at));
            (start, Frames::default(), None)
        };
        let start: Arc<[u8]> = start.into_bytes().into();
        room.admission = Some(start.clone());
        let guests: Vec<Waiting> = guests.into_iter().map(|(_, w)| w).collect();
        (guests, start, frames, admission)
    };
    let mut committed = None;
    if let (Some(store), Some(admission)) = (&state.store, &admission) {
        store.admit(admission).await?;
        committed = Some(started.elapsed());
    }
    let count = guests.len();
    let job = Arc::new(Fanout {
        guests,
        start,
        frames,
        next: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        late: Mutex::default(),
    });
    if count >= SPLIT_AT {
        let _ = state.helper.send(job.clone());
    }
    job.work();
    // Only a chunk the helper took can still be in progress.
    while job.done.load(Ordering::Acquire) < count {
        std::thread::yield_now();
    }
    let late = std::mem::take(&mut *lock(&job.late));
    let blocked = late.len();
    for (stream, rest) in late {
        tokio::spawn(async move {
            let _ = send_all(&stream, &rest).await;
        });
    }
    let (name, commit) = match committed {
        Some(at) => (
            "store-floor",
            format!(", committed in {:.1} ms", at.as_secs_f64() * 1000.0),
        ),
        None => ("rust-floor", String::new()),
    };
    eprintln!(
        "[{name}] join: {count} admissions handed to the kernel in {:.1} ms{commit} ({blocked} would block)",
        started.elapsed().as_secs_f64() * 1000.0
    );
    Ok(())
}

/// convene's three events of a host's join, first numbered `first`: the start of each guest's
/// admission frame (`seq`, `at`, `instance_id`), the frames of the other two, and what
/// `store-floor` commits (the admission listing `guests`, which this sorts, as convene's does).
fn convene_join(
    meeting: &Meeting,
    host: &str,
    first: u64,
    at: time::OffsetDateTime,
    guests: &mut [(String, Waiting)],
) -> (String, Frames, Admission) {
    let at_text = rfc3339(at);
    let run = format!("run_{}", token());
    let head = |seq: u64| format!(r#"{{"seq":{seq},"at":"{at_text}","instance_id":"{run}""#);
    let started_data = json!({"instance_id": run, "room_name": meeting.id, "run": 1});
    let joined_data = json!({"identity": host, "name": host, "role": "host"});
    let mut before = Vec::new();
    let started_tail = format!(r#","type":"meeting.started","data":{started_data}}}"#);
    push_frame(&mut before, head(first).as_bytes(), started_tail.as_bytes());
    let mut after = Vec::new();
    let joined_tail = format!(r#","type":"participant.joined","data":{joined_data}}}"#);
    push_frame(
        &mut after,
        head(first + 2).as_bytes(),
        joined_tail.as_bytes(),
    );
    let start = head(first + 1);
    guests.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    // Each key is already JSON (a string with its quotes).
    let admitted: Vec<&str> = guests
        .iter()
        .map(|(identity, _)| identity.as_str())
        .collect();
    let admission = Admission {
        meeting: meeting.id.clone(),
        last_seq: (first + 2) as i64,
        at_ms: (at.unix_timestamp_nanos() / 1_000_000) as i64,
        host: host.to_owned(),
        events: [
            (first as i64, "meeting.started", started_data.to_string()),
            (
                (first + 1) as i64,
                "participants.admitted",
                format!(
                    r#"{{"identities":[{}],"room_name":{},"status":"live"}}"#,
                    admitted.join(","),
                    json!(meeting.id)
                ),
            ),
            (
                (first + 2) as i64,
                "participant.joined",
                joined_data.to_string(),
            ),
        ],
        run,
    };
    let frames = Frames {
        before: before.into(),
        after: after.into(),
    };
    (start, frames, admission)
}

fn rfc3339(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Whole frames sent before and after each guest's admission (`store-floor`'s; none for
/// rust-floor).
#[derive(Default)]
struct Frames {
    before: Box<[u8]>,
    after: Box<[u8]>,
}

/// What `store-floor` commits for a host's join.
struct Admission {
    meeting: String,
    last_seq: i64,
    at_ms: i64,
    run: String,
    host: String,
    /// `(seq, type, data)` of each event.
    events: [(i64, &'static str, String); 3],
}

/// `store-floor`'s database: SQLite with convene's settings, one connection (convene's writes go
/// through one writer too).
struct Store {
    pool: sqlx::SqlitePool,
}

impl Store {
    async fn open(dir: &Path) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(dir.join("store-floor.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        for table in [
            "CREATE TABLE meetings (id TEXT PRIMARY KEY, status TEXT NOT NULL, \
             last_seq BIGINT NOT NULL, run TEXT)",
            "CREATE TABLE participants (meeting_id TEXT NOT NULL, identity TEXT NOT NULL, \
             name TEXT NOT NULL, role TEXT NOT NULL, state TEXT NOT NULL, at BIGINT NOT NULL, \
             PRIMARY KEY (meeting_id, identity))",
            "CREATE TABLE events (meeting_id TEXT NOT NULL, seq BIGINT NOT NULL, \
             at BIGINT NOT NULL, instance_id TEXT NOT NULL, type TEXT NOT NULL, \
             data TEXT NOT NULL, PRIMARY KEY (meeting_id, seq))",
        ] {
            sqlx::query(table).execute(&pool).await?;
        }
        Ok(Self { pool })
    }

    async fn create(&self, id: &str) -> sqlx::Result<()> {
        sqlx::query("INSERT INTO meetings (id, status, last_seq) VALUES (?, 'created', 0)")
            .bind(id)
            .execute(&self.pool)
            .await
            .map(drop)
    }

    /// One transaction, durable when this returns: the meeting live, the host joined, the
    /// three events.
    async fn admit(&self, admission: &Admission) -> sqlx::Result<()> {
        let Admission {
            meeting,
            last_seq,
            at_ms,
            run,
            host,
            events,
        } = admission;
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE meetings SET status = 'live', last_seq = ?, run = ? WHERE id = ?")
            .bind(last_seq)
            .bind(run)
            .bind(meeting)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO participants (meeting_id, identity, name, role, state, at) \
             VALUES (?, ?, ?, 'host', 'joined', ?)",
        )
        .bind(meeting)
        .bind(host)
        .bind(host)
        .bind(at_ms)
        .execute(&mut *tx)
        .await?;
        let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO events (meeting_id, seq, at, instance_id, type, data) ",
        );
        insert.push_values(events.iter(), |mut row, (seq, kind, data)| {
            row.push_bind(meeting)
                .push_bind(seq)
                .push_bind(at_ms)
                .push_bind(run)
                .push_bind(*kind)
                .push_bind(data);
        });
        insert.build().execute(&mut *tx).await?;
        tx.commit().await
    }
}

/// The admission frames of one join, written by whichever threads take chunks of them.
struct Fanout {
    guests: Vec<Waiting>,
    start: Arc<[u8]>,
    frames: Frames,
    /// The first guest no thread has taken yet.
    next: AtomicUsize,
    /// How many guests' frames have been handed to the kernel (or set aside in `late`).
    done: AtomicUsize,
    /// What would block: the rest of a frame, for a task to write once the socket is writable.
    late: Mutex<Vec<(Arc<TcpStream>, Vec<u8>)>>,
}

impl Fanout {
    /// Takes chunks of guests until none is left, writing each guest's frame.
    fn work(&self) {
        let mut frame = Vec::with_capacity(256);
        loop {
            let from = self.next.fetch_add(CHUNK, Ordering::Relaxed);
            if from >= self.guests.len() {
                return;
            }
            let to = (from + CHUNK).min(self.guests.len());
            let late = deliver(
                &self.guests[from..to],
                [&self.frames.before, &self.start, &self.frames.after],
                &mut frame,
            );
            if !late.is_empty() {
                lock(&self.late).extend(late);
            }
            self.done.fetch_add(to - from, Ordering::Release);
        }
    }
}

/// Writes each guest's frames (`before`, its admission of `start` and its tail, `after`) with one
/// non-blocking `send`; returns what did not fit.
fn deliver(
    guests: &[Waiting],
    [before, start, after]: [&[u8]; 3],
    frame: &mut Vec<u8>,
) -> Vec<(Arc<TcpStream>, Vec<u8>)> {
    let mut late = Vec::new();
    for guest in guests {
        frame.clear();
        frame.extend_from_slice(before);
        push_frame(frame, start, &guest.tail);
        frame.extend_from_slice(after);
        let written = match guest.stream.try_write(frame) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            // Gone: its reader sees the close.
            Err(_) => continue,
        };
        if written < frame.len() {
            late.push((guest.stream.clone(), frame[written..].to_vec()));
        }
    }
    late
}

/// An unmasked WebSocket text frame of `start` then `tail` (one JSON text) into `out`.
fn render(start: &[u8], tail: &[u8], out: &mut Vec<u8>) {
    out.clear();
    push_frame(out, start, tail);
}

/// Appends an unmasked WebSocket text frame of `start` then `tail` to `out`.
fn push_frame(out: &mut Vec<u8>, start: &[u8], tail: &[u8]) {
    let len = start.len() + tail.len();
    out.push(0x81);
    if len < 126 {
        out.push(len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(start);
    out.extend_from_slice(tail);
}

/// `,"type":"participant.admitted","data":{"identity":..,"status":"live"}}`: the end of a guest's
/// admission frame, after the `seq` and `at` every guest's frame shares.
/// With `room`, as convene's (`store-floor`'s): `{"identity":..,"room_name":..,"status":"live"}`.
fn admission_tail(identity: &Value, room: Option<&str>) -> Box<[u8]> {
    let mut tail = br#","type":"participant.admitted","data":"#.to_vec();
    let data = match room {
        Some(room) => json!({"identity": identity, "room_name": room, "status": "live"}),
        None => json!({"identity": identity, "status": "live"}),
    };
    // A `Value` always serializes.
    let _ = serde_json::to_writer(&mut tail, &data);
    tail.push(b'}');
    tail.into_boxed_slice()
}

/// A guest's event stream: the handshake and the snapshot, then (if the meeting is not live yet)
/// waiting in the room for the join to write its admission; reads until the guest closes.
async fn events(
    stream: TcpStream,
    meeting: Arc<Meeting>,
    caller: Caller,
    key: String,
    durable: bool,
) {
    let stream = Arc::new(stream);
    let (live, seq) = {
        let room = lock(&meeting.room);
        (room.admission.is_some(), room.seq)
    };
    let status = if live { "live" } else { "created" };
    let snapshot = json!({
        "type": "snapshot",
        "seq": seq,
        "data": {"meeting": {"status": status}, "you": {"identity": caller.identity, "state": "waiting"}},
    })
    .to_string();
    let mut hello = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    )
    .into_bytes();
    let mut frame = Vec::new();
    render(snapshot.as_bytes(), b"", &mut frame);
    hello.extend_from_slice(&frame);
    if send_all(&stream, &hello).await.is_err() {
        return;
    }
    let identity = caller.identity.to_string();
    if !live {
        // Registered only now that the snapshot is out, so no admission can overtake it. A join
        // in between went without this guest: it gets its frame here.
        let room = durable.then_some(meeting.id.as_str());
        let tail = admission_tail(&caller.identity, room);
        let missed = {
            let mut room = lock(&meeting.room);
            match room.admission.clone() {
                Some(start) => Some((start, tail)),
                None => {
                    let stream = stream.clone();
                    room.waiting
                        .insert(identity.clone(), Waiting { stream, tail });
                    None
                }
            }
        };
        if let Some((start, tail)) = missed {
            render(&start, &tail, &mut frame);
            if send_all(&stream, &frame).await.is_err() {
                return;
            }
        }
    }
    // Nothing the guest sends matters; read until it closes.
    let mut scratch = [0u8; 64];
    loop {
        if stream.readable().await.is_err() {
            break;
        }
        match stream.try_read(&mut scratch) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
    }
    let mut room = lock(&meeting.room);
    if room
        .waiting
        .get(&identity)
        .is_some_and(|w| Arc::ptr_eq(&w.stream, &stream))
    {
        room.waiting.remove(&identity);
    }
}

/// Writes all of `bytes` to a socket shared with other writers' readiness checks.
async fn send_all(stream: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads one request (head and `Content-Length` body) from `stream`, keeping what follows it in
/// `buf`; `None` once the peer closed.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Option<Request>> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(io::ErrorKind::InvalidData.into());
        }
        buf.reserve(4096);
        if stream.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Request::new(&mut headers);
    parsed
        .parse(&buf[..head_end])
        .map_err(|_| io::ErrorKind::InvalidData)?;
    let target = parsed.path.unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut request = Request {
        method: parsed.method.unwrap_or_default().to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        authorization: None,
        websocket_key: None,
        body: Vec::new(),
    };
    let mut content_length = 0;
    for header in parsed.headers.iter() {
        let value = std::str::from_utf8(header.value)
            .map_err(|_| io::ErrorKind::InvalidData)?
            .trim();
        if header.name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse().map_err(|_| io::ErrorKind::InvalidData)?;
        } else if header.name.eq_ignore_ascii_case("authorization") {
            request.authorization = Some(value.to_owned());
        } else if header.name.eq_ignore_ascii_case("sec-websocket-key") {
            request.websocket_key = Some(value.to_owned());
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            // Not sent by the load generator.
            return Err(io::ErrorKind::Unsupported.into());
        }
    }
    while buf.len() < head_end + content_length {
        buf.reserve(head_end + content_length - buf.len());
        if stream.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
    request.body = buf[head_end..head_end + content_length].to_vec();
    buf.drain(..head_end + content_length);
    Ok(Some(request))
}

fn response(status: u16, body: &Value) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        _ => "Not Found",
    };
    let body = body.to_string();
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn pin() -> String {
    rand::random_range(10_000_000u32..100_000_000).to_string()
}

fn token() -> String {
    rand::random::<[u8; 24]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn store_floor_commits_the_admission_as_convene_stores_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        store.create("m1").await.unwrap();
        let admission = Admission {
            meeting: "m1".into(),
            last_seq: 3,
            at_ms: 1,
            run: "run_x".into(),
            host: "host".into(),
            events: [
                (1, "meeting.started", "{}".into()),
                (
                    2,
                    "participants.admitted",
                    r#"{"identities":["a","b"]}"#.into(),
                ),
                (3, "participant.joined", "{}".into()),
            ],
        };
        store.admit(&admission).await.unwrap();
        let (status, last): (String, i64) =
            sqlx::query_as("SELECT status, last_seq FROM meetings WHERE id = 'm1'")
                .fetch_one(&store.pool)
                .await
                .unwrap();
        assert_eq!((status.as_str(), last), ("live", 3));
        let kinds: Vec<(i64, String)> =
            sqlx::query_as("SELECT seq, type FROM events WHERE meeting_id = 'm1' ORDER BY seq")
                .fetch_all(&store.pool)
                .await
                .unwrap();
        let kinds: Vec<(i64, &str)> = kinds.iter().map(|(s, k)| (*s, k.as_str())).collect();
        assert_eq!(
            kinds,
            [
                (1, "meeting.started"),
                (2, "participants.admitted"),
                (3, "participant.joined")
            ]
        );
        // An admission that cannot be written whole (the host's row is there already) leaves
        // nothing behind: the meeting's row and the events are as they were.
        let again = Admission {
            last_seq: 6,
            events: [
                (4, "meeting.started", "{}".into()),
                (5, "participants.admitted", "{}".into()),
                (6, "participant.joined", "{}".into()),
            ],
            ..admission
        };
        assert!(store.admit(&again).await.is_err());
        let (last,): (i64,) = sqlx::query_as("SELECT last_seq FROM meetings WHERE id = 'm1'")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        let (events,): (i64,) = sqlx::query_as("SELECT count(*) FROM events")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!((last, events), (3, 3));
    }

    #[test]
    fn frames_are_whole_websocket_text_frames_back_to_back() {
        let mut out = Vec::new();
        push_frame(&mut out, br#"{"seq":1"#, b"}");
        let long = vec![b'x'; 300];
        push_frame(&mut out, b"", &long);
        assert_eq!(&out[..2], &[0x81, 9]);
        assert_eq!(&out[2..11], br#"{"seq":1}"#);
        assert_eq!(&out[11..15], &[0x81, 126, 1, 44]);
        assert_eq!(out.len(), 15 + 300);
    }
}
