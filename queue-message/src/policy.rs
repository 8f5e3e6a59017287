//! The never-block policy shared by the handler and the agent: special-purpose ranges, allowlists, lab
//! carve-outs and the broadest prefix that may be blocked.
//!
//! The special-purpose list is the union of the IANA IPv4 and IPv6 Special-Purpose Address Registries
//! (RFC 6890 and its updates) plus multicast; each entry names its RFC. A target is refused when it
//! *overlaps* a protected range in either direction: `10.0.0.0/7` is refused because it contains private
//! space, `10.1.2.3` because it lies inside it.

use std::fmt;

use ipnet::IpNet;

use crate::target::Target;

/// One protected range and where it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialRange {
    /// The range, as CIDR text.
    pub cidr: &'static str,
    /// What the registry calls it.
    pub name: &'static str,
    /// The defining document.
    pub rfc: &'static str,
}

const fn range(cidr: &'static str, name: &'static str, rfc: &'static str) -> SpecialRange {
    SpecialRange { cidr, name, rfc }
}

/// IANA IPv4 Special-Purpose Address Registry, plus multicast (RFC 5771) and limited broadcast.
pub const SPECIAL_IPV4: &[SpecialRange] = &[
    range("0.0.0.0/8", "\"this network\"", "RFC 791 §3.2"),
    range("10.0.0.0/8", "private-use", "RFC 1918"),
    range("100.64.0.0/10", "shared address space (CGNAT)", "RFC 6598"),
    range("127.0.0.0/8", "loopback", "RFC 1122 §3.2.1.3"),
    range("169.254.0.0/16", "link-local", "RFC 3927"),
    range("172.16.0.0/12", "private-use", "RFC 1918"),
    // Includes 192.0.0.0/29 DS-Lite (RFC 7335), 192.0.0.8/32 (RFC 7600), 192.0.0.9/32 PCP anycast (RFC 7723),
    // 192.0.0.10/32 TURN anycast (RFC 8155), 192.0.0.170-171/32 NAT64 discovery (RFC 8880).
    range("192.0.0.0/24", "IETF protocol assignments", "RFC 6890 §2.1"),
    range("192.0.2.0/24", "documentation (TEST-NET-1)", "RFC 5737"),
    range("192.31.196.0/24", "AS112-v4", "RFC 7535"),
    range("192.52.193.0/24", "AMT", "RFC 7450"),
    range(
        "192.88.99.0/24",
        "deprecated 6to4 relay anycast",
        "RFC 7526",
    ),
    range("192.168.0.0/16", "private-use", "RFC 1918"),
    range(
        "192.175.48.0/24",
        "direct delegation AS112 service",
        "RFC 7534",
    ),
    range("198.18.0.0/15", "benchmarking", "RFC 2544"),
    range("198.51.100.0/24", "documentation (TEST-NET-2)", "RFC 5737"),
    range("203.0.113.0/24", "documentation (TEST-NET-3)", "RFC 5737"),
    range("224.0.0.0/4", "multicast", "RFC 5771"),
    range("240.0.0.0/4", "reserved", "RFC 1112 §4"),
    range(
        "255.255.255.255/32",
        "limited broadcast",
        "RFC 919 §7, RFC 8190",
    ),
];

/// IANA IPv6 Special-Purpose Address Registry, plus link-local, multicast and IPv4-compatible space.
pub const SPECIAL_IPV6: &[SpecialRange] = &[
    range("::/128", "unspecified address", "RFC 4291"),
    range("::1/128", "loopback", "RFC 4291"),
    range("::/96", "IPv4-compatible (deprecated)", "RFC 4291 §2.5.5.1"),
    range("::ffff:0:0/96", "IPv4-mapped", "RFC 4291"),
    range("64:ff9b::/96", "IPv4-IPv6 translation", "RFC 6052"),
    range(
        "64:ff9b:1::/48",
        "local-use IPv4-IPv6 translation",
        "RFC 8215",
    ),
    range("100::/64", "discard-only", "RFC 6666"),
    range("100:0:0:1::/64", "dummy IPv6 prefix", "RFC 9780"),
    // Includes TEREDO 2001::/32 (RFC 4380), PCP anycast 2001:1::1/128 (RFC 7723), benchmarking 2001:2::/48
    // (RFC 5180), AMT 2001:3::/32 (RFC 7450), AS112-v6 2001:4:112::/48 (RFC 7535), ORCHIDv2 2001:20::/28
    // (RFC 7343), DRIP 2001:30::/28 (RFC 9374).
    range("2001::/23", "IETF protocol assignments", "RFC 2928"),
    range("2001:db8::/32", "documentation", "RFC 3849"),
    range("2002::/16", "6to4", "RFC 3056"),
    range(
        "2620:4f:8000::/48",
        "direct delegation AS112 service",
        "RFC 7534",
    ),
    range("3fff::/20", "documentation", "RFC 9637"),
    range("5f00::/16", "segment routing SIDs", "RFC 9602"),
    range("fc00::/7", "unique-local", "RFC 4193"),
    range("fe80::/10", "link-local unicast", "RFC 4291"),
    range("ff00::/8", "multicast", "RFC 4291"),
];

/// Why a target must not be blocked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The target overlaps a special-purpose range that no lab range carves out.
    SpecialPurpose(SpecialRange),
    /// The target overlaps an allowlisted range.
    Allowlisted(IpNet),
    /// The network is broader than the configured minimum prefix length.
    TooBroad {
        /// The target's prefix length.
        prefix: u8,
        /// The shortest prefix allowed for its family.
        min: u8,
    },
}

impl Refusal {
    /// A short machine-readable code (`special-purpose`, `allowlisted`, `too-broad`) for metrics and responses.
    pub fn code(&self) -> &'static str {
        match self {
            Self::SpecialPurpose(_) => "special-purpose",
            Self::Allowlisted(_) => "allowlisted",
            Self::TooBroad { .. } => "too-broad",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SpecialPurpose(r) => write!(f, "overlaps {} {} ({})", r.name, r.cidr, r.rfc),
            Self::Allowlisted(net) => write!(f, "overlaps allowlisted {net}"),
            Self::TooBroad { prefix, min } => {
                write!(f, "too broad (/{prefix}; minimum prefix /{min})")
            }
        }
    }
}

/// The never-block policy: which targets may never reach a firewall.
#[derive(Debug, Clone)]
pub struct NeverBlock {
    special: Vec<(IpNet, SpecialRange)>,
    allowlist: Vec<IpNet>,
    lab_ranges: Vec<IpNet>,
    min_prefix_v4: u8,
    min_prefix_v6: u8,
}

impl Default for NeverBlock {
    /// Special-purpose ranges only, minimum prefixes /16 (IPv4) and /32 (IPv6).
    fn default() -> Self {
        Self::new(Vec::new(), Vec::new(), 16, 32)
    }
}

impl NeverBlock {
    /// Builds the policy. `lab_ranges` carve ranges back out of the special-purpose list (never out of the
    /// allowlist); a target is allowed through a carve-out only when it lies wholly inside a lab range.
    pub fn new(
        allowlist: Vec<IpNet>,
        lab_ranges: Vec<IpNet>,
        min_prefix_v4: u8,
        min_prefix_v6: u8,
    ) -> Self {
        let special = SPECIAL_IPV4
            .iter()
            .chain(SPECIAL_IPV6)
            .map(|r| {
                (
                    r.cidr
                        .parse()
                        .expect("special-purpose table holds valid CIDRs"),
                    *r,
                )
            })
            .collect();
        Self {
            special,
            allowlist: allowlist.into_iter().map(|n| n.trunc()).collect(),
            lab_ranges: lab_ranges.into_iter().map(|n| n.trunc()).collect(),
            min_prefix_v4,
            min_prefix_v6,
        }
    }

    /// Adds more never-block ranges (the agent adds this host's own addresses, gateway and DNS servers).
    pub fn extend_allowlist(&mut self, more: impl IntoIterator<Item = IpNet>) {
        self.allowlist.extend(more.into_iter().map(|n| n.trunc()));
    }

    /// The allowlisted ranges.
    pub fn allowlist(&self) -> &[IpNet] {
        &self.allowlist
    }

    /// The lab ranges carved out of the special-purpose list.
    pub fn lab_ranges(&self) -> &[IpNet] {
        &self.lab_ranges
    }

    /// Decides whether `target` may be blocked. With several reasons the most useful one is reported: a
    /// network that is too broad first (it overlaps everything, so naming one allowlisted address it happens
    /// to cover tells a person nothing), then the allowlist, then the special-purpose ranges.
    pub fn check(&self, target: &Target) -> Result<(), Refusal> {
        let net = target.net();
        let min = if target.is_ipv4() {
            self.min_prefix_v4
        } else {
            self.min_prefix_v6
        };
        if net.prefix_len() < min {
            return Err(Refusal::TooBroad {
                prefix: net.prefix_len(),
                min,
            });
        }
        if let Some(allowed) = self.allowlist.iter().find(|a| target.overlaps(a)) {
            return Err(Refusal::Allowlisted(*allowed));
        }
        let in_lab = self.lab_ranges.iter().any(|lab| lab.contains(&net));
        if !in_lab {
            if let Some((_, special)) = self
                .special
                .iter()
                .find(|(range, _)| target.overlaps(range))
            {
                return Err(Refusal::SpecialPurpose(*special));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Target {
        Target::parse(s).unwrap()
    }

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn special_purpose_addresses_are_refused() {
        let policy = NeverBlock::default();
        for ip in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "198.51.100.7",
            "203.0.113.5",
            "192.0.2.1",
            "198.18.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "2001:db8::1",
            "2002::1",
            "64:ff9b::1",
            "3fff::1",
        ] {
            assert!(
                matches!(policy.check(&t(ip)), Err(Refusal::SpecialPurpose(_))),
                "{ip} should be refused"
            );
        }
    }

    #[test]
    fn public_addresses_pass() {
        let policy = NeverBlock::default();
        for ip in ["8.8.8.8", "23.97.60.214", "2606:4700::1111", "11.0.0.0/16"] {
            assert_eq!(policy.check(&t(ip)), Ok(()), "{ip}");
        }
    }

    #[test]
    fn a_network_containing_special_space_is_refused() {
        let policy = NeverBlock::new(vec![], vec![], 4, 16);
        assert!(matches!(
            policy.check(&t("96.0.0.0/4")),
            Err(Refusal::SpecialPurpose(_))
        ));
    }

    #[test]
    fn too_broad_networks_are_refused() {
        let policy = NeverBlock::default();
        assert_eq!(
            policy.check(&t("11.0.0.0/15")),
            Err(Refusal::TooBroad {
                prefix: 15,
                min: 16
            })
        );
        assert_eq!(
            policy.check(&t("2606:4700::/31")),
            Err(Refusal::TooBroad {
                prefix: 31,
                min: 32
            })
        );
    }

    // First-hour defect 6: `block 0.0.0.0/0` was refused as "overlaps allowlisted 10.255.255.53/32" (the host's
    // DNS server); the reason a person needs is that it is too broad.
    #[test]
    fn too_broad_is_the_reason_given_before_an_overlap() {
        let policy = NeverBlock::new(
            vec![n("10.255.255.53/32"), n("2001:db8::53/128")],
            vec![],
            16,
            32,
        );
        assert_eq!(
            policy.check(&t("0.0.0.0/0")),
            Err(Refusal::TooBroad { prefix: 0, min: 16 })
        );
        assert_eq!(
            policy.check(&t("::/0")),
            Err(Refusal::TooBroad { prefix: 0, min: 32 })
        );
        assert_eq!(
            policy.check(&t("0.0.0.0/0")).unwrap_err().to_string(),
            "too broad (/0; minimum prefix /16)"
        );
    }

    #[test]
    fn allowlist_wins_over_lab_ranges() {
        let policy = NeverBlock::new(
            vec![n("198.51.100.8/29")],
            vec![n("198.51.100.0/24")],
            16,
            32,
        );
        assert_eq!(policy.check(&t("198.51.100.7")), Ok(()));
        assert_eq!(
            policy.check(&t("198.51.100.9")),
            Err(Refusal::Allowlisted(n("198.51.100.8/29")))
        );
        // A network that covers an allowlisted range is refused too.
        assert!(matches!(
            policy.check(&t("198.51.100.0/24")),
            Err(Refusal::Allowlisted(_))
        ));
    }

    #[test]
    fn lab_range_must_contain_the_whole_target() {
        let policy = NeverBlock::new(vec![], vec![n("198.51.100.0/25")], 16, 32);
        assert_eq!(policy.check(&t("198.51.100.1")), Ok(()));
        assert!(policy.check(&t("198.51.100.0/24")).is_err());
        assert!(policy.check(&t("198.51.100.200")).is_err());
    }

    #[test]
    fn every_table_entry_parses() {
        for r in SPECIAL_IPV4.iter().chain(SPECIAL_IPV6) {
            let net: IpNet = r.cidr.parse().unwrap();
            assert_eq!(net, net.trunc(), "{} has host bits", r.cidr);
        }
    }
}
