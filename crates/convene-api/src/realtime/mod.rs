//! The realtime side of the API, under one roof: the hub that fans committed events out to the
//! live streams of each meeting ([`hub`]: subscribers, their index and routing, the writes into
//! idle streams), the rendering of each event, once for all its subscribers ([`render`]), and
//! the connections the hub writes into directly ([`direct`], which the server serves every
//! connection through); and each stream's transport-neutral part ([`feed`]: the seam between the
//! store and the live queue, filtering, the caller's standing), which the SSE and WebSocket
//! handlers (`routes/stream.rs`) drive.
//! Each participant's standing is the core's rule ([`convene_core::standing`]).

pub mod direct;
pub mod feed;
#[cfg(test)]
mod fixtures;
pub mod hub;
pub mod render;

pub use hub::{Hub, HubConfig};
