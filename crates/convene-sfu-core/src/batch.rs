//! Grouping outgoing datagrams for UDP generic segmentation offload (GSO).
//!
//! A forwarded video frame leaves str0m as several RTP packets in a row to one subscriber, all of
//! the packetizer's full size except the last. Linux sends such a run as one `sendmsg` with a
//! `UDP_SEGMENT` size (the kernel, or the NIC, cuts it into datagrams), which costs one trip
//! through the socket layer and the routing table instead of one per packet. [`Batcher`] decides
//! the runs; `convene-sfu` performs them. Pure: no sockets here.

use std::net::SocketAddr;

/// Largest total payload of one GSO send (the kernel refuses more than 64 KiB per `sendmsg`).
pub const MAX_BATCH_BYTES: usize = 60_000;

/// A run of datagrams ready to send: `contents` is their concatenation; every datagram is
/// `segment` bytes except the last, which may be shorter.
#[derive(Debug, PartialEq, Eq)]
pub struct Run<'a> {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub contents: &'a [u8],
    /// `Some(size)` when the run holds more than one datagram.
    pub segment: Option<usize>,
}

/// Collects consecutive datagrams that can go out in one GSO send.
#[derive(Debug)]
pub struct Batcher {
    max_segments: usize,
    source: SocketAddr,
    destination: SocketAddr,
    segment: usize,
    count: usize,
    /// A shorter datagram ended the run: nothing more may join it.
    closed: bool,
    buf: Vec<u8>,
}

impl Batcher {
    /// `max_segments` is what the socket supports (1 disables grouping).
    pub fn new(max_segments: usize) -> Self {
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        Batcher {
            max_segments: max_segments.max(1),
            source: unspecified,
            destination: unspecified,
            segment: 0,
            count: 0,
            closed: false,
            buf: Vec::with_capacity(MAX_BATCH_BYTES),
        }
    }

    /// Add one datagram to the current run if it fits; returns `false` (and takes nothing) when
    /// the caller must [`Batcher::take`] the current run first.
    pub fn push(&mut self, source: SocketAddr, destination: SocketAddr, datagram: &[u8]) -> bool {
        if self.count == 0 {
            self.source = source;
            self.destination = destination;
            self.segment = datagram.len();
            self.count = 1;
            self.closed = false;
            self.buf.clear();
            self.buf.extend_from_slice(datagram);
            return true;
        }
        let fits = !self.closed
            && source == self.source
            && destination == self.destination
            && self.count < self.max_segments
            && !datagram.is_empty()
            && datagram.len() <= self.segment
            && self.buf.len() + datagram.len() <= MAX_BATCH_BYTES;
        if !fits {
            return false;
        }
        self.closed = datagram.len() < self.segment;
        self.count += 1;
        self.buf.extend_from_slice(datagram);
        true
    }

    /// The current run, if any; the batcher is empty afterwards.
    pub fn take(&mut self) -> Option<Run<'_>> {
        if self.count == 0 {
            return None;
        }
        let count = std::mem::take(&mut self.count);
        Some(Run {
            source: self.source,
            destination: self.destination,
            contents: &self.buf,
            segment: (count > 1).then_some(self.segment),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Feed datagrams, returning the runs as (destination port, segment, total length).
    fn runs(max: usize, input: &[(u16, usize)]) -> Vec<(u16, Option<usize>, usize)> {
        let mut batcher = Batcher::new(max);
        let mut out = Vec::new();
        let mut record = |run: Run<'_>| {
            out.push((run.destination.port(), run.segment, run.contents.len()));
        };
        for &(port, len) in input {
            let datagram = vec![7u8; len];
            if !batcher.push(addr(1), addr(port), &datagram) {
                record(batcher.take().expect("a refused push means a run is open"));
                assert!(batcher.push(addr(1), addr(port), &datagram));
            }
        }
        if let Some(run) = batcher.take() {
            record(run);
        }
        out
    }

    #[test]
    fn a_frame_to_one_subscriber_is_one_run() {
        let frame = [(9, 1200), (9, 1200), (9, 1200), (9, 700)];
        assert_eq!(runs(64, &frame), vec![(9, Some(1200), 4300)]);
    }

    #[test]
    fn a_shorter_datagram_ends_the_run() {
        let input = [(9, 1200), (9, 700), (9, 1200), (9, 1200)];
        assert_eq!(
            runs(64, &input),
            vec![(9, Some(1200), 1900), (9, Some(1200), 2400)]
        );
    }

    #[test]
    fn a_larger_datagram_or_another_destination_starts_a_new_run() {
        let input = [(9, 100), (9, 1200), (8, 1200), (8, 1200)];
        assert_eq!(
            runs(64, &input),
            vec![(9, None, 100), (9, None, 1200), (8, Some(1200), 2400)]
        );
    }

    #[test]
    fn runs_respect_the_segment_and_byte_limits() {
        let input = [(9, 1000); 5];
        assert_eq!(
            runs(2, &input),
            vec![
                (9, Some(1000), 2000),
                (9, Some(1000), 2000),
                (9, None, 1000)
            ]
        );
        let many = [(9, 1200); 60];
        let sizes: Vec<usize> = runs(128, &many).iter().map(|r| r.2).collect();
        assert!(sizes.iter().all(|&s| s <= MAX_BATCH_BYTES), "{sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), 60 * 1200);
    }

    #[test]
    fn without_gso_every_datagram_is_its_own_run() {
        let input = [(9, 1200), (9, 1200)];
        assert_eq!(runs(1, &input), vec![(9, None, 1200), (9, None, 1200)]);
    }
}
