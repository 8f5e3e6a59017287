//! Durations as people write them in the configuration and on the command line: `90s`, `5m`, `12h`, `7d`,
//! `2w`, `1h30m`, or ISO-8601 (`PT5M`, `P7D`) as the handler and the queue message use.
//!
//! Kept separate from `config` because the CLI (`block --for`), the backends' sub-tables and the main
//! configuration all parse the same spelling.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A non-negative length of time, parsed from `5m`, `1h30m`, `PT5M` or a bare number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Span(pub Duration);

/// Why a duration text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a duration of at most 100 years (examples: 90s, 5m, 12h, 7d, 1h30m, PT5M, P7D)"
)]
pub struct SpanError(String);

/// The longest span accepted: the handler's limit for ISO-8601 durations
/// ([`queue_message::duration::MAX_DURATION_DAYS`], 100 years). A span is added to the current time
/// (`block --for`) or subtracted from it (`--since`), and `chrono` panics when that leaves its range, so
/// an absurd length is refused here, where it is typed (issue 9 item 8: `--for 99999999999999`
/// panicked).
pub const MAX_SPAN: Duration =
    Duration::from_secs(queue_message::duration::MAX_DURATION_DAYS.unsigned_abs() * 86_400);

impl Span {
    /// Seconds.
    pub const fn secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    /// Milliseconds.
    pub const fn millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }

    /// The wrapped duration.
    pub fn get(self) -> Duration {
        self.0
    }

    /// Parses `90s`, `5m`, `1h30m`, `7d`, `2w`, `250ms`, a bare number of seconds, or ISO-8601 (`PT5M`);
    /// at most [`MAX_SPAN`].
    pub fn parse(text: &str) -> Result<Self, SpanError> {
        let span = Self::parse_unbounded(text)?;
        if span.0 > MAX_SPAN {
            return Err(SpanError(text.to_owned()));
        }
        Ok(span)
    }

    fn parse_unbounded(text: &str) -> Result<Self, SpanError> {
        let err = || SpanError(text.to_owned());
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(err());
        }
        if trimmed.starts_with(['P', 'p']) {
            let parsed = queue_message::parse_duration(trimmed).map_err(|_| err())?;
            return parsed.to_std().map(Self).map_err(|_| err());
        }
        if let Ok(secs) = trimmed.parse::<u64>() {
            return Ok(Self::secs(secs));
        }
        let mut total = Duration::ZERO;
        let mut rest = trimmed;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit() && c != '.')
                .ok_or_else(err)?;
            if digits == 0 {
                return Err(err());
            }
            let value: f64 = rest[..digits].parse().map_err(|_| err())?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let secs_per_unit = match unit {
                "ms" => 0.001,
                "s" | "sec" | "secs" => 1.0,
                "m" | "min" | "mins" => 60.0,
                "h" | "hour" | "hours" => 3600.0,
                "d" | "day" | "days" => 86_400.0,
                "w" | "week" | "weeks" => 604_800.0,
                _ => return Err(err()),
            };
            let secs = value * secs_per_unit;
            if !secs.is_finite() || !(0.0..1.0e11).contains(&secs) {
                return Err(err());
            }
            total = total
                .checked_add(Duration::from_secs_f64(secs))
                .ok_or_else(err)?;
        }
        Ok(Self(total))
    }
}

impl FromStr for Span {
    type Err = SpanError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Span {
    /// Compact human form: `1h30m`, `45s`, `250ms`, `0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total_ms = self.0.as_millis();
        if total_ms == 0 {
            return f.write_str("0s");
        }
        if !total_ms.is_multiple_of(1000) && total_ms < 60_000 {
            return write!(f, "{total_ms}ms");
        }
        let mut secs = self.0.as_secs();
        for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
            if secs >= len {
                write!(f, "{}{unit}", secs / len)?;
                secs %= len;
            }
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Secs(secs) if Duration::from_secs(secs) <= MAX_SPAN => Ok(Self::secs(secs)),
            Raw::Secs(secs) => Err(serde::de::Error::custom(SpanError(secs.to_string()))),
            Raw::Text(text) => Self::parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_spellings() {
        assert_eq!(Span::parse("90s").unwrap(), Span::secs(90));
        assert_eq!(Span::parse("5m").unwrap(), Span::secs(300));
        assert_eq!(Span::parse("1h30m").unwrap(), Span::secs(5400));
        assert_eq!(Span::parse("7d").unwrap(), Span::secs(7 * 86_400));
        assert_eq!(Span::parse("2w").unwrap(), Span::secs(14 * 86_400));
        assert_eq!(Span::parse("250ms").unwrap(), Span::millis(250));
        assert_eq!(Span::parse("1.5s").unwrap(), Span::millis(1500));
        assert_eq!(Span::parse("42").unwrap(), Span::secs(42));
        assert_eq!(Span::parse("PT5M").unwrap(), Span::secs(300));
        assert_eq!(Span::parse("P1D").unwrap(), Span::secs(86_400));
    }

    /// Issue 9 item 8: `block --for 99999999999999` panicked adding the span to the current time.
    #[test]
    fn spans_longer_than_100_years_are_refused() {
        for huge in [
            "99999999999999",
            "18446744073709551615",
            "99999999999d",
            "36526d",
            "P36526D",
            "5000000w",
            "99999999999s99999999999s",
        ] {
            assert!(Span::parse(huge).is_err(), "{huge}");
        }
        assert_eq!(Span::parse("36525d").unwrap().get(), MAX_SPAN);
        let now = chrono::Utc::now();
        let max = chrono::Duration::from_std(MAX_SPAN).unwrap();
        assert!(now.checked_add_signed(max).is_some() && now.checked_sub_signed(max).is_some());
        #[derive(Deserialize, Debug)]
        struct T {
            #[allow(dead_code)]
            a: Span,
        }
        assert!(toml::from_str::<T>("a = 99999999999999").is_err());
    }

    #[test]
    fn refuses_nonsense() {
        for bad in ["", "m", "5x", "-5s", "5 m", "P1Y", "s5", "1e400s"] {
            assert!(Span::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn displays_compactly_and_round_trips() {
        for (span, text) in [
            (Span::secs(5400), "1h30m"),
            (Span::secs(45), "45s"),
            (Span::millis(250), "250ms"),
            (Span::secs(0), "0s"),
            (Span::secs(86_400 + 1), "1d1s"),
        ] {
            assert_eq!(span.to_string(), text);
            assert_eq!(Span::parse(text).unwrap(), span);
        }
    }

    #[test]
    fn deserialises_from_text_or_seconds() {
        #[derive(Deserialize)]
        struct T {
            a: Span,
            b: Span,
        }
        let t: T = toml::from_str("a = \"5m\"\nb = 7").unwrap();
        assert_eq!((t.a, t.b), (Span::secs(300), Span::secs(7)));
        assert!(toml::from_str::<T>("a = \"5q\"\nb = 1").is_err());
    }
}
