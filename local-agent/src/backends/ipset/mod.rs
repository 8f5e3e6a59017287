//! The `ipset` backend, for older kernels and NAS systems where iptables is the firewall: two `hash:net`
//! sets with per-entry timeouts, a `PORTCULLIS` chain in iptables and ip6tables matching them, and a jump
//! to it from each configured built-in chain.
//!
//! ```text
//! ipset create portcullis4 hash:net family inet  timeout 0 maxelem 262144
//! ipset create portcullis6 hash:net family inet6 timeout 0 maxelem 262144
//! iptables  -N PORTCULLIS; iptables  -A PORTCULLIS -m set --match-set portcullis4 src -j DROP
//! iptables  -I INPUT -j PORTCULLIS   (and FORWARD)
//! ip6tables … the same with portcullis6
//! ```
//! `hash:net` holds addresses and CIDRs alike, overlaps included. Each commit is one `ipset -exist restore`
//! of `del`/`add … timeout N` lines: not one kernel transaction as with nftables, but every line is built
//! from parsed values and checked timeouts, so no line can stop the restore half-way (CrowdSec's ipset
//! failures came from negative and sub-second timeouts, `reference/firewalls.md` §5–6). ipset timeouts
//! stop at 2,147,483 s (24.8 days) and `timeout 0` means permanent, so longer blocks are written with the
//! cap: reconcile re-adds them when the kernel drops them, and the agent lifts them at their real expiry.

use std::fmt::Write as _;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use queue_message::Target;
use serde::Deserialize;

use super::exec::{validate_netns, Runner};
use super::staged::Staged;
use super::{parse_table, Backend, BackendError, CommitStats};
use crate::config::ConfigError;

/// Largest per-entry timeout ipset accepts.
pub const MAX_TIMEOUT_SECS: i64 = 2_147_483;

/// What the rule does with a blocked packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// `-j DROP` (default).
    #[default]
    Drop,
    /// `-j REJECT`.
    Reject,
}

fn default_set_v4() -> String {
    "portcullis4".to_owned()
}
fn default_set_v6() -> String {
    "portcullis6".to_owned()
}
fn default_chain() -> String {
    "PORTCULLIS".to_owned()
}
fn default_chains() -> Vec<String> {
    vec!["INPUT".to_owned(), "FORWARD".to_owned()]
}
fn default_maxelem() -> u32 {
    262_144
}
fn default_ipset() -> String {
    "ipset".to_owned()
}
fn default_iptables() -> String {
    "iptables".to_owned()
}
fn default_ip6tables() -> String {
    "ip6tables".to_owned()
}

/// `[firewall.ipset]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpsetConfig {
    /// IPv4 set name (default `portcullis4`).
    #[serde(default = "default_set_v4")]
    pub set_v4: String,
    /// IPv6 set name (default `portcullis6`).
    #[serde(default = "default_set_v6")]
    pub set_v6: String,
    /// The agent's own iptables/ip6tables chain (default `PORTCULLIS`).
    #[serde(default = "default_chain")]
    pub chain: String,
    /// Built-in `filter` chains that jump to it (default `["INPUT", "FORWARD"]`; also `OUTPUT`,
    /// `DOCKER-USER`).
    #[serde(default = "default_chains")]
    pub chains: Vec<String>,
    /// `drop` (default) or `reject`.
    #[serde(default)]
    pub verdict: Verdict,
    /// Capacity of each set (default 262144; "Hash is full" beyond it).
    #[serde(default = "default_maxelem")]
    pub maxelem: u32,
    /// Run every command inside this network namespace (`ip netns exec NAME …`).
    #[serde(default)]
    pub netns: Option<String>,
    /// The ipset program (default `ipset`).
    #[serde(default = "default_ipset")]
    pub ipset: String,
    /// The iptables program (default `iptables`).
    #[serde(default = "default_iptables")]
    pub iptables: String,
    /// The ip6tables program (default `ip6tables`).
    #[serde(default = "default_ip6tables")]
    pub ip6tables: String,
}

impl Default for IpsetConfig {
    fn default() -> Self {
        Self {
            set_v4: default_set_v4(),
            set_v6: default_set_v6(),
            chain: default_chain(),
            chains: default_chains(),
            verdict: Verdict::default(),
            maxelem: default_maxelem(),
            netns: None,
            ipset: default_ipset(),
            iptables: default_iptables(),
            ip6tables: default_ip6tables(),
        }
    }
}

fn is_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Parses and checks `[firewall.ipset]`. Pure.
pub fn validate(table: Option<toml::Value>) -> Result<IpsetConfig, ConfigError> {
    let config: IpsetConfig = parse_table("firewall.ipset", table)?;
    for (key, name) in [("set_v4", &config.set_v4), ("set_v6", &config.set_v6)] {
        if !is_name(name, 31) {
            return Err(ConfigError::new(
                format!("firewall.ipset.{key}"),
                format!("`{name}` is not an ipset name (≤ 31 letters, digits, `_`, `-`)"),
            ));
        }
    }
    if config.set_v4 == config.set_v6 {
        return Err(ConfigError::new(
            "firewall.ipset.set_v6",
            "must differ from set_v4",
        ));
    }
    if !is_name(&config.chain, 28) {
        return Err(ConfigError::new(
            "firewall.ipset.chain",
            format!("`{}` is not an iptables chain name", config.chain),
        ));
    }
    if config.chains.is_empty() {
        return Err(ConfigError::new(
            "firewall.ipset.chains",
            "at least one chain is needed, e.g. [\"INPUT\"]",
        ));
    }
    for chain in &config.chains {
        if !is_name(chain, 28) || chain == &config.chain {
            return Err(ConfigError::new(
                "firewall.ipset.chains",
                format!("`{chain}` is not a built-in chain to jump from"),
            ));
        }
    }
    if config.maxelem == 0 {
        return Err(ConfigError::new(
            "firewall.ipset.maxelem",
            "must be positive",
        ));
    }
    if let Some(ns) = &config.netns {
        validate_netns("firewall.ipset.netns", ns)?;
    }
    Ok(config)
}

/// Builds the backend (checks nothing yet; [`Backend::init`] creates the sets and rules).
pub async fn build(config: IpsetConfig) -> Result<Box<dyn Backend>, BackendError> {
    Ok(Box::new(Ipset::new(config)))
}

/// The ipset backend.
#[derive(Debug)]
pub struct Ipset {
    config: IpsetConfig,
    runner: Runner,
    staged: Staged,
}

/// Kernel timeout for a block ending at `expires_at`: 1 s to [`MAX_TIMEOUT_SECS`] (24.8 days), never 0.
///
/// `timeout 0` means "permanent" to ipset, so a longer block is capped rather than written as 0: the kernel
/// drops it after 24.8 days and reconcile re-adds it with a fresh timeout, while the agent still lifts it
/// at its real expiry. A permanent entry would outlive the agent's state if the agent stopped.
pub fn timeout_secs(now: DateTime<Utc>, expires_at: DateTime<Utc>) -> i64 {
    let secs = (expires_at - now)
        .num_milliseconds()
        .max(0)
        .div_euclid(1000)
        + i64::from((expires_at - now).num_milliseconds().rem_euclid(1000) > 0);
    secs.clamp(1, MAX_TIMEOUT_SECS)
}

impl Ipset {
    /// A backend for `config`; call [`Backend::init`] before use.
    pub fn new(config: IpsetConfig) -> Self {
        let runner = Runner::new(config.netns.clone());
        Self {
            config,
            runner,
            staged: Staged::default(),
        }
    }

    fn set_for(&self, target: &Target) -> &str {
        if target.is_ipv4() {
            &self.config.set_v4
        } else {
            &self.config.set_v6
        }
    }

    async fn install_rules(&self, iptables: &str, set: &str) -> Result<(), BackendError> {
        let c = &self.config;
        let chain = c.chain.as_str();
        let created = self
            .runner
            .run(iptables, &["-w", "-N", chain], None)
            .await?;
        if !created.success && !created.stderr.contains("exists") {
            return Err(BackendError::Rejected(format!(
                "{iptables} -N {chain}: {}",
                created.stderr
            )));
        }
        self.runner
            .run_ok(iptables, &["-w", "-F", chain], None)
            .await?;
        let verdict = match c.verdict {
            Verdict::Drop => "DROP",
            Verdict::Reject => "REJECT",
        };
        self.runner
            .run_ok(
                iptables,
                &[
                    "-w",
                    "-A",
                    chain,
                    "-m",
                    "set",
                    "--match-set",
                    set,
                    "src",
                    "-j",
                    verdict,
                ],
                None,
            )
            .await?;
        for from in &c.chains {
            let present = self
                .runner
                .run(iptables, &["-w", "-C", from, "-j", chain], None)
                .await?;
            if !present.success {
                self.runner
                    .run_ok(iptables, &["-w", "-I", from, "1", "-j", chain], None)
                    .await?;
            }
        }
        // Jumps from built-in chains no longer configured are removed (only ours: `-j PORTCULLIS`).
        for from in ["INPUT", "FORWARD", "OUTPUT"] {
            if c.chains.iter().any(|c| c == from) {
                continue;
            }
            while self
                .runner
                .run(iptables, &["-w", "-D", from, "-j", chain], None)
                .await?
                .success
            {}
        }
        Ok(())
    }

    async fn list_set(&self, set: &str) -> Result<Vec<Target>, BackendError> {
        let mut members = false;
        let mut found = Vec::new();
        self.runner
            .run_lines(&self.config.ipset, &["list", set], |line| {
                if members {
                    if let Some(first) = line.split_whitespace().next() {
                        if let Ok(target) = Target::parse(first) {
                            found.push(target);
                        }
                    }
                } else if line.starts_with("Members:") {
                    members = true;
                }
            })
            .await?;
        Ok(found)
    }
}

#[async_trait]
impl Backend for Ipset {
    fn name(&self) -> &'static str {
        "ipset"
    }

    async fn init(&mut self) -> Result<(), BackendError> {
        let c = &self.config;
        for (set, family) in [(&c.set_v4, "inet"), (&c.set_v6, "inet6")] {
            let maxelem = c.maxelem.to_string();
            let hashsize = (c.maxelem / 4)
                .clamp(1024, 1 << 20)
                .next_power_of_two()
                .to_string();
            self.runner
                .run_ok(
                    &c.ipset,
                    &[
                        "-exist", "create", set, "hash:net", "family", family, "timeout", "0",
                        "hashsize", &hashsize, "maxelem", &maxelem,
                    ],
                    None,
                )
                .await
                .map_err(|e| match e {
                    BackendError::Rejected(text) => BackendError::Rejected(format!(
                        "{text} (if set {set} exists with other settings, remove it with \
                         `ipset destroy {set}` after removing the rules using it)"
                    )),
                    other => other,
                })?;
        }
        self.install_rules(&c.iptables, &c.set_v4).await?;
        self.install_rules(&c.ip6tables, &c.set_v6).await?;
        tracing::info!(
            sets = %format!("{}, {}", c.set_v4, c.set_v6),
            chains = ?c.chains,
            netns = c.netns.as_deref().unwrap_or("-"),
            "ipset sets and iptables rules ready."
        );
        Ok(())
    }

    fn staged(&mut self) -> &mut Staged {
        &mut self.staged
    }

    async fn commit(&mut self) -> Result<CommitStats, BackendError> {
        let staged = self.staged.take();
        if staged.is_empty() {
            return Ok(CommitStats::default());
        }
        let now = Utc::now();
        let mut script = String::with_capacity((staged.adds.len() + staged.removes.len()) * 48);
        let (mut added, mut removed) = (0, 0);
        // Removals first, like the nftables backend.
        let ordered = (staged.removes.into_iter().map(|t| (t, None)))
            .chain(staged.adds.into_iter().map(|(t, e)| (t, Some(e))));
        for (target, change) in ordered {
            let set = self.set_for(&target).to_owned();
            match change {
                Some(expires_at) if expires_at > now => {
                    // Delete first so an existing entry takes the new timeout on every ipset version.
                    let _ = writeln!(script, "del {set} {target}");
                    let _ = writeln!(
                        script,
                        "add {set} {target} timeout {}",
                        timeout_secs(now, expires_at)
                    );
                    added += 1;
                }
                _ => {
                    let _ = writeln!(script, "del {set} {target}");
                    removed += 1;
                }
            }
        }
        self.runner
            .run_ok(
                &self.config.ipset,
                &["-exist", "restore"],
                Some(script.into_bytes()),
            )
            .await?;
        Ok(CommitStats {
            added,
            removed,
            writes: 1,
        })
    }

    async fn list(&mut self) -> Result<Vec<Target>, BackendError> {
        let mut targets = self.list_set(&self.config.set_v4).await?;
        targets.extend(self.list_set(&self.config.set_v6).await?);
        Ok(targets)
    }

    async fn healthcheck(&mut self) -> Result<(), BackendError> {
        let c = &self.config;
        for set in [&c.set_v4, &c.set_v6] {
            self.runner
                .run_ok(&c.ipset, &["list", "-t", set], None)
                .await?;
        }
        for (iptables, set) in [(&c.iptables, &c.set_v4), (&c.ip6tables, &c.set_v6)] {
            let rules = self
                .runner
                .run_ok(iptables, &["-w", "-S", &c.chain], None)
                .await?
                .stdout;
            if !rules.contains(&format!("--match-set {set} src")) {
                return Err(BackendError::Rejected(format!(
                    "{iptables} chain {} does not match set {set}",
                    c.chain
                )));
            }
            for from in &c.chains {
                self.runner
                    .run_ok(iptables, &["-w", "-C", from, "-j", &c.chain], None)
                    .await
                    .map_err(|_| {
                        BackendError::Rejected(format!(
                            "{iptables} chain {from} has no jump to {}",
                            c.chain
                        ))
                    })?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn defaults_and_checks() {
        assert_eq!(validate(None).unwrap(), IpsetConfig::default());
        for (text, key) in [
            ("set_v4 = \"a b\"", "firewall.ipset.set_v4"),
            ("set_v6 = \"portcullis4\"", "firewall.ipset.set_v6"),
            ("chains = []", "firewall.ipset.chains"),
            ("chains = [\"PORTCULLIS\"]", "firewall.ipset.chains"),
            ("maxelem = 0", "firewall.ipset.maxelem"),
            ("netns = \"a/b\"", "firewall.ipset.netns"),
        ] {
            let err = validate(Some(toml::from_str(text).unwrap())).unwrap_err();
            assert_eq!(err.key, key, "{text}");
        }
    }

    #[test]
    fn timeouts_are_never_zero_or_negative() {
        let now = Utc::now();
        assert_eq!(timeout_secs(now, now + Duration::milliseconds(200)), 1);
        assert_eq!(timeout_secs(now, now - Duration::seconds(3)), 1);
        assert_eq!(timeout_secs(now, now + Duration::seconds(90)), 90);
        assert_eq!(timeout_secs(now, now + Duration::milliseconds(90_001)), 91);
        assert_eq!(
            timeout_secs(now, now + Duration::seconds(MAX_TIMEOUT_SECS)),
            MAX_TIMEOUT_SECS
        );
        // Longer blocks (High severity is 30 days) are capped, never 0 (= permanent to ipset).
        for long in [
            Duration::seconds(MAX_TIMEOUT_SECS + 1),
            Duration::days(30),
            Duration::days(3650),
        ] {
            assert_eq!(timeout_secs(now, now + long), MAX_TIMEOUT_SECS);
        }
    }
}
