//! Server-assigned identifiers in LiveKit's format: a type prefix and a random base62 suffix.

use std::fmt;

use rand::Rng;

const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const SUFFIX_LEN: usize = 12;

fn random_suffix(rng: &mut impl Rng) -> String {
    (0..SUFFIX_LEN)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

macro_rules! sid_type {
    ($name:ident, $prefix:literal, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The prefix every id of this kind carries.
            pub const PREFIX: &'static str = $prefix;

            /// A fresh random id.
            pub fn generate(rng: &mut impl Rng) -> Self {
                $name(format!("{}{}", $prefix, random_suffix(rng)))
            }

            /// Accepts a string only if it has this kind's prefix and a non-empty base62 suffix.
            pub fn parse(value: &str) -> Option<Self> {
                let suffix = value.strip_prefix($prefix)?;
                (!suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_alphanumeric()))
                    .then(|| $name(value.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

sid_type!(RoomSid, "RM_", "A room instance id (`RM_...`).");
sid_type!(
    ParticipantSid,
    "PA_",
    "A participant session id (`PA_...`)."
);
sid_type!(TrackSid, "TR_", "A published track id (`TR_...`).");

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn generated_ids_have_prefix_and_base62_suffix() {
        let mut rng = StdRng::seed_from_u64(1);
        let room = RoomSid::generate(&mut rng);
        let participant = ParticipantSid::generate(&mut rng);
        let track = TrackSid::generate(&mut rng);
        assert!(room.as_str().starts_with("RM_"));
        assert!(participant.as_str().starts_with("PA_"));
        assert!(track.as_str().starts_with("TR_"));
        for id in [room.as_str(), participant.as_str(), track.as_str()] {
            assert_eq!(id.len(), 3 + SUFFIX_LEN);
            assert!(id[3..].bytes().all(|b| b.is_ascii_alphanumeric()));
        }
        assert_eq!(TrackSid::parse(track.as_str()), Some(track));
        assert_ne!(ParticipantSid::generate(&mut rng), participant);
    }

    /// Ids come from the generator they are given: one seed, one sequence of ids.
    #[test]
    fn the_same_seed_gives_the_same_ids() {
        let ids = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..3)
                .map(|_| RoomSid::generate(&mut rng).to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(7), ids(7));
        assert_ne!(ids(7), ids(8));
    }

    #[test]
    fn parse_rejects_wrong_prefix_and_junk() {
        assert!(TrackSid::parse("PA_abc").is_none());
        assert!(TrackSid::parse("TR_").is_none());
        assert!(TrackSid::parse("TR_a|b").is_none());
        assert!(ParticipantSid::parse("PA_abc123").is_some());
    }
}
