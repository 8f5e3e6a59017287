//! Block targets: one IPv4 or IPv6 address or network, parsed, checked and in canonical form.
//!
//! Every address that crosses the wire or reaches a firewall goes through [`Target::parse`], so the rest of
//! Portcullis never sees a raw string: IPv4-mapped IPv6 becomes IPv4, host bits of a network must be zero,
//! and the text form is the canonical one (`198.51.100.7`, `2001:db8::/48`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One address or network to block; single addresses are full-length prefixes (`/32`, `/128`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target(IpNet);

/// Why a text is not a valid target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Neither an IP address nor a CIDR network.
    #[error("`{0}` is not an IP address or CIDR network")]
    Syntax(String),
    /// A CIDR network whose host bits are not zero (`192.0.2.1/24`): ambiguous, so refused.
    #[error("`{text}` has host bits set; did you mean `{network}`?")]
    HostBitsSet {
        /// The text as given.
        text: String,
        /// The network the text lies in.
        network: String,
    },
}

impl Target {
    /// Parses an address (`198.51.100.7`, `2001:db8::1`, `::ffff:198.51.100.7`) or a network
    /// (`198.51.100.0/24`). Surrounding white space and IPv6 brackets are tolerated.
    pub fn parse(text: &str) -> Result<Self, TargetError> {
        let trimmed = text.trim();
        let bare = trimmed
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
            .unwrap_or(trimmed);
        if let Ok(addr) = IpAddr::from_str(bare) {
            return Ok(Self::from_addr(addr));
        }
        let net = IpNet::from_str(bare).map_err(|_| TargetError::Syntax(text.to_owned()))?;
        let net = match net {
            IpNet::V6(v6) => match v6.addr().to_ipv4_mapped() {
                // ::ffff:a.b.c.d/(96 + n) is the IPv4 network a.b.c.d/n.
                Some(v4) if v6.prefix_len() >= 96 => IpNet::V4(
                    Ipv4Net::new(v4, v6.prefix_len() - 96)
                        .map_err(|_| TargetError::Syntax(text.to_owned()))?,
                ),
                _ => IpNet::V6(v6),
            },
            IpNet::V4(v4) => IpNet::V4(v4),
        };
        if net.trunc() != net {
            return Err(TargetError::HostBitsSet {
                text: text.to_owned(),
                network: net.trunc().to_string(),
            });
        }
        Ok(Self(net))
    }

    /// A single address, IPv4-mapped IPv6 turned into IPv4.
    pub fn from_addr(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(v4) => Self::v4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::v4(v4),
                None => Self::v6(v6),
            },
        }
    }

    fn v4(addr: Ipv4Addr) -> Self {
        Self(IpNet::V4(Ipv4Net::from(addr)))
    }

    fn v6(addr: Ipv6Addr) -> Self {
        Self(IpNet::V6(Ipv6Net::from(addr)))
    }

    /// Wraps a network that is already canonical (host bits zero, no IPv4-mapped IPv6).
    pub fn from_net(net: IpNet) -> Result<Self, TargetError> {
        Self::parse(&net.to_string())
    }

    /// The network (a single address is a `/32` or `/128`).
    pub fn net(&self) -> IpNet {
        self.0
    }

    /// True for one address rather than a network.
    pub fn is_host(&self) -> bool {
        self.0.prefix_len() == self.0.max_prefix_len()
    }

    /// True for IPv4.
    pub fn is_ipv4(&self) -> bool {
        matches!(self.0, IpNet::V4(_))
    }

    /// True when `other` lies entirely inside this target.
    pub fn contains(&self, other: &Self) -> bool {
        self.0.contains(&other.0)
    }

    /// True when the two targets share at least one address.
    pub fn overlaps(&self, other: &IpNet) -> bool {
        self.0.contains(other) || other.contains(&self.0)
    }
}

impl fmt::Display for Target {
    /// Canonical text: a bare address for a host, `addr/len` for a network.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.0.addr())
        } else {
            write!(f, "{}", self.0)
        }
    }
}

impl FromStr for Target {
    type Err = TargetError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Target {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let target = Self::parse(&text).map_err(serde::de::Error::custom)?;
        // Only the canonical form is accepted on the wire, so a signed message has one spelling.
        if target.to_string() != text {
            return Err(serde::de::Error::custom(format!(
                "`{text}` is not in canonical form (`{target}`)"
            )));
        }
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        for (input, want) in [
            ("198.51.100.7", "198.51.100.7"),
            (" 198.51.100.7 ", "198.51.100.7"),
            ("198.51.100.7/32", "198.51.100.7"),
            ("198.51.100.0/24", "198.51.100.0/24"),
            ("::ffff:198.51.100.7", "198.51.100.7"),
            ("::ffff:198.51.100.0/120", "198.51.100.0/24"),
            ("2001:DB8:0:0::1", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("2001:db8::/48", "2001:db8::/48"),
            ("2001:db8::1/128", "2001:db8::1"),
        ] {
            assert_eq!(Target::parse(input).unwrap().to_string(), want, "{input}");
        }
    }

    #[test]
    fn host_bits_are_refused_with_a_hint() {
        let err = Target::parse("198.51.100.7/24").unwrap_err();
        assert_eq!(
            err,
            TargetError::HostBitsSet {
                text: "198.51.100.7/24".into(),
                network: "198.51.100.0/24".into()
            }
        );
        assert!(Target::parse("2001:db8::1/48").is_err());
    }

    #[test]
    fn garbage_is_refused() {
        for bad in ["", "example.com", "1.2.3", "1.2.3.4/33", "::g", "1.2.3.4 5"] {
            assert!(
                matches!(Target::parse(bad), Err(TargetError::Syntax(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn wire_form_must_be_canonical() {
        let ok: Target = serde_json::from_str("\"2001:db8::/48\"").unwrap();
        assert_eq!(ok.to_string(), "2001:db8::/48");
        assert!(serde_json::from_str::<Target>("\"2001:DB8::/48\"").is_err());
        assert!(serde_json::from_str::<Target>("\"198.51.100.7/32\"").is_err());
    }

    #[test]
    fn overlap_and_containment() {
        let net = Target::parse("198.51.100.0/24").unwrap();
        let host = Target::parse("198.51.100.9").unwrap();
        assert!(net.contains(&host));
        assert!(!host.contains(&net));
        assert!(host.overlaps(&net.net()));
        assert!(net.overlaps(&host.net()));
    }
}
