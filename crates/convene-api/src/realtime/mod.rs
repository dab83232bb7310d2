//! The realtime side of the API, under one roof: the hub that fans committed events out to the
//! live streams of each meeting ([`hub`]: subscribers, their index and routing, the writes into
//! idle streams). Each participant's standing is the core's rule ([`convene_core::standing`]).

pub mod hub;

pub use hub::{Hub, HubConfig};
