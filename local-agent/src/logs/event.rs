//! One firewall event as the parsers produce it: the normalised fields every format maps to, before
//! summarising turns events into rows.

use std::fmt;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The firewall log format a line was recognised as (the `Format` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Format {
    /// UniFi gateway netfilter lines (`[WAN_IN-…-D]`, `[LAN_IN-D-4001]`, zone-based prefixes).
    #[serde(rename = "unifi")]
    Unifi,
    /// UniFi Network / UniFi OS CEF events.
    #[serde(rename = "unifi-cef")]
    UnifiCef,
    /// pfSense / OPNsense `filterlog` CSV lines.
    #[serde(rename = "filterlog")]
    Filterlog,
    /// MikroTik RouterOS firewall log lines.
    #[serde(rename = "mikrotik")]
    Mikrotik,
    /// Plain Linux netfilter `LOG` / nftables `log` lines.
    #[serde(rename = "netfilter")]
    Netfilter,
}

impl Format {
    /// Every format, in the order metrics list them.
    pub const ALL: [Self; 5] = [
        Self::Unifi,
        Self::UnifiCef,
        Self::Filterlog,
        Self::Mikrotik,
        Self::Netfilter,
    ];

    /// The column and metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unifi => "unifi",
            Self::UnifiCef => "unifi-cef",
            Self::Filterlog => "filterlog",
            Self::Mikrotik => "mikrotik",
            Self::Netfilter => "netfilter",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The verdict of the firewall rule that logged the packet (the `Action` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Silently dropped (UniFi `D`, pf `block`, prefixes with DROP/BLOCK/DENY).
    Drop,
    /// Refused with an answer (UniFi `R`, prefixes with REJECT).
    Reject,
    /// Let through (UniFi `A`/`RET`, pf `pass`, prefixes with ACCEPT/ALLOW).
    Accept,
}

impl Action {
    /// The column value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Drop => "drop",
            Self::Reject => "reject",
            Self::Accept => "accept",
        }
    }

    /// Parses a column / config value.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "drop" => Some(Self::Drop),
            "reject" => Some(Self::Reject),
            "accept" => Some(Self::Accept),
            _ => None,
        }
    }

    /// The verdict a free-text log prefix names (`iptables DROP_INPUT:`, `[UFW BLOCK]`, `drop-in`), if any.
    /// REJECT is checked before DROP so `REJECT_AND_DROP`-style texts read as a reject.
    pub fn from_prefix(prefix: &str) -> Option<Self> {
        let upper = prefix.to_ascii_uppercase();
        if upper.contains("REJECT") {
            Some(Self::Reject)
        } else if ["DROP", "BLOCK", "DENY"].iter().any(|w| upper.contains(w)) {
            Some(Self::Drop)
        } else if ["ACCEPT", "ALLOW", "PASS"]
            .iter()
            .any(|w| upper.contains(w))
        {
            Some(Self::Accept)
        } else {
            None
        }
    }
}

/// One parsed firewall event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// When the firewall logged it (UTC), or the receive time when the line had no usable time.
    pub time: DateTime<Utc>,
    /// The sending device: the syslog HOSTNAME, else the sender's address.
    pub device: String,
    /// The format the line was recognised as.
    pub format: Format,
    /// The verdict; `None` when the line carries none (an unprefixed netfilter or MikroTik line).
    pub action: Option<Action>,
    /// The rule as the firewall names it (prefix, rule number or tracker, IPS signature, log prefix).
    pub rule: String,
    /// The interface the packet came in on (the outgoing one for locally generated packets).
    pub interface: String,
    /// Lower-case protocol name (`tcp`, `udp`, `icmp`, `icmpv6`, `igmp`) or number.
    pub protocol: String,
    /// Source address.
    pub src: IpAddr,
    /// Source port (TCP/UDP).
    pub src_port: Option<u16>,
    /// Destination address (UniFi CEF may omit it).
    pub dst: Option<IpAddr>,
    /// Destination port (TCP/UDP).
    pub dst_port: Option<u16>,
}
