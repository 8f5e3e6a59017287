//! MikroTik RouterOS firewall log lines (FORMATS.md §4):
//! `TOPICS [LOG-PREFIX ]CHAIN: in:IF out:IF, …, proto P[ (FLAGS)], SRC[:PORT]->DST[:PORT], len N`.

use std::net::IpAddr;

use super::{Fields, Unparsable};
use crate::logs::event::{Action, Format};

/// True when the body has the `CHAIN: in:… out:…` shape.
pub(crate) fn looks_like(body: &str) -> bool {
    body.find(": in:")
        .is_some_and(|i| body[i..].contains(" out:"))
}

/// Parses the body (text from the syslog tag on).
pub(crate) fn parse(body: &str) -> Result<Fields, Unparsable> {
    let split = body.find(": in:").ok_or(Unparsable)?;
    let mut words: Vec<&str> = body[..split].split_whitespace().collect();
    // Topics (`firewall,info`) come first when the device or relay kept them in the line.
    if words
        .first()
        .is_some_and(|w| w.contains(',') || *w == "firewall")
    {
        words.remove(0);
    }
    let chain = words.pop().ok_or(Unparsable)?;
    let prefix = words.join(" ");
    let tail = &body[split + 2..];
    let interface = tail
        .strip_prefix("in:")
        .and_then(|t| t.split(" out:").next())
        .ok_or(Unparsable)?;
    let protocol = tail
        .find("proto ")
        .map(|i| {
            let p = &tail[i + 6..];
            let end = p.find([' ', ',']).unwrap_or(p.len());
            p[..end].to_ascii_lowercase()
        })
        .filter(|p| !p.is_empty())
        .ok_or(Unparsable)?;
    let arrow = tail.find("->").ok_or(Unparsable)?;
    let left_start = tail[..arrow].rfind(", ").map_or(0, |i| i + 2);
    let right = &tail[arrow + 2..];
    let right_end = right.find(',').unwrap_or(right.len());
    let (src, src_port) = endpoint(&tail[left_start..arrow])?;
    let (dst, dst_port) = endpoint(&right[..right_end])?;
    let rule = if prefix.is_empty() {
        chain.to_owned()
    } else {
        prefix
    };
    Ok(Fields {
        format: Format::Mikrotik,
        action: Action::from_prefix(&rule),
        rule,
        interface: interface.to_owned(),
        protocol,
        src,
        src_port,
        dst: Some(dst),
        dst_port,
        time: None,
        device: None,
    })
}

/// `1.2.3.4:80`, `1.2.3.4`, `[2001:db8::1]:80` or a bare IPv6 address.
fn endpoint(text: &str) -> Result<(IpAddr, Option<u16>), Unparsable> {
    let text = text.trim();
    if let Some(rest) = text.strip_prefix('[') {
        let (ip, port) = rest.split_once("]:").ok_or(Unparsable)?;
        return Ok((
            ip.parse().map_err(|_| Unparsable)?,
            Some(port.parse().map_err(|_| Unparsable)?),
        ));
    }
    if let Ok(ip) = text.parse() {
        return Ok((ip, None));
    }
    let (ip, port) = text.rsplit_once(':').ok_or(Unparsable)?;
    Ok((
        ip.parse().map_err(|_| Unparsable)?,
        Some(port.parse().map_err(|_| Unparsable)?),
    ))
}
