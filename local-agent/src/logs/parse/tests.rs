//! Every sample line of the reference folder (copied to `tests/fixtures/firewall-logs/`), with the fields
//! each must give written out; plus times, and property tests that no mutated line panics.

use std::collections::BTreeMap;

use chrono::TimeZone;
use proptest::prelude::*;

use super::*;
use crate::logs::event::Action as A;
use crate::logs::event::Format as F;
use Outcome::{NotFirewall, Unparsed};

const FILES: [(&str, &str); 6] = [
    (
        "unifi-netfilter",
        include_str!("../../../tests/fixtures/firewall-logs/unifi-netfilter.log"),
    ),
    (
        "unifi-cef",
        include_str!("../../../tests/fixtures/firewall-logs/unifi-cef.log"),
    ),
    (
        "pfsense-opnsense-filterlog",
        include_str!("../../../tests/fixtures/firewall-logs/pfsense-opnsense-filterlog.log"),
    ),
    (
        "mikrotik-routeros",
        include_str!("../../../tests/fixtures/firewall-logs/mikrotik-routeros.log"),
    ),
    (
        "linux-netfilter",
        include_str!("../../../tests/fixtures/firewall-logs/linux-netfilter.log"),
    ),
    (
        "syslog-headers",
        include_str!("../../../tests/fixtures/firewall-logs/syslog-headers.log"),
    ),
];

/// The sender the lines arrive from (the device name when a line has no HOSTNAME).
const SENDER: &str = "192.0.2.1";

fn context(received: DateTime<Utc>) -> Context {
    Context {
        received,
        zone: Zone::Named(chrono_tz::UTC),
        sender: Some(SENDER.parse().unwrap()),
    }
}

/// An expected event; the time is checked separately.
#[allow(clippy::too_many_arguments)]
fn ev(
    format: Format,
    action: Option<Action>,
    rule: &str,
    interface: &str,
    protocol: &str,
    src: &str,
    src_port: Option<u16>,
    dst: Option<&str>,
    dst_port: Option<u16>,
    device: &str,
) -> Outcome {
    Outcome::Event(Event {
        time: DateTime::<Utc>::MIN_UTC,
        device: device.to_owned(),
        format,
        action,
        rule: rule.to_owned(),
        interface: interface.to_owned(),
        protocol: protocol.to_owned(),
        src: src.parse().unwrap(),
        src_port,
        dst: dst.map(|d| d.parse().unwrap()),
        dst_port,
    })
}

fn expected() -> BTreeMap<&'static str, Vec<Outcome>> {
    BTreeMap::from([
        (
            "unifi-netfilter",
            vec![
                // Jan  5 20:17:05 MainFirewall kernel: [LAN_LOCAL-default-A]IN=eth0.90 OUT= MAC=90:10:92:6e:
                ev(
                    F::Unifi,
                    Some(A::Accept),
                    "LAN_LOCAL-default-A",
                    "eth0.90",
                    "udp",
                    "192.168.48.137",
                    Some(48689),
                    Some("255.55.174.225"),
                    Some(48689),
                    "MainFirewall",
                ),
                // Jan  5 20:17:01 MainFirewall kernel: [WAN_OUT-2000-A]IN=eth0 OUT=eth2 MAC=90:10:20:76:8d:2
                ev(
                    F::Unifi,
                    Some(A::Accept),
                    "WAN_OUT-2000-A",
                    "eth0",
                    "tcp",
                    "192.168.134.158",
                    Some(43189),
                    Some("192.0.2.25"),
                    Some(443),
                    "MainFirewall",
                ),
                // Jan  5 20:17:01 MainFirewall kernel: [WAN_OUT-2000-A]IN=eth0 OUT=eth2 MAC=90:10:20:76:8d:2
                ev(
                    F::Unifi,
                    Some(A::Accept),
                    "WAN_OUT-2000-A",
                    "eth0",
                    "tcp",
                    "192.168.110.116",
                    Some(50093),
                    Some("192.0.2.25"),
                    Some(1443),
                    "MainFirewall",
                ),
                // Jan  5 20:17:01 MainFirewall kernel: [WAN_OUT-2000-A]IN=eth0 OUT=eth2 MAC=90:10:20:76:8d:2
                ev(
                    F::Unifi,
                    Some(A::Accept),
                    "WAN_OUT-2000-A",
                    "eth0",
                    "tcp",
                    "192.168.110.116",
                    Some(50093),
                    Some("192.0.2.25"),
                    Some(1443),
                    "MainFirewall",
                ),
                // May  5 20:46:45 My-Office-Gateway user.info kernel: TTL=126 ID=15317 DF PROTO=TCP SPT=5934
                Unparsed(Format::Netfilter),
                // May  5 20:46:46 My-Office-Gateway user.info kernel:  TTL=126 ID=51392 DF PROTO=TCP SPT=516
                Unparsed(Format::Netfilter),
                // May  5 20:47:09 My-Office-Gateway user.info kernel: 0 TTL=126 ID=15461 DF PROTO=TCP SPT=59
                Unparsed(Format::Netfilter),
                // May  5 20:46:56 My-Office-Gateway user.info kernel: L=126 ID=8702 DF PROTO=TCP SPT=88 DPT=
                Unparsed(Format::Netfilter),
                // <161>Oct 10 07:25:12 Hostname kernel: [wan-lan-default-D]IN=eth0 OUT= MAC=90:10:20:76:8d:2
                ev(
                    F::Unifi,
                    Some(A::Drop),
                    "wan-lan-default-D",
                    "eth0",
                    "tcp",
                    "67.43.156.15",
                    Some(38842),
                    Some("10.4.0.5"),
                    Some(443),
                    "Hostname",
                ),
                // 2021-03-12T14:10:18Z Hostname kernel: [wan-lan-default-D]IN=eth0 OUT= MAC=90:10:20:76:8d:2
                ev(
                    F::Unifi,
                    Some(A::Drop),
                    "wan-lan-default-D",
                    "eth0",
                    "tcp",
                    "67.43.156.15",
                    Some(38842),
                    Some("10.4.0.5"),
                    Some(443),
                    "Hostname",
                ),
                // Apr  7 21:49:03 UDM-Pro [WAN_IN-RET-3006] DESCR="[WAN_IN] PortForward Allow [HTTPS (cli IN
                ev(
                    F::Unifi,
                    Some(A::Accept),
                    "WAN_IN-RET-3006",
                    "eth8",
                    "tcp",
                    "194.230.158.35",
                    Some(38618),
                    Some("192.168.96.10"),
                    Some(10443),
                    "UDM-Pro",
                ),
                // Apr  7 21:40:58 UDM-Pro [LAN_IN-D-4001] DESCR="🛑Drop all InterVLAN traffic" IN=br96 OUT=tl
                ev(
                    F::Unifi,
                    Some(A::Drop),
                    "LAN_IN-D-4001",
                    "br96",
                    "tcp",
                    "192.168.96.10",
                    Some(8084),
                    Some("192.168.2.1"),
                    Some(55504),
                    "UDM-Pro",
                ),
                // Mar  2 23:24:28 UDM-Pro user.warn kernel: [1293979.679369] IN=br46 OUT= MAC=24:5a:4c:a2:b1
                ev(
                    F::Netfilter,
                    None,
                    "",
                    "br46",
                    "udp",
                    "192.168.46.5",
                    Some(65450),
                    Some("8.8.8.8"),
                    Some(53),
                    "UDM-Pro",
                ),
                // Mar  2 23:24:28 UDM-Pro user.warn kernel: [    979.679369] [DNAT-br46-udp]IN=br46 OUT= MAC
                ev(
                    F::Unifi,
                    None,
                    "DNAT-br46-udp",
                    "br46",
                    "udp",
                    "192.168.46.5",
                    Some(65450),
                    Some("8.8.8.8"),
                    Some(53),
                    "UDM-Pro",
                ),
                // Mar  4 19:25:13 UDM-Pro user.warn kernel: [ 1170.826385] ALIEN BLOCK: IN=eth8 OUT= MAC=24:
                ev(
                    F::Unifi,
                    Some(A::Drop),
                    "ALIEN BLOCK",
                    "eth8",
                    "tcp",
                    "185.128.41.50",
                    Some(56958),
                    Some("192.168.10.2"),
                    Some(7001),
                    "UDM-Pro",
                ),
                // Mar  2 23:27:40 UDM-Pro authpriv.notice dropbear[29787]: Pubkey auth succeeded for 'root'
                NotFirewall,
                // Mar  4 19:26:07 UDM-Pro user.warn kernel: [ 1225.134675] conntrack: generic helper won't h
                NotFirewall,
                // Jun 13 23:29:15 UDMP-DTC [WAN_LOCAL-D-2147483647] DESCR="[WAN_LOCAL]Block All Traffic" IN=
                ev(
                    F::Unifi,
                    Some(A::Drop),
                    "WAN_LOCAL-D-2147483647",
                    "eth8",
                    "udp",
                    "192.168.1.1",
                    Some(38451),
                    Some("192.168.1.25"),
                    Some(54329),
                    "UDMP-DTC",
                ),
                // Jun 27 09:02:22 Dream-Machine-Pro Dream-Machine-Pro sshd[454008]: Failed keyboard-interact
                NotFirewall,
                // <13>Jul  5 13:31:11 unifi-r1 [VPN_LAN-D-10004] DESCR="Block VPN to Internal - Other" IN=wg
                ev(
                    F::Unifi,
                    Some(A::Drop),
                    "VPN_LAN-D-10004",
                    "wgsrv1",
                    "tcp",
                    "192.168.63.120",
                    Some(51523),
                    Some("10.95.75.174"),
                    Some(80),
                    "unifi-r1",
                ),
                // <13>Jul  7 22:45:52 unifi-r1 [LOCAL_CUSTOM2-A-2147483647] DESCR=\\"[LOCAL_CUSTOM2]Allow All
                ev(
                    F::Unifi,
                    Some(A::Accept),
                    "LOCAL_CUSTOM2-A-2147483647",
                    "br999",
                    "udp",
                    "192.168.63.120",
                    Some(45148),
                    Some("255.255.255.255"),
                    Some(10001),
                    "unifi-r1",
                ),
                // <13>Jul  8 11:06:32 unifi-r1 [LAN_VPN-A-2147483647] DESCR="[LAN_VPN]Allow All Traffic" IN=
                ev(
                    F::Unifi,
                    Some(A::Accept),
                    "LAN_VPN-A-2147483647",
                    "br2",
                    "icmp",
                    "192.168.0.32",
                    None,
                    Some("192.168.10.2"),
                    None,
                    "unifi-r1",
                ),
                // Mar  8 21:16:30 ubnt kernel: [WAN_LOCAL-default-D]IN=eth0 OUT= MAC=fc:dc:dd:24:22:f7:00:3d
                ev(
                    F::Unifi,
                    Some(A::Drop),
                    "WAN_LOCAL-default-D",
                    "eth0",
                    "tcp",
                    "55.177.77.154",
                    Some(56057),
                    Some("44.10.100.101"),
                    Some(443),
                    "ubnt",
                ),
                // [LAN_IN-2001-A]IN=eth1.40 OUT=eth1 MAC=fc:ec:da:47:47:e6:64:5d:86:dd:43:66:08:00:45:00:00:
                ev(
                    F::Unifi,
                    Some(A::Accept),
                    "LAN_IN-2001-A",
                    "eth1.40",
                    "udp",
                    "192.168.40.102",
                    Some(52295),
                    Some("192.168.1.21"),
                    Some(53),
                    "192.0.2.1",
                ),
                // [LAN_IN-2005-A]IN=eth1 OUT=eth1.20 MAC=fc:ec:da:47:47:e6:b4:2e:99:19:8e:79:08:00 SRC=192.1
                ev(
                    F::Unifi,
                    Some(A::Accept),
                    "LAN_IN-2005-A",
                    "eth1",
                    "tcp",
                    "192.168.1.21",
                    Some(54668),
                    Some("192.168.20.2"),
                    Some(80),
                    "192.0.2.1",
                ),
                // [LAN_IN-2001-A]IN=eth1.40 OUT=eth1 MAC=fc:ec:da:47:47:e6:3e:28:89:63:06:05:08:00:45:00:00:
                ev(
                    F::Unifi,
                    Some(A::Accept),
                    "LAN_IN-2001-A",
                    "eth1.40",
                    "udp",
                    "192.168.40.100",
                    Some(50915),
                    Some("192.168.1.21"),
                    Some(53),
                    "192.0.2.1",
                ),
            ],
        ),
        (
            "unifi-cef",
            vec![
                // Jul  5 04:01:40 unifi.example.com 2025-07-05T04: 01:40.124Z unifi-r1 CEF:0|Ubiquiti|UniFi
                NotFirewall,
                // Jul  5 04:21:57 unifi.example.com 2025-07-05T04: 21:57.873Z unifi-r1 CEF:0|Ubiquiti|UniFi
                NotFirewall,
                // Jul  5 04:28:12 unifi.example.com 2025-07-05T04: 28:12.739Z unifi-r1 CEF:0|Ubiquiti|UniFi
                NotFirewall,
                // Jul  5 04:29:04 unifi.example.com 2025-07-05T04: 29:04.222Z unifi-r1 CEF:0|Ubiquiti|UniFi
                NotFirewall,
                // Jul 15 22:24:19 2025-07-15T22:24:19.421Z unifi-r1 CEF:0|Ubiquiti|UniFi Network|9.3.43|400|
                NotFirewall,
                // CEF:0|Ubiquiti|UniFi Network|9.4.19|544|Admin Accessed UniFi Network|1|UNIFIcategory=Syste
                NotFirewall,
                // CEF: 0|Ubiquiti|UniFi Network|9.4.19|544|Admin Accessed UniFi Network|1|UNIFIcategory=Syst
                NotFirewall,
                // 0|Ubiquiti|UniFi Network|9.3.45|201|Threat Detected and Blocked|7|proto=TCP src=192.168.0.
                ev(
                    F::UnifiCef,
                    Some(A::Drop),
                    "ET DROP Dshield Block Listed Source group 1",
                    "",
                    "tcp",
                    "192.168.0.1",
                    Some(54587),
                    Some("192.168.0.233"),
                    Some(80),
                    "Express 7",
                ),
                // 0|Ubiquiti|UniFi Network|9.4.19|201|Threat Detected and Blocked|7|proto=TCP src=10.0.0.100
                ev(
                    F::UnifiCef,
                    Some(A::Drop),
                    "ET DROP Dshield Block Listed Source group 1",
                    "",
                    "tcp",
                    "10.0.0.100",
                    Some(52331),
                    Some("192.168.0.233"),
                    Some(443),
                    "Express 7",
                ),
                // Aug 30 19:53:21 Express-7 CEF:0|Ubiquiti|UniFi Network|9.4.19|201|Threat Detected and Bloc
                ev(
                    F::UnifiCef,
                    Some(A::Drop),
                    "ET DROP Dshield Block Listed Source group 1",
                    "",
                    "tcp",
                    "193.163.125.170",
                    Some(52331),
                    Some("192.168.0.233"),
                    Some(443),
                    "Express-7",
                ),
                // 2026-07-17T10:51:14+02:00 unifi.example.local Jul 17 10:51:14 CONTROLLER CEF:0|Ubiquiti|Un
                NotFirewall,
                // 2026-07-17T10:40:42+02:00 unifi.example.local Jul 17 10:40:42 CONTROLLER CEF:0|Ubiquiti|Un
                NotFirewall,
                // 2026-07-17T10:14:14+02:00 unifi.example.local Jul 17 10:14:14 CONTROLLER CEF:0|Ubiquiti|Un
                NotFirewall,
                // Jul 30 05:18:58 udr7 CEF:0|Ubiquiti|UniFi Network|9.3.45|546|Admin Made Config Changes|2|U
                NotFirewall,
                // Jul 30 05:35:34 udr7 CEF:0|Ubiquiti|UniFi Network|9.3.45|400|WiFi Client Connected|1|UNIFI
                NotFirewall,
            ],
        ),
        (
            "pfsense-opnsense-filterlog",
            vec![
                // <134>Jul  3 19:10:30 filterlog[72237]: 146,,,1535324496,igb1.12,match,block,in,4,0x0,,63,1
                ev(
                    F::Filterlog,
                    Some(A::Drop),
                    "1535324496",
                    "igb1.12",
                    "tcp",
                    "10.170.12.50",
                    Some(49724),
                    Some("1.1.1.1"),
                    Some(853),
                    "192.0.2.1",
                ),
                // <134>Jul  3 19:10:30 filterlog[72237]: 176,,,1520797901,igb1.27,match,pass,in,4,0xb8,,64,5
                ev(
                    F::Filterlog,
                    Some(A::Accept),
                    "1520797901",
                    "igb1.27",
                    "udp",
                    "10.170.27.27",
                    Some(123),
                    Some("216.229.4.66"),
                    Some(123),
                    "192.0.2.1",
                ),
                // <134>Jul  3 19:10:31 filterlog[72237]: 6,,,1000000105,igb1.27,match,block,in,6,0x00,0xf627
                ev(
                    F::Filterlog,
                    Some(A::Drop),
                    "1000000105",
                    "igb1.27",
                    "udp",
                    "fe80::208:9bff:fef3:652b",
                    Some(546),
                    Some("ff02::1:2"),
                    Some(547),
                    "192.0.2.1",
                ),
                // <134>Jul  3 19:10:32 filterlog[72237]: 146,,,1535324496,igb1.12,match,block,in,4,0x0,,63,2
                ev(
                    F::Filterlog,
                    Some(A::Drop),
                    "1535324496",
                    "igb1.12",
                    "tcp",
                    "10.170.12.50",
                    Some(49728),
                    Some("1.1.1.1"),
                    Some(853),
                    "192.0.2.1",
                ),
                // <134>Jul  3 19:10:33 filterlog[72237]: 199,,,1557957510,igb1.12,match,pass,in,4,0xc0,,1,0,
                ev(
                    F::Filterlog,
                    Some(A::Accept),
                    "1557957510",
                    "igb1.12",
                    "igmp",
                    "10.170.12.17",
                    None,
                    Some("239.255.255.250"),
                    None,
                    "192.0.2.1",
                ),
                // <134>Jul  4 11:10:45 filterlog[72237]: 176,,,1520797901,igb1.10,match,pass,in,4,0x0,,64,62
                ev(
                    F::Filterlog,
                    Some(A::Accept),
                    "1520797901",
                    "igb1.10",
                    "icmp",
                    "10.100.10.30",
                    None,
                    Some("142.250.114.105"),
                    None,
                    "192.0.2.1",
                ),
                // <134>1 2021-07-03T19:10:14.578288-05:00 pfSense.example.com filterlog 72237 - - 146,,,1535
                ev(
                    F::Filterlog,
                    Some(A::Drop),
                    "1535324496",
                    "igb1.12",
                    "tcp",
                    "10.170.12.50",
                    Some(49652),
                    Some("1.1.1.1"),
                    Some(853),
                    "pfSense.example.com",
                ),
                // <134>1 2021-07-03T19:10:14.578380-05:00 pfSense.example.com filterlog 72237 - - 118,,,1534
                ev(
                    F::Filterlog,
                    Some(A::Accept),
                    "1534283903",
                    "igb1.12",
                    "tcp",
                    "10.170.12.21",
                    Some(62132),
                    Some("127.0.0.1"),
                    Some(53),
                    "pfSense.example.com",
                ),
                // <134>1 2021-07-03T19:10:15.590303-05:00 pfSense.example.com filterlog 72237 - - 115,,,1534
                ev(
                    F::Filterlog,
                    Some(A::Accept),
                    "1534283903",
                    "igb1.27",
                    "udp",
                    "10.170.27.9",
                    Some(26641),
                    Some("192.168.1.1"),
                    Some(53),
                    "pfSense.example.com",
                ),
                // <134>Jan 1 02:21:38 firewall.opnsense.net filterlog[97530]: 146,,,1535324496,igb1.12,match
                ev(
                    F::Filterlog,
                    Some(A::Drop),
                    "1535324496",
                    "igb1.12",
                    "tcp",
                    "10.170.12.50",
                    Some(49724),
                    Some("175.16.199.1"),
                    Some(853),
                    "firewall.opnsense.net",
                ),
                // <134>1 2022-06-09T14:44:11-06:00 OPNsense.example.com filterlog 76404 - [meta sequenceId="
                ev(
                    F::Filterlog,
                    Some(A::Accept),
                    "fae559338f65e11c53669fc3642c93c2",
                    "ixl1_vlan70",
                    "tcp",
                    "192.168.1.1",
                    Some(40370),
                    Some("10.10.10.10"),
                    Some(80),
                    "OPNsense.example.com",
                ),
                // Jan 22 18:34:00 filterlog: 65,,,0,vmx1,match,pass,out,4,0x0,,63,21011,0,none,1,icmp,56,192
                ev(
                    F::Filterlog,
                    Some(A::Accept),
                    "65",
                    "vmx1",
                    "icmp",
                    "192.168.105.11",
                    None,
                    Some("192.168.105.1"),
                    None,
                    "192.0.2.1",
                ),
                // 1 2021-08-04T06:59:07.691848+04:00 BBFW01.posoiden.local filterlog 48906 - - 98,,,16277109
                ev(
                    F::Filterlog,
                    Some(A::Accept),
                    "1627710987",
                    "vmx1",
                    "tcp",
                    "10.10.10.100",
                    Some(1029),
                    Some("13.235.226.255"),
                    Some(443),
                    "BBFW01.posoiden.local",
                ),
                // 1 2021-08-03T06:30:54.540152+04:00 BBFW01.posoiden.local filterlog 48906 - - 120,,,1626889
                ev(
                    F::Filterlog,
                    Some(A::Accept),
                    "1626889852",
                    "ovpns2",
                    "udp",
                    "10.10.100.100",
                    Some(59128),
                    Some("10.10.10.1"),
                    Some(53),
                    "BBFW01.posoiden.local",
                ),
                // Sep 28 10:38:24 pfSense filterlog: 53,,,1000102631,em0,match,block,in,4,0x0,,64,600,0,none
                ev(
                    F::Filterlog,
                    Some(A::Drop),
                    "1000102631",
                    "em0",
                    "tcp",
                    "10.0.2.2",
                    Some(53792),
                    Some("10.0.2.15"),
                    Some(22),
                    "pfSense",
                ),
                // Sep 28 10:38:41 pfSense filterlog: 6,,,1000102434,em0,match,block,out,4,0x0,,64,0,0,DF,6,t
                ev(
                    F::Filterlog,
                    Some(A::Drop),
                    "1000102434",
                    "em0",
                    "tcp",
                    "10.0.2.15",
                    Some(22),
                    Some("10.0.2.2"),
                    Some(53742),
                    "pfSense",
                ),
                // <134>1 2022-09-06T18:37:34+02:00 opnsense filterlog 69805 - [meta sequenceId="2633354"] 10
                ev(
                    F::Filterlog,
                    Some(A::Accept),
                    "40b9591224d055de2beec8b74ea486b1",
                    "re0",
                    "udp",
                    "68.41.165.77",
                    Some(64752),
                    Some("10.0.0.200"),
                    Some(51918),
                    "opnsense",
                ),
                // <134>1 2022-09-06T18:37:34+02:00 opnsense filterlog 69805 - [meta sequenceId="2633355"] 95
                ev(
                    F::Filterlog,
                    Some(A::Accept),
                    "8a2005c53e3f5653fc9a2e2e81bde263",
                    "re0",
                    "tcp",
                    "96.235.167.197",
                    Some(61145),
                    Some("10.0.0.200"),
                    Some(51918),
                    "opnsense",
                ),
                // <134>1 2022-09-06T19:00:06+02:00 opnsense filterlog 57126 - [meta sequenceId="2667099"] 98
                ev(
                    F::Filterlog,
                    Some(A::Accept),
                    "881dd59a3e942966c90498ac104715a0",
                    "re0",
                    "udp",
                    "2008:8a0:702e:ce00:acc6:c7ee:fa01:2f8a",
                    Some(6881),
                    Some("2c02:2454:ada:d900::1738"),
                    Some(51918),
                    "opnsense",
                ),
                // <134>1 2022-09-06T19:00:06+02:00 opnsense filterlog 57126 - [meta sequenceId="2667099"] 98
                ev(
                    F::Filterlog,
                    Some(A::Drop),
                    "64d253df-ef65-4b56-9df4-c03fc11b8ce4",
                    "re0",
                    "udp",
                    "2008:8a0:702e:ce00:acc6:c7ee:fa01:2f8a",
                    Some(6881),
                    Some("2c02:2454:ada:d900::1738"),
                    Some(51918),
                    "opnsense",
                ),
                // <134>1 2025-11-06T11:42:14.270685+00:00 firewall.lan filterlog 92653 - - 620,,,1644355515,
                ev(
                    F::Filterlog,
                    Some(A::Drop),
                    "1644355515",
                    "vtnet0.10",
                    "tcp",
                    "192.168.10.110",
                    Some(55726),
                    Some("192.168.5.6"),
                    Some(443),
                    "firewall.lan",
                ),
                // <134>1 2025-11-06T11:47:38.269437+00:00 firewall.lan filterlog 92653 - - 7,,,1000000102,vt
                ev(
                    F::Filterlog,
                    Some(A::Drop),
                    "1000000102",
                    "vtnet0.5",
                    "tcp",
                    "192.168.5.6",
                    Some(58014),
                    Some("192.168.1.100"),
                    Some(80),
                    "firewall.lan",
                ),
                // Sep 30 14:35:50 pfSense filterlog: 53,,,1000102631,em0,match,block,in,4,0x0,,64,892,0,none
                ev(
                    F::Filterlog,
                    Some(A::Drop),
                    "1000102631",
                    "em0",
                    "tcp",
                    "10.0.2.2",
                    Some(59576),
                    Some("10.0.2.15"),
                    Some(22),
                    "pfSense",
                ),
            ],
        ),
        (
            "mikrotik-routeros",
            vec![
                // 2023-03-18T20:35:05.734637+01:00 10.120.127.1 firewall,info drop-in input: in:ether1-WAN o
                ev(
                    F::Mikrotik,
                    Some(A::Drop),
                    "drop-in",
                    "ether1-WAN",
                    "udp",
                    "186.26.78.68",
                    Some(44355),
                    Some("81.82.202.145"),
                    Some(53),
                    "10.120.127.1",
                ),
                // 2023-03-19T12:34:09.757188+01:00 10.120.127.1 system,error,critical login failure for user
                NotFirewall,
                // 2026-05-31T00:00:18.676257+02:00 gw firewall,info forward: in:WAN out:LAN, connection-stat
                ev(
                    F::Mikrotik,
                    None,
                    "forward",
                    "WAN",
                    "udp",
                    "2001:db8:1234::1",
                    Some(17850),
                    Some("2001:db8:1234::2"),
                    Some(51413),
                    "gw",
                ),
                // 2026-05-31T11:53:54.575688+02:00 gw firewall,info input: in:WAN out:(unknown 0), connectio
                ev(
                    F::Mikrotik,
                    None,
                    "input",
                    "WAN",
                    "tcp",
                    "192.0.2.1",
                    Some(56282),
                    Some("192.0.2.2"),
                    Some(36228),
                    "gw",
                ),
                // 2023-03-18T20:36:59.594792+01:00 10.120.127.1 firewall,info drop-tcp input: in:ether1-WAN
                ev(
                    F::Mikrotik,
                    Some(A::Drop),
                    "drop-tcp",
                    "ether1-WAN",
                    "tcp",
                    "36.97.161.219",
                    Some(59388),
                    Some("80.82.202.145"),
                    Some(24),
                    "10.120.127.1",
                ),
                // 2025-11-23T22:19:44.166891-05:00 192.168.0.1 firewall,info [drop-input] input: in:PPPoE ou
                ev(
                    F::Mikrotik,
                    Some(A::Drop),
                    "[drop-input]",
                    "PPPoE",
                    "udp",
                    "142.250.69.74",
                    Some(443),
                    Some("222.222.222.222"),
                    Some(43186),
                    "192.168.0.1",
                ),
                // 2025-11-23T22:20:33.116746-05:00 192.168.0.1 firewall,info [drop-input] input: in:PPPoE ou
                ev(
                    F::Mikrotik,
                    Some(A::Drop),
                    "[drop-input]",
                    "PPPoE",
                    "tcp",
                    "176.65.149.194",
                    Some(53180),
                    Some("222.222.222.222"),
                    Some(8000),
                    "192.168.0.1",
                ),
                // 2025-11-23T22:20:34.817123-05:00 192.168.0.1 firewall,info [drop-input] input: in:PPPoE ou
                ev(
                    F::Mikrotik,
                    Some(A::Drop),
                    "[drop-input]",
                    "PPPoE",
                    "udp",
                    "142.250.69.74",
                    Some(443),
                    Some("222.222.222.222"),
                    Some(52256),
                    "192.168.0.1",
                ),
                // <30>May 30 19:41:39 MikroTik LOGDROP LogDrop: in:2.1-Net out:(none), proto ICMP (type 8, c
                ev(
                    F::Mikrotik,
                    Some(A::Drop),
                    "LOGDROP",
                    "2.1-Net",
                    "icmp",
                    "175.1.1.1",
                    None,
                    Some("216.1.1.1"),
                    None,
                    "MikroTik",
                ),
            ],
        ),
        (
            "linux-netfilter",
            vec![
                // Jan  8 03:37:09 example-host kernel: iptables DROP_INPUT: IN=eth0 OUT= MAC=90:10:35:5a:1e:
                ev(
                    F::Netfilter,
                    Some(A::Drop),
                    "iptables DROP_INPUT",
                    "eth0",
                    "tcp",
                    "203.0.113.36",
                    Some(17805),
                    Some("172.16.54.114"),
                    Some(445),
                    "example-host",
                ),
                // Jan  8 03:37:57 example-host kernel: iptables DROP_INPUT: IN=eth0 OUT= MAC=90:10:35:5a:1e:
                ev(
                    F::Netfilter,
                    Some(A::Drop),
                    "iptables DROP_INPUT",
                    "eth0",
                    "tcp",
                    "198.51.100.198",
                    Some(47091),
                    Some("172.16.54.114"),
                    Some(1433),
                    "example-host",
                ),
                // Jan  8 03:40:25 example-host kernel: iptables DROP_INPUT: IN=eth0 OUT= MAC=90:10:35:5a:1e:
                ev(
                    F::Netfilter,
                    Some(A::Drop),
                    "iptables DROP_INPUT",
                    "eth0",
                    "tcp",
                    "198.51.100.160",
                    Some(58830),
                    Some("172.16.54.114"),
                    Some(445),
                    "example-host",
                ),
                // Jan  8 03:43:18 example-host kernel: iptables DROP_INPUT: IN=eth0 OUT= MAC=90:10:35:5a:1e:
                ev(
                    F::Netfilter,
                    Some(A::Drop),
                    "iptables DROP_INPUT",
                    "eth0",
                    "tcp",
                    "198.51.100.19",
                    Some(59287),
                    Some("172.16.54.114"),
                    Some(139),
                    "example-host",
                ),
                // Jan 22 09:05:05 ubuntu-bionic kernel: [16571.459614] IN= OUT=lo SRC=2001:0db8:0000:0000:00
                ev(
                    F::Netfilter,
                    None,
                    "",
                    "lo",
                    "icmpv6",
                    "2001:db8::1",
                    None,
                    Some("2001:db8::2"),
                    None,
                    "ubuntu-bionic",
                ),
                // Jan 22 10:52:34 ubuntu-bionic kernel: [  307.757925] IN= OUT=enp0s3 MAC=90:10:12:34:56:78:
                ev(
                    F::Netfilter,
                    None,
                    "",
                    "enp0s3",
                    "icmpv6",
                    "fe80::84:88ff:feae:790a",
                    None,
                    Some("ff02::16"),
                    None,
                    "ubuntu-bionic",
                ),
                // Jan  8 03:37:09 DENY: IN=eth0 OUT= MAC=90:10:28:5f:62:24:90:10:18:5a:89:2a:08:00 SRC=192.0
                ev(
                    F::Netfilter,
                    Some(A::Drop),
                    "DENY",
                    "eth0",
                    "icmp",
                    "192.0.2.71",
                    None,
                    Some("192.0.2.83"),
                    None,
                    "192.0.2.1",
                ),
                // iptables DROP_INPUT: IN=eth0 OUT= MAC=dc:a6:32:bd:54:fb:64:9e:f3:ce:a4:48:08:00 SRC=10.10.
                ev(
                    F::Netfilter,
                    Some(A::Drop),
                    "iptables DROP_INPUT",
                    "eth0",
                    "tcp",
                    "10.10.10.18",
                    Some(443),
                    Some("10.10.10.34"),
                    Some(40702),
                    "192.0.2.1",
                ),
                // Jun  8 14:34:33 sd-126005 kernel: [50028442.088484] IN=enp1s0 OUT= MAC=00:08:a2:0c:1f:12:0
                ev(
                    F::Netfilter,
                    None,
                    "",
                    "enp1s0",
                    "tcp",
                    "195.54.160.107",
                    Some(8080),
                    Some("51.15.166.67"),
                    Some(8123),
                    "sd-126005",
                ),
                // Sep 30 10:09:23 scw-d95986 kernel: [19955416.516358] IN=ens2 OUT= MAC=de:1c:88:64:10:19:5e
                ev(
                    F::Netfilter,
                    None,
                    "",
                    "ens2",
                    "tcp",
                    "62.34.17.168",
                    Some(52220),
                    Some("10.73.140.49"),
                    Some(80),
                    "scw-d95986",
                ),
                // Oct 30 10:09:23 vm-1 kernel: [UFW AUDIT] IN=lo OUT= MAC=00:00:00:00:00:00:00:00:00:00:00:0
                ev(
                    F::Netfilter,
                    None,
                    "[UFW AUDIT]",
                    "lo",
                    "tcp",
                    "127.0.0.1",
                    Some(50616),
                    Some("127.0.0.53"),
                    Some(53),
                    "vm-1",
                ),
                // Feb  4 23:33:37 hostname kernel: IPTABLE IN=eth0 OUT= MAC=ff:ff:ff:ff:ff:ff:00:03:93:db:2e
                ev(
                    F::Netfilter,
                    None,
                    "IPTABLE",
                    "eth0",
                    "udp",
                    "10.4.11.40",
                    Some(49320),
                    Some("255.255.255.255"),
                    Some(2222),
                    "hostname",
                ),
                // Aug 17 10:03:37 myhostname kernel: [4475569.016000] IN= OUT=lo SRC=192.168.2.11 DST=192.16
                ev(
                    F::Netfilter,
                    None,
                    "",
                    "lo",
                    "tcp",
                    "192.168.2.11",
                    Some(43068),
                    Some("192.168.2.11"),
                    Some(22),
                    "myhostname",
                ),
                // Feb  4 23:33:37 hostname kernel: DROP IN= OUT=wlan0 SRC=192.168.1.102 DST=74.125.232.52 LE
                ev(
                    F::Netfilter,
                    Some(A::Drop),
                    "DROP",
                    "wlan0",
                    "tcp",
                    "192.168.1.102",
                    Some(59534),
                    Some("74.125.232.52"),
                    Some(443),
                    "hostname",
                ),
                // Feb  4 23:33:37 hostname kernel: [ 3529.289825] [UFW BLOCK] IN=eth0 OUT= MAC=00:11:22:33:4
                ev(
                    F::Netfilter,
                    Some(A::Drop),
                    "[UFW BLOCK]",
                    "eth0",
                    "udp",
                    "254.253.252.251",
                    Some(53),
                    Some("191.192.193.194"),
                    Some(36427),
                    "hostname",
                ),
                // Sep 20 15:52:00 managerHost kernel: [ 2870.303541] [UFW AUDIT] IN= OUT=ppp0 SRC=117.197.24
                ev(
                    F::Netfilter,
                    None,
                    "[UFW AUDIT]",
                    "ppp0",
                    "udp",
                    "117.197.243.67",
                    Some(57548),
                    Some("218.248.255.163"),
                    Some(53),
                    "managerHost",
                ),
            ],
        ),
        (
            "syslog-headers",
            vec![
                // <134>1 2021-07-03T19:10:14.578288-05:00 pfSense.example.com filterlog 72237 - - 146,,,1535
                ev(
                    F::Filterlog,
                    Some(A::Drop),
                    "1535324496",
                    "igb1.12",
                    "tcp",
                    "10.170.12.50",
                    Some(49652),
                    Some("1.1.1.1"),
                    Some(853),
                    "pfSense.example.com",
                ),
                // <134>1 2022-06-09T14:44:11-06:00 OPNsense.example.com filterlog 76404 - [meta sequenceId="
                ev(
                    F::Filterlog,
                    Some(A::Accept),
                    "fae559338f65e11c53669fc3642c93c2",
                    "ixl1_vlan70",
                    "tcp",
                    "192.168.1.1",
                    Some(40370),
                    Some("10.10.10.10"),
                    Some(80),
                    "OPNsense.example.com",
                ),
                // 1 2021-08-04T06:59:07.691848+04:00 BBFW01.posoiden.local filterlog 48906 - - 98,,,16277109
                ev(
                    F::Filterlog,
                    Some(A::Accept),
                    "1627710987",
                    "vmx1",
                    "tcp",
                    "10.10.10.100",
                    Some(1029),
                    Some("13.235.226.255"),
                    Some(443),
                    "BBFW01.posoiden.local",
                ),
                // <134>Jul  3 19:10:30 filterlog[72237]: 146,,,1535324496,igb1.12,match,block,in,4,0x0,,63,1
                ev(
                    F::Filterlog,
                    Some(A::Drop),
                    "1535324496",
                    "igb1.12",
                    "tcp",
                    "10.170.12.50",
                    Some(49724),
                    Some("1.1.1.1"),
                    Some(853),
                    "192.0.2.1",
                ),
                // <134>Jan 1 02:21:38 firewall.opnsense.net filterlog[97530]: 146,,,1535324496,igb1.12,match
                ev(
                    F::Filterlog,
                    Some(A::Drop),
                    "1535324496",
                    "igb1.12",
                    "tcp",
                    "10.170.12.50",
                    Some(49724),
                    Some("175.16.199.1"),
                    Some(853),
                    "firewall.opnsense.net",
                ),
                // <13>Jul  5 13:31:11 unifi-r1 [VPN_LAN-D-10004] DESCR="Block VPN to Internal - Other" IN=wg
                ev(
                    F::Unifi,
                    Some(A::Drop),
                    "VPN_LAN-D-10004",
                    "wgsrv1",
                    "tcp",
                    "192.168.63.120",
                    Some(51523),
                    Some("10.95.75.174"),
                    Some(80),
                    "unifi-r1",
                ),
                // <161>Oct 10 07:25:12 Hostname kernel: [wan-lan-default-D]IN=eth0 OUT= MAC=90:10:20:76:8d:2
                ev(
                    F::Unifi,
                    Some(A::Drop),
                    "wan-lan-default-D",
                    "eth0",
                    "tcp",
                    "67.43.156.15",
                    Some(38842),
                    Some("10.4.0.5"),
                    Some(443),
                    "Hostname",
                ),
                // 2026-07-17T10:51:14+02:00 unifi.example.local Jul 17 10:51:14 CONTROLLER CEF:0|Ubiquiti|Un
                NotFirewall,
                // 2021-03-12T14:10:18Z Hostname kernel: [wan-lan-default-D]IN=eth0 OUT= MAC=90:10:20:76:8d:2
                ev(
                    F::Unifi,
                    Some(A::Drop),
                    "wan-lan-default-D",
                    "eth0",
                    "tcp",
                    "67.43.156.15",
                    Some(38842),
                    Some("10.4.0.5"),
                    Some(443),
                    "Hostname",
                ),
                // May  5 20:46:45 My-Office-Gateway user.info kernel: TTL=126 ID=15317 DF PROTO=TCP SPT=5934
                Unparsed(Format::Netfilter),
                // Jul  5 04:01:40 unifi.example.com 2025-07-05T04: 01:40.124Z unifi-r1 CEF:0|Ubiquiti|UniFi
                NotFirewall,
                // Jun 27 09:02:22 Dream-Machine-Pro Dream-Machine-Pro sshd[454008]: Failed keyboard-interact
                NotFirewall,
                // Aug 30 19:53:21 Express-7 CEF:0|Ubiquiti|UniFi Network|9.4.19|201|Threat Detected and Bloc
                ev(
                    F::UnifiCef,
                    Some(A::Drop),
                    "ET DROP Dshield Block Listed Source group 1",
                    "",
                    "tcp",
                    "193.163.125.170",
                    Some(52331),
                    Some("192.168.0.233"),
                    Some(443),
                    "Express-7",
                ),
                // Jan 22 18:34:00 filterlog: 65,,,0,vmx1,match,pass,out,4,0x0,,63,21011,0,none,1,icmp,56,192
                ev(
                    F::Filterlog,
                    Some(A::Accept),
                    "65",
                    "vmx1",
                    "icmp",
                    "192.168.105.11",
                    None,
                    Some("192.168.105.1"),
                    None,
                    "192.0.2.1",
                ),
                // Jan  5 20:17:05 MainFirewall kernel: [LAN_LOCAL-default-A]IN=eth0.90 OUT= MAC=90:10:92:6e:
                ev(
                    F::Unifi,
                    Some(A::Accept),
                    "LAN_LOCAL-default-A",
                    "eth0.90",
                    "udp",
                    "192.168.48.137",
                    Some(48689),
                    Some("255.55.174.225"),
                    Some(48689),
                    "MainFirewall",
                ),
                // Apr  7 21:49:03 UDM-Pro [WAN_IN-RET-3006] DESCR="[WAN_IN] PortForward Allow [HTTPS (cli IN
                ev(
                    F::Unifi,
                    Some(A::Accept),
                    "WAN_IN-RET-3006",
                    "eth8",
                    "tcp",
                    "194.230.158.35",
                    Some(38618),
                    Some("192.168.96.10"),
                    Some(10443),
                    "UDM-Pro",
                ),
                // [LAN_IN-2001-A]IN=eth1.40 OUT=eth1 MAC=fc:ec:da:47:47:e6:64:5d:86:dd:43:66:08:00:45:00:00:
                ev(
                    F::Unifi,
                    Some(A::Accept),
                    "LAN_IN-2001-A",
                    "eth1.40",
                    "udp",
                    "192.168.40.102",
                    Some(52295),
                    Some("192.168.1.21"),
                    Some(53),
                    "192.0.2.1",
                ),
            ],
        ),
    ])
}

fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter(|l| !l.trim().is_empty())
}

#[test]
fn every_reference_line_gives_the_written_out_fields() {
    let expected = expected();
    let ctx = context(Utc.with_ymd_and_hms(2026, 12, 1, 6, 0, 0).unwrap());
    for (file, text) in FILES {
        let want = &expected[file];
        assert_eq!(
            lines(text).count(),
            want.len(),
            "{file}: one expectation per line"
        );
        for (n, (line, want)) in lines(text).zip(want).enumerate() {
            let mut got = parse(line, &ctx).outcome;
            if let Outcome::Event(e) = &mut got {
                e.time = DateTime::<Utc>::MIN_UTC;
            }
            assert_eq!(&got, want, "{file} line {}: {line}", n + 1);
        }
    }
}

/// The event time of a line, received `after` the time the line itself states (`stated`).
fn time_of(line: &str, received: DateTime<Utc>, zone: Zone) -> (DateTime<Utc>, bool) {
    let ctx = Context {
        received,
        zone,
        sender: None,
    };
    let parsed = parse(line, &ctx);
    match parsed.outcome {
        Outcome::Event(e) => (e.time, parsed.time_fell_back),
        other => panic!("not an event: {other:?}"),
    }
}

#[test]
fn times_come_from_the_line_in_its_zone() {
    let utc = |y, mo, d, h, mi, s| Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap();
    // RFC 5424 with an offset: the zone setting does not matter.
    let line = "<134>1 2022-06-09T14:44:11-06:00 OPNsense.example.com filterlog 76404 - [meta sequenceId=\"1\"] 124,,,fae559338f65e11c53669fc3642c93c2,ixl1_vlan70,match,pass,out,4,0x0,,63,5687,0,DF,6,tcp,60,192.168.1.1,10.10.10.10,40370,80,0,S,3364871769,,65535,,mss;sackOK;TS;nop;wscale";
    let at = utc(2022, 6, 9, 20, 44, 11);
    assert_eq!(
        time_of(
            line,
            at + chrono::Duration::seconds(2),
            Zone::Named(chrono_tz::Asia::Tokyo)
        ),
        (at, false)
    );
    // RFC 3164 in the configured zone (CEST, UTC+2 in July).
    let line = "<13>Jul  5 13:31:11 unifi-r1 [VPN_LAN-D-10004] DESCR=\"Block VPN to Internal - Other\" IN=wgsrv1 OUT=br3 MAC= SRC=192.168.63.120 DST=10.95.75.174 LEN=64 TOS=00 PREC=0x00 TTL=253 ID=0 DF PROTO=TCP SPT=51523 DPT=80 SEQ=3925309497 ACK=0 WINDOW=65535 SYN URGP=0 MARK=1a0000 ";
    let at = utc(2026, 7, 5, 11, 31, 11);
    assert_eq!(
        time_of(
            line,
            at + chrono::Duration::seconds(5),
            Zone::Named(chrono_tz::Europe::Paris)
        ),
        (at, false)
    );
    // The same line read as UTC lies two hours in the future of that receive time: receive time, counted.
    let received = at + chrono::Duration::seconds(5);
    assert_eq!(
        time_of(line, received, Zone::Named(chrono_tz::UTC)),
        (received, true)
    );
    // UniFi CEF: UNIFIutcTime wins over the header.
    let line = "Aug 30 19:53:21 Express-7 CEF:0|Ubiquiti|UniFi Network|9.4.19|201|Threat Detected and Blocked|7|proto=TCP src=193.163.125.170 spt=52331 dst=192.168.0.233 dpt=443 UNIFIutcTime=2025-08-30T17:53:21.915Z msg=x";
    let at = Utc.timestamp_millis_opt(1_756_576_401_915).unwrap();
    assert_eq!(time_of(line, at, Zone::Named(chrono_tz::UTC)), (at, false));
}

#[test]
fn parse_line_entry_point_parses() {
    let line = "Sep 28 10:38:24 pfSense filterlog: 53,,,1000102631,em0,match,block,in,4,0x0,,64,600,0,none,6,tcp,44,10.0.2.2,10.0.2.15,53792,22,0,S,31552001,,65535,,mss";
    assert!(matches!(parse_line(line), Outcome::Event(e) if e.dst_port == Some(22)));
    assert_eq!(parse_line("hello"), NotFirewall);
}

#[test]
fn broken_lines_of_each_format_count_as_unparsed() {
    let cases = [
        ("Sep 28 10:38:24 pfSense filterlog: 53,,,1,em0,match,block,in,4,0x0", F::Filterlog),
        ("fw kernel: [LAN_IN-D-4001] IN=eth0 OUT= SRC=1.2.3 DST=10.0.0.1 PROTO=TCP", F::Unifi),
        ("fw kernel: DROP IN=eth0 OUT= SRC=1.2.3.4 DST=10.0.0.1 PROTO=TCP SPT=99999 DPT=1", F::Netfilter),
        ("fw CEF:0|Ubiquiti|UniFi Network|9|201|Threat Detected and Blocked|7|src=nope", F::UnifiCef),
        ("gw firewall,info input: in:WAN out:(unknown 0), proto TCP (SYN), 1.2.3.4:5->nowhere, len 4", F::Mikrotik),
        ("Mar  1 00:00:00 gw firewall,info something odd", F::Mikrotik),
    ];
    for (line, format) in cases {
        assert_eq!(parse_line(line), Unparsed(format), "{line}");
    }
}

fn sample_lines() -> Vec<&'static str> {
    FILES.iter().flat_map(|(_, text)| lines(text)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any sample line with bytes replaced, inserted or cut never panics, and whatever parses keeps
    /// addresses that occur in the line.
    #[test]
    fn mutated_lines_never_panic(
        pick in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<char>(), 0u8..3), 0..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let all = sample_lines();
        let mut line: Vec<char> = all[pick.index(all.len())].chars().collect();
        for (at, c, kind) in edits {
            let i = at.index(line.len().max(1)).min(line.len());
            match kind {
                0 if i < line.len() => line[i] = c,
                1 => line.insert(i, c),
                _ if i < line.len() => { line.remove(i); }
                _ => {}
            }
        }
        let keep = cut.index(line.len() + 1);
        let text: String = line[..keep].iter().collect();
        let _ = parse_line(&text);
    }

    /// Arbitrary text never panics either.
    #[test]
    fn arbitrary_text_never_panics(text in ".{0,300}") {
        let _ = parse_line(&text);
    }
}
