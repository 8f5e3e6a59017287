//! Firewall line parsing: the syslog envelope first, then the format auto-detected per line (UniFi CEF,
//! pfSense/OPNsense `filterlog`, netfilter with UniFi or plain Linux prefixes, MikroTik). Each line ends
//! as an [`Event`], as not a firewall event, or as a firewall-looking line that did not parse (counted
//! by format). No input panics: the property tests and the fuzz targets call [`parse_line`].

mod cef;
mod filterlog;
mod mikrotik;
mod netfilter;
#[cfg(test)]
mod tests;

use std::net::IpAddr;

use chrono::{DateTime, Utc};

use super::envelope::{self, Zone};
use super::event::{Action, Event, Format};

/// What a format parser could not make sense of (the reason is not kept: only counts are reported).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unparsable;

/// The fields a format parser extracts; time and device come from the envelope unless set here.
#[derive(Debug)]
pub(crate) struct Fields {
    format: Format,
    action: Option<Action>,
    rule: String,
    interface: String,
    protocol: String,
    src: IpAddr,
    src_port: Option<u16>,
    dst: Option<IpAddr>,
    dst_port: Option<u16>,
    time: Option<DateTime<Utc>>,
    device: Option<String>,
}

/// What surrounds a line: when and from whom it arrived, and the zone for RFC 3164 times.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    /// Receive time.
    pub received: DateTime<Utc>,
    /// The zone RFC 3164 timestamps are read in.
    pub zone: Zone,
    /// The sender's address (the device name when the line has no HOSTNAME).
    pub sender: Option<IpAddr>,
}

/// The result of parsing one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A firewall event.
    Event(Event),
    /// Not a firewall event (another daemon on the same stream, Wi-Fi or admin CEF events).
    NotFirewall,
    /// Looks like this format but did not parse.
    Unparsed(Format),
}

/// One parsed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The verdict on the line.
    pub outcome: Outcome,
    /// The line's own time was too far from the receive time, so the receive time was used.
    pub time_fell_back: bool,
}

/// Parses one line with the default context (receive time now, UTC for RFC 3164, no sender): the entry
/// point for fuzz targets.
pub fn parse_line(line: &str) -> Outcome {
    let context = Context {
        received: Utc::now(),
        zone: Zone::Named(chrono_tz::UTC),
        sender: None,
    };
    parse(line, &context).outcome
}

/// Parses one line.
pub fn parse(line: &str, context: &Context) -> Parsed {
    let env = envelope::parse(line, context.zone, context.received);
    let detected = detect(line, &env);
    let fields = match detected {
        Detected::Fields(f) => f,
        Detected::NotFirewall => {
            return Parsed {
                outcome: Outcome::NotFirewall,
                time_fell_back: false,
            };
        }
        Detected::Unparsed(format) => {
            return Parsed {
                outcome: Outcome::Unparsed(format),
                time_fell_back: false,
            };
        }
    };
    let (time, time_fell_back) = envelope::event_time(fields.time.or(env.time), context.received);
    let device = env
        .host
        .map(str::to_owned)
        .or(fields.device)
        .or_else(|| context.sender.map(|s| s.to_string()))
        .unwrap_or_default();
    Parsed {
        outcome: Outcome::Event(Event {
            time,
            device,
            format: fields.format,
            action: fields.action,
            rule: fields.rule,
            interface: fields.interface,
            protocol: fields.protocol,
            src: fields.src,
            src_port: fields.src_port,
            dst: fields.dst,
            dst_port: fields.dst_port,
        }),
        time_fell_back,
    }
}

enum Detected {
    Fields(Fields),
    NotFirewall,
    Unparsed(Format),
}

fn detect(line: &str, env: &envelope::Envelope<'_>) -> Detected {
    let or_unparsed = |r: Result<Fields, Unparsable>, format| match r {
        Ok(f) => Detected::Fields(f),
        Err(Unparsable) => Detected::Unparsed(format),
    };
    if let Some(cef_text) = cef::locate(line, env.msg) {
        return match cef::parse(cef_text) {
            Ok(Some(f)) => Detected::Fields(f),
            Ok(None) => Detected::NotFirewall,
            Err(Unparsable) => Detected::Unparsed(Format::UnifiCef),
        };
    }
    if env.tag == Some("filterlog") {
        return or_unparsed(filterlog::parse(env.msg), Format::Filterlog);
    }
    if netfilter::find_in(env.body).is_some() {
        let format = if env.body.contains("[") {
            Format::Unifi
        } else {
            Format::Netfilter
        };
        return or_unparsed(netfilter::parse(env.body), format);
    }
    if netfilter::looks_like(env.body) {
        return Detected::Unparsed(Format::Netfilter);
    }
    if mikrotik::looks_like(env.body) {
        return or_unparsed(mikrotik::parse(env.body), Format::Mikrotik);
    }
    if env
        .tag
        .is_some_and(|t| t.split(',').any(|topic| topic == "firewall"))
    {
        return Detected::Unparsed(Format::Mikrotik);
    }
    Detected::NotFirewall
}
