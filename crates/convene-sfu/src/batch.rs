//! Sending the engine's datagrams in UDP GSO runs: `convene-sfu-core`'s [`Batcher`] groups them
//! (pure), and each [`Run`] leaves as one `quinn-udp` send.

pub use convene_sfu_core::batch::{Batcher, Run};

/// The run as `quinn-udp` sends it: one GSO `sendmsg` when `segment` is set.
pub fn transmit<'a>(run: &Run<'a>) -> quinn_udp::Transmit<'a> {
    quinn_udp::Transmit {
        destination: run.destination,
        ecn: None,
        contents: run.contents,
        segment_size: run.segment,
        src_ip: None,
    }
}
