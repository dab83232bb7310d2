//! Who may act and connect, as pure rules over stored state: whether a participant token still
//! stands for its holder ([`check_token`]: its run and epoch), whether a person may be on the
//! meeting's media ([`may_connect_media`]), and what their role lets them do there
//! ([`MediaRights`]). The service applies them to what it loads; none of them reads a store or a
//! clock.

use crate::error::{DomainError, ErrorCode};
use crate::ids::InstanceId;
use crate::meeting::{Meeting, MeetingStatus};
use crate::participant::{Participant, ParticipantState, Role};
use crate::time::Timestamp;

/// Which run a participant token may have been issued for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TokenRuns {
    /// Only the meeting's current run.
    #[default]
    Current,
    /// The current run, or an earlier one when the holder is a host and the meeting has ended:
    /// a host starts the next run with the token of the last one (`join`).
    OrEarlierForHostOfEndedMeeting,
}

/// Whether a participant token, issued for run `instance` and epoch `epoch`, still stands for
/// `holder` (as stored) in `meeting` (as stored): its run is the meeting's current one (or, as
/// `runs` allows, a host's earlier one), and its epoch is the holder's current one (remove, deny
/// and ban bump it). `InvalidToken` otherwise, saying which. Bans are not this check's: a ban
/// bumps the epoch, and [`may_connect_media`] and the service's token check also refuse a holder
/// banned now.
pub fn check_token(
    meeting: &Meeting,
    holder: &Participant,
    instance: &InstanceId,
    epoch: u32,
    runs: TokenRuns,
) -> Result<(), DomainError> {
    let earlier_run_allowed = runs == TokenRuns::OrEarlierForHostOfEndedMeeting
        && holder.role == Role::Host
        && meeting.status == MeetingStatus::Ended;
    if &meeting.run.instance_id != instance && !earlier_run_allowed {
        return Err(DomainError::new(
            ErrorCode::InvalidToken,
            "the token is for an earlier run of this meeting",
        ));
    }
    if holder.epoch != epoch {
        return Err(DomainError::new(
            ErrorCode::InvalidToken,
            "the token has been revoked",
        ));
    }
    Ok(())
}

/// Whether a person may be on the meeting's media now (capacity aside): the meeting is live, the
/// person admitted in this run and not banned. The embedded engine asks this at every join; for an
/// external LiveKit it gates minting a media token and is checked again when LiveKit reports a join.
pub fn may_connect_media(
    meeting: &Meeting,
    participant: &Participant,
    now: Timestamp,
) -> Result<(), DomainError> {
    if participant.is_banned_at(now) {
        return Err(DomainError::code(ErrorCode::Banned));
    }
    if !meeting.is_live() {
        return Err(DomainError::code(ErrorCode::MeetingNotLive));
    }
    let admitted = participant.admitted_in.as_ref() == Some(&meeting.run.instance_id)
        && matches!(
            participant.state,
            ParticipantState::Admitted | ParticipantState::Joined | ParticipantState::Left
        );
    if !admitted {
        return Err(DomainError::code(ErrorCode::NotAdmitted));
    }
    Ok(())
}

/// What a person may do on the meeting's media: the one rule behind a media token's grants
/// (`convene-token`), the embedded engine's permission on a live connection and an external
/// LiveKit's `UpdateParticipant` permission (both in the binary).
///
/// It follows the person's role alone. Hosts and speakers publish media and data, everyone
/// subscribes, and hosts administer the room. The stage acts through the role: a viewer invited to
/// speak keeps a viewer's rights until accepting makes them a speaker, and a host who takes a
/// speaker back to viewer (`set_role`) takes publishing with it; each role change reaches a live
/// connection as a `MediaCommand::SetRole`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MediaRights {
    pub publish: bool,
    pub subscribe: bool,
    pub publish_data: bool,
    pub room_admin: bool,
}

impl MediaRights {
    pub fn of(role: Role) -> Self {
        let publish = role.can_publish();
        Self {
            publish,
            subscribe: true,
            publish_data: publish,
            room_admin: role == Role::Host,
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::ids::{Credential, DisplayName, Identity, MeetingId, RoomName};
    use crate::meeting::{Credentials, MeetingSettings, Mode, Run, WaitingPolicy};

    const NOW: Timestamp = Timestamp::from_millis(1_000_000);

    fn instance(seed: u64) -> InstanceId {
        InstanceId::generate(&mut StdRng::seed_from_u64(seed))
    }

    fn meeting(status: MeetingStatus) -> Meeting {
        let id = MeetingId::parse("123456789012").unwrap();
        Meeting {
            room_name: RoomName::for_meeting(&id),
            id,
            run: Run {
                instance_id: instance(1),
                number: 2,
                opened_at: NOW,
                live_at: Some(NOW),
                ended_at: None,
            },
            status,
            created_at: NOW,
            updated_at: NOW,
            last_seq: 5,
            recording: None,
            settings: MeetingSettings::new(
                DisplayName::parse("Standup").unwrap(),
                Mode::Meeting,
                WaitingPolicy::AskHost,
            ),
            credentials: Credentials::new(
                Some(Credential::parse("host-pin").unwrap()),
                Some(Credential::parse("guest-pin").unwrap()),
                None,
                &mut StdRng::seed_from_u64(2),
            )
            .unwrap(),
        }
    }

    /// Someone admitted in the meeting's current run and joined, with epoch 3.
    fn person(meeting: &Meeting, role: Role) -> Participant {
        Participant {
            meeting_id: meeting.id.clone(),
            identity: Identity::parse("alice").unwrap(),
            name: DisplayName::parse("Alice").unwrap(),
            role,
            state: ParticipantState::Joined,
            hand_raised: false,
            invited: false,
            media_connected: false,
            admitted_in: Some(meeting.run.instance_id.clone()),
            banned_until: None,
            epoch: 3,
            created_at: NOW,
            updated_at: NOW,
        }
    }

    fn refusal(result: Result<(), DomainError>) -> (ErrorCode, String) {
        let error = result.expect_err("refused");
        (error.code, error.message)
    }

    #[test]
    fn a_token_of_the_current_run_and_epoch_stands() {
        let meeting = meeting(MeetingStatus::Live);
        let alice = person(&meeting, Role::Speaker);
        let current = meeting.run.instance_id.clone();
        assert_eq!(
            check_token(&meeting, &alice, &current, 3, TokenRuns::Current),
            Ok(())
        );
    }

    #[test]
    fn a_token_of_another_run_is_refused() {
        let meeting = meeting(MeetingStatus::Live);
        let earlier = instance(9);
        for role in [Role::Host, Role::Speaker, Role::Viewer] {
            let holder = person(&meeting, role);
            for runs in [
                TokenRuns::Current,
                TokenRuns::OrEarlierForHostOfEndedMeeting,
            ] {
                assert_eq!(
                    refusal(check_token(&meeting, &holder, &earlier, 3, runs)),
                    (
                        ErrorCode::InvalidToken,
                        "the token is for an earlier run of this meeting".to_owned()
                    ),
                    "{role:?} {runs:?} in a live meeting"
                );
            }
        }
    }

    #[test]
    fn only_a_host_of_an_ended_meeting_may_present_an_earlier_run_and_only_when_allowed() {
        let ended = meeting(MeetingStatus::Ended);
        let earlier = instance(9);
        let host = person(&ended, Role::Host);
        let speaker = person(&ended, Role::Speaker);
        let allowed = TokenRuns::OrEarlierForHostOfEndedMeeting;
        assert_eq!(check_token(&ended, &host, &earlier, 3, allowed), Ok(()));
        assert_eq!(
            refusal(check_token(&ended, &host, &earlier, 3, TokenRuns::Current)).0,
            ErrorCode::InvalidToken
        );
        assert_eq!(
            refusal(check_token(&ended, &speaker, &earlier, 3, allowed)).0,
            ErrorCode::InvalidToken
        );
        // The earlier run is allowed, an older epoch never.
        assert_eq!(
            refusal(check_token(&ended, &host, &earlier, 2, allowed)),
            (
                ErrorCode::InvalidToken,
                "the token has been revoked".to_owned()
            )
        );
    }

    #[test]
    fn a_token_of_another_epoch_is_refused_as_revoked() {
        let meeting = meeting(MeetingStatus::Live);
        let alice = person(&meeting, Role::Host);
        let current = meeting.run.instance_id.clone();
        for epoch in [0, 2, 4] {
            assert_eq!(
                refusal(check_token(
                    &meeting,
                    &alice,
                    &current,
                    epoch,
                    TokenRuns::Current
                )),
                (
                    ErrorCode::InvalidToken,
                    "the token has been revoked".to_owned()
                ),
                "epoch {epoch}"
            );
        }
    }

    #[test]
    fn the_run_is_checked_before_the_epoch() {
        let meeting = meeting(MeetingStatus::Live);
        let alice = person(&meeting, Role::Viewer);
        assert_eq!(
            refusal(check_token(
                &meeting,
                &alice,
                &instance(9),
                0,
                TokenRuns::Current
            ))
            .1,
            "the token is for an earlier run of this meeting"
        );
    }

    #[test]
    fn an_admitted_person_of_a_live_meeting_may_connect_media() {
        let meeting = meeting(MeetingStatus::Live);
        for state in [
            ParticipantState::Admitted,
            ParticipantState::Joined,
            ParticipantState::Left,
        ] {
            let alice = Participant {
                state,
                ..person(&meeting, Role::Viewer)
            };
            assert_eq!(
                may_connect_media(&meeting, &alice, NOW),
                Ok(()),
                "{state:?}"
            );
        }
    }

    #[test]
    fn media_is_refused_to_whoever_is_not_admitted_in_this_run() {
        let meeting = meeting(MeetingStatus::Live);
        for state in [
            ParticipantState::Waiting,
            ParticipantState::Removed,
            ParticipantState::Banned,
        ] {
            // A ban that has ended leaves the state as it was: still not admitted.
            let alice = Participant {
                state,
                banned_until: Some(Timestamp::from_millis(NOW.as_millis() - 1)),
                ..person(&meeting, Role::Host)
            };
            assert_eq!(
                refusal(may_connect_media(&meeting, &alice, NOW)).0,
                ErrorCode::NotAdmitted,
                "{state:?}"
            );
        }
        let admitted_in_an_earlier_run = Participant {
            admitted_in: Some(instance(9)),
            ..person(&meeting, Role::Host)
        };
        let never_admitted = Participant {
            admitted_in: None,
            ..person(&meeting, Role::Host)
        };
        for alice in [admitted_in_an_earlier_run, never_admitted] {
            assert_eq!(
                refusal(may_connect_media(&meeting, &alice, NOW)).0,
                ErrorCode::NotAdmitted
            );
        }
    }

    #[test]
    fn media_is_refused_to_the_banned_first_until_the_ban_ends() {
        let meeting = meeting(MeetingStatus::Ended);
        let banned = |until: Option<Timestamp>| Participant {
            state: ParticipantState::Banned,
            banned_until: until,
            ..person(&meeting, Role::Host)
        };
        let later = Timestamp::from_millis(NOW.as_millis() + 1);
        for alice in [banned(None), banned(Some(later))] {
            // Banned is said before the meeting's state or the admission.
            assert_eq!(
                refusal(may_connect_media(&meeting, &alice, NOW)).0,
                ErrorCode::Banned
            );
        }
        assert_eq!(
            refusal(may_connect_media(&meeting, &banned(Some(NOW)), NOW)).0,
            ErrorCode::MeetingNotLive,
            "a timed ban ends at its end"
        );
    }

    #[test]
    fn media_is_refused_while_the_meeting_is_not_live() {
        for status in [MeetingStatus::Created, MeetingStatus::Ended] {
            let meeting = meeting(status);
            let alice = person(&meeting, Role::Host);
            assert_eq!(
                refusal(may_connect_media(&meeting, &alice, NOW)).0,
                ErrorCode::MeetingNotLive,
                "{status:?}"
            );
        }
    }

    #[test]
    fn media_rights_follow_the_role() {
        let rights = |publish, subscribe, publish_data, room_admin| MediaRights {
            publish,
            subscribe,
            publish_data,
            room_admin,
        };
        assert_eq!(MediaRights::of(Role::Host), rights(true, true, true, true));
        assert_eq!(
            MediaRights::of(Role::Speaker),
            rights(true, true, true, false)
        );
        assert_eq!(
            MediaRights::of(Role::Viewer),
            rights(false, true, false, false)
        );
    }
}
