//! Realistic firewall syslog traffic for tests and benchmarks: internet background noise as a home
//! firewall sees it (a few noisy sources hammering SSH/SMB/RDP, a changing crowd of scanners walking
//! through common and random ports with SYN retries), some accepted LAN traffic and some non-firewall
//! lines, written in each of the five formats exactly as the reference samples show them. RFC 3164
//! timestamps are written in UTC (receivers under test use `timezone = "UTC"`).
//!
//! Deterministic from a seed, with a small xorshift generator: reproducible benchmark inputs matter more
//! here than statistical quality, and it keeps a random-number crate out of the agent.

use std::net::Ipv4Addr;

use chrono::{DateTime, Utc};

use super::event::Format;

/// Ports scanners favour, most popular first (the first ones are drawn most often).
const COMMON_PORTS: [u16; 24] = [
    22, 23, 445, 3389, 80, 443, 8080, 1433, 3306, 5900, 25, 21, 53, 110, 135, 139, 5060, 6379,
    8443, 9200, 2375, 11211, 27017, 5432,
];

/// Share of lines (per mille) of each kind.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    /// Lines from the few noisy sources.
    pub noisy: u32,
    /// Lines from scanners.
    pub scan: u32,
    /// Accepted LAN traffic.
    pub accept: u32,
    /// Non-firewall lines (dhcp, sshd, …); the rest of 1000 after the three above.
    pub other: u32,
}

impl Mix {
    /// Scan-heavy: what a home WAN interface logs (the P10 input).
    pub const SCAN_HEAVY: Self = Self {
        noisy: 350,
        scan: 520,
        accept: 80,
        other: 50,
    };
}

/// The generator.
#[derive(Debug, Clone)]
pub struct Generator {
    state: u64,
    mix: Mix,
    noisy: Vec<Ipv4Addr>,
    scanners: Vec<(Ipv4Addr, u16)>,
    wan: Ipv4Addr,
    lan: Vec<Ipv4Addr>,
}

impl Generator {
    /// A generator from `seed` with `mix`.
    pub fn new(seed: u64, mix: Mix) -> Self {
        let mut g = Self {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            mix,
            noisy: Vec::new(),
            scanners: Vec::new(),
            wan: Ipv4Addr::new(198, 51, 100, 7),
            lan: Vec::new(),
        };
        g.noisy = (0..5).map(|_| g.public_ip()).collect();
        g.scanners = (0..60).map(|_| (g.public_ip(), 0)).collect();
        g.lan = (10..40).map(|i| Ipv4Addr::new(192, 168, 1, i)).collect();
        g
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn public_ip(&mut self) -> Ipv4Addr {
        loop {
            let ip = Ipv4Addr::from(self.next() as u32);
            let first = ip.octets()[0];
            if !(ip.is_private()
                || ip.is_loopback()
                || ip.is_multicast()
                || first == 0
                || first >= 224)
            {
                return ip;
            }
        }
    }

    /// A popular port with a skew towards the head of [`COMMON_PORTS`], or now and then any port.
    fn scan_port(&mut self) -> u16 {
        if self.below(10) == 0 {
            return 1024 + self.below(64_000) as u16;
        }
        let a = self.below(COMMON_PORTS.len() as u64);
        let b = self.below(COMMON_PORTS.len() as u64);
        COMMON_PORTS[a.min(b) as usize]
    }

    /// The next line in `format`, logged at `time`.
    pub fn line(&mut self, format: Format, time: DateTime<Utc>) -> String {
        let roll = self.below(1000) as u32;
        let m = self.mix;
        if roll >= m.noisy + m.scan + m.accept {
            return self.other_line(time);
        }
        let (src, dst, sport, dport, accept) = if roll < m.noisy {
            let i = self.below(self.noisy.len() as u64) as usize;
            let src = self.noisy[i];
            let dport = [22, 445, 3389, 23][self.below(4) as usize];
            (
                src,
                self.wan,
                1024 + self.below(60_000) as u16,
                dport,
                false,
            )
        } else if roll < m.noisy + m.scan {
            // The crowd changes: now and then a scanner leaves and a new one arrives.
            let i = self.below(self.scanners.len() as u64) as usize;
            if self.below(40) == 0 {
                self.scanners[i] = (self.public_ip(), 0);
            }
            // Each scanner retries a port (SYN retransmits) before moving on.
            let (ip, port) = self.scanners[i];
            let port = if port == 0 || self.below(3) == 0 {
                self.scan_port()
            } else {
                port
            };
            self.scanners[i] = (ip, port);
            (
                ip,
                self.wan,
                40_000 + self.below(20_000) as u16,
                port,
                false,
            )
        } else {
            let i = self.below(self.lan.len() as u64) as usize;
            let src = self.lan[i];
            let dst = self.public_ip();
            (
                src,
                dst,
                30_000 + self.below(30_000) as u16,
                [443, 53, 80][self.below(3) as usize],
                true,
            )
        };
        let (seq, id, ttl) = (self.next() as u32, self.below(65_535), 40 + self.below(200));
        let bsd = time.format("%b %e %H:%M:%S");
        let iso = time.format("%Y-%m-%dT%H:%M:%S%.6f+00:00");
        match format {
            Format::Unifi => {
                let (rule, descr) = if accept {
                    ("LAN_WAN-A-2147483647", "[LAN_WAN]Allow All Traffic")
                } else {
                    ("WAN_LOCAL-D-2147483647", "[WAN_LOCAL]Block All Traffic")
                };
                format!(
                    "<13>{bsd} UDM-Pro [{rule}] DESCR=\"{descr}\" IN=eth8 OUT= MAC=74:ac:b9:1c:62:e5:00:17:10:2b:31:a9:08:00 SRC={src} DST={dst} LEN=44 TOS=00 PREC=0x00 TTL={ttl} ID={id} PROTO=TCP SPT={sport} DPT={dport} SEQ={seq} ACK=0 WINDOW=1024 SYN URGP=0 MARK=1a0000 "
                )
            }
            Format::Filterlog => {
                let (action, tracker) = if accept {
                    ("pass", 1_000_000_103)
                } else {
                    ("block", 1_000_000_103 + 1)
                };
                format!(
                    "<134>1 {iso} pfSense.home.arpa filterlog 72237 - - 5,,,{tracker},igb0,match,{action},in,4,0x0,,{ttl},{id},0,none,6,tcp,44,{src},{dst},{sport},{dport},0,S,{seq},,1024,,mss"
                )
            }
            Format::Mikrotik => {
                let prefix = if accept { "accept-lan" } else { "drop-wan" };
                format!(
                    "<30>{bsd} MikroTik firewall,info {prefix} input: in:ether1-WAN out:(unknown 0), connection-state:new src-mac 00:17:10:88:bc:02, proto TCP (SYN), {src}:{sport}->{dst}:{dport}, len 44"
                )
            }
            Format::Netfilter => {
                let prefix = if accept {
                    "nft ACCEPT: "
                } else {
                    "nft DROP wan: "
                };
                format!(
                    "<4>{bsd} nas kernel: [12345.678901] {prefix}IN=eth0 OUT= MAC=90:10:35:5a:1e:3a:90:10:9e:ec:2c:71:08:00 SRC={src} DST={dst} LEN=44 TOS=0x00 PREC=0x00 TTL={ttl} ID={id} PROTO=TCP SPT={sport} DPT={dport} WINDOW=1024 RES=0x00 SYN URGP=0 "
                )
            }
            Format::UnifiCef => {
                let utc = time.format("%Y-%m-%dT%H:%M:%S%.3fZ");
                let act = if accept { "allowed" } else { "blocked" };
                format!(
                    "<13>{bsd} Express-7 CEF:0|Ubiquiti|UniFi Network|9.4.19|201|Threat Detected and Blocked|7|proto=TCP src={src} spt={sport} dst={dst} dpt={dport} act={act} UNIFIcategory=Security UNIFIsubCategory=Intrusion Prevention UNIFIhost=Express 7 UNIFIrisk=medium UNIFIipsSignature=ET DROP Dshield Block Listed Source group 1 UNIFIipsSignatureId=2402000 UNIFIutcTime={utc} msg=A network intrusion attempt has been detected and blocked."
                )
            }
        }
    }

    fn other_line(&mut self, time: DateTime<Utc>) -> String {
        let bsd = time.format("%b %e %H:%M:%S");
        let i = self.below(self.lan.len() as u64) as usize;
        let client = self.lan[i];
        match self.below(3) {
            0 => format!("<30>{bsd} gw dnsmasq-dhcp[811]: DHCPACK(br0) {client} 9c:b6:d0:12:34:56 laptop"),
            1 => format!("<38>{bsd} gw sshd[4242]: Accepted publickey for admin from {client} port 50522 ssh2"),
            _ => format!("<30>{bsd} gw hostapd: wlan0: STA 9c:b6:d0:12:34:56 IEEE 802.11: associated"),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::logs::envelope::Zone;
    use crate::logs::parse::{parse, Context, Outcome};

    #[test]
    fn every_generated_line_parses_as_its_format() {
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 6, 0, 0).unwrap();
        let context = Context {
            received: now,
            zone: Zone::Named(chrono_tz::UTC),
            sender: None,
        };
        let mut g = Generator::new(7, Mix::SCAN_HEAVY);
        let mut other = 0;
        for format in Format::ALL {
            for _ in 0..500 {
                let line = g.line(format, now);
                match parse(&line, &context) {
                    Parsed {
                        outcome: Outcome::Event(e),
                        time_fell_back: false,
                    } => {
                        assert_eq!(e.format, format, "{line}");
                        assert_eq!(e.time, now, "{line}");
                        assert!(e.action.is_some(), "{line}");
                    }
                    Parsed {
                        outcome: Outcome::NotFirewall,
                        ..
                    } => other += 1,
                    p => panic!("{line}: {p:?}"),
                }
            }
        }
        assert!(other > 0 && other < 250, "some non-firewall lines: {other}");
    }

    use crate::logs::parse::Parsed;
}
