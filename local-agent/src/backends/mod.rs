//! Firewall backends: one object-safe trait, staged changes committed at once, and the factory that builds a
//! backend from the `[firewall]` configuration.
//!
//! Every backend owns only its own objects (a table, a set, address groups, an alias) and never touches
//! anything else on the firewall. The agent's state database is the source of truth; a backend is told what
//! to add and remove, and reports what it holds so the agent can reconcile drift.
//!
//! # Configuration and construction
//! `[firewall] backend = "…"` picks one backend; its settings live in the sub-table of the same name
//! (`[firewall.nftables]`, `[firewall.unifi]`, …). Construction has two steps, as in vector's sinks:
//! [`FirewallConfig::validate`] is pure (no I/O: it parses the sub-table into the backend's typed config,
//! `deny_unknown_fields`, so a typo is named), then [`build`] does the I/O (spawns `nft`, logs in to a
//! controller) and returns the backend. Each backend module provides the same pair:
//! `fn validate(Option<toml::Value>) -> Result<XConfig, ConfigError>` and
//! `async fn build(XConfig) -> Result<Box<dyn Backend>, BackendError>`; adding a backend means one module,
//! one [`BackendConfig`] variant and one arm in each of [`FirewallConfig::validate`] and [`build`].
//!
//! # Modules
//! - [`dry_run`]: logs the plan, keeps an in-memory set; the reference for the backend contract tests.
//! - [`nftables`]: own `inet` table, host and network sets with kernel timeouts, one `nft` transaction per
//!   commit.
//! - [`ipset`]: `hash:net` sets with timeouts plus one iptables/ip6tables jump rule each, `ipset restore`
//!   batches; for older NAS kernels.
//! - [`exec`]: runs `nft`/`ipset`/`iptables`, optionally inside a network namespace.
//! - [`unifi`]: UniFi console or controller; sharded address groups (or, with an API key, traffic matching
//!   lists) replaced whole, only on real change, with writes spaced by `min_write_interval`.
//! - [`opnsense`]: an "External (advanced)" alias, `alias_util` add/delete per address.
//! - [`mikrotik`]: RouterOS 7 REST address lists with native timeouts, entries tagged by a comment.
//! - [`pfsense`]: pfrest v2 alias PATCH (`append`/`remove`) then one apply per commit.
//! - [`http`]: what the appliance backends share: TLS trust (CA file, pinned fingerprint), timeouts,
//!   redacted secrets, HTTP failures mapped to [`BackendError`]s.
//! - [`staged`]: the staged changes of every backend, normalised by one rule (the longest expiry wins).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use queue_message::Target;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::config::ConfigError;
use crate::span::Span;

pub mod dry_run;
pub mod exec;
pub mod http;
pub mod ipset;
pub mod mikrotik;
pub mod nftables;
pub mod opnsense;
pub mod pfsense;
pub mod staged;
pub mod unifi;

/// One target to block until `expires_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockEntry {
    /// Address or network.
    pub target: Target,
    /// When the block ends. Backends with native timeouts use it for the kernel/device timeout; the others
    /// rely on the agent to remove the entry.
    pub expires_at: DateTime<Utc>,
}

/// What one commit changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Entries added or refreshed.
    pub added: usize,
    /// Entries removed.
    pub removed: usize,
    /// Write calls made to the firewall (processes spawned, HTTP writes).
    pub writes: usize,
}

/// Why a backend operation failed. All but `Unsupported` and `Config` are retried by the agent with backoff;
/// the queue messages behind a failed commit stay queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The firewall cannot be reached (process missing, connection refused, timeout, 5xx).
    #[error("firewall unreachable: {0}")]
    Unreachable(String),
    /// The firewall refused the change (syntax, limits, permissions, unexpected response).
    #[error("firewall rejected the change: {0}")]
    Rejected(String),
    /// This backend cannot run here (wrong OS, missing feature).
    #[error("backend not supported here: {0}")]
    Unsupported(String),
    /// The configuration cannot work (missing group, bad credentials); needs the operator.
    #[error("backend misconfigured: {0}")]
    Config(String),
}

impl BackendError {
    /// True when trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unreachable(_) | Self::Rejected(_))
    }
}

/// A firewall the agent can enforce blocks on.
///
/// Changes are staged with [`stage_add`](Backend::stage_add) and [`stage_remove`](Backend::stage_remove) and
/// applied by one [`commit`](Backend::commit), atomically where the firewall allows it. A failed commit drops
/// the staged changes (the caller stages them again when it retries). Adding a target that is present
/// refreshes its expiry; removing an absent target is not an error.
#[async_trait]
pub trait Backend: Send + Sync + fmt::Debug {
    /// Short name for logs and metrics (`nftables`, `unifi`, …).
    fn name(&self) -> &'static str;

    /// Creates the backend's own objects if missing (idempotent); called at start and before reconcile.
    async fn init(&mut self) -> Result<(), BackendError>;

    /// The changes staged since the last commit (every backend normalises them the same way, see
    /// [`staged`]).
    fn staged(&mut self) -> &mut staged::Staged;

    /// Stages a block or an extension of one.
    fn stage_add(&mut self, entry: BlockEntry) {
        self.staged().add(entry);
    }

    /// Stages the removal of a target.
    fn stage_remove(&mut self, target: Target) {
        self.staged().remove(target);
    }

    /// Applies everything staged; see the trait docs for the failure contract.
    async fn commit(&mut self) -> Result<CommitStats, BackendError>;

    /// The targets the firewall currently holds in the backend's own objects.
    async fn list(&mut self) -> Result<Vec<Target>, BackendError>;

    /// Checks that the firewall is reachable and the backend's objects exist, without changing anything.
    async fn healthcheck(&mut self) -> Result<(), BackendError>;

    /// How long the agent should keep collecting messages before one commit. Zero for local firewalls;
    /// controller-managed appliances debounce bursts into one write.
    fn batch_window(&self) -> Duration {
        Duration::ZERO
    }

    /// Conditions the operator must fix that do not stop commits (a UniFi group the agent created that no
    /// firewall rule references yet, so its members are not dropped). `status` and `/healthz` report them.
    /// They are not healthcheck failures: those mean "the firewall cannot take writes" and make the agent
    /// stop consuming, which would hold back every other block.
    fn notices(&self) -> Vec<String> {
        Vec::new()
    }

    /// Called once when the agent stops. Blocks stay in place.
    async fn shutdown(&mut self) -> Result<(), BackendError> {
        Ok(())
    }
}

/// Which backend enforces the blocks (`[firewall] backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// Linux nftables (own `inet` table).
    Nftables,
    /// Linux ipset + iptables/ip6tables (older kernels, NAS systems).
    Ipset,
    /// Changes nothing; logs the plan.
    DryRun,
    /// UniFi Network controller (address groups / traffic matching lists).
    Unifi,
    /// OPNsense (alias API).
    Opnsense,
    /// MikroTik RouterOS 7 (REST address lists).
    Mikrotik,
    /// pfSense with the REST API package.
    Pfsense,
}

impl BackendKind {
    /// The name used in the configuration, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nftables => "nftables",
            Self::Ipset => "ipset",
            Self::DryRun => "dry-run",
            Self::Unifi => "unifi",
            Self::Opnsense => "opnsense",
            Self::Mikrotik => "mikrotik",
            Self::Pfsense => "pfsense",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn default_reconcile_interval() -> Span {
    Span::secs(300)
}

/// The raw `[firewall]` table. Sub-tables stay raw TOML until [`validate`](Self::validate) hands the chosen
/// one to its backend module, so each backend owns its keys and their checks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirewallConfig {
    /// Which backend enforces the blocks.
    pub backend: BackendKind,
    /// How often the agent compares the firewall with its state and repairs drift (default 5m). Also done
    /// at start.
    #[serde(default = "default_reconcile_interval")]
    pub reconcile_interval: Span,
    /// `[firewall.nftables]`.
    #[serde(default)]
    pub nftables: Option<toml::Value>,
    /// `[firewall.ipset]`.
    #[serde(default)]
    pub ipset: Option<toml::Value>,
    /// `[firewall.dry-run]`.
    #[serde(default, rename = "dry-run")]
    pub dry_run: Option<toml::Value>,
    /// `[firewall.unifi]`.
    #[serde(default)]
    pub unifi: Option<toml::Value>,
    /// `[firewall.opnsense]`.
    #[serde(default)]
    pub opnsense: Option<toml::Value>,
    /// `[firewall.mikrotik]`.
    #[serde(default)]
    pub mikrotik: Option<toml::Value>,
    /// `[firewall.pfsense]`.
    #[serde(default)]
    pub pfsense: Option<toml::Value>,
}

impl Default for FirewallConfig {
    fn default() -> Self {
        Self {
            backend: BackendKind::DryRun,
            reconcile_interval: default_reconcile_interval(),
            nftables: None,
            ipset: None,
            dry_run: None,
            unifi: None,
            opnsense: None,
            mikrotik: None,
            pfsense: None,
        }
    }
}

/// A validated backend configuration, ready for [`build`].
#[derive(Debug, Clone)]
pub enum BackendConfig {
    /// See [`nftables::NftablesConfig`].
    Nftables(nftables::NftablesConfig),
    /// See [`ipset::IpsetConfig`].
    Ipset(ipset::IpsetConfig),
    /// See [`dry_run::DryRunConfig`].
    DryRun(dry_run::DryRunConfig),
    /// See [`unifi::UnifiConfig`].
    Unifi(unifi::UnifiConfig),
    /// See [`opnsense::OpnsenseConfig`].
    Opnsense(opnsense::OpnsenseConfig),
    /// See [`mikrotik::MikrotikConfig`].
    Mikrotik(mikrotik::MikrotikConfig),
    /// See [`pfsense::PfsenseConfig`].
    Pfsense(pfsense::PfsenseConfig),
}

impl BackendConfig {
    /// The backend's name.
    pub fn kind(&self) -> BackendKind {
        match self {
            Self::Nftables(_) => BackendKind::Nftables,
            Self::Ipset(_) => BackendKind::Ipset,
            Self::DryRun(_) => BackendKind::DryRun,
            Self::Unifi(_) => BackendKind::Unifi,
            Self::Opnsense(_) => BackendKind::Opnsense,
            Self::Mikrotik(_) => BackendKind::Mikrotik,
            Self::Pfsense(_) => BackendKind::Pfsense,
        }
    }
}

impl BackendConfig {
    /// The network namespace a local backend runs its commands in (`None` for the agent's own and for
    /// appliances). The agent reads this host's own addresses from the same namespace.
    pub fn netns(&self) -> Option<&str> {
        match self {
            Self::Nftables(c) => c.netns.as_deref(),
            Self::Ipset(c) => c.netns.as_deref(),
            _ => None,
        }
    }
}

impl FirewallConfig {
    /// Parses the chosen backend's sub-table into its typed configuration. Pure: no I/O.
    pub fn validate(&self) -> Result<BackendConfig, ConfigError> {
        match self.backend {
            BackendKind::Nftables => Ok(BackendConfig::Nftables(nftables::validate(
                self.nftables.clone(),
            )?)),
            BackendKind::Ipset => Ok(BackendConfig::Ipset(ipset::validate(self.ipset.clone())?)),
            BackendKind::DryRun => Ok(BackendConfig::DryRun(dry_run::validate(
                self.dry_run.clone(),
            )?)),
            BackendKind::Unifi => Ok(BackendConfig::Unifi(unifi::validate(self.unifi.clone())?)),
            BackendKind::Opnsense => Ok(BackendConfig::Opnsense(opnsense::validate(
                self.opnsense.clone(),
            )?)),
            BackendKind::Mikrotik => Ok(BackendConfig::Mikrotik(mikrotik::validate(
                self.mikrotik.clone(),
            )?)),
            BackendKind::Pfsense => Ok(BackendConfig::Pfsense(pfsense::validate(
                self.pfsense.clone(),
            )?)),
        }
    }
}

/// Builds the backend: the I/O half of construction (checks binaries, logs in). Does not call
/// [`Backend::init`]; the agent does, with retries.
pub async fn build(config: BackendConfig) -> Result<Box<dyn Backend>, BackendError> {
    match config {
        BackendConfig::Nftables(c) => nftables::build(c).await,
        BackendConfig::Ipset(c) => ipset::build(c).await,
        BackendConfig::DryRun(c) => dry_run::build(c).await,
        BackendConfig::Unifi(c) => unifi::build(c).await,
        BackendConfig::Opnsense(c) => opnsense::build(c).await,
        BackendConfig::Mikrotik(c) => mikrotik::build(c).await,
        BackendConfig::Pfsense(c) => pfsense::build(c).await,
    }
}

/// Deserialises a backend's sub-table (`None` = absent = all defaults) into its typed config, naming the
/// table in the error: `firewall.nftables: unknown field `hook`, expected one of …`.
pub fn parse_table<T: DeserializeOwned>(
    table: &str,
    value: Option<toml::Value>,
) -> Result<T, ConfigError> {
    let value = value.unwrap_or_else(|| toml::Value::Table(toml::Table::new()));
    value.try_into().map_err(|e: toml::de::Error| {
        ConfigError::new(table, crate::config::toml_problem(None, &e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn firewall(text: &str) -> Result<BackendConfig, ConfigError> {
        #[derive(Deserialize)]
        struct Root {
            firewall: FirewallConfig,
        }
        let root: Root =
            toml::from_str(text).map_err(|e| ConfigError::new("toml", e.to_string()))?;
        root.firewall.validate()
    }

    #[test]
    fn each_local_backend_validates_with_defaults() {
        for (name, kind) in [
            ("nftables", BackendKind::Nftables),
            ("ipset", BackendKind::Ipset),
            ("dry-run", BackendKind::DryRun),
        ] {
            let config = firewall(&format!("[firewall]\nbackend = \"{name}\"\n")).unwrap();
            assert_eq!(config.kind(), kind);
        }
    }

    #[test]
    fn unknown_keys_in_a_sub_table_are_named() {
        let err =
            firewall("[firewall]\nbackend = \"nftables\"\n[firewall.nftables]\nhook = \"input\"\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("firewall.nftables"), "{err}");
        assert!(err.contains("hook"), "{err}");
    }

    #[test]
    fn unknown_backends_and_keys_are_refused() {
        assert!(firewall("[firewall]\nbackend = \"iptables\"\n").is_err());
        assert!(firewall("[firewall]\nbackend = \"dry-run\"\nfoo = 1\n").is_err());
    }

    #[tokio::test]
    async fn appliances_validate_their_table_and_build_without_contacting_the_device() {
        let pin = format!("sha256:{}", vec!["AB"; 32].join(":"));
        for (name, table) in [
            ("unifi", "username = \"u\"\npassword = \"p\""),
            ("opnsense", "api_key = \"k\"\napi_secret = \"s\""),
            ("mikrotik", "username = \"u\"\npassword = \"p\""),
            ("pfsense", "api_key = \"k\""),
        ] {
            let text = format!(
                "[firewall]\nbackend = \"{name}\"\n[firewall.{name}]\nurl = \"https://192.0.2.1\"\n\
                 fingerprint = \"{pin}\"\n{table}\n"
            );
            let config = firewall(&text).unwrap();
            assert_eq!(config.kind().as_str(), name);
            let backend = build(config).await.unwrap();
            assert_eq!(backend.name(), name);
            // The table is required (`url` has no default) and unknown keys are named.
            let err = firewall(&format!("[firewall]\nbackend = \"{name}\"\n")).unwrap_err();
            assert!(
                err.to_string().contains(&format!("firewall.{name}")),
                "{err}"
            );
            let err = firewall(&format!("{text}colour = \"blue\"\n")).unwrap_err();
            assert!(err.to_string().contains("colour"), "{err}");
        }
    }
}
