//! ISO-8601 durations (`P1D`, `PT12H`, `P1DT6H30M`, `P2W`) as used by `ttl`, `PortcullisBlockFor` and the
//! handler's TTL settings.
//!
//! Written by hand because the subset we need is tiny and the general crates either lack a conversion to an
//! exact length or give years and months a guessed length: we refuse `Y` and `M` (months) outright, since a
//! block's length must be exact. Each unit may appear once, in ISO order (`W`, `D`, then after `T`: `H`, `M`,
//! `S`), and the whole duration may not exceed [`MAX_DURATION_DAYS`]: payloads are untrusted, and a
//! duration that cannot be added to a date must be refused here rather than overflow a caller's arithmetic.

use chrono::Duration;

/// The longest duration accepted, in days (100 years of 365.25 days). Anything longer is refused, so
/// `now + duration` always fits in a `DateTime`.
pub const MAX_DURATION_DAYS: i64 = 36_525;

const MAX_MS: i64 = MAX_DURATION_DAYS * 86_400_000;

/// Longest excerpt of the refused text kept in a [`DurationError`]: the text may come from a payload.
const MAX_ECHO: usize = 40;

/// Why a duration text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not an ISO-8601 duration in weeks, days, hours, minutes and seconds (e.g. P1D, PT12H): {why}")]
pub struct DurationError {
    text: String,
    why: &'static str,
}

fn excerpt(text: &str) -> String {
    let mut chars = text.chars();
    let mut out: String = chars.by_ref().take(MAX_ECHO).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// Parses an ISO-8601 duration made of weeks, days, hours, minutes and (fractional) seconds, each unit at
/// most once and in ISO order, at most [`MAX_DURATION_DAYS`] long.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let err = |why| DurationError {
        text: excerpt(text),
        why,
    };
    let rest = text
        .trim()
        .strip_prefix(['P', 'p'])
        .ok_or_else(|| err("must start with P"))?;
    if rest.is_empty() {
        return Err(err("no components"));
    }
    let mut total_ms: i64 = 0;
    let mut in_time = false;
    let mut number = String::new();
    let mut seen_component = false;
    let mut time_components = 0;
    // Rank of the last unit seen (W 0, D 1, H 2, M 3, S 4): each later unit must rank higher.
    let mut last_rank: Option<u8> = None;
    for c in rest.chars() {
        match c.to_ascii_uppercase() {
            'T' if !in_time && number.is_empty() => in_time = true,
            '0'..='9' | '.' | ',' => {
                if number.len() >= 32 {
                    return Err(err("too long"));
                }
                number.push(if c == ',' { '.' } else { c });
            }
            unit => {
                let (rank, ms_per_unit): (u8, f64) = match (unit, in_time) {
                    ('W', false) => (0, 7.0 * 86_400_000.0),
                    ('D', false) => (1, 86_400_000.0),
                    ('H', true) => (2, 3_600_000.0),
                    ('M', true) => (3, 60_000.0),
                    ('S', true) => (4, 1000.0),
                    ('Y' | 'M', false) => return Err(err("years and months have no exact length")),
                    _ => return Err(err("unknown unit")),
                };
                if last_rank.is_some_and(|last| rank <= last) {
                    return Err(err("units repeated or out of order (W, D, then T H, M, S)"));
                }
                last_rank = Some(rank);
                let value: f64 = number.parse().map_err(|_| err("missing or bad number"))?;
                number.clear();
                let ms = value * ms_per_unit;
                // The f64 → i64 cast saturates; the bound check makes sure it is exact enough.
                if !ms.is_finite() || ms > MAX_MS as f64 {
                    return Err(err("longer than 100 years"));
                }
                total_ms = total_ms
                    .checked_add(ms.round() as i64)
                    .filter(|total| *total <= MAX_MS)
                    .ok_or_else(|| err("longer than 100 years"))?;
                seen_component = true;
                time_components += usize::from(in_time);
            }
        }
    }
    if !number.is_empty() || !seen_component {
        return Err(err("number without unit"));
    }
    if in_time && time_components == 0 {
        return Err(err("T without hours, minutes or seconds"));
    }
    Ok(Duration::milliseconds(total_ms))
}

/// Formats a duration as ISO-8601 (`P1DT2H`, `PT30S`, `PT0S`), whole seconds.
pub fn format_duration(duration: Duration) -> String {
    let mut secs = duration.num_seconds().max(0);
    let days = secs / 86_400;
    secs %= 86_400;
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut out = String::from("P");
    if days > 0 {
        out.push_str(&format!("{days}D"));
    }
    if h > 0 || m > 0 || s > 0 || days == 0 {
        out.push('T');
        if h > 0 {
            out.push_str(&format!("{h}H"));
        }
        if m > 0 {
            out.push_str(&format!("{m}M"));
        }
        if s > 0 || (h == 0 && m == 0) {
            out.push_str(&format!("{s}S"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        assert_eq!(parse_duration("P1D").unwrap(), Duration::days(1));
        assert_eq!(parse_duration("PT12H").unwrap(), Duration::hours(12));
        assert_eq!(
            parse_duration("P1DT6H30M").unwrap(),
            Duration::minutes(1830)
        );
        assert_eq!(parse_duration("P2W").unwrap(), Duration::days(14));
        assert_eq!(
            parse_duration("PT1.5S").unwrap(),
            Duration::milliseconds(1500)
        );
        assert_eq!(parse_duration("pt90m").unwrap(), Duration::minutes(90));
    }

    #[test]
    fn refuses_what_has_no_exact_length_or_no_meaning() {
        for bad in [
            "", "P", "PT", "1D", "P1Y", "P1M", "P1H", "PT1D", "PTS", "P1DT", "P1D2",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refuses_repeated_or_out_of_order_units() {
        // Repeated components used to be added up unchecked: `P` + `11574074D` ten times overflowed the
        // caller's date arithmetic (a panic in the handler).
        for bad in [
            "P1D1D", "P1DT1H1H", "PT1M1H", "P1D1W", "PT1S1M", "P1W1W", "PT1H2H3H",
        ] {
            let err = parse_duration(bad).unwrap_err().to_string();
            assert!(err.contains("out of order"), "{bad}: {err}");
        }
        assert!(parse_duration("P1W1DT1H1M1S").is_ok());
    }

    #[test]
    fn refuses_more_than_a_hundred_years_with_a_clear_error() {
        let long = format!("P{}", "11574074D".repeat(10));
        let err = parse_duration(&long).unwrap_err().to_string();
        assert!(err.contains("longer than 100 years"), "{err}");
        assert!(err.len() < 200, "the refused text is clipped: {err}");
        for bad in [
            "P36526D",
            "P5218W",
            "PT876601H",
            "P99999999999999999999D",
            "PT1e300S",
            "P36525DT1S",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        for bad in ["P36526D", "P99999999999999999999D", "P36525DT1S"] {
            let err = parse_duration(bad).unwrap_err().to_string();
            assert!(err.contains("longer than 100 years"), "{bad}: {err}");
        }
        assert_eq!(
            parse_duration("P36525D").unwrap(),
            Duration::days(MAX_DURATION_DAYS)
        );
    }

    #[test]
    fn formats_round_trip() {
        for d in [
            Duration::days(90),
            Duration::seconds(0),
            Duration::seconds(3725),
            Duration::hours(30),
        ] {
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
        assert_eq!(format_duration(Duration::days(1)), "P1D");
        assert_eq!(format_duration(Duration::seconds(90)), "PT1M30S");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2000, ..Default::default() })]

        #[test]
        fn never_panics_and_stays_in_range(text in "[PpTtWDHMSYwdhms0-9.,]{0,40}") {
            if let Ok(d) = parse_duration(&text) {
                proptest::prop_assert!(d >= Duration::zero());
                proptest::prop_assert!(d <= Duration::days(MAX_DURATION_DAYS));
            }
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,80}") {
            let _ = parse_duration(&text);
        }

        #[test]
        fn formats_round_trip_whole_seconds(secs in 0..=MAX_DURATION_DAYS * 86_400) {
            let d = Duration::seconds(secs);
            proptest::prop_assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }

        #[test]
        fn components_in_order_add_up(w in 0i64..100, d in 0i64..100, h in 0i64..100, m in 0i64..100, s in 0i64..100) {
            let text = format!("P{w}W{d}DT{h}H{m}M{s}S");
            let want = Duration::weeks(w) + Duration::days(d) + Duration::hours(h)
                + Duration::minutes(m) + Duration::seconds(s);
            proptest::prop_assert_eq!(parse_duration(&text).unwrap(), want);
        }
    }
}
