//! The standing rule against the operations it mirrors: random sequences of the pure operations
//! (seeded, so a failure replays), each change committed as the store commits it, and after every
//! change each participant's standing folded from the event log equals the state the operations
//! stored; the steps say `Revoked` exactly where an operation bumped the epoch.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::event::{Event, TrackSelector};
use crate::ids::{ChatText, Credential, DisplayName, MeetingId, MeetingIdDigits};
use crate::meeting::{
    Credentials, Meeting, MeetingSettings, Metadata, Mode, QualityPreset, WaitingPolicy,
};
use crate::ops::{self, Actor, Entry, Tx};
use crate::{DomainError, Timestamp};

const T0: Timestamp = Timestamp::from_millis(1_000_000);
const PEOPLE: [&str; 5] = ["hana", "gus", "ida", "jo", "kai"];
const ROLES: [Role; 3] = [Role::Host, Role::Speaker, Role::Viewer];
const POLICIES: [WaitingPolicy; 4] = [
    WaitingPolicy::Open,
    WaitingPolicy::WaitForHost,
    WaitingPolicy::AskHost,
    WaitingPolicy::Deny,
];

fn who(s: &str) -> Identity {
    Identity::parse(s).unwrap()
}

/// A meeting run by the pure operations and committed as the store commits (see `ops_tests.rs`).
struct World {
    meeting: Meeting,
    people: BTreeMap<Identity, Participant>,
    log: Vec<Event>,
    rng: StdRng,
    now: Timestamp,
}

impl World {
    fn new(seed: u64, policy: WaitingPolicy) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let settings = MeetingSettings {
            name: DisplayName::parse("Standing").unwrap(),
            mode: Mode::Meeting,
            policy,
            capacity: Some(3),
            quality: QualityPreset::Hd,
            logout_url: None,
            metadata: Metadata::default(),
            schedule: None,
            webhook_url: None,
            waiting_room_chat: true,
            auto_record: false,
        };
        let credentials = Credentials::new(
            Some(Credential::parse("host-pin").unwrap()),
            None,
            None,
            &mut rng,
        )
        .unwrap();
        let id = MeetingId::generate(MeetingIdDigits::DEFAULT, &mut rng);
        let change = ops::create_meeting(id, None, settings, credentials, T0, &mut rng);
        Self {
            meeting: change.meeting,
            people: BTreeMap::new(),
            log: change.events,
            rng,
            now: T0,
        }
    }

    /// Runs one operation and commits its change; the events it appended.
    fn apply<T>(
        &mut self,
        op: impl FnOnce(&mut Tx, &mut StdRng) -> Result<T, DomainError>,
    ) -> Vec<Event> {
        self.now = self.now.plus(Duration::from_millis(10));
        let mut tx = Tx::new(self.meeting.clone(), self.now);
        if op(&mut tx, &mut self.rng).is_err() {
            return Vec::new();
        }
        let Some(change) = tx.finish() else {
            return Vec::new();
        };
        if change.admit_waiting.is_some() {
            // What the store does: everyone waiting, in one statement, before the rest.
            let run = change.meeting.run.instance_id.clone();
            for p in self.people.values_mut() {
                if p.state == ParticipantState::Waiting {
                    p.state = ParticipantState::Admitted;
                    p.admitted_in = Some(run.clone());
                }
            }
        }
        self.meeting = change.meeting;
        for p in change.participants {
            self.people.insert(p.identity.clone(), p);
        }
        self.log.extend(change.events.iter().cloned());
        change.events
    }

    fn get(&self, name: &str) -> Option<Participant> {
        self.people.get(&who(name)).cloned()
    }

    fn waiting(&self) -> Vec<Identity> {
        self.people
            .values()
            .filter(|p| p.state == ParticipantState::Waiting)
            .map(|p| p.identity.clone())
            .collect()
    }

    /// An acting host: an admin, or (mostly) a participant, who may or may not be a host.
    fn actor(&mut self) -> Actor {
        let name = PEOPLE[self.rng.random_range(0..PEOPLE.len())];
        match self.get(name) {
            Some(p) if self.rng.random_bool(0.7) => Actor::Participant(p),
            _ => Actor::Admin,
        }
    }

    /// One random operation, on random people (some not there yet, some in no state to be
    /// acted on: the operation then refuses and nothing is committed).
    fn step(&mut self) -> Vec<Event> {
        let name = PEOPLE[self.rng.random_range(0..PEOPLE.len())];
        let target = self.get(name);
        let actor = self.actor();
        let waiting = self.waiting();
        let choice = self.rng.random_range(0..20);
        let Some(target) = target else {
            // Only entering makes someone.
            return self.enter(name);
        };
        match choice {
            0..=2 => self.enter(name),
            3 => self.apply(|tx, _| ops::admit(tx, &actor, target)),
            4 => self.apply(|tx, _| ops::admit_all(tx, &actor, waiting)),
            5 => self.apply(|tx, _| ops::deny(tx, &actor, target)),
            6 => self.apply(|tx, _| ops::send_back(tx, &actor, target)),
            7 | 8 => {
                let joined = self
                    .people
                    .values()
                    .filter(|p| p.state == ParticipantState::Joined)
                    .count() as u64;
                self.apply(|tx, rng| ops::join(tx, target, joined, waiting, rng))
            }
            9 => self.apply(|tx, _| ops::leave(tx, target)),
            10 => {
                let role = ROLES[self.rng.random_range(0..ROLES.len())];
                self.apply(|tx, _| ops::set_role(tx, &actor, target, role))
            }
            11 => self.apply(|tx, _| ops::remove(tx, &actor, target)),
            12 => {
                // Short bans run out while the sequence goes on.
                let duration = self
                    .rng
                    .random_bool(0.5)
                    .then(|| Duration::from_millis(self.rng.random_range(1..100)));
                self.apply(|tx, _| ops::ban(tx, &actor, target, duration))
            }
            13 => self.apply(|tx, _| ops::unban(tx, &actor, target)),
            14 => self.apply(|tx, rng| ops::start_meeting(tx, &actor, waiting, rng)),
            15 => {
                let present: Vec<Participant> = self.people.values().cloned().collect();
                self.apply(|tx, _| ops::end_meeting(tx, &actor, present))
            }
            16 => {
                let policy = POLICIES[self.rng.random_range(0..POLICIES.len())];
                self.apply(|tx, _| ops::set_policy(tx, &actor, policy, waiting))
            }
            17 => {
                let accept = self.rng.random_bool(0.5);
                let invited = target.clone();
                let events = self.apply(|tx, _| ops::invite(tx, &actor, invited));
                if events.is_empty() {
                    return events;
                }
                let target = self.get(name).unwrap();
                let mut more = self.apply(|tx, _| ops::answer_invite(tx, target, accept));
                let mut events = events;
                events.append(&mut more);
                events
            }
            18 => {
                let connected = !target.media_connected;
                self.apply(|tx, _| {
                    ops::media_presence(tx, target, connected);
                    Ok(())
                })
            }
            _ => {
                let raised = !target.hand_raised;
                let text = ChatText::parse("hello").unwrap();
                let to = self.get(PEOPLE[0]);
                let mut events = self.apply(|tx, _| ops::set_hand(tx, target.clone(), raised));
                events.append(&mut self.apply(|tx, _| ops::chat(tx, &target, text, to)));
                let track = TrackSelector::Audio;
                events.append(&mut self.apply(|tx, _| ops::mute(tx, &actor, &target, track, true)));
                events
            }
        }
    }

    fn enter(&mut self, name: &str) -> Vec<Event> {
        let existing = self.get(name);
        let role = ROLES[self.rng.random_range(0..ROLES.len())];
        let trusted = self.rng.random_bool(0.2);
        self.apply(|tx, _| {
            ops::enter(
                tx,
                existing,
                Entry {
                    identity: who(name),
                    name: DisplayName::parse(name).unwrap(),
                    role,
                    trusted,
                },
            )
        })
    }
}

/// Each person's standing folded from the log (from before they first entered: the entry
/// sets every field).
fn folded() -> BTreeMap<Identity, Standing> {
    PEOPLE
        .iter()
        .map(|name| {
            let before = Standing::Participant {
                role: Role::Viewer,
                state: ParticipantState::Left,
            };
            (who(name), before)
        })
        .collect()
}

#[test]
fn the_standing_folded_from_the_log_is_what_the_operations_stored() {
    let mut steps = [0usize; 4];
    for seed in 0..200 {
        let policy = POLICIES[seed as usize % POLICIES.len()];
        let mut world = World::new(seed, policy);
        let mut standings = folded();
        for round in 0..150 {
            let epochs: BTreeMap<Identity, u32> = world
                .people
                .values()
                .map(|p| (p.identity.clone(), p.epoch))
                .collect();
            let events = world.step();
            let mut revoked = Vec::new();
            for event in &events {
                let movers = Standing::moved_by(&event.kind);
                for (identity, standing) in &mut standings {
                    let before = *standing;
                    // A router that found this person through a bulk admission's list says
                    // so instead of the list being searched: the same step either way.
                    let mut told = before;
                    let listed = event.kind.admits_in_bulk(identity);
                    let told_step = told.apply_listed(Some(identity), None, &event.kind, listed);
                    let step = standing.apply(Some(identity), None, &event.kind);
                    assert_eq!((told_step, told), (step, *standing), "{:?}", event.kind);
                    steps[step as usize] += 1;
                    match step {
                        Step::Unchanged => assert_eq!(*standing, before),
                        Step::Changed => assert_ne!(*standing, before),
                        Step::Revoked => revoked.push(identity.clone()),
                        Step::NewRun => panic!("no run given, no new run"),
                    }
                    if !movers.include(identity) {
                        assert_eq!(step, Step::Unchanged, "{:?} moved {identity:?}", event.kind);
                    }
                }
            }
            for (identity, participant) in &world.people {
                assert_eq!(
                    standings[identity],
                    Standing::of(participant),
                    "seed {seed}, round {round}: {identity:?} after {events:#?}"
                );
            }
            let bumped: Vec<Identity> = world
                .people
                .values()
                .filter(|p| epochs.get(&p.identity).is_some_and(|e| *e < p.epoch))
                .map(|p| p.identity.clone())
                .collect();
            revoked.sort();
            assert_eq!(revoked, bumped, "seed {seed}, round {round}: {events:#?}");
        }
    }
    // The sequences went through every kind of step but a new run (tested below).
    assert!(steps[..3].iter().all(|n| *n > 0), "{steps:?}");
}

/// Folds the events appended since `cursor` into every standing.
fn fold_new(world: &World, standings: &mut BTreeMap<Identity, Standing>, cursor: &mut usize) {
    for event in &world.log[*cursor..] {
        for (identity, standing) in standings.iter_mut() {
            standing.apply(Some(identity), None, &event.kind);
        }
    }
    *cursor = world.log.len();
}

fn entry(name: &str, role: Role) -> Entry {
    Entry {
        identity: who(name),
        name: DisplayName::parse(name).unwrap(),
        role,
        trusted: false,
    }
}

#[test]
fn the_class_follows_a_guest_through_the_waiting_room_the_stage_and_the_end() {
    let mut world = World::new(1, WaitingPolicy::AskHost);
    let (mut standings, mut cursor) = (folded(), 0);
    world.apply(|tx, _| ops::enter(tx, None, entry("hana", Role::Host)));
    let hana = world.get("hana").unwrap();
    world.apply(|tx, rng| ops::join(tx, hana, 0, Vec::new(), rng));
    world.apply(|tx, _| ops::enter(tx, None, entry("gus", Role::Viewer)));
    fold_new(&world, &mut standings, &mut cursor);
    assert_eq!(standings[&who("hana")].class(), ViewerClass::Host);
    assert_eq!(standings[&who("gus")].class(), ViewerClass::Waiting);
    let host = Actor::Participant(world.get("hana").unwrap());
    let gus = world.get("gus").unwrap();
    world.apply(|tx, _| ops::admit(tx, &host, gus));
    fold_new(&world, &mut standings, &mut cursor);
    assert_eq!(standings[&who("gus")].class(), ViewerClass::Member);
    let gus = world.get("gus").unwrap();
    world.apply(|tx, _| ops::set_role(tx, &host, gus, Role::Host));
    fold_new(&world, &mut standings, &mut cursor);
    assert_eq!(standings[&who("gus")].class(), ViewerClass::Host);
    let everyone: Vec<Participant> = world.people.values().cloned().collect();
    world.apply(|tx, _| ops::end_meeting(tx, &host, everyone));
    fold_new(&world, &mut standings, &mut cursor);
    assert_eq!(
        standings[&who("gus")].class(),
        ViewerClass::Waiting,
        "left: out"
    );
    assert_eq!(
        Standing::of(&world.get("gus").unwrap()),
        standings[&who("gus")]
    );
    assert_eq!(Standing::Admin.class(), ViewerClass::Host);
}

#[test]
fn a_new_run_ends_the_tokens_of_the_run_before_and_an_admin_is_never_moved() {
    let mut world = World::new(2, WaitingPolicy::Open);
    world.apply(|tx, _| ops::enter(tx, None, entry("hana", Role::Host)));
    let hana = world.get("hana").unwrap();
    world.apply(|tx, rng| ops::join(tx, hana, 0, Vec::new(), rng));
    let first = world.meeting.run.instance_id.clone();
    let everyone: Vec<Participant> = world.people.values().cloned().collect();
    world.apply(|tx, _| ops::end_meeting(tx, &Actor::Admin, everyone));
    world.apply(|tx, rng| ops::start_meeting(tx, &Actor::Admin, Vec::new(), rng));
    let second = world.meeting.run.instance_id.clone();
    let started = world.log.last().unwrap();
    assert!(matches!(started.kind, EventKind::MeetingStarted { .. }));
    let me = who("hana");
    let mut standing = Standing::of(&world.get("hana").unwrap());
    let before = standing;
    assert_eq!(
        standing.apply(Some(&me), Some(&first), &started.kind),
        Step::NewRun
    );
    assert_eq!(standing, before, "not moved");
    assert_eq!(
        standing.apply(Some(&me), Some(&second), &started.kind),
        Step::Unchanged
    );
    let mut admin = Standing::Admin;
    for event in &world.log {
        assert_eq!(
            admin.apply(None, Some(&first), &event.kind),
            Step::Unchanged
        );
    }
}
