//! The queue message: what a block or unblock says, how it is encoded, signed, verified and decoded.
//!
//! This module is the only place that knows the wire format (schema in `schema/block-message.v1.json`).
//! A message is one JSON object; its signature is HMAC-SHA256 over the *canonical bytes*: the same object
//! without `sig`, with fields in the order of `Unsigned`, serialised compactly by `serde_json`. The decoder
//! refuses unknown fields and non-canonical targets and timestamps, so a verified message has exactly one
//! spelling and the verifier can rebuild the canonical bytes from the parsed value.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::target::Target;

/// The schema version this crate writes and accepts.
pub const SCHEMA_VERSION: u32 = 1;

/// Largest encoded message we produce, in bytes after XML escaping. The queue limit is 64 KiB; we stay
/// well under it so the XML envelope and any future fields fit.
pub const MAX_MESSAGE_BYTES: usize = 48 * 1024;

/// Whether the targets are to be blocked or released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Drop traffic from the targets until `expires_at`.
    Block,
    /// Lift this source's claim on the targets.
    Unblock,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Block => "block",
            Self::Unblock => "unblock",
        })
    }
}

/// Where a message came from: enough to link a block back to the alert that caused it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Payload kind: `sentinel-incident`, `sentinel-alert`, `azure-monitor`, `manual`.
    pub kind: String,
    /// Incident or alert id (ARM id, SystemAlertId, alertId).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A link for a human (incident URL, alert portal link).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Analytics or alert rule name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Severity as the source spelled it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
}

impl Source {
    /// The claim key the agent keeps per target: one claim per source kind and id, lower-cased.
    ///
    /// Azure resource ids are case-insensitive and real payloads spell the same incident both
    /// `…/Incidents/<id>` and `…/incidents/<id>` (the trigger vs the ARM API), as do GUIDs; an unblock must
    /// find the block's claim whichever spelling each message carried (issue 9 item 9). Claims stored by
    /// an older agent under a mixed-case key are not renamed here: they end at their expiry.
    pub fn claim_key(&self) -> String {
        match &self.id {
            Some(id) => format!("{}:{id}", self.kind).to_lowercase(),
            None => self.kind.to_lowercase(),
        }
    }
}

/// A block or unblock instruction, before signing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockMessage {
    /// Unique id (replay protection).
    pub id: Uuid,
    /// Block or unblock.
    pub action: Action,
    /// Canonical, de-duplicated targets.
    pub targets: Vec<Target>,
    /// Block: when the block ends. Unblock: after this the message is meaningless (every block it could
    /// lift has expired).
    pub expires_at: DateTime<Utc>,
    /// Human-readable reason.
    pub reason: String,
    /// Origin of the instruction.
    pub source: Source,
    /// When the handler issued it.
    pub issued_at: DateTime<Utc>,
}

/// Fields in signing order; serialised without `sig` to get the canonical bytes.
#[derive(Serialize)]
struct Unsigned<'a> {
    v: u32,
    id: &'a Uuid,
    action: Action,
    targets: &'a [Target],
    expires_at: String,
    reason: &'a str,
    source: &'a Source,
    issued_at: String,
    kid: &'a str,
}

/// The whole wire object.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    v: u32,
    id: Uuid,
    action: Action,
    targets: Vec<Target>,
    expires_at: String,
    reason: String,
    source: Source,
    issued_at: String,
    kid: String,
    sig: String,
}

/// The one spelling of a timestamp on the wire: RFC 3339, whole seconds, `Z`.
pub(crate) fn timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Parses a wire timestamp, refusing every spelling but the canonical one.
pub(crate) fn parse_timestamp(text: &str, field: &str) -> Result<DateTime<Utc>, DecodeError> {
    let parsed = DateTime::parse_from_rfc3339(text)
        .map_err(|_| DecodeError::Malformed(format!("`{field}` is not an RFC 3339 timestamp")))?
        .with_timezone(&Utc);
    if timestamp(&parsed) != text {
        return Err(DecodeError::Malformed(format!(
            "`{field}` is not in canonical form (whole seconds, Z)"
        )));
    }
    Ok(parsed)
}

/// An HMAC-SHA256 key with its id (the first 16 hex digits of the key's SHA-256).
#[derive(Clone)]
pub struct SigningKey {
    id: String,
    key: Vec<u8>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("id", &self.id)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Why a signing key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not valid base64.
    #[error("the signing key is not valid base64")]
    NotBase64,
    /// Fewer than 32 bytes after decoding.
    #[error(
        "the signing key has {0} bytes; at least 32 are required (e.g. `openssl rand -base64 32`)"
    )]
    TooShort(usize),
}

impl SigningKey {
    /// Minimum key length in bytes.
    pub const MIN_BYTES: usize = 32;

    /// Decodes a base64 key of at least 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let key = BASE64
            .decode(text.trim())
            .map_err(|_| KeyError::NotBase64)?;
        Self::from_bytes(key)
    }

    /// Wraps raw key bytes (at least 32).
    pub fn from_bytes(key: Vec<u8>) -> Result<Self, KeyError> {
        if key.len() < Self::MIN_BYTES {
            return Err(KeyError::TooShort(key.len()));
        }
        let digest = Sha256::digest(&key);
        let id = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        Ok(Self { id, key })
    }

    /// The key id carried in messages (`kid`).
    pub fn id(&self) -> &str {
        &self.id
    }

    fn mac(&self, bytes: &[u8]) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(bytes);
        mac
    }

    /// The base64 HMAC-SHA256 of `canonical` (the `sig` field of every signed Portcullis message).
    pub(crate) fn sign(&self, canonical: &[u8]) -> String {
        BASE64.encode(self.mac(canonical).finalize().into_bytes())
    }

    /// Checks a base64 `sig` against `canonical`, in constant time.
    pub(crate) fn verify(&self, canonical: &[u8], sig: &str) -> Result<(), DecodeError> {
        let sig = BASE64.decode(sig).map_err(|_| DecodeError::BadSignature)?;
        self.mac(canonical)
            .verify_slice(&sig)
            .map_err(|_| DecodeError::BadSignature)
    }
}

/// The first steps every signed message shares: unwrap base64 (the Functions queue extension's default
/// encoding), parse JSON, check the version `v` and that there is a `sig`.
pub(crate) fn parse_signed_json(text: &str) -> Result<serde_json::Value, DecodeError> {
    let trimmed = text.trim();
    let owned;
    let json = if trimmed.starts_with('{') {
        trimmed
    } else {
        let bytes = BASE64
            .decode(trimmed)
            .map_err(|_| DecodeError::Malformed("neither JSON nor base64".to_owned()))?;
        owned = String::from_utf8(bytes).map_err(|_| {
            DecodeError::Malformed("base64 of something other than UTF-8".to_owned())
        })?;
        owned.as_str()
    };
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    match value.get("v").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(SCHEMA_VERSION) => {}
        Some(v) => return Err(DecodeError::UnknownVersion(v)),
        None => return Err(DecodeError::Malformed("no version field `v`".to_owned())),
    }
    if value.get("sig").is_none() {
        return Err(DecodeError::Unsigned);
    }
    Ok(value)
}

/// The key among `keys` whose id is `kid`.
pub(crate) fn find_key<'a>(
    keys: &'a [SigningKey],
    kid: &str,
) -> Result<&'a SigningKey, DecodeError> {
    keys.iter()
        .find(|k| k.id() == kid)
        .ok_or_else(|| DecodeError::UnknownKey(kid.to_owned()))
}

/// Why a received message was refused. Every variant is a reason to move the message to the poison queue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, or not a message of this schema.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A schema version this build does not understand.
    #[error("unknown message version {0}")]
    UnknownVersion(u64),
    /// No signature.
    #[error("unsigned message")]
    Unsigned,
    /// Signed with a key this verifier does not hold.
    #[error("signed with unknown key id `{0}`")]
    UnknownKey(String),
    /// The signature does not match the content.
    #[error("bad signature")]
    BadSignature,
}

impl BlockMessage {
    fn unsigned<'a>(&'a self, kid: &'a str) -> Unsigned<'a> {
        Unsigned {
            v: SCHEMA_VERSION,
            id: &self.id,
            action: self.action,
            targets: &self.targets,
            expires_at: timestamp(&self.expires_at),
            reason: &self.reason,
            source: &self.source,
            issued_at: timestamp(&self.issued_at),
            kid,
        }
    }

    /// The canonical bytes that are signed.
    pub fn canonical_bytes(&self, kid: &str) -> Vec<u8> {
        serde_json::to_vec(&self.unsigned(kid)).expect("message fields always serialise")
    }

    /// Signs and encodes the message as the queue message text.
    pub fn encode(&self, key: &SigningKey) -> String {
        let sig = key.sign(&self.canonical_bytes(key.id()));
        let wire = Wire {
            v: SCHEMA_VERSION,
            id: self.id,
            action: self.action,
            targets: self.targets.clone(),
            expires_at: timestamp(&self.expires_at),
            reason: self.reason.clone(),
            source: self.source.clone(),
            issued_at: timestamp(&self.issued_at),
            kid: key.id().to_owned(),
            sig,
        };
        serde_json::to_string(&wire).expect("message fields always serialise")
    }

    /// Decodes and verifies a queue message text against any of `keys` (several during key rotation).
    /// Text that is not JSON but base64 of JSON (the Functions queue extension's default encoding) is
    /// accepted too.
    pub fn decode(text: &str, keys: &[SigningKey]) -> Result<Self, DecodeError> {
        let value = parse_signed_json(text)?;
        let wire: Wire =
            serde_json::from_value(value).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        let key = find_key(keys, &wire.kid)?;
        let message = Self {
            id: wire.id,
            action: wire.action,
            targets: wire.targets,
            expires_at: parse_timestamp(&wire.expires_at, "expires_at")?,
            reason: wire.reason,
            source: wire.source,
            issued_at: parse_timestamp(&wire.issued_at, "issued_at")?,
        };
        key.verify(&message.canonical_bytes(&wire.kid), &wire.sig)?;
        Ok(message)
    }

    /// Splits `targets` into as few messages as fit under [`MAX_MESSAGE_BYTES`] each, copying every other
    /// field from `template` and giving each message a fresh id.
    pub fn pack(template: &Self, targets: &[Target], key: &SigningKey) -> Vec<Self> {
        let overhead = xml_escaped_len(&template.with_targets(Vec::new()).encode(key));
        let mut messages = Vec::new();
        let mut current: Vec<Target> = Vec::new();
        let mut size = overhead;
        for target in targets {
            // The text, a comma and two quotes, each quote escaped as `&quot;` in the XML body.
            let cost = target.to_string().len() + 1 + 2 * 6;
            if !current.is_empty() && size + cost > MAX_MESSAGE_BYTES {
                messages.push(template.with_targets(std::mem::take(&mut current)));
                size = overhead;
            }
            current.push(*target);
            size += cost;
        }
        if !current.is_empty() || messages.is_empty() {
            messages.push(template.with_targets(current));
        }
        messages
    }

    fn with_targets(&self, targets: Vec<Target>) -> Self {
        Self {
            id: Uuid::new_v4(),
            targets,
            ..self.clone()
        }
    }
}

/// Length of `text` once XML-escaped, as the queue client sends it.
pub fn xml_escaped_len(text: &str) -> usize {
    text.chars()
        .map(|c| match c {
            '&' => 5,
            '<' | '>' => 4,
            '"' | '\'' => 6,
            c => c.len_utf8(),
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// Issue 9 item 9: `/Incidents/` (trigger) and `/incidents/` (ARM) name the same incident, so an
    /// unblock must carry the block's claim key whichever spelling each message has.
    #[test]
    fn claim_keys_ignore_the_case_of_azure_ids() {
        let source = |id: &str| Source {
            kind: "sentinel-incident".to_owned(),
            id: Some(id.to_owned()),
            ..Source::default()
        };
        let trigger = source("/subscriptions/D0CF/resourceGroups/myRg/providers/Microsoft.OperationalInsights/workspaces/ws/providers/Microsoft.SecurityInsights/Incidents/73E01A99-5CD7");
        let arm = source("/subscriptions/d0cf/resourcegroups/myrg/providers/microsoft.operationalinsights/workspaces/WS/providers/Microsoft.SecurityInsights/incidents/73e01a99-5cd7");
        assert_eq!(trigger.claim_key(), arm.claim_key());
        assert_eq!(
            arm.claim_key(),
            "sentinel-incident:/subscriptions/d0cf/resourcegroups/myrg/providers/microsoft.operationalinsights/workspaces/ws/providers/microsoft.securityinsights/incidents/73e01a99-5cd7"
        );
        assert_eq!(
            Source {
                kind: "manual".to_owned(),
                ..Source::default()
            }
            .claim_key(),
            "manual"
        );
    }

    fn key() -> SigningKey {
        SigningKey::from_bytes(vec![7; 32]).unwrap()
    }

    fn sample() -> BlockMessage {
        BlockMessage {
            id: Uuid::from_u128(42),
            action: Action::Block,
            targets: vec![
                Target::parse("198.51.100.7").unwrap(),
                Target::parse("2001:db8::/48").unwrap(),
            ],
            expires_at: Utc.with_ymd_and_hms(2026, 12, 3, 7, 0, 0).unwrap(),
            reason: "TI match <&> \"x\"".to_owned(),
            source: Source {
                kind: "sentinel-incident".to_owned(),
                id: Some("/subscriptions/x/incidents/1".to_owned()),
                url: None,
                rule: Some("TI map".to_owned()),
                severity: Some("High".to_owned()),
            },
            issued_at: Utc.with_ymd_and_hms(2026, 11, 26, 7, 0, 0).unwrap(),
        }
    }

    #[test]
    fn round_trip_verifies() {
        let text = sample().encode(&key());
        assert_eq!(BlockMessage::decode(&text, &[key()]).unwrap(), sample());
    }

    #[test]
    fn base64_wrapped_text_is_accepted() {
        let text = BASE64.encode(sample().encode(&key()));
        assert_eq!(BlockMessage::decode(&text, &[key()]).unwrap(), sample());
    }

    #[test]
    fn tampering_breaks_the_signature() {
        let text = sample()
            .encode(&key())
            .replace("198.51.100.7", "198.51.100.8");
        assert_eq!(
            BlockMessage::decode(&text, &[key()]),
            Err(DecodeError::BadSignature)
        );
    }

    #[test]
    fn unknown_key_unsigned_and_versions_are_refused() {
        let other = SigningKey::from_bytes(vec![9; 32]).unwrap();
        let text = sample().encode(&other);
        assert_eq!(
            BlockMessage::decode(&text, &[key()]),
            Err(DecodeError::UnknownKey(other.id().to_owned()))
        );

        let mut value: serde_json::Value = serde_json::from_str(&sample().encode(&key())).unwrap();
        value.as_object_mut().unwrap().remove("sig");
        assert_eq!(
            BlockMessage::decode(&value.to_string(), &[key()]),
            Err(DecodeError::Unsigned)
        );

        value["v"] = 2.into();
        assert_eq!(
            BlockMessage::decode(&value.to_string(), &[key()]),
            Err(DecodeError::UnknownVersion(2))
        );
    }

    #[test]
    fn extra_fields_are_refused() {
        let mut value: serde_json::Value = serde_json::from_str(&sample().encode(&key())).unwrap();
        value["extra"] = true.into();
        assert!(matches!(
            BlockMessage::decode(&value.to_string(), &[key()]),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn short_keys_are_refused() {
        assert_eq!(
            SigningKey::from_base64("c2hvcnQ=").unwrap_err(),
            KeyError::TooShort(5)
        );
        assert_eq!(
            SigningKey::from_base64("!!").unwrap_err(),
            KeyError::NotBase64
        );
        assert!(!format!("{:?}", key()).contains("7, 7"));
    }

    #[test]
    fn pack_splits_under_the_limit_and_keeps_every_target() {
        let targets: Vec<Target> = (0..20_000u32)
            .map(|i| Target::from_addr(std::net::Ipv4Addr::from(0x0b00_0000 + i).into()))
            .collect();
        let messages = BlockMessage::pack(&sample(), &targets, &key());
        assert!(messages.len() > 1);
        let mut all = Vec::new();
        for m in &messages {
            let text = m.encode(&key());
            assert!(
                xml_escaped_len(&text) <= MAX_MESSAGE_BYTES,
                "{} bytes",
                xml_escaped_len(&text)
            );
            all.extend(m.targets.iter().copied());
        }
        assert_eq!(all, targets);
        let ids: std::collections::HashSet<_> = messages.iter().map(|m| m.id).collect();
        assert_eq!(ids.len(), messages.len());
    }
}
