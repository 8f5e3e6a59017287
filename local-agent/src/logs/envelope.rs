//! The syslog envelope (RFC 3164, RFC 5424 and the relay/file variants of FORMATS.md §0), parsed with
//! `syslog_loose`, plus the repairs the real samples need: the year and zone RFC 3164 lacks, a tag the
//! parser took for a hostname, and where the firewall text starts.

use chrono::{DateTime, Datelike, Duration, FixedOffset, Local, Offset, Utc};
use syslog_loose::{IncompleteDate, Variant};

/// Which zone an RFC 3164 timestamp (no zone on the wire) is read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    /// The agent's local zone (the default: senders on the same LAN normally share it).
    Local,
    /// A named IANA zone (`timezone = "Europe/Berlin"`).
    Named(chrono_tz::Tz),
}

/// How far an event time may lie from the receive time before the receive time is used instead. A
/// sender clock or zone that is off, or an RFC 3164 year guessed wrong, shows up here.
pub const MAX_PAST: Duration = Duration::hours(24);
/// See [`MAX_PAST`]: events are never accepted from more than this far in the future.
pub const MAX_FUTURE: Duration = Duration::minutes(10);

/// What the envelope tells, with borrowed text.
#[derive(Debug, Clone)]
pub struct Envelope<'a> {
    /// The event time as the header states it, in UTC; `None` when the line had no timestamp.
    pub time: Option<DateTime<Utc>>,
    /// The HOSTNAME field, when there was one.
    pub host: Option<&'a str>,
    /// The TAG / APP-NAME (`kernel`, `filterlog`, `firewall,info`), when there was one.
    pub tag: Option<&'a str>,
    /// The text from the tag on (the tag included), where prefixes such as `[LAN_IN-D-4001]` or
    /// `kernel: iptables DROP:` live; the whole line when there was no header.
    pub body: &'a str,
    /// The MSG part after the tag (and after RFC 5424 structured data).
    pub msg: &'a str,
}

/// Where `inner` (a slice of `outer`) starts inside `outer`.
fn offset(outer: &str, inner: &str) -> Option<usize> {
    let start = (inner.as_ptr() as usize).checked_sub(outer.as_ptr() as usize)?;
    (start + inner.len() <= outer.len()).then_some(start)
}

/// The year an RFC 3164 `Mmm dd` belongs to: the one that puts it nearest to `now` (a December line
/// received on the first of January belongs to last year).
fn year_for(month: u32, now_year: i32, now_month: u32) -> i32 {
    let diff = i64::from(month) - i64::from(now_month);
    if diff > 6 {
        now_year - 1
    } else if diff < -6 {
        now_year + 1
    } else {
        now_year
    }
}

/// Which header the line has: RFC 5424 starts with `<PRI>1 ` or, PRI dropped by a collector, `1 ` and a
/// date. Telling them apart here spares `syslog_loose` a failed RFC 5424 attempt on every RFC 3164 line.
fn variant(line: &str) -> Variant {
    let b = line.as_bytes();
    let mut i = 0;
    if b.first() == Some(&b'<') {
        i = 1;
        while i < b.len() && i <= 4 && b[i].is_ascii_digit() {
            i += 1;
        }
        if b.get(i) != Some(&b'>') {
            return Variant::Either;
        }
        i += 1;
    }
    if b.get(i) == Some(&b'1')
        && b.get(i + 1) == Some(&b' ')
        && b.get(i + 2).is_some_and(u8::is_ascii_digit)
    {
        Variant::RFC5424
    } else {
        Variant::RFC3164
    }
}

/// Parses the envelope of one line. `now` is the receive time.
pub fn parse(line: &str, zone: Zone, now: DateTime<Utc>) -> Envelope<'_> {
    let variant = variant(line);
    let message = match zone {
        Zone::Local => {
            let local = now.with_timezone(&Local);
            let (y, m) = (local.year(), local.month());
            syslog_loose::parse_message_with_year_tz(
                line,
                move |(month, ..): IncompleteDate| year_for(month, y, m),
                Some(Local),
                variant,
            )
        }
        Zone::Named(tz) => {
            let there = now.with_timezone(&tz);
            let (y, m) = (there.year(), there.month());
            // `syslog_loose` wants an offset type; the zone's offset at the receive time is the one a
            // live sender uses (a line logged across a DST switch minutes ago is off by that hour at most).
            let fixed: FixedOffset = there.offset().fix();
            syslog_loose::parse_message_with_year_tz(
                line,
                move |(month, ..): IncompleteDate| year_for(month, y, m),
                Some(fixed),
                variant,
            )
        }
    };
    let mut host = message.hostname;
    let mut tag = message.appname;
    let mut msg = message.msg;
    // `Jan 22 18:34:00 filterlog: 65,…` and `Jan  8 03:37:09 DENY: IN=…`: no HOSTNAME, and the parser
    // took the tag for one. A hostname never ends with `:`.
    if tag.is_none() {
        if let Some(h) = host {
            if let Some(end) = offset(line, h).map(|o| o + h.len()) {
                if line[end..].starts_with(':') {
                    tag = Some(h);
                    host = None;
                }
            }
        }
    }
    // `UDM-Pro user.warn kernel: …` (facility.severity words inserted by the device's own syslog) and
    // `UDMP-DTC UDMP-DTC sshd[1]: …` (hostname repeated): the real tag is the first word of MSG.
    if let Some(t) = tag {
        let facility_word = t.split_once('.').is_some_and(|(a, b)| {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_lowercase())
                && b.bytes().all(|c| c.is_ascii_lowercase())
        });
        if facility_word || Some(t) == host {
            if let Some((word, rest)) = msg.split_once(": ") {
                if !word.is_empty() && !word.contains(' ') {
                    let name = word.split('[').next().unwrap_or(word);
                    tag = Some(name);
                    msg = rest;
                }
            }
        }
    }
    let body_start = tag
        .and_then(|t| offset(line, t))
        .or_else(|| offset(line, msg))
        .unwrap_or(0);
    let body = line.get(body_start..).unwrap_or(line);
    Envelope {
        time: message.timestamp.map(|t| t.with_timezone(&Utc)),
        host: host.filter(|h| !h.is_empty() && *h != "-"),
        tag: tag.filter(|t| !t.is_empty() && *t != "-"),
        body,
        msg,
    }
}

/// The time to record for an event: `stated` unless it is missing or too far from `received`.
/// Returns the time and whether it fell back.
pub fn event_time(stated: Option<DateTime<Utc>>, received: DateTime<Utc>) -> (DateTime<Utc>, bool) {
    match stated {
        Some(t) if t >= received - MAX_PAST && t <= received + MAX_FUTURE => (t, false),
        Some(_) => (received, true),
        None => (received, false),
    }
}

/// Parses an RFC 3339 time (`UNIFIutcTime=2025-09-04T08:32:58.445Z`).
pub fn rfc3339(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, 0, 0).unwrap()
    }

    #[test]
    fn rfc3164_year_rolls_back_over_new_year() {
        let berlin = Zone::Named(chrono_tz::Europe::Berlin);
        let e = parse(
            "<13>Dec 31 23:59:30 fw kernel: x",
            berlin,
            at(2027, 1, 1, 0),
        );
        // 23:59:30 Berlin (UTC+1 in winter) is 22:59:30 UTC on 31 Dec 2026.
        assert_eq!(
            e.time,
            Some(Utc.with_ymd_and_hms(2026, 12, 31, 22, 59, 30).unwrap())
        );
        assert_eq!(e.host, Some("fw"));
        assert_eq!(e.tag, Some("kernel"));
        assert_eq!(e.msg, "x");
    }

    #[test]
    fn named_zone_overrides_local() {
        let ny = Zone::Named(chrono_tz::America::New_York);
        let e = parse("Jul  3 19:10:30 fw kernel: x", ny, at(2026, 7, 4, 0));
        // EDT is UTC-4.
        assert_eq!(
            e.time,
            Some(Utc.with_ymd_and_hms(2026, 7, 3, 23, 10, 30).unwrap())
        );
    }

    #[test]
    fn rfc5424_keeps_its_own_offset() {
        let e = parse(
            "<134>1 2022-06-09T14:44:11-06:00 OPNsense.example.com filterlog 76404 - [meta sequenceId=\"1\"] 124,,,x",
            Zone::Named(chrono_tz::Asia::Tokyo),
            at(2026, 1, 1, 0),
        );
        assert_eq!(
            e.time,
            Some(Utc.with_ymd_and_hms(2022, 6, 9, 20, 44, 11).unwrap())
        );
        assert_eq!(e.tag, Some("filterlog"));
        assert_eq!(e.msg, "124,,,x");
    }

    #[test]
    fn tag_without_hostname_is_a_tag() {
        let e = parse(
            "Jan 22 18:34:00 filterlog: 65,,,0",
            Zone::Local,
            at(2026, 1, 23, 0),
        );
        assert_eq!(e.host, None);
        assert_eq!(e.tag, Some("filterlog"));
        assert_eq!(e.body, "filterlog: 65,,,0");
    }

    #[test]
    fn facility_words_and_repeated_hostname_are_skipped() {
        let now = at(2026, 3, 3, 0);
        let e = parse(
            "Mar  2 23:24:28 UDM-Pro user.warn kernel: [1.2] IN=br46",
            Zone::Local,
            now,
        );
        assert_eq!(
            (e.host, e.tag, e.msg),
            (Some("UDM-Pro"), Some("kernel"), "[1.2] IN=br46")
        );
        let e = parse("Mar  2 23:24:28 UDMP UDMP sshd[4]: hello", Zone::Local, now);
        assert_eq!(
            (e.host, e.tag, e.msg),
            (Some("UDMP"), Some("sshd"), "hello")
        );
    }

    #[test]
    fn far_times_fall_back_to_receive_time() {
        let now = at(2026, 7, 1, 12);
        assert_eq!(
            event_time(Some(now - Duration::hours(1)), now),
            (now - Duration::hours(1), false)
        );
        assert_eq!(event_time(Some(now - Duration::days(2)), now), (now, true));
        assert_eq!(event_time(Some(now + Duration::hours(1)), now), (now, true));
        assert_eq!(event_time(None, now), (now, false));
    }
}
