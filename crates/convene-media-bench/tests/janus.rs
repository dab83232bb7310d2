//! Janus's VideoRoom end to end with the bench's client stack: a str0m publisher sends VP8 in
//! three simulcast layers (rids q, h, f, lowest first) and Opus through a Janus started by
//! `src/janus.rs`, and a str0m subscriber receives it over a multistream subscription, both on
//! UDP sockets of the address Janus does ICE on (`Janus::ice_address`: Janus cannot use
//! 127.0.0.1). Skipped, with a message, when the `janus` binary is not installed.

#[path = "../src/janus.rs"]
mod janus;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::crypto::CryptoProvider;
use str0m::format::Codec;
use str0m::media::{
    Direction, Frequency, MediaKind, MediaTime, Mid, Pt, Rid, Simulcast, SimulcastLayer,
};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use janus::{Feed, Janus, JanusOptions, Session};

/// The room the test creates.
const ROOM: u64 = 4242;
/// The publisher's simulcast layers, lowest first (as the bench sends them).
const RIDS: [&str; 3] = ["q", "h", "f"];
/// Video frames a second the publisher sends (and an Opus packet every 20 ms).
const FPS: u64 = 30;
/// Frames of each kind the subscriber must receive.
const ENOUGH: usize = 15;
/// The last video frames received that must all be of the highest layer.
const SETTLED: usize = 5;
/// Where a fake frame carries the number of its simulcast layer (after the VP8 keyframe header).
const LAYER_AT: usize = 10;

/// A str0m peer connection on its own UDP socket, configured as the bench's clients are
/// (`peer::client_config`: Opus and VP8, str0m's default extensions).
struct Peer {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
}

impl Peer {
    /// A peer connection whose one host candidate is a new UDP socket on `ip`.
    fn new(crypto: Arc<CryptoProvider>, ip: Ipv4Addr) -> anyhow::Result<Peer> {
        let socket = std::net::UdpSocket::bind((ip, 0))?;
        socket.set_nonblocking(true)?;
        let local = socket.local_addr()?;
        let mut rtc = Rtc::builder()
            .set_crypto_provider(crypto)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp")?)
            .context("str0m refused the host candidate")?;
        Ok(Peer {
            rtc,
            socket: UdpSocket::from_std(socket)?,
            local,
        })
    }

    /// Gives str0m the time (which starts its ICE checks the first time), sends what it has to
    /// send, collects its events, and returns its next timeout.
    fn poll(&mut self, events: &mut Vec<Event>) -> anyhow::Result<Instant> {
        self.rtc.handle_input(Input::Timeout(Instant::now()))?;
        loop {
            match self.rtc.poll_output()? {
                Output::Timeout(at) => return Ok(at),
                Output::Transmit(t) => {
                    let _ = self.socket.try_send_to(&t.contents, t.destination);
                }
                Output::Event(event) => events.push(event),
            }
        }
    }

    /// Waits for a datagram or `until`, whichever comes first, and feeds str0m the datagram.
    async fn wait(&mut self, until: Instant, buf: &mut [u8]) -> anyhow::Result<()> {
        tokio::select! {
            received = self.socket.recv_from(buf) => {
                let (n, source) = received?;
                // Anything that is not STUN, DTLS, RTP or RTCP is ignored.
                if let Ok(receive) = Receive::new(Protocol::Udp, source, self.local, &buf[..n]) {
                    self.rtc.handle_input(Input::Receive(Instant::now(), receive))?;
                }
            }
            _ = tokio::time::sleep_until(until.into()) => {}
        }
        Ok(())
    }

    /// The payload type negotiated for `codec` on `mid`.
    fn payload_type(&mut self, mid: Mid, codec: Codec) -> anyhow::Result<Pt> {
        let writer = self.rtc.writer(mid).context("no writer")?;
        let pt = writer
            .payload_params()
            .find(|p| p.spec().codec == codec)
            .map(|p| p.pt());
        pt.with_context(|| format!("{codec:?} was not negotiated"))
    }

    /// Once connected, sends a VP8 keyframe on every layer every 1/FPS s and an Opus packet
    /// every 20 ms, until `stop`.
    async fn publish(
        mut self,
        video: (Mid, Pt),
        audio: (Mid, Pt),
        stop: CancellationToken,
    ) -> anyhow::Result<u64> {
        let mut buf = vec![0u8; 2048];
        let mut events = Vec::new();
        let mut started = None;
        let (mut videos, mut audios) = (0u64, 0u64);
        loop {
            let mut until = self.poll(&mut events)?;
            if events.drain(..).any(|e| matches!(e, Event::Connected)) {
                started = Some(Instant::now());
            }
            if let Some(start) = started {
                let next_video = start + Duration::from_millis(1000 * videos / FPS);
                let next_audio = start + Duration::from_millis(20 * audios);
                until = until.min(next_video).min(next_audio);
            }
            tokio::select! {
                _ = stop.cancelled() => return Ok(videos),
                waited = self.wait(until, &mut buf) => waited?,
            }
            let Some(start) = started else { continue };
            let now = Instant::now();
            while start + Duration::from_millis(1000 * videos / FPS) <= now {
                let time = MediaTime::new(videos * 90_000 / FPS, Frequency::NINETY_KHZ);
                for (layer, rid) in RIDS.iter().enumerate() {
                    let writer = self.rtc.writer(video.0).context("no video writer")?;
                    let frame = vp8_keyframe(layer as u8, videos);
                    writer
                        .rid(Rid::from(*rid))
                        .write(video.1, now, time, frame)?;
                }
                videos += 1;
            }
            while start + Duration::from_millis(20 * audios) <= now {
                let time = MediaTime::new(audios * 960, Frequency::FORTY_EIGHT_KHZ);
                let writer = self.rtc.writer(audio.0).context("no audio writer")?;
                let mut packet = vec![31 << 3];
                packet.extend_from_slice(&audios.to_le_bytes());
                writer.write(audio.1, now, time, packet)?;
                audios += 1;
            }
        }
    }

    /// Receives until `ENOUGH` video frames and `ENOUGH` Opus packets came, and returns the
    /// layer and counter of each video frame received and the count of audio packets.
    async fn receive(mut self) -> anyhow::Result<(Vec<(u8, u64)>, usize)> {
        let mut buf = vec![0u8; 2048];
        let mut events = Vec::new();
        let (mut layers, mut audio) = (Vec::new(), 0);
        loop {
            let until = self.poll(&mut events)?;
            for event in events.drain(..) {
                let Event::MediaData(data) = event else {
                    continue;
                };
                if data.params.spec().codec == Codec::Opus {
                    audio += 1;
                } else if let Some(stamp) = data.data.get(LAYER_AT..LAYER_AT + 9) {
                    let counter = u64::from_le_bytes(stamp[1..].try_into()?);
                    layers.push((stamp[0], counter));
                }
            }
            if layers.len() >= ENOUGH && audio >= ENOUGH {
                return Ok((layers, audio));
            }
            self.wait(until, &mut buf).await?;
        }
    }
}

/// A fake VP8 keyframe of 200 bytes with `layer` and `counter` after its header: a frame tag
/// (P = 0, show frame, first partition size), the start code and a 640x360 size, as Janus and
/// str0m look for in a keyframe.
fn vp8_keyframe(layer: u8, counter: u64) -> Vec<u8> {
    let mut frame = vec![0u8; 200];
    let tag: u32 = (1 << 4) | (190 << 5);
    frame[..3].copy_from_slice(&tag.to_le_bytes()[..3]);
    frame[3..6].copy_from_slice(&[0x9d, 0x01, 0x2a]);
    frame[6..8].copy_from_slice(&640u16.to_le_bytes());
    frame[8..10].copy_from_slice(&360u16.to_le_bytes());
    frame[LAYER_AT] = layer;
    frame[LAYER_AT + 1..LAYER_AT + 9].copy_from_slice(&counter.to_le_bytes());
    frame
}

/// Janus started, a room created, a simulcast publisher up and listed, a subscriber receiving its
/// video (ending on the highest layer) and its audio, all within a few seconds.
#[tokio::test]
async fn a_subscriber_receives_a_simulcast_publisher_through_janus() -> anyhow::Result<()> {
    let options = JanusOptions {
        event_loops: Some(2),
        ..JanusOptions::default()
    };
    if std::process::Command::new(&options.bin)
        .arg("--help")
        .output()
        .is_err()
    {
        eprintln!(
            "SKIPPED: {} is not installed (Debian's package `janus`)",
            options.bin.display()
        );
        return Ok(());
    }
    let started = Instant::now();
    let janus = Janus::start(&options).await?;
    assert!(Path::new(&format!("/proc/{}/stat", janus.pid())).exists());
    let session = Session::connect(janus.url()).await?;
    let mut publishing = session.attach().await?;
    publishing.create_room(ROOM, 4).await?;

    let crypto = Arc::new(str0m::crypto::from_feature_flags());
    let mut publisher = Peer::new(crypto.clone(), janus.ice_address())?;
    let mut simulcast = Simulcast::new();
    for rid in RIDS {
        simulcast.add_send_layer(SimulcastLayer::new(rid));
    }
    let mut sdp = publisher.rtc.sdp_api();
    let video = sdp.add_media(
        MediaKind::Video,
        Direction::SendOnly,
        None,
        None,
        Some(simulcast),
    );
    let audio = sdp.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let (offer, pending) = sdp.apply().context("no offer")?;
    let joined = publishing
        .publish(ROOM, "alice", &offer.to_sdp_string())
        .await?;
    assert!(joined.publishers.is_empty(), "{:?}", joined.publishers);
    publisher
        .rtc
        .sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&joined.answer_sdp)?)?;
    let video = (video, publisher.payload_type(video, Codec::Vp8)?);
    let audio = (audio, publisher.payload_type(audio, Codec::Opus)?);
    let stop = CancellationToken::new();
    let mut sending = tokio::spawn(publisher.publish(video, audio, stop.clone()));
    tokio::select! {
        up = publishing.webrtc_up() => up?,
        sent = &mut sending => anyhow::bail!("the publisher stopped: {:?}", sent?),
    }
    println!("publisher {} up after {:?}", joined.id, started.elapsed());

    let subscribing = session.attach().await?;
    let feeds = subscribing.publishers(ROOM).await?;
    let alice = Feed {
        id: joined.id,
        display: "alice".to_owned(),
    };
    assert_eq!(feeds, vec![alice]);
    let offer = subscribing.subscribe(ROOM, &[joined.id]).await?;
    let mut subscriber = Peer::new(crypto, janus.ice_address())?;
    let answer = subscriber
        .rtc
        .sdp_api()
        .accept_offer(SdpOffer::from_sdp_string(&offer)?)?;
    let receiving = tokio::spawn(subscriber.receive());
    subscribing.start(&answer.to_sdp_string()).await?;
    let (frames, audio) = tokio::time::timeout(Duration::from_secs(10), receiving)
        .await
        .context("the subscriber did not receive enough media within 10 s")???;
    stop.cancel();
    let sent = sending.await??;
    println!(
        "after {:?}: {sent} frames sent on each layer; received (layer, counter) {frames:?} and \
         {audio} Opus packets",
        started.elapsed(),
    );
    // Janus forwards its subscribers the highest layer by default (it may start lower and switch
    // up at a keyframe): that must be "f", the last rid of the offer (rid_order "lmh").
    let settled = &frames[frames.len() - SETTLED..];
    assert!(settled.iter().all(|&(layer, _)| layer == 2), "{frames:?}");
    Ok(())
}
