//! The meeting operations as pure functions: state and time in, a [`Change`] (new state, events,
//! media commands) out. The service loads what an operation needs, runs it, and commits the change.

use std::time::Duration;

use rand::CryptoRng;

use crate::error::{DomainError, ErrorCode};
use crate::event::{Audience, EventKind, RecordingFile, StopReason, TrackSelector};
use crate::ids::{ChatText, DisplayName, Identity, InstanceId, MeetingId, RecordingId, RoomName};
use crate::meeting::{
    ActiveRecording, Credentials, Meeting, MeetingSettings, MeetingStatus, Mode, Run, WaitingPolicy,
};
use crate::participant::{Participant, ParticipantState, Role};
use crate::time::Timestamp;

pub use crate::change::{Actor, Change, MediaCommand, Tx};

/// Creates a meeting and its first run.
pub fn create_meeting(
    id: MeetingId,
    room_name: Option<RoomName>,
    settings: MeetingSettings,
    credentials: Credentials,
    now: Timestamp,
    rng: &mut impl CryptoRng,
) -> Change {
    let meeting = Meeting {
        room_name: room_name.unwrap_or_else(|| RoomName::for_meeting(&id)),
        id,
        run: Run {
            instance_id: InstanceId::generate(rng),
            number: 1,
            opened_at: now,
            live_at: None,
            ended_at: None,
        },
        status: MeetingStatus::Created,
        created_at: now,
        updated_at: now,
        last_seq: 0,
        settings,
        credentials,
        recording: None,
    };
    let kind = EventKind::MeetingCreated {
        name: meeting.settings.name.to_string(),
        mode: meeting.settings.mode,
        policy: meeting.settings.policy,
    };
    let mut tx = Tx::new(meeting, now);
    tx.expected_seq = None;
    tx.emit(Audience::Hosts, kind);
    tx.finish().expect("an event was emitted")
}

/// Replaces a meeting's settings (and optionally credentials). When the new policy lets people
/// in and the meeting is live, everyone waiting is admitted.
pub fn update_meeting(
    tx: &mut Tx,
    actor: &Actor,
    settings: MeetingSettings,
    credentials: Option<Credentials>,
    waiting: Vec<Identity>,
) -> Result<(), DomainError> {
    if !matches!(actor, Actor::Admin) {
        return Err(DomainError::new(
            ErrorCode::Forbidden,
            "only an admin may change settings",
        ));
    }
    if settings.mode != tx.meeting.settings.mode && tx.meeting.is_live() {
        return Err(DomainError::new(
            ErrorCode::InvalidState,
            "the mode cannot change while the meeting is live",
        ));
    }
    if let Some(credentials) = credentials {
        credentials
            .check_distinct()
            .map_err(|e| DomainError::new(ErrorCode::InvalidCombination, e.to_string()))?;
        tx.meeting.credentials = credentials;
    }
    tx.meeting.settings = settings;
    settings_changed(tx, waiting);
    Ok(())
}

/// A host (or an admin) changes who gets in: `deny` locks the meeting, `open` or
/// `wait_for_host` on a live meeting lets everyone waiting in, as a settings update does.
pub fn set_policy(
    tx: &mut Tx,
    actor: &Actor,
    policy: WaitingPolicy,
    waiting: Vec<Identity>,
) -> Result<(), DomainError> {
    actor.require_host(tx.now)?;
    if tx.meeting.settings.policy == policy {
        return Ok(());
    }
    tx.meeting.settings.policy = policy;
    settings_changed(tx, waiting);
    Ok(())
}

/// Tells everyone the settings changed, and lets the waiting in when the new policy does.
fn settings_changed(tx: &mut Tx, waiting: Vec<Identity>) {
    let kind = EventKind::MeetingUpdated {
        name: tx.meeting.settings.name.to_string(),
        policy: tx.meeting.settings.policy,
        capacity: tx.meeting.settings.capacity,
    };
    tx.emit(Audience::Everyone, kind);
    if tx.meeting.is_live() && lets_waiting_in(tx.meeting.settings.policy) {
        admit_many(tx, waiting);
    }
}

fn lets_waiting_in(policy: WaitingPolicy) -> bool {
    matches!(policy, WaitingPolicy::Open | WaitingPolicy::WaitForHost)
}

/// Makes the meeting live (a new run if it had ended). Under `open` and `wait_for_host`,
/// everyone waiting is admitted in the same change, so they are told at once.
pub fn start_meeting(
    tx: &mut Tx,
    actor: &Actor,
    waiting: Vec<Identity>,
    rng: &mut impl CryptoRng,
) -> Result<(), DomainError> {
    let starter_may = match actor {
        Actor::Admin => true,
        Actor::Participant(p) => {
            p.role == Role::Host || tx.meeting.settings.policy == WaitingPolicy::Open
        }
    };
    if !starter_may {
        return Err(DomainError::new(
            ErrorCode::MeetingNotLive,
            "the meeting has not started; wait for the host",
        ));
    }
    match tx.meeting.status {
        MeetingStatus::Live => return Ok(()),
        MeetingStatus::Created => tx.meeting.run.live_at = Some(tx.now),
        MeetingStatus::Ended => {
            tx.meeting.run = Run {
                instance_id: InstanceId::generate(rng),
                number: tx.meeting.run.number + 1,
                opened_at: tx.now,
                live_at: Some(tx.now),
                ended_at: None,
            };
        }
    }
    tx.meeting.status = MeetingStatus::Live;
    let kind = EventKind::MeetingStarted {
        instance_id: tx.meeting.run.instance_id.clone(),
        run: tx.meeting.run.number,
        room_name: tx.meeting.room_name.to_string(),
    };
    tx.emit(Audience::Everyone, kind);
    if lets_waiting_in(tx.meeting.settings.policy) {
        admit_many(tx, waiting);
    }
    if tx.meeting.settings.auto_record && tx.meeting.recording.is_none() {
        begin_recording(tx, None, rng);
    }
    Ok(())
}

/// Ends the run: everyone present leaves, the media room closes, the waiting room is told.
pub fn end_meeting(
    tx: &mut Tx,
    actor: &Actor,
    present: Vec<Participant>,
) -> Result<(), DomainError> {
    actor.require_host(tx.now)?;
    if tx.meeting.status == MeetingStatus::Ended {
        return Ok(());
    }
    end_recording(tx, StopReason::MeetingEnded);
    tx.meeting.status = MeetingStatus::Ended;
    tx.meeting.run.ended_at = Some(tx.now);
    for mut p in present.into_iter().filter(|p| p.state.is_present()) {
        p.state = ParticipantState::Left;
        p.hand_raised = false;
        p.invited = false;
        p.media_connected = false;
        tx.put(p);
    }
    let kind = EventKind::MeetingEnded {
        instance_id: tx.meeting.run.instance_id.clone(),
        run: tx.meeting.run.number,
    };
    tx.emit(Audience::Everyone, kind);
    let room = tx.meeting.room_name.clone();
    tx.command(MediaCommand::CloseRoom { room });
    Ok(())
}

/// How someone comes in.
#[derive(Clone, Debug)]
pub struct Entry {
    pub identity: Identity,
    pub name: DisplayName,
    /// The role the credential (or the trusted caller) grants.
    pub role: Role,
    /// A trusted caller (API key holder) placing the person directly; skips the waiting room.
    pub trusted: bool,
}

/// Someone enters the meeting with a credential: they land in the waiting room or are admitted,
/// by policy. Roles and bans stored for the person apply.
pub fn enter(
    tx: &mut Tx,
    existing: Option<Participant>,
    entry: Entry,
) -> Result<Participant, DomainError> {
    let now = tx.now;
    if let Some(p) = &existing {
        if p.is_banned_at(now) {
            return Err(DomainError::code(ErrorCode::Banned));
        }
        if p.role == Role::Host && entry.role != Role::Host && !entry.trusted {
            return Err(DomainError::new(
                ErrorCode::Forbidden,
                "this identity belongs to a host",
            ));
        }
    }
    if tx.meeting.status == MeetingStatus::Ended && entry.role != Role::Host && !entry.trusted {
        return Err(DomainError::code(ErrorCode::MeetingEnded));
    }
    let role = match (&existing, entry.trusted) {
        (_, true) => entry.role,
        (_, false) if entry.role == Role::Host => Role::Host,
        (Some(p), false) => p.role,
        (None, false) => entry.role,
    };
    let already_in = existing.as_ref().is_some_and(|p| {
        p.state.is_member() && p.admitted_in.as_ref() == Some(&tx.meeting.run.instance_id)
    });
    let policy = tx.meeting.settings.policy;
    if policy == WaitingPolicy::Deny && role != Role::Host && !entry.trusted && !already_in {
        return Err(DomainError::code(ErrorCode::MeetingLocked));
    }
    let admit_now = already_in
        || entry.trusted
        || role == Role::Host
        || match policy {
            WaitingPolicy::Open => true,
            WaitingPolicy::WaitForHost => tx.meeting.is_live(),
            WaitingPolicy::AskHost | WaitingPolicy::Deny => false,
        };
    let mut participant = existing.unwrap_or_else(|| {
        Participant::arriving(
            tx.meeting.id.clone(),
            entry.identity.clone(),
            entry.name.clone(),
            role,
            now,
        )
    });
    participant.name = entry.name;
    let role_changed = participant.role != role;
    participant.role = role;
    if participant.state == ParticipantState::Banned {
        // A timed ban has run out.
        participant.banned_until = None;
    }
    if already_in {
        // Entering again while admitted changes nothing but the name, and the role when a
        // trusted caller (or the host credential) says so: that change is an event like any other.
        if role_changed {
            let identity = participant.identity.clone();
            tx.emit(
                Audience::MembersAndSubject {
                    identity: identity.clone(),
                },
                EventKind::ParticipantRoleChanged {
                    identity: identity.clone(),
                    role,
                },
            );
            let room = tx.meeting.room_name.clone();
            tx.command(MediaCommand::SetRole {
                room,
                identity,
                role,
            });
        }
        return Ok(tx.put(participant));
    }
    participant.state = ParticipantState::Waiting;
    participant.admitted_in = None;
    let identity = participant.identity.clone();
    let kind = EventKind::ParticipantEntered {
        identity: identity.clone(),
        name: participant.name.to_string(),
        role,
        state: if admit_now {
            ParticipantState::Admitted
        } else {
            ParticipantState::Waiting
        },
    };
    tx.emit(
        Audience::Subject {
            identity: identity.clone(),
        },
        kind,
    );
    if admit_now {
        participant = admit_one(tx, participant);
    } else {
        participant = tx.put(participant);
    }
    Ok(participant)
}

fn admit_one(tx: &mut Tx, mut p: Participant) -> Participant {
    p.state = ParticipantState::Admitted;
    p.admitted_in = Some(tx.meeting.run.instance_id.clone());
    let kind = EventKind::ParticipantAdmitted {
        identity: p.identity.clone(),
        room_name: tx.meeting.room_name.to_string(),
        status: tx.meeting.status,
    };
    tx.emit(
        Audience::Subject {
            identity: p.identity.clone(),
        },
        kind,
    );
    tx.put(p)
}

/// Everyone waiting comes in at once: one event and one store update, however many they are
/// (a webinar's thousands are told in one fan-out, and a webhook endpoint gets one delivery).
/// `waiting` is who the store holds as waiting; people this change already holds are included.
fn admit_many(tx: &mut Tx, waiting: Vec<Identity>) {
    let stored = waiting.len();
    let mut identities = waiting;
    let run = tx.meeting.run.instance_id.clone();
    for p in tx.participants.values_mut() {
        if p.state == ParticipantState::Waiting {
            p.state = ParticipantState::Admitted;
            p.admitted_in = Some(run.clone());
            p.updated_at = tx.now;
            identities.push(p.identity.clone());
        }
    }
    if identities.is_empty() {
        return;
    }
    identities.sort();
    identities.dedup();
    tx.admit_waiting = Some(stored);
    let kind = EventKind::ParticipantsAdmitted {
        identities,
        room_name: tx.meeting.room_name.to_string(),
        status: tx.meeting.status,
    };
    tx.emit(Audience::Admitted, kind);
}

/// A host lets one waiting person in.
pub fn admit(tx: &mut Tx, actor: &Actor, target: Participant) -> Result<Participant, DomainError> {
    actor.require_host(tx.now)?;
    if target.state != ParticipantState::Waiting {
        return Err(DomainError::new(
            ErrorCode::InvalidState,
            "the participant is not waiting",
        ));
    }
    Ok(admit_one(tx, target))
}

/// A host lets everyone waiting in.
pub fn admit_all(tx: &mut Tx, actor: &Actor, waiting: Vec<Identity>) -> Result<(), DomainError> {
    actor.require_host(tx.now)?;
    admit_many(tx, waiting);
    Ok(())
}

/// A host turns a waiting person away; their tokens stop working. They may enter again.
pub fn deny(tx: &mut Tx, actor: &Actor, mut target: Participant) -> Result<(), DomainError> {
    actor.require_host(tx.now)?;
    if target.state != ParticipantState::Waiting {
        return Err(DomainError::new(
            ErrorCode::InvalidState,
            "the participant is not waiting",
        ));
    }
    target.state = ParticipantState::Removed;
    target.epoch += 1;
    let identity = target.identity.clone();
    tx.put(target);
    tx.emit(
        Audience::Subject {
            identity: identity.clone(),
        },
        EventKind::ParticipantDenied { identity },
    );
    Ok(())
}

/// A host sends an admitted person back to the waiting room (and out of the media room).
pub fn send_back(tx: &mut Tx, actor: &Actor, mut target: Participant) -> Result<(), DomainError> {
    actor.require_host(tx.now)?;
    if !target.state.is_member() || target.role == Role::Host {
        return Err(DomainError::new(
            ErrorCode::InvalidState,
            "only an admitted, non-host participant can be sent back",
        ));
    }
    target.state = ParticipantState::Waiting;
    target.admitted_in = None;
    target.hand_raised = false;
    target.invited = false;
    target.epoch += 1;
    let identity = target.identity.clone();
    tx.put(target);
    tx.emit(
        Audience::MembersAndSubject {
            identity: identity.clone(),
        },
        EventKind::ParticipantSentBack {
            identity: identity.clone(),
        },
    );
    let room = tx.meeting.room_name.clone();
    tx.command(MediaCommand::Disconnect { room, identity });
    Ok(())
}

/// An admitted person asks for media access. A host (or anyone, under `open`) starts the meeting.
/// Returns the person, now `joined`. Capacity counts joined people; hosts are never turned away.
pub fn join(
    tx: &mut Tx,
    participant: Participant,
    joined_count: u64,
    waiting: Vec<Identity>,
    rng: &mut impl CryptoRng,
) -> Result<Participant, DomainError> {
    let now = tx.now;
    if participant.is_banned_at(now) {
        return Err(DomainError::code(ErrorCode::Banned));
    }
    let mut participant = participant;
    if !tx.meeting.is_live() {
        let may_start = participant.role == Role::Host
            || (tx.meeting.settings.policy == WaitingPolicy::Open && participant.state.is_member());
        if !may_start {
            return Err(match tx.meeting.status {
                MeetingStatus::Ended => DomainError::code(ErrorCode::MeetingEnded),
                _ => DomainError::new(
                    ErrorCode::MeetingNotLive,
                    "the meeting has not started; wait for the host",
                ),
            });
        }
        let starter = Actor::Participant(participant.clone());
        start_meeting(tx, &starter, waiting, rng)?;
        if let Some(updated) = tx.participants.get(&participant.identity) {
            participant = updated.clone();
        }
        if participant.role == Role::Host || participant.state == ParticipantState::Left {
            // A host restarting an ended meeting is admitted to the new run.
            participant.state = ParticipantState::Admitted;
            participant.admitted_in = Some(tx.meeting.run.instance_id.clone());
        }
    }
    let current_run = Some(&tx.meeting.run.instance_id);
    let admitted_here = participant.admitted_in.as_ref() == current_run
        && matches!(
            participant.state,
            ParticipantState::Admitted | ParticipantState::Joined | ParticipantState::Left
        );
    if !admitted_here {
        return Err(DomainError::code(ErrorCode::NotAdmitted));
    }
    if participant.state == ParticipantState::Joined {
        return Ok(tx.put(participant));
    }
    if let Some(capacity) = tx.meeting.settings.capacity
        && participant.role != Role::Host
        && joined_count >= u64::from(capacity)
    {
        return Err(DomainError::code(ErrorCode::MeetingFull));
    }
    participant.state = ParticipantState::Joined;
    let kind = EventKind::ParticipantJoined {
        identity: participant.identity.clone(),
        name: participant.name.to_string(),
        role: participant.role,
    };
    tx.emit(
        Audience::MembersAndSubject {
            identity: participant.identity.clone(),
        },
        kind,
    );
    Ok(tx.put(participant))
}

/// Someone leaves on their own. They may come back in the same run without waiting again.
pub fn leave(tx: &mut Tx, mut participant: Participant) -> Result<(), DomainError> {
    if !participant.state.is_present() {
        return Ok(());
    }
    participant.state = ParticipantState::Left;
    participant.hand_raised = false;
    participant.invited = false;
    let identity = participant.identity.clone();
    tx.put(participant);
    tx.emit(
        Audience::MembersAndSubject {
            identity: identity.clone(),
        },
        EventKind::ParticipantLeft {
            identity: identity.clone(),
        },
    );
    let room = tx.meeting.room_name.clone();
    tx.command(MediaCommand::Disconnect { room, identity });
    Ok(())
}

fn require_member(p: &Participant, tx: &Tx) -> Result<(), DomainError> {
    let in_run = p.admitted_in.as_ref() == Some(&tx.meeting.run.instance_id);
    if p.state.is_member() && in_run {
        Ok(())
    } else {
        Err(DomainError::code(ErrorCode::NotAdmitted))
    }
}

/// A member raises or lowers their hand.
pub fn set_hand(
    tx: &mut Tx,
    mut participant: Participant,
    raised: bool,
) -> Result<(), DomainError> {
    require_member(&participant, tx)?;
    if participant.hand_raised == raised {
        return Ok(());
    }
    participant.hand_raised = raised;
    let identity = participant.identity.clone();
    tx.put(participant);
    let kind = if raised {
        EventKind::HandRaised { identity }
    } else {
        EventKind::HandLowered { identity }
    };
    tx.emit(Audience::Members, kind);
    Ok(())
}

/// A host invites a viewer to speak.
pub fn invite(tx: &mut Tx, actor: &Actor, mut target: Participant) -> Result<(), DomainError> {
    actor.require_host(tx.now)?;
    require_member(&target, tx)?;
    if target.role != Role::Viewer {
        return Err(DomainError::new(
            ErrorCode::InvalidState,
            "only a viewer can be invited to speak",
        ));
    }
    if target.invited {
        return Ok(());
    }
    target.invited = true;
    let identity = target.identity.clone();
    tx.put(target);
    tx.emit(
        Audience::Subject {
            identity: identity.clone(),
        },
        EventKind::SpeakerInvited { identity },
    );
    Ok(())
}

/// The invited viewer answers. Accepting makes them a speaker, live.
pub fn answer_invite(
    tx: &mut Tx,
    mut participant: Participant,
    accept: bool,
) -> Result<(), DomainError> {
    require_member(&participant, tx)?;
    if !participant.invited {
        return Err(DomainError::new(
            ErrorCode::InvalidState,
            "there is no invitation to answer",
        ));
    }
    participant.invited = false;
    let identity = participant.identity.clone();
    if accept {
        participant.role = Role::Speaker;
        participant.hand_raised = false;
        tx.put(participant);
        tx.emit(
            Audience::Members,
            EventKind::InviteAccepted {
                identity: identity.clone(),
            },
        );
        tx.emit(
            Audience::MembersAndSubject {
                identity: identity.clone(),
            },
            EventKind::ParticipantRoleChanged {
                identity: identity.clone(),
                role: Role::Speaker,
            },
        );
        let room = tx.meeting.room_name.clone();
        tx.command(MediaCommand::SetRole {
            room,
            identity,
            role: Role::Speaker,
        });
    } else {
        tx.put(participant);
        tx.emit(
            Audience::Subject {
                identity: identity.clone(),
            },
            EventKind::InviteDeclined { identity },
        );
    }
    Ok(())
}

/// A host changes someone's role (promote a viewer, demote a speaker, make a co-host).
pub fn set_role(
    tx: &mut Tx,
    actor: &Actor,
    mut target: Participant,
    role: Role,
) -> Result<(), DomainError> {
    actor.require_host(tx.now)?;
    if target.state == ParticipantState::Banned {
        return Err(DomainError::code(ErrorCode::Banned));
    }
    if target.role == role {
        return Ok(());
    }
    target.role = role;
    target.invited = false;
    if role != Role::Viewer {
        target.hand_raised = false;
    }
    let identity = target.identity.clone();
    tx.put(target);
    tx.emit(
        Audience::MembersAndSubject {
            identity: identity.clone(),
        },
        EventKind::ParticipantRoleChanged {
            identity: identity.clone(),
            role,
        },
    );
    let room = tx.meeting.room_name.clone();
    tx.command(MediaCommand::SetRole {
        room,
        identity,
        role,
    });
    Ok(())
}

/// A host removes someone: out of media and events now; their tokens stop working.
pub fn remove(tx: &mut Tx, actor: &Actor, mut target: Participant) -> Result<(), DomainError> {
    actor.require_host(tx.now)?;
    if target.state == ParticipantState::Banned {
        return Ok(());
    }
    target.state = ParticipantState::Removed;
    target.hand_raised = false;
    target.invited = false;
    target.media_connected = false;
    target.epoch += 1;
    let identity = target.identity.clone();
    tx.put(target);
    tx.emit(
        Audience::MembersAndSubject {
            identity: identity.clone(),
        },
        EventKind::ParticipantRemoved {
            identity: identity.clone(),
        },
    );
    let room = tx.meeting.room_name.clone();
    tx.command(MediaCommand::Disconnect { room, identity });
    Ok(())
}

/// A host bans someone, for a while or for good. The ban is stored and survives restarts.
pub fn ban(
    tx: &mut Tx,
    actor: &Actor,
    mut target: Participant,
    duration: Option<Duration>,
) -> Result<(), DomainError> {
    actor.require_host(tx.now)?;
    if let Actor::Participant(host) = actor
        && host.identity == target.identity
    {
        return Err(DomainError::new(
            ErrorCode::InvalidState,
            "a host cannot ban themselves",
        ));
    }
    let until = duration.map(|d| tx.now.plus(d));
    target.state = ParticipantState::Banned;
    target.banned_until = until;
    target.hand_raised = false;
    target.invited = false;
    target.media_connected = false;
    target.admitted_in = None;
    target.epoch += 1;
    let identity = target.identity.clone();
    tx.put(target);
    tx.emit(
        Audience::MembersAndSubject {
            identity: identity.clone(),
        },
        EventKind::ParticipantBanned {
            identity: identity.clone(),
            until,
        },
    );
    let room = tx.meeting.room_name.clone();
    tx.command(MediaCommand::Disconnect { room, identity });
    Ok(())
}

/// A host lifts a ban. The person may enter again (through the waiting room).
pub fn unban(tx: &mut Tx, actor: &Actor, mut target: Participant) -> Result<(), DomainError> {
    actor.require_host(tx.now)?;
    if target.state != ParticipantState::Banned {
        return Err(DomainError::new(
            ErrorCode::InvalidState,
            "the participant is not banned",
        ));
    }
    target.state = ParticipantState::Left;
    target.banned_until = None;
    let identity = target.identity.clone();
    tx.put(target);
    tx.emit(Audience::Hosts, EventKind::ParticipantUnbanned { identity });
    Ok(())
}

/// A host mutes (or asks to unmute) someone's track.
pub fn mute(
    tx: &mut Tx,
    actor: &Actor,
    target: &Participant,
    track: TrackSelector,
    muted: bool,
) -> Result<(), DomainError> {
    actor.require_host(tx.now)?;
    require_member(target, tx)?;
    let identity = target.identity.clone();
    tx.emit(
        Audience::MembersAndSubject {
            identity: identity.clone(),
        },
        EventKind::ParticipantMuted {
            identity: identity.clone(),
            track: track.clone(),
            muted,
        },
    );
    let room = tx.meeting.room_name.clone();
    tx.command(MediaCommand::Mute {
        room,
        identity,
        track,
        muted,
    });
    Ok(())
}

/// A member (or a host) sends a chat message to everyone or to one person. Where the meeting
/// has `waiting_room_chat`, a waiting guest writes to the hosts (and reads only its own
/// conversation), and a host writes to a waiting guest; every host sees those conversations.
pub fn chat(
    tx: &mut Tx,
    sender: &Participant,
    text: ChatText,
    to: Option<Participant>,
) -> Result<(), DomainError> {
    let host = Actor::Participant(sender.clone()).is_host(tx.now);
    if !host && sender.state == ParticipantState::Waiting {
        return waiting_room_chat(tx, sender, text, to);
    }
    if let Some(target) = to.as_ref().filter(|t| t.state == ParticipantState::Waiting)
        && host
    {
        let target = target.identity.clone();
        return host_to_waiting_guest(tx, sender, text, target);
    }
    if !host {
        require_member(sender, tx)?;
    }
    if tx.meeting.settings.mode == Mode::Stream || tx.meeting.is_live() || host {
        // Chat is open on stages and in live meetings.
    } else {
        return Err(DomainError::code(ErrorCode::MeetingNotLive));
    }
    let from = sender.identity.clone();
    let (audience, to) = match to {
        Some(target) => {
            require_member(&target, tx).or_else(|_| {
                if target.role == Role::Host {
                    Ok(())
                } else {
                    Err(DomainError::new(
                        ErrorCode::ParticipantNotFound,
                        "the recipient is not in the meeting",
                    ))
                }
            })?;
            (
                Audience::Pair {
                    from: from.clone(),
                    to: target.identity.clone(),
                },
                Some(target.identity),
            )
        }
        None => (Audience::Members, None),
    };
    tx.emit(
        audience,
        EventKind::ChatMessage {
            from,
            text: text.to_string(),
            to,
            waiting_room: false,
        },
    );
    Ok(())
}

fn require_waiting_room_chat(tx: &Tx) -> Result<(), DomainError> {
    if tx.meeting.settings.waiting_room_chat {
        Ok(())
    } else {
        Err(DomainError::new(
            ErrorCode::NotAdmitted,
            "this meeting has no chat in the waiting room; wait to be admitted",
        ))
    }
}

/// A waiting guest writes to the hosts: seen by the hosts and the guest alone.
fn waiting_room_chat(
    tx: &mut Tx,
    sender: &Participant,
    text: ChatText,
    to: Option<Participant>,
) -> Result<(), DomainError> {
    require_waiting_room_chat(tx)?;
    if to.is_some_and(|t| t.role != Role::Host) {
        return Err(DomainError::new(
            ErrorCode::Forbidden,
            "in the waiting room you can write to the hosts only",
        ));
    }
    let from = sender.identity.clone();
    tx.emit(
        Audience::Subject {
            identity: from.clone(),
        },
        EventKind::ChatMessage {
            from,
            text: text.to_string(),
            to: None,
            waiting_room: true,
        },
    );
    Ok(())
}

/// A host writes to a waiting guest: seen by the guest and every host.
fn host_to_waiting_guest(
    tx: &mut Tx,
    sender: &Participant,
    text: ChatText,
    target: Identity,
) -> Result<(), DomainError> {
    require_waiting_room_chat(tx).map_err(|_| {
        DomainError::new(
            ErrorCode::InvalidState,
            "this meeting has no chat in the waiting room; turn on waiting_room_chat",
        )
    })?;
    tx.emit(
        Audience::Subject {
            identity: target.clone(),
        },
        EventKind::ChatMessage {
            from: sender.identity.clone(),
            text: text.to_string(),
            to: Some(target),
            waiting_room: true,
        },
    );
    Ok(())
}

/// The media engine reports a connection change.
pub fn media_presence(tx: &mut Tx, mut participant: Participant, connected: bool) {
    if participant.media_connected == connected {
        return;
    }
    participant.media_connected = connected;
    let identity = participant.identity.clone();
    tx.put(participant);
    let kind = if connected {
        EventKind::MediaConnected {
            identity: identity.clone(),
        }
    } else {
        EventKind::MediaDisconnected {
            identity: identity.clone(),
        }
    };
    tx.emit(Audience::MembersAndSubject { identity }, kind);
}

/// The media engine reports a track change.
pub fn media_track(tx: &mut Tx, identity: Identity, track_sid: String, kind: Option<String>) {
    let event = match kind {
        Some(kind) => EventKind::TrackPublished {
            identity,
            track_sid,
            kind,
        },
        None => EventKind::TrackUnpublished {
            identity,
            track_sid,
        },
    };
    tx.emit(Audience::Members, event);
}

#[cfg(test)]
#[path = "ops_tests.rs"]
mod tests;

/// A host (or an admin) starts recording the live meeting; one recording at a time.
pub fn start_recording(
    tx: &mut Tx,
    actor: &Actor,
    rng: &mut impl CryptoRng,
) -> Result<RecordingId, DomainError> {
    actor.require_host(tx.now)?;
    if !tx.meeting.is_live() {
        return Err(DomainError::new(
            ErrorCode::MeetingNotLive,
            "a meeting is recorded only while it is live",
        ));
    }
    if let Some(active) = &tx.meeting.recording {
        return Err(DomainError::new(
            ErrorCode::InvalidState,
            format!("recording {} is running already", active.id),
        ));
    }
    let by = match actor {
        Actor::Admin => None,
        Actor::Participant(p) => Some(p.identity.clone()),
    };
    Ok(begin_recording(tx, by, rng))
}

fn begin_recording(tx: &mut Tx, by: Option<Identity>, rng: &mut impl CryptoRng) -> RecordingId {
    let id = RecordingId::generate(rng);
    tx.meeting.recording = Some(ActiveRecording {
        id: id.clone(),
        started_at: tx.now,
    });
    let kind = EventKind::RecordingStarted {
        recording_id: id.clone(),
        by,
    };
    tx.emit(Audience::Everyone, kind);
    let room = tx.meeting.room_name.clone();
    let meeting = tx.meeting.id.clone();
    tx.command(MediaCommand::StartRecording {
        room,
        meeting,
        recording: id.clone(),
    });
    id
}

/// A host (or an admin) stops the running recording `id`.
pub fn stop_recording(tx: &mut Tx, actor: &Actor, id: &RecordingId) -> Result<(), DomainError> {
    actor.require_host(tx.now)?;
    if tx.meeting.recording.as_ref().is_none_or(|r| r.id != *id) {
        return Err(DomainError::new(
            ErrorCode::InvalidState,
            "this recording is not running",
        ));
    }
    end_recording(tx, StopReason::Requested);
    Ok(())
}

/// Stops the running recording, if any: everyone is told, the media engine finishes its files.
fn end_recording(tx: &mut Tx, reason: StopReason) {
    let Some(active) = tx.meeting.recording.take() else {
        return;
    };
    tx.emit(
        Audience::Everyone,
        EventKind::RecordingStopped {
            recording_id: active.id.clone(),
            reason,
        },
    );
    let room = tx.meeting.room_name.clone();
    let meeting = tx.meeting.id.clone();
    tx.command(MediaCommand::StopRecording {
        room,
        meeting,
        recording: active.id,
    });
}

/// How a recording's files ended up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordingOutcome {
    /// Every file is stored.
    Ready {
        files: Vec<RecordingFile>,
        duration_ms: u64,
    },
    /// Not as asked: why, and the files kept.
    Failed {
        reason: String,
        files: Vec<RecordingFile>,
        /// The recording stopped because of the failure (a write error while recording), or
        /// because the server stopped.
        stop: StopReason,
    },
}

/// The media side reports recording `id` finished. Still running (it failed while recording,
/// or the server stopped), it stops first. Reported twice, the second report changes nothing.
pub fn finish_recording(tx: &mut Tx, id: &RecordingId, outcome: RecordingOutcome) {
    if tx.meeting.recording.as_ref().is_some_and(|r| r.id == *id) {
        let reason = match &outcome {
            RecordingOutcome::Ready { .. } => StopReason::Requested,
            RecordingOutcome::Failed { stop, .. } => *stop,
        };
        // The engine stops taking its packets; its files are finished already.
        end_recording(tx, reason);
    }
    let kind = match outcome {
        RecordingOutcome::Ready { files, duration_ms } => EventKind::RecordingReady {
            recording_id: id.clone(),
            bytes: files.iter().map(|f| f.bytes).sum(),
            files,
            duration_ms,
        },
        RecordingOutcome::Failed { reason, files, .. } => EventKind::RecordingFailed {
            recording_id: id.clone(),
            reason,
            files,
        },
    };
    tx.emit(Audience::Hosts, kind);
}

/// A recording that is not running is deleted (the service checks who may).
pub fn delete_recording(tx: &mut Tx, id: &RecordingId) -> Result<(), DomainError> {
    if tx.meeting.recording.as_ref().is_some_and(|r| r.id == *id) {
        return Err(DomainError::new(
            ErrorCode::InvalidState,
            "stop the recording before deleting it",
        ));
    }
    tx.emit(
        Audience::Hosts,
        EventKind::RecordingDeleted {
            recording_id: id.clone(),
        },
    );
    Ok(())
}
