//! Time-driven work: the expiry task and the periodic reconcile.
//!
//! Expiry follows mini-redis's purge task: one task sleeps until the earliest block expiry (or until woken
//! because a new block may expire sooner), then removes everything that has expired in one commit. The
//! nftables and ipset entries also carry kernel timeouts, so blocks end on time even while the agent is
//! down; this task keeps the state and the backends without native timeouts (appliances) in step.
//!
//! Reconcile runs at start and every `reconcile_interval` (and on `sync`): it refreshes this host's own
//! addresses, repairs drift between the state and the firewall, and prunes old audit events and seen ids.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::apply::Engine;
use crate::backends::exec::Runner;
use crate::hostaddr;

/// Longest sleep of the expiry task when nothing expires sooner.
const MAX_SLEEP: Duration = Duration::from_secs(3600);
/// Pause after a failed expiry commit.
const RETRY: Duration = Duration::from_secs(5);

/// Runs the expiry task until `shutdown`.
pub async fn run_expiry(engine: Arc<Engine>, shutdown: CancellationToken) {
    loop {
        let sleep = match engine.next_expiry().await {
            Ok(Some(at)) => (at - engine.clock().now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(MAX_SLEEP),
            Ok(None) => MAX_SLEEP,
            Err(e) => {
                tracing::error!(error = %e, "Cannot read the next expiry.");
                RETRY
            }
        };
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = engine.expiry_changed.notified() => continue,
            () = shutdown.cancelled() => return,
        }
        if let Err(e) = engine.expire().await {
            tracing::warn!(error = %e, retry_in_s = RETRY.as_secs(), "Expiring blocks failed; retrying.");
            tokio::select! {
                () = tokio::time::sleep(RETRY) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }
}

/// Refreshes the host's own addresses in the policy.
pub async fn refresh_host_addresses(engine: &Engine, runner: &Runner, enabled: bool) {
    // The queue service and login endpoints are protected whatever `protect_host_addresses` says: a
    // block of them would lock the agent out of the queue that could lift it.
    engine.refresh_own_service().await;
    if !enabled {
        return;
    }
    let Some(addrs) = hostaddr::discover(runner).await else {
        // An empty set would drop the protection of the host itself; the last known addresses stay.
        tracing::warn!("Cannot read this host's own addresses; keeping the previous protections.");
        return;
    };
    tracing::debug!(count = addrs.len(), addresses = ?addrs, "Host addresses protected from blocking.");
    engine.set_host_addresses(hostaddr::as_nets(&addrs));
}

/// One reconcile round: host addresses, drift repair, pruning.
pub async fn reconcile_once(
    engine: &Engine,
    runner: &Runner,
    protect_host: bool,
    audit_retention: Duration,
) -> Result<crate::apply::Reconciled, crate::apply::ApplyError> {
    refresh_host_addresses(engine, runner, protect_host).await;
    let result = engine.reconcile().await?;
    let now = engine.clock().now();
    let before =
        now - chrono::Duration::from_std(audit_retention).unwrap_or(chrono::Duration::days(365));
    match engine.db().call(move |s| s.prune(now, before)).await {
        Ok(p) if p != Default::default() => tracing::debug!(?p, "State pruned."),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "Pruning the state failed."),
    }
    Ok(result)
}

/// Runs reconcile every `interval` until `shutdown` (`sync` calls [`reconcile_once`] directly).
pub async fn run_reconcile(
    engine: Arc<Engine>,
    runner: Runner,
    interval: Duration,
    protect_host: bool,
    audit_retention: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.cancelled() => return,
        }
        if let Err(e) = reconcile_once(&engine, &runner, protect_host, audit_retention).await {
            tracing::warn!(error = %e, "Reconcile failed; will try again.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::EngineParts;
    use crate::backends::dry_run::{DryRun, DryRunConfig};
    use crate::clock::Clock;
    use crate::health::Health;
    use crate::store::Store;
    use queue_message::{NeverBlock, Target};

    fn engine(dir: &tempfile::TempDir, clock: Clock) -> Engine {
        Engine::new(EngineParts {
            backend: Box::new(DryRun::new(DryRunConfig::default())),
            store: Store::open(&dir.path().join("state.db")).unwrap(),
            never_block: NeverBlock::new(
                Vec::new(),
                vec!["203.0.113.0/24".parse().unwrap()],
                16,
                32,
            ),
            max_new_per_hour: 100,
            clock,
            health: Arc::new(Health::default()),
        })
    }

    #[tokio::test]
    async fn failed_discovery_keeps_the_previous_host_protections() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(&dir, Clock::System);
        let host = Target::parse("203.0.113.9").unwrap();
        assert!(engine.policy().screen(&host).is_ok());
        engine.set_host_addresses(vec!["203.0.113.9/32".parse().unwrap()]);
        assert!(engine.policy().screen(&host).is_err());
        // Every read fails in a namespace that does not exist: discovery finds nothing.
        let broken = Runner::new(Some("portcullis-test-no-such-netns".to_owned()));
        refresh_host_addresses(&engine, &broken, true).await;
        assert!(
            engine.policy().screen(&host).is_err(),
            "the host lost its protection because discovery failed"
        );
    }

    #[tokio::test]
    async fn the_queue_service_addresses_are_refused_as_own_service() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(&dir, Clock::System);
        let service = Target::parse("203.0.113.5").unwrap();
        assert!(engine.policy().screen(&service).is_ok());
        // A literal resolves to itself: no DNS needed in the test.
        engine.set_service_hosts(vec!["203.0.113.5".to_owned()]);
        refresh_host_addresses(&engine, &Runner::new(None), false).await;
        let why = engine.policy().screen(&service).unwrap_err();
        assert_eq!(why.code, "own-service");
        assert!(why.text.starts_with("own-service: "), "{}", why.text);
        // Covering networks are refused too; neighbours are not.
        let policy = engine.policy();
        assert!(policy
            .screen(&Target::parse("203.0.113.0/24").unwrap())
            .is_err());
        assert!(policy
            .screen(&Target::parse("203.0.113.6").unwrap())
            .is_ok());
        // Host addresses refreshed later keep the service protected.
        engine.set_host_addresses(Vec::new());
        assert!(engine.policy().screen(&service).is_err());
    }

    /// The expiry task sleeps until the earliest expiry and lifts the block then, not before; paused
    /// tokio time drives both the task's sleep and the engine's clock.
    #[tokio::test(start_paused = true)]
    async fn a_block_is_lifted_when_it_expires_and_not_before() {
        let dir = tempfile::tempdir().unwrap();
        let start = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let engine = Arc::new(engine(&dir, Clock::following_tokio(start)));
        engine.init_backend().await.unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run_expiry(Arc::clone(&engine), shutdown.clone()));
        crate::control::manual_block(&engine, "203.0.113.7", Duration::from_secs(600), None)
            .await
            .unwrap();
        let active = |engine: Arc<Engine>| async move {
            let now = engine.clock().now();
            engine
                .db()
                .call(move |s| s.active_count(now))
                .await
                .unwrap()
        };
        tokio::time::sleep(Duration::from_secs(599)).await;
        assert_eq!(active(Arc::clone(&engine)).await, 1, "lifted early");
        assert_eq!(engine.firewall_list().await.unwrap().len(), 1);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            active(Arc::clone(&engine)).await,
            0,
            "not lifted at its expiry"
        );
        assert!(engine.firewall_list().await.unwrap().is_empty());
        shutdown.cancel();
        task.await.unwrap();
    }
}
