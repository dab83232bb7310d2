//! The seam between the core and the embedded media engine: the core's [`MediaEngine`] port
//! carried out on the SFU, and the SFU's [`Admission`] answered by the core (a token is not
//! enough: the meeting must be live, the person admitted in this run, not banned, under capacity).
//! Media events come back into the meeting's event log, a reconnect's departure and return folded
//! into nothing ([`Coalescer`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use convene_api::auth::{StoredKeyError, verify_with_stored_key};
use convene_core::ErrorCode;
use convene_core::access::MediaRights;
use convene_core::event::TrackSelector;
use convene_core::ids::{DisplayName, Identity, RoomName};
use convene_core::meeting::{MeetingSettings, MeetingStatus, Mode, WaitingPolicy};
use convene_core::ops::MediaCommand;
use convene_core::participant::Role;
use convene_core::ports::MediaEngine;
use convene_core::service::{Caller, MediaReport, Meetings, NewMeeting, ServiceError};
use convene_sfu::{Admission, Admitted, MediaEvent, Permission, Refusal, SfuControl, SfuError};
use futures::future::BoxFuture;
use livekit_protocol as proto;
use tokio_util::task::TaskTracker;

use crate::placement::Placement;
use crate::recording::Recordings;

/// The media permissions a role carries: the core's [`MediaRights`] of the role, as its token's
/// grants are.
pub fn permission_for(role: Role) -> Permission {
    let rights = MediaRights::of(role);
    Permission {
        can_publish: rights.publish,
        can_subscribe: rights.subscribe,
        can_publish_data: rights.publish_data,
        hidden: false,
        room_admin: rights.room_admin,
    }
}

/// The core's media commands, carried out on the embedded SFU: this node's, or with several
/// nodes ([`Placement`]) the one holding the room.
pub struct EmbeddedMedia {
    control: SfuControl,
    placement: Option<Arc<Placement>>,
    recordings: Arc<Recordings>,
}

impl EmbeddedMedia {
    pub fn new(
        control: SfuControl,
        placement: Option<Arc<Placement>>,
        recordings: Arc<Recordings>,
    ) -> Self {
        Self {
            control,
            placement,
            recordings,
        }
    }

    /// Carries out `commands` on this node's engine.
    pub async fn apply_here(&self, commands: &[MediaCommand]) {
        for command in commands {
            self.carry_out(command).await;
        }
    }

    /// Brings everyone connected here in line with the store: whoever may no longer be on the
    /// media (removed, banned, the meeting ended) is disconnected, everyone else gets their
    /// role's permission. For when commands may have been missed (another node's, sent while
    /// this node's notification connection was down).
    pub async fn reconcile(&self, meetings: &Meetings) {
        let rooms = match self.control.list_rooms().await {
            Ok(rooms) => rooms,
            Err(error) => {
                return tracing::warn!(%error, "cannot list the media rooms to check them");
            }
        };
        let mut checked = 0usize;
        let mut removed = 0usize;
        for room in rooms {
            let Ok(name) = RoomName::parse(&room.name) else {
                continue;
            };
            let meeting = match meetings.meeting_by_room(&name).await {
                Ok(Some(meeting)) => meeting,
                Ok(None) => continue,
                Err(error) => {
                    tracing::warn!(%error, room = room.name, "cannot read a media room's meeting");
                    continue;
                }
            };
            let Ok(people) = self.control.list_participants(&room.name).await else {
                continue;
            };
            for person in people {
                let Ok(identity) = Identity::parse(&person.identity) else {
                    continue;
                };
                checked += 1;
                let stored = match meetings.participant(&meeting.id, &identity).await {
                    Ok(stored) => Some(stored),
                    Err(error) if error.code() == ErrorCode::ParticipantNotFound => None,
                    Err(error) => {
                        tracing::warn!(%error, room = room.name, "cannot read a connected person");
                        continue;
                    }
                };
                let command = match stored {
                    Some(stored)
                        if convene_core::service::may_connect_media(
                            &meeting,
                            &stored,
                            meetings.now(),
                        )
                        .is_ok() =>
                    {
                        MediaCommand::SetRole {
                            room: name.clone(),
                            identity,
                            role: stored.role,
                        }
                    }
                    _ => {
                        removed += 1;
                        MediaCommand::Disconnect {
                            room: name.clone(),
                            identity,
                        }
                    }
                };
                self.carry_out(&command).await;
            }
        }
        if checked > 0 {
            tracing::info!(
                checked,
                removed,
                "media connections checked against the store"
            );
        }
    }

    async fn carry_out(&self, command: &MediaCommand) {
        let result = match command {
            MediaCommand::Disconnect { room, identity } => {
                self.control
                    .remove_participant(room.as_str(), identity.as_str(), "PARTICIPANT_REMOVED")
                    .await
            }
            MediaCommand::SetRole {
                room,
                identity,
                role,
            } => {
                self.control
                    .update_permission(room.as_str(), identity.as_str(), permission_for(*role))
                    .await
            }
            MediaCommand::Mute {
                room,
                identity,
                track,
                muted,
            } => {
                self.mute(room.as_str(), identity.as_str(), track, *muted)
                    .await
            }
            MediaCommand::CloseRoom { room } => self.control.close_room(room.as_str()).await,
            MediaCommand::StartRecording {
                room,
                meeting,
                recording,
            } => {
                self.recordings.start(room, meeting, recording).await;
                Ok(())
            }
            MediaCommand::StopRecording {
                room,
                meeting,
                recording,
            } => {
                self.recordings.stop(room, meeting, recording);
                Ok(())
            }
        };
        match result {
            // Not connected to media right now: the stored state still applies at the next join.
            Ok(()) | Err(SfuError::NotFound(_)) => {}
            Err(e) => tracing::warn!(?command, error = %e, "media command failed"),
        }
    }

    async fn mute(
        &self,
        room: &str,
        identity: &str,
        track: &TrackSelector,
        muted: bool,
    ) -> Result<(), SfuError> {
        let sids: Vec<String> = match track {
            TrackSelector::Track(sid) => vec![sid.clone()],
            TrackSelector::Audio | TrackSelector::Video => {
                let kind = if *track == TrackSelector::Audio {
                    proto::TrackType::Audio
                } else {
                    proto::TrackType::Video
                };
                let info = self.control.get_participant(room, identity).await?;
                info.tracks
                    .iter()
                    .filter(|t| t.r#type == kind as i32)
                    .map(|t| t.sid.clone())
                    .collect()
            }
        };
        for sid in sids {
            self.control
                .mute_published_track(room, identity, &sid, muted)
                .await?;
        }
        Ok(())
    }
}

#[async_trait]
impl MediaEngine for EmbeddedMedia {
    async fn apply(&self, commands: &[MediaCommand]) {
        let Some(placement) = &self.placement else {
            return self.apply_here(commands).await;
        };
        // In order: each command here, or sent to the node holding its room.
        for command in commands {
            match placement.elsewhere(command.room().as_str()).await {
                Ok(None) => self.carry_out(command).await,
                Ok(Some(node)) => {
                    if let Err(error) = placement
                        .forward(&node, std::slice::from_ref(command))
                        .await
                    {
                        tracing::warn!(?command, node, %error, "cannot send a media command to the room's node");
                    }
                }
                Err(error) => {
                    // The holder is unknown: here is the best guess (a room not here finds nobody).
                    tracing::warn!(?command, %error, "cannot read where a media room is");
                    self.carry_out(command).await;
                }
            }
        }
    }
}

/// How many media reports may wait to be recorded before new ones are dropped (and logged).
const REPORT_QUEUE: usize = 4096;

/// How long the shutdown waits for the media events still to be recorded.
const FINISH_TIME: Duration = Duration::from_secs(10);

/// How long a departure waits for the same person to come back before it is recorded
/// (`CONVENE_RTC_RECONNECT_GRACE_MS`).
pub const RECONNECT_GRACE: Duration = Duration::from_secs(5);

/// One person in one room.
type Person = (RoomName, Identity);

fn reported_identity(report: &MediaReport) -> &Identity {
    match report {
        MediaReport::Connected { identity }
        | MediaReport::Disconnected { identity }
        | MediaReport::TrackPublished { identity, .. }
        | MediaReport::TrackUnpublished { identity, .. } => identity,
    }
}

/// Media reports on their way to the meetings' logs, with a reconnect folded away: a departure
/// waits `grace` and is dropped if the same person connects again meanwhile, so a client that
/// reconnects (or loops connect and disconnect) writes nothing for it. Pure: time is passed in.
///
/// Order: a person's reports keep their order (any other report of someone whose departure
/// waits records the departure first); a departure that is recorded lands after what others
/// did during its grace. A return is always passed on: the core records nothing when the log
/// already shows the person connected, and records it if something else (a meeting's end)
/// marked them disconnected meanwhile.
#[derive(Debug)]
pub struct Coalescer {
    grace: Duration,
    /// Departures waiting for their grace to end, by person, with the entry's number.
    waiting: HashMap<Person, u64>,
    /// The same, in the order they are due; an entry whose number no longer matches was dropped.
    due: VecDeque<(Instant, Person, u64)>,
    next_entry: u64,
}

impl Coalescer {
    pub fn new(grace: Duration) -> Self {
        Coalescer {
            grace,
            waiting: HashMap::new(),
            due: VecDeque::new(),
            next_entry: 0,
        }
    }

    /// Takes in one report; returns what to record now, in order.
    pub fn report(
        &mut self,
        room: RoomName,
        report: MediaReport,
        now: Instant,
    ) -> Vec<(RoomName, MediaReport)> {
        let person = (room, reported_identity(&report).clone());
        match report {
            MediaReport::Disconnected { .. } => {
                if !self.waiting.contains_key(&person) {
                    self.next_entry += 1;
                    self.waiting.insert(person.clone(), self.next_entry);
                    self.due
                        .push_back((now + self.grace, person, self.next_entry));
                }
                Vec::new()
            }
            MediaReport::Connected { .. } => {
                self.waiting.remove(&person);
                vec![(person.0, report)]
            }
            MediaReport::TrackPublished { .. } | MediaReport::TrackUnpublished { .. } => {
                let mut out = Vec::with_capacity(2);
                if self.waiting.remove(&person).is_some() {
                    out.push(departure(&person));
                }
                out.push((person.0, report));
                out
            }
        }
    }

    /// When the earliest waiting departure is due (maybe one dropped since: then nothing is).
    pub fn next_due(&self) -> Option<Instant> {
        self.due.front().map(|(at, _, _)| *at)
    }

    /// The departures whose grace ended by `now`, in the order they happened.
    pub fn due(&mut self, now: Instant) -> Vec<(RoomName, MediaReport)> {
        let mut out = Vec::new();
        while let Some((at, _, _)) = self.due.front() {
            if *at > now {
                break;
            }
            let Some((_, person, entry)) = self.due.pop_front() else {
                break;
            };
            if self.waiting.get(&person) == Some(&entry) {
                self.waiting.remove(&person);
                out.push(departure(&person));
            }
        }
        out
    }

    /// Every waiting departure, now (at shutdown), in the order they happened.
    pub fn flush(&mut self) -> Vec<(RoomName, MediaReport)> {
        let mut out = Vec::new();
        for (_, person, entry) in self.due.drain(..) {
            if self.waiting.get(&person) == Some(&entry) {
                out.push(departure(&person));
            }
        }
        self.waiting.clear();
        out
    }

    /// Departures waiting now.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

fn departure((room, identity): &Person) -> (RoomName, MediaReport) {
    (
        room.clone(),
        MediaReport::Disconnected {
            identity: identity.clone(),
        },
    )
}

/// What reaches the recording task: a report, or (at shutdown) the word to record every
/// waiting departure now and stop.
enum ToRecorder {
    Report(RoomName, MediaReport),
    Finish(tokio::sync::oneshot::Sender<()>),
}

/// Records media reports one at a time, in order, through the coalescer.
async fn record(
    meetings: Arc<Meetings>,
    mut receiver: tokio::sync::mpsc::Receiver<ToRecorder>,
    grace: Duration,
) {
    let mut coalescer = Coalescer::new(grace);
    loop {
        let next_due = coalescer.next_due();
        let due = async {
            match next_due {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let message = tokio::select! {
            message = receiver.recv() => message,
            () = due => {
                for (room, report) in coalescer.due(Instant::now()) {
                    write(&meetings, &room, report).await;
                }
                continue;
            }
        };
        match message {
            Some(ToRecorder::Report(room, report)) => {
                for (room, report) in coalescer.report(room, report, Instant::now()) {
                    write(&meetings, &room, report).await;
                }
            }
            Some(ToRecorder::Finish(done)) => {
                for (room, report) in coalescer.flush() {
                    write(&meetings, &room, report).await;
                }
                let _ = done.send(());
                return;
            }
            None => {
                for (room, report) in coalescer.flush() {
                    write(&meetings, &room, report).await;
                }
                return;
            }
        }
    }
}

async fn write(meetings: &Meetings, room: &RoomName, report: MediaReport) {
    if let Err(e) = meetings.media_report(room, report).await {
        tracing::warn!(error = %e, room = %room, "could not record a media event");
    }
}

/// A media token as verified: convene's own access token, or a plain LiveKit one.
enum Presented {
    Convene(convene_token::ParticipantToken),
    LiveKit(convene_token::LiveKitToken),
}

/// Answers the SFU's admission questions from the core (and, with several nodes, lets a client in
/// only on the node holding its room).
pub struct CoreAdmission {
    meetings: Arc<Meetings>,
    reports: tokio::sync::mpsc::Sender<ToRecorder>,
    placement: Option<Arc<Placement>>,
}

impl CoreAdmission {
    /// Answers from `meetings` (built on the SFU's control handle, before the SFU starts), and
    /// starts on `tasks` the task that records media reports in order, off the engine's task;
    /// a departure waits `grace` for a return before it is recorded.
    pub fn new(
        meetings: Arc<Meetings>,
        grace: Duration,
        placement: Option<Arc<Placement>>,
        tasks: &TaskTracker,
    ) -> Self {
        let (reports, receiver) = tokio::sync::mpsc::channel::<ToRecorder>(REPORT_QUEUE);
        tasks.spawn(record(meetings.clone(), receiver, grace));
        CoreAdmission {
            meetings,
            reports,
            placement,
        }
    }

    /// With several nodes: a room held by another live node is refused here (the client asks
    /// for a join again and is given that node); a room without a live holder is placed here.
    async fn placed_here(&self, admitted: Admitted) -> Result<Admitted, Refusal> {
        let Some(placement) = &self.placement else {
            return Ok(admitted);
        };
        match placement.admit_here(&admitted.room).await {
            Ok(None) => Ok(admitted),
            Ok(Some(node)) => Err(Refusal::Forbidden(format!(
                "this meeting's media is on another node ({node}): ask for a join again"
            ))),
            Err(error) => {
                tracing::error!(%error, "admission: cannot read where the media room is");
                Err(Refusal::Unavailable)
            }
        }
    }

    /// At shutdown, after the media engine has stopped (and reported everyone's departure):
    /// records every departure still in its grace, and waits until it is written (at most
    /// [`FINISH_TIME`]: a store that hangs does not hold the shutdown). Reports after this are
    /// not recorded.
    pub async fn finish(&self) {
        let finished = async {
            let (done, written) = tokio::sync::oneshot::channel();
            if self.reports.send(ToRecorder::Finish(done)).await.is_ok() {
                let _ = written.await;
            }
        };
        if tokio::time::timeout(FINISH_TIME, finished).await.is_err() {
            tracing::warn!("media events still being recorded at shutdown were given up");
        }
    }

    async fn decide(&self, token: &str) -> Result<Admitted, Refusal> {
        let meetings = &self.meetings;
        let now = meetings.now();
        let presented =
            verify_with_stored_key(
                meetings,
                token,
                |key| match convene_token::verify_participant(
                    token,
                    &key.secret,
                    now,
                    &[convene_token::TokenKind::Access],
                ) {
                    Ok(verified) => Ok(Presented::Convene(verified)),
                    Err(convene_token::TokenError::WrongKind) => {
                        convene_token::verify_livekit(token, &key.secret, now)
                            .map(Presented::LiveKit)
                    }
                    Err(e) => Err(e),
                },
            )
            .await
            .map_err(|e| match e {
                StoredKeyError::Store(e) => {
                    tracing::error!(error = %e, "admission: cannot read API keys");
                    Refusal::Unavailable
                }
                StoredKeyError::Token(_) | StoredKeyError::UnknownKey => {
                    Refusal::Unauthenticated(e.to_string())
                }
            })?;
        let verified = match presented {
            Presented::Convene(verified) => verified,
            Presented::LiveKit(app_token) => {
                return self.admit_livekit_token(meetings, app_token).await;
            }
        };
        let admission = meetings
            .media_admission(
                &verified.meeting,
                &verified.identity,
                &verified.instance,
                verified.epoch,
            )
            .await
            .map_err(|e| match e.code() {
                ErrorCode::InvalidToken => Refusal::Unauthenticated(e.to_string()),
                ErrorCode::Internal | ErrorCode::Busy => unavailable(&e),
                _ => Refusal::Forbidden(e.to_string()),
            })?;
        if admission.meeting.room_name.as_str() != verified.room {
            return Err(Refusal::Unauthenticated(
                "the token names another room".into(),
            ));
        }
        let participant = admission.participant;
        Ok(Admitted {
            room: admission.meeting.room_name.to_string(),
            identity: participant.identity.to_string(),
            name: participant.name.to_string(),
            metadata:
                serde_json::json!({ "role": participant.role, "meeting_id": admission.meeting.id })
                    .to_string(),
            permission: permission_for(participant.role),
        })
    }
}

/// A join the core cannot decide now: the cause is logged here, and the client is told only to
/// try again (a store's error text never reaches it).
fn unavailable(error: &ServiceError) -> Refusal {
    tracing::error!(error = %error, "admission: the core cannot decide a join now");
    Refusal::Unavailable
}

impl CoreAdmission {
    /// A plain LiveKit token minted by an app that holds an API secret (as with a LiveKit server):
    /// the app is trusted to place the person, the room is created on first join (policy `open`),
    /// and the role follows the grants. Stored bans still apply, and the core admits as usual.
    async fn admit_livekit_token(
        &self,
        meetings: &Arc<Meetings>,
        token: convene_token::LiveKitToken,
    ) -> Result<Admitted, Refusal> {
        let refuse = |e: ServiceError| match e.code() {
            ErrorCode::InvalidRequest => Refusal::Unauthenticated(e.to_string()),
            ErrorCode::Internal | ErrorCode::Busy => unavailable(&e),
            _ => Refusal::Forbidden(e.to_string()),
        };
        let invalid = |e: convene_core::ValidationError| Refusal::Unauthenticated(e.to_string());
        let room = RoomName::parse(&token.video.room).map_err(invalid)?;
        let identity = Identity::parse(&token.identity).map_err(invalid)?;
        let name = DisplayName::parse(if token.name.is_empty() {
            &token.identity
        } else {
            &token.name
        })
        .map_err(invalid)?;
        let role = if token.video.room_admin {
            Role::Host
        } else if token.video.can_publish() {
            Role::Speaker
        } else {
            Role::Viewer
        };
        let room_name = room.clone();
        let meeting = meetings
            .ensure_room(&room, || NewMeeting {
                id: None,
                digits: None,
                room_name: Some(room_name.clone()),
                settings: MeetingSettings::new(
                    DisplayName::parse(room_name.as_str()).unwrap_or_else(|_| name.clone()),
                    Mode::Meeting,
                    WaitingPolicy::Open,
                ),
                host_credential: None,
                participant_credential: None,
                viewer_credential: None,
            })
            .await
            .map_err(refuse)?;
        if meeting.status == MeetingStatus::Ended {
            // LiveKit creates a deleted room again on the next join.
            meetings
                .start_meeting(&meeting.id, &Caller::Admin)
                .await
                .map_err(refuse)?;
        }
        let (meeting, participant) = meetings
            .enter_trusted(&meeting.id, identity, name, role)
            .await
            .map_err(refuse)?;
        let caller = Caller::Participant {
            identity: participant.identity.clone(),
            instance: meeting.run.instance_id.clone(),
            epoch: participant.epoch,
        };
        let (meeting, participant) = meetings.join(&meeting.id, &caller).await.map_err(refuse)?;
        let admission = meetings
            .media_admission(
                &meeting.id,
                &participant.identity,
                &meeting.run.instance_id,
                participant.epoch,
            )
            .await
            .map_err(refuse)?;
        let participant = admission.participant;
        let metadata = if token.metadata.is_empty() {
            serde_json::json!({ "role": participant.role, "meeting_id": admission.meeting.id })
                .to_string()
        } else {
            token.metadata
        };
        Ok(Admitted {
            room: admission.meeting.room_name.to_string(),
            identity: participant.identity.to_string(),
            name: participant.name.to_string(),
            metadata,
            permission: Permission {
                can_subscribe: token.video.can_subscribe(),
                hidden: token.video.hidden,
                ..permission_for(participant.role)
            },
        })
    }
}

impl Admission for CoreAdmission {
    fn admit(&self, token: &str) -> BoxFuture<'_, Result<Admitted, Refusal>> {
        let token = token.to_owned();
        Box::pin(async move {
            let admitted = self.decide(&token).await?;
            self.placed_here(admitted).await
        })
    }

    fn on_event(&self, event: MediaEvent) {
        let reports = &self.reports;
        let (room, report) = match event {
            MediaEvent::ParticipantJoined { room, identity, .. } => (
                room,
                Identity::parse(&identity).map(|identity| MediaReport::Connected { identity }),
            ),
            MediaEvent::ParticipantLeft { room, identity, .. } => (
                room,
                Identity::parse(&identity).map(|identity| MediaReport::Disconnected { identity }),
            ),
            MediaEvent::TrackPublished {
                room,
                identity,
                track_sid,
                kind,
                ..
            } => (
                room,
                Identity::parse(&identity).map(|identity| MediaReport::TrackPublished {
                    identity,
                    track_sid,
                    kind,
                }),
            ),
            MediaEvent::TrackUnpublished {
                room,
                identity,
                track_sid,
            } => (
                room,
                Identity::parse(&identity).map(|identity| MediaReport::TrackUnpublished {
                    identity,
                    track_sid,
                }),
            ),
        };
        let (Ok(room), Ok(report)) = (RoomName::parse(&room), report) else {
            return;
        };
        match reports.try_send(ToRecorder::Report(room, report)) {
            Ok(()) => {}
            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!("media report queue full: a media event was not recorded");
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
                tracing::debug!("a media event after shutdown was not recorded");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(5);

    #[test]
    fn a_live_connections_permission_is_the_cores_media_rights_for_every_role() {
        for role in [Role::Host, Role::Speaker, Role::Viewer] {
            let permission = permission_for(role);
            let rights = MediaRights::of(role);
            assert_eq!(
                (
                    permission.can_publish,
                    permission.can_subscribe,
                    permission.can_publish_data,
                    permission.room_admin,
                    permission.hidden
                ),
                (
                    rights.publish,
                    rights.subscribe,
                    rights.publish_data,
                    rights.room_admin,
                    false
                ),
                "{role:?}"
            );
        }
    }

    fn room() -> RoomName {
        RoomName::parse("room-1").unwrap()
    }

    fn id(name: &str) -> Identity {
        Identity::parse(name).unwrap()
    }

    fn connected(name: &str) -> MediaReport {
        MediaReport::Connected { identity: id(name) }
    }

    fn disconnected(name: &str) -> MediaReport {
        MediaReport::Disconnected { identity: id(name) }
    }

    fn published(name: &str, sid: &str) -> MediaReport {
        MediaReport::TrackPublished {
            identity: id(name),
            track_sid: sid.into(),
            kind: "audio".into(),
        }
    }

    fn unpublished(name: &str, sid: &str) -> MediaReport {
        MediaReport::TrackUnpublished {
            identity: id(name),
            track_sid: sid.into(),
        }
    }

    /// The reports as `kind identity [track]` lines, to compare whole sequences.
    fn lines(reports: &[(RoomName, MediaReport)]) -> Vec<String> {
        reports
            .iter()
            .map(|(room, report)| {
                let what = match report {
                    MediaReport::Connected { identity } => format!("connected {identity}"),
                    MediaReport::Disconnected { identity } => format!("disconnected {identity}"),
                    MediaReport::TrackPublished {
                        identity,
                        track_sid,
                        ..
                    } => format!("published {identity} {track_sid}"),
                    MediaReport::TrackUnpublished {
                        identity,
                        track_sid,
                    } => format!("unpublished {identity} {track_sid}"),
                };
                format!("{room} {what}")
            })
            .collect()
    }

    #[test]
    fn a_reconnect_within_the_grace_writes_no_departure() {
        let t0 = Instant::now();
        let mut coalescer = Coalescer::new(GRACE);
        assert_eq!(
            lines(&coalescer.report(room(), connected("ann"), t0)),
            ["room-1 connected ann"]
        );
        assert!(coalescer.report(room(), disconnected("ann"), t0).is_empty());
        assert_eq!(coalescer.next_due(), Some(t0 + GRACE));
        // Back before the grace ends: the return is passed on (the core writes nothing for a
        // person it already shows connected), the departure is gone for good.
        let back = t0 + GRACE - Duration::from_millis(1);
        assert_eq!(
            lines(&coalescer.report(room(), connected("ann"), back)),
            ["room-1 connected ann"]
        );
        assert_eq!(coalescer.waiting(), 0);
        assert!(coalescer.due(t0 + GRACE * 10).is_empty());
        assert!(coalescer.flush().is_empty());
    }

    #[test]
    fn a_departure_without_return_is_written_once_when_its_grace_ends() {
        let t0 = Instant::now();
        let mut coalescer = Coalescer::new(GRACE);
        coalescer.report(room(), connected("ann"), t0);
        coalescer.report(room(), disconnected("ann"), t0);
        // A second report of the same departure changes nothing.
        coalescer.report(room(), disconnected("ann"), t0 + Duration::from_secs(1));
        assert!(
            coalescer
                .due(t0 + GRACE - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(
            lines(&coalescer.due(t0 + GRACE)),
            ["room-1 disconnected ann"]
        );
        assert!(coalescer.due(t0 + GRACE * 10).is_empty());
        assert_eq!(coalescer.next_due(), None);
        // Coming back after that is a new connection.
        assert_eq!(
            lines(&coalescer.report(room(), connected("ann"), t0 + GRACE * 2)),
            ["room-1 connected ann"]
        );
    }

    #[test]
    fn a_connect_loop_writes_one_connection_and_one_departure() {
        let t0 = Instant::now();
        let mut coalescer = Coalescer::new(GRACE);
        let mut written = Vec::new();
        let mut now = t0;
        for _ in 0..200 {
            written.extend(coalescer.report(room(), connected("ann"), now));
            now += Duration::from_millis(10);
            written.extend(coalescer.report(room(), disconnected("ann"), now));
            written.extend(coalescer.due(now));
            now += Duration::from_millis(10);
        }
        written.extend(coalescer.due(now + GRACE));
        let departures = lines(&written)
            .into_iter()
            .filter(|line| line.contains("disconnected"))
            .count();
        assert_eq!(departures, 1);
        assert_eq!(
            lines(&written).last().map(String::as_str),
            Some("room-1 disconnected ann")
        );
    }

    #[test]
    fn a_persons_reports_keep_their_order_and_departures_come_in_theirs() {
        let t0 = Instant::now();
        let second = t0 + Duration::from_secs(1);
        let mut coalescer = Coalescer::new(GRACE);
        let mut written = Vec::new();
        for name in ["ann", "bob", "cy"] {
            written.extend(coalescer.report(room(), connected(name), t0));
        }
        written.extend(coalescer.report(room(), published("ann", "TR_a"), t0));
        // The engine reports a leaver's tracks before the leaver.
        written.extend(coalescer.report(room(), unpublished("ann", "TR_a"), t0));
        written.extend(coalescer.report(room(), disconnected("ann"), t0));
        written.extend(coalescer.report(room(), disconnected("bob"), t0));
        written.extend(coalescer.report(room(), disconnected("cy"), second));
        // Anything else of a person whose departure waits writes the departure first.
        written.extend(coalescer.report(room(), published("bob", "TR_b"), second));
        written.extend(coalescer.due(second + GRACE));
        assert_eq!(
            lines(&written),
            [
                "room-1 connected ann",
                "room-1 connected bob",
                "room-1 connected cy",
                "room-1 published ann TR_a",
                "room-1 unpublished ann TR_a",
                "room-1 disconnected bob",
                "room-1 published bob TR_b",
                "room-1 disconnected ann",
                "room-1 disconnected cy",
            ]
        );
    }

    #[test]
    fn the_same_identity_in_two_rooms_is_two_people() {
        let t0 = Instant::now();
        let other = RoomName::parse("room-2").unwrap();
        let mut coalescer = Coalescer::new(GRACE);
        coalescer.report(room(), disconnected("ann"), t0);
        coalescer.report(other.clone(), connected("ann"), t0);
        assert_eq!(
            lines(&coalescer.due(t0 + GRACE)),
            ["room-1 disconnected ann"]
        );
    }

    #[test]
    fn at_shutdown_every_waiting_departure_is_written_in_order() {
        let t0 = Instant::now();
        let mut coalescer = Coalescer::new(GRACE);
        coalescer.report(room(), disconnected("ann"), t0);
        coalescer.report(room(), disconnected("bob"), t0 + Duration::from_secs(1));
        coalescer.report(room(), connected("ann"), t0 + Duration::from_secs(2));
        coalescer.report(room(), disconnected("ann"), t0 + Duration::from_secs(3));
        coalescer.report(room(), disconnected("cy"), t0 + Duration::from_secs(4));
        assert_eq!(
            lines(&coalescer.flush()),
            [
                "room-1 disconnected bob",
                "room-1 disconnected ann",
                "room-1 disconnected cy",
            ]
        );
        assert_eq!(coalescer.waiting(), 0);
        assert_eq!(coalescer.next_due(), None);
    }
}
