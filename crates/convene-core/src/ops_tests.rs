//! Flow tests of the pure operations: every product flow as state transitions and events.

use std::collections::BTreeMap;

use super::*;
use crate::event::{Audience, Event, ViewerClass};
use crate::ids::{Credential, MeetingIdDigits};
use crate::meeting::{Metadata, QualityPreset};
use rand::SeedableRng;
use rand::rngs::StdRng;

const T0: Timestamp = Timestamp::from_millis(1_000_000);

struct World {
    meeting: Meeting,
    people: BTreeMap<Identity, Participant>,
    log: Vec<Event>,
    media: Vec<MediaCommand>,
    rng: StdRng,
    now: Timestamp,
}

fn name(s: &str) -> DisplayName {
    DisplayName::parse(s).unwrap()
}
fn who(s: &str) -> Identity {
    Identity::parse(s).unwrap()
}

impl World {
    fn new(mode: Mode, policy: WaitingPolicy, capacity: Option<u32>) -> Self {
        let mut rng = StdRng::seed_from_u64(42);
        let settings = MeetingSettings {
            name: name("Town hall"),
            mode,
            policy,
            capacity,
            quality: QualityPreset::Hd,
            logout_url: None,
            metadata: Metadata::default(),
            schedule: None,
            webhook_url: None,
            waiting_room_chat: false,
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
        let change = create_meeting(id, None, settings, credentials, T0, &mut rng);
        let mut world = Self {
            meeting: change.meeting.clone(),
            people: BTreeMap::new(),
            log: vec![],
            media: vec![],
            rng,
            now: T0,
        };
        world.log.extend(change.events);
        world
    }

    fn apply<T>(
        &mut self,
        op: impl FnOnce(&mut Tx, &mut StdRng) -> Result<T, DomainError>,
    ) -> Result<T, DomainError> {
        self.now = self.now.plus(Duration::from_millis(10));
        let mut tx = Tx::new(self.meeting.clone(), self.now);
        let value = op(&mut tx, &mut self.rng)?;
        if let Some(change) = tx.finish() {
            assert_eq!(change.expected_seq, Some(self.meeting.last_seq));
            if let Some(expected) = change.admit_waiting {
                // What the store does: everyone waiting, in one statement, before the rest.
                let run = change.meeting.run.instance_id.clone();
                let mut admitted = 0;
                for p in self.people.values_mut() {
                    if p.state == ParticipantState::Waiting {
                        p.state = ParticipantState::Admitted;
                        p.admitted_in = Some(run.clone());
                        p.updated_at = self.now;
                        admitted += 1;
                    }
                }
                assert_eq!(admitted, expected, "the change saw everyone waiting");
            }
            self.meeting = change.meeting;
            for p in change.participants {
                self.people.insert(p.identity.clone(), p);
            }
            self.log.extend(change.events);
            self.media.extend(change.media);
        }
        Ok(value)
    }

    fn p(&self, id: &str) -> Participant {
        self.people[&who(id)].clone()
    }

    fn enter(&mut self, id: &str, role: Role) -> Result<Participant, DomainError> {
        let existing = self.people.get(&who(id)).cloned();
        self.apply(|tx, _| {
            enter(
                tx,
                existing,
                Entry {
                    identity: who(id),
                    name: name(id),
                    role,
                    trusted: false,
                },
            )
        })
    }

    fn waiting(&self) -> Vec<Identity> {
        self.people
            .values()
            .filter(|p| p.state == ParticipantState::Waiting)
            .map(|p| p.identity.clone())
            .collect()
    }

    fn joined(&self) -> u64 {
        self.people
            .values()
            .filter(|p| p.state == ParticipantState::Joined)
            .count() as u64
    }

    fn join(&mut self, id: &str) -> Result<Participant, DomainError> {
        let p = self.p(id);
        let (joined, waiting) = (self.joined(), self.waiting());
        self.apply(|tx, rng| join(tx, p, joined, waiting, rng))
    }

    fn host(&self, id: &str) -> Actor {
        Actor::Participant(self.p(id))
    }

    fn types(&self) -> Vec<String> {
        self.log.iter().map(|e| e.kind.type_name()).collect()
    }
}

#[test]
fn sequence_numbers_are_gapless_and_per_meeting() {
    let mut w = World::new(Mode::Meeting, WaitingPolicy::WaitForHost, None);
    w.enter("g1", Role::Speaker).unwrap();
    w.enter("host", Role::Host).unwrap();
    w.join("host").unwrap();
    let seqs: Vec<u64> = w.log.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert_eq!(w.meeting.last_seq, seqs.len() as u64);
}

#[test]
fn wait_for_host_admits_everyone_waiting_when_the_host_joins() {
    let mut w = World::new(Mode::Meeting, WaitingPolicy::WaitForHost, None);
    for g in ["g1", "g2", "g3"] {
        assert_eq!(
            w.enter(g, Role::Speaker).unwrap().state,
            ParticipantState::Waiting
        );
    }
    assert_eq!(w.join("g1").unwrap_err().code, ErrorCode::MeetingNotLive);
    w.enter("host", Role::Host).unwrap();
    w.join("host").unwrap();
    assert_eq!(w.meeting.status, MeetingStatus::Live);
    let bulk: Vec<_> = w
        .log
        .iter()
        .filter(|e| matches!(e.kind, EventKind::ParticipantsAdmitted { .. }))
        .collect();
    assert_eq!(bulk.len(), 1, "one event lets everyone waiting in");
    let EventKind::ParticipantsAdmitted { identities, .. } = &bulk[0].kind else {
        unreachable!()
    };
    assert_eq!(identities, &[who("g1"), who("g2"), who("g3")]);
    for g in ["g1", "g2", "g3"] {
        assert_eq!(w.p(g).state, ParticipantState::Admitted);
        assert!(
            bulk[0].visible_to(ViewerClass::Waiting, Some(&who(g))),
            "the guest sees its own admission"
        );
        assert!(
            matches!(
                bulk[0].view_for(ViewerClass::Waiting, Some(&who(g))),
                Some(EventKind::ParticipantAdmitted { identity, .. }) if identity == who(g)
            ),
            "as its own participant.admitted"
        );
    }
    assert!(
        !bulk[0].visible_to(ViewerClass::Waiting, Some(&who("other"))),
        "but not others'"
    );
    // A later guest is admitted at once.
    assert_eq!(
        w.enter("g4", Role::Speaker).unwrap().state,
        ParticipantState::Admitted
    );
    assert_eq!(w.join("g2").unwrap().state, ParticipantState::Joined);
}

#[test]
fn ask_host_waits_for_admit_deny_and_admit_all() {
    let mut w = World::new(Mode::Meeting, WaitingPolicy::AskHost, None);
    w.enter("host", Role::Host).unwrap();
    w.join("host").unwrap();
    for g in ["g1", "g2", "g3", "g4"] {
        w.enter(g, Role::Speaker).unwrap();
    }
    assert!(
        w.waiting().len() == 4,
        "live meeting, still waiting under ask_host"
    );
    let host = w.host("host");
    let g1 = w.p("g1");
    w.apply(|tx, _| admit(tx, &host, g1)).unwrap();
    assert_eq!(w.p("g1").state, ParticipantState::Admitted);
    let g2 = w.p("g2");
    let epoch = g2.epoch;
    w.apply(|tx, _| deny(tx, &host, g2)).unwrap();
    assert_eq!(w.p("g2").state, ParticipantState::Removed);
    assert_eq!(w.p("g2").epoch, epoch + 1, "denied tokens stop working");
    let waiting = w.waiting();
    w.apply(|tx, _| admit_all(tx, &host, waiting)).unwrap();
    assert_eq!(w.p("g3").state, ParticipantState::Admitted);
    assert_eq!(w.p("g4").state, ParticipantState::Admitted);
    // A guest cannot admit.
    let g3 = Actor::Participant(w.p("g3"));
    let g2 = w.p("g2");
    assert_eq!(
        w.apply(|tx, _| admit(tx, &g3, g2)).unwrap_err().code,
        ErrorCode::Forbidden
    );
    // Send back: out of media, back to waiting.
    let g1 = w.p("g1");
    w.apply(|tx, _| send_back(tx, &host, g1)).unwrap();
    assert_eq!(w.p("g1").state, ParticipantState::Waiting);
    assert!(w.media.contains(&MediaCommand::Disconnect {
        room: w.meeting.room_name.clone(),
        identity: who("g1")
    }));
}

#[test]
fn deny_policy_locks_the_meeting_but_not_hosts() {
    let mut w = World::new(Mode::Meeting, WaitingPolicy::Deny, None);
    assert_eq!(
        w.enter("g1", Role::Speaker).unwrap_err().code,
        ErrorCode::MeetingLocked
    );
    assert!(w.enter("host", Role::Host).is_ok());
}

#[test]
fn open_meetings_start_on_anyones_join() {
    let mut w = World::new(Mode::Meeting, WaitingPolicy::Open, None);
    assert_eq!(
        w.enter("g1", Role::Speaker).unwrap().state,
        ParticipantState::Admitted
    );
    assert_eq!(w.join("g1").unwrap().state, ParticipantState::Joined);
    assert_eq!(w.meeting.status, MeetingStatus::Live);
}

#[test]
fn the_stage_flow_promotes_a_viewer_live() {
    let mut w = World::new(Mode::Stream, WaitingPolicy::Open, None);
    w.enter("host", Role::Host).unwrap();
    w.join("host").unwrap();
    w.enter("v1", Role::Viewer).unwrap();
    w.join("v1").unwrap();
    let v1 = w.p("v1");
    w.apply(|tx, _| set_hand(tx, v1, true)).unwrap();
    assert!(w.p("v1").hand_raised);
    let host = w.host("host");
    let v1 = w.p("v1");
    w.apply(|tx, _| invite(tx, &host, v1)).unwrap();
    assert!(w.p("v1").invited);
    let v1 = w.p("v1");
    w.apply(|tx, _| answer_invite(tx, v1, true)).unwrap();
    let v1 = w.p("v1");
    assert_eq!(v1.role, Role::Speaker);
    assert!(!v1.hand_raised && !v1.invited);
    assert!(w.media.contains(&MediaCommand::SetRole {
        room: w.meeting.room_name.clone(),
        identity: who("v1"),
        role: Role::Speaker
    }));
    // Demote.
    w.apply(|tx, _| set_role(tx, &host, v1, Role::Viewer))
        .unwrap();
    assert_eq!(w.p("v1").role, Role::Viewer);
    // Accepting without an invitation is refused.
    let v1 = w.p("v1");
    assert_eq!(
        w.apply(|tx, _| answer_invite(tx, v1, true))
            .unwrap_err()
            .code,
        ErrorCode::InvalidState
    );
    // Invites go to viewers only.
    let h = w.p("host");
    assert_eq!(
        w.apply(|tx, _| invite(tx, &host, h)).unwrap_err().code,
        ErrorCode::InvalidState
    );
    assert!(w.types().contains(&"stage.invite_accepted".to_string()));
}

/// The media rights of a person through the stage: what a fresh token grants (their stored role)
/// and what their live connection was last told (the last `SetRole`), both by `MediaRights`.
#[test]
fn media_rights_follow_the_stage() {
    use crate::access::MediaRights;
    let mut w = World::new(Mode::Stream, WaitingPolicy::Open, None);
    w.enter("host", Role::Host).unwrap();
    w.join("host").unwrap();
    w.enter("v1", Role::Viewer).unwrap();
    w.join("v1").unwrap();
    let host = w.host("host");
    let live_role = |w: &World| {
        w.media.iter().rev().find_map(|command| match command {
            MediaCommand::SetRole { identity, role, .. } if *identity == who("v1") => Some(*role),
            _ => None,
        })
    };
    let viewer = MediaRights::of(Role::Viewer);
    assert!(!viewer.publish && viewer.subscribe);
    assert_eq!(MediaRights::of(w.p("v1").role), viewer);

    // A raised hand and an invitation grant nothing yet; declining leaves it so.
    let v1 = w.p("v1");
    w.apply(|tx, _| set_hand(tx, v1, true)).unwrap();
    let v1 = w.p("v1");
    w.apply(|tx, _| invite(tx, &host, v1)).unwrap();
    assert_eq!(MediaRights::of(w.p("v1").role), viewer);
    assert_eq!(live_role(&w), None);
    let v1 = w.p("v1");
    w.apply(|tx, _| answer_invite(tx, v1, false)).unwrap();
    assert_eq!(MediaRights::of(w.p("v1").role), viewer);
    assert_eq!(live_role(&w), None);

    // Accepting makes a speaker, on the live connection too.
    let v1 = w.p("v1");
    w.apply(|tx, _| invite(tx, &host, v1)).unwrap();
    let v1 = w.p("v1");
    w.apply(|tx, _| answer_invite(tx, v1, true)).unwrap();
    let speaker = MediaRights::of(Role::Speaker);
    assert!(speaker.publish && speaker.publish_data && !speaker.room_admin);
    assert_eq!(MediaRights::of(w.p("v1").role), speaker);
    assert_eq!(live_role(&w).map(MediaRights::of), Some(speaker));

    // Taken back to viewer, publishing goes with it.
    let v1 = w.p("v1");
    w.apply(|tx, _| set_role(tx, &host, v1, Role::Viewer))
        .unwrap();
    assert_eq!(MediaRights::of(w.p("v1").role), viewer);
    assert_eq!(live_role(&w).map(MediaRights::of), Some(viewer));
}

#[test]
fn roles_persist_for_the_person_across_entries() {
    let mut w = World::new(Mode::Stream, WaitingPolicy::Open, None);
    w.enter("host", Role::Host).unwrap();
    w.join("host").unwrap();
    w.enter("v1", Role::Viewer).unwrap();
    let host = w.host("host");
    let v1 = w.p("v1");
    w.apply(|tx, _| set_role(tx, &host, v1, Role::Speaker))
        .unwrap();
    // Entering again with the viewer credential keeps the promotion.
    assert_eq!(w.enter("v1", Role::Viewer).unwrap().role, Role::Speaker);
    // Claiming a host's identity with a lesser credential is refused.
    assert_eq!(
        w.enter("host", Role::Viewer).unwrap_err().code,
        ErrorCode::Forbidden
    );
}

#[test]
fn remove_and_ban_disconnect_and_bans_hold() {
    let mut w = World::new(Mode::Meeting, WaitingPolicy::Open, None);
    w.enter("host", Role::Host).unwrap();
    w.join("host").unwrap();
    w.enter("g1", Role::Speaker).unwrap();
    w.join("g1").unwrap();
    w.enter("g2", Role::Speaker).unwrap();
    let host = w.host("host");
    let g1 = w.p("g1");
    w.apply(|tx, _| remove(tx, &host, g1)).unwrap();
    assert_eq!(w.p("g1").state, ParticipantState::Removed);
    assert_eq!(w.p("g1").epoch, 1);
    // A removed person may come back through the door (policy decides), with a new epoch.
    assert_eq!(
        w.enter("g1", Role::Speaker).unwrap().state,
        ParticipantState::Admitted
    );
    let g2 = w.p("g2");
    w.apply(|tx, _| ban(tx, &host, g2, None)).unwrap();
    assert_eq!(
        w.enter("g2", Role::Speaker).unwrap_err().code,
        ErrorCode::Banned
    );
    assert_eq!(w.join("g2").unwrap_err().code, ErrorCode::Banned);
    // Timed ban ends by itself.
    let g1 = w.p("g1");
    w.apply(|tx, _| ban(tx, &host, g1, Some(Duration::from_secs(60))))
        .unwrap();
    assert_eq!(
        w.enter("g1", Role::Speaker).unwrap_err().code,
        ErrorCode::Banned
    );
    w.now = w.now.plus(Duration::from_secs(61));
    assert_eq!(
        w.enter("g1", Role::Speaker).unwrap().state,
        ParticipantState::Admitted
    );
    // Unban.
    let g2 = w.p("g2");
    w.apply(|tx, _| unban(tx, &host, g2)).unwrap();
    assert!(w.enter("g2", Role::Speaker).is_ok());
    let disconnects = w
        .media
        .iter()
        .filter(|c| matches!(c, MediaCommand::Disconnect { .. }))
        .count();
    assert_eq!(disconnects, 3);
}

#[test]
fn ending_disconnects_everyone_and_a_restart_is_a_new_run() {
    let mut w = World::new(Mode::Meeting, WaitingPolicy::WaitForHost, None);
    w.enter("host", Role::Host).unwrap();
    w.join("host").unwrap();
    w.enter("g1", Role::Speaker).unwrap();
    w.join("g1").unwrap();
    let first_run = w.meeting.run.instance_id.clone();
    let host = w.host("host");
    let present: Vec<_> = w.people.values().cloned().collect();
    w.apply(|tx, _| end_meeting(tx, &host, present)).unwrap();
    assert_eq!(w.meeting.status, MeetingStatus::Ended);
    assert!(w.people.values().all(|p| p.state == ParticipantState::Left));
    assert!(w.media.contains(&MediaCommand::CloseRoom {
        room: w.meeting.room_name.clone()
    }));
    let ended = w.log.last().unwrap();
    assert_eq!(
        ended.audience,
        Audience::Everyone,
        "the waiting room is told"
    );
    // Nothing joins until it starts again.
    assert_eq!(w.join("g1").unwrap_err().code, ErrorCode::MeetingEnded);
    assert_eq!(
        w.enter("g2", Role::Speaker).unwrap_err().code,
        ErrorCode::MeetingEnded
    );
    // The host restarts: a new run; the guest's admission was for the old run.
    w.enter("host", Role::Host).unwrap();
    w.join("host").unwrap();
    assert_eq!(w.meeting.run.number, 2);
    assert_ne!(w.meeting.run.instance_id, first_run);
    assert_eq!(w.join("g1").unwrap_err().code, ErrorCode::NotAdmitted);
    assert_eq!(
        w.enter("g1", Role::Speaker).unwrap().state,
        ParticipantState::Admitted
    );
}

#[test]
fn capacity_counts_joined_people_but_never_turns_hosts_away() {
    let mut w = World::new(Mode::Meeting, WaitingPolicy::Open, Some(1));
    w.enter("g1", Role::Speaker).unwrap();
    w.enter("g2", Role::Speaker).unwrap();
    w.enter("host", Role::Host).unwrap();
    w.join("g1").unwrap();
    assert_eq!(w.join("g2").unwrap_err().code, ErrorCode::MeetingFull);
    assert!(w.join("host").is_ok());
}

#[test]
fn chat_is_for_members_and_direct_messages_are_private() {
    let mut w = World::new(Mode::Meeting, WaitingPolicy::AskHost, None);
    w.enter("host", Role::Host).unwrap();
    w.join("host").unwrap();
    w.enter("g1", Role::Speaker).unwrap();
    let g1 = w.p("g1");
    let text = ChatText::parse("hello").unwrap();
    assert_eq!(
        w.apply(|tx, _| chat(tx, &g1, text.clone(), None))
            .unwrap_err()
            .code,
        ErrorCode::NotAdmitted,
        "waiting guests cannot chat"
    );
    let host = w.host("host");
    let g1 = w.p("g1");
    w.apply(|tx, _| admit(tx, &host, g1)).unwrap();
    let g1 = w.p("g1");
    w.apply(|tx, _| chat(tx, &g1, text.clone(), None)).unwrap();
    let h = w.p("host");
    w.apply(|tx, _| chat(tx, &g1, text.clone(), Some(h)))
        .unwrap();
    let dm = w.log.last().unwrap();
    assert!(dm.audience.admits(ViewerClass::Member, Some(&who("host"))));
    assert!(!dm.audience.admits(ViewerClass::Member, Some(&who("g9"))));
}

#[test]
fn no_op_changes_emit_nothing() {
    let mut w = World::new(Mode::Meeting, WaitingPolicy::Open, None);
    w.enter("g1", Role::Speaker).unwrap();
    let before = w.meeting.last_seq;
    let g1 = w.p("g1");
    w.apply(|tx, _| set_hand(tx, g1, false)).unwrap();
    assert_eq!(w.meeting.last_seq, before);
}

#[test]
fn a_trusted_reentry_that_changes_the_role_is_recorded() {
    let mut w = World::new(Mode::Stream, WaitingPolicy::Open, None);
    w.enter("v1", Role::Viewer).unwrap();
    let existing = Some(w.p("v1"));
    w.apply(|tx, _| {
        enter(
            tx,
            existing,
            Entry {
                identity: who("v1"),
                name: name("v1"),
                role: Role::Speaker,
                trusted: true,
            },
        )
    })
    .unwrap();
    assert_eq!(
        w.p("v1").role,
        Role::Speaker,
        "the change is committed, not dropped"
    );
    assert_eq!(w.types().last().unwrap(), "participant.role_changed");
    assert!(w.media.contains(&MediaCommand::SetRole {
        room: w.meeting.room_name.clone(),
        identity: who("v1"),
        role: Role::Speaker
    }));
}

#[test]
fn waiting_room_chat_is_between_a_guest_and_the_hosts_where_the_meeting_allows_it() {
    let mut w = World::new(Mode::Meeting, WaitingPolicy::AskHost, None);
    w.enter("host", Role::Host).unwrap();
    w.join("host").unwrap();
    w.enter("g1", Role::Speaker).unwrap();
    w.enter("g2", Role::Speaker).unwrap();
    let text = ChatText::parse("may I come in?").unwrap();
    let (g1, host) = (w.p("g1"), w.p("host"));
    let off = w
        .apply(|tx, _| chat(tx, &g1, text.clone(), None))
        .unwrap_err();
    assert_eq!(off.code, ErrorCode::NotAdmitted, "off by default");
    assert_eq!(
        w.apply(|tx, _| chat(tx, &host, text.clone(), Some(g1.clone())))
            .unwrap_err()
            .code,
        ErrorCode::InvalidState,
        "a host cannot write into a waiting room without chat"
    );

    w.meeting.settings.waiting_room_chat = true;
    w.apply(|tx, _| chat(tx, &g1, text.clone(), None)).unwrap();
    let asked = w.log.last().unwrap().clone();
    assert_eq!(
        asked.kind,
        EventKind::ChatMessage {
            from: who("g1"),
            text: "may I come in?".into(),
            to: None,
            waiting_room: true
        }
    );
    assert!(asked.visible_to(ViewerClass::Host, Some(&who("host"))));
    assert!(asked.visible_to(ViewerClass::Waiting, Some(&who("g1"))));
    assert!(!asked.visible_to(ViewerClass::Waiting, Some(&who("g2"))));
    assert!(
        !asked.visible_to(ViewerClass::Member, Some(&who("m1"))),
        "members do not read the waiting room"
    );

    w.apply(|tx, _| chat(tx, &host, text.clone(), Some(g1.clone())))
        .unwrap();
    let answer = w.log.last().unwrap().clone();
    assert!(matches!(
        &answer.kind,
        EventKind::ChatMessage { to: Some(to), waiting_room: true, .. } if *to == who("g1")
    ));
    assert!(answer.visible_to(ViewerClass::Host, Some(&who("cohost"))));
    assert!(answer.visible_to(ViewerClass::Waiting, Some(&who("g1"))));
    assert!(!answer.visible_to(ViewerClass::Waiting, Some(&who("g2"))));

    // A waiting guest writes to the hosts only, never to another guest.
    let g2 = w.p("g2");
    assert_eq!(
        w.apply(|tx, _| chat(tx, &g1, text.clone(), Some(g2)))
            .unwrap_err()
            .code,
        ErrorCode::Forbidden
    );
    // Members' chat stays with the members.
    let g2 = w.p("g2");
    w.apply(|tx, _| admit(tx, &w_host(&host), g2)).unwrap();
    let g2 = w.p("g2");
    w.apply(|tx, _| chat(tx, &g2, text.clone(), None)).unwrap();
    assert!(
        !w.log
            .last()
            .unwrap()
            .visible_to(ViewerClass::Waiting, Some(&who("g1")))
    );
}

fn w_host(host: &Participant) -> Actor {
    Actor::Participant(host.clone())
}

#[test]
fn a_host_locks_and_opens_the_meeting() {
    let mut w = World::new(Mode::Meeting, WaitingPolicy::AskHost, None);
    w.enter("host", Role::Host).unwrap();
    w.join("host").unwrap();
    w.enter("g1", Role::Speaker).unwrap();
    w.enter("g2", Role::Speaker).unwrap();
    let g1 = Actor::Participant(w.p("g1"));
    let waiting = w.waiting();
    assert_eq!(
        w.apply(|tx, _| set_policy(tx, &g1, WaitingPolicy::Deny, waiting))
            .unwrap_err()
            .code,
        ErrorCode::Forbidden,
        "guests cannot lock"
    );
    let host = w.host("host");
    let waiting = w.waiting();
    w.apply(|tx, _| set_policy(tx, &host, WaitingPolicy::Deny, waiting))
        .unwrap();
    assert_eq!(w.meeting.settings.policy, WaitingPolicy::Deny);
    assert_eq!(w.types().last().unwrap(), "meeting.updated");
    assert_eq!(
        w.enter("late", Role::Speaker).unwrap_err().code,
        ErrorCode::MeetingLocked
    );
    let before = w.meeting.last_seq;
    let waiting = w.waiting();
    w.apply(|tx, _| set_policy(tx, &host, WaitingPolicy::Deny, waiting))
        .unwrap();
    assert_eq!(w.meeting.last_seq, before, "no change, no event");
    // Opening a live meeting lets everyone waiting in, in one event.
    let waiting = w.waiting();
    w.apply(|tx, _| set_policy(tx, &host, WaitingPolicy::Open, waiting))
        .unwrap();
    assert_eq!(w.types().last().unwrap(), "participants.admitted");
    assert_eq!(w.p("g1").state, ParticipantState::Admitted);
    assert_eq!(w.p("g2").state, ParticipantState::Admitted);
}
