//! convene's domain core: meetings, participants and roles, the waiting room, the stage,
//! moderation, chat and the ordered per-meeting event log.
//!
//! Pure logic: no HTTP, no SQL, no sockets, no clock reads, no randomness from the operating system
//! (time comes from a [`Clock`], randomness from an [`Entropy`]). Operations in [`ops`] take state and
//! time and return a [`ops::Change`]; [`service::Meetings`] runs them against the [`ports`]
//! (store, media engine, event sink) that other crates implement.

pub mod access;
pub mod apikey;
pub mod change;
pub mod error;
pub mod event;
pub mod ids;
pub mod lockout;
pub mod login;
pub mod meeting;
pub mod ops;
pub mod participant;
pub mod ports;
pub mod random;
pub mod recording;
pub mod service;
pub mod standing;
pub mod time;
pub mod webhook;

pub use error::{DomainError, ErrorCode, ValidationError};
pub use random::Entropy;
pub use standing::Standing;
pub use time::{Clock, Timestamp};
