//! Build IDs: lower-case hyphenated UUIDs, the names of build folders and the 16-byte identities
//! in headers. Anything that is not one is refused before a file is touched, so a hostile
//! argument such as `../..` can never name a directory.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A build ID: a UUID, displayed in canonical lower-case hyphenated form.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BuildId(uuid::Uuid);

/// A string that is not a build ID.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid build ID {0:?}: expected a UUID such as 11111111-2222-3333-4444-555555555555, or a path to a build directory"
)]
pub struct BuildIdError(pub String);

impl BuildId {
    /// Parse the canonical hyphenated form (any case). Nothing else is accepted: no braces, no
    /// URN prefix, no simple (unhyphenated) form, no whitespace.
    pub fn parse(s: &str) -> Result<Self, BuildIdError> {
        let b = s.as_bytes();
        let hyphen_ok = b.len() == 36 && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-');
        let hex_ok = b.iter().enumerate().all(|(i, c)| matches!(i, 8 | 13 | 18 | 23) || c.is_ascii_hexdigit());
        if !(hyphen_ok && hex_ok) {
            return Err(BuildIdError(s.to_string()));
        }
        uuid::Uuid::parse_str(s).map(BuildId).map_err(|_| BuildIdError(s.to_string()))
    }

    /// From the 16 raw bytes stored in headers (RFC-4122 byte order, as written).
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        BuildId(uuid::Uuid::from_bytes(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// The nil UUID (sixteen zero bytes): "no build" in header mappings.
    pub fn nil() -> Self {
        BuildId(uuid::Uuid::nil())
    }

    pub fn is_nil(&self) -> bool {
        self.0.is_nil()
    }

    /// A fresh random (v4) build ID, as E2B mints them.
    pub fn new_random() -> Self {
        BuildId(uuid::Uuid::new_v4())
    }

    /// True when `s` parses as a build ID.
    pub fn is_build_id(s: &str) -> bool {
        Self::parse(s).is_ok()
    }
}

impl fmt::Display for BuildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.hyphenated())
    }
}

impl fmt::Debug for BuildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BuildId({self})")
    }
}

impl std::str::FromStr for BuildId {
    type Err = BuildIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BuildId::parse(s)
    }
}

impl Serialize for BuildId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BuildId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        BuildId::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_ids_accept_only_canonical_uuids() {
        let id = BuildId::parse("11111111-2222-3333-4444-555555555555").unwrap();
        assert_eq!(id.to_string(), "11111111-2222-3333-4444-555555555555");
        assert_eq!(
            BuildId::parse("AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE").unwrap().to_string(),
            "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
        );
        for bad in [
            "",
            "..",
            "../..",
            "*",
            "11111111222233334444555555555555",
            "{11111111-2222-3333-4444-555555555555}",
            "urn:uuid:11111111-2222-3333-4444-555555555555",
            " 11111111-2222-3333-4444-555555555555",
            "11111111-2222-3333-4444-55555555555g",
            "11111111-2222-3333-4444-5555555555555",
        ] {
            assert_eq!(BuildId::parse(bad), Err(BuildIdError(bad.to_string())), "{bad:?} accepted");
        }
    }

    #[test]
    fn build_ids_round_trip_through_json() {
        let id = BuildId::parse("11111111-2222-3333-4444-555555555555").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<BuildId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<BuildId>("\"../..\"").is_err());
    }
}
