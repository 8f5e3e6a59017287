//! Netfilter `LOG` lines (`PREFIX IN= OUT= … SRC= DST= PROTO= SPT= DPT=`, FORMATS.md §1 and §5): the
//! key=value fields, and the prefix that tells a UniFi gateway rule (`[WAN_IN-…-D]`, `[LAN_IN-D-4001]`,
//! zone pairs, `ALIEN BLOCK:`) from a plain Linux one (`iptables DROP_INPUT:`, `[UFW BLOCK]`).

use std::net::IpAddr;

use super::{Fields, Unparsable};
use crate::logs::event::{Action, Format};

/// Where the kernel fields start: an `IN=` whose value is followed by ` OUT=`. The prefix is glued to
/// `IN=` with no separator (`[WAN_LOCAL-default-D]IN=eth0`), so any preceding byte is allowed.
pub(crate) fn find_in(body: &str) -> Option<usize> {
    body.match_indices("IN=").map(|(i, _)| i).find(|&i| {
        let after = &body[i + 3..];
        let value_end = after.find(' ').unwrap_or(after.len());
        after[value_end..].starts_with(" OUT=")
    })
}

/// True when a line without `IN= OUT=` still carries netfilter fields (a truncated line).
pub(crate) fn looks_like(body: &str) -> bool {
    body.contains("PROTO=") && (body.contains("SPT=") || body.contains("SRC="))
}

/// Parses the body (text from the syslog tag on).
pub(crate) fn parse(body: &str) -> Result<Fields, Unparsable> {
    let start = find_in(body).ok_or(Unparsable)?;
    let (format, action, rule) = classify(strip_prefix_noise(&body[..start]));
    let mut fields = Kernel::default();
    for token in body[start..].split_ascii_whitespace() {
        // `TYPE=3 CODE=3 [SRC=… DST=… PROTO=UDP SPT=…]`: the quoted original header of an ICMP error.
        if token.starts_with('[') {
            break;
        }
        if let Some((key, value)) = token.split_once('=') {
            fields.set(key, value);
        }
    }
    let src: IpAddr = fields
        .src
        .ok_or(Unparsable)?
        .parse()
        .map_err(|_| Unparsable)?;
    let dst: IpAddr = fields
        .dst
        .ok_or(Unparsable)?
        .parse()
        .map_err(|_| Unparsable)?;
    let proto = fields.proto.filter(|p| !p.is_empty()).ok_or(Unparsable)?;
    let port = |p: Option<&str>| -> Result<Option<u16>, Unparsable> {
        p.map(|p| p.parse().map_err(|_| Unparsable)).transpose()
    };
    let interface = match fields.input {
        Some(i) if !i.is_empty() => i,
        _ => fields.output.unwrap_or(""),
    };
    Ok(Fields {
        format,
        action,
        rule,
        interface: interface.to_owned(),
        protocol: proto.to_ascii_lowercase(),
        src,
        src_port: port(fields.spt)?,
        dst: Some(dst),
        dst_port: port(fields.dpt)?,
        time: None,
        device: None,
    })
}

/// The first value of each field we use (`LEN` and `ID` repeat; ours do not, but first wins anyway).
#[derive(Default)]
struct Kernel<'a> {
    input: Option<&'a str>,
    output: Option<&'a str>,
    src: Option<&'a str>,
    dst: Option<&'a str>,
    proto: Option<&'a str>,
    spt: Option<&'a str>,
    dpt: Option<&'a str>,
}

impl<'a> Kernel<'a> {
    fn set(&mut self, key: &str, value: &'a str) {
        let slot = match key {
            "IN" => &mut self.input,
            "OUT" => &mut self.output,
            "SRC" => &mut self.src,
            "DST" => &mut self.dst,
            "PROTO" => &mut self.proto,
            "SPT" => &mut self.spt,
            "DPT" => &mut self.dpt,
            _ => return,
        };
        slot.get_or_insert(value);
    }
}

/// Removes what precedes the rule prefix: the `kernel:` tag and the printk uptime stamp
/// (`[16571.459614] `, `[  307.757925] `).
fn strip_prefix_noise(mut prefix: &str) -> &str {
    loop {
        let trimmed = prefix.trim_start();
        if let Some(rest) = trimmed.strip_prefix("kernel:") {
            prefix = rest;
            continue;
        }
        if let Some(inner) = trimmed.strip_prefix('[') {
            if let Some(close) = inner.find(']') {
                let stamp = &inner[..close];
                if !stamp.trim().is_empty()
                    && stamp
                        .bytes()
                        .all(|b| b.is_ascii_digit() || b == b'.' || b == b' ')
                {
                    prefix = &inner[close + 1..];
                    continue;
                }
            }
        }
        return trimmed.trim_end();
    }
}

/// Tells the UniFi prefixes from other ones and reads the verdict.
fn classify(prefix: &str) -> (Format, Option<Action>, String) {
    if let Some(inner) = prefix.strip_prefix('[') {
        if let Some(close) = inner.find(']') {
            let bracket = &inner[..close];
            if let Some(action) = unifi_bracket(bracket) {
                return (Format::Unifi, action, bracket.to_owned());
            }
        }
    }
    if let Some(rest) = prefix.strip_prefix("ALIEN BLOCK") {
        if rest.is_empty() || rest.starts_with(':') {
            return (Format::Unifi, Some(Action::Drop), "ALIEN BLOCK".to_owned());
        }
    }
    let rule = prefix.trim_end_matches(':').trim();
    (
        Format::Netfilter,
        Action::from_prefix(rule),
        rule.to_owned(),
    )
}

fn letter(word: &str) -> Option<Option<Action>> {
    match word {
        "A" | "RET" => Some(Some(Action::Accept)),
        "D" => Some(Some(Action::Drop)),
        "R" => Some(Some(Action::Reject)),
        _ => None,
    }
}

/// The verdict of a UniFi bracket prefix, `None` when the bracket is not a UniFi one. The inner `Option`
/// is `None` for NAT prefixes (`[DNAT-br46-udp]`, `[PREROUTING-DNAT-13]`), which carry no verdict.
fn unifi_bracket(bracket: &str) -> Option<Option<Action>> {
    let parts: Vec<&str> = bracket.split('-').collect();
    if parts.len() < 3 || parts.iter().any(|p| p.is_empty() || p.contains(' ')) {
        return None;
    }
    let last = parts[parts.len() - 1];
    let before = parts[parts.len() - 2];
    // Community `ipt-enable-logs` mod: `FW-<A|D|R>-<chain>_U-<rule>`.
    if parts[0] == "FW" {
        return letter(parts[1]);
    }
    if parts[0] == "DNAT" || parts[0] == "SNAT" {
        return Some(None);
    }
    // USG / EdgeOS: `<RULESET>-<RULE>-<A|D|R>`, RULE a number or `default`.
    if let Some(action) = letter(last) {
        if before == "default" || before.bytes().all(|b| b.is_ascii_digit()) {
            return Some(action);
        }
    }
    // UniFi OS and zone-based: `<RULESET>-<ACTION>-<INDEX>`.
    if last.bytes().all(|b| b.is_ascii_digit()) {
        if let Some(action) = letter(before) {
            return Some(action);
        }
        if before == "DNAT" || before == "SNAT" {
            return Some(None);
        }
    }
    None
}
