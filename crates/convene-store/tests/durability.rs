//! Durability under `kill -9` (SQLite): a writer process creates meetings and commits changes in
//! a loop, printing each acknowledged write; the test SIGKILLs it mid-write several times, reopens
//! the database after every kill, and checks that every acknowledged write is there and that
//! `PRAGMA integrity_check` answers `ok`.
//!
//! `harness = false`: this binary is both the test (no arguments) and, re-executed with
//! `CONVENE_DURABILITY_CHILD=<db path>`, the writer. Synchronisation is by the writer's output
//! (with deadlines), never by sleeping.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use convene_core::Timestamp;
use convene_core::ids::{DisplayName, Identity, MeetingId};
use convene_core::meeting::{
    Credentials, MeetingSettings, Metadata, Mode, QualityPreset, WaitingPolicy,
};
use convene_core::ops::{self, Entry, Tx};
use convene_core::participant::Role;
use convene_core::ports::Store;
use convene_store::SqlStore;
use rand::SeedableRng;
use rand::rngs::StdRng;
use sqlx::Connection;

const CHILD_ENV: &str = "CONVENE_DURABILITY_CHILD";
const ROUND_ENV: &str = "CONVENE_DURABILITY_ROUND";
const ROUNDS: u32 = 5;
/// Longest wait for the writer's next acknowledgement before the test fails.
const ACK_DEADLINE: Duration = Duration::from_secs(30);

/// One test: the parent kills writers; re-executed with the child variable set (as this same
/// test, `--exact --nocapture`), the binary is the writer.
#[test]
fn durability_under_kill_9() {
    match std::env::var(CHILD_ENV) {
        Ok(path) => writer(Path::new(&path)),
        Err(_) => parent(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

// ----- the writer (child process) --------------------------------------------------------------

fn meeting_id(round: u32, n: u32) -> String {
    format!("{}{n:07}", round + 1)
}

/// Writes until killed: for each meeting, `created <id>` after `create_meeting` returned and
/// `entered <id>` after a `commit` returned. Each line is printed only once the write is acknowledged.
fn writer(path: &Path) {
    let round: u32 = std::env::var(ROUND_ENV)
        .ok()
        .and_then(|r| r.parse().ok())
        .expect("round number");
    runtime().block_on(async {
        let store = SqlStore::sqlite(path).await.expect("open");
        store.migrate().await.expect("migrate");
        let mut rng = StdRng::seed_from_u64(u64::from(round));
        let mut stdout = std::io::stdout().lock();
        for n in 0.. {
            let id = meeting_id(round, n);
            let settings = MeetingSettings {
                name: DisplayName::parse("durable").expect("name"),
                mode: Mode::Meeting,
                policy: WaitingPolicy::AskHost,
                capacity: None,
                quality: QualityPreset::Default,
                logout_url: None,
                metadata: Metadata::default(),
                schedule: None,
                webhook_url: None,
                waiting_room_chat: false,
                auto_record: false,
            };
            let credentials = Credentials::new(None, None, None, &mut rng).expect("credentials");
            let now = Timestamp::from_millis(1_000 + i64::from(n));
            let created = ops::create_meeting(
                MeetingId::parse(&id).expect("id"),
                None,
                settings,
                credentials,
                now,
                &mut rng,
            );
            store.create_meeting(&created).await.expect("create");
            writeln!(stdout, "created {id}")
                .and_then(|()| stdout.flush())
                .expect("stdout");

            let mut tx = Tx::new(created.meeting, now);
            let entry = Entry {
                identity: Identity::parse("writer").expect("identity"),
                name: DisplayName::parse("Writer").expect("name"),
                role: Role::Speaker,
                trusted: false,
            };
            ops::enter(&mut tx, None, entry).expect("enter");
            store
                .commit(&tx.finish().expect("a change"))
                .await
                .expect("commit");
            writeln!(stdout, "entered {id}")
                .and_then(|()| stdout.flush())
                .expect("stdout");
        }
    });
}

// ----- the test (parent process) ---------------------------------------------------------------

#[derive(Default)]
struct Acknowledged {
    created: BTreeSet<String>,
    entered: BTreeSet<String>,
}

impl Acknowledged {
    fn record(&mut self, line: &str) {
        // A line cut short by the kill is not an acknowledgement; only whole lines count.
        match line.split_once(' ') {
            Some(("created", id)) => {
                self.created.insert(id.to_owned());
            }
            Some(("entered", id)) => {
                self.entered.insert(id.to_owned());
            }
            _ => {}
        }
    }
}

fn parent() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("data").join("convene.db");
    let mut acknowledged = Acknowledged::default();
    let mut failures = Vec::new();
    for round in 0..ROUNDS {
        let killed_after = 10 + 7 * round as usize;
        let before = acknowledged.created.len() + acknowledged.entered.len();
        kill_writer_mid_write(&path, round, killed_after, &mut acknowledged);
        let acks = acknowledged.created.len() + acknowledged.entered.len() - before;
        match runtime().block_on(verify(&path, &acknowledged)) {
            Ok(()) => println!(
                "round {round}: writer SIGKILLed after {acks} acknowledged writes; all {} acknowledged writes present; integrity_check ok",
                acknowledged.created.len() + acknowledged.entered.len()
            ),
            Err(problem) => failures.push(format!("round {round}: {problem}")),
        }
    }
    println!("durability: {ROUNDS} kills in {:?}", started.elapsed());
    assert!(
        failures.is_empty(),
        "durability test FAILED:\n{}",
        failures.join("\n")
    );
}

/// Starts the writer, waits (with a deadline) until it acknowledged `kill_after` writes, kills it
/// with SIGKILL while it keeps writing, then reads every line it printed before dying.
fn kill_writer_mid_write(
    path: &Path,
    round: u32,
    kill_after: usize,
    acknowledged: &mut Acknowledged,
) {
    let exe = std::env::current_exe().expect("own executable");
    let mut child = Command::new(exe)
        .args([
            "durability_under_kill_9",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, path)
        .env(ROUND_ENV, round.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn writer");
    let stdout = child.stdout.take().expect("piped stdout");
    let (lines_tx, lines_rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut seen = 0;
    while seen < kill_after {
        match lines_rx.recv_timeout(ACK_DEADLINE) {
            Ok(line) => {
                acknowledged.record(&line);
                seen += 1;
            }
            Err(e) => {
                let _ = child.kill();
                let status = child.wait();
                panic!(
                    "round {round}: the writer acknowledged {seen} writes, then stopped ({e:?}); exit: {status:?}"
                );
            }
        }
    }
    child.kill().expect("SIGKILL the writer"); // std's kill() is SIGKILL on Unix.
    let status = child.wait().expect("reap the writer");
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(9),
            "round {round}: the writer must die by SIGKILL, not exit ({status:?})"
        );
    }
    // Everything printed before the kill is an acknowledged write: read up to EOF.
    reader.join().expect("reader thread");
    for line in lines_rx.try_iter() {
        acknowledged.record(&line);
    }
}

async fn verify(path: &Path, acknowledged: &Acknowledged) -> Result<(), String> {
    let store = SqlStore::sqlite(path)
        .await
        .map_err(|e| format!("reopen: {e}"))?;
    store.migrate().await.map_err(|e| format!("migrate: {e}"))?;
    let writer = Identity::parse("writer").expect("identity");
    for id in &acknowledged.created {
        let id = MeetingId::parse(id).map_err(|e| e.to_string())?;
        if store
            .meeting(&id)
            .await
            .map_err(|e| e.to_string())?
            .is_none()
        {
            return Err(format!("acknowledged meeting {id} is missing"));
        }
    }
    for id in &acknowledged.entered {
        let id = MeetingId::parse(id).map_err(|e| e.to_string())?;
        let meeting = store.meeting(&id).await.map_err(|e| e.to_string())?;
        let participant = store
            .participant(&id, &writer)
            .await
            .map_err(|e| e.to_string())?;
        let events = store
            .events_after(&id, 0, 10)
            .await
            .map_err(|e| e.to_string())?;
        if meeting.map(|m| m.last_seq) != Some(2) || participant.is_none() || events.len() != 2 {
            return Err(format!(
                "acknowledged commit to meeting {id} is missing or partial"
            ));
        }
    }
    store.integrity_check().await.map_err(|e| e.to_string())?;
    store.close().await;

    // And the same check through a plain connection, independent of the store's code.
    let mut connection = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .map_err(|e| e.to_string())?;
    let verdict: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut connection)
        .await
        .map_err(|e| e.to_string())?;
    connection.close().await.map_err(|e| e.to_string())?;
    if verdict != "ok" {
        return Err(format!("PRAGMA integrity_check: {verdict}"));
    }
    Ok(())
}
