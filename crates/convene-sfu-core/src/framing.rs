//! RFC 4571 framing for ICE over TCP (RFC 6544): each STUN, DTLS, RTP or RTCP packet travels on
//! the TCP stream behind a 16-bit big-endian length. [`FrameReader`] cuts a byte stream into
//! packets, whatever the reads' boundaries; [`encode`] frames one packet; [`first_frame_ok`] and
//! [`is_media_packet`] are the checks a TCP connection's frames must pass. Pure: no sockets here.

/// Largest frame accepted from a client, in bytes. WebRTC stacks packetize for the path MTU
/// whatever the transport (libwebrtc and str0m keep every STUN, DTLS, RTP and RTCP packet near
/// 1200 bytes, never above an Ethernet MTU of 1500), and the UDP path reads at most 2048 bytes a
/// datagram; a longer frame is no packet of a WebRTC client, and accepting up to the 64 KiB the
/// length field allows would only let a peer make the server buffer more.
pub const MAX_FRAME: usize = 2048;

/// Why a TCP stream cannot be read further: its connection is to be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a frame of {0} bytes is longer than any packet ({MAX_FRAME} at most)")]
    Oversized(usize),
    #[error("an empty frame carries no packet")]
    Empty,
}

/// Cuts a TCP byte stream into RFC 4571 frames: [`FrameReader::push`] what was read, then take
/// [`FrameReader::next_frame`] until it gives `None`. A length over [`MAX_FRAME`] is refused as
/// soon as its two bytes arrive, before any of the body is kept.
#[derive(Debug, Default)]
pub struct FrameReader {
    buffer: Vec<u8>,
    /// Where the unread bytes of `buffer` start.
    start: usize,
}

impl FrameReader {
    pub fn new() -> Self {
        FrameReader::default()
    }

    /// Append bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buffer.len() {
            self.buffer.clear();
            self.start = 0;
        } else if self.start > self.buffer.len() / 2 {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole frame's packet, `None` until more bytes arrive, or the error that ends the
    /// stream.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        let unread = &self.buffer[self.start..];
        let Some(header) = unread.get(..2) else {
            return Ok(None);
        };
        let length = usize::from(u16::from_be_bytes([header[0], header[1]]));
        if length == 0 {
            return Err(FrameError::Empty);
        }
        if length > MAX_FRAME {
            return Err(FrameError::Oversized(length));
        }
        if unread.len() < 2 + length {
            return Ok(None);
        }
        let begin = self.start + 2;
        self.start = begin + length;
        Ok(Some(&self.buffer[begin..begin + length]))
    }

    /// Bytes kept for a frame not yet complete.
    pub fn pending(&self) -> usize {
        self.buffer.len() - self.start
    }
}

/// Append `packet` to `out` as one frame. A packet longer than 65,535 bytes cannot be framed and
/// is left out (`false`); str0m sends none near that size.
pub fn encode(packet: &[u8], out: &mut Vec<u8>) -> bool {
    let Ok(length) = u16::try_from(packet.len()) else {
        return false;
    };
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(packet);
    true
}

/// Whether `packet` is STUN, DTLS, RTP or RTCP by its first byte (RFC 7983's demultiplexing:
/// 0-3 STUN, 20-63 DTLS, 128-191 RTP and RTCP). Anything else (ZRTP, TURN channels, noise) has no
/// business on a connection to convene's passive candidate.
pub fn is_media_packet(packet: &[u8]) -> bool {
    matches!(packet.first(), Some(0..=3 | 20..=63 | 128..=191))
}

/// STUN's magic cookie (RFC 5389).
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

/// Whether `packet` can open an ICE-TCP connection: a STUN binding request (type 0x0001, the
/// magic cookie, a length that matches the packet). The client's first packet on a connection it
/// made to a passive candidate is its connectivity check; whether the check is good (its
/// username and integrity) is str0m's to say.
pub fn first_frame_ok(packet: &[u8]) -> bool {
    packet.len() >= 20
        && packet[..2] == [0x00, 0x01]
        && usize::from(u16::from_be_bytes([packet[2], packet[3]])) == packet.len() - 20
        && packet[4..8] == MAGIC_COOKIE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(packets: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for packet in packets {
            assert!(encode(packet, &mut out));
        }
        out
    }

    fn frames(reader: &mut FrameReader) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut out = Vec::new();
        while let Some(frame) = reader.next_frame()? {
            out.push(frame.to_vec());
        }
        Ok(out)
    }

    #[test]
    fn several_frames_in_one_read_come_out_one_by_one() {
        let packets: [&[u8]; 3] = [&[1; 20], &[2; 1200], &[3; 1]];
        let mut reader = FrameReader::new();
        reader.push(&framed(&packets));
        assert_eq!(frames(&mut reader).unwrap(), packets.map(<[u8]>::to_vec));
        assert_eq!(reader.pending(), 0);
    }

    /// Every way of cutting the stream (one byte at a time, the length split from its body, a
    /// cut inside the length) gives the same frames.
    #[test]
    fn split_reads_give_the_same_frames() {
        let packets: [&[u8]; 4] = [&[1; 300], &[2; 2], &[3; MAX_FRAME], &[4; 77]];
        let stream = framed(&packets);
        for chunk in [1, 2, 3, 7, 301, 302, 1000, stream.len()] {
            let mut reader = FrameReader::new();
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                reader.push(piece);
                got.extend(frames(&mut reader).unwrap());
            }
            assert_eq!(got, packets.map(<[u8]>::to_vec), "chunks of {chunk}");
            assert_eq!(reader.pending(), 0);
        }
    }

    #[test]
    fn an_incomplete_frame_waits_for_its_rest() {
        let mut reader = FrameReader::new();
        reader.push(&[0x00]);
        assert_eq!(reader.next_frame(), Ok(None));
        reader.push(&[0x03, 9, 9]);
        assert_eq!(reader.next_frame(), Ok(None));
        assert_eq!(reader.pending(), 4);
        reader.push(&[9]);
        assert_eq!(reader.next_frame(), Ok(Some(&[9u8, 9, 9][..])));
    }

    /// An oversized length is refused from its two bytes alone: the body is never waited for.
    #[test]
    fn an_oversized_length_is_refused_at_once() {
        let mut reader = FrameReader::new();
        reader.push(&framed(&[&[1; 10]]));
        reader.push(&((MAX_FRAME + 1) as u16).to_be_bytes());
        assert_eq!(reader.next_frame(), Ok(Some(&[1u8; 10][..])));
        assert_eq!(
            reader.next_frame(),
            Err(FrameError::Oversized(MAX_FRAME + 1))
        );
        let mut reader = FrameReader::new();
        reader.push(&[0xff, 0xff]);
        assert_eq!(reader.next_frame(), Err(FrameError::Oversized(65_535)));
    }

    #[test]
    fn a_zero_length_frame_is_refused() {
        let mut reader = FrameReader::new();
        reader.push(&[0, 0, 0, 1, 7]);
        assert_eq!(reader.next_frame(), Err(FrameError::Empty));
    }

    #[test]
    fn a_packet_too_long_for_the_length_field_is_not_framed() {
        let mut out = Vec::new();
        assert!(!encode(&vec![0; 65_536], &mut out));
        assert!(out.is_empty());
        assert!(encode(&vec![0; 65_535], &mut out));
        assert_eq!(out.len(), 65_537);
    }

    fn binding_request(attributes: usize) -> Vec<u8> {
        let mut packet = vec![0x00, 0x01];
        packet.extend_from_slice(&(attributes as u16).to_be_bytes());
        packet.extend_from_slice(&MAGIC_COOKIE);
        packet.extend_from_slice(&[7; 12]);
        packet.extend(std::iter::repeat_n(0, attributes));
        packet
    }

    #[test]
    fn only_a_stun_binding_request_opens_a_connection() {
        assert!(first_frame_ok(&binding_request(0)));
        assert!(first_frame_ok(&binding_request(24)));
        let mut response = binding_request(0);
        response[1] = 0x01;
        response[0] = 0x01; // 0x0101: a binding success response
        assert!(!first_frame_ok(&response));
        let mut wrong_length = binding_request(24);
        wrong_length.pop();
        assert!(!first_frame_ok(&wrong_length));
        let mut no_cookie = binding_request(0);
        no_cookie[4] = 0;
        assert!(!first_frame_ok(&no_cookie));
        assert!(!first_frame_ok(&[0x80; 40])); // RTP
        assert!(!first_frame_ok(b"GET / HTTP/1.1\r\n\r\n"));
    }

    #[test]
    fn media_packets_are_told_by_their_first_byte() {
        for first in [0u8, 3, 20, 22, 63, 128, 144, 191] {
            assert!(is_media_packet(&[first, 0]), "{first}");
        }
        for first in [4u8, 19, 64, 127, 192, 255, b'G'] {
            assert!(!is_media_packet(&[first, 0]), "{first}");
        }
        assert!(!is_media_packet(&[]));
    }
}
