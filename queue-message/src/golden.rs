//! A known answer for message signing: a fixed key, a fixed message and the exact queue text the signer
//! must produce for them. The shared crate's tests, the handler's (which signs) and the agent's (which
//! verifies) all check against it, so a reordered field, a renamed key or a changed timestamp format can
//! never silently break messages between a handler and an agent of different versions.
//!
//! [`TEXT`] was produced once and is written out here by hand; it must never be regenerated to make a
//! test pass. A deliberate wire change bumps [`crate::message::SCHEMA_VERSION`] and adds a new answer.

use chrono::DateTime;
use uuid::Uuid;

use crate::message::{Action, BlockMessage, SigningKey, Source};
use crate::target::Target;

/// The key: bytes 0, 1, …, 31.
pub fn key() -> SigningKey {
    SigningKey::from_bytes((0u8..32).collect()).expect("32 bytes is a valid key")
}

/// The message.
pub fn message() -> BlockMessage {
    BlockMessage {
        id: Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
        action: Action::Block,
        targets: vec![
            Target::parse("198.51.100.7").expect("valid"),
            Target::parse("2001:db8::/64").expect("valid"),
        ],
        expires_at: DateTime::from_timestamp(1_800_003_600, 0).expect("valid"),
        reason: "Golden: TI match \"quoted\" ü".to_owned(),
        source: Source {
            kind: "sentinel-incident".to_owned(),
            id: Some("/subscriptions/s/incidents/1".to_owned()),
            url: Some("https://portal.azure.com/#incident/1".to_owned()),
            rule: Some("TI map".to_owned()),
            severity: Some("High".to_owned()),
        },
        issued_at: DateTime::from_timestamp(1_800_000_000, 0).expect("valid"),
    }
}

/// The queue text [`message`] signed with [`key`] must be, byte for byte. The key id is the first 16 hex
/// digits of SHA-256 of the key; `sig` is base64 of HMAC-SHA256 over the same object without `sig`. Both
/// were checked with Python's `hashlib`/`hmac`, independently of this crate.
pub const TEXT: &str = concat!(
    r#"{"v":1,"id":"01234567-89ab-cdef-0123-456789abcdef","action":"block","#,
    r#""targets":["198.51.100.7","2001:db8::/64"],"expires_at":"2027-01-15T09:00:00Z","#,
    r#""reason":"Golden: TI match \"quoted\" ü","#,
    r#""source":{"kind":"sentinel-incident","id":"/subscriptions/s/incidents/1","#,
    r#""url":"https://portal.azure.com/#incident/1","rule":"TI map","severity":"High"},"#,
    r#""issued_at":"2027-01-15T08:00:00Z","kid":"630dcd2966c43366","#,
    r#""sig":"9lYdYUXRgyJ5sxOIkSIWaXyRF5oZzYttc9M7Aa90zm0="}"#
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signer_produces_the_known_answer() {
        assert_eq!(message().encode(&key()), TEXT);
    }

    #[test]
    fn the_verifier_accepts_the_known_answer() {
        assert_eq!(BlockMessage::decode(TEXT, &[key()]), Ok(message()));
    }
}
