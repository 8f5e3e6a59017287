//! UniFi CEF events (FORMATS.md §2): the pipe-separated header (with the six-field UniFi OS variant),
//! the extension whose values contain spaces, and which events are firewall events at all (IPS blocks
//! and anything with an `act`), as opposed to Wi-Fi and admin activity on the same stream.

use std::borrow::Cow;
use std::net::IpAddr;

use chrono::{DateTime, Utc};

use super::{Fields, Unparsable};
use crate::logs::envelope::rfc3339;
use crate::logs::event::{Action, Format};

/// Where the CEF text starts in a line: after `CEF:` (a space may follow, when a relay split the tag),
/// or at the start of MSG when a relay stored it as `0|Ubiquiti|…`.
pub(crate) fn locate<'a>(line: &'a str, msg: &'a str) -> Option<&'a str> {
    if let Some(i) = line.find("CEF:") {
        return Some(line[i + 4..].trim_start());
    }
    let msg = msg.trim_start();
    let digits = msg.bytes().take_while(u8::is_ascii_digit).count();
    (digits > 0 && msg[digits..].starts_with('|')).then_some(msg)
}

/// Splits at unescaped `|`, at most `max` pieces (the last keeps the rest).
fn header_fields(text: &str, max: usize) -> Vec<&str> {
    let mut out = Vec::with_capacity(max);
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if out.len() + 1 == max {
            break;
        }
        match c {
            '\\' if !escaped => escaped = true,
            '|' if !escaped => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => escaped = false,
        }
    }
    out.push(&text[start..]);
    out
}

/// The extension's `key=value` pairs. A value runs to the next ` key=` (key = `[A-Za-z0-9_]+`, `=` not
/// escaped), since values contain spaces.
fn extension(text: &str) -> Vec<(&str, &str)> {
    let bytes = text.as_bytes();
    let mut keys: Vec<(usize, usize)> = Vec::new(); // (key start, index of '=')
    for (i, &b) in bytes.iter().enumerate() {
        if b != b'=' || (i > 0 && bytes[i - 1] == b'\\') {
            continue;
        }
        let mut k = i;
        while k > 0 && (bytes[k - 1].is_ascii_alphanumeric() || bytes[k - 1] == b'_') {
            k -= 1;
        }
        if k < i && (k == 0 || bytes[k - 1] == b' ') && keys.last().is_none_or(|&(_, eq)| k > eq) {
            keys.push((k, i));
        }
    }
    let mut out = Vec::with_capacity(keys.len());
    for (n, &(k, eq)) in keys.iter().enumerate() {
        let end = keys.get(n + 1).map_or(text.len(), |&(next, _)| next);
        out.push((&text[k..eq], text[eq + 1..end].trim_end()));
    }
    out
}

/// Undoes the CEF extension escapes (`\=`, `\\`, `\n`, `\r`).
fn unescape(value: &str) -> Cow<'_, str> {
    if !value.contains('\\') {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Parses CEF text (from the version on). `Ok(None)`: a CEF event that is not a firewall event.
pub(crate) fn parse(cef: &str) -> Result<Option<Fields>, Unparsable> {
    let h = header_fields(cef, 8);
    let (class_id, name, ext) = match h.len() {
        8 => (h[4], h[5], h[7]),
        // UniFi OS events with no Name: the 6th field is the severity, the 7th the extension.
        7 => (h[4], "", h[6]),
        _ => return Err(Unparsable),
    };
    let pairs = extension(ext);
    let get = |key: &str| {
        pairs
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| unescape(v))
    };
    let act = get("act");
    let blocked_name = name.contains("Blocked");
    if class_id != "201" && !blocked_name && act.is_none() {
        return Ok(None);
    }
    let src: IpAddr = get("src")
        .ok_or(Unparsable)?
        .trim()
        .parse()
        .map_err(|_| Unparsable)?;
    let dst: Option<IpAddr> = match get("dst") {
        Some(d) => Some(d.trim().parse().map_err(|_| Unparsable)?),
        None => None,
    };
    let port = |key: &str| -> Result<Option<u16>, Unparsable> {
        get(key)
            .map(|p| p.trim().parse().map_err(|_| Unparsable))
            .transpose()
    };
    let action = match act.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("blocked" | "block" | "drop" | "dropped" | "denied" | "deny") => Some(Action::Drop),
        Some("rejected" | "reject") => Some(Action::Reject),
        Some("allowed" | "allow" | "accept" | "accepted" | "pass") => Some(Action::Accept),
        _ if blocked_name => Some(Action::Drop),
        _ => None,
    };
    let rule = get("UNIFIipsSignature")
        .or_else(|| get("UNIFIpolicyName"))
        .map_or_else(|| name.to_owned(), Cow::into_owned);
    let time: Option<DateTime<Utc>> = get("UNIFIutcTime").and_then(|t| rfc3339(&t));
    Ok(Some(Fields {
        format: Format::UnifiCef,
        action,
        rule,
        interface: get("deviceInboundInterface")
            .map(Cow::into_owned)
            .unwrap_or_default(),
        protocol: get("proto")
            .map(|p| p.to_ascii_lowercase())
            .unwrap_or_default(),
        src,
        src_port: port("spt")?,
        dst,
        dst_port: port("dpt")?,
        time,
        device: get("UNIFIhost").map(Cow::into_owned),
    }))
}
