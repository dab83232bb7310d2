//! The str0m configuration of a participant's two peer connections: codecs, RTP mode, header
//! extensions, data channels and local candidates.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use str0m::bwe::Bitrate;
use str0m::channel::{ChannelConfig, Reliability};
use str0m::crypto::CryptoProvider;
use str0m::net::TcpType;
use str0m::rtp::{Extension, ExtensionMap};
use str0m::{Candidate, Rtc, RtcConfig};

use super::{Engine, PcKind};

impl Engine {
    /// A new peer connection of kind `pc`, with the engine's local addresses as host candidates:
    /// UDP, then passive TCP (RFC 6544: the client connects). str0m ranks a TCP host candidate
    /// below a UDP one (type preference 90 against 126), so a client whose UDP works uses UDP.
    pub(super) fn new_rtc(&self, now: Instant, pc: PcKind) -> Rtc {
        let config = match pc {
            PcKind::Subscriber if self.config.subscriber_bwe => {
                estimating_subscriber_config(self.crypto.clone())
            }
            _ => rtc_config(pc, self.crypto.clone()),
        };
        let mut rtc = config.build(now);
        for candidate in local_candidates(&self.config.local_addrs, &self.config.tcp_addrs) {
            rtc.add_local_candidate(candidate);
        }
        rtc
    }
}

/// The host candidates of the engine's UDP addresses, then the passive TCP host candidates of its
/// TCP addresses; an address str0m refuses is logged and left out.
fn local_candidates(udp: &[SocketAddr], tcp: &[SocketAddr]) -> Vec<Candidate> {
    let udp = udp.iter().map(|addr| (addr, Candidate::host(*addr, "udp")));
    let tcp = tcp.iter().map(|addr| {
        let candidate = Candidate::builder()
            .tcp()
            .host(*addr)
            .tcptype(TcpType::Passive)
            .build();
        (addr, candidate)
    });
    udp.chain(tcp)
        .filter_map(|(addr, candidate)| {
            candidate
                .inspect_err(|e| tracing::warn!(%addr, "unusable local candidate: {e}"))
                .ok()
        })
        .collect()
}

/// The str0m configuration of a participant's publisher or subscriber connection (public so that
/// the media benchmark's str0m floor runs exactly what the engine runs).
pub fn rtc_config(pc: PcKind, crypto: Arc<CryptoProvider>) -> RtcConfig {
    let extensions = match pc {
        PcKind::Publisher => ExtensionMap::standard(),
        PcKind::Subscriber => subscriber_extensions(),
    };
    Rtc::builder()
        // Packets are forwarded as they come, rewritten, not reassembled into frames and
        // packetized again for each subscriber.
        .set_rtp_mode(true)
        .set_extension_map(extensions)
        .set_crypto_provider(crypto)
        // Loss, jitter and round trips for connection quality (`signals`).
        .set_stats_interval(Some(super::signals::STATS_INTERVAL))
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .enable_h264(true)
}

/// The bandwidth a subscriber connection's estimate starts from.
pub const INITIAL_SUBSCRIBER_ESTIMATE: Bitrate = Bitrate::kbps(1_000);

/// A subscriber connection that estimates its bandwidth (`EngineConfig::subscriber_bwe`): the
/// transport-wide sequence number on every packet it sends, str0m's estimator and pacer on the
/// client's feedback.
pub fn estimating_subscriber_config(crypto: Arc<CryptoProvider>) -> RtcConfig {
    let mut extensions = subscriber_extensions();
    for (id, extension) in ExtensionMap::standard().iter() {
        if extension == &Extension::TransportSequenceNumber {
            extensions.set(id, extension.clone());
        }
    }
    rtc_config(PcKind::Subscriber, crypto)
        .set_extension_map(extensions)
        .enable_bwe(Some(INITIAL_SUBSCRIBER_ESTIMATE))
}

/// The data channels convene opens on a subscriber connection, as LiveKit clients expect them:
/// `_reliable` (ordered, retransmitted) and `_lossy` (unordered, never retransmitted).
pub fn subscriber_channels() -> [ChannelConfig; 2] {
    let channel = |label: &str, ordered, reliability| ChannelConfig {
        label: label.to_owned(),
        ordered,
        reliability,
        negotiated: None,
        protocol: String::new(),
    };
    [
        channel("_reliable", true, Reliability::Reliable),
        channel(
            "_lossy",
            false,
            Reliability::MaxRetransmits { retransmits: 0 },
        ),
    ]
}

/// The RTP header extensions of a subscriber connection: str0m's standard set without the two
/// that exist for the sender's bandwidth estimation (transport-wide sequence numbers and
/// abs-send-time). convene estimates no downstream bandwidth, and with them every forwarded packet
/// is numbered and every subscriber sends feedback that must be decrypted and parsed: about a
/// tenth of the forwarding CPU for nothing. Publisher connections keep them: a browser's own
/// upstream bandwidth estimation lives on the feedback convene sends.
fn subscriber_extensions() -> ExtensionMap {
    let mut extensions = ExtensionMap::empty();
    for (id, extension) in ExtensionMap::standard().iter() {
        if !matches!(
            extension,
            Extension::TransportSequenceNumber | Extension::AbsoluteSendTime
        ) {
            extensions.set(id, extension.clone());
        }
    }
    extensions
}

#[cfg(test)]
mod tests {
    use str0m::net::Protocol;

    use super::*;

    /// Every address gets its candidate, TCP ones passive, and each UDP candidate outranks each
    /// TCP one, so that a client tries TCP only where UDP does not work.
    #[test]
    fn tcp_candidates_are_passive_and_rank_below_udp() {
        let udp: Vec<SocketAddr> = vec![
            "127.0.0.1:7882".parse().unwrap(),
            "[::1]:7882".parse().unwrap(),
        ];
        let tcp: Vec<SocketAddr> = vec![
            "127.0.0.1:7881".parse().unwrap(),
            "[::1]:7881".parse().unwrap(),
        ];
        let candidates = local_candidates(&udp, &tcp);
        assert_eq!(candidates.len(), 4);
        let (udp_candidates, tcp_candidates): (Vec<_>, Vec<_>) =
            candidates.iter().partition(|c| c.proto() == Protocol::Udp);
        assert_eq!(
            udp_candidates.iter().map(|c| c.addr()).collect::<Vec<_>>(),
            udp
        );
        assert_eq!(
            tcp_candidates.iter().map(|c| c.addr()).collect::<Vec<_>>(),
            tcp
        );
        for candidate in &tcp_candidates {
            assert_eq!(candidate.proto(), Protocol::Tcp);
            assert_eq!(candidate.tcptype(), Some(TcpType::Passive));
            assert!(
                candidate.to_sdp_string().contains("tcptype passive"),
                "{}",
                candidate.to_sdp_string()
            );
        }
        let lowest_udp = udp_candidates.iter().map(|c| c.prio()).min().unwrap();
        let highest_tcp = tcp_candidates.iter().map(|c| c.prio()).max().unwrap();
        assert!(
            lowest_udp > highest_tcp,
            "udp {lowest_udp} must outrank tcp {highest_tcp}"
        );
    }
}
