//! Frame assembly for recording: one track's RTP packets ([`RecPacket`]), in arrival order, back
//! into whole encoded frames ([`Frame`]), without decoding them. Pure: time comes in with the
//! packets (`RecPacket::at`), nothing here reads a clock or does IO.
//!
//! * Opus: each packet's payload is one frame.
//! * VP8 (RFC 7741): the packets of one RTP timestamp, from the one with S=1 and PID 0 to the
//!   marker, payload descriptors stripped and concatenated.
//! * H.264 (RFC 6184, packetization mode 1): single NAL units, STAP-A and FU-A, written out as
//!   Annex-B (`00 00 00 01` before each NAL unit), parameter sets kept.
//!
//! An [`Assembler`] keeps a small reorder window by sequence number ([`MAX_BUFFERED_PACKETS`],
//! [`MAX_REORDER_WAIT`]) so retransmitted and reordered packets still make their frame. A frame
//! comes out once every sequence number from its first packet to its end is there; when the
//! window passes a gap, the frames it broke are dropped. For video, a lost frame may be the
//! reference of the frames after it, so from then on every delta frame is dropped until the
//! next keyframe, and [`Assembler::needs_keyframe`] says so: a recorded file never holds a frame
//! that refers to one missing from it. A video track starts the same way, waiting for its first
//! keyframe.
//!
//! The codec header readers at the end ([`vp8_dimensions`], [`h264_sps_dimensions`],
//! [`annex_b_nal_units`]) give the container what its track header needs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{RecCodec, RecPacket};

/// Packets held back waiting for a missing one; beyond this the gap is given up.
pub const MAX_BUFFERED_PACKETS: usize = 64;

/// How long (by the packets' arrival times) a missing packet is waited for.
pub const MAX_REORDER_WAIT: Duration = Duration::from_millis(200);

/// The Annex-B start code written before each H.264 NAL unit.
pub const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// One whole encoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// RTP time of the frame, in the track's clock units (`RecTrack::clock_rate`).
    pub time: u64,
    /// Decodable on its own: a VP8 key frame, an H.264 frame with an IDR slice; every Opus frame.
    pub keyframe: bool,
    /// The frame as the decoder takes it (H.264: Annex-B).
    pub data: Vec<u8>,
    /// When the frame's first packet arrived.
    pub at: Instant,
}

#[derive(Debug)]
struct Buffered {
    time: u64,
    marker: bool,
    payload: Arc<[u8]>,
    at: Instant,
}

/// What the packets from the next expected sequence number make.
enum Run {
    /// No packet is waiting.
    Empty,
    /// The packets up to this sequence number (inclusive) are one whole frame.
    Complete(u64),
    /// A packet is missing before the frame's end.
    Incomplete,
}

/// Frame assembly for one recorded track: [`Assembler::push`] each packet as it arrives,
/// [`Assembler::finish`] at the end.
#[derive(Debug)]
pub struct Assembler {
    codec: RecCodec,
    /// Packets not yet made into a frame, by sequence number (all at or after `next_seq`).
    packets: BTreeMap<u64, Buffered>,
    /// The first sequence number not yet consumed; set by the first packet.
    next_seq: Option<u64>,
    /// Video: delta frames are dropped until a keyframe (at the start and after a loss).
    awaiting_keyframe: bool,
    /// A frame was dropped for want of a keyframe and none has come since.
    keyframe_wanted: bool,
    dropped_frames: u64,
}

impl Assembler {
    pub fn new(codec: RecCodec) -> Self {
        Assembler {
            codec,
            packets: BTreeMap::new(),
            next_seq: None,
            awaiting_keyframe: codec != RecCodec::Opus,
            keyframe_wanted: false,
            dropped_frames: 0,
        }
    }

    pub fn codec(&self) -> RecCodec {
        self.codec
    }

    /// Takes the next packet (in arrival order) and returns the frames it completed, in order.
    /// Duplicates and packets older than what already came out are ignored.
    pub fn push(&mut self, packet: &RecPacket) -> Vec<Frame> {
        let next = *self.next_seq.get_or_insert(packet.seq);
        let mut frames = Vec::new();
        if packet.seq < next || self.packets.contains_key(&packet.seq) {
            return frames;
        }
        self.packets.insert(
            packet.seq,
            Buffered {
                time: packet.time,
                marker: packet.marker,
                payload: packet.payload.clone(),
                at: packet.at,
            },
        );
        self.drain(Some(packet.at), &mut frames);
        frames
    }

    /// The end of the track: the whole frames still held back (behind a gap that will not be
    /// filled now) come out; incomplete ones are dropped.
    pub fn finish(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        self.drain(None, &mut frames);
        frames
    }

    /// Video only: true from the moment a frame was dropped for want of a keyframe (a packet was
    /// lost, or a delta frame came while waiting for the track's first keyframe) until the next
    /// keyframe comes out. The caller asks the publisher for one while this holds (throttled).
    pub fn needs_keyframe(&self) -> bool {
        self.keyframe_wanted
    }

    /// Frames dropped so far: incomplete or malformed ones (a frame broken in its middle counts
    /// twice: its head given up, then its tail), and video delta frames that came while waiting
    /// for a keyframe.
    pub fn dropped_frames(&self) -> u64 {
        self.dropped_frames
    }

    /// Makes frames of what is buffered; `now` is the latest arrival time, `None` at the end
    /// (every gap is given up).
    fn drain(&mut self, now: Option<Instant>, frames: &mut Vec<Frame>) {
        while let Some(next) = self.next_seq {
            match self.run(next) {
                Run::Empty => return,
                Run::Complete(last) => {
                    let packets: Vec<Buffered> = (next..=last)
                        .filter_map(|seq| self.packets.remove(&seq))
                        .collect();
                    self.next_seq = Some(last + 1);
                    self.emit(&packets, frames);
                }
                Run::Incomplete => {
                    let give_up = match now {
                        None => true,
                        Some(now) => {
                            self.packets.len() > MAX_BUFFERED_PACKETS
                                || self.packets.values().next().is_some_and(|oldest| {
                                    now.saturating_duration_since(oldest.at) > MAX_REORDER_WAIT
                                })
                        }
                    };
                    if !give_up {
                        return;
                    }
                    self.skip_gap(next);
                }
            }
        }
    }

    fn run(&self, next: u64) -> Run {
        let Some(first) = self.packets.get(&next) else {
            return if self.packets.is_empty() {
                Run::Empty
            } else {
                Run::Incomplete
            };
        };
        // An Opus packet is a frame; an empty packet (padding) stands alone.
        if self.codec == RecCodec::Opus || first.payload.is_empty() {
            return Run::Complete(next);
        }
        let mut last = next;
        loop {
            if self.packets[&last].marker {
                return Run::Complete(last);
            }
            match self.packets.get(&(last + 1)) {
                // The timestamp changed with no packet missing: the frame ended without a marker.
                Some(following) if following.time != first.time => return Run::Complete(last),
                Some(_) => last += 1,
                None => return Run::Incomplete,
            }
        }
    }

    /// Gives up the first missing packet at or after `next`: the packets before it (the head of
    /// a frame that cannot be completed) are dropped, and assembly goes on after it.
    fn skip_gap(&mut self, next: u64) {
        let mut gap = next;
        while self.packets.contains_key(&gap) {
            gap += 1;
        }
        let rest = self.packets.split_off(&gap);
        let head = std::mem::replace(&mut self.packets, rest);
        self.next_seq = Some(self.packets.keys().next().copied().unwrap_or(gap));
        self.lose(!head.is_empty());
    }

    /// A frame (or part of one, `counted`) was dropped: video waits for a keyframe.
    fn lose(&mut self, counted: bool) {
        if counted {
            self.dropped_frames += 1;
        }
        if self.codec != RecCodec::Opus {
            self.awaiting_keyframe = true;
            self.keyframe_wanted = true;
        }
    }

    fn emit(&mut self, packets: &[Buffered], frames: &mut Vec<Frame>) {
        let packets: Vec<&Buffered> = packets.iter().filter(|p| !p.payload.is_empty()).collect();
        let Some(first) = packets.first() else {
            return;
        };
        let made = match self.codec {
            RecCodec::Opus => Some((true, first.payload.to_vec())),
            RecCodec::Vp8 => vp8_frame(&packets),
            RecCodec::H264 => h264_frame(&packets),
        };
        let Some((keyframe, data)) = made else {
            self.lose(true);
            return;
        };
        if self.codec != RecCodec::Opus {
            if keyframe {
                self.awaiting_keyframe = false;
                self.keyframe_wanted = false;
            } else if self.awaiting_keyframe {
                self.dropped_frames += 1;
                self.keyframe_wanted = true;
                return;
            }
        }
        frames.push(Frame {
            time: first.time,
            keyframe,
            data,
            at: first.at,
        });
    }
}

/// The parts of a VP8 payload descriptor (RFC 7741 section 4.2) assembly needs.
struct Vp8Descriptor {
    /// S: the packet starts a partition.
    start: bool,
    /// PID: the partition index.
    partition: u8,
    /// The descriptor's length: the VP8 data starts here.
    len: usize,
}

fn vp8_descriptor(payload: &[u8]) -> Option<Vp8Descriptor> {
    let first = *payload.first()?;
    let mut len = 1;
    if first & 0x80 != 0 {
        // X: the extension byte says which optional fields follow.
        let extension = *payload.get(1)?;
        len = 2;
        if extension & 0x80 != 0 {
            // I: a picture id, 15 bits when its first bit (M) is set.
            len += if payload.get(len)? & 0x80 != 0 { 2 } else { 1 };
        }
        if extension & 0x40 != 0 {
            // L: TL0PICIDX.
            len += 1;
        }
        if extension & 0x30 != 0 {
            // T or K: one byte of TID, Y and KEYIDX.
            len += 1;
        }
    }
    (len < payload.len()).then_some(Vp8Descriptor {
        start: first & 0x10 != 0,
        partition: first & 0x07,
        len,
    })
}

/// A VP8 frame from its packets: `(keyframe, data)`, or `None` if the first packet does not
/// start the frame or a descriptor is malformed.
fn vp8_frame(packets: &[&Buffered]) -> Option<(bool, Vec<u8>)> {
    let first = vp8_descriptor(&packets.first()?.payload)?;
    if !first.start || first.partition != 0 {
        return None;
    }
    // The frame tag's P bit (RFC 6386 section 9.1): 0 is a key frame.
    let keyframe = packets[0].payload[first.len] & 0x01 == 0;
    let mut data = Vec::with_capacity(packets.iter().map(|p| p.payload.len()).sum());
    for packet in packets {
        let descriptor = vp8_descriptor(&packet.payload)?;
        data.extend_from_slice(&packet.payload[descriptor.len..]);
    }
    Some((keyframe, data))
}

const NAL_IDR: u8 = 5;
const STAP_A: u8 = 24;
const FU_A: u8 = 28;

/// Whether a NAL unit of this type, with `rest` the bytes after its header, begins an access
/// unit (H.264 section 7.4.1.2.3): an access unit delimiter, parameter set or SEI, or the first
/// slice of a picture (`first_mb_in_slice` 0, coded as a single 1 bit).
fn nal_starts_access_unit(nal_type: u8, rest: &[u8]) -> bool {
    match nal_type {
        1 | NAL_IDR => rest.first().is_some_and(|b| b & 0x80 != 0),
        6..=9 | 13..=18 => true,
        _ => false,
    }
}

/// Whether an H.264 RTP payload begins an access unit (so a frame can start with it).
fn h264_starts_frame(payload: &[u8]) -> bool {
    let Some(&header) = payload.first() else {
        return false;
    };
    match header & 0x1f {
        STAP_A => {
            let Some(size) = payload
                .get(1..3)
                .map(|s| usize::from(u16::from_be_bytes([s[0], s[1]])))
            else {
                return false;
            };
            payload
                .get(3..3 + size)
                .and_then(|nal| Some((*nal.first()? & 0x1f, &nal[1..])))
                .is_some_and(|(nal_type, rest)| nal_starts_access_unit(nal_type, rest))
        }
        FU_A => payload
            .get(1)
            .is_some_and(|&fu| fu & 0x80 != 0 && nal_starts_access_unit(fu & 0x1f, &payload[2..])),
        nal_type => nal_starts_access_unit(nal_type, &payload[1..]),
    }
}

/// An H.264 frame from its packets: `(keyframe, Annex-B data)`, or `None` if it does not begin
/// an access unit, holds an unfinished fragmented NAL unit or a packet type other than single
/// NAL unit, STAP-A and FU-A.
fn h264_frame(packets: &[&Buffered]) -> Option<(bool, Vec<u8>)> {
    if !h264_starts_frame(&packets.first()?.payload) {
        return None;
    }
    let mut data = Vec::with_capacity(packets.iter().map(|p| p.payload.len() + 8).sum());
    let mut keyframe = false;
    let mut in_fragment = false;
    let mut push_nal = |data: &mut Vec<u8>, nal: &[u8]| {
        keyframe |= nal[0] & 0x1f == NAL_IDR;
        data.extend_from_slice(&START_CODE);
        data.extend_from_slice(nal);
    };
    for packet in packets {
        let payload = &packet.payload[..];
        match payload[0] & 0x1f {
            1..=23 => {
                if in_fragment {
                    return None;
                }
                push_nal(&mut data, payload);
            }
            STAP_A => {
                if in_fragment {
                    return None;
                }
                let mut rest = &payload[1..];
                while !rest.is_empty() {
                    let size = usize::from(u16::from_be_bytes([rest[0], *rest.get(1)?]));
                    let nal = rest.get(2..2 + size).filter(|nal| !nal.is_empty())?;
                    push_nal(&mut data, nal);
                    rest = &rest[2 + size..];
                }
            }
            FU_A => {
                let fu = *payload.get(1)?;
                let fragment = &payload[2..];
                if fu & 0x80 != 0 {
                    if in_fragment {
                        return None;
                    }
                    // The NAL header: F and NRI from the indicator, the type from the FU header.
                    push_nal(&mut data, &[(payload[0] & 0xe0) | (fu & 0x1f)]);
                    in_fragment = true;
                } else if !in_fragment {
                    return None;
                }
                data.extend_from_slice(fragment);
                if fu & 0x40 != 0 {
                    in_fragment = false;
                }
            }
            _ => return None,
        }
    }
    (!in_fragment).then_some((keyframe, data))
}

/// The width and height in a VP8 key frame's header (RFC 6386 section 9.1); `None` for an
/// interframe or a truncated header.
pub fn vp8_dimensions(frame: &[u8]) -> Option<(u16, u16)> {
    if frame.len() < 10 || frame[0] & 0x01 != 0 || frame[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff;
    let height = u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff;
    (width > 0 && height > 0).then_some((width, height))
}

/// The NAL units of Annex-B data (each without its start code), in order.
pub fn annex_b_nal_units(data: &[u8]) -> Vec<&[u8]> {
    let mut units = Vec::new();
    let mut unit_start = None;
    let mut i = 0;
    while i + 2 < data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            if let Some(start) = unit_start {
                units.push(trim_trailing_zeros(&data[start..i]));
            }
            i += 3;
            unit_start = Some(i);
        } else {
            i += 1;
        }
    }
    if let Some(start) = unit_start {
        units.push(trim_trailing_zeros(&data[start..]));
    }
    units.retain(|unit| !unit.is_empty());
    units
}

fn trim_trailing_zeros(unit: &[u8]) -> &[u8] {
    let end = unit.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    &unit[..end]
}

/// The picture size an H.264 sequence parameter set (the NAL unit, header byte included)
/// describes, cropping applied (H.264 section 7.3.2.1.1); `None` if it cannot be read.
pub fn h264_sps_dimensions(sps: &[u8]) -> Option<(u32, u32)> {
    if sps.first()? & 0x1f != 7 {
        return None;
    }
    let rbsp = unescape_rbsp(&sps[1..]);
    let mut bits = BitReader {
        data: &rbsp,
        position: 0,
    };
    let profile_idc = bits.read(8)?;
    bits.read(16)?; // constraint flags, level_idc
    bits.unsigned_golomb()?; // seq_parameter_set_id
    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = false;
    if matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format_idc = bits.unsigned_golomb()?;
        if chroma_format_idc == 3 {
            separate_colour_plane = bits.flag()?;
        }
        bits.unsigned_golomb()?; // bit_depth_luma_minus8
        bits.unsigned_golomb()?; // bit_depth_chroma_minus8
        bits.flag()?; // qpprime_y_zero_transform_bypass_flag
        if bits.flag()? {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for list in 0..lists {
                if bits.flag()? {
                    bits.skip_scaling_list(if list < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    bits.unsigned_golomb()?; // log2_max_frame_num_minus4
    match bits.unsigned_golomb()? {
        0 => {
            bits.unsigned_golomb()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            bits.flag()?; // delta_pic_order_always_zero_flag
            bits.signed_golomb()?; // offset_for_non_ref_pic
            bits.signed_golomb()?; // offset_for_top_to_bottom_field
            let cycle = bits.unsigned_golomb()?;
            if cycle > 255 {
                return None;
            }
            for _ in 0..cycle {
                bits.signed_golomb()?;
            }
        }
        _ => {}
    }
    bits.unsigned_golomb()?; // max_num_ref_frames
    bits.flag()?; // gaps_in_frame_num_value_allowed_flag
    let width_in_mbs = bits.unsigned_golomb()?.checked_add(1)?;
    let height_in_map_units = bits.unsigned_golomb()?.checked_add(1)?;
    let frame_mbs_only = bits.flag()?;
    if !frame_mbs_only {
        bits.flag()?; // mb_adaptive_frame_field_flag
    }
    bits.flag()?; // direct_8x8_inference_flag
    let (mut left, mut right, mut top, mut bottom) = (0, 0, 0, 0);
    if bits.flag()? {
        left = bits.unsigned_golomb()?;
        right = bits.unsigned_golomb()?;
        top = bits.unsigned_golomb()?;
        bottom = bits.unsigned_golomb()?;
    }
    let field_factor = if frame_mbs_only { 1 } else { 2 };
    let (crop_x, crop_y) = match (separate_colour_plane, chroma_format_idc) {
        (false, 1) => (2, 2 * field_factor),
        (false, 2) => (2, field_factor),
        _ => (1, field_factor),
    };
    let width = width_in_mbs
        .checked_mul(16)?
        .checked_sub(crop_x * left.checked_add(right)?)?;
    let height = (field_factor * height_in_map_units)
        .checked_mul(16)?
        .checked_sub(crop_y.checked_mul(top.checked_add(bottom)?)?)?;
    (width > 0 && height > 0).then_some((width, height))
}

/// The raw bytes of a NAL unit's payload: `00 00 03` emulation prevention taken out.
fn unescape_rbsp(escaped: &[u8]) -> Vec<u8> {
    let mut rbsp = Vec::with_capacity(escaped.len());
    let mut zeros = 0;
    for &byte in escaped {
        if zeros >= 2 && byte == 3 {
            zeros = 0;
            continue;
        }
        zeros = if byte == 0 { zeros + 1 } else { 0 };
        rbsp.push(byte);
    }
    rbsp
}

struct BitReader<'a> {
    data: &'a [u8],
    position: usize,
}

impl BitReader<'_> {
    fn flag(&mut self) -> Option<bool> {
        let byte = self.data.get(self.position / 8)?;
        let bit = byte >> (7 - self.position % 8) & 1;
        self.position += 1;
        Some(bit == 1)
    }

    fn read(&mut self, count: u32) -> Option<u32> {
        (0..count).try_fold(0u32, |value, _| Some(value << 1 | u32::from(self.flag()?)))
    }

    /// ue(v), Exp-Golomb coded.
    fn unsigned_golomb(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while !self.flag()? {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        ((1u64 << zeros) - 1 + u64::from(self.read(zeros)?))
            .try_into()
            .ok()
    }

    /// se(v).
    fn signed_golomb(&mut self) -> Option<i64> {
        let code = i64::from(self.unsigned_golomb()?);
        Some(if code % 2 == 1 {
            (code + 1) / 2
        } else {
            -(code / 2)
        })
    }

    fn skip_scaling_list(&mut self, size: usize) -> Option<()> {
        let (mut last, mut next) = (8i64, 8i64);
        for _ in 0..size {
            if next != 0 {
                next = (last + self.signed_golomb()? + 256).rem_euclid(256);
            }
            if next != 0 {
                last = next;
            }
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{RecKind, RecTrack};

    fn track(codec: RecCodec) -> Arc<RecTrack> {
        Arc::new(RecTrack {
            recording: "RE_1".into(),
            room: "room".into(),
            track_sid: "TR_1".into(),
            identity: "alice".into(),
            name: "Alice".into(),
            kind: if codec == RecCodec::Opus {
                RecKind::Audio
            } else {
                RecKind::Video
            },
            codec,
            clock_rate: if codec == RecCodec::Opus {
                48_000
            } else {
                90_000
            },
        })
    }

    /// A packet whose arrival is `ms` milliseconds after `zero`.
    struct Stream {
        track: Arc<RecTrack>,
        zero: Instant,
    }

    impl Stream {
        fn new(codec: RecCodec) -> Self {
            Stream {
                track: track(codec),
                zero: Instant::now(),
            }
        }

        fn packet(&self, seq: u64, time: u64, marker: bool, payload: &[u8], ms: u64) -> RecPacket {
            RecPacket {
                track: self.track.clone(),
                seq,
                time,
                marker,
                payload: payload.into(),
                at: self.zero + Duration::from_millis(ms),
            }
        }
    }

    fn push_all(assembler: &mut Assembler, packets: &[RecPacket]) -> Vec<Frame> {
        packets.iter().flat_map(|p| assembler.push(p)).collect()
    }

    fn summary(frames: &[Frame]) -> Vec<(u64, bool, Vec<u8>)> {
        frames
            .iter()
            .map(|f| (f.time, f.keyframe, f.data.clone()))
            .collect()
    }

    /// A VP8 frame's packets: descriptor `0x90 0x80 picture_id` (X, S; I with a 7-bit picture
    /// id), first packet S=1, marker on the last; the frame's first byte carries the P bit.
    fn vp8_packets(
        stream: &Stream,
        first_seq: u64,
        time: u64,
        keyframe: bool,
        parts: &[&[u8]],
        ms: u64,
    ) -> (Vec<RecPacket>, Vec<u8>) {
        let mut whole = Vec::new();
        let packets = parts
            .iter()
            .enumerate()
            .map(|(i, part)| {
                let mut data = part.to_vec();
                if i == 0 {
                    data.insert(0, if keyframe { 0x10 } else { 0x11 });
                }
                whole.extend_from_slice(&data);
                let first_byte = if i == 0 { 0x90 } else { 0x80 };
                let mut payload = vec![first_byte, 0x80, (time / 3000) as u8 & 0x7f];
                payload.extend_from_slice(&data);
                stream.packet(
                    first_seq + i as u64,
                    time,
                    i == parts.len() - 1,
                    &payload,
                    ms,
                )
            })
            .collect();
        (packets, whole)
    }

    #[test]
    fn vp8_frames_split_over_packets_come_out_whole_in_order() {
        let stream = Stream::new(RecCodec::Vp8);
        let (key, key_data) = vp8_packets(&stream, 10, 0, true, &[b"ab", b"cd", b"ef"], 0);
        let (delta, delta_data) = vp8_packets(&stream, 13, 3000, false, &[b"gh", b"ij"], 33);
        let mut assembler = Assembler::new(RecCodec::Vp8);

        let mut frames = push_all(&mut assembler, &key[..2]);
        assert!(frames.is_empty(), "no frame before its marker packet");
        frames.extend(push_all(&mut assembler, &key[2..]));
        frames.extend(push_all(&mut assembler, &delta));

        assert_eq!(key_data, [&[0x10][..], b"abcdef"].concat());
        assert_eq!(
            summary(&frames),
            vec![(0, true, key_data), (3000, false, delta_data)]
        );
        assert!(!assembler.needs_keyframe());
        assert_eq!(assembler.dropped_frames(), 0);
    }

    #[test]
    fn vp8_packets_out_of_order_still_make_their_frames() {
        let stream = Stream::new(RecCodec::Vp8);
        let (key, key_data) = vp8_packets(&stream, 10, 0, true, &[b"ab", b"cd", b"ef"], 0);
        let (delta, delta_data) = vp8_packets(&stream, 13, 3000, false, &[b"gh", b"ij"], 33);
        let (delta2, delta2_data) = vp8_packets(&stream, 15, 6000, false, &[b"kl"], 66);
        // Arrival: 10, 12, 13, 11 (late, a retransmission), 15, 14.
        let order = [&key[0], &key[2], &delta[0], &key[1], &delta2[0], &delta[1]];
        let mut assembler = Assembler::new(RecCodec::Vp8);
        let mut frames = Vec::new();
        for packet in order {
            frames.extend(assembler.push(packet));
        }
        assert_eq!(
            summary(&frames),
            vec![
                (0, true, key_data),
                (3000, false, delta_data),
                (6000, false, delta2_data)
            ]
        );
        assert_eq!(assembler.dropped_frames(), 0);
    }

    #[test]
    fn a_lost_packet_drops_its_frame_and_delta_frames_until_the_next_keyframe() {
        let stream = Stream::new(RecCodec::Vp8);
        let (key, key_data) = vp8_packets(&stream, 0, 0, true, &[b"k1", b"k2"], 0);
        let (broken, _) = vp8_packets(&stream, 2, 3000, false, &[b"b1", b"b2", b"b3"], 33);
        let (delta, _) = vp8_packets(&stream, 5, 6000, false, &[b"d1"], 66);
        let (late_delta, _) = vp8_packets(&stream, 6, 9000, false, &[b"d2"], 300);
        let (key2, key2_data) = vp8_packets(&stream, 7, 12000, true, &[b"K1", b"K2"], 330);
        let (after, after_data) = vp8_packets(&stream, 9, 15000, false, &[b"a1"], 360);
        let mut assembler = Assembler::new(RecCodec::Vp8);

        let mut frames = push_all(&mut assembler, &key);
        // The middle packet of the second frame never comes.
        frames.extend(assembler.push(&broken[0]));
        frames.extend(assembler.push(&broken[2]));
        frames.extend(push_all(&mut assembler, &delta));
        assert_eq!(frames.len(), 1, "the frames after the gap wait for it");
        assert!(
            !assembler.needs_keyframe(),
            "still within the reorder window"
        );

        // 300 ms later the window has passed the gap: the broken frame goes, and the delta
        // frames after it (which may refer to it) with it.
        frames.extend(push_all(&mut assembler, &late_delta));
        assert!(assembler.needs_keyframe());
        // The broken frame's head and tail, the delta frame and the late delta frame.
        assert_eq!(assembler.dropped_frames(), 4);
        // The lost packet arriving now is too late.
        frames.extend(assembler.push(&broken[1]));
        frames.extend(push_all(&mut assembler, &key2));
        assert!(!assembler.needs_keyframe(), "the keyframe came");
        frames.extend(push_all(&mut assembler, &after));

        assert_eq!(
            summary(&frames),
            vec![
                (0, true, key_data),
                (12000, true, key2_data),
                (15000, false, after_data)
            ]
        );
    }

    #[test]
    fn a_gap_is_given_up_when_the_window_is_full_whatever_the_time() {
        let stream = Stream::new(RecCodec::Vp8);
        let (key, _) = vp8_packets(&stream, 0, 0, true, &[b"k1"], 0);
        let mut assembler = Assembler::new(RecCodec::Vp8);
        assert_eq!(push_all(&mut assembler, &key).len(), 1);
        // Packet 1 is lost; 2.. are one-packet delta frames arriving at the same instant.
        for seq in 2..2 + MAX_BUFFERED_PACKETS as u64 {
            let (packets, _) = vp8_packets(&stream, seq, seq * 3000, false, &[b"d"], 1);
            assert!(push_all(&mut assembler, &packets).is_empty());
        }
        assert!(!assembler.needs_keyframe());
        let (packets, _) = vp8_packets(&stream, 66, 66 * 3000, false, &[b"d"], 1);
        assert!(push_all(&mut assembler, &packets).is_empty());
        assert!(
            assembler.needs_keyframe(),
            "the 65th buffered packet gives the gap up"
        );
        let (packets, _) = vp8_packets(&stream, 67, 67 * 3000, true, &[b"k"], 1);
        assert_eq!(push_all(&mut assembler, &packets).len(), 1);
    }

    #[test]
    fn video_waits_for_its_first_keyframe_and_asks_for_one() {
        let stream = Stream::new(RecCodec::Vp8);
        let (delta, _) = vp8_packets(&stream, 0, 0, false, &[b"d1", b"d2"], 0);
        let (key, key_data) = vp8_packets(&stream, 2, 3000, true, &[b"k1"], 33);
        let mut assembler = Assembler::new(RecCodec::Vp8);
        assert!(!assembler.needs_keyframe(), "nothing dropped yet");
        assert!(push_all(&mut assembler, &delta).is_empty());
        assert!(assembler.needs_keyframe());
        assert_eq!(
            summary(&push_all(&mut assembler, &key)),
            vec![(3000, true, key_data)]
        );
        assert!(!assembler.needs_keyframe());
    }

    #[test]
    fn a_frame_whose_start_was_lost_is_not_written() {
        let stream = Stream::new(RecCodec::Vp8);
        let (key, _) = vp8_packets(&stream, 0, 0, true, &[b"k1"], 0);
        let (broken, _) = vp8_packets(&stream, 1, 3000, true, &[b"b1", b"b2"], 33);
        let mut assembler = Assembler::new(RecCodec::Vp8);
        assert_eq!(push_all(&mut assembler, &key).len(), 1);
        // The first packet (S=1) of the next frame is lost; its tail arrives, then time passes.
        assert!(assembler.push(&broken[1]).is_empty());
        let (later, _) = vp8_packets(&stream, 3, 6000, false, &[b"d"], 400);
        assert!(push_all(&mut assembler, &later).is_empty());
        assert!(assembler.needs_keyframe());
    }

    #[test]
    fn duplicate_packets_are_ignored() {
        let stream = Stream::new(RecCodec::Vp8);
        let (key, key_data) = vp8_packets(&stream, 0, 0, true, &[b"ab", b"cd"], 0);
        let mut assembler = Assembler::new(RecCodec::Vp8);
        let mut frames = Vec::new();
        for packet in [&key[0], &key[0], &key[1], &key[1], &key[0]] {
            frames.extend(assembler.push(packet));
        }
        assert_eq!(summary(&frames), vec![(0, true, key_data)]);
    }

    #[test]
    fn vp8_descriptor_variants_are_stripped() {
        let frame = [0x10, 0xaa, 0xbb];
        let descriptors: [&[u8]; 6] = [
            &[0x10],                         // no extension
            &[0x90, 0x80, 0x12],             // I, 7-bit picture id
            &[0x90, 0x80, 0x81, 0x23],       // I, 15-bit picture id (M)
            &[0x90, 0xe0, 0x81, 0x23, 7, 0], // I (15 bit), L, T
            &[0x90, 0x10, 0x05],             // K only
            &[0x90, 0x00],                   // X with nothing after it
        ];
        let stream = Stream::new(RecCodec::Vp8);
        for (i, descriptor) in descriptors.iter().enumerate() {
            let mut assembler = Assembler::new(RecCodec::Vp8);
            let payload = [*descriptor, &frame[..]].concat();
            let frames = assembler.push(&stream.packet(i as u64, 0, true, &payload, 0));
            assert_eq!(
                summary(&frames),
                vec![(0, true, frame.to_vec())],
                "descriptor {descriptor:02x?}"
            );
        }
        // A descriptor with nothing after it is malformed: the frame is dropped.
        let mut assembler = Assembler::new(RecCodec::Vp8);
        let frames = assembler.push(&stream.packet(0, 0, true, &[0x90, 0x80, 0x81], 0));
        assert!(frames.is_empty());
        assert_eq!(assembler.dropped_frames(), 1);
    }

    #[test]
    fn opus_packets_are_frames_and_gaps_are_skipped_without_a_keyframe_request() {
        let stream = Stream::new(RecCodec::Opus);
        let mut assembler = Assembler::new(RecCodec::Opus);
        let mut frames = Vec::new();
        frames.extend(assembler.push(&stream.packet(0, 0, true, &[1, 2], 0)));
        frames.extend(assembler.push(&stream.packet(1, 960, false, &[], 20)));
        frames.extend(assembler.push(&stream.packet(2, 1920, false, &[3], 40)));
        // 3 is lost; 4 waits for it until the window passes.
        frames.extend(assembler.push(&stream.packet(4, 3840, false, &[4], 80)));
        assert_eq!(frames.len(), 2);
        frames.extend(assembler.push(&stream.packet(5, 4800, false, &[5], 300)));
        assert_eq!(
            summary(&frames),
            vec![
                (0, true, vec![1, 2]),
                (1920, true, vec![3]),
                (3840, true, vec![4]),
                (4800, true, vec![5])
            ]
        );
        assert!(!assembler.needs_keyframe());
    }

    const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x0d, 0xd9, 0x01, 0x41, 0xfb];
    const PPS: &[u8] = &[0x68, 0xcb, 0x83, 0xcb, 0x20];
    /// An IDR slice with first_mb_in_slice 0 (the byte after the header starts with a 1 bit).
    const IDR: &[u8] = &[0x65, 0x88, 0x84, 0x00, 0x33, 0xff, 0x01, 0x02, 0x03];
    const SLICE: &[u8] = &[0x41, 0x9a, 0x21, 0x6c, 0x42];

    fn annex_b(units: &[&[u8]]) -> Vec<u8> {
        units
            .iter()
            .flat_map(|u| [&START_CODE, *u].concat())
            .collect()
    }

    #[test]
    fn h264_single_nal_unit_packets() {
        let stream = Stream::new(RecCodec::H264);
        let mut assembler = Assembler::new(RecCodec::H264);
        let packets = [
            stream.packet(0, 0, false, SPS, 0),
            stream.packet(1, 0, false, PPS, 0),
            stream.packet(2, 0, true, IDR, 0),
            stream.packet(3, 3000, true, SLICE, 33),
        ];
        let frames = push_all(&mut assembler, &packets);
        assert_eq!(
            summary(&frames),
            vec![
                (0, true, annex_b(&[SPS, PPS, IDR])),
                (3000, false, annex_b(&[SLICE]))
            ]
        );
    }

    #[test]
    fn h264_stap_a_and_fu_a() {
        let stream = Stream::new(RecCodec::H264);
        let mut stap = vec![STAP_A | 0x60];
        for nal in [SPS, PPS] {
            stap.extend_from_slice(&(nal.len() as u16).to_be_bytes());
            stap.extend_from_slice(nal);
        }
        let indicator = (IDR[0] & 0xe0) | FU_A;
        let fragments = [
            [&[indicator, 0x80 | NAL_IDR][..], &IDR[1..4]].concat(),
            [&[indicator, NAL_IDR][..], &IDR[4..7]].concat(),
            [&[indicator, 0x40 | NAL_IDR][..], &IDR[7..]].concat(),
        ];
        let mut assembler = Assembler::new(RecCodec::H264);
        let packets = [
            stream.packet(100, 9000, false, &stap, 0),
            stream.packet(101, 9000, false, &fragments[0], 0),
            stream.packet(102, 9000, false, &fragments[1], 0),
            stream.packet(103, 9000, true, &fragments[2], 0),
        ];
        // Reordered: the fragments arrive 102, 101, 103.
        let order = [&packets[0], &packets[2], &packets[1], &packets[3]];
        let frames: Vec<Frame> = order.iter().flat_map(|p| assembler.push(p)).collect();
        assert_eq!(
            summary(&frames),
            vec![(9000, true, annex_b(&[SPS, PPS, IDR]))]
        );
        assert_eq!(annex_b_nal_units(&frames[0].data), vec![SPS, PPS, IDR]);
    }

    #[test]
    fn h264_frame_ends_when_the_timestamp_changes_without_a_marker() {
        let stream = Stream::new(RecCodec::H264);
        let mut assembler = Assembler::new(RecCodec::H264);
        let mut frames = assembler.push(&stream.packet(0, 0, false, SPS, 0));
        frames.extend(assembler.push(&stream.packet(1, 0, false, IDR, 0)));
        assert!(frames.is_empty());
        frames.extend(assembler.push(&stream.packet(2, 3000, false, SLICE, 33)));
        assert_eq!(summary(&frames), vec![(0, true, annex_b(&[SPS, IDR]))]);
        // At the end, the last frame without its marker is dropped, not guessed complete.
        assert!(assembler.finish().is_empty());
    }

    #[test]
    fn h264_fragment_without_its_start_is_dropped() {
        let stream = Stream::new(RecCodec::H264);
        let mut assembler = Assembler::new(RecCodec::H264);
        let indicator = (IDR[0] & 0xe0) | FU_A;
        let middle = [&[indicator, 0x40 | NAL_IDR][..], &IDR[4..]].concat();
        assert!(
            assembler
                .push(&stream.packet(0, 0, true, &middle, 0))
                .is_empty()
        );
        assert!(assembler.needs_keyframe());
        // A truncated STAP-A is dropped too.
        let stap = [STAP_A, 0x00, 0x09, 0x67, 0x42];
        assert!(
            assembler
                .push(&stream.packet(1, 3000, true, &stap, 30))
                .is_empty()
        );
        assert_eq!(assembler.dropped_frames(), 2);
    }

    #[test]
    fn finish_gives_up_gaps_and_keeps_whole_frames() {
        let stream = Stream::new(RecCodec::Vp8);
        let (key, key_data) = vp8_packets(&stream, 0, 0, true, &[b"k"], 0);
        let (broken, _) = vp8_packets(&stream, 1, 3000, false, &[b"a", b"b"], 10);
        let (next_key, next_key_data) = vp8_packets(&stream, 3, 6000, true, &[b"K"], 20);
        let mut assembler = Assembler::new(RecCodec::Vp8);
        let mut frames = push_all(&mut assembler, &key);
        frames.extend(assembler.push(&broken[1]));
        frames.extend(push_all(&mut assembler, &next_key));
        assert_eq!(frames.len(), 1, "the keyframe waits behind the gap");
        frames.extend(assembler.finish());
        assert_eq!(
            summary(&frames),
            vec![(0, true, key_data), (6000, true, next_key_data)]
        );
    }

    #[test]
    fn vp8_key_frame_dimensions() {
        let key = [
            0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00, 0x11,
        ];
        assert_eq!(vp8_dimensions(&key), Some((320, 240)));
        let mut inter = key;
        inter[0] |= 1;
        assert_eq!(vp8_dimensions(&inter), None);
        assert_eq!(vp8_dimensions(&key[..6]), None);
    }

    /// Sequence parameter sets made by x264 (`ffmpeg -c:v libx264 -profile:v ...`).
    #[test]
    fn h264_sps_dimensions_with_profiles_and_cropping() {
        let cases: [(&str, (u32, u32)); 4] = [
            (
                "6742c00dd90141fb0110000003001000000303c0f142a480",
                (320, 240),
            ),
            (
                "6764000dacd94141fb0110000003001000000303c0f1429960",
                (320, 240),
            ),
            (
                "674d401feca02802dd8088000003000800000301e078c18cb0",
                (1280, 720),
            ),
            // 1088 coded lines, 8 cropped.
            (
                "67640028acd940780227e5c044000003000400000300f03c60c658",
                (1920, 1080),
            ),
        ];
        for (hex, size) in cases {
            let sps: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            assert_eq!(h264_sps_dimensions(&sps), Some(size), "{hex}");
            assert_eq!(h264_sps_dimensions(&sps[..6]), None, "truncated {hex}");
        }
        assert_eq!(h264_sps_dimensions(PPS), None);
    }

    #[test]
    fn annex_b_units_with_three_and_four_byte_start_codes() {
        let data = [
            0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x68, 2, 0, 0, 0, 0, 1, 0x65, 3,
        ];
        assert_eq!(
            annex_b_nal_units(&data),
            vec![&[0x67, 1][..], &[0x68, 2][..], &[0x65, 3][..]]
        );
        assert!(annex_b_nal_units(&[1, 2, 3]).is_empty());
    }
}
