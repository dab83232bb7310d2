//! The Store conformance suite: every test body is written once and runs against SQLite (a temp
//! directory) and PostgreSQL (`CONVENE_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`, one fresh schema per test). An unreachable
//! PostgreSQL fails the suite unless `CONVENE_TEST_SKIP_POSTGRES=1`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use convene_core::Timestamp;
use convene_core::apikey::ApiKey;
use convene_core::event::{Audience, EventKind, TrackSelector};
use convene_core::ids::{ChatText, DisplayName, Identity, MeetingId, RoomName};
use convene_core::lockout::{FailureRecord, FailureScope};
use convene_core::login::{CodeRecord, Email, LoginCode, LoginStore, SendCount, User, UserId};
use convene_core::meeting::{
    Credentials, LogoutUrl, Meeting, MeetingSettings, Metadata, Mode, QualityPreset, Schedule,
    WaitingPolicy,
};
use convene_core::ops::{self, Actor, Change, Entry, Tx};
use convene_core::participant::{Participant, ParticipantState, Role};
use convene_core::ports::{PeopleCount, Store, StoreError};
use convene_core::webhook::{
    Attempt, AttemptOutcome, DeliveryFilter, DeliveryStatus, EndpointScope, Lane, WebhookStore,
    WebhookUrl, deployment_endpoint_id, meeting_endpoint_id,
};
use convene_store::SqlStore;
use rand::SeedableRng;
use rand::rngs::StdRng;
use sqlx::{Connection, Executor};

// ----- harness ---------------------------------------------------------------------------------

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

enum Target {
    Sqlite {
        _dir: tempfile::TempDir,
        path: PathBuf,
    },
    Postgres {
        url: String,
        _schema: Schema,
    },
}

/// One test's database. Fields drop in order: the store's pool first, then the schema.
struct TestDb {
    store: SqlStore,
    target: Target,
}

impl TestDb {
    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("nested").join("convene.db");
        let store = SqlStore::sqlite(&path).await.expect("open SQLite");
        store.migrate().await.expect("migrate SQLite");
        Self {
            store,
            target: Target::Sqlite { _dir: dir, path },
        }
    }

    /// A store on a fresh schema, or `None` when PostgreSQL is unreachable and skipping was asked for.
    async fn postgres() -> Option<Self> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let base = std::env::var("CONVENE_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into());
        let skip = std::env::var("CONVENE_TEST_SKIP_POSTGRES").is_ok_and(|v| v == "1");
        let admin =
            tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(&base)).await;
        let mut admin = match admin {
            Ok(Ok(connection)) => connection,
            failure => {
                let why = match failure {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out after 5 s".into(),
                };
                if skip {
                    eprintln!(
                        "SKIPPED on PostgreSQL (CONVENE_TEST_SKIP_POSTGRES=1): {base} unreachable: {why}"
                    );
                    return None;
                }
                panic!(
                    "PostgreSQL at {base} is unreachable ({why}). Start it, point CONVENE_TEST_POSTGRES_URL \
                     at a reachable database, or set CONVENE_TEST_SKIP_POSTGRES=1 to test SQLite only."
                );
            }
        };
        let name = format!(
            "convene_test_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        );
        admin
            .execute(format!("CREATE SCHEMA {name}").as_str())
            .await
            .expect("create test schema");
        admin.close().await.ok();
        let schema = Schema {
            admin_url: base.clone(),
            name: name.clone(),
        };
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}options=-c%20search_path%3D{name}");
        let store = SqlStore::postgres(&url).await.expect("connect PostgreSQL");
        store.migrate().await.expect("migrate PostgreSQL");
        Some(Self {
            store,
            target: Target::Postgres {
                url,
                _schema: schema,
            },
        })
    }

    fn store(&self) -> &SqlStore {
        &self.store
    }

    /// Closes the store and opens it again (and migrates again: migrations are idempotent).
    async fn reopen(&mut self) {
        self.store.close().await;
        self.store = match &self.target {
            Target::Sqlite { path, .. } => SqlStore::sqlite(path).await.expect("reopen SQLite"),
            Target::Postgres { url, .. } => {
                SqlStore::postgres(url).await.expect("reconnect PostgreSQL")
            }
        };
        self.store.migrate().await.expect("migrate again");
    }

    async fn finish(self) {
        self.store.close().await;
    }
}

/// A PostgreSQL schema dropped (with its tables) when the test ends, even by panic.
struct Schema {
    admin_url: String,
    name: String,
}

impl Drop for Schema {
    fn drop(&mut self) {
        let url = self.admin_url.clone();
        let sql = format!(
            "SET lock_timeout = '5s'; DROP SCHEMA IF EXISTS {} CASCADE",
            self.name
        );
        // Drop cannot await: use a private runtime on a private thread.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut connection = sqlx::PgConnection::connect(&url).await.ok()?;
                connection.execute(sql.as_str()).await.ok()?;
                connection.close().await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("warning: could not drop test schema {}", self.name);
        }
    }
}

/// Runs each body on SQLite and on PostgreSQL, as `sqlite::name` and `postgres::name`.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let mut db = super::TestDb::sqlite().await;
                    super::$name(&mut db).await;
                    db.finish().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(mut db) = super::TestDb::postgres().await else { return };
                    super::$name(&mut db).await;
                    db.finish().await;
                }
            )*
        }
    };
}

conformance!(
    meetings_are_created_found_and_listed_by_pages,
    duplicate_ids_and_room_names_are_refused,
    commits_round_trip_meeting_participants_and_every_event_kind,
    concurrent_commits_from_one_version_let_exactly_one_win,
    queued_changes_commit_together_and_a_failure_fails_what_was_computed_on_it,
    new_meetings_queued_among_changes_commit_in_their_place,
    guests_queued_across_meetings_wait_for_their_meetings_next_admission,
    events_page_in_order_without_gaps,
    participants_filter_by_state_and_count,
    people_are_counted_per_meeting_and_the_queue_is_in_entry_order,
    ten_thousand_waiting_are_admitted_in_one_commit,
    an_admission_of_everyone_waiting_is_read_as_admitting_each_of_them,
    a_bulk_admission_that_saw_another_waiting_room_conflicts,
    waiting_identities_come_back_exactly_and_in_byte_order,
    api_keys_insert_get_list_revoke,
    failure_counters_count_forget_and_clear,
    data_survives_closing_and_reopening,
    webhook_deliveries_are_queued_with_the_events_and_sent_in_lane_order,
    webhook_endpoints_follow_configuration_and_meeting_settings,
    webhook_leases_keep_two_senders_apart,
    login_send_counters_count_in_fixed_windows,
    login_codes_replace_and_update_only_from_the_version_read,
    users_are_unique_by_id_and_email,
    nonces_are_used_once_even_concurrently_and_across_restarts,
    media_rooms_have_one_live_holder_and_move_only_off_a_dead_one,
    housekeeping_drops_only_stale_counters_and_expired_codes,
    the_meetings_recording_now_are_found_and_their_recording_round_trips,
);

/// A meeting's running recording is kept with the meeting (and read back exactly); the meetings
/// recording now are found without reading the others.
async fn the_meetings_recording_now_are_found_and_their_recording_round_trips(db: &mut TestDb) {
    let store = db.store();
    let mut rng = StdRng::seed_from_u64(24);
    for id in ["3001", "3002", "3003"] {
        let change = new_meeting(id, None, WaitingPolicy::Open, &mut rng);
        store.create_meeting(&change).await.expect("create");
        step(store, id, 2_000, |tx, _| {
            let mut rng = StdRng::seed_from_u64(1);
            ops::start_meeting(tx, &Actor::Admin, Vec::new(), &mut rng).expect("start");
        })
        .await;
    }
    assert_eq!(store.recording_meetings().await.expect("none"), Vec::new());
    let mut recording = None;
    for id in ["3002", "3003"] {
        // `step` checks the meeting, its running recording included, reads back as written.
        let change = step(store, id, 3_000, |tx, _| {
            let mut rng = StdRng::seed_from_u64(2);
            ops::start_recording(tx, &Actor::Admin, &mut rng).expect("record");
        })
        .await;
        recording = change.meeting.recording.clone();
    }
    let running = recording.expect("recording").id;
    step(store, "3003", 4_000, |tx, _| {
        ops::stop_recording(tx, &Actor::Admin, &running).expect("stop");
    })
    .await;
    let found = store.recording_meetings().await.expect("found");
    let ids: Vec<&str> = found.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["3002"]);
    assert_eq!(
        found[0].recording.as_ref().map(|r| r.started_at),
        Some(at(3_000))
    );
}

async fn people_are_counted_per_meeting_and_the_queue_is_in_entry_order(db: &mut TestDb) {
    let store = db.store();
    let mut rng = StdRng::seed_from_u64(16);
    for id in ["7001", "7002", "7003"] {
        store
            .create_meeting(&new_meeting(id, None, WaitingPolicy::AskHost, &mut rng))
            .await
            .unwrap();
    }
    // 7001: b and a enter at one time, c later; d is admitted and joins, e admitted only.
    step(store, "7001", 2_000, |tx, _| {
        for name in ["b", "a", "d", "e"] {
            ops::enter(tx, None, entry(name, Role::Speaker)).unwrap();
        }
    })
    .await;
    step(store, "7001", 3_000, |tx, _| {
        ops::enter(tx, None, entry("c", Role::Speaker)).unwrap();
    })
    .await;
    let mut start_rng = StdRng::seed_from_u64(160);
    step(store, "7001", 4_000, |tx, r| {
        ops::start_meeting(tx, &Actor::Admin, Vec::new(), &mut start_rng).unwrap();
        ops::admit(tx, &Actor::Admin, r.get("d")).unwrap();
        ops::admit(tx, &Actor::Admin, r.get("e")).unwrap();
    })
    .await;
    let mut join_rng = StdRng::seed_from_u64(161);
    step(store, "7001", 5_000, |tx, r| {
        ops::join(tx, r.get("d"), 0, Vec::new(), &mut join_rng).unwrap();
    })
    .await;
    // 7002: one waiting guest who then leaves (no longer counted).
    step(store, "7002", 2_000, |tx, _| {
        ops::enter(tx, None, entry("gone", Role::Speaker)).unwrap();
    })
    .await;
    step(store, "7002", 3_000, |tx, r| {
        ops::leave(tx, r.get("gone")).unwrap();
    })
    .await;

    let counts = store
        .people_counts(&[mid("7001"), mid("7002"), mid("7003"), mid("7999")])
        .await
        .unwrap();
    assert_eq!(
        counts.get(&mid("7001")).copied(),
        Some(PeopleCount {
            waiting: 3,
            admitted: 1,
            joined: 1
        })
    );
    assert_eq!(
        counts.get(&mid("7002")).copied().unwrap_or_default(),
        PeopleCount::default()
    );
    assert_eq!(
        counts.get(&mid("7003")).copied().unwrap_or_default(),
        PeopleCount::default()
    );
    assert!(store.people_counts(&[]).await.unwrap().is_empty());

    // The queue: a and b entered together (ties by identity), c after them.
    let id = mid("7001");
    let mut queue = Vec::new();
    for name in ["a", "b", "c"] {
        let p = store.participant(&id, &who(name)).await.unwrap().unwrap();
        queue.push(
            store
                .count_waiting_before(&id, p.updated_at, &p.identity)
                .await
                .unwrap(),
        );
    }
    assert_eq!(queue, [0, 1, 2]);
}

// ----- helpers ---------------------------------------------------------------------------------

fn at(millis: i64) -> Timestamp {
    Timestamp::from_millis(millis)
}

fn mid(raw: &str) -> MeetingId {
    MeetingId::parse(raw).expect("meeting id")
}

fn settings(policy: WaitingPolicy) -> MeetingSettings {
    MeetingSettings {
        name: DisplayName::parse("Weekly sync").expect("name"),
        mode: Mode::Meeting,
        policy,
        capacity: None,
        quality: QualityPreset::Hd,
        logout_url: Some(LogoutUrl::parse("https://lms.example/done").expect("url")),
        metadata: Metadata::parse(serde_json::json!({"course": "bio-101", "tags": ["a", 1, null]}))
            .expect("meta"),
        schedule: Some(Schedule::new(at(1_000), Some(at(9_000))).expect("schedule")),
        webhook_url: None,
        waiting_room_chat: false,
        auto_record: false,
    }
}

fn new_meeting(id: &str, room: Option<&str>, policy: WaitingPolicy, rng: &mut StdRng) -> Change {
    let credentials = Credentials::new(None, None, None, rng).expect("credentials");
    let room = room.map(|r| RoomName::parse(r).expect("room"));
    ops::create_meeting(mid(id), room, settings(policy), credentials, at(1_000), rng)
}

fn entry(identity: &str, role: Role) -> Entry {
    Entry {
        identity: Identity::parse(identity).expect("identity"),
        name: DisplayName::parse(&format!("Name of {identity}")).expect("name"),
        role,
        trusted: false,
    }
}

fn who(identity: &str) -> Identity {
    Identity::parse(identity).expect("identity")
}

/// The meeting's participants as loaded from the store, by identity.
struct Roster(BTreeMap<String, Participant>);

impl Roster {
    fn get(&self, identity: &str) -> Participant {
        self.0
            .get(identity)
            .cloned()
            .unwrap_or_else(|| panic!("{identity} is not stored"))
    }
}

/// Loads the meeting and its participants, runs `op`, commits, and checks that the store now
/// holds exactly what the change says (meeting, every participant it touched, its events).
async fn step(store: &SqlStore, id: &str, now: i64, op: impl FnOnce(&mut Tx, &Roster)) -> Change {
    let id = mid(id);
    let meeting = store
        .meeting(&id)
        .await
        .expect("load")
        .expect("meeting exists");
    let roster = Roster(
        store
            .participants(&id, None)
            .await
            .expect("load participants")
            .into_iter()
            .map(|p| (p.identity.as_str().to_owned(), p))
            .collect(),
    );
    let mut tx = Tx::new(meeting, at(now));
    op(&mut tx, &roster);
    let change = tx.finish().expect("the step emitted events");
    store.commit(&change).await.expect("commit");
    assert_round_trip(store, &change).await;
    if change.admit_waiting.is_some() {
        // Everyone who waited is now admitted to this run, as the change's event says.
        let Some(EventKind::ParticipantsAdmitted { identities, .. }) = change
            .events
            .iter()
            .map(|e| &e.kind)
            .find(|k| matches!(k, EventKind::ParticipantsAdmitted { .. }))
        else {
            panic!("a bulk admission comes with its event")
        };
        for identity in identities {
            let p = store.participant(&id, identity).await.unwrap().unwrap();
            assert_eq!(p.state, ParticipantState::Admitted);
            assert_eq!(
                p.admitted_in.as_ref(),
                Some(&change.meeting.run.instance_id)
            );
        }
    }
    change
}

async fn assert_round_trip(store: &SqlStore, change: &Change) {
    let id = &change.meeting.id;
    assert_eq!(
        store.meeting(id).await.expect("meeting").as_ref(),
        Some(&change.meeting)
    );
    for p in &change.participants {
        assert_eq!(
            store
                .participant(id, &p.identity)
                .await
                .expect("participant")
                .as_ref(),
            Some(p)
        );
    }
    let after = change.expected_seq.unwrap_or(0);
    let events = store
        .events_after(id, after, 100_000)
        .await
        .expect("events");
    assert_eq!(events, change.events);
}

fn waiting_of(roster: &Roster) -> Vec<Identity> {
    roster
        .0
        .values()
        .filter(|p| p.state == ParticipantState::Waiting)
        .map(|p| p.identity.clone())
        .collect()
}

// ----- tests -----------------------------------------------------------------------------------

async fn meetings_are_created_found_and_listed_by_pages(db: &mut TestDb) {
    let store = db.store();
    let mut rng = StdRng::seed_from_u64(1);
    let ids = [
        "1000",
        "99999",
        "123456789",
        "5555",
        "100000000000000000",
        "2000",
        "31337",
    ];
    let mut created = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        let room = (n % 2 == 0).then(|| format!("room-{id}"));
        let change = new_meeting(id, room.as_deref(), WaitingPolicy::AskHost, &mut rng);
        store.create_meeting(&change).await.expect("create");
        assert_round_trip(store, &change).await;
        created.push(change.meeting);
    }
    for meeting in &created {
        assert_eq!(
            store.meeting(&meeting.id).await.unwrap().as_ref(),
            Some(meeting)
        );
        assert_eq!(
            store
                .meeting_by_room(&meeting.room_name)
                .await
                .unwrap()
                .as_ref(),
            Some(meeting)
        );
    }
    assert_eq!(store.meeting(&mid("4242")).await.unwrap(), None);
    assert_eq!(
        store
            .meeting_by_room(&RoomName::parse("nowhere").unwrap())
            .await
            .unwrap(),
        None
    );
    // A meeting whose room name defaults to its id is found by that room name.
    assert_eq!(
        store
            .meeting_by_room(&RoomName::parse("99999").unwrap())
            .await
            .unwrap()
            .unwrap()
            .id,
        mid("99999")
    );

    let mut expected: Vec<Meeting> = created.clone();
    expected.sort_by(|a, b| a.id.cmp(&b.id));
    for limit in [1, 2, 3, 7, 100] {
        let mut pages = Vec::new();
        let mut after: Option<MeetingId> = None;
        loop {
            let page = store.meetings(after.as_ref(), limit).await.expect("page");
            assert!(page.len() <= limit as usize);
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            let short = page.len() < limit as usize;
            pages.extend(page);
            if short {
                break;
            }
        }
        assert_eq!(pages, expected, "pages of {limit}");
    }
    assert!(
        store
            .meetings(Some(&mid("999999999999999999")), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn duplicate_ids_and_room_names_are_refused(db: &mut TestDb) {
    let store = db.store();
    let mut rng = StdRng::seed_from_u64(2);
    let first = new_meeting("4001", Some("shared-room"), WaitingPolicy::Open, &mut rng);
    store.create_meeting(&first).await.expect("create");

    let same_id = new_meeting("4001", Some("other-room"), WaitingPolicy::Open, &mut rng);
    assert!(matches!(
        store.create_meeting(&same_id).await,
        Err(StoreError::Duplicate("meeting_id"))
    ));
    let same_room = new_meeting("4002", Some("shared-room"), WaitingPolicy::Open, &mut rng);
    assert!(matches!(
        store.create_meeting(&same_room).await,
        Err(StoreError::Duplicate("room_name"))
    ));

    // Refused creations leave nothing behind, and the first meeting is untouched.
    assert_eq!(store.meeting(&mid("4002")).await.unwrap(), None);
    assert!(
        store
            .events_after(&mid("4002"), 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .meeting_by_room(&RoomName::parse("other-room").unwrap())
            .await
            .unwrap()
            .is_none()
    );
    assert_round_trip(store, &first).await;
}

const ALL_EVENT_TYPES: [&str; 26] = [
    "meeting.created",
    "meeting.updated",
    "meeting.started",
    "meeting.ended",
    "participant.entered",
    "participant.admitted",
    "participants.admitted",
    "participant.denied",
    "participant.sent_back",
    "participant.joined",
    "participant.left",
    "participant.removed",
    "participant.banned",
    "participant.unbanned",
    "participant.role_changed",
    "participant.muted",
    "stage.hand_raised",
    "stage.hand_lowered",
    "stage.invited",
    "stage.invite_accepted",
    "stage.invite_declined",
    "chat.message",
    "media.connected",
    "media.disconnected",
    "media.track_published",
    "media.track_unpublished",
];

async fn commits_round_trip_meeting_participants_and_every_event_kind(db: &mut TestDb) {
    let store = db.store();
    let mut rng = StdRng::seed_from_u64(3);
    let created = new_meeting("7001", None, WaitingPolicy::AskHost, &mut rng);
    store.create_meeting(&created).await.expect("create");
    let mut all = vec![created];
    let admin = Actor::Admin;
    let m = "7001";
    let mut now = 2_000;
    let mut next = || {
        now += 1_000;
        now
    };

    all.push(
        step(store, m, next(), |tx, _| {
            ops::enter(tx, None, entry("host", Role::Host)).unwrap();
            for (name, role) in [
                ("alice", Role::Speaker),
                ("bob", Role::Viewer),
                ("carol", Role::Speaker),
                ("dave", Role::Speaker),
                ("erin", Role::Viewer),
                ("frank", Role::Speaker),
                ("gina", Role::Speaker),
            ] {
                ops::enter(tx, None, entry(name, role)).unwrap();
            }
        })
        .await,
    );
    let mut start_rng = StdRng::seed_from_u64(30);
    all.push(
        step(store, m, next(), |tx, r| {
            ops::start_meeting(tx, &admin, waiting_of(r), &mut start_rng).unwrap();
            for name in ["alice", "bob", "carol", "erin", "gina"] {
                ops::admit(tx, &admin, r.get(name)).unwrap();
            }
            ops::deny(tx, &admin, r.get("dave")).unwrap();
        })
        .await,
    );
    let mut join_rng = StdRng::seed_from_u64(31);
    all.push(
        step(store, m, next(), |tx, r| {
            for name in ["host", "alice", "bob", "erin"] {
                ops::join(tx, r.get(name), 0, Vec::new(), &mut join_rng).unwrap();
            }
        })
        .await,
    );
    all.push(
        step(store, m, next(), |tx, r| {
            let mut changed = settings(WaitingPolicy::AskHost);
            changed.capacity = Some(50);
            changed.logout_url = None;
            changed.schedule = None;
            ops::update_meeting(tx, &admin, changed, None, waiting_of(r)).unwrap();
        })
        .await,
    );
    all.push(
        step(store, m, next(), |tx, _| {
            for name in ["hank", "ivy"] {
                ops::enter(tx, None, entry(name, Role::Viewer)).unwrap();
            }
        })
        .await,
    );
    all.push(
        step(store, m, next(), |tx, r| {
            ops::admit_all(tx, &admin, waiting_of(r)).unwrap();
        })
        .await,
    );
    all.push(
        step(store, m, next(), |tx, r| {
            ops::set_hand(tx, r.get("bob"), true).unwrap()
        })
        .await,
    );
    all.push(
        step(store, m, next(), |tx, r| {
            ops::set_hand(tx, r.get("bob"), false).unwrap()
        })
        .await,
    );
    all.push(
        step(store, m, next(), |tx, r| {
            ops::invite(tx, &admin, r.get("bob")).unwrap()
        })
        .await,
    );
    all.push(
        step(store, m, next(), |tx, r| {
            ops::answer_invite(tx, r.get("bob"), true).unwrap()
        })
        .await,
    );
    all.push(
        step(store, m, next(), |tx, r| {
            ops::invite(tx, &admin, r.get("erin")).unwrap()
        })
        .await,
    );
    all.push(
        step(store, m, next(), |tx, r| {
            ops::answer_invite(tx, r.get("erin"), false).unwrap()
        })
        .await,
    );
    all.push(
        step(store, m, next(), |tx, r| {
            ops::set_role(tx, &admin, r.get("carol"), Role::Viewer).unwrap()
        })
        .await,
    );
    all.push(
        step(store, m, next(), |tx, r| {
            ops::mute(tx, &admin, &r.get("alice"), TrackSelector::Audio, true).unwrap();
            ops::mute(
                tx,
                &admin,
                &r.get("alice"),
                TrackSelector::Track("TR_abc".into()),
                false,
            )
            .unwrap();
        })
        .await,
    );
    all.push(
        step(store, m, next(), |tx, r| {
            let hello = ChatText::parse("hello, \"everyone\" \u{1F44B}").unwrap();
            ops::chat(tx, &r.get("host"), hello, None).unwrap();
            ops::chat(
                tx,
                &r.get("alice"),
                ChatText::parse("psst").unwrap(),
                Some(r.get("bob")),
            )
            .unwrap();
        })
        .await,
    );
    all.push(
        step(store, m, next(), |tx, r| {
            ops::media_presence(tx, r.get("alice"), true)
        })
        .await,
    );
    all.push(
        step(store, m, next(), |tx, _| {
            ops::media_track(tx, who("alice"), "TR_1".into(), Some("audio".into()));
            ops::media_track(tx, who("alice"), "TR_1".into(), None);
        })
        .await,
    );
    all.push(
        step(store, m, next(), |tx, r| {
            ops::media_presence(tx, r.get("alice"), false)
        })
        .await,
    );
    all.push(
        step(store, m, next(), |tx, r| {
            ops::send_back(tx, &admin, r.get("carol")).unwrap()
        })
        .await,
    );
    all.push(
        step(store, m, next(), |tx, r| {
            ops::leave(tx, r.get("alice")).unwrap()
        })
        .await,
    );
    all.push(
        step(store, m, next(), |tx, r| {
            ops::remove(tx, &admin, r.get("bob")).unwrap()
        })
        .await,
    );
    all.push(
        step(store, m, next(), |tx, r| {
            ops::ban(tx, &admin, r.get("erin"), Some(Duration::from_secs(60))).unwrap();
            ops::ban(tx, &admin, r.get("frank"), None).unwrap();
        })
        .await,
    );
    all.push(
        step(store, m, next(), |tx, r| {
            ops::unban(tx, &admin, r.get("erin")).unwrap()
        })
        .await,
    );

    // Every participant state is stored and read back at this point.
    let states: BTreeSet<&str> = store
        .participants(&mid(m), None)
        .await
        .unwrap()
        .iter()
        .map(|p| p.state.as_str())
        .collect();
    assert_eq!(
        states,
        ParticipantState::ALL.iter().map(|s| s.as_str()).collect()
    );
    let frank = store
        .participant(&mid(m), &who("frank"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (frank.state, frank.banned_until, frank.epoch),
        (ParticipantState::Banned, None, 1)
    );

    all.push(
        step(store, m, next(), |tx, r| {
            let present =
                r.0.values()
                    .filter(|p| p.state.is_present())
                    .cloned()
                    .collect();
            ops::end_meeting(tx, &admin, present).unwrap();
        })
        .await,
    );
    let mut restart_rng = StdRng::seed_from_u64(32);
    all.push(
        step(store, m, next(), |tx, r| {
            ops::start_meeting(tx, &admin, waiting_of(r), &mut restart_rng).unwrap()
        })
        .await,
    );

    // The whole log, read back in one go, is every change's events in order.
    let expected_events: Vec<_> = all.iter().flat_map(|c| c.events.clone()).collect();
    let stored = store.events_after(&mid(m), 0, 10_000).await.unwrap();
    assert_eq!(stored, expected_events);
    let types: BTreeSet<String> = stored.iter().map(|e| e.kind.type_name()).collect();
    assert_eq!(
        types,
        ALL_EVENT_TYPES.iter().map(|t| t.to_string()).collect()
    );
    assert!(
        stored
            .iter()
            .any(|e| matches!(e.audience, Audience::Pair { .. }))
    );
    let last = all.last().unwrap();
    assert_eq!(
        store.meeting(&mid(m)).await.unwrap().as_ref(),
        Some(&last.meeting)
    );
    assert_eq!(last.meeting.run.number, 2);

    // The latest version of every participant, as the changes wrote them.
    let mut expected_participants = BTreeMap::<Identity, Participant>::new();
    for change in &all {
        if change.admit_waiting.is_some() {
            for p in expected_participants.values_mut() {
                if p.state == ParticipantState::Waiting {
                    p.state = ParticipantState::Admitted;
                    p.admitted_in = Some(change.meeting.run.instance_id.clone());
                    p.updated_at = change.meeting.updated_at;
                }
            }
        }
        for p in &change.participants {
            expected_participants.insert(p.identity.clone(), p.clone());
        }
    }
    let stored = store.participants(&mid(m), None).await.unwrap();
    assert_eq!(
        stored,
        expected_participants.into_values().collect::<Vec<_>>()
    );
}

async fn concurrent_commits_from_one_version_let_exactly_one_win(db: &mut TestDb) {
    let store = db.store();
    let mut rng = StdRng::seed_from_u64(4);
    let created = new_meeting("8001", None, WaitingPolicy::AskHost, &mut rng);
    store.create_meeting(&created).await.unwrap();
    for round in 0..10 {
        let meeting = store.meeting(&mid("8001")).await.unwrap().unwrap();
        let mut racers = Vec::new();
        for side in ["left", "right"] {
            let mut tx = Tx::new(meeting.clone(), at(10_000 + round));
            ops::enter(
                &mut tx,
                None,
                entry(&format!("{side}-{round}"), Role::Speaker),
            )
            .unwrap();
            racers.push(tx.finish().unwrap());
        }
        let (a, b) = tokio::join!(store.commit(&racers[0]), store.commit(&racers[1]));
        let winner = match (&a, &b) {
            (Ok(()), Err(StoreError::Conflict)) => &racers[0],
            (Err(StoreError::Conflict), Ok(())) => &racers[1],
            other => {
                panic!("round {round}: expected exactly one winner and one Conflict, got {other:?}")
            }
        };
        // The winner is stored entirely, the loser not at all.
        assert_round_trip(store, winner).await;
        let loser = if std::ptr::eq(winner, &racers[0]) {
            &racers[1]
        } else {
            &racers[0]
        };
        let lost = &loser.participants[0].identity;
        assert_eq!(store.participant(&mid("8001"), lost).await.unwrap(), None);
    }

    // A stale change (computed from an older version) conflicts.
    let current = store.meeting(&mid("8001")).await.unwrap().unwrap();
    let mut stale_meeting = current.clone();
    stale_meeting.last_seq -= 1;
    let mut tx = Tx::new(stale_meeting, at(20_000));
    ops::enter(&mut tx, None, entry("late", Role::Speaker)).unwrap();
    assert!(matches!(
        store.commit(&tx.finish().unwrap()).await,
        Err(StoreError::Conflict)
    ));

    // An event whose seq is taken conflicts too, and rolls the whole change back.
    let mut tx = Tx::new(current.clone(), at(20_001));
    ops::enter(&mut tx, None, entry("clash", Role::Speaker)).unwrap();
    let mut clash = tx.finish().unwrap();
    clash.events[0].seq = 1;
    assert!(matches!(
        store.commit(&clash).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(
        store.meeting(&mid("8001")).await.unwrap().as_ref(),
        Some(&current)
    );
    assert_eq!(
        store
            .participant(&mid("8001"), &who("clash"))
            .await
            .unwrap(),
        None
    );

    // A meeting that does not exist cannot be committed to.
    let mut ghost = current;
    ghost.id = mid("8999");
    let mut tx = Tx::new(ghost, at(20_002));
    ops::enter(&mut tx, None, entry("ghost", Role::Speaker)).unwrap();
    assert!(matches!(
        store.commit(&tx.finish().unwrap()).await,
        Err(StoreError::Conflict)
    ));
}

/// New meetings go through the committer with every change: one queued between changes is
/// written in its place (so a change computed on it, queued after it, commits), and a duplicate
/// among them fails alone.
async fn new_meetings_queued_among_changes_commit_in_their_place(db: &mut TestDb) {
    let store = db.store();
    let mut rng = StdRng::seed_from_u64(13);
    store
        .create_meeting(&new_meeting("8201", None, WaitingPolicy::Open, &mut rng))
        .await
        .unwrap();
    let first = store.meeting(&mid("8201")).await.unwrap().unwrap();
    let a = chain(&first, "a", 3, 60_000);
    let created = new_meeting("8202", Some("room-8202"), WaitingPolicy::Open, &mut rng);
    let b = chain(&created.meeting, "b", 2, 60_000);
    let duplicate = new_meeting("8203", Some("room-8202"), WaitingPolicy::Open, &mut rng);
    let log = Settlements::default();
    let results = futures_join_all(vec![
        log.submit(store, &a[0]),
        log.submit(store, &a[1]),
        log.submit(store, &created),
        log.submit(store, &b[0]),
        log.submit(store, &duplicate),
        log.submit(store, &b[1]),
        log.submit(store, &a[2]),
    ])
    .await;
    assert!(
        matches!(results[4], Err(StoreError::Duplicate("room_name"))),
        "{results:?}"
    );
    for (i, result) in results.iter().enumerate() {
        if i != 4 {
            assert!(result.is_ok(), "change {i}: {results:?}");
        }
    }
    let settled: Vec<bool> = log.take().into_iter().map(|(_, _, ok)| ok).collect();
    assert_eq!(settled, [true, true, true, true, false, true, true]);
    assert_round_trip(store, &a[2]).await;
    assert_round_trip(store, &b[1]).await;
    assert_eq!(store.meeting(&mid("8203")).await.unwrap(), None);
}

/// Guests entering several meetings in one batch (every meeting's row in one statement, each
/// person's `waiting_gen` read from their meeting in the same call) wait for their own meeting's
/// next admission: one that enters after an admission is not taken in by it.
async fn guests_queued_across_meetings_wait_for_their_meetings_next_admission(db: &mut TestDb) {
    let store = db.store();
    let mut rng = StdRng::seed_from_u64(14);
    for id in ["8301", "8302"] {
        store
            .create_meeting(&new_meeting(id, None, WaitingPolicy::AskHost, &mut rng))
            .await
            .unwrap();
    }
    let log = Settlements::default();
    let both = async |prefix: &str, now: i64, counts: (usize, usize)| {
        let a = store.meeting(&mid("8301")).await.unwrap().unwrap();
        let b = store.meeting(&mid("8302")).await.unwrap().unwrap();
        let a = chain(&a, &format!("{prefix}-a"), counts.0, now);
        let b = chain(&b, &format!("{prefix}-b"), counts.1, now);
        let queued: Vec<_> = a.iter().chain(&b).map(|c| log.submit(store, c)).collect();
        for result in futures_join_all(queued).await {
            result.expect("every entry commits");
        }
        log.take();
    };
    both("early", 70_000, (2, 2)).await;
    let names = |prefix: &str, n: usize| -> Vec<Identity> {
        (0..n).map(|i| who(&format!("{prefix}-{i}"))).collect()
    };
    assert_eq!(
        store.waiting_identities(&mid("8301")).await.unwrap(),
        names("early-a", 2)
    );

    let meeting = store.meeting(&mid("8301")).await.unwrap().unwrap();
    let waiting = store.waiting_identities(&mid("8301")).await.unwrap();
    let mut tx = Tx::new(meeting, at(75_000));
    ops::admit_all(&mut tx, &Actor::Admin, waiting).unwrap();
    store.commit(&tx.finish().unwrap()).await.unwrap();

    both("late", 80_000, (2, 1)).await;
    assert_eq!(
        store.waiting_identities(&mid("8301")).await.unwrap(),
        names("late-a", 2),
        "the admission took in only those who entered before it"
    );
    let mut still = names("early-b", 2);
    still.extend(names("late-b", 1));
    assert_eq!(store.waiting_identities(&mid("8302")).await.unwrap(), still);
    let early = store
        .participant(&mid("8301"), &who("early-a-0"))
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(early.state, ParticipantState::Admitted);
}

/// `count` entries into the meeting, each computed on the one before (as the service pipelines
/// them while they are committed).
fn chain(meeting: &Meeting, prefix: &str, count: usize, now: i64) -> Vec<Change> {
    let mut base = meeting.clone();
    let mut changes = Vec::new();
    for i in 0..count {
        let mut tx = Tx::new(base, at(now + i as i64));
        ops::enter(
            &mut tx,
            None,
            entry(&format!("{prefix}-{i}"), Role::Speaker),
        )
        .unwrap();
        let change = tx.finish().unwrap();
        base = change.meeting.clone();
        changes.push(change);
    }
    changes
}

async fn queued_changes_commit_together_and_a_failure_fails_what_was_computed_on_it(
    db: &mut TestDb,
) {
    let store = db.store();
    let mut rng = StdRng::seed_from_u64(12);
    for id in ["8101", "8102"] {
        store
            .create_meeting(&new_meeting(id, None, WaitingPolicy::Open, &mut rng))
            .await
            .unwrap();
    }
    let first = store.meeting(&mid("8101")).await.unwrap().unwrap();
    let second = store.meeting(&mid("8102")).await.unwrap().unwrap();

    // 200 changes of two meetings, interleaved, all queued before any is committed.
    let a = chain(&first, "a", 100, 30_000);
    let b = chain(&second, "b", 100, 30_000);
    let before = store.commit_counts();
    let log = Settlements::default();
    let queued: Vec<_> = a
        .iter()
        .zip(&b)
        .flat_map(|(x, y)| [log.submit(store, x), log.submit(store, y)])
        .collect();
    for result in futures_join_all(queued).await {
        result.expect("every queued change commits");
    }
    // Settled once each, in the order submitted, before the callers were answered.
    let submitted: Vec<_> = a
        .iter()
        .zip(&b)
        .flat_map(|(x, y)| {
            [
                (x.meeting.id.clone(), x.meeting.last_seq, true),
                (y.meeting.id.clone(), y.meeting.last_seq, true),
            ]
        })
        .collect();
    assert_eq!(log.take(), submitted);
    let counts = store.commit_counts();
    let (transactions, changes) = (
        counts.transactions - before.transactions,
        counts.changes - before.changes,
    );
    assert_eq!(changes, 200);
    assert!(
        transactions <= 100,
        "200 changes queued at once took {transactions} transactions: they were not grouped"
    );
    // Written by the fast path (on PostgreSQL one statement a batch), never written again one
    // savepoint per meeting.
    assert_eq!(counts.fallbacks, before.fallbacks, "no batch fell back");
    for chain in [&a, &b] {
        let last = chain.last().unwrap();
        let id = &last.meeting.id;
        assert_eq!(
            store.meeting(id).await.unwrap().as_ref(),
            Some(&last.meeting)
        );
        let events = store.events_after(id, 0, 100_000).await.unwrap();
        let expected: Vec<u64> = (1..=last.meeting.last_seq).collect();
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), expected);
        for change in chain {
            assert_round_trip_people(store, change).await;
        }
    }

    // A change computed on a stale version fails, and so do those computed on it; the other
    // meeting's change in the same batch commits.
    let first = store.meeting(&mid("8101")).await.unwrap().unwrap();
    let second = store.meeting(&mid("8102")).await.unwrap().unwrap();
    let mut stale = first.clone();
    stale.last_seq -= 1;
    let doomed = chain(&stale, "doomed", 3, 40_000);
    let fine = chain(&second, "fine", 1, 40_000);
    let results = futures_join_all(vec![
        log.submit(store, &doomed[0]),
        log.submit(store, &fine[0]),
        log.submit(store, &doomed[1]),
        log.submit(store, &doomed[2]),
    ])
    .await;
    let settled: Vec<bool> = log.take().into_iter().map(|(_, _, ok)| ok).collect();
    assert_eq!(settled, [false, true, false, false]);
    assert!(
        matches!(results[0], Err(StoreError::Conflict)),
        "{results:?}"
    );
    assert!(results[1].is_ok(), "{results:?}");
    assert!(
        matches!(results[2], Err(StoreError::Conflict)),
        "{results:?}"
    );
    assert!(
        matches!(results[3], Err(StoreError::Conflict)),
        "{results:?}"
    );
    assert_eq!(
        store.meeting(&mid("8101")).await.unwrap().as_ref(),
        Some(&first)
    );
    for change in &doomed {
        let who = &change.participants[0].identity;
        assert_eq!(store.participant(&mid("8101"), who).await.unwrap(), None);
    }
    assert_round_trip(store, &fine[0]).await;

    // A change whose event clashes rolls back alone, with what was computed on it.
    let first = store.meeting(&mid("8101")).await.unwrap().unwrap();
    let second = store.meeting(&mid("8102")).await.unwrap().unwrap();
    let mut clashing = chain(&first, "clash", 2, 50_000);
    clashing[0].events[0].seq = 1;
    let fine = chain(&second, "fine-again", 1, 50_000);
    let results = futures_join_all(vec![
        log.submit(store, &clashing[0]),
        log.submit(store, &clashing[1]),
        log.submit(store, &fine[0]),
    ])
    .await;
    assert!(
        matches!(results[0], Err(StoreError::Conflict)),
        "{results:?}"
    );
    assert!(
        matches!(results[1], Err(StoreError::Conflict)),
        "{results:?}"
    );
    assert!(results[2].is_ok(), "{results:?}");
    assert_eq!(
        store.meeting(&mid("8101")).await.unwrap().as_ref(),
        Some(&first)
    );
    assert_round_trip(store, &fine[0]).await;
}

/// The outcomes [`Store::submit`] reported to its callbacks, in the order it called them.
#[derive(Clone, Default)]
struct Settlements(std::sync::Arc<std::sync::Mutex<Vec<(MeetingId, u64, bool)>>>);

impl Settlements {
    fn submit(
        &self,
        store: &SqlStore,
        change: &Change,
    ) -> futures::future::BoxFuture<'static, Result<(), StoreError>> {
        let log = self.0.clone();
        store.submit(
            change.clone(),
            Box::new(move |change, result| {
                log.lock().unwrap().push((
                    change.meeting.id.clone(),
                    change.meeting.last_seq,
                    result.is_ok(),
                ));
            }),
        )
    }

    fn take(&self) -> Vec<(MeetingId, u64, bool)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// Every person a change wrote is stored as the change left them, or as a later change did.
async fn assert_round_trip_people(store: &SqlStore, change: &Change) {
    for p in &change.participants {
        let stored = store
            .participant(&change.meeting.id, &p.identity)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{} is not stored", p.identity));
        assert_eq!(stored.name, p.name);
        assert_eq!(stored.role, p.role);
    }
}

async fn events_page_in_order_without_gaps(db: &mut TestDb) {
    let store = db.store();
    let mut rng = StdRng::seed_from_u64(5);
    store
        .create_meeting(&new_meeting("9001", None, WaitingPolicy::AskHost, &mut rng))
        .await
        .unwrap();
    // Another meeting's events must not leak into this one's pages.
    store
        .create_meeting(&new_meeting("9002", None, WaitingPolicy::AskHost, &mut rng))
        .await
        .unwrap();
    for batch in 0..3 {
        step(store, "9001", 3_000 + batch, |tx, _| {
            for n in 0..450 {
                ops::enter(tx, None, entry(&format!("guest-{batch}-{n}"), Role::Viewer)).unwrap();
            }
        })
        .await;
        step(store, "9002", 3_000 + batch, |tx, _| {
            ops::enter(tx, None, entry(&format!("other-{batch}"), Role::Viewer)).unwrap();
        })
        .await;
    }
    let total = 1 + 3 * 450;
    let mut seqs = Vec::new();
    let mut after = 0;
    loop {
        let page = store.events_after(&mid("9001"), after, 128).await.unwrap();
        assert!(page.len() <= 128);
        assert!(page.iter().all(|e| e.meeting_id == mid("9001")));
        let Some(last) = page.last() else { break };
        after = last.seq;
        seqs.extend(page.iter().map(|e| e.seq));
    }
    assert_eq!(seqs, (1..=total).collect::<Vec<u64>>());
    assert!(
        store
            .events_after(&mid("9001"), total, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .events_after(&mid("9001"), u64::MAX, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .events_after(&mid("9001"), 1349, 10)
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(
        store
            .events_after(&mid("4444"), 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .events_after(&mid("9002"), 0, 100)
            .await
            .unwrap()
            .len(),
        4
    );
}

async fn participants_filter_by_state_and_count(db: &mut TestDb) {
    let store = db.store();
    let mut rng = StdRng::seed_from_u64(6);
    store
        .create_meeting(&new_meeting("6001", None, WaitingPolicy::AskHost, &mut rng))
        .await
        .unwrap();
    // Mixed case and punctuation: the order must be byte order on both databases.
    let names = ["zed", "Zed", "alice", "bob_2", "bob-1", "Émile", "carol"];
    step(store, "6001", 3_000, |tx, _| {
        for name in names {
            ops::enter(tx, None, entry(name, Role::Speaker)).unwrap();
        }
    })
    .await;
    let mut start_rng = StdRng::seed_from_u64(60);
    step(store, "6001", 4_000, |tx, r| {
        ops::start_meeting(tx, &Actor::Admin, Vec::new(), &mut start_rng).unwrap();
        ops::admit(tx, &Actor::Admin, r.get("alice")).unwrap();
        ops::admit(tx, &Actor::Admin, r.get("Zed")).unwrap();
        ops::admit(tx, &Actor::Admin, r.get("carol")).unwrap();
    })
    .await;
    let mut join_rng = StdRng::seed_from_u64(61);
    step(store, "6001", 5_000, |tx, r| {
        ops::join(tx, r.get("carol"), 0, Vec::new(), &mut join_rng).unwrap();
    })
    .await;

    let id = mid("6001");
    let identities = |ps: Vec<Participant>| {
        ps.into_iter()
            .map(|p| p.identity.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    let mut sorted: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    sorted.sort();
    assert_eq!(
        identities(store.participants(&id, None).await.unwrap()),
        sorted
    );
    assert_eq!(
        identities(
            store
                .participants(&id, Some(&[ParticipantState::Waiting]))
                .await
                .unwrap()
        ),
        ["bob-1", "bob_2", "zed", "Émile"]
    );
    assert_eq!(
        identities(
            store
                .participants(
                    &id,
                    Some(&[ParticipantState::Admitted, ParticipantState::Joined])
                )
                .await
                .unwrap()
        ),
        ["Zed", "alice", "carol"]
    );
    assert!(store.participants(&id, Some(&[])).await.unwrap().is_empty());
    assert!(
        store
            .participants(&id, Some(&[ParticipantState::Banned]))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .participants(&mid("6002"), None)
            .await
            .unwrap()
            .is_empty()
    );

    assert_eq!(
        store
            .count_participants(&id, &[ParticipantState::Waiting])
            .await
            .unwrap(),
        4
    );
    assert_eq!(
        store
            .count_participants(&id, &[ParticipantState::Joined])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .count_participants(&id, &ParticipantState::ALL)
            .await
            .unwrap(),
        7
    );
    assert_eq!(store.count_participants(&id, &[]).await.unwrap(), 0);
    assert_eq!(
        store
            .count_participants(&mid("6002"), &ParticipantState::ALL)
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.participant(&id, &who("nobody")).await.unwrap(), None);

    // Media occupancy: joined and connected, not counting the asker.
    let mut more_rng = StdRng::seed_from_u64(62);
    step(store, "6001", 6_000, |tx, r| {
        ops::join(tx, r.get("alice"), 1, Vec::new(), &mut more_rng).unwrap();
        ops::join(tx, r.get("Zed"), 2, Vec::new(), &mut more_rng).unwrap();
    })
    .await;
    step(store, "6001", 7_000, |tx, r| {
        ops::media_presence(tx, r.get("carol"), true);
        ops::media_presence(tx, r.get("Zed"), true);
    })
    .await;
    assert_eq!(
        store
            .count_media_connected(&id, &who("alice"))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .count_media_connected(&id, &who("carol"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .count_media_connected(&mid("6002"), &who("alice"))
            .await
            .unwrap(),
        0
    );
}

async fn waiting_identities_come_back_exactly_and_in_byte_order(db: &mut TestDb) {
    let store = db.store();
    let mut rng = StdRng::seed_from_u64(9);
    let id = mid("5003");
    store
        .create_meeting(&new_meeting(
            "5003",
            None,
            WaitingPolicy::WaitForHost,
            &mut rng,
        ))
        .await
        .unwrap();
    assert_eq!(store.waiting_identities(&id).await.unwrap(), Vec::new());
    // Separators a list could be joined with, quotes, spaces and non-ASCII: each comes back
    // whole. One who was let in is not listed.
    let names = [
        "b, c",
        "a;b",
        "O'Neil",
        "say \"hi\"",
        "zoë",
        "Émile",
        "x y",
        "in",
    ];
    step(store, "5003", 2_000, |tx, _| {
        for name in names {
            ops::enter(tx, None, entry(name, Role::Viewer)).unwrap();
        }
    })
    .await;
    step(store, "5003", 3_000, |tx, roster| {
        ops::admit(tx, &Actor::Admin, roster.get("in")).unwrap();
    })
    .await;
    let mut expected: Vec<Identity> = names[..names.len() - 1].iter().map(|n| who(n)).collect();
    expected.sort_by(|a, b| a.as_str().as_bytes().cmp(b.as_str().as_bytes()));
    assert_eq!(store.waiting_identities(&id).await.unwrap(), expected);
}

async fn a_bulk_admission_that_saw_another_waiting_room_conflicts(db: &mut TestDb) {
    let store = db.store();
    let mut rng = StdRng::seed_from_u64(8);
    let id = mid("5002");
    store
        .create_meeting(&new_meeting(
            "5002",
            None,
            WaitingPolicy::WaitForHost,
            &mut rng,
        ))
        .await
        .unwrap();
    step(store, "5002", 2_000, |tx, _| {
        for name in ["ann", "ben", "cat"] {
            ops::enter(tx, None, entry(name, Role::Viewer)).unwrap();
        }
    })
    .await;
    let before = store.meeting(&id).await.unwrap().unwrap();
    let waiting = store.waiting_identities(&id).await.unwrap();
    assert_eq!(waiting, [who("ann"), who("ben"), who("cat")]);
    let mut tx = Tx::new(before.clone(), at(3_000));
    ops::start_meeting(&mut tx, &Actor::Admin, waiting[..2].to_vec(), &mut rng).unwrap();
    let change = tx.finish().unwrap();
    assert_eq!(change.admit_waiting, Some(2));
    // The operation saw two waiting, the store holds three: refused, and nothing is written.
    assert!(matches!(
        store.commit(&change).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(store.meeting(&id).await.unwrap().unwrap(), before);
    assert_eq!(store.waiting_identities(&id).await.unwrap().len(), 3);
    assert_eq!(
        store.events_after(&id, before.last_seq, 10).await.unwrap(),
        Vec::new()
    );
}

async fn ten_thousand_waiting_are_admitted_in_one_commit(db: &mut TestDb) {
    const GUESTS: usize = 10_000;
    let backend = db.store().backend();
    let store = db.store();
    let mut rng = StdRng::seed_from_u64(7);
    store
        .create_meeting(&new_meeting(
            "5001",
            None,
            WaitingPolicy::WaitForHost,
            &mut rng,
        ))
        .await
        .unwrap();
    let meeting = store.meeting(&mid("5001")).await.unwrap().unwrap();
    let mut tx = Tx::new(meeting, at(2_000));
    for n in 0..GUESTS {
        ops::enter(&mut tx, None, entry(&format!("guest-{n:05}"), Role::Viewer)).unwrap();
    }
    let entered = tx.finish().unwrap();
    let started = Instant::now();
    store.commit(&entered).await.unwrap();
    println!(
        "[{backend:?}] commit: {GUESTS} participants entered (+{GUESTS} events) in {:?}",
        started.elapsed()
    );

    let meeting = store.meeting(&mid("5001")).await.unwrap().unwrap();
    let loaded = Instant::now();
    let waiting = store.waiting_identities(&mid("5001")).await.unwrap();
    println!(
        "[{backend:?}] load: {} waiting identities in {:?}",
        waiting.len(),
        loaded.elapsed()
    );
    assert_eq!(waiting.len(), GUESTS);
    let mut tx = Tx::new(meeting, at(3_000));
    ops::start_meeting(&mut tx, &Actor::Admin, waiting, &mut rng).unwrap();
    let admitted = tx.finish().unwrap();
    assert_eq!(
        (
            admitted.participants.len(),
            admitted.events.len(),
            admitted.admit_waiting
        ),
        (0, 2, Some(GUESTS)),
        "one statement and one event for everyone"
    );
    let started = Instant::now();
    store.commit(&admitted).await.unwrap();
    println!(
        "[{backend:?}] commit: {GUESTS} participants admitted at once (+{} events) in {:?}",
        admitted.events.len(),
        started.elapsed()
    );

    let id = mid("5001");
    assert_eq!(
        store
            .count_participants(&id, &[ParticipantState::Admitted])
            .await
            .unwrap(),
        GUESTS as u64
    );
    assert_eq!(
        store
            .count_participants(&id, &[ParticipantState::Waiting])
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store.meeting(&id).await.unwrap().as_ref(),
        Some(&admitted.meeting)
    );
    let tail = store
        .events_after(&id, admitted.expected_seq.unwrap(), 10)
        .await
        .unwrap();
    assert_eq!(tail, admitted.events);
    let sample = store
        .participant(&id, &who(&format!("guest-{:05}", GUESTS / 2)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (sample.state, sample.admitted_in.as_ref(), sample.updated_at),
        (
            ParticipantState::Admitted,
            Some(&admitted.meeting.run.instance_id),
            at(3_000)
        )
    );
}

/// Admitting everyone waiting writes one admission, not a row per guest (migration 0005); every
/// read sees each of them admitted, to that run, at that moment, and later changes build on it:
/// someone sent back waits again and only the next admission lets them in, a new run does not
/// carry the admission over.
async fn an_admission_of_everyone_waiting_is_read_as_admitting_each_of_them(db: &mut TestDb) {
    let store = db.store();
    let id = mid("5101");
    let mut rng = StdRng::seed_from_u64(17);
    store
        .create_meeting(&new_meeting(
            "5101",
            None,
            WaitingPolicy::WaitForHost,
            &mut rng,
        ))
        .await
        .unwrap();
    for (i, guest) in ["a", "b", "c"].iter().enumerate() {
        step(store, "5101", 2_000 + i as i64, |tx, _| {
            ops::enter(tx, None, entry(guest, Role::Viewer)).unwrap();
        })
        .await;
    }
    let first = step(store, "5101", 3_000, |tx, roster| {
        ops::start_meeting(
            tx,
            &Actor::Admin,
            waiting_of(roster),
            &mut StdRng::seed_from_u64(1),
        )
        .unwrap();
    })
    .await;
    assert_eq!(first.participants.len(), 0, "no row per guest");
    let run_one = first.meeting.run.instance_id.clone();
    for guest in ["a", "b", "c"] {
        let p = store.participant(&id, &who(guest)).await.unwrap().unwrap();
        assert_eq!(
            (p.state, p.admitted_in.as_ref(), p.updated_at),
            (ParticipantState::Admitted, Some(&run_one), at(3_000))
        );
    }
    assert_eq!(
        store.waiting_identities(&id).await.unwrap(),
        Vec::<Identity>::new()
    );

    // b is sent back (their own row is written: waiting again); d enters the live meeting and
    // is let in at once (their own row).
    step(store, "5101", 4_000, |tx, roster| {
        ops::send_back(tx, &Actor::Admin, roster.get("b")).unwrap();
    })
    .await;
    step(store, "5101", 4_001, |tx, _| {
        ops::enter(tx, None, entry("d", Role::Viewer)).unwrap();
    })
    .await;
    assert_eq!(store.waiting_identities(&id).await.unwrap(), [who("b")]);
    let count = |states: &'static [ParticipantState]| store.count_participants(&id, states);
    assert_eq!(count(&[ParticipantState::Admitted]).await.unwrap(), 3);
    assert_eq!(count(&[ParticipantState::Waiting]).await.unwrap(), 1);
    let listed: Vec<String> = store
        .participants(&id, Some(&[ParticipantState::Admitted]))
        .await
        .unwrap()
        .iter()
        .map(|p| p.identity.to_string())
        .collect();
    assert_eq!(listed, ["a", "c", "d"]);
    let counts = store
        .people_counts(std::slice::from_ref(&id))
        .await
        .unwrap();
    assert_eq!(
        counts.get(&id),
        Some(&PeopleCount {
            waiting: 1,
            admitted: 3,
            joined: 0
        })
    );

    // The next admission lets b in, at its own time; the others keep theirs.
    step(store, "5101", 5_000, |tx, roster| {
        ops::admit_all(tx, &Actor::Admin, waiting_of(roster)).unwrap();
    })
    .await;
    for (guest, when) in [("a", 3_000), ("b", 5_000), ("c", 3_000), ("d", 4_001)] {
        let p = store.participant(&id, &who(guest)).await.unwrap().unwrap();
        assert_eq!(
            (p.state, p.admitted_in.as_ref(), p.updated_at),
            (ParticipantState::Admitted, Some(&run_one), at(when)),
            "{guest}"
        );
    }

    // A new run: the admissions of the last one stay in it.
    step(store, "5101", 6_000, |tx, roster| {
        let present = roster.0.values().cloned().collect();
        ops::end_meeting(tx, &Actor::Admin, present).unwrap();
    })
    .await;
    let second = step(store, "5101", 7_000, |tx, roster| {
        ops::start_meeting(
            tx,
            &Actor::Admin,
            waiting_of(roster),
            &mut StdRng::seed_from_u64(2),
        )
        .unwrap();
    })
    .await;
    assert_ne!(second.meeting.run.instance_id, run_one);
    let a = store.participant(&id, &who("a")).await.unwrap().unwrap();
    assert_ne!(
        a.admitted_in.as_ref(),
        Some(&second.meeting.run.instance_id)
    );
}

async fn api_keys_insert_get_list_revoke(db: &mut TestDb) {
    let store = db.store();
    let mut rng = StdRng::seed_from_u64(8);
    let first = ApiKey::generate("first key", at(1_000), &mut rng);
    let mut second = ApiKey::generate("second \"key\" ✓", at(2_000), &mut rng);
    second.id = "a-key_2".into();
    store.insert_api_key(&first).await.unwrap();
    store.insert_api_key(&second).await.unwrap();
    assert!(matches!(
        store.insert_api_key(&first).await,
        Err(StoreError::Duplicate("api_key_id"))
    ));

    assert_eq!(
        store.api_key(&first.id).await.unwrap().as_ref(),
        Some(&first)
    );
    assert_eq!(store.api_key("missing").await.unwrap(), None);
    let mut expected = vec![first.clone(), second.clone()];
    expected.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(store.api_keys().await.unwrap(), expected);

    assert!(store.revoke_api_key(&first.id, at(5_000)).await.unwrap());
    assert!(
        store.revoke_api_key(&first.id, at(6_000)).await.unwrap(),
        "revoking again still finds the key"
    );
    let revoked = store.api_key(&first.id).await.unwrap().unwrap();
    assert_eq!(
        revoked.revoked_at,
        Some(at(5_000)),
        "the first revocation time is kept"
    );
    assert!(!revoked.is_active());
    assert!(!store.revoke_api_key("missing", at(5_000)).await.unwrap());
    assert!(
        store
            .api_key(&second.id)
            .await
            .unwrap()
            .unwrap()
            .is_active()
    );
}

async fn failure_counters_count_forget_and_clear(db: &mut TestDb) {
    let store = db.store();
    let record = |failures, last| FailureRecord {
        failures,
        last_failure_at: Some(at(last)),
    };
    assert_eq!(
        store.failures(FailureScope::Meeting, "m1").await.unwrap(),
        FailureRecord::default()
    );

    assert_eq!(
        store
            .record_failure(FailureScope::Meeting, "m1", at(1_000), None)
            .await
            .unwrap(),
        record(1, 1_000)
    );
    assert_eq!(
        store
            .record_failure(FailureScope::Meeting, "m1", at(2_000), None)
            .await
            .unwrap(),
        record(2, 2_000)
    );
    assert_eq!(
        store
            .record_failure(FailureScope::Meeting, "m1", at(3_000), None)
            .await
            .unwrap(),
        record(3, 3_000)
    );
    assert_eq!(
        store.failures(FailureScope::Meeting, "m1").await.unwrap(),
        record(3, 3_000)
    );
    // Scopes and subjects are separate counters.
    assert_eq!(
        store.failures(FailureScope::Address, "m1").await.unwrap(),
        FailureRecord::default()
    );
    assert_eq!(
        store.failures(FailureScope::Meeting, "m2").await.unwrap(),
        FailureRecord::default()
    );

    // Forget window: a count whose last failure is before `forget_before` restarts at 1.
    let ip = "192.0.2.7";
    let window = |now: i64| Some(at(now - 1_000));
    assert_eq!(
        store
            .record_failure(FailureScope::Address, ip, at(10_000), window(10_000))
            .await
            .unwrap(),
        record(1, 10_000)
    );
    assert_eq!(
        store
            .record_failure(FailureScope::Address, ip, at(10_500), window(10_500))
            .await
            .unwrap(),
        record(2, 10_500)
    );
    assert_eq!(
        store
            .record_failure(FailureScope::Address, ip, at(11_500), window(11_500))
            .await
            .unwrap(),
        record(3, 11_500),
        "exactly at the window edge still counts"
    );
    assert_eq!(
        store
            .record_failure(FailureScope::Address, ip, at(12_501), window(12_501))
            .await
            .unwrap(),
        record(1, 12_501),
        "older than the window restarts"
    );

    store
        .clear_failures(FailureScope::Meeting, "m1")
        .await
        .unwrap();
    assert_eq!(
        store.failures(FailureScope::Meeting, "m1").await.unwrap(),
        FailureRecord::default()
    );
    store
        .clear_failures(FailureScope::Meeting, "never-failed")
        .await
        .unwrap();
    assert_eq!(
        store.failures(FailureScope::Address, ip).await.unwrap(),
        record(1, 12_501)
    );

    // Concurrent failures are all counted (the increment is one atomic statement).
    let attempts =
        (0..24).map(|n| store.record_failure(FailureScope::Meeting, "busy", at(50_000 + n), None));
    let results = futures_join_all(attempts).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(
        store
            .failures(FailureScope::Meeting, "busy")
            .await
            .unwrap()
            .failures,
        24
    );
}

/// Polls the futures concurrently (a tiny `join_all`, to avoid a dependency).
async fn futures_join_all<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut set = Vec::new();
    for future in futures {
        set.push(Box::pin(future));
    }
    let mut outputs: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in set.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

async fn data_survives_closing_and_reopening(db: &mut TestDb) {
    let mut rng = StdRng::seed_from_u64(9);
    let created = new_meeting("3001", Some("kept"), WaitingPolicy::AskHost, &mut rng);
    db.store().create_meeting(&created).await.unwrap();
    let entered = step(db.store(), "3001", 2_000, |tx, _| {
        ops::enter(tx, None, entry("alice", Role::Speaker)).unwrap();
        ops::enter(tx, None, entry("host", Role::Host)).unwrap();
    })
    .await;
    let key = ApiKey::generate("kept", at(1_000), &mut rng);
    db.store().insert_api_key(&key).await.unwrap();
    db.store()
        .record_failure(FailureScope::Meeting, "3001", at(4_000), None)
        .await
        .unwrap();

    db.reopen().await;
    db.reopen().await;
    let store = db.store();
    assert_eq!(
        store
            .meeting_by_room(&RoomName::parse("kept").unwrap())
            .await
            .unwrap()
            .as_ref(),
        Some(&entered.meeting)
    );
    assert_round_trip(store, &entered).await;
    let events = store.events_after(&mid("3001"), 0, 100).await.unwrap();
    assert_eq!(
        events,
        [created.events.clone(), entered.events.clone()].concat()
    );
    assert_eq!(store.api_keys().await.unwrap(), vec![key]);
    assert_eq!(
        store
            .failures(FailureScope::Meeting, "3001")
            .await
            .unwrap()
            .failures,
        1
    );
    // And the reopened store still takes writes.
    step(store, "3001", 5_000, |tx, r| {
        ops::admit(tx, &Actor::Admin, r.get("alice"))
            .map(drop)
            .unwrap()
    })
    .await;
}

async fn nonces_are_used_once_even_concurrently_and_across_restarts(db: &mut TestDb) {
    let store = db.store();
    assert!(
        store.use_nonce("n1", at(10_000), at(1_000)).await.unwrap(),
        "first use"
    );
    assert!(
        !store.use_nonce("n1", at(10_000), at(1_000)).await.unwrap(),
        "second use"
    );
    assert!(
        store.use_nonce("n2", at(10_000), at(1_000)).await.unwrap(),
        "another nonce is separate"
    );

    // Of many concurrent uses of one nonce, exactly one wins.
    let attempts = (0..24).map(|_| store.use_nonce("raced", at(10_000), at(1_000)));
    let results = futures_join_all(attempts).await;
    let wins = results.iter().filter(|r| matches!(r, Ok(true))).count();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(wins, 1, "{results:?}");

    // A used nonce stays used after a restart.
    db.reopen().await;
    let store = db.store();
    assert!(!store.use_nonce("n1", at(10_000), at(2_000)).await.unwrap());

    // Once past its expiry (before `forget_before`), the row is dropped: the nonce's link is
    // refused by its expiry by then, so the table does not grow without end.
    assert!(
        store
            .use_nonce("late", at(30_000), at(20_000))
            .await
            .unwrap()
    );
    assert!(
        store.use_nonce("n1", at(40_000), at(20_000)).await.unwrap(),
        "an expired row was forgotten"
    );
    assert!(
        !store
            .use_nonce("late", at(30_000), at(20_000))
            .await
            .unwrap(),
        "an unexpired row is kept"
    );
}

async fn media_rooms_have_one_live_holder_and_move_only_off_a_dead_one(db: &mut TestDb) {
    use convene_store::placement::{Holder, Target};
    let store = db.store();
    let (a, b, c) = ("ws://a:7880", "ws://b:7880", "ws://c:7880");
    // a carries 5 people, b 1, c none yet (its lease written later); all live until 10 s.
    assert_eq!(
        store.renew_media_node(a, "a1", 5, 0, 10_000).await.unwrap(),
        None
    );
    store.renew_media_node(b, "b1", 1, 0, 10_000).await.unwrap();
    assert_eq!(store.media_room_holder("r1", 1_000).await.unwrap(), None);

    // Placed on the least loaded live node; asked again, the same holder, whatever is asked.
    let least = Target::LeastLoaded { fallback: c };
    assert_eq!(store.place_media_room("r1", least, 1_000).await.unwrap(), b);
    assert_eq!(
        store
            .place_media_room("r1", Target::Here(a), 1_000)
            .await
            .unwrap(),
        b
    );
    assert_eq!(
        store.media_room_holder("r1", 1_000).await.unwrap(),
        Some(Holder {
            rtc_url: b.into(),
            live: true
        })
    );
    // A room placed counts as load: c (nobody, no room) comes before b (1 person, 1 room).
    store
        .renew_media_node(c, "c1", 0, 1_000, 10_000)
        .await
        .unwrap();
    assert_eq!(store.place_media_room("r2", least, 1_000).await.unwrap(), c);

    // Many nodes placing one room at once agree on one holder.
    let racing = [a, b, c, a, b, c, a, b, c]
        .map(|url| store.place_media_room("raced", Target::Here(url), 1_000));
    let placed = futures_join_all(racing).await;
    let first = placed[0].as_ref().unwrap().clone();
    assert!(
        placed.iter().all(|p| p.as_ref().ok() == Some(&first)),
        "{placed:?}"
    );

    // b's lease runs out: its rooms move to where they are asked for next, and only then.
    assert_eq!(
        store
            .place_media_room("r1", Target::Here(a), 10_000)
            .await
            .unwrap(),
        a
    );
    assert_eq!(
        store.media_room_holder("r1", 10_000).await.unwrap(),
        Some(Holder {
            rtc_url: a.into(),
            live: false
        }),
        "a is not renewed either"
    );
    // With no live node at all, the fallback (the node asking) takes it.
    assert_eq!(
        store
            .place_media_room("r3", Target::LeastLoaded { fallback: c }, 20_000)
            .await
            .unwrap(),
        c
    );

    // Another process renewing the same URL is named; a node that ends its lease leaves at once.
    assert_eq!(
        store
            .renew_media_node(a, "a2", 0, 20_000, 30_000)
            .await
            .unwrap(),
        None,
        "a1's lease had run out"
    );
    assert_eq!(
        store
            .renew_media_node(a, "a3", 0, 20_000, 30_000)
            .await
            .unwrap(),
        Some("a2".into())
    );
    store.end_media_node(a, "a2").await.unwrap();
    assert!(
        store
            .media_room_holder("r1", 20_000)
            .await
            .unwrap()
            .unwrap()
            .live,
        "a3 holds it"
    );
    store.end_media_node(a, "a3").await.unwrap();
    assert!(
        !store
            .media_room_holder("r1", 20_000)
            .await
            .unwrap()
            .unwrap()
            .live
    );

    // Rooms are listed per node by age and released only by their holder.
    store
        .renew_media_node(a, "a4", 0, 20_000, 30_000)
        .await
        .unwrap();
    let mut on_a = vec!["r1".to_owned()];
    if first == a {
        on_a.push("raced".to_owned());
    }
    assert_eq!(store.media_rooms_of(a, 10_001).await.unwrap(), on_a);
    on_a.remove(0);
    assert_eq!(
        store.media_rooms_of(a, 10_000).await.unwrap(),
        on_a,
        "r1 was placed on a at 10 s"
    );
    store.release_media_room("r1", b).await.unwrap();
    assert!(
        store
            .media_room_holder("r1", 20_000)
            .await
            .unwrap()
            .is_some(),
        "not b's to release"
    );
    store.release_media_room("r1", a).await.unwrap();
    assert_eq!(store.media_room_holder("r1", 20_000).await.unwrap(), None);

    // Notifying media commands is accepted on both (PostgreSQL sends, SQLite has nobody to tell).
    store.notify_media("{}").await.unwrap();
}

/// PostgreSQL: a batch of commits across several meetings tells the other nodes of each
/// meeting's last event (the notifications go out with the commit, in one statement).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_batch_across_meetings_notifies_each_meetings_last_event() {
    use convene_store::listen::Notice;
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let store = db.store();
    let mut listener = store
        .listener()
        .unwrap()
        .expect("PostgreSQL has a listener");
    assert_eq!(listener.next().await, Notice::Listening);
    let mut rng = StdRng::seed_from_u64(17);
    let ids = ["8471", "8472", "8473"];
    let mut chains = Vec::new();
    for id in ids {
        store
            .create_meeting(&new_meeting(id, None, WaitingPolicy::Open, &mut rng))
            .await
            .unwrap();
        let meeting = store.meeting(&mid(id)).await.unwrap().unwrap();
        chains.push(chain(&meeting, id, 30, 30_000));
    }
    // The three meetings' changes interleaved, all queued before any is committed.
    let log = Settlements::default();
    let queued: Vec<_> = (0..30)
        .flat_map(|i| chains.iter().map(move |c| &c[i]))
        .map(|change| log.submit(store, change))
        .collect();
    for result in futures_join_all(queued).await {
        result.expect("every queued change commits");
    }
    let mut expected: BTreeMap<String, u64> = chains
        .iter()
        .map(|c| {
            let last = c.last().unwrap();
            (last.meeting.id.to_string(), last.meeting.last_seq)
        })
        .collect();
    // Each meeting is heard of up to its last event (other tests' notices are on the channel too).
    let heard = tokio::time::timeout(Duration::from_secs(10), async {
        while !expected.is_empty() {
            if let Notice::Committed { meeting, seq, .. } = listener.next().await
                && expected.get(meeting.as_str()) == Some(&seq)
            {
                expected.remove(meeting.as_str());
            }
        }
    })
    .await;
    assert!(heard.is_ok(), "not heard of: {expected:?}");
    db.finish().await;
}

// ----- SQLite only -----------------------------------------------------------------------------

/// The durability settings lib.rs documents are the ones in force on every pooled connection.
#[tokio::test]
async fn sqlite_runs_in_wal_mode_with_full_sync_and_a_private_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep").join("er").join("convene.db");
    let store = SqlStore::connect(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    store.integrity_check().await.unwrap();
    store.close().await;

    let mut connection = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(mode, "wal", "WAL is persistent in the file");
    connection.close().await.unwrap();

    // Check the per-connection pragmas through the store's own pool.
    let store = SqlStore::sqlite(&path).await.unwrap();
    let settings = store
        .sqlite_settings()
        .await
        .unwrap()
        .expect("a SQLite store");
    assert_eq!(settings.journal_mode, "wal");
    assert_eq!(settings.synchronous, 2, "synchronous = FULL");
    assert!(settings.foreign_keys);
    assert_eq!(settings.busy_timeout_ms, 5_000);
    assert_eq!(
        settings.wal_autocheckpoint, 1000,
        "SQLite's default checkpoint size"
    );
    assert_eq!(settings.temp_store, 2, "statement journals in memory");
    store.close().await;

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the database holds API secrets");
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
    }
}

#[tokio::test]
async fn unsupported_targets_are_refused_clearly() {
    let err = SqlStore::connect("mysql://localhost/db").await.unwrap_err();
    assert!(
        err.to_string().contains("unsupported database URL scheme"),
        "{err}"
    );
}

// ----- webhooks --------------------------------------------------------------------------------

fn hook(raw: &str) -> WebhookUrl {
    WebhookUrl::parse(raw).expect("webhook url")
}

fn deployment_lane(url: &str, meeting: &str) -> Lane {
    Lane {
        endpoint_id: deployment_endpoint_id(&hook(url)),
        meeting_id: mid(meeting),
    }
}

fn attempt(outcome: AttemptOutcome, now: i64, status: Option<u16>, error: Option<&str>) -> Attempt {
    Attempt {
        outcome,
        at: at(now),
        status,
        error: error.map(str::to_owned),
    }
}

async fn deliveries(store: &SqlStore, meeting: &str) -> Vec<(u64, String, DeliveryStatus, u32)> {
    let filter = DeliveryFilter {
        meeting: Some(mid(meeting)),
        ..DeliveryFilter::default()
    };
    store
        .webhook_deliveries(&filter, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.seq, d.url, d.status, d.attempts))
        .collect()
}

async fn webhook_deliveries_are_queued_with_the_events_and_sent_in_lane_order(db: &mut TestDb) {
    let store = db.store();
    let mut rng = StdRng::seed_from_u64(21);
    // Events committed before any endpoint exists are not queued.
    store
        .create_meeting(&new_meeting("7001", None, WaitingPolicy::Open, &mut rng))
        .await
        .unwrap();
    assert!(deliveries(store, "7001").await.is_empty());
    store
        .set_deployment_webhooks(&[hook("http://a.example/hook")], at(1_500))
        .await
        .unwrap();
    let change = step(store, "7001", 2_000, |tx, _| {
        ops::enter(tx, None, entry("ann", Role::Viewer)).unwrap();
        ops::enter(tx, None, entry("bob", Role::Viewer)).unwrap();
    })
    .await;
    let expected: Vec<u64> = change.events.iter().map(|e| e.seq).collect();
    assert!(expected.len() >= 2);
    let (first, second) = (expected[0], expected[1]);
    let queued = deliveries(store, "7001").await;
    assert_eq!(
        queued.iter().map(|d| d.0).collect::<Vec<_>>(),
        expected,
        "one per new event"
    );
    assert!(
        queued
            .iter()
            .all(|d| d.1 == "http://a.example/hook" && d.2 == DeliveryStatus::Pending && d.3 == 0)
    );

    // Only the lane's head is due; claiming takes the run from the head, in order, with the event.
    let lane = deployment_lane("http://a.example/hook", "7001");
    assert_eq!(
        store.due_lanes(at(1_999), 10).await.unwrap(),
        vec![],
        "not due before the event's time"
    );
    assert_eq!(
        store.due_lanes(at(2_000), 10).await.unwrap(),
        vec![lane.clone()]
    );
    let claimed = store
        .claim_lane(&lane, at(2_000), at(60_000), 10)
        .await
        .unwrap();
    assert_eq!(
        claimed.iter().map(|d| d.event.seq).collect::<Vec<_>>(),
        expected
    );
    assert_eq!(
        claimed[0].event, change.events[0],
        "the event itself comes with the delivery"
    );
    assert_eq!(claimed[0].url, "http://a.example/hook");
    assert_eq!(claimed[0].room_name, change.meeting.room_name);
    assert!(
        store.due_lanes(at(2_001), 10).await.unwrap().is_empty(),
        "a leased lane is not due"
    );

    // The head fails: it is retried later, and the next one waits behind it.
    store
        .record_attempt(
            &lane,
            first,
            &attempt(
                AttemptOutcome::RetryAt(at(5_000)),
                2_100,
                Some(500),
                Some("HTTP 500"),
            ),
        )
        .await
        .unwrap();
    store
        .release_lane(&lane, &claimed, at(60_000))
        .await
        .unwrap();
    assert!(
        store.due_lanes(at(4_999), 10).await.unwrap().is_empty(),
        "the rest waits behind the failed head"
    );
    assert!(
        store
            .claim_lane(&lane, at(4_999), at(60_000), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let listed = store
        .webhook_deliveries(
            &DeliveryFilter {
                meeting: Some(mid("7001")),
                ..Default::default()
            },
            10,
        )
        .await
        .unwrap();
    assert_eq!(listed[0].status, DeliveryStatus::Pending);
    assert_eq!(listed[0].attempts, 1);
    assert_eq!(listed[0].last_status, Some(500));
    assert_eq!(listed[0].last_error.as_deref(), Some("HTTP 500"));
    assert_eq!(listed[0].next_attempt_at, Some(at(5_000)));
    assert_eq!(listed[0].scope, EndpointScope::Deployment);
    assert_eq!(listed[0].event_type, change.events[0].kind.type_name());

    // Delivered on the second try; then the next one goes; a give-up also unblocks the lane.
    assert_eq!(
        store.due_lanes(at(5_000), 10).await.unwrap(),
        vec![lane.clone()]
    );
    let claimed = store
        .claim_lane(&lane, at(5_000), at(60_000), 1)
        .await
        .unwrap();
    assert_eq!(
        claimed
            .iter()
            .map(|d| (d.event.seq, d.attempts))
            .collect::<Vec<_>>(),
        vec![(first, 1)]
    );
    store
        .record_attempt(
            &lane,
            first,
            &attempt(AttemptOutcome::Delivered, 5_100, Some(200), None),
        )
        .await
        .unwrap();
    let claimed = store
        .claim_lane(&lane, at(5_200), at(60_000), 10)
        .await
        .unwrap();
    assert_eq!(
        claimed.iter().map(|d| d.event.seq).collect::<Vec<_>>(),
        expected[1..].to_vec()
    );
    store
        .record_attempt(
            &lane,
            second,
            &attempt(
                AttemptOutcome::GaveUp,
                5_300,
                None,
                Some("connection refused"),
            ),
        )
        .await
        .unwrap();
    store
        .release_lane(&lane, &claimed, at(60_000))
        .await
        .unwrap();
    let rest = expected[2..].to_vec();
    let mut want = vec![
        (
            first,
            "http://a.example/hook".to_owned(),
            DeliveryStatus::Delivered,
            2,
        ),
        (
            second,
            "http://a.example/hook".to_owned(),
            DeliveryStatus::Failed,
            1,
        ),
    ];
    want.extend(rest.iter().map(|&seq| {
        (
            seq,
            "http://a.example/hook".to_owned(),
            DeliveryStatus::Pending,
            0,
        )
    }));
    assert_eq!(deliveries(store, "7001").await, want);
    let due = store.due_lanes(at(5_400), 10).await.unwrap();
    assert_eq!(
        due.is_empty(),
        rest.is_empty(),
        "the lane goes on after a give-up"
    );
    let failed = DeliveryFilter {
        status: Some(DeliveryStatus::Failed),
        ..Default::default()
    };
    assert_eq!(
        store.webhook_deliveries(&failed, 10).await.unwrap().len(),
        1
    );
    let after = DeliveryFilter {
        meeting: Some(mid("7001")),
        after_seq: Some(first),
        ..Default::default()
    };
    assert_eq!(
        store
            .webhook_deliveries(&after, 10)
            .await
            .unwrap()
            .iter()
            .map(|d| d.seq)
            .collect::<Vec<_>>(),
        expected[1..].to_vec()
    );

    // Finished deliveries are pruned by age; pending ones never are.
    step(store, "7001", 6_000, |tx, _| {
        ops::enter(tx, None, entry("cat", Role::Viewer)).unwrap();
    })
    .await;
    assert_eq!(
        store.prune_webhook_deliveries(at(5_250)).await.unwrap(),
        1,
        "only the delivered one is older"
    );
    assert_eq!(
        store.prune_webhook_deliveries(at(1_000_000)).await.unwrap(),
        1
    );
    let left = deliveries(store, "7001").await;
    assert!(left.len() > rest.len() && left.iter().all(|d| d.2 == DeliveryStatus::Pending));
}

async fn webhook_endpoints_follow_configuration_and_meeting_settings(db: &mut TestDb) {
    let store = db.store();
    let mut rng = StdRng::seed_from_u64(22);
    store
        .set_deployment_webhooks(
            &[hook("http://a.example/"), hook("http://b.example/")],
            at(900),
        )
        .await
        .unwrap();
    // A meeting created with its own URL gets its creation event there too.
    let mut change = new_meeting("7101", None, WaitingPolicy::Open, &mut rng);
    change.meeting.settings.webhook_url = Some(hook("http://own.example/x"));
    store.create_meeting(&change).await.unwrap();
    let mut urls: Vec<String> = deliveries(store, "7101")
        .await
        .into_iter()
        .map(|d| d.1)
        .collect();
    urls.sort();
    assert_eq!(
        urls,
        vec![
            "http://a.example/",
            "http://b.example/",
            "http://own.example/x"
        ]
    );
    let own = DeliveryFilter {
        meeting: Some(mid("7101")),
        ..Default::default()
    };
    let scopes: BTreeSet<_> = store
        .webhook_deliveries(&own, 10)
        .await
        .unwrap()
        .iter()
        .map(|d| format!("{:?}", d.scope))
        .collect();
    assert_eq!(
        scopes,
        BTreeSet::from(["Deployment".to_owned(), "Meeting".to_owned()])
    );

    // b leaves the configuration: its pending deliveries fail, and it gets no new ones.
    store
        .set_deployment_webhooks(&[hook("http://a.example/")], at(1_100))
        .await
        .unwrap();
    let b = deliveries(store, "7101")
        .await
        .into_iter()
        .find(|d| d.1 == "http://b.example/")
        .unwrap();
    assert_eq!(b.2, DeliveryStatus::Failed);
    let entered = step(store, "7101", 2_000, |tx, _| {
        ops::enter(tx, None, entry("ann", Role::Viewer)).unwrap();
    })
    .await;
    let seq2: Vec<String> = deliveries(store, "7101")
        .await
        .into_iter()
        .filter(|d| d.0 == entered.events[0].seq)
        .map(|d| d.1)
        .collect();
    assert_eq!(seq2.len(), 2, "a and the meeting's own URL: {seq2:?}");

    // The meeting's URL changes: pending deliveries follow it. Then it is removed: they fail.
    let moved = step(store, "7101", 3_000, |tx, _| {
        let mut settings = tx.meeting().settings.clone();
        settings.webhook_url = Some(hook("http://moved.example/y"));
        ops::update_meeting(tx, &Actor::Admin, settings, None, Vec::new()).unwrap();
    })
    .await;
    let own_lane = Lane {
        endpoint_id: meeting_endpoint_id(&mid("7101")),
        meeting_id: mid("7101"),
    };
    let claimed = store
        .claim_lane(&own_lane, at(3_000), at(9_000), 100)
        .await
        .unwrap();
    assert!(claimed.iter().all(|d| d.url == "http://moved.example/y"));
    let last = moved.meeting.last_seq;
    assert_eq!(
        claimed.iter().map(|d| d.event.seq).collect::<Vec<_>>(),
        (1..=last).collect::<Vec<_>>()
    );
    step(store, "7101", 4_000, |tx, _| {
        let mut settings = tx.meeting().settings.clone();
        settings.webhook_url = None;
        ops::update_meeting(tx, &Actor::Admin, settings, None, Vec::new()).unwrap();
    })
    .await;
    let own_rows: Vec<_> = store
        .webhook_deliveries(&own, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|d| d.scope == EndpointScope::Meeting)
        .collect();
    assert_eq!(
        own_rows.len() as u64,
        last,
        "no delivery for the event that removed the URL"
    );
    assert!(
        own_rows
            .iter()
            .all(|d| d.status == DeliveryStatus::Failed && d.last_error.is_some())
    );

    // Setting the same configuration again changes nothing; an empty one turns everything off.
    store
        .set_deployment_webhooks(&[hook("http://a.example/")], at(5_000))
        .await
        .unwrap();
    let pending_a = deliveries(store, "7101")
        .await
        .into_iter()
        .filter(|d| d.1 == "http://a.example/" && d.2 == DeliveryStatus::Pending)
        .count();
    assert_eq!(
        pending_a as u64,
        store.meeting(&mid("7101")).await.unwrap().unwrap().last_seq,
        "every event, still pending"
    );
    store.set_deployment_webhooks(&[], at(6_000)).await.unwrap();
    assert!(
        deliveries(store, "7101")
            .await
            .iter()
            .all(|d| d.2 == DeliveryStatus::Failed)
    );
}

async fn webhook_leases_keep_two_senders_apart(db: &mut TestDb) {
    let store = db.store();
    let mut rng = StdRng::seed_from_u64(23);
    store
        .set_deployment_webhooks(&[hook("http://a.example/")], at(0))
        .await
        .unwrap();
    store
        .create_meeting(&new_meeting("7201", None, WaitingPolicy::Open, &mut rng))
        .await
        .unwrap();
    let lane = deployment_lane("http://a.example/", "7201");
    let (first, second) = tokio::join!(
        store.claim_lane(&lane, at(1_000), at(30_000), 10),
        store.claim_lane(&lane, at(1_000), at(30_000), 10),
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(
        first.len() + second.len(),
        1,
        "exactly one sender holds the delivery"
    );
    // A lease that ran out (its sender died) is taken over; released leases are free at once.
    assert!(
        store
            .claim_lane(&lane, at(29_999), at(60_000), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .claim_lane(&lane, at(30_000), at(60_000), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    store.release_all_leases().await.unwrap();
    assert_eq!(
        store
            .claim_lane(&lane, at(30_001), at(60_000), 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

// ----- logins (migration 0003) -------------------------------------------------------------------

fn email(raw: &str) -> Email {
    Email::parse(raw).unwrap()
}

async fn login_send_counters_count_in_fixed_windows(db: &mut TestDb) {
    let store = db.store();
    let window = Duration::from_secs(10);
    let count = |count, started| SendCount {
        count,
        window_started_at: at(started),
    };
    assert_eq!(
        store
            .count_login_send("email:a@example.com", at(1_000), window)
            .await
            .unwrap(),
        count(1, 1_000)
    );
    assert_eq!(
        store
            .count_login_send("email:a@example.com", at(5_000), window)
            .await
            .unwrap(),
        count(2, 1_000)
    );
    assert_eq!(
        store
            .count_login_send("client:192.0.2.1", at(5_000), window)
            .await
            .unwrap(),
        count(1, 5_000),
        "subjects are separate"
    );
    assert_eq!(
        store
            .count_login_send("email:a@example.com", at(10_999), window)
            .await
            .unwrap(),
        count(3, 1_000)
    );
    assert_eq!(
        store
            .count_login_send("email:a@example.com", at(11_000), window)
            .await
            .unwrap(),
        count(1, 11_000),
        "a new window"
    );
    let sends = (0..16).map(|n| store.count_login_send("client:busy", at(20_000 + n), window));
    let results = futures_join_all(sends).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(
        store
            .count_login_send("client:busy", at(20_100), window)
            .await
            .unwrap()
            .count,
        17,
        "concurrent sends all counted"
    );
}

async fn login_codes_replace_and_update_only_from_the_version_read(db: &mut TestDb) {
    let mut rng = StdRng::seed_from_u64(11);
    let ann = email("ann@example.com");
    assert_eq!(db.store().login_code(&ann).await.unwrap(), None);
    let code = LoginCode::generate(&mut rng);
    let first = CodeRecord::issue(&ann, &code, at(1_000), &mut rng);
    db.store().put_login_code(&first).await.unwrap();
    assert_eq!(
        db.store().login_code(&ann).await.unwrap().as_ref(),
        Some(&first)
    );

    // A wrong try is stored from the version read; a second writer from the same version loses.
    let (tried, outcome) = first.check("not-the-code", at(2_000));
    assert!(outcome.is_err());
    let tried = tried.unwrap();
    db.store().update_login_code(&first, &tried).await.unwrap();
    assert!(matches!(
        db.store().update_login_code(&first, &tried).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(db.store().login_code(&ann).await.unwrap().unwrap().tries, 1);

    // Used once: no further update succeeds.
    let (used, outcome) = tried.check(code.reveal(), at(3_000));
    assert_eq!(outcome, Ok(()));
    let used = used.unwrap();
    db.store().update_login_code(&tried, &used).await.unwrap();
    assert!(db.store().login_code(&ann).await.unwrap().unwrap().used);
    assert!(matches!(
        db.store().update_login_code(&used, &used).await,
        Err(StoreError::Conflict)
    ));

    // A new code replaces the old row; updates against the old salt are refused.
    let second = CodeRecord::issue(&ann, &LoginCode::generate(&mut rng), at(4_000), &mut rng);
    db.store().put_login_code(&second).await.unwrap();
    assert_eq!(
        db.store().login_code(&ann).await.unwrap().as_ref(),
        Some(&second)
    );
    assert!(matches!(
        db.store().update_login_code(&tried, &tried).await,
        Err(StoreError::Conflict)
    ));
    db.reopen().await;
    assert_eq!(
        db.store().login_code(&ann).await.unwrap().as_ref(),
        Some(&second),
        "survives a restart"
    );
}

async fn users_are_unique_by_id_and_email(db: &mut TestDb) {
    let store = db.store();
    let ann = User {
        id: UserId::parse("100000000001").unwrap(),
        email: email("ann@example.com"),
        name: DisplayName::parse("Ann").unwrap(),
        created_at: at(1_000),
        updated_at: at(1_000),
    };
    store.insert_user(&ann).await.unwrap();
    assert_eq!(store.user(&ann.id).await.unwrap().as_ref(), Some(&ann));
    assert_eq!(
        store.user_by_email(&ann.email).await.unwrap().as_ref(),
        Some(&ann)
    );
    assert_eq!(
        store
            .user(&UserId::parse("100000000002").unwrap())
            .await
            .unwrap(),
        None
    );

    let same_email = User {
        id: UserId::parse("100000000002").unwrap(),
        ..ann.clone()
    };
    assert!(matches!(
        store.insert_user(&same_email).await,
        Err(StoreError::Duplicate("email"))
    ));
    let same_id = User {
        email: email("bob@example.com"),
        ..ann.clone()
    };
    assert!(matches!(
        store.insert_user(&same_id).await,
        Err(StoreError::Duplicate("user_id"))
    ));

    store
        .rename_user(&ann.id, &DisplayName::parse("Ann Lee").unwrap(), at(2_000))
        .await
        .unwrap();
    let renamed = store.user(&ann.id).await.unwrap().unwrap();
    assert_eq!(
        (
            renamed.name.as_str(),
            renamed.updated_at,
            renamed.created_at
        ),
        ("Ann Lee", at(2_000), at(1_000))
    );
}

async fn housekeeping_drops_only_stale_counters_and_expired_codes(db: &mut TestDb) {
    let store = db.store();
    for (scope, subject, last) in [
        (FailureScope::Address, "192.0.2.1", 1_000),
        (FailureScope::Address, "192.0.2.2", 9_000),
        (FailureScope::Meeting, "credential:1", 1_000),
    ] {
        store
            .record_failure(scope, subject, at(last), None)
            .await
            .unwrap();
    }
    // Only counters of the scope, and only those whose last failure is before the cut.
    assert_eq!(
        store
            .prune_failures(FailureScope::Address, at(5_000))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .failures(FailureScope::Address, "192.0.2.1")
            .await
            .unwrap(),
        FailureRecord::default()
    );
    assert_eq!(
        store
            .failures(FailureScope::Address, "192.0.2.2")
            .await
            .unwrap()
            .failures,
        1
    );
    assert_eq!(
        store
            .failures(FailureScope::Meeting, "credential:1")
            .await
            .unwrap()
            .failures,
        1
    );

    let mut rng = StdRng::seed_from_u64(5);
    let (old, new) = (email("old@example.com"), email("new@example.com"));
    let old_code = CodeRecord::issue(&old, &LoginCode::generate(&mut rng), at(1_000), &mut rng);
    let new_code = CodeRecord::issue(
        &new,
        &LoginCode::generate(&mut rng),
        at(50_000_000),
        &mut rng,
    );
    store.put_login_code(&old_code).await.unwrap();
    store.put_login_code(&new_code).await.unwrap();
    let window = std::time::Duration::from_secs(60);
    store
        .count_login_send("client:old", at(1_000), window)
        .await
        .unwrap();
    store
        .count_login_send("client:new", at(50_000_000), window)
        .await
        .unwrap();
    let cut = at(40_000_000);
    assert!(old_code.expires_at < cut && new_code.expires_at > cut);
    assert_eq!(store.prune_logins(cut, cut).await.unwrap(), 2);
    assert_eq!(store.login_code(&old).await.unwrap(), None);
    assert_eq!(
        store.login_code(&new).await.unwrap().as_ref(),
        Some(&new_code)
    );
    // The surviving counter still counts on; the pruned one starts over.
    assert_eq!(
        store
            .count_login_send("client:new", at(50_000_001), window)
            .await
            .unwrap()
            .count,
        2
    );
    assert_eq!(
        store
            .count_login_send("client:old", at(50_000_001), window)
            .await
            .unwrap()
            .count,
        1
    );
}
