//! Account SAS tokens signed with a storage account key.
//!
//! `azure_storage_queue` 1.x authenticates only with a token credential or a SAS in the URL; it has no
//! shared-key signing and `azure_storage_sas` makes user-delegation SAS only. So an account-key connection
//! string (and Azurite's well-known key) becomes a short-lived account SAS here. Format: Microsoft, "Create an
//! account SAS" (string-to-sign for signed version 2020-12-06 and later).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use url::form_urlencoded;

/// Signed version we sign with; accepted by Azure and by Azurite 3.35.
pub const SAS_VERSION: &str = "2022-11-02";

/// Parameters of an account SAS for the queue service.
#[derive(Debug, Clone)]
pub struct AccountSas<'a> {
    /// Storage account name.
    pub account: &'a str,
    /// Signed permissions, e.g. `raup` (read, add, update, process).
    pub permissions: &'a str,
    /// Signed resource types: `s` service, `c` container (queue), `o` object (message).
    pub resource_types: &'a str,
    /// Optional start time (clock skew tolerance).
    pub start: Option<DateTime<Utc>>,
    /// Expiry time.
    pub expiry: DateTime<Utc>,
    /// Allowed protocols: `https` or `https,http`.
    pub protocol: &'a str,
}

impl AccountSas<'_> {
    /// The string-to-sign, field by field as the documentation lists them.
    pub fn string_to_sign(&self) -> String {
        let Self {
            account,
            permissions,
            resource_types,
            protocol,
            ..
        } = self;
        let start = self.start.map(fmt_time).unwrap_or_default();
        let expiry = fmt_time(self.expiry);
        // account, permissions, service, resource types, start, expiry, IP, protocol, version, encryption scope.
        format!(
            "{account}\n{permissions}\nq\n{resource_types}\n{start}\n{expiry}\n\n{protocol}\n{SAS_VERSION}\n\n"
        )
    }

    /// Signs with the decoded account key and returns the query string (without `?`).
    pub fn sign(&self, account_key: &[u8]) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(account_key).expect("HMAC takes keys of any length");
        mac.update(self.string_to_sign().as_bytes());
        let sig = BASE64.encode(mac.finalize().into_bytes());
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("sv", SAS_VERSION).append_pair("ss", "q");
        query
            .append_pair("srt", self.resource_types)
            .append_pair("sp", self.permissions);
        if let Some(start) = self.start {
            query.append_pair("st", &fmt_time(start));
        }
        query
            .append_pair("se", &fmt_time(self.expiry))
            .append_pair("spr", self.protocol);
        query.append_pair("sig", &sig);
        query.finish()
    }
}

fn fmt_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Replaces every `sig=` value in `text` (URLs in error messages) with `REDACTED`.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("sig=") {
        out.push_str(&rest[..pos + 4]);
        out.push_str("REDACTED");
        rest = &rest[pos + 4..];
        let end = rest
            .find(|c: char| c == '&' || c == '"' || c == '\'' || c.is_whitespace())
            .unwrap_or(rest.len());
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn string_to_sign_matches_the_documented_layout() {
        // The exact string verified against Azurite 3.35 (reference: azure-sdk-and-azurite.md §4.3).
        let sas = AccountSas {
            account: "devstoreaccount1",
            permissions: "rwdlacup",
            resource_types: "sco",
            start: None,
            expiry: Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap(),
            protocol: "https,http",
        };
        assert_eq!(
            sas.string_to_sign(),
            "devstoreaccount1\nrwdlacup\nq\nsco\n\n2030-01-01T00:00:00Z\n\nhttps,http\n2022-11-02\n\n"
        );
        let query = sas.sign(b"key");
        assert!(
            query.starts_with("sv=2022-11-02&ss=q&srt=sco&sp=rwdlacup&se=2030-01-01T00%3A00%3A00Z")
        );
        assert!(query.contains("&sig="));
    }

    #[test]
    fn redact_hides_signatures() {
        assert_eq!(
            redact("GET http://h/q?sv=1&sig=abc%2Bdef&se=2 failed; sig=zzz"),
            "GET http://h/q?sv=1&sig=REDACTED&se=2 failed; sig=REDACTED"
        );
    }
}
