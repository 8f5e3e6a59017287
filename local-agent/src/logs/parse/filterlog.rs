//! pfSense / OPNsense `filterlog` CSV (FORMATS.md §3): field positions for IPv4 and IPv6, and the
//! ports of TCP and UDP.

use std::net::IpAddr;

use super::{Fields, Unparsable};
use crate::logs::event::{Action, Format};

/// Parses the CSV MSG of a `filterlog` line.
pub(crate) fn parse(msg: &str) -> Result<Fields, Unparsable> {
    let f: Vec<&str> = msg.trim().split(',').collect();
    let get = |i: usize| f.get(i).copied().ok_or(Unparsable);
    let (proto_name, src, dst, data) = match get(8)? {
        "4" => (get(16)?, get(18)?, get(19)?, 20),
        "6" => (get(12)?, get(15)?, get(16)?, 17),
        _ => return Err(Unparsable),
    };
    let src: IpAddr = src.parse().map_err(|_| Unparsable)?;
    let dst: IpAddr = dst.parse().map_err(|_| Unparsable)?;
    let protocol = match proto_name.to_ascii_lowercase().as_str() {
        "ipv6-icmp" | "icmp6" => "icmpv6".to_owned(),
        "" => return Err(Unparsable),
        other => other.to_owned(),
    };
    let (src_port, dst_port) = if protocol == "tcp" || protocol == "udp" {
        let port = |i: usize| -> Result<Option<u16>, Unparsable> {
            get(i)?.parse().map(Some).map_err(|_| Unparsable)
        };
        (port(data)?, port(data + 1)?)
    } else {
        (None, None)
    };
    let action = match get(6)? {
        "pass" => Some(Action::Accept),
        "block" => Some(Action::Drop),
        "reject" => Some(Action::Reject),
        _ => None,
    };
    // The tracker (pfSense) or label (OPNsense) names the rule stably across reordering; `0` or empty
    // means unknown, then the rule number is all there is.
    let tracker = get(3)?;
    let rule = if tracker.is_empty() || tracker == "0" {
        get(0)?
    } else {
        tracker
    };
    Ok(Fields {
        format: Format::Filterlog,
        action,
        rule: rule.to_owned(),
        interface: get(4)?.to_owned(),
        protocol,
        src,
        src_port,
        dst: Some(dst),
        dst_port,
        time: None,
        device: None,
    })
}
