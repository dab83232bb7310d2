//! How a participant talks to its server: the seam between the media loop of [`crate::peer`]
//! (sockets, str0m, the sender and the recorder, the same whatever the server) and each server's
//! signalling. The loop hands the signalling its publisher connection's offer
//! ([`Signalling::publish`]) and its answers to the server's offers for its subscriber connection
//! ([`Signalling::answer`]), and waits on [`Signalling::next`] for what the server says
//! ([`Signal`]) beside its sockets.
//!
//! - [`LiveKit`]: convene's `/rtc` WebSocket (protobuf `SignalRequest` / `SignalResponse`): the
//!   tracks announced (`AddTrack`, with their simulcast layers) before the offer, our host
//!   candidate trickled after each offer and answer, a ping every `ping_interval`; the server
//!   auto-subscribes the participant and offers its subscriber connection (again at each change).
//! - [`VideoRoom`]: Janus's VideoRoom over the run's one Janus API session ([`janus::Session`]),
//!   driven by a task of its own so the media loop never waits on Janus: a publisher handle joins
//!   the room and publishes the offer (display name [`feed_name`] of the publisher's number), then
//!   a multistream subscriber handle waits until the room lists the feeds of every publisher the
//!   participant hears and subscribes to them all at once; Janus's offer goes to the loop and its
//!   answer back to Janus (`start`). Candidates travel in the SDP (Janus is not trickled).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use livekit_protocol as proto;
use prost::Message as _;
use proto::signal_request::Message as Req;
use proto::signal_response::Message as Resp;
use str0m::Candidate;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::janus::{self, Feed};
use crate::peer::{AUDIO_CID, FULL_SIZE, Layer, VIDEO_CID};

/// How often a Janus participant asks the room for the feeds it waits for.
const FEED_POLL: Duration = Duration::from_millis(100);

/// How a participant reaches its server.
pub enum Join {
    /// LiveKit signalling on convene's `/rtc` WebSocket at this URL (token included).
    LiveKit { url: String },
    /// Janus's VideoRoom `room`, through the run's shared Janus API session.
    Janus {
        session: Arc<janus::Session>,
        room: u64,
    },
}

/// What the server tells the media loop.
pub enum Signal {
    /// An offer for the subscriber connection, to answer with [`Signalling::answer`] and `id`.
    SubscriberOffer { sdp: String, id: u32 },
    /// The answer to the publisher connection's offer.
    PublisherAnswer(String),
}

/// The publisher connection's offer and the tracks it carries.
pub struct PublisherOffer<'a> {
    pub sdp: String,
    /// The publisher connection's host candidate.
    pub candidate: &'a Candidate,
    /// The video's encodings (with their rids when `simulcast`).
    pub layers: &'a [Layer],
    pub simulcast: bool,
}

/// One participant's signalling, by server.
pub enum Signalling {
    /// Boxed: its WebSocket is large.
    LiveKit(Box<LiveKit>),
    Janus(VideoRoom),
}

impl Signalling {
    /// Joins by `join`: a participant publishing as `source` (if any) that hears `hears`.
    pub async fn connect(
        join: Join,
        source: Option<u32>,
        hears: &[u32],
    ) -> anyhow::Result<Signalling> {
        Ok(match join {
            Join::LiveKit { url } => Signalling::LiveKit(Box::new(LiveKit::connect(&url).await?)),
            Join::Janus { session, room } => {
                Signalling::Janus(VideoRoom::start(session, room, source, hears.to_vec()))
            }
        })
    }

    /// Offers the publisher connection.
    pub async fn publish(&mut self, offer: PublisherOffer<'_>) -> anyhow::Result<()> {
        match self {
            Signalling::LiveKit(livekit) => livekit.publish(offer).await,
            Signalling::Janus(videoroom) => videoroom.publish(offer.sdp),
        }
    }

    /// Answers the server's offer `id` for the subscriber connection (whose host candidate is
    /// `candidate`) with `sdp`.
    pub async fn answer(
        &mut self,
        id: u32,
        sdp: String,
        candidate: &Candidate,
    ) -> anyhow::Result<()> {
        match self {
            Signalling::LiveKit(livekit) => livekit.answer(id, sdp, candidate).await,
            Signalling::Janus(videoroom) => videoroom.answer(sdp),
        }
    }

    /// The next thing the server says (cancel safe: nothing is lost when another branch of a
    /// `select!` wins).
    pub async fn next(&mut self) -> anyhow::Result<Signal> {
        match self {
            Signalling::LiveKit(livekit) => livekit.next().await,
            Signalling::Janus(videoroom) => videoroom.next().await,
        }
    }

    /// When [`Signalling::keep_alive`] has something to send next, if ever.
    pub fn due(&self) -> Option<Instant> {
        match self {
            Signalling::LiveKit(livekit) => Some(livekit.next_ping),
            Signalling::Janus(_) => None,
        }
    }

    /// Sends what keeps the signalling alive if it is due at `now` (LiveKit's ping; the Janus
    /// session keeps itself alive).
    pub async fn keep_alive(&mut self, now: Instant) -> anyhow::Result<()> {
        match self {
            Signalling::LiveKit(livekit) => livekit.keep_alive(now).await,
            Signalling::Janus(_) => Ok(()),
        }
    }

    /// Leaves, as well as the server still listens (errors are of no interest at the end).
    pub async fn leave(self) {
        match self {
            Signalling::LiveKit(livekit) => livekit.leave().await,
            // Dropping it stops its task; the server is stopped after the run.
            Signalling::Janus(_) => {}
        }
    }
}

/// The signalling WebSocket.
type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A LiveKit client's signalling connection.
pub struct LiveKit {
    ws: Ws,
    ping_interval: Duration,
    next_ping: Instant,
    /// Whether our host candidate was trickled yet, for the publisher and for the subscriber
    /// connection.
    trickled: [bool; 2],
}

impl LiveKit {
    /// Connects to `url` and waits for the `JoinResponse`.
    async fn connect(url: &str) -> anyhow::Result<LiveKit> {
        let (mut ws, _) = tokio::time::timeout(
            Duration::from_secs(30),
            tokio_tungstenite::connect_async(url),
        )
        .await
        .context("signalling connect timed out")?
        .context("signalling connect")?;
        let join = loop {
            let message = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .context("no JoinResponse within 10 s")?;
            let message = message.context("closed before the JoinResponse")??;
            match decode(message)? {
                Some(Resp::Join(join)) => break join,
                Some(Resp::Leave(leave)) => bail!("refused: {leave:?}"),
                _ => continue,
            }
        };
        let ping_interval = Duration::from_secs(join.ping_interval.max(1) as u64);
        Ok(LiveKit {
            ws,
            ping_interval,
            next_ping: Instant::now() + ping_interval,
            trickled: [false; 2],
        })
    }

    /// Announces the video track (with its simulcast layers, as livekit-client does: no ssrc, no
    /// rid) and the audio track, sends the offer, then trickles the candidate.
    async fn publish(&mut self, offer: PublisherOffer<'_>) -> anyhow::Result<()> {
        let video = proto::AddTrackRequest {
            cid: VIDEO_CID.to_owned(),
            name: VIDEO_CID.to_owned(),
            r#type: proto::TrackType::Video as i32,
            source: proto::TrackSource::Camera as i32,
            width: u32::from(FULL_SIZE.0),
            height: u32::from(FULL_SIZE.1),
            layers: if offer.simulcast {
                offer.layers.iter().map(announced).collect()
            } else {
                Vec::new()
            },
            ..Default::default()
        };
        let audio = proto::AddTrackRequest {
            cid: AUDIO_CID.to_owned(),
            name: AUDIO_CID.to_owned(),
            r#type: proto::TrackType::Audio as i32,
            source: proto::TrackSource::Microphone as i32,
            ..Default::default()
        };
        for add in [video, audio] {
            self.send(Req::AddTrack(add)).await?;
        }
        self.send(Req::Offer(proto::SessionDescription {
            r#type: "offer".into(),
            sdp: offer.sdp,
            id: 1,
            ..Default::default()
        }))
        .await?;
        self.trickle(proto::SignalTarget::Publisher, offer.candidate)
            .await
    }

    /// Sends the answer to offer `id`, then trickles the candidate (once).
    async fn answer(&mut self, id: u32, sdp: String, candidate: &Candidate) -> anyhow::Result<()> {
        self.send(Req::Answer(proto::SessionDescription {
            r#type: "answer".into(),
            sdp,
            id,
            ..Default::default()
        }))
        .await?;
        self.trickle(proto::SignalTarget::Subscriber, candidate)
            .await
    }

    /// Sends `candidate` as LiveKit trickle JSON for `target`'s connection, the first time only.
    async fn trickle(
        &mut self,
        target: proto::SignalTarget,
        candidate: &Candidate,
    ) -> anyhow::Result<()> {
        let trickled = &mut self.trickled[usize::from(target == proto::SignalTarget::Subscriber)];
        if std::mem::replace(trickled, true) {
            return Ok(());
        }
        let init = serde_json::json!({"candidate": candidate.to_sdp_string(), "sdpMid": "0", "sdpMLineIndex": 0});
        self.send(Req::Trickle(proto::TrickleRequest {
            candidate_init: init.to_string(),
            target: target as i32,
            r#final: false,
        }))
        .await
    }

    /// The next offer or answer; fails on a leave or when the server closes.
    async fn next(&mut self) -> anyhow::Result<Signal> {
        loop {
            let message = self
                .ws
                .next()
                .await
                .context("the server closed the signalling connection")??;
            match decode(message)? {
                Some(Resp::Offer(offer)) => {
                    return Ok(Signal::SubscriberOffer {
                        sdp: offer.sdp,
                        id: offer.id,
                    });
                }
                Some(Resp::Answer(answer)) => return Ok(Signal::PublisherAnswer(answer.sdp)),
                Some(Resp::Leave(leave)) => bail!("the server sent leave: {leave:?}"),
                _ => {}
            }
        }
    }

    /// Pings if a ping is due at `now`.
    async fn keep_alive(&mut self, now: Instant) -> anyhow::Result<()> {
        if now < self.next_ping {
            return Ok(());
        }
        self.next_ping = now + self.ping_interval;
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        self.send(Req::PingReq(proto::Ping { timestamp, rtt: 0 }))
            .await
    }

    /// Sends a leave and closes the WebSocket.
    async fn leave(mut self) {
        let _ = self.send(Req::Leave(proto::LeaveRequest::default())).await;
        let _ = self.ws.close(None).await;
    }

    async fn send(&mut self, message: Req) -> anyhow::Result<()> {
        let request = proto::SignalRequest {
            message: Some(message),
        };
        self.ws
            .send(WsMessage::Binary(request.encode_to_vec().into()))
            .await
            .context("signalling send")
    }
}

/// A video layer as the `AddTrackRequest` announces it.
fn announced(layer: &Layer) -> proto::VideoLayer {
    proto::VideoLayer {
        quality: layer.quality as i32,
        width: u32::from(layer.size.0),
        height: u32::from(layer.size.1),
        bitrate: layer.bitrate,
        ..Default::default()
    }
}

/// The next SignalResponse, or None when the message holds none.
fn decode(message: WsMessage) -> anyhow::Result<Option<Resp>> {
    match message {
        WsMessage::Binary(bytes) => Ok(proto::SignalResponse::decode(bytes.as_ref())?.message),
        WsMessage::Close(frame) => bail!("the server closed the signalling connection: {frame:?}"),
        _ => Ok(None),
    }
}

/// The display name a publisher joins a Janus room with, by which the participants who hear it
/// find its feed: its number in the run.
pub fn feed_name(source: u32) -> String {
    format!("source-{source}")
}

/// A Janus participant's signalling: its VideoRoom task and the channels to it.
pub struct VideoRoom {
    /// What the task tells the media loop; an error ends the participant.
    signals: mpsc::UnboundedReceiver<anyhow::Result<Signal>>,
    /// The publisher connection's offer, for the task (taken when sent).
    offer: Option<oneshot::Sender<String>>,
    /// The answer to the subscription's offer, for the task (taken when sent).
    answer: Option<oneshot::Sender<String>>,
    task: AbortHandle,
}

impl Drop for VideoRoom {
    /// Stops the task (and so its requests to Janus) with the participant.
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl VideoRoom {
    /// Starts the task of a participant of `room` publishing as `source` (if any) and hearing
    /// `hears`, on `session`.
    fn start(
        session: Arc<janus::Session>,
        room: u64,
        source: Option<u32>,
        hears: Vec<u32>,
    ) -> VideoRoom {
        let (signals_tx, signals) = mpsc::unbounded_channel();
        let (offer, offer_rx) = oneshot::channel();
        let (answer, answer_rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            let steps = Steps {
                session,
                room,
                signals: signals_tx.clone(),
            };
            let joined = match source {
                Some(source) => steps.publish(source, offer_rx).await,
                None => Ok(Vec::new()),
            };
            let done = match joined {
                Ok(known) if !hears.is_empty() => steps.subscribe(&hears, known, answer_rx).await,
                other => other.map(drop),
            };
            if let Err(e) = done {
                let _ = signals_tx.send(Err(e.context(format!("Janus room {room}"))));
            }
        });
        VideoRoom {
            signals,
            offer: Some(offer),
            answer: Some(answer),
            task: task.abort_handle(),
        }
    }

    /// Hands the publisher connection's offer to the task.
    fn publish(&mut self, sdp: String) -> anyhow::Result<()> {
        let offer = self.offer.take().context("a second publisher offer")?;
        offer
            .send(sdp)
            .map_err(|_| anyhow::anyhow!("the Janus signalling task ended before the offer"))
    }

    /// Hands the answer to the subscription's offer to the task.
    fn answer(&mut self, sdp: String) -> anyhow::Result<()> {
        let answer = self.answer.take().context("a second subscriber answer")?;
        answer
            .send(sdp)
            .map_err(|_| anyhow::anyhow!("the Janus signalling task ended before the answer"))
    }

    /// What the task says next; nothing more once it is done.
    async fn next(&mut self) -> anyhow::Result<Signal> {
        match self.signals.recv().await {
            Some(signal) => signal,
            None => std::future::pending().await,
        }
    }
}

/// What a Janus participant's task works with.
struct Steps {
    session: Arc<janus::Session>,
    room: u64,
    signals: mpsc::UnboundedSender<anyhow::Result<Signal>>,
}

impl Steps {
    /// Hands `signal` to the media loop.
    fn tell(&self, signal: Signal) -> anyhow::Result<()> {
        self.signals
            .send(Ok(signal))
            .map_err(|_| anyhow::anyhow!("the participant stopped"))
    }

    /// Publishes as `source` with the offer `offer` brings, hands Janus's answer to the media
    /// loop and waits for the connection to be up; returns the feeds the join listed.
    async fn publish(
        &self,
        source: u32,
        offer: oneshot::Receiver<String>,
    ) -> anyhow::Result<Vec<Feed>> {
        let offer = offer
            .await
            .context("the participant stopped before its offer")?;
        let mut handle = self.session.attach().await?;
        let joined = handle
            .publish(self.room, &feed_name(source), &offer)
            .await?;
        self.tell(Signal::PublisherAnswer(joined.answer_sdp))?;
        handle
            .webrtc_up()
            .await
            .with_context(|| format!("publisher feed {}", joined.id))?;
        Ok(joined.publishers)
    }

    /// Waits until the room lists the feed of every publisher in `hears` (`known` from the
    /// publisher's join, then asking the room every [`FEED_POLL`]), subscribes to them all on a
    /// new handle, hands Janus's offer to the media loop and starts the subscription with its
    /// answer.
    async fn subscribe(
        &self,
        hears: &[u32],
        mut known: Vec<Feed>,
        answer: oneshot::Receiver<String>,
    ) -> anyhow::Result<()> {
        let handle = self.session.attach().await?;
        let feeds = loop {
            if let Some(feeds) = feeds_of(hears, &known) {
                break feeds;
            }
            known = handle.publishers(self.room).await?;
            if feeds_of(hears, &known).is_none() {
                tokio::time::sleep(FEED_POLL).await;
            }
        };
        let offer = handle.subscribe(self.room, &feeds).await?;
        self.tell(Signal::SubscriberOffer { sdp: offer, id: 0 })?;
        let answer = answer
            .await
            .context("the participant stopped before its answer")?;
        handle.start(&answer).await
    }
}

/// The feed ids of the publishers `hears` among `known` (by [`feed_name`]), if all are there.
fn feeds_of(hears: &[u32], known: &[Feed]) -> Option<Vec<u64>> {
    hears
        .iter()
        .map(|&source| {
            let name = feed_name(source);
            known.iter().find(|feed| feed.display == name).map(|f| f.id)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_feeds_of_every_publisher_heard_or_none() {
        let feed = |id, source| Feed {
            id,
            display: feed_name(source),
        };
        let known = [feed(70, 3), feed(71, 1), feed(72, 2)];
        assert_eq!(feeds_of(&[1, 2], &known), Some(vec![71, 72]));
        assert_eq!(feeds_of(&[2, 4], &known), None);
        assert_eq!(feeds_of(&[], &known), Some(vec![]));
    }
}
