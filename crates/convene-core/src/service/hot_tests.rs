//! The views' bounds: what a durable view lets go of, and what leaves the view ahead.

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;
use crate::ids::{DisplayName, InstanceId, RoomName};
use crate::meeting::{Credentials, MeetingSettings, MeetingStatus, Mode, Run, WaitingPolicy};
use crate::participant::Role;
use crate::time::Timestamp;

const NOW: Timestamp = Timestamp::from_millis(1_000_000);

fn meeting(last_seq: u64) -> Meeting {
    let id = MeetingId::parse("123456789012").unwrap();
    Meeting {
        room_name: RoomName::for_meeting(&id),
        id,
        run: Run {
            instance_id: InstanceId::generate(&mut StdRng::seed_from_u64(1)),
            number: 1,
            opened_at: NOW,
            live_at: Some(NOW),
            ended_at: None,
        },
        status: MeetingStatus::Live,
        created_at: NOW,
        updated_at: NOW,
        last_seq,
        recording: None,
        settings: MeetingSettings::new(
            DisplayName::parse("Town hall").unwrap(),
            Mode::Meeting,
            WaitingPolicy::AskHost,
        ),
        credentials: Credentials::new(None, None, None, &mut StdRng::seed_from_u64(2)).unwrap(),
    }
}

fn person(meeting: &Meeting, name: &str, state: ParticipantState) -> Participant {
    let mut person = Participant::arriving(
        meeting.id.clone(),
        Identity::parse(name).unwrap(),
        DisplayName::parse(name).unwrap(),
        Role::Viewer,
        NOW,
    );
    person.state = state;
    person
}

/// A change from `from` to `from + 1` writing `people`.
fn change(from: u64, people: Vec<Participant>, admit_waiting: bool) -> Change {
    Change {
        expected_seq: Some(from),
        meeting: meeting(from + 1),
        participants: people,
        events: Vec::new(),
        media: Vec::new(),
        admit_waiting: admit_waiting.then_some(1),
    }
}

/// What a lookup of `name` finds, in words.
fn seen(slot: &Slot, name: &str) -> String {
    match slot.person_ahead(&Identity::parse(name).unwrap()) {
        Lookup::Found(p) => format!("{:?}", p.state),
        Lookup::Absent => "absent".into(),
        Lookup::Read(_) => "read".into(),
        Lookup::Drain => "drain".into(),
    }
}

fn held(slot: &Slot) -> (usize, usize) {
    let state = slot.state();
    let durable = state.durable.as_ref().map_or(0, |v| v.people.len());
    let ahead = state.ahead.as_ref().map_or(0, |a| a.people.len());
    (durable, ahead)
}

fn slot() -> Arc<Slot> {
    Slots::default().get(&meeting(0).id)
}

#[test]
fn a_view_past_its_bound_lets_go_of_those_who_left_and_reads_them_when_they_return() {
    let m = meeting(5);
    let slot = slot();
    let people = [
        ("stays", ParticipantState::Joined),
        ("waits", ParticipantState::Waiting),
        ("left", ParticipantState::Left),
        ("banned", ParticipantState::Banned),
        ("removed", ParticipantState::Removed),
    ];
    slot.fill_roster(&m, people.iter().map(|(n, s)| person(&m, n, *s)).collect());
    assert_eq!(
        seen(&slot, "nobody"),
        "absent",
        "a whole roster knows who is not in it"
    );
    assert_eq!(
        slot.waiting(5),
        Some(vec![Identity::parse("waits").unwrap()])
    );

    // Under its bound the view keeps everyone.
    slot.state().durable.as_mut().unwrap().bound(5);
    assert_eq!(held(&slot).0, 5);

    // Past it, those no longer in the meeting go; the others stay, and nobody is taken as
    // absent any more.
    {
        let mut state = slot.state();
        let view = state.durable.as_mut().unwrap();
        view.bound_at = 4;
        view.bound(4);
        assert_eq!(view.roster, Roster::Large);
        assert_eq!(view.bound_at, 4, "looked at again past the limit");
    }
    assert_eq!(held(&slot).0, 2);
    assert_eq!(seen(&slot, "stays"), "Joined");
    assert_eq!(seen(&slot, "waits"), "Waiting");
    for gone in ["left", "banned", "removed", "nobody"] {
        assert_eq!(seen(&slot, gone), "read", "{gone} is read from the store");
    }
    assert_eq!(
        slot.waiting(5),
        None,
        "the waiting list is read from the store"
    );
    assert!(
        !slot.roster_missing(),
        "a meeting held in part is not read whole again"
    );

    // A banned person read back is held again.
    let version = slot.version();
    slot.fill_person(&person(&m, "banned", ParticipantState::Banned), version);
    assert_eq!(seen(&slot, "banned"), "Banned");
}

#[test]
fn a_view_where_everyone_stays_is_searched_again_only_once_it_doubled() {
    let m = meeting(5);
    let slot = slot();
    let everyone: Vec<_> = (0..6)
        .map(|i| person(&m, &format!("p{i}"), ParticipantState::Joined))
        .collect();
    slot.fill_roster(&m, everyone);
    let mut state = slot.state();
    let view = state.durable.as_mut().unwrap();
    view.bound_at = 4;
    view.bound(4);
    assert_eq!(view.people.len(), 6, "everyone is still in the meeting");
    assert_eq!(
        view.roster,
        Roster::Whole,
        "and the view still holds the whole meeting"
    );
    assert_eq!(view.bound_at, 12);
}

#[test]
fn a_meeting_counted_too_large_is_not_counted_again_until_its_view_goes() {
    let m = meeting(5);
    let slot = slot();
    assert!(slot.roster_missing());
    slot.fill_meeting(&m, slot.version(), false);
    assert!(slot.roster_missing(), "held in part: read whole next time");
    slot.fill_meeting(&m, slot.version(), true);
    assert!(!slot.roster_missing(), "too large: not counted again");
    assert_eq!(seen(&slot, "someone"), "read");
    slot.settle(&change(5, Vec::new(), false), &Err(StoreError::Conflict));
    assert!(slot.roster_missing(), "a failed commit drops the view");
}

#[test]
fn the_view_ahead_lets_go_of_each_person_once_their_change_is_durable() {
    let m = meeting(5);
    let slot = slot();
    slot.fill_roster(
        &m,
        vec![
            person(&m, "carol", ParticipantState::Waiting),
            person(&m, "dave", ParticipantState::Joined),
        ],
    );
    let alice = person(&m, "alice", ParticipantState::Joined);
    let bob = person(&m, "bob", ParticipantState::Waiting);
    let (a, b, c) = (
        change(5, vec![alice], false),
        change(6, vec![bob], false),
        change(7, Vec::new(), true),
    );
    let _turns = [slot.queue(&a), slot.queue(&b), slot.queue(&c)];
    assert_eq!(held(&slot), (2, 2));
    assert_eq!(
        seen(&slot, "bob"),
        "Admitted",
        "the queued admission lets bob in ahead"
    );

    slot.settle(&a, &Ok(()));
    assert_eq!(held(&slot), (3, 1), "alice moved to the durable view");
    assert_eq!(seen(&slot, "alice"), "Joined");
    assert_eq!(
        seen(&slot, "dave"),
        "Joined",
        "not waiting: the admission leaves dave be"
    );
    assert_eq!(
        seen(&slot, "carol"),
        "drain",
        "the queued admission moves carol"
    );

    slot.settle(&b, &Ok(()));
    assert_eq!(
        held(&slot),
        (4, 1),
        "bob stays ahead: the admission wrote him last"
    );
    assert_eq!(seen(&slot, "bob"), "Admitted");

    slot.settle(&c, &Ok(()));
    assert_eq!(held(&slot), (4, 0), "nothing queued, nothing ahead");
    for name in ["bob", "carol"] {
        assert_eq!(seen(&slot, name), "Admitted");
    }
}
