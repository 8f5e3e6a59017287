//! The backend contract: one suite every backend passes (dry-run, nftables, ipset and each appliance).
//!
//! [`run`] drives a backend through block, extend, unblock, CIDR, IPv6, a bulk batch, an idempotent replay,
//! reconcile after the device lost entries (and after an agent restart), and a failing write that must
//! surface as a retryable error and drop the staged changes. It checks the *device*, not only what the
//! backend says, through a [`Device`] probe that reads (and, where it can, changes) the firewall behind the
//! backend's back.
//!
//! Every step runs for every backend except one: the dry-run backend has no device that could refuse a
//! write, so its failing-write step is skipped ([`Report::failure_checked`] stays false). nftables and
//! ipset fail writes through a wrapper around the real tool (`contract_local`), the appliances through
//! their fakes. The outage failpoint (`PORTCULLIS_FAIL_BACKEND_WHILE`) acts in the engine, in front of any
//! backend, and is exercised by the queue outage test.
//!
//! To instantiate it for another backend, implement [`Device`] (for nftables: `entries` lists through a
//! twin instance, `lose` removes through the twin, `fail_writes` arms the `nft` wrapper) and call
//! `contract::run(&|| Box::pin(async { build_backend() }), &device, Options::default()).await` ([`factory`]
//! makes that closure for a backend built from config text).

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use portcullis_agent::backends::{Backend, BlockEntry, CommitStats};
use queue_message::Target;

/// Builds a fresh backend (not yet initialised) talking to the same device.
pub type Factory<'a> =
    dyn Fn() -> Pin<Box<dyn Future<Output = Box<dyn Backend>> + Send>> + Sync + 'a;

/// A [`Factory`] that builds every backend from the same config `text` with `build`.
pub fn factory<F, Fut>(
    text: String,
    build: F,
) -> impl Fn() -> Pin<Box<dyn Future<Output = Box<dyn Backend>> + Send>> + Sync
where
    F: Fn(String) -> Fut + Sync,
    Fut: Future<Output = Box<dyn Backend>> + Send + 'static,
{
    move || Box::pin(build(text.clone()))
}

/// A view of the firewall that does not go through the backend under test.
#[async_trait]
pub trait Device: Send + Sync {
    /// The targets the device holds in the backend's objects. `backend` is there for devices that can only
    /// be seen through it (dry-run); real probes ignore it.
    async fn entries(&self, backend: &mut dyn Backend) -> BTreeSet<Target>;
    /// Drops entries behind the backend's back (a reboot, a firmware update, an admin's edit); false when
    /// the device cannot.
    async fn lose(&self, targets: &[Target]) -> bool;
    /// Makes the next `n` writes fail like an outage; false when the device cannot.
    async fn fail_writes(&self, n: usize) -> bool;
}

/// Knobs of the suite.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Size of the bulk batch (the issue asks for 10,000).
    pub bulk: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self { bulk: 10_000 }
    }
}

/// What the suite saw, for backend-specific assertions (write counts).
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// The first bulk commit.
    pub bulk: CommitStats,
    /// The replay of the same bulk batch.
    pub replay: CommitStats,
    /// Extending a present block.
    pub extend: CommitStats,
    /// Removing the bulk batch.
    pub bulk_remove: CommitStats,
    /// Whether the device supported losing entries and failing writes.
    pub lose_checked: bool,
    /// Whether failing writes were exercised.
    pub failure_checked: bool,
}

fn t(text: &str) -> Target {
    Target::parse(text).unwrap()
}

fn entry(target: Target, expires_at: DateTime<Utc>) -> BlockEntry {
    BlockEntry { target, expires_at }
}

/// `n` distinct IPv4 hosts from the benchmarking range 198.18.0.0/15.
pub fn bulk_targets(n: usize) -> Vec<Target> {
    assert!(n <= 131_072, "198.18.0.0/15 holds 131072 addresses");
    (0..n as u32)
        .map(|i| {
            let addr =
                std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(198, 18, 0, 0)) + i);
            Target::from_addr(addr.into())
        })
        .collect()
}

async fn commit(backend: &mut dyn Backend, step: &str) -> CommitStats {
    match backend.commit().await {
        Ok(stats) => stats,
        Err(err) => panic!("{}: {step}: commit failed: {err}", backend.name()),
    }
}

async fn listed(backend: &mut dyn Backend) -> BTreeSet<Target> {
    backend
        .list()
        .await
        .unwrap_or_else(|err| panic!("{}: list failed: {err}", backend.name()))
        .into_iter()
        .collect()
}

async fn expect_device(
    device: &dyn Device,
    backend: &mut dyn Backend,
    step: &str,
    want: &BTreeSet<Target>,
) {
    let have = device.entries(backend).await;
    if &have != want {
        let missing: Vec<_> = want.difference(&have).take(5).collect();
        let extra: Vec<_> = have.difference(want).take(5).collect();
        panic!(
            "{}: {step}: device holds {} entries, expected {}; missing {missing:?}, extra {extra:?}",
            backend.name(),
            have.len(),
            want.len()
        );
    }
}

/// Runs the whole contract. The device must start with none of the backend's entries.
pub async fn run(make: &Factory<'_>, device: &dyn Device, options: Options) -> Report {
    let mut report = Report::default();
    let mut b = make().await;
    let name = b.name();
    b.init()
        .await
        .unwrap_or_else(|e| panic!("{name}: init: {e}"));
    b.init()
        .await
        .unwrap_or_else(|e| panic!("{name}: init is not idempotent: {e}"));
    let mut want = BTreeSet::new();
    expect_device(device, b.as_mut(), "start", &want).await;
    let hour = Utc::now() + Duration::hours(1);
    let day = Utc::now() + Duration::days(1);

    // Block one address.
    let a = t("203.0.113.10");
    b.stage_add(entry(a, hour));
    commit(b.as_mut(), "block").await;
    want.insert(a);
    expect_device(device, b.as_mut(), "block", &want).await;
    assert_eq!(listed(b.as_mut()).await, want, "{name}: list after block");

    // Extend it: still one entry.
    b.stage_add(entry(a, day));
    report.extend = commit(b.as_mut(), "extend").await;
    expect_device(device, b.as_mut(), "extend", &want).await;

    // CIDR and IPv6 (host and prefix) in one commit.
    let net = t("198.51.100.0/24");
    let v6 = t("2001:db8::7");
    let v6net = t("2001:db8:1::/48");
    for target in [net, v6, v6net] {
        b.stage_add(entry(target, day));
        want.insert(target);
    }
    commit(b.as_mut(), "CIDR and IPv6").await;
    expect_device(device, b.as_mut(), "CIDR and IPv6", &want).await;
    assert_eq!(
        listed(b.as_mut()).await,
        want,
        "{name}: list after CIDR and IPv6"
    );

    // Unblock one present and one absent target: no error.
    b.stage_remove(a);
    b.stage_remove(t("203.0.113.99"));
    commit(b.as_mut(), "unblock").await;
    want.remove(&a);
    expect_device(device, b.as_mut(), "unblock", &want).await;

    // Staging add then remove of the same target in one batch: the last one wins.
    let flip = t("203.0.113.20");
    b.stage_add(entry(flip, day));
    b.stage_remove(flip);
    commit(b.as_mut(), "add then remove").await;
    expect_device(device, b.as_mut(), "add then remove", &want).await;

    // A bulk batch in one commit.
    let bulk = bulk_targets(options.bulk);
    for target in &bulk {
        b.stage_add(entry(*target, day));
    }
    report.bulk = commit(b.as_mut(), "bulk").await;
    want.extend(bulk.iter().copied());
    expect_device(device, b.as_mut(), "bulk", &want).await;
    assert_eq!(
        listed(b.as_mut()).await.len(),
        want.len(),
        "{name}: list after bulk"
    );

    // Replaying the same batch (a redelivered message) changes nothing.
    for target in &bulk {
        b.stage_add(entry(*target, day));
    }
    report.replay = commit(b.as_mut(), "replay").await;
    expect_device(device, b.as_mut(), "replay", &want).await;

    // The device loses entries (reboot, firmware update): list shows it, re-adding repairs it.
    let lost: Vec<Target> = bulk.iter().take(25).copied().chain([v6, net]).collect();
    if device.lose(&lost).await {
        report.lose_checked = true;
        let seen = listed(b.as_mut()).await;
        for target in &lost {
            assert!(
                !seen.contains(target),
                "{name}: list still shows lost {target}"
            );
        }
        // What the agent's reconcile does: add back whatever the state wants and the device lacks.
        for target in want.difference(&seen) {
            b.stage_add(entry(*target, day));
        }
        commit(b.as_mut(), "reconcile").await;
        expect_device(device, b.as_mut(), "reconcile", &want).await;

        // Same after an agent restart: a fresh backend must not trust anything cached.
        device.lose(&lost).await;
        let mut fresh = make().await;
        fresh
            .init()
            .await
            .unwrap_or_else(|e| panic!("{name}: init after restart: {e}"));
        let seen = listed(fresh.as_mut()).await;
        for target in want.difference(&seen) {
            fresh.stage_add(entry(*target, day));
        }
        commit(fresh.as_mut(), "reconcile after restart").await;
        expect_device(device, fresh.as_mut(), "reconcile after restart", &want).await;
        // The old instance must notice the repair too (its next list reads the device).
        assert_eq!(listed(b.as_mut()).await, want, "{name}: list after restart");
    }

    // A failing write surfaces as a retryable error, drops the staged changes, and a retry succeeds.
    let late = t("192.0.2.200");
    if device.fail_writes(1).await {
        report.failure_checked = true;
        b.stage_add(entry(late, day));
        let err = b
            .commit()
            .await
            .expect_err("the commit must fail while the device refuses writes");
        assert!(err.is_retryable(), "{name}: {err} is not retryable");
        let empty = commit(b.as_mut(), "commit after a failure").await;
        assert_eq!(
            empty,
            CommitStats::default(),
            "{name}: a failed commit must drop its staged changes"
        );
        b.stage_add(entry(late, day));
        commit(b.as_mut(), "retry").await;
        want.insert(late);
        expect_device(device, b.as_mut(), "retry", &want).await;
    }

    // Remove the bulk batch and everything else: the device is empty again.
    for target in &bulk {
        b.stage_remove(*target);
    }
    report.bulk_remove = commit(b.as_mut(), "bulk remove").await;
    for target in want.iter().filter(|t| !bulk.contains(t)) {
        b.stage_remove(*target);
    }
    commit(b.as_mut(), "remove the rest").await;
    want.clear();
    expect_device(device, b.as_mut(), "end", &want).await;
    b.healthcheck()
        .await
        .unwrap_or_else(|e| panic!("{name}: healthcheck: {e}"));
    b.shutdown()
        .await
        .unwrap_or_else(|e| panic!("{name}: shutdown: {e}"));
    report
}

/// A device seen only through the backend itself (dry-run): it can neither lose entries nor fail.
#[derive(Debug, Default)]
pub struct SelfReported;

#[async_trait]
impl Device for SelfReported {
    async fn entries(&self, backend: &mut dyn Backend) -> BTreeSet<Target> {
        backend.list().await.unwrap().into_iter().collect()
    }

    async fn lose(&self, _targets: &[Target]) -> bool {
        false
    }

    async fn fail_writes(&self, _n: usize) -> bool {
        false
    }
}

/// A device probed through a second backend instance on the same firewall: for backends whose `list` reads
/// the kernel (nftables, ipset), a twin's `list` is a view that does not share the tested instance's state,
/// and a twin's removal is a change behind its back (as `nft delete element` by an admin would be).
pub struct Twin<'a> {
    /// Builds the twin (same configuration as the backend under test).
    pub make: &'a Factory<'a>,
}

#[async_trait]
impl Device for Twin<'_> {
    async fn entries(&self, _backend: &mut dyn Backend) -> BTreeSet<Target> {
        let mut twin = (self.make)().await;
        twin.list().await.unwrap().into_iter().collect()
    }

    async fn lose(&self, targets: &[Target]) -> bool {
        let mut twin = (self.make)().await;
        for target in targets {
            twin.stage_remove(*target);
        }
        twin.commit().await.unwrap();
        true
    }

    async fn fail_writes(&self, _n: usize) -> bool {
        false
    }
}

/// The reference: the dry-run backend passes the contract.
#[tokio::test]
async fn dry_run_passes_the_contract() {
    use portcullis_agent::backends::dry_run;
    let make = || -> Pin<Box<dyn Future<Output = Box<dyn Backend>> + Send>> {
        Box::pin(async {
            dry_run::build(dry_run::validate(None).unwrap())
                .await
                .unwrap()
        })
    };
    run(&make, &SelfReported, Options::default()).await;
}
