//! This host's own addresses, which the agent must never block: interface addresses, default gateways and
//! configured DNS servers.
//!
//! Read from `/proc/net/fib_trie` (local IPv4 addresses), `/proc/net/if_inet6`, `/proc/net/route`,
//! `/proc/net/ipv6_route`, `/etc/resolv.conf` and `/run/systemd/resolve/resolv.conf` (the real upstream
//! servers behind systemd-resolved's `127.0.0.53` stub), so it works on BusyBox systems without `ip -j`;
//! default routes of every routing table (policy routing) come from `ip route show table all` where `ip`
//! exists. When the
//! firewall lives in another network namespace, the files are read through the same
//! [`Runner`] (`ip netns exec NAME cat …`), so the namespace's own view is
//! used. Refreshed at every reconcile (DHCP changes addresses).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::backends::exec::Runner;

/// systemd-resolved's stub listener: loopback (never blockable anyway), not a server worth listing.
const RESOLVED_STUB: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 53));

/// Discovers this host's addresses. Missing files are skipped (not every system has IPv6). `None` when
/// the interface addresses cannot be read at all, or nothing is found: the caller keeps the protections
/// it has rather than replacing them with an empty set.
pub async fn discover(runner: &Runner) -> Option<BTreeSet<IpAddr>> {
    let mut found = BTreeSet::new();
    let read = |path: &'static str| async move { runner.read_file(path).await.ok() };
    let mut interfaces_read = false;
    if let Some(text) = read("/proc/net/fib_trie").await {
        interfaces_read = true;
        found.extend(local_v4_from_fib_trie(&text));
    }
    if let Some(text) = read("/proc/net/if_inet6").await {
        interfaces_read = true;
        found.extend(v6_from_if_inet6(&text));
    }
    if let Some(text) = read("/proc/net/route").await {
        found.extend(gateways_v4(&text));
    }
    if let Some(text) = read("/proc/net/ipv6_route").await {
        found.extend(gateways_v6(&text));
    }
    // /proc/net/route shows the main table only; policy routing puts default routes in others.
    for family in ["-4", "-6"] {
        if let Ok(out) = runner
            .run_ok("ip", &[family, "route", "show", "table", "all"], None)
            .await
        {
            found.extend(default_gateways(&out.stdout));
        }
    }
    for path in ["/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"] {
        if let Some(text) = read(path).await {
            found.extend(nameservers(&text));
        }
    }
    (interfaces_read && !found.is_empty()).then_some(found)
}

/// `ip route show table all`: the next hops (`via`) of every `default` route in any table, multipath
/// `nexthop` continuation lines included.
pub fn default_gateways(text: &str) -> BTreeSet<IpAddr> {
    let mut out = BTreeSet::new();
    let mut in_default = false;
    for line in text.lines() {
        let continuation = line.starts_with([' ', '\t']);
        if !continuation {
            let mut words = line.split_whitespace();
            let first = words.next();
            // `unicast default …` / `default …`; other route types (blackhole, unreachable) have no hop.
            in_default = first == Some("default")
                || (first == Some("unicast") && words.next() == Some("default"));
        }
        if !in_default {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        for (i, word) in words.iter().enumerate() {
            if *word != "via" {
                continue;
            }
            // `via inet6 fe80::1` (an IPv4 route through an IPv6 next hop) names the family first.
            let hop = match words.get(i + 1) {
                Some(&"inet" | &"inet6") => words.get(i + 2),
                other => other,
            };
            if let Some(addr) = hop.and_then(|h| h.split('%').next()?.parse().ok()) {
                out.insert(addr);
            }
        }
    }
    out
}

/// The addresses as host networks for the allowlist.
pub fn as_nets(addrs: &BTreeSet<IpAddr>) -> Vec<IpNet> {
    addrs.iter().map(|a| IpNet::from(*a)).collect()
}

/// `/proc/net/fib_trie`: an address line `|-- 192.0.2.5` followed by `/32 host LOCAL` is ours.
pub fn local_v4_from_fib_trie(text: &str) -> BTreeSet<IpAddr> {
    let mut out = BTreeSet::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let trimmed = line.trim_start_matches([' ', '|', '+', '-', '`']).trim();
        if let Ok(addr) = trimmed.parse::<Ipv4Addr>() {
            last = Some(addr);
        } else if trimmed.contains("host LOCAL") {
            if let Some(addr) = last {
                out.insert(IpAddr::V4(addr));
            }
        }
    }
    out
}

fn parse_hex_v6(hex: &str) -> Option<Ipv6Addr> {
    if hex.len() != 32 {
        return None;
    }
    u128::from_str_radix(hex, 16).ok().map(Ipv6Addr::from)
}

/// `/proc/net/if_inet6`: `<32 hex digits> <ifindex> <prefix> <scope> <flags> <name>`.
pub fn v6_from_if_inet6(text: &str) -> BTreeSet<IpAddr> {
    text.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(parse_hex_v6)
        .map(IpAddr::V6)
        .collect()
}

/// `/proc/net/route`: rows with destination `00000000` and the gateway flag; addresses little-endian hex.
pub fn gateways_v4(text: &str) -> BTreeSet<IpAddr> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            if cols.len() < 4 || cols[1] != "00000000" {
                return None;
            }
            let gw = u32::from_str_radix(cols[2], 16).ok()?;
            // The kernel prints the address as a host-order u32: native bytes are the address bytes.
            (gw != 0).then(|| IpAddr::V4(Ipv4Addr::from(gw.to_ne_bytes())))
        })
        .collect()
}

/// `/proc/net/ipv6_route`: rows for `::/0` with a non-zero next hop (fifth column).
pub fn gateways_v6(text: &str) -> BTreeSet<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            if cols.len() < 5 || cols[0] != "0".repeat(32) || cols[1] != "00" {
                return None;
            }
            let hop = parse_hex_v6(cols[4])?;
            (!hop.is_unspecified()).then_some(IpAddr::V6(hop))
        })
        .collect()
}

/// `/etc/resolv.conf`: `nameserver` lines (a `%zone` suffix is dropped).
pub fn nameservers(text: &str) -> BTreeSet<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        .filter_map(|a| a.split('%').next()?.parse().ok())
        .filter(|a| *a != RESOLVED_STUB)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<IpAddr> {
        items.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn reads_local_addresses_from_fib_trie() {
        let text = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     +-- 203.0.113.0/24 2 0 2\n        |-- 203.0.113.0\n           /24 link UNICAST\n        |-- 203.0.113.9\n           /32 host LOCAL\n        |-- 203.0.113.255\n           /32 link BROADCAST\n";
        assert_eq!(local_v4_from_fib_trie(text), set(&["203.0.113.9"]));
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn reads_v6_addresses_and_gateways() {
        let if6 = "20010db8000000000000000000000001 02 40 00 80     eth0\n00000000000000000000000000000001 01 80 10 80       lo\n";
        assert_eq!(v6_from_if_inet6(if6), set(&["2001:db8::1", "::1"]));
        let route =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t00000000\t0171A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                     eth0\t0071A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(gateways_v4(route), set(&["192.168.113.1"]));
        let route6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003     eth0\n";
        assert_eq!(gateways_v6(route6), set(&["fe80::1"]));
    }

    #[test]
    fn reads_nameservers() {
        let text = "# comment\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nsearch lan\n";
        assert_eq!(nameservers(text), set(&["192.0.2.53", "fe80::1"]));
        let stub = "nameserver 127.0.0.53\noptions edns0 trust-ad\n";
        assert!(nameservers(stub).is_empty());
    }

    #[test]
    fn reads_default_routes_of_every_table() {
        let v4 = "default via 192.0.2.1 dev eth0 proto dhcp metric 100\n\
                  default via 198.51.100.1 dev wg0 table 51820\n\
                  default table 200 proto static metric 10\n\
                  \tnexthop via 203.0.113.1 dev eth1 weight 1\n\
                  \tnexthop via 203.0.113.2 dev eth2 weight 1\n\
                  192.0.2.0/24 dev eth0 proto kernel scope link src 192.0.2.9\n\
                  unreachable default table 300\n\
                  local 192.0.2.9 dev eth0 table local proto kernel scope host src 192.0.2.9\n\
                  default via inet6 fe80::1 dev eth3 table 400\n";
        assert_eq!(
            default_gateways(v4),
            set(&[
                "192.0.2.1",
                "198.51.100.1",
                "203.0.113.1",
                "203.0.113.2",
                "fe80::1"
            ])
        );
        let v6 = "default via fe80::1%eth0 dev eth0 metric 1024 pref medium\n\
                  2001:db8::/64 via 2001:db8::99 dev eth0\n";
        assert_eq!(default_gateways(v6), set(&["fe80::1"]));
    }
}
