//! The service under a crowd: operations on one meeting are computed while the ones before them
//! are committed, the store commits them in groups, and what follows a commit (events to the
//! sink) still leaves in order, once, with no gap. An operation abandoned half-way (its caller went
//! away) leaves nothing stuck and nothing stale.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use convene_core::event::{Event, EventKind};
use convene_core::ids::{DisplayName, Identity, MeetingId};
use convene_core::meeting::{MeetingSettings, Mode, WaitingPolicy};
use convene_core::participant::{ParticipantState, Role};
use convene_core::ports::{EventSink, NoMedia, Store};
use convene_core::service::{Caller, Meetings, NewMeeting};
use convene_store::SqlStore;

/// Every event published, in the order it was published.
#[derive(Default)]
struct Recorder(Mutex<Vec<(MeetingId, u64)>>);

impl EventSink for Recorder {
    fn publish(&self, events: &[Event]) {
        let mut seen = self.0.lock().unwrap();
        seen.extend(events.iter().map(|e| (e.meeting_id.clone(), e.seq)));
    }
}

struct Service {
    meetings: Arc<Meetings>,
    store: Arc<SqlStore>,
    sink: Arc<Recorder>,
    _dir: tempfile::TempDir,
}

async fn service() -> Service {
    let dir = tempfile::tempdir().unwrap();
    let store = SqlStore::sqlite(&dir.path().join("t.db")).await.unwrap();
    store.migrate().await.unwrap();
    let store = Arc::new(store);
    let sink = Arc::new(Recorder::default());
    let meetings = Arc::new(Meetings::new(
        store.clone(),
        Arc::new(convene::SystemClock),
        Arc::new(convene::OsEntropy),
        Arc::new(NoMedia),
        sink.clone(),
        Default::default(),
    ));
    Service {
        meetings,
        store,
        sink,
        _dir: dir,
    }
}

async fn open_meeting(meetings: &Meetings, policy: WaitingPolicy) -> MeetingId {
    meetings
        .create_meeting(NewMeeting {
            id: None,
            digits: None,
            room_name: None,
            settings: MeetingSettings::new(
                DisplayName::parse("Town hall").unwrap(),
                Mode::Meeting,
                policy,
            ),
            host_credential: None,
            participant_credential: None,
            viewer_credential: None,
        })
        .await
        .unwrap()
        .id
}

/// What seed 002's join does: enter as a speaker past the waiting room, then join.
async fn enter_and_join(meetings: &Meetings, id: &MeetingId, who: &str) {
    let identity = Identity::parse(who).unwrap();
    let name = DisplayName::parse(who).unwrap();
    let (meeting, person) = meetings
        .enter_trusted(id, identity, name, Role::Speaker)
        .await
        .unwrap();
    let caller = Caller::Participant {
        identity: person.identity.clone(),
        instance: meeting.run.instance_id.clone(),
        epoch: person.epoch,
    };
    let (_, joined) = meetings.join(id, &caller).await.unwrap();
    assert_eq!(joined.state, ParticipantState::Joined);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_joining_one_meeting_is_committed_in_groups_and_its_events_leave_in_order() {
    let s = service().await;
    let id = open_meeting(&s.meetings, WaitingPolicy::Open).await;
    let before = s.store.commit_counts();
    let crowd: Vec<_> = (0..400)
        .map(|i| {
            let (meetings, id) = (s.meetings.clone(), id.clone());
            tokio::spawn(async move { enter_and_join(&meetings, &id, &format!("guest-{i}")).await })
        })
        .collect();
    for person in crowd {
        person.await.unwrap();
    }

    let meeting = s.meetings.meeting(&id).await.unwrap();
    assert_eq!(s.store.meeting(&id).await.unwrap().as_ref(), Some(&meeting));
    let joined = s
        .store
        .count_participants(&id, &[ParticipantState::Joined])
        .await
        .unwrap();
    assert_eq!(joined, 400);
    // The sink saw every event of the meeting once, in order, with no gap.
    let published: Vec<u64> = s
        .sink
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(m, _)| m == &id)
        .map(|(_, seq)| *seq)
        .collect();
    let expected: Vec<u64> = (1..=meeting.last_seq).collect();
    assert_eq!(published, expected);
    let stored: Vec<u64> = s
        .store
        .events_after(&id, 0, 10_000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(stored, expected);
    // 800 changes (an entry and a join each), far fewer transactions.
    let counts = s.store.commit_counts();
    let changes = counts.changes - before.changes;
    let transactions = counts.transactions - before.transactions;
    assert!(changes >= 800, "{changes} changes");
    assert!(
        transactions * 2 < changes,
        "{changes} changes took {transactions} transactions: the crowd was not grouped"
    );
    println!("{changes} changes in {transactions} transactions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_abandoned_half_way_leave_nothing_stuck_or_stale() {
    let s = service().await;
    let id = open_meeting(&s.meetings, WaitingPolicy::AskHost).await;
    // Guests enter the waiting room; many callers give up after a moment, some before their
    // change is queued, some while it is committed.
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let (meetings, id) = (s.meetings.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            let who = format!("guest-{i}");
            let enter = meetings.enter_untrusted(
                &id,
                Identity::parse(&who).unwrap(),
                DisplayName::parse(&who).unwrap(),
                Role::Viewer,
            );
            // Every other caller waits; the others give up after 0 to 1.8 ms.
            let patience = if i % 2 == 0 {
                Duration::from_secs(30)
            } else {
                Duration::from_micros(i % 7 * 300)
            };
            tokio::time::timeout(patience, enter).await.is_ok()
        }));
    }
    let mut answered = 0;
    for task in tasks {
        answered += usize::from(task.await.unwrap());
    }
    println!("{answered} of 200 callers waited for their answer");
    assert!(answered >= 100);
    // The meeting still moves: admitting everyone waiting (which waits until nothing is queued
    // before it reads who is waiting) completes, and admits everyone who entered.
    let admitted = tokio::time::timeout(
        Duration::from_secs(10),
        s.meetings.admit_all(&id, &Caller::Admin),
    )
    .await
    .expect("admitting everyone waiting is not stuck behind an abandoned operation")
    .unwrap();
    let stored = s.store.meeting(&id).await.unwrap().unwrap();
    assert_eq!(stored.last_seq, admitted.last_seq);
    assert_eq!(s.meetings.meeting(&id).await.unwrap(), stored);
    let waiting = s
        .store
        .count_participants(&id, &[ParticipantState::Waiting])
        .await
        .unwrap();
    assert_eq!(waiting, 0);
    // What the service holds of each person is what the store has.
    let stored: HashMap<Identity, _> = s
        .store
        .participants(&id, None)
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.identity.clone(), p))
        .collect();
    assert!(stored.len() >= answered, "every answered entry is stored");
    for i in 0..200u64 {
        let who = Identity::parse(&format!("guest-{i}")).unwrap();
        let said = s.meetings.participant(&id, &who).await.ok();
        assert_eq!(said.as_ref(), stored.get(&who), "{who}");
    }
}

/// Admitting everyone waiting takes the waiting list from this node's view of the meeting when the
/// view holds all its people: exactly those the store holds as waiting, in the store's order. A
/// guest another node let wait, whom this node's view does not hold, is admitted too: the store
/// refuses the change computed on the stale view, and it is computed again on what is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admitting_everyone_from_the_held_view_admits_exactly_those_waiting() {
    let s = service().await;
    let id = open_meeting(&s.meetings, WaitingPolicy::AskHost).await;
    let person = |who: &str| Identity::parse(who).unwrap();
    let wait = |meetings: Arc<Meetings>, who: &'static str| {
        let id = id.clone();
        async move {
            let name = DisplayName::parse(who).unwrap();
            let (_, guest) = meetings
                .enter_untrusted(&id, Identity::parse(who).unwrap(), name, Role::Speaker)
                .await
                .unwrap();
            assert_eq!(guest.state, ParticipantState::Waiting);
        }
    };
    // Admits everyone waiting; checks the admission listed exactly `expected` and left nobody.
    let admit_all = |expected: Vec<Identity>| {
        let (meetings, store, id) = (s.meetings.clone(), s.store.clone(), id.clone());
        async move {
            assert_eq!(store.waiting_identities(&id).await.unwrap(), expected);
            let admitted = meetings.admit_all(&id, &Caller::Admin).await.unwrap();
            assert_eq!(store.waiting_identities(&id).await.unwrap(), []);
            let events = store.events_after(&id, 0, 1_000).await.unwrap();
            let last = events.last().unwrap();
            assert_eq!(last.seq, admitted.last_seq);
            match &last.kind {
                EventKind::ParticipantsAdmitted { identities, .. } => {
                    assert_eq!(identities, &expected, "the admission lists those waiting");
                }
                other => panic!("the last event is {other:?}"),
            }
            for who in &expected {
                let stored = store.participant(&id, who).await.unwrap().unwrap();
                assert_eq!(stored.state, ParticipantState::Admitted, "{who:?}");
            }
        }
    };
    for who in ["carol", "bob", "alice", "dave"] {
        wait(s.meetings.clone(), who).await;
    }
    // No longer waiting: one admitted alone, one denied.
    s.meetings
        .admit(&id, &Caller::Admin, &person("dave"))
        .await
        .unwrap();
    s.meetings
        .deny(&id, &Caller::Admin, &person("carol"))
        .await
        .unwrap();
    admit_all(vec![person("alice"), person("bob")]).await;
    let carol = s.store.participant(&id, &person("carol")).await.unwrap();
    assert!(
        carol.is_none_or(|c| c.state != ParticipantState::Admitted),
        "denied stays out"
    );

    // Another node on the same database lets a guest wait; this node is not told.
    let other = Arc::new(Meetings::new(
        s.store.clone(),
        Arc::new(convene::SystemClock),
        Arc::new(convene::OsEntropy),
        Arc::new(NoMedia),
        Arc::new(Recorder::default()),
        Default::default(),
    ));
    wait(s.meetings.clone(), "frank").await;
    wait(other, "erin").await;
    admit_all(vec![person("erin"), person("frank")]).await;
}
