//! The realtime side of the API, under one roof: the hub that fans committed events out to the
//! live streams of each meeting ([`hub`]: subscribers, their index and routing, the writes into
//! idle streams) and the rendering of each event, once for all its subscribers ([`render`]).
//! Each participant's standing is the core's rule ([`convene_core::standing`]).

pub mod hub;
pub mod render;

pub use hub::{Hub, HubConfig};
