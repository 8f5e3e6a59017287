//! Property tests against real backends: applying the same batch twice through the engine leaves the
//! firewall and the state exactly as after the first time, with the dry-run backend and with nftables in
//! a lab namespace. (The pure properties — the plan never contains a refused address, re-planning is a
//! no-op, the network cover is disjoint — are unit tests in `decide` and `backends::nftables::cover`.)

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use chrono::{Duration, Utc};
use ipnet::IpNet;
use portcullis_agent::apply::{Engine, EngineParts, Group, Submission};
use portcullis_agent::backends::dry_run::{DryRun, DryRunConfig};
use portcullis_agent::backends::nftables::{Nftables, NftablesConfig};
use portcullis_agent::backends::Backend;
use portcullis_agent::clock::Clock;
use portcullis_agent::decide::{Intent, Op};
use portcullis_agent::health::Health;
use portcullis_agent::store::Store;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use queue_message::{NeverBlock, Target};

use crate::netns::Lab;

/// Hosts and networks inside the lab ranges (so the policy lets them through), overlapping on purpose.
fn lab_target() -> impl Strategy<Value = Target> {
    prop_oneof![
        (0u8..=255).prop_map(|x| Target::from_addr(IpAddr::V4(Ipv4Addr::new(198, 51, 100, x)))),
        (0u8..=255, 24u8..=31).prop_map(|(x, len)| {
            Target::from_net(
                IpNet::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, x)), len)
                    .unwrap()
                    .trunc(),
            )
            .unwrap()
        }),
        (any::<u16>(), 100u8..=128).prop_map(|(x, len)| {
            let addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, x);
            Target::from_net(IpNet::new(IpAddr::V6(addr), len).unwrap().trunc()).unwrap()
        }),
    ]
}

fn batch() -> impl Strategy<Value = Vec<(Target, u8, bool, i64)>> {
    prop::collection::vec(
        (lab_target(), 0u8..3, prop::bool::weighted(0.8), 60i64..7200),
        1..40,
    )
}

fn submission(batch: &[(Target, u8, bool, i64)], now: chrono::DateTime<Utc>) -> Submission {
    Submission {
        ops: batch
            .iter()
            .map(|(target, key, block, ttl)| Op {
                target: *target,
                key: std::sync::Arc::from(format!("incident:{key}")),
                intent: if *block {
                    Intent::Block {
                        expires_at: now + Duration::seconds(*ttl),
                    }
                } else {
                    Intent::Release
                },
                meta: std::sync::Arc::default(),
                group: 0,
            })
            .collect(),
        groups: vec![Group::default()],
        rate_limited: false,
    }
}

fn engine(backend: Box<dyn Backend>, dir: &tempfile::TempDir) -> Engine {
    let policy = NeverBlock::new(
        Vec::new(),
        vec![
            "198.51.100.0/24".parse().unwrap(),
            "203.0.113.0/24".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ],
        16,
        32,
    );
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    Engine::new(EngineParts {
        backend,
        store,
        never_block: policy,
        max_new_per_hour: 100_000,
        clock: Clock::System,
        health: Arc::new(Health::default()),
    })
}

async fn snapshot(engine: &Engine) -> (Vec<Target>, Vec<(Target, i64)>) {
    let mut held = engine.firewall_list().await.unwrap();
    held.sort();
    let now = engine.clock().now();
    let mut active: Vec<(Target, i64)> = engine
        .db()
        .call(move |s| s.active_blocks(now))
        .await
        .unwrap()
        .into_iter()
        .map(|(t, e)| (t, e.timestamp_millis()))
        .collect();
    active.sort();
    (held, active)
}

/// Applies `batch` twice; the firewall and the state after the second time equal those after the first,
/// and the firewall holds exactly the active blocks (networks inside held networks included).
async fn twice(engine: &Engine, batch: &[(Target, u8, bool, i64)]) -> Result<(), TestCaseError> {
    let now = Utc::now();
    engine.apply(&submission(batch, now)).await.unwrap();
    let first = snapshot(engine).await;
    let second_apply = engine.apply(&submission(batch, now)).await.unwrap();
    let second = snapshot(engine).await;
    prop_assert_eq!(&first, &second);
    prop_assert_eq!(
        second_apply.blocked + second_apply.extended + second_apply.unblocked,
        0
    );
    let active: Vec<Target> = first.1.iter().map(|(t, _)| *t).collect();
    prop_assert_eq!(first.0, active);
    Ok(())
}

#[test]
fn applying_the_same_batch_twice_gives_the_same_state_dry_run() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 64,
        ..Config::default()
    });
    runner
        .run(&batch(), |batch| {
            let dir = tempfile::tempdir().unwrap();
            let engine = engine(Box::new(DryRun::new(DryRunConfig::default())), &dir);
            rt.block_on(twice(&engine, &batch))
        })
        .unwrap();
}

#[test]
fn applying_the_same_batch_twice_gives_the_same_state_nftables() {
    queue_message::require!(crate::netns::available());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let lab = Lab::new();
    let mut runner = TestRunner::new(Config {
        cases: 12,
        ..Config::default()
    });
    runner
        .run(&batch(), |batch| {
            let dir = tempfile::tempdir().unwrap();
            // A fresh table per case: each case starts from an empty firewall, as its state does.
            lab.in_fw(&["nft", "delete", "table", "inet", "portcullis"]);
            let backend = Nftables::new(NftablesConfig {
                netns: Some(lab.fw.clone()),
                ..NftablesConfig::default()
            });
            let engine = engine(Box::new(backend), &dir);
            rt.block_on(async {
                engine.init_backend().await.unwrap();
                twice(&engine, &batch).await
            })
        })
        .unwrap();
}
