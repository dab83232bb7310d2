//! Events and names the realtime tests build (the hub's and the renderer's).

use convene_core::event::{Audience, Event, EventKind};
use convene_core::ids::{Identity, InstanceId, MeetingId};
use convene_core::meeting::MeetingStatus;
use convene_core::time::Timestamp;

pub fn id(s: &str) -> Identity {
    Identity::parse(s).unwrap()
}

pub fn meeting() -> MeetingId {
    MeetingId::parse("1234567890").unwrap()
}

pub fn run() -> InstanceId {
    InstanceId::generate(&mut rand::rng())
}

pub fn event(seq: u64, run: &InstanceId, audience: Audience, kind: EventKind) -> Event {
    Event {
        meeting_id: meeting(),
        seq,
        at: Timestamp::from_millis(0),
        instance_id: run.clone(),
        audience,
        kind,
    }
}

/// `who` admitted, as the event only they and hosts see.
pub fn admitted(seq: u64, run: &InstanceId, who: &str) -> Event {
    let kind = EventKind::ParticipantAdmitted {
        identity: id(who),
        room_name: "r".into(),
        status: MeetingStatus::Live,
    };
    event(seq, run, Audience::Subject { identity: id(who) }, kind)
}
