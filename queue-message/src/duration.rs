//! ISO-8601 durations (`P1D`, `PT12H`, `P1DT6H30M`, `P2W`) as used by `ttl`, `PortcullisBlockFor` and the
//! handler's TTL settings.
//!
//! Written by hand because the subset we need is tiny and the general crates either lack a conversion to an
//! exact length or give years and months a guessed length: we refuse `Y` and `M` (months) outright, since a
//! block's length must be exact.

use chrono::Duration;

/// Why a duration text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not an ISO-8601 duration in weeks, days, hours, minutes and seconds (e.g. P1D, PT12H): {why}")]
pub struct DurationError {
    text: String,
    why: &'static str,
}

/// Parses an ISO-8601 duration made of weeks, days, hours, minutes and (fractional) seconds.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let err = |why| DurationError {
        text: text.to_owned(),
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
    for c in rest.chars() {
        match c.to_ascii_uppercase() {
            'T' if !in_time && number.is_empty() => in_time = true,
            '0'..='9' | '.' | ',' => number.push(if c == ',' { '.' } else { c }),
            unit => {
                let value: f64 = number.parse().map_err(|_| err("missing or bad number"))?;
                number.clear();
                let ms_per_unit: f64 = match (unit, in_time) {
                    ('W', false) => 7.0 * 86_400_000.0,
                    ('D', false) => 86_400_000.0,
                    ('H', true) => 3_600_000.0,
                    ('M', true) => 60_000.0,
                    ('S', true) => 1000.0,
                    ('Y' | 'M', false) => return Err(err("years and months have no exact length")),
                    _ => return Err(err("unknown unit")),
                };
                let ms = value * ms_per_unit;
                if !ms.is_finite() || ms > 1.0e15 {
                    return Err(err("too long"));
                }
                total_ms += ms.round() as i64;
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
}
