//! The consume loop against a real Azurite, with the `dry-run` backend (no root needed): verification,
//! poison queue, replay protection, expired messages, the never-block policy, claims, manual commands,
//! rate limiting, batch windows, status, metrics.

use std::time::Duration;

use chrono::Duration as Span;
use queue_message::Action;

use crate::util::{
    audit, audit_count, cli, cli_ok, eventually, eventually_async, free_port, listed,
    listed_targets, metric, AgentProcess, Env,
};

const DRY_RUN: &str = "[firewall]\nbackend = \"dry-run\"\nreconcile_interval = \"5s\"\n";
const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_block_is_applied_and_its_message_deleted() {
    queue_message::require!(queue_message::testing::azurite_available());
    let env = Env::new().await;
    let config = env.config(DRY_RUN, "", "");
    let _agent = AgentProcess::start(&config, &[]);
    let m = env.message(
        Action::Block,
        &["198.51.100.7", "2001:db8::/48"],
        Span::hours(1),
        "1",
    );
    env.send(&m).await;
    assert!(
        eventually(WAIT, || listed_targets(&config)
            == ["198.51.100.7", "2001:db8::/48"]),
        "not applied: {:?}",
        listed(&config)
    );
    assert!(
        eventually_async(WAIT, || async { env.queued().await == 0 }).await,
        "message not deleted"
    );
    let events = audit(&config);
    assert!(events
        .iter()
        .any(|e| e["event"] == "received" && e["message_id"] == m.id.to_string()));
    assert_eq!(audit_count(&config, "blocked"), 2);
    let list = cli_ok(&config, &["list"]);
    assert!(
        list.contains("https://portal.example/incidents/1"),
        "{list}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_unsigned_unknown_version_and_garbage_go_to_the_poison_queue() {
    queue_message::require!(queue_message::testing::azurite_available());
    let env = Env::new().await;
    let config = env.config(DRY_RUN, "", "");
    let _agent = AgentProcess::start(&config, &[]);

    let good = env.message(Action::Block, &["198.51.100.7"], Span::hours(1), "1");
    let tampered = good
        .encode(&env.key)
        .replace("198.51.100.7", "198.51.100.8");
    let mut unsigned: serde_json::Value = serde_json::from_str(
        &env.message(Action::Block, &["198.51.100.9"], Span::hours(1), "2")
            .encode(&env.key),
    )
    .unwrap();
    unsigned.as_object_mut().unwrap().remove("sig");
    let mut future: serde_json::Value = serde_json::from_str(
        &env.message(Action::Block, &["198.51.100.10"], Span::hours(1), "3")
            .encode(&env.key),
    )
    .unwrap();
    future["v"] = 2.into();
    let other_key = queue_message::SigningKey::from_bytes(vec![42; 32]).unwrap();
    let unknown_key = env
        .message(Action::Block, &["198.51.100.11"], Span::hours(1), "4")
        .encode(&other_key);

    env.send_text(&tampered).await;
    env.send_text(&unsigned.to_string()).await;
    env.send_text(&future.to_string()).await;
    env.send_text(&unknown_key).await;
    env.send_text("not a message at all").await;

    let poisoned = env.poisoned(5, WAIT).await;
    assert_eq!(poisoned.len(), 5, "poisoned: {poisoned:?}");
    let reasons: Vec<&str> = poisoned
        .iter()
        .map(|p| p.lines().nth(1).unwrap().trim_start_matches("reason: "))
        .collect();
    for reason in [
        "bad-signature",
        "unsigned",
        "unknown-version",
        "unknown-key",
        "malformed",
    ] {
        assert!(
            reasons.contains(&reason),
            "{reason} missing from {reasons:?}"
        );
    }
    // The original text is kept after the header.
    assert!(poisoned.iter().any(|p| p.ends_with(&tampered)));
    assert!(listed(&config).is_empty(), "nothing may be applied");
    assert!(eventually_async(WAIT, || async { env.queued().await == 0 }).await);
    assert_eq!(audit_count(&config, "poisoned"), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_message_is_poisoned_and_an_expired_one_discarded() {
    queue_message::require!(queue_message::testing::azurite_available());
    let env = Env::new().await;
    let config = env.config(DRY_RUN, "", "");
    let _agent = AgentProcess::start(&config, &[]);

    let block = env.message(Action::Block, &["198.51.100.7"], Span::hours(1), "1");
    env.send(&block).await;
    assert!(eventually(WAIT, || listed_targets(&config) == ["198.51.100.7"]));
    // Someone re-enqueues the same signed text later: a replay, even though it is validly signed.
    let unblock = env.message(Action::Unblock, &["198.51.100.7"], Span::hours(1), "1");
    env.send(&unblock).await;
    assert!(eventually(WAIT, || listed(&config).is_empty()));
    env.send(&block).await;

    let expired = env.message(Action::Block, &["198.51.100.20"], Span::seconds(-5), "2");
    env.send(&expired).await;

    let poisoned = env.poisoned(1, WAIT).await;
    assert_eq!(poisoned.len(), 1, "poisoned: {poisoned:?}");
    assert!(poisoned[0].contains("reason: replayed"), "{}", poisoned[0]);
    assert!(eventually(WAIT, || audit_count(&config, "discarded") == 1));
    assert!(
        listed(&config).is_empty(),
        "the replay must not re-block: {:?}",
        listed(&config)
    );
    let discarded: Vec<_> = audit(&config)
        .into_iter()
        .filter(|e| e["event"] == "discarded")
        .collect();
    assert!(discarded[0]["reason"]
        .as_str()
        .unwrap()
        .starts_with("expired"));
    assert!(eventually_async(WAIT, || async { env.queued().await == 0 }).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_targets_never_reach_the_firewall() {
    queue_message::require!(queue_message::testing::azurite_available());
    let env = Env::new().await;
    let config = env.config(DRY_RUN, "allowlist = [\"198.51.100.128/25\"]", "");
    let _agent = AgentProcess::start(&config, &[]);
    let m = env.message(
        Action::Block,
        &[
            "10.1.2.3",
            "127.0.0.1",
            "192.0.2.1",
            "198.51.100.200",
            "198.51.100.9",
            "11.0.0.0/8",
        ],
        Span::hours(1),
        "1",
    );
    env.send(&m).await;
    assert!(
        eventually(WAIT, || listed_targets(&config) == ["198.51.100.9"]),
        "{:?}",
        listed(&config)
    );
    assert_eq!(audit_count(&config, "refused"), 5);
    let refused: Vec<String> = audit(&config)
        .into_iter()
        .filter(|e| e["event"] == "refused")
        .map(|e| format!("{} {}", e["target"], e["reason"]))
        .collect();
    assert!(
        refused
            .iter()
            .any(|r| r.contains("10.1.2.3") && r.contains("RFC 1918")),
        "{refused:?}"
    );
    assert!(
        refused
            .iter()
            .any(|r| r.contains("198.51.100.200") && r.contains("allowlisted")),
        "{refused:?}"
    );
    assert!(
        refused
            .iter()
            .any(|r| r.contains("11.0.0.0/8") && r.contains("minimum prefix")),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_stays_blocked_until_every_claim_is_lifted_and_blocks_expire() {
    queue_message::require!(queue_message::testing::azurite_available());
    let env = Env::new().await;
    let config = env.config(DRY_RUN, "", "");
    let _agent = AgentProcess::start(&config, &[]);
    env.send(&env.message(Action::Block, &["198.51.100.7"], Span::hours(1), "a"))
        .await;
    env.send(&env.message(Action::Block, &["198.51.100.7"], Span::hours(2), "b"))
        .await;
    assert!(
        eventually(WAIT, || listed(&config) == [("198.51.100.7".to_owned(), 2)]),
        "{:?}",
        listed(&config)
    );
    env.send(&env.message(Action::Unblock, &["198.51.100.7"], Span::hours(1), "a"))
        .await;
    assert!(
        eventually(WAIT, || listed(&config) == [("198.51.100.7".to_owned(), 1)]),
        "{:?}",
        listed(&config)
    );
    env.send(&env.message(Action::Unblock, &["198.51.100.7"], Span::hours(1), "b"))
        .await;
    assert!(eventually(WAIT, || listed(&config).is_empty()));

    // A short block runs out on its own.
    env.send(&env.message(Action::Block, &["198.51.100.8"], Span::seconds(3), "c"))
        .await;
    assert!(eventually(WAIT, || listed_targets(&config) == ["198.51.100.8"]));
    assert!(
        eventually(WAIT, || audit_count(&config, "expired") == 1),
        "no expiry: {:?}",
        audit(&config)
    );
    assert!(listed(&config).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn manual_block_and_unblock_through_the_daemon_and_without_it() {
    queue_message::require!(queue_message::testing::azurite_available());
    let env = Env::new().await;
    let config = env.config(DRY_RUN, "", "");
    {
        let mut agent = AgentProcess::start(&config, &[]);
        let out = cli_ok(
            &config,
            &[
                "block",
                "198.51.100.7",
                "--for",
                "1h",
                "--reason",
                "seen in logs",
            ],
        );
        assert!(out.contains("198.51.100.7: blocked until"), "{out}");
        assert_eq!(listed_targets(&config), ["198.51.100.7"]);
        // A queued incident claim on the same address; a person's unblock lifts both.
        env.send(&env.message(Action::Block, &["198.51.100.7"], Span::hours(1), "1"))
            .await;
        assert!(eventually(WAIT, || listed(&config) == [("198.51.100.7".to_owned(), 2)]));
        let out = cli_ok(&config, &["unblock", "198.51.100.7"]);
        assert!(out.contains("unblocked"), "{out}");
        assert!(listed(&config).is_empty());
        // The never-block policy applies to people too.
        let refused = cli(&config, &["block", "10.0.0.1"]);
        assert!(!refused.status.success());
        assert!(String::from_utf8_lossy(&refused.stderr).contains("never blocked"));
        assert!(agent.terminate(), "clean exit on SIGTERM:\n{}", agent.log());
        assert!(agent.log().contains("blocks stay in place"));
    }
    // No daemon: the CLI applies it itself, through the same state.
    let out = cli_ok(&config, &["block", "203.0.113.5", "--for", "30m"]);
    assert!(out.contains("blocked"), "{out}");
    assert_eq!(listed_targets(&config), ["203.0.113.5"]);
    let events = audit(&config);
    assert!(events
        .iter()
        .any(|e| e["event"] == "received" && e["claim"] == "manual"));
    let out = cli_ok(&config, &["unblock", "203.0.113.5"]);
    assert!(out.contains("unblocked"));
    let bad = cli(&config, &["block", "not-an-ip"]);
    assert!(!bad.status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rate_limit_holds_back_new_blocks_and_keeps_the_message() {
    queue_message::require!(queue_message::testing::azurite_available());
    let env = Env::new().await;
    let config = env.config(DRY_RUN, "max_new_blocks_per_hour = 2", "");
    let _agent = AgentProcess::start(&config, &[]);
    env.send(&env.message(
        Action::Block,
        &["198.51.100.1", "198.51.100.2", "198.51.100.3"],
        Span::hours(1),
        "1",
    ))
    .await;
    assert!(
        eventually(WAIT, || listed(&config).len() == 2),
        "{:?}",
        listed(&config)
    );
    assert!(eventually(WAIT, || audit_count(&config, "deferred") >= 1));
    let status = cli_ok(&config, &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert!(status["rate_limited_until"].is_string(), "{status}");
    assert_eq!(status["new_blocks_last_hour"], 2);
    // The message stays queued (hidden until the budget frees), not poisoned, not lost.
    assert_eq!(env.queued().await, 1);
    assert!(env.drain_poison().await.is_empty());
    // Extensions and unblocks still flow.
    env.send(&env.message(Action::Unblock, &["198.51.100.1"], Span::hours(1), "1"))
        .await;
    assert!(
        eventually(WAIT, || listed(&config).len() == 1),
        "{:?}",
        listed(&config)
    );
    let human = cli_ok(&config, &["status"]);
    assert!(human.contains("RATE LIMITED"), "{human}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_window_turns_a_burst_into_one_commit() {
    queue_message::require!(queue_message::testing::azurite_available());
    let env = Env::new().await;
    let port = free_port();
    let firewall = format!(
        "[firewall]\nbackend = \"dry-run\"\n[firewall.dry-run]\nbatch_window = \"3s\"\n\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"
    );
    let config = env.config(&firewall, "", "");
    // All queued before the agent starts polling, so the burst is one batch whatever the timing.
    for i in 1..=20 {
        env.send(&env.message(
            Action::Block,
            &[&format!("198.51.100.{i}")],
            Span::hours(1),
            &i.to_string(),
        ))
        .await;
    }
    let agent = AgentProcess::start(&config, &[]);
    assert!(
        eventually(WAIT, || listed(&config).len() == 20),
        "{:?}",
        listed(&config)
    );
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let commits: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("portcullis_agent_commit_duration_seconds_count "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(commits, 1, "{}", agent.log());
    assert!(metrics.contains("portcullis_agent_blocks_applied_total 20"));
    let health = reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn status_and_check_report_on_a_healthy_setup() {
    queue_message::require!(queue_message::testing::azurite_available());
    let env = Env::new().await;
    let config = env.config(DRY_RUN, "", "");
    let check = cli_ok(&config, &["check"]);
    assert!(check.contains("All checks passed"), "{check}");
    assert!(check.contains("ok    queue"), "{check}");
    let _agent = AgentProcess::start(&config, &[]);
    env.send(&env.message(Action::Block, &["198.51.100.7"], Span::hours(1), "1"))
        .await;
    assert!(eventually(WAIT, || listed(&config).len() == 1));
    let status: serde_json::Value =
        serde_json::from_str(&cli_ok(&config, &["status", "--json"])).unwrap();
    assert_eq!(status["running"], true);
    assert_eq!(status["active_blocks"], 1);
    assert_eq!(status["backend"], "dry-run");
    assert!(
        status["last_commit"].is_string() && status["last_poll"].is_string(),
        "{status}"
    );
    assert!(status["queue_depth"].is_number(), "{status}");
    let sync = cli_ok(&config, &["sync"]);
    assert!(sync.contains("1 active block"), "{sync}");
}

#[tokio::test(flavor = "multi_thread")]
async fn check_fails_clearly_on_the_first_problem() {
    queue_message::require!(queue_message::testing::azurite_available());
    let env = Env::new().await;
    // A missing queue.
    let config = env.config(DRY_RUN, "", "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("name = \"portcullis\"", "name = \"nosuchqueue\"");
    std::fs::write(&config, text).unwrap();
    let out = cli(&config, &["check"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("FAIL  queue") && stdout.contains("does not exist"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("firewall"),
        "stops at the first problem: {stdout}"
    );
    // A wrong account key.
    let config = env.config(DRY_RUN, "", "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("AccountKey=Eby8", "AccountKey=Zby8");
    std::fs::write(&config, text).unwrap();
    let out = cli(&config, &["check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("access denied"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // An unknown key in the file: exit code 2, key named.
    std::fs::write(&config, "[queue]\nconection = \"x\"\n").unwrap();
    let out = cli(&config, &["check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("conection"));
}

/// Blocks arriving while the firewall is down for longer than `max_dequeue_count` visibility timeouts are
/// applied once it recovers; the outage does not use up their deliveries and nothing is poisoned.
#[tokio::test(flavor = "multi_thread")]
async fn a_backend_outage_longer_than_the_delivery_limit_poisons_nothing() {
    queue_message::require!(queue_message::testing::azurite_available());
    let env = Env::new().await;
    let port = free_port();
    let firewall = format!("{DRY_RUN}\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
    let config = env.config(&firewall, "", "max_dequeue_count = 2");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("visibility_timeout = \"3s\"", "visibility_timeout = \"1s\"");
    std::fs::write(&config, text).unwrap();
    let down = env.dir.path().join("backend-down");
    std::fs::write(&down, "").unwrap();
    let agent = AgentProcess::start(
        &config,
        &[("PORTCULLIS_FAIL_BACKEND_WHILE", down.to_str().unwrap())],
    );

    let first = env.message(Action::Block, &["198.51.100.7"], Span::hours(1), "1");
    env.send(&first).await;
    assert!(
        eventually(WAIT, || audit_count(&config, "failed") >= 1),
        "the outage never hit a commit"
    );
    let second = env.message(Action::Block, &["198.51.100.8"], Span::hours(1), "2");
    env.send(&second).await;
    // Three recovery probes come 1 + 2 + 4 s into the stall: well past max_dequeue_count × the 1 s
    // visibility timeout, so without the stall both messages would have been received again by then.
    let probes = "portcullis_agent_recovery_probes_total";
    assert!(
        eventually_async(Duration::from_secs(60), || async {
            metric(port, probes).await >= 3.0
        })
        .await,
        "the consumer did not stall and probe:\n{}",
        agent.log()
    );
    assert!(listed(&config).is_empty(), "nothing can apply while down");
    let peeked = env.queue.peek(32).await.unwrap();
    let arrived_late = peeked
        .iter()
        .find(|p| p.text == second.encode(&env.key))
        .expect("the second message is still queued");
    assert_eq!(
        arrived_late.dequeue_count, 0,
        "a message sent during the outage was received while stalled"
    );
    std::fs::remove_file(&down).unwrap();

    assert!(
        eventually(Duration::from_secs(60), || listed_targets(&config)
            == ["198.51.100.7", "198.51.100.8"]),
        "not applied after recovery: {:?}\n{}",
        listed(&config),
        agent.log()
    );
    assert!(eventually_async(WAIT, || async { env.queued().await == 0 }).await);
    assert_eq!(audit_count(&config, "poisoned"), 0, "{}", agent.log());
    assert!(env.drain_poison().await.is_empty());
}

/// A message that stops the agent every time it is applied is poisoned on its own; the innocent
/// message received in the same batch is applied, not poisoned with it.
#[tokio::test(flavor = "multi_thread")]
async fn only_the_message_that_crash_loops_the_agent_is_poisoned() {
    queue_message::require!(queue_message::testing::azurite_available());
    let env = Env::new().await;
    let config = env.config(DRY_RUN, "", "max_dequeue_count = 1");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("visibility_timeout = \"3s\"", "visibility_timeout = \"1s\"");
    std::fs::write(&config, text).unwrap();
    let innocent = env.message(Action::Block, &["198.51.100.7"], Span::hours(1), "1");
    let culprit = env.message(Action::Block, &["198.51.100.66"], Span::hours(1), "2");
    // Both queued before the agent starts, so the first receive takes them in one batch.
    env.send(&innocent).await;
    env.send(&culprit).await;
    let crash = [("PORTCULLIS_FAILPOINT", "apply:198.51.100.66")];
    for run in 1..=2 {
        let mut agent = AgentProcess::start(&config, &crash);
        assert!(
            agent.wait_for_log("FAILPOINT apply:198.51.100.66 reached", WAIT),
            "run {run}: {}",
            agent.log()
        );
        agent.kill9();
    }
    let agent = AgentProcess::start(&config, &crash);
    let poisoned = env.poisoned(1, WAIT).await;
    assert_eq!(poisoned.len(), 1, "{poisoned:?}\n{}", agent.log());
    assert!(
        poisoned[0].ends_with(&culprit.encode(&env.key)),
        "{}",
        poisoned[0]
    );
    assert!(poisoned[0].contains("stopped while applying it on its own"));
    assert!(
        eventually(WAIT, || listed_targets(&config) == ["198.51.100.7"]),
        "{:?}",
        listed(&config)
    );
    assert!(eventually_async(WAIT, || async { env.queued().await == 0 }).await);
    assert!(env.drain_poison().await.is_empty());
}

/// When the state cannot record a committed block, the message does not count towards the poison
/// queue, reconcile does not lift the committed entry, and once the state works the block is recorded.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_record_after_a_commit_neither_poisons_nor_lifts_the_block() {
    queue_message::require!(queue_message::testing::azurite_available());
    let env = Env::new().await;
    let port = free_port();
    let firewall = format!("{DRY_RUN}\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
    let config = env.config(&firewall, "", "max_dequeue_count = 1");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("visibility_timeout = \"3s\"", "visibility_timeout = \"1s\"");
    std::fs::write(&config, text).unwrap();
    let broken = env.dir.path().join("store-broken");
    std::fs::write(&broken, "").unwrap();
    let agent = AgentProcess::start(
        &config,
        &[("PORTCULLIS_FAIL_RECORD_WHILE", broken.to_str().unwrap())],
    );
    let m = env.message(Action::Block, &["198.51.100.7"], Span::hours(1), "1");
    env.send(&m).await;
    assert!(
        agent.wait_for_log("the state could not record it", WAIT),
        "{}",
        agent.log()
    );
    // A reconcile (done when `sync` returns) now sees an entry the state does not know; it must keep it.
    let synced = cli_ok(&config, &["sync"]);
    assert!(synced.contains(" 0 removed"), "{synced}");
    // Each failed record stalls the consumer and probes the state once before the next delivery: two
    // probes mean the message was delivered past max_dequeue_count while the store failed.
    let probes = "portcullis_agent_recovery_probes_total";
    assert!(
        eventually_async(Duration::from_secs(60), || async {
            metric(port, probes).await >= 2.0
        })
        .await,
        "the message was not retried while the store failed:\n{}",
        agent.log()
    );
    std::fs::remove_file(&broken).unwrap();
    assert!(
        eventually(WAIT, || listed_targets(&config) == ["198.51.100.7"]),
        "{:?}\n{}",
        listed(&config),
        agent.log()
    );
    assert!(eventually_async(WAIT, || async { env.queued().await == 0 }).await);
    assert_eq!(audit_count(&config, "poisoned"), 0, "{}", agent.log());
    let lifted: Vec<_> = audit(&config)
        .into_iter()
        .filter(|e| e["event"] == "reconciled")
        .filter(|e| !e["detail"].as_str().unwrap_or("").contains("removed 0"))
        .collect();
    assert!(lifted.is_empty(), "reconcile lifted the block: {lifted:?}");
}

/// SIGTERM while a batch is in flight (inside its batch window): the batch is still committed and
/// recorded, its message deleted, the block stays, and the agent exits 0.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_a_batch_in_flight_commits_it_and_exits_cleanly() {
    queue_message::require!(queue_message::testing::azurite_available());
    let env = Env::new().await;
    let config = env.config(
        "[firewall]\nbackend = \"dry-run\"\n[firewall.dry-run]\nbatch_window = \"1h\"\n",
        "",
        "",
    );
    let mut agent = AgentProcess::start(&config, &[]);
    env.send(&env.message(Action::Block, &["198.51.100.7"], Span::hours(1), "1"))
        .await;
    // The window is an hour long: the batch can only end through the shutdown.
    assert!(
        agent.wait_for_log("Batch window open.", WAIT),
        "{}",
        agent.log()
    );
    assert!(
        listed(&config).is_empty(),
        "nothing applied before the window closes"
    );
    assert!(agent.terminate(), "clean exit on SIGTERM:\n{}", agent.log());
    assert_eq!(listed_targets(&config), ["198.51.100.7"]);
    assert_eq!(audit_count(&config, "blocked"), 1);
    assert_eq!(env.queued().await, 0, "the applied message was deleted");
    assert_eq!(audit_count(&config, "unblocked"), 0, "blocks stay in place");
}
