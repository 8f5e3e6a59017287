//! The `[logs]` section: raw keys as written, validation and defaults in one place, and the validated
//! [`LogsConfig`] the receiver runs on. The section is off when neither `listen_udp` nor `listen_tcp` is
//! set.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use super::envelope::Zone;
use super::event::Action;
use crate::config::ConfigError;
use crate::span::Span;

/// Default `window`.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// Default `spool_max_bytes` (100 MB).
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 100 * 1000 * 1000;
/// Smallest `spool_max_bytes` accepted: a few batches must fit.
pub const MIN_SPOOL_MAX_BYTES: u64 = 1_000_000;

/// Default `allowed_senders`: loopback, RFC 1918, IPv6 unique-local and link-local ranges, since syslog is
/// unauthenticated and the firewall sits on the LAN.
pub const DEFAULT_ALLOWED_SENDERS: [&str; 7] = [
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
];

/// One address or a list (`listen_udp = "192.168.1.10:514"` or `["…", "…"]`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single address.
    One(SocketAddr),
    /// Several addresses.
    Many(Vec<SocketAddr>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<SocketAddr> {
        match self {
            Self::One(a) => vec![a],
            Self::Many(v) => v,
        }
    }
}

/// `[logs]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogs {
    /// UDP addresses to receive syslog on (RFC 5426), e.g. `"192.168.1.10:514"`; LAN side only.
    listen_udp: Option<OneOrMany>,
    /// TCP addresses to receive syslog on (RFC 6587, octet counting or newline framing).
    listen_tcp: Option<OneOrMany>,
    /// Sender networks accepted (default: loopback and private ranges); others are counted and ignored.
    allowed_senders: Option<Vec<IpNet>>,
    /// Summarising window (default `60s`).
    window: Option<Span>,
    /// Aggregate events into rows per window (default true); false ships every event as a row.
    summarize: Option<bool>,
    /// Verdicts shipped: any of `drop`, `reject`, `accept` (default drop and reject).
    actions: Option<Vec<String>>,
    /// Zone of RFC 3164 timestamps: `local` (default) or an IANA name such as `Europe/Berlin`.
    timezone: Option<String>,
    /// Ship firewall-looking lines that did not parse as raw lines (default false).
    ship_unparsed: Option<bool>,
    /// Bound of the on-disk spool in bytes (default 100 MB); the oldest batches go first.
    spool_max_bytes: Option<u64>,
}

/// The validated `[logs]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct LogsConfig {
    /// UDP listen addresses.
    pub listen_udp: Vec<SocketAddr>,
    /// TCP listen addresses.
    pub listen_tcp: Vec<SocketAddr>,
    /// Accepted sender networks.
    pub allowed_senders: Vec<IpNet>,
    /// Summarising window.
    pub window: Duration,
    /// Aggregate per window.
    pub summarize: bool,
    /// Verdicts shipped.
    pub actions: BTreeSet<Action>,
    /// Zone of RFC 3164 timestamps.
    pub timezone: Zone,
    /// Ship unparsed firewall-looking lines raw.
    pub ship_unparsed: bool,
    /// Spool bound in bytes.
    pub spool_max_bytes: u64,
}

impl LogsConfig {
    /// A section with the defaults, listening on the given UDP and TCP addresses.
    pub fn listening(udp: Vec<SocketAddr>, tcp: Vec<SocketAddr>) -> Self {
        Self {
            listen_udp: udp,
            listen_tcp: tcp,
            allowed_senders: default_senders(),
            window: DEFAULT_WINDOW,
            summarize: true,
            actions: BTreeSet::from([Action::Drop, Action::Reject]),
            timezone: Zone::Local,
            ship_unparsed: false,
            spool_max_bytes: DEFAULT_SPOOL_MAX_BYTES,
        }
    }

    /// Whether `sender` may send logs.
    pub fn sender_allowed(&self, sender: std::net::IpAddr) -> bool {
        let sender = match sender {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(sender, std::net::IpAddr::V4),
            v4 @ std::net::IpAddr::V4(_) => v4,
        };
        self.allowed_senders.iter().any(|net| net.contains(&sender))
    }
}

fn default_senders() -> Vec<IpNet> {
    DEFAULT_ALLOWED_SENDERS
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// Validates the section; `Ok(None)` when logs are off (no listen address).
pub fn validate(raw: RawLogs) -> Result<Option<LogsConfig>, ConfigError> {
    let udp = raw.listen_udp.map(OneOrMany::into_vec).unwrap_or_default();
    let tcp = raw.listen_tcp.map(OneOrMany::into_vec).unwrap_or_default();
    if udp.is_empty() && tcp.is_empty() {
        return Ok(None);
    }
    let mut config = LogsConfig::listening(udp, tcp);
    if let Some(senders) = raw.allowed_senders {
        if senders.is_empty() {
            return Err(ConfigError::new(
                "logs.allowed_senders",
                "an empty list would ignore every sender; list the firewall's address",
            ));
        }
        config.allowed_senders = senders;
    }
    if let Some(window) = raw.window {
        let window = window.get();
        if window < Duration::from_secs(1) || window > Duration::from_secs(3600) {
            return Err(ConfigError::new("logs.window", "must be between 1s and 1h"));
        }
        config.window = window;
    }
    if let Some(summarize) = raw.summarize {
        config.summarize = summarize;
    }
    if let Some(actions) = raw.actions {
        let mut set = BTreeSet::new();
        for name in &actions {
            let action = Action::from_name(name).ok_or_else(|| {
                ConfigError::new(
                    "logs.actions",
                    format!("`{name}` is not one of drop, reject, accept"),
                )
            })?;
            set.insert(action);
        }
        if set.is_empty() {
            return Err(ConfigError::new(
                "logs.actions",
                "an empty list would ship nothing; remove the [logs] listen keys instead",
            ));
        }
        config.actions = set;
    }
    if let Some(zone) = raw.timezone {
        config.timezone = if zone.eq_ignore_ascii_case("local") {
            Zone::Local
        } else {
            Zone::Named(zone.parse().map_err(|_| {
                ConfigError::new(
                    "logs.timezone",
                    format!("`{zone}` is not `local` or an IANA zone name such as Europe/Berlin"),
                )
            })?)
        };
    }
    if let Some(ship) = raw.ship_unparsed {
        config.ship_unparsed = ship;
    }
    if let Some(max) = raw.spool_max_bytes {
        if max < MIN_SPOOL_MAX_BYTES {
            return Err(ConfigError::new(
                "logs.spool_max_bytes",
                format!("must be at least {MIN_SPOOL_MAX_BYTES}"),
            ));
        }
        config.spool_max_bytes = max;
    }
    Ok(Some(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<LogsConfig>, ConfigError> {
        validate(toml::from_str(text).expect("valid TOML for RawLogs"))
    }

    #[test]
    fn off_without_listen_keys() {
        assert_eq!(parse("window = \"30s\"").unwrap(), None);
    }

    #[test]
    fn defaults_apply() {
        let c = parse("listen_udp = \"192.168.1.10:514\"").unwrap().unwrap();
        assert_eq!(c.listen_udp, vec!["192.168.1.10:514".parse().unwrap()]);
        assert!(c.listen_tcp.is_empty());
        assert_eq!(c.window, Duration::from_secs(60));
        assert!(c.summarize);
        assert_eq!(c.actions, BTreeSet::from([Action::Drop, Action::Reject]));
        assert_eq!(c.timezone, Zone::Local);
        assert!(!c.ship_unparsed);
        assert_eq!(c.spool_max_bytes, 100_000_000);
        assert!(c.sender_allowed("192.168.1.1".parse().unwrap()));
        assert!(c.sender_allowed("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!c.sender_allowed("203.0.113.9".parse().unwrap()));
    }

    #[test]
    fn every_key_parses() {
        let c = parse(
            r#"
            listen_udp = ["192.168.1.10:514", "[fd00::1]:514"]
            listen_tcp = "192.168.1.10:6514"
            allowed_senders = ["192.168.1.1/32"]
            window = "5m"
            summarize = false
            actions = ["drop", "accept"]
            timezone = "Europe/Berlin"
            ship_unparsed = true
            spool_max_bytes = 5000000
            "#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.listen_udp.len(), 2);
        assert_eq!(c.listen_tcp.len(), 1);
        assert!(c.sender_allowed("192.168.1.1".parse().unwrap()));
        assert!(!c.sender_allowed("192.168.1.2".parse().unwrap()));
        assert_eq!(c.window, Duration::from_secs(300));
        assert!(!c.summarize);
        assert_eq!(c.actions, BTreeSet::from([Action::Drop, Action::Accept]));
        assert_eq!(c.timezone, Zone::Named(chrono_tz::Europe::Berlin));
        assert!(c.ship_unparsed);
        assert_eq!(c.spool_max_bytes, 5_000_000);
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (
                "listen_udp = \"0.0.0.0:514\"\nactions = [\"log\"]",
                "logs.actions",
            ),
            ("listen_udp = \"0.0.0.0:514\"\nactions = []", "logs.actions"),
            (
                "listen_udp = \"0.0.0.0:514\"\ntimezone = \"Mars/Olympus\"",
                "logs.timezone",
            ),
            (
                "listen_udp = \"0.0.0.0:514\"\nwindow = \"0s\"",
                "logs.window",
            ),
            (
                "listen_udp = \"0.0.0.0:514\"\nallowed_senders = []",
                "logs.allowed_senders",
            ),
            (
                "listen_udp = \"0.0.0.0:514\"\nspool_max_bytes = 10",
                "logs.spool_max_bytes",
            ),
        ];
        for (text, key) in cases {
            assert_eq!(parse(text).unwrap_err().key, key, "{text}");
        }
        assert!(toml::from_str::<RawLogs>("listen = 1").is_err());
    }
}
