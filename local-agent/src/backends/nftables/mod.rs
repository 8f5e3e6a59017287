//! The `nftables` backend: the agent's own `inet` table with four sets and one base chain per hook.
//!
//! ```text
//! table inet portcullis {
//!   set addr4 { type ipv4_addr; flags timeout; }            # single addresses: hash sets, fastest
//!   set addr6 { type ipv6_addr; flags timeout; }
//!   set net4  { type ipv4_addr; flags interval, timeout; }  # CIDRs: interval sets, so a /24 blocks a /24
//!   set net6  { type ipv6_addr; flags interval, timeout; }
//!   chain input   { type filter hook input priority -10; policy accept; ip saddr @addr4 counter drop; … }
//!   chain forward { … }
//! }
//! ```
//! Every element carries the kernel timeout of its block, so a dead agent does not leave blocks forever.
//! Each commit is one `nft` transaction (JSON through `nft -j -f -`, or the plain-text `nft -f -` when nft
//! lacks JSON or the batch is large, since nft parses text about 1.7× faster). Semantics that shape the
//! scripts (`reference/firewalls.md` §2): no `destroy` in nft 1.0.6 and an absent element's `delete` aborts
//! the whole batch, so removal is `add X; delete X`; re-adding refreshes a timeout only on kernels ≥ 6.10,
//! so older kernels get `add X; delete X; add X timeout T` (probed once at [`Backend::init`]). Interval sets
//! refuse overlapping elements, so only the networks not inside another blocked network are written (see
//! [`cover`]). Only the agent's table is ever touched; its chains are recreated atomically at init so a
//! changed hook list or priority takes effect.

pub mod cover;
pub mod listing;
pub mod script;

use std::collections::BTreeMap;
use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use queue_message::Target;
use serde::Deserialize;

use super::exec::{validate_netns, Runner};
use super::staged::Staged;
use super::{parse_table, Backend, BackendError, CommitStats};
use crate::config::ConfigError;
pub use cover::NetMirror;
use script::{Batch, SetName};

/// A netfilter hook the agent's chains can attach to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    /// Before routing (all incoming packets).
    Prerouting,
    /// Packets for this host.
    Input,
    /// Packets routed through this host.
    Forward,
    /// Packets this host sends.
    Output,
}

impl Hook {
    /// Every hook the agent may own a chain for.
    pub const ALL: [Self; 4] = [Self::Prerouting, Self::Input, Self::Forward, Self::Output];

    /// The nft keyword (also the chain's name).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prerouting => "prerouting",
            Self::Input => "input",
            Self::Forward => "forward",
            Self::Output => "output",
        }
    }
}

/// What the rules do with a blocked packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Silently drop (default).
    #[default]
    Drop,
    /// Answer with an ICMP error or TCP reset (not allowed on `prerouting`).
    Reject,
}

/// How commits are written to nft.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// JSON when nft supports it, plain text for large batches (≥ `text_threshold` elements) and when it
    /// does not (default).
    #[default]
    Auto,
    /// Always JSON (`nft -j -f -`); fails at init if nft lacks JSON support.
    Json,
    /// Always plain text (`nft -f -`).
    Text,
}

fn default_table() -> String {
    "portcullis".to_owned()
}
fn default_hooks() -> Vec<Hook> {
    vec![Hook::Input, Hook::Forward]
}
fn default_priority() -> i32 {
    -10
}
fn default_true() -> bool {
    true
}
fn default_nft() -> String {
    "nft".to_owned()
}
fn default_text_threshold() -> usize {
    5000
}

/// `[firewall.nftables]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NftablesConfig {
    /// Name of the agent's own `inet` table (default `portcullis`). Nothing outside it is touched.
    #[serde(default = "default_table")]
    pub table: String,
    /// Hooks to drop traffic on (default `["input", "forward"]`; also `prerouting`, `output`).
    #[serde(default = "default_hooks")]
    pub hooks: Vec<Hook>,
    /// Chain priority (default -10: before the usual `filter` chains at 0, so established connections
    /// from a newly blocked address are cut too).
    #[serde(default = "default_priority")]
    pub priority: i32,
    /// `drop` (default) or `reject`.
    #[serde(default)]
    pub verdict: Verdict,
    /// Also drop packets *to* blocked addresses on `forward`/`output`/`prerouting` (stops LAN hosts from
    /// reaching them). Default false: only sources are matched.
    #[serde(default)]
    pub match_destination: bool,
    /// Count matched packets per rule (default true; `nft list table inet portcullis` shows them).
    #[serde(default = "default_true")]
    pub counters: bool,
    /// Run every `nft` command inside this network namespace (`ip netns exec NAME nft …`): for a router
    /// namespace, and how the tests confine the firewall. Default: the agent's own namespace.
    #[serde(default)]
    pub netns: Option<String>,
    /// `auto` (default), `json` or `text`.
    #[serde(default)]
    pub format: Format,
    /// In `auto`, batches with at least this many elements are written as text (default 5000).
    #[serde(default = "default_text_threshold")]
    pub text_threshold: usize,
    /// The nft program (default `nft`, looked up in `PATH`).
    #[serde(default = "default_nft")]
    pub nft: String,
}

impl Default for NftablesConfig {
    fn default() -> Self {
        Self {
            table: default_table(),
            hooks: default_hooks(),
            priority: default_priority(),
            verdict: Verdict::default(),
            match_destination: false,
            counters: true,
            netns: None,
            format: Format::default(),
            text_threshold: default_text_threshold(),
            nft: default_nft(),
        }
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && name.len() <= 64
}

/// Parses and checks `[firewall.nftables]`. Pure.
pub fn validate(table: Option<toml::Value>) -> Result<NftablesConfig, ConfigError> {
    let config: NftablesConfig = parse_table("firewall.nftables", table)?;
    if !is_identifier(&config.table) {
        return Err(ConfigError::new(
            "firewall.nftables.table",
            format!(
                "`{}` is not an nft identifier (a letter, then letters, digits, `_`, `-`)",
                config.table
            ),
        ));
    }
    if config.hooks.is_empty() {
        return Err(ConfigError::new(
            "firewall.nftables.hooks",
            "at least one hook is needed, e.g. [\"input\", \"forward\"]",
        ));
    }
    if config.verdict == Verdict::Reject && config.hooks.contains(&Hook::Prerouting) {
        return Err(ConfigError::new(
            "firewall.nftables.verdict",
            "`reject` is not allowed on the prerouting hook; use `drop` or other hooks",
        ));
    }
    if !(-400..=400).contains(&config.priority) {
        return Err(ConfigError::new(
            "firewall.nftables.priority",
            "must be between -400 and 400",
        ));
    }
    if let Some(ns) = &config.netns {
        validate_netns("firewall.nftables.netns", ns)?;
    }
    if config.nft.trim().is_empty() {
        return Err(ConfigError::new(
            "firewall.nftables.nft",
            "must not be empty",
        ));
    }
    Ok(config)
}

/// Builds the backend; checks that `nft` runs (and speaks JSON when `format = "json"`).
pub async fn build(config: NftablesConfig) -> Result<Box<dyn Backend>, BackendError> {
    let mut backend = Nftables::new(config);
    backend.probe_json().await?;
    Ok(Box::new(backend))
}

#[derive(Debug, Clone, Copy)]
enum Change {
    Add(DateTime<Utc>),
    Remove,
}

/// The nftables backend.
#[derive(Debug)]
pub struct Nftables {
    config: NftablesConfig,
    runner: Runner,
    /// nft accepts JSON input.
    json: bool,
    /// Re-adding an element refreshes its timeout (kernel ≥ 6.10); probed at init.
    timeout_update: bool,
    staged: Staged,
    nets: NetMirror,
}

impl Nftables {
    /// A backend for `config`; call [`Backend::init`] before use.
    pub fn new(config: NftablesConfig) -> Self {
        let runner = Runner::new(config.netns.clone());
        Self {
            config,
            runner,
            json: false,
            timeout_update: false,
            staged: Staged::default(),
            nets: NetMirror::default(),
        }
    }

    async fn nft(&self, args: &[&str], stdin: Option<Vec<u8>>) -> Result<String, BackendError> {
        Ok(self
            .runner
            .run_ok(&self.config.nft, args, stdin)
            .await?
            .stdout)
    }

    async fn probe_json(&mut self) -> Result<(), BackendError> {
        let out = self
            .runner
            .run(&self.config.nft, &["-j", "list", "tables"], None)
            .await?;
        self.json = out.success && out.stdout.trim_start().starts_with('{');
        match (self.config.format, self.json) {
            (Format::Json, false) => Err(BackendError::Unsupported(format!(
                "`format = \"json\"` but this nft has no JSON support ({}); use `format = \"auto\"`",
                super::exec::first_lines(&out.stderr, 2)
            ))),
            (Format::Text, _) => {
                self.json = false;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    async fn probe_timeout_update(&mut self) -> Result<(), BackendError> {
        let table = &self.config.table;
        self.nft(
            &["-f", "-"],
            Some(
                format!(
                    "add set inet {table} probe {{ type ipv4_addr; flags timeout; }}\n\
                     flush set inet {table} probe\n\
                     add element inet {table} probe {{ 192.0.2.1 timeout 60s }}\n"
                )
                .into_bytes(),
            ),
        )
        .await?;
        let result = async {
            self.nft(
                &[
                    "add",
                    "element",
                    "inet",
                    table,
                    "probe",
                    "{ 192.0.2.1 timeout 3600s }",
                ],
                None,
            )
            .await?;
            let listed = self
                .nft(&["-j", "list", "set", "inet", table, "probe"], None)
                .await;
            let text = match listed {
                Ok(text) => text,
                // No JSON: the text listing says `timeout 1h` once refreshed.
                Err(_) => {
                    self.nft(&["list", "set", "inet", table, "probe"], None)
                        .await?
                }
            };
            Ok::<bool, BackendError>(
                text.contains("\"timeout\": 3600") || text.contains("timeout 1h"),
            )
        }
        .await;
        let cleanup = self
            .nft(&["delete", "set", "inet", table, "probe"], None)
            .await;
        self.timeout_update = result?;
        cleanup?;
        Ok(())
    }

    fn setup_script(&self) -> String {
        let c = &self.config;
        let t = &c.table;
        let mut s = format!(
            "add table inet {t}\n\
             add set inet {t} addr4 {{ type ipv4_addr; flags timeout; }}\n\
             add set inet {t} addr6 {{ type ipv6_addr; flags timeout; }}\n\
             add set inet {t} net4 {{ type ipv4_addr; flags interval, timeout; }}\n\
             add set inet {t} net6 {{ type ipv6_addr; flags interval, timeout; }}\n"
        );
        let counter = if c.counters { "counter " } else { "" };
        let verdict = match c.verdict {
            Verdict::Drop => "drop",
            Verdict::Reject => "reject",
        };
        for hook in Hook::ALL {
            let h = hook.as_str();
            // Delete and recreate in the same transaction: atomic, and a changed priority or hook list
            // takes effect (a base chain's priority cannot be changed in place).
            s.push_str(&format!(
                "add chain inet {t} {h}\nflush chain inet {t} {h}\ndelete chain inet {t} {h}\n"
            ));
            if !c.hooks.contains(&hook) {
                continue;
            }
            s.push_str(&format!(
                "add chain inet {t} {h} {{ type filter hook {h} priority {}; policy accept; }}\n",
                c.priority
            ));
            let mut directions = Vec::new();
            if hook != Hook::Output {
                directions.push("saddr");
            }
            if c.match_destination && hook != Hook::Input {
                directions.push("daddr");
            }
            for dir in directions {
                for (family, set) in [
                    ("ip", "addr4"),
                    ("ip", "net4"),
                    ("ip6", "addr6"),
                    ("ip6", "net6"),
                ] {
                    s.push_str(&format!(
                        "add rule inet {t} {h} {family} {dir} @{set} {counter}{verdict}\n"
                    ));
                }
            }
        }
        s
    }

    async fn list_set(&self, set: SetName) -> Result<Vec<(Target, Option<u64>)>, BackendError> {
        let mut parser = listing::Parser::default();
        let mut found = Vec::new();
        self.runner
            .run_lines(
                &self.config.nft,
                &["list", "set", "inet", &self.config.table, set.as_str()],
                |line| parser.feed(line, &mut found),
            )
            .await?;
        Ok(found)
    }

    fn use_json(&self, elements: usize) -> bool {
        match self.config.format {
            Format::Json => true,
            Format::Text => false,
            Format::Auto => self.json && elements < self.config.text_threshold,
        }
    }
}

#[async_trait]
impl Backend for Nftables {
    fn name(&self) -> &'static str {
        "nftables"
    }

    async fn init(&mut self) -> Result<(), BackendError> {
        self.nft(&["-f", "-"], Some(self.setup_script().into_bytes()))
            .await
            .map_err(|e| match e {
                BackendError::Rejected(text) => BackendError::Rejected(format!(
                    "cannot set up table inet {}: {text} (if an older, incompatible table exists, remove it \
                     with `nft delete table inet {}`; the agent re-adds its blocks)",
                    self.config.table, self.config.table
                )),
                other => other,
            })?;
        self.probe_timeout_update().await?;
        // Learn which networks the kernel already holds so new networks never overlap them.
        let mut nets = Vec::new();
        for set in [SetName::Net4, SetName::Net6] {
            nets.extend(self.list_set(set).await?);
        }
        let now = Utc::now();
        self.nets
            .load_from_kernel(nets.into_iter().map(|(target, remaining)| {
                let expires = now + chrono::Duration::seconds(remaining.unwrap_or(0) as i64);
                (target, expires)
            }));
        tracing::info!(
            table = %self.config.table,
            hooks = ?self.config.hooks,
            json = self.json,
            timeout_update = self.timeout_update,
            netns = self.config.netns.as_deref().unwrap_or("-"),
            "nftables table ready."
        );
        Ok(())
    }

    fn staged(&mut self) -> &mut Staged {
        &mut self.staged
    }

    // Long: builds one nft transaction (host sets element by element, network sets rewritten whole)
    // and runs it; the steps share the batch and the network mirror.
    async fn commit(&mut self) -> Result<CommitStats, BackendError> {
        let staged = self.staged.take();
        if staged.is_empty() {
            return Ok(CommitStats::default());
        }
        let now = Utc::now();
        let last = (staged.removes.into_iter().map(|t| (t, Change::Remove)))
            .chain(staged.adds.into_iter().map(|(t, e)| (t, Change::Add(e))));
        let mut batch = Batch::new(&self.config.table, self.timeout_update);
        let mut net_changes: BTreeMap<Target, Option<DateTime<Utc>>> = BTreeMap::new();
        let (mut added, mut removed) = (0, 0);
        for (target, change) in last {
            let change = match change {
                Change::Add(expires_at) if expires_at <= now => Change::Remove,
                other => other,
            };
            match change {
                Change::Add(_) => added += 1,
                Change::Remove => removed += 1,
            }
            if target.is_host() {
                let set = if target.is_ipv4() {
                    SetName::Addr4
                } else {
                    SetName::Addr6
                };
                match change {
                    Change::Add(expires_at) => {
                        batch.upsert(set, target, script::ttl(now, expires_at))
                    }
                    Change::Remove => batch.remove(set, target),
                }
            } else {
                net_changes.insert(
                    target,
                    match change {
                        Change::Add(expires_at) => Some(expires_at),
                        Change::Remove => None,
                    },
                );
            }
        }
        let next_nets = self.nets.plan(&net_changes);
        for (rewrite, ipv4, set) in [
            (next_nets.rewrite_v4, true, SetName::Net4),
            (next_nets.rewrite_v6, false, SetName::Net6),
        ] {
            if rewrite {
                let entries = next_nets
                    .entries(ipv4)
                    .map(|(t, e)| (t, script::ttl(now, e)))
                    .collect();
                batch.replace(set, entries);
            }
        }
        if batch.is_empty() {
            self.nets.accept(next_nets);
            return Ok(CommitStats {
                added,
                removed,
                writes: 0,
            });
        }
        let json = self.use_json(batch.len());
        let started = Instant::now();
        let (args, input): (&[&str], Vec<u8>) = if json {
            (&["-j", "-f", "-"], batch.to_json())
        } else {
            (&["-f", "-"], batch.to_text().into_bytes())
        };
        self.nft(args, Some(input)).await?;
        tracing::debug!(
            elements = batch.len(),
            json,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "nft transaction committed."
        );
        self.nets.accept(next_nets);
        Ok(CommitStats {
            added,
            removed,
            writes: 1,
        })
    }

    async fn list(&mut self) -> Result<Vec<Target>, BackendError> {
        let mut targets = Vec::new();
        for set in [SetName::Addr4, SetName::Addr6] {
            targets.extend(self.list_set(set).await?.into_iter().map(|(t, _)| t));
        }
        let mut kernel_nets = Vec::new();
        for set in [SetName::Net4, SetName::Net6] {
            kernel_nets.extend(self.list_set(set).await?);
        }
        let now = Utc::now();
        // The kernel holds the cover; networks inside a held network are blocked too.
        targets.extend(self.nets.reconcile_with_kernel(kernel_nets.into_iter().map(
            |(target, remaining)| {
                (
                    target,
                    now + chrono::Duration::seconds(remaining.unwrap_or(0) as i64),
                )
            },
        )));
        Ok(targets)
    }

    async fn healthcheck(&mut self) -> Result<(), BackendError> {
        let text = self
            .nft(&["-t", "list", "table", "inet", &self.config.table], None)
            .await?;
        for set in SetName::ALL {
            if !text.contains(&format!("set {} {{", set.as_str())) {
                return Err(BackendError::Rejected(format!(
                    "set {} is missing from table inet {}",
                    set.as_str(),
                    self.config.table
                )));
            }
        }
        for hook in &self.config.hooks {
            if !text.contains(&format!("chain {} {{", hook.as_str())) {
                return Err(BackendError::Rejected(format!(
                    "chain {} is missing from table inet {}",
                    hook.as_str(),
                    self.config.table
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate_text(text: &str) -> Result<NftablesConfig, ConfigError> {
        validate(Some(toml::from_str(text).unwrap()))
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = validate(None).unwrap();
        assert_eq!(c, NftablesConfig::default());
        assert_eq!(c.table, "portcullis");
        assert_eq!(c.hooks, [Hook::Input, Hook::Forward]);
        assert_eq!(c.priority, -10);
    }

    #[test]
    fn bad_settings_are_named() {
        for (text, key) in [
            ("table = \"a b\"", "firewall.nftables.table"),
            ("hooks = []", "firewall.nftables.hooks"),
            (
                "verdict = \"reject\"\nhooks = [\"prerouting\"]",
                "firewall.nftables.verdict",
            ),
            ("netns = \"../x\"", "firewall.nftables.netns"),
            ("priority = 9999", "firewall.nftables.priority"),
        ] {
            assert_eq!(validate_text(text).unwrap_err().key, key, "{text}");
        }
        let err = validate_text("hook = \"input\"").unwrap_err();
        assert!(err.message.contains("unknown field `hook`"), "{err}");
    }

    #[test]
    fn the_setup_script_only_names_our_table() {
        let backend = Nftables::new(NftablesConfig {
            match_destination: true,
            ..NftablesConfig::default()
        });
        let script = backend.setup_script();
        for line in script.lines() {
            assert!(line.contains("inet portcullis"), "{line}");
        }
        assert!(script.contains("add rule inet portcullis input ip saddr @addr4 counter drop"));
        assert!(script.contains("add rule inet portcullis forward ip6 daddr @net6 counter drop"));
        assert!(!script.contains("input ip daddr"));
        assert!(!script.contains("type filter hook output"));
    }
}
