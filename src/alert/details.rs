//! Custom details and extended properties that change a block's lifetime.
//!
//! Sentinel puts an analytics rule's custom details into the alert's `ExtendedProperties["Custom
//! Details"]`, as a JSON *string* of `{"Key": ["value", …]}`; the alert trigger gives `ExtendedProperties` as
//! an object, the `SecurityAlert` table as a string. Azure Monitor has `data.customProperties` and
//! `data.alertContext.properties`. We read, case-insensitively:
//! - `PortcullisBlockFor`: an ISO-8601 duration (`P2D`, `PT12H`);
//! - `PortcullisValidUntil` or `ValidUntil`: a timestamp (a threat-intelligence indicator's `ValidUntil`).
//!
//! Values may be plain strings or arrays of strings. With several values (an aggregated alert), the longest
//! duration and the latest timestamp win. Values that do not parse are ignored with a note in the response.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Utc};
use queue_message::parse_duration;
use serde_json::Value;

use super::clip;

/// Nesting we follow through JSON-in-strings and `Custom Details` bags.
const MAX_DEPTH: usize = 4;

/// Lifetime overrides found in a payload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Details {
    /// `PortcullisBlockFor`, the longest one found.
    pub block_for: Option<Duration>,
    /// `PortcullisValidUntil` / `ValidUntil`, the latest one found.
    pub valid_until: Option<DateTime<Utc>>,
    /// Values that were ignored, and why.
    pub notes: Vec<String>,
}

impl Details {
    /// Reads a property bag: an object, or a string holding one. Nested `Custom Details` bags are read too.
    pub(crate) fn scan_bag(&mut self, bag: &Value) {
        self.scan(bag, 0);
    }

    fn scan(&mut self, bag: &Value, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        match bag {
            Value::String(text) if text.trim_start().starts_with('{') => {
                if let Ok(parsed) = serde_json::from_str::<Value>(text) {
                    self.scan(&parsed, depth + 1);
                }
            }
            Value::Object(map) => {
                for (key, value) in map {
                    let key = key.to_ascii_lowercase();
                    match key.as_str() {
                        "portcullisblockfor" => {
                            for_each_text(value, &mut |t| self.consider_block_for(t))
                        }
                        "portcullisvaliduntil" | "validuntil" => {
                            for_each_text(value, &mut |t| self.consider_valid_until(t))
                        }
                        "custom details" | "customdetails" => self.scan(value, depth + 1),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }

    /// Takes a duration text (as `PortcullisBlockFor`).
    pub(crate) fn consider_block_for(&mut self, text: &str) {
        match parse_duration(text) {
            Ok(d) if d > Duration::zero() => {
                if self.block_for.is_none_or(|old| d > old) {
                    self.block_for = Some(d);
                }
            }
            Ok(_) => self.notes.push(format!(
                "PortcullisBlockFor `{}` is not positive; ignored",
                clip(text, 40)
            )),
            Err(err) => self.notes.push(format!(
                "PortcullisBlockFor ignored: {}",
                clip(&err.to_string(), 200)
            )),
        }
    }

    fn consider_valid_until(&mut self, text: &str) {
        match parse_timestamp(text) {
            Some(t) => {
                if self.valid_until.is_none_or(|old| t > old) {
                    self.valid_until = Some(t);
                }
            }
            None => self.notes.push(format!(
                "ValidUntil `{}` is not a timestamp; ignored",
                clip(text, 40)
            )),
        }
    }
}

fn for_each_text(value: &Value, f: &mut dyn FnMut(&str)) {
    match value {
        Value::String(text) if !text.trim().is_empty() => f(text.trim()),
        Value::Array(items) => {
            for item in items {
                if let Value::String(text) = item {
                    if !text.trim().is_empty() {
                        f(text.trim());
                    }
                }
            }
        }
        _ => {}
    }
}

/// RFC 3339 (`2026-12-01T00:00:00Z`, with any fraction or offset, as KQL renders datetimes); without an offset
/// (taken as UTC); or a bare date (midnight UTC).
pub(crate) fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(t.and_utc());
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f") {
        return Some(t.and_utc());
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    #[test]
    fn sentinel_custom_details_as_a_json_string_of_arrays() {
        let mut d = Details::default();
        d.scan_bag(&json!({
            "Alert Mode": "Aggregated",
            "Custom Details": "{\"PortcullisBlockFor\":[\"P2D\",\"PT12H\"],\"ValidUntil\":[\"2030-01-01T00:00:00.0000000Z\"]}"
        }));
        assert_eq!(d.block_for, Some(Duration::days(2)));
        assert_eq!(
            d.valid_until,
            Some(Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap())
        );
        assert!(d.notes.is_empty());
    }

    #[test]
    fn whole_bag_as_a_string_and_plain_values() {
        let mut d = Details::default();
        d.scan_bag(&Value::String(
            "{\r\n \"portcullisBlockFor\": \"PT6H\", \"PortcullisValidUntil\": \"2030-02-03\"}"
                .into(),
        ));
        assert_eq!(d.block_for, Some(Duration::hours(6)));
        assert_eq!(
            d.valid_until,
            Some(Utc.with_ymd_and_hms(2030, 2, 3, 0, 0, 0).unwrap())
        );
    }

    #[test]
    fn latest_and_longest_win_and_bad_values_are_noted() {
        let mut d = Details::default();
        d.scan_bag(&json!({
            "CustomDetails": {
                "PortcullisBlockFor": ["P1D", "bogus", "P3D", "PT0S"],
                "ValidUntil": ["2030-01-01T00:00:00Z", "2031-01-01T00:00:00+02:00", "tomorrow"]
            }
        }));
        assert_eq!(d.block_for, Some(Duration::days(3)));
        assert_eq!(
            d.valid_until,
            Some(Utc.with_ymd_and_hms(2030, 12, 31, 22, 0, 0).unwrap())
        );
        assert_eq!(d.notes.len(), 3, "{:?}", d.notes);
    }

    #[test]
    fn deep_or_odd_bags_are_harmless() {
        let mut d = Details::default();
        let mut v = json!({"PortcullisBlockFor": "P1D"});
        for _ in 0..10 {
            v = json!({ "Custom Details": v.to_string() });
        }
        d.scan_bag(&v);
        assert_eq!(d.block_for, None);
        d.scan_bag(&json!([1, 2]));
        d.scan_bag(&json!("not json"));
        assert!(d.notes.is_empty());
    }
}
