//! The whole agent (binary, Azurite, real nftables or ipset inside a lab namespace): the peer's TCP
//! connections are dropped once a signed block is queued and succeed again after unblock or expiry; drift
//! is repaired; a crash between commit and delete converges on the same state; a message that keeps
//! failing goes to the poison queue.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use chrono::Duration as Span;
use queue_message::Action;

use crate::netns::{wait_for, Lab, FW_V4};
use crate::util::{
    audit, audit_count, cli_ok, eventually, eventually_async, listed_targets, AgentProcess, Env,
};

const WAIT: Duration = Duration::from_secs(30);

fn nftables(lab: &Lab) -> String {
    format!(
        "[firewall]\nbackend = \"nftables\"\nreconcile_interval = \"5s\"\n[firewall.nftables]\nnetns = \"{}\"\n",
        lab.fw
    )
}

fn ipset(lab: &Lab, maxelem: u32) -> String {
    format!(
        "[firewall]\nbackend = \"ipset\"\nreconcile_interval = \"5s\"\n[firewall.ipset]\nnetns = \"{}\"\nmaxelem = {maxelem}\n",
        lab.fw
    )
}

fn nft_elements(lab: &Lab) -> String {
    lab.in_fw_ok(&["nft", "list", "table", "inet", "portcullis"])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queued_block_drops_the_peer_and_unblock_and_expiry_let_it_back() {
    queue_message::require!(queue_message::testing::azurite_available());
    queue_message::require!(crate::netns::available());
    let lab = Lab::new();
    let env = Env::new().await;
    let config = env.config(&nftables(&lab), "", "");
    let _agent = AgentProcess::start(&config, &[]);
    assert!(lab.peer_v4_connects() && lab.peer_v6_connects());

    env.send(&env.message(
        Action::Block,
        &["198.51.100.2", "2001:db8::2"],
        Span::hours(1),
        "1",
    ))
    .await;
    assert!(
        wait_for(WAIT, false, || lab.peer_v4_connects()),
        "IPv4 peer not dropped"
    );
    assert!(!lab.peer_v6_connects(), "IPv6 peer not dropped");

    // The incident is closed as a false positive: its claim is lifted.
    env.send(&env.message(
        Action::Unblock,
        &["198.51.100.2", "2001:db8::2"],
        Span::hours(1),
        "1",
    ))
    .await;
    assert!(
        wait_for(WAIT, true, || lab.peer_v4_connects()),
        "IPv4 peer not allowed again"
    );
    assert!(lab.peer_v6_connects());

    // A short block ends by itself.
    env.send(&env.message(Action::Block, &["198.51.100.2"], Span::seconds(4), "2"))
        .await;
    assert!(wait_for(WAIT, false, || lab.peer_v4_connects()));
    assert!(
        wait_for(WAIT, true, || lab.peer_v4_connects()),
        "expiry did not lift the block"
    );
    assert!(eventually(WAIT, || audit_count(&config, "expired") == 1));
    assert!(eventually(WAIT, || listed_targets(&config).is_empty()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cidr_block_covers_its_range_and_the_host_itself_is_never_blocked() {
    queue_message::require!(queue_message::testing::azurite_available());
    queue_message::require!(crate::netns::available());
    let lab = Lab::new();
    let inner = Ipv4Addr::new(198, 51, 100, 77);
    let outside = Ipv4Addr::new(198, 51, 100, 130);
    lab.add_peer_address(IpAddr::V4(inner));
    lab.add_peer_address(IpAddr::V4(outside));
    let env = Env::new().await;
    let config = env.config(&nftables(&lab), "", "");
    let _agent = AgentProcess::start(&config, &[]);
    // 198.51.100.1 is the firewall namespace's own address: refused even though the lab range allows it,
    // and so is a network that contains it.
    env.send(&env.message(
        Action::Block,
        &["198.51.100.64/26", "198.51.100.1", "198.51.100.0/30"],
        Span::hours(1),
        "1",
    ))
    .await;
    assert!(wait_for(WAIT, false, || lab
        .connects_from(IpAddr::V4(inner), IpAddr::V4(FW_V4))));
    assert!(
        lab.connects_from(IpAddr::V4(outside), IpAddr::V4(FW_V4)),
        "outside the /26"
    );
    assert!(
        lab.peer_v4_connects(),
        "198.51.100.0/30 must have been refused"
    );
    let refused: Vec<_> = audit(&config)
        .into_iter()
        .filter(|e| e["event"] == "refused")
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    for e in &refused {
        assert!(
            e["reason"]
                .as_str()
                .unwrap()
                .contains("allowlisted 198.51.100.1/32"),
            "{e}"
        );
    }
    assert_eq!(listed_targets(&config), ["198.51.100.64/26"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_repairs_an_external_flush_and_removes_strangers_from_our_set() {
    queue_message::require!(queue_message::testing::azurite_available());
    queue_message::require!(crate::netns::available());
    let lab = Lab::new();
    let env = Env::new().await;
    let config = env.config(&nftables(&lab), "", "");
    let _agent = AgentProcess::start(&config, &[]);
    env.send(&env.message(Action::Block, &["198.51.100.2"], Span::hours(1), "1"))
        .await;
    assert!(wait_for(WAIT, false, || lab.peer_v4_connects()));

    lab.in_fw_ok(&["nft", "flush", "ruleset"]);
    assert!(lab.peer_v4_connects(), "the flush removed the block");
    // The periodic reconcile (5 s here) puts table, chains and the element back.
    assert!(
        wait_for(WAIT, false, || lab.peer_v4_connects()),
        "reconcile did not repair the flush"
    );
    assert!(eventually(WAIT, || audit_count(&config, "reconciled") >= 1));

    // An element someone else put into our set is removed; a table that is not ours is left alone.
    lab.in_fw_ok(&[
        "nft",
        "add",
        "element",
        "inet",
        "portcullis",
        "addr4",
        "{ 203.0.113.9 }",
    ]);
    lab.in_fw_ok(&["nft", "add", "table", "inet", "theirs"]);
    let out = cli_ok(&config, &["sync"]);
    assert!(out.contains("1 removed"), "{out}");
    assert!(!nft_elements(&lab).contains("203.0.113.9"));
    assert!(lab
        .in_fw_ok(&["nft", "list", "tables"])
        .contains("inet theirs"));
    assert!(!lab.peer_v4_connects());
}

/// Kill -9 at a crash point, restart, and check that the state converges and nothing is applied twice.
async fn crash_and_restart(failpoint: &str) {
    queue_message::require!(queue_message::testing::azurite_available());
    queue_message::require!(crate::netns::available());
    let lab = Lab::new();
    let env = Env::new().await;
    let config = env.config(&nftables(&lab), "", "");
    let m = env.message(
        Action::Block,
        &["198.51.100.2", "198.51.100.8/29"],
        Span::hours(1),
        "1",
    );
    {
        let mut agent = AgentProcess::start(&config, &[("PORTCULLIS_FAILPOINT", failpoint)]);
        env.send(&m).await;
        assert!(
            agent.wait_for_log(&format!("FAILPOINT {failpoint} reached"), WAIT),
            "failpoint not reached:\n{}",
            agent.log()
        );
        // The firewall already blocks; the message is still on the queue.
        assert!(!lab.peer_v4_connects());
        agent.kill9();
    }
    assert_eq!(env.queued().await, 1, "the message must survive the crash");
    let recorded_before = audit_count(&config, "blocked");
    assert_eq!(
        recorded_before,
        if failpoint == "after-record" { 2 } else { 0 }
    );

    let _agent = AgentProcess::start(&config, &[]);
    // The visibility timeout (3 s) runs out, the message comes back and is handled.
    assert!(
        eventually_async(WAIT, || async { env.queued().await == 0 }).await,
        "not redelivered"
    );
    assert!(eventually(WAIT, || listed_targets(&config)
        == ["198.51.100.2", "198.51.100.8/29"]));
    assert!(!lab.peer_v4_connects());
    // Applied once in the state, whatever the crash point.
    assert_eq!(audit_count(&config, "blocked"), 2);
    let discarded = audit_count(&config, "discarded");
    assert_eq!(
        discarded,
        usize::from(failpoint == "after-record"),
        "{:?}",
        audit(&config)
    );
    let elements = nft_elements(&lab);
    assert_eq!(elements.matches("198.51.100.2 ").count(), 1, "{elements}");
    assert!(env.drain_poison().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_after_the_firewall_commit_converges_after_restart() {
    crash_and_restart("after-commit").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_before_the_delete_converges_after_restart() {
    crash_and_restart("after-record").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_that_keeps_failing_goes_to_the_poison_queue_with_the_error() {
    queue_message::require!(queue_message::testing::azurite_available());
    queue_message::require!(crate::netns::available());
    let lab = Lab::new();
    let env = Env::new().await;
    // An ipset that holds one entry: the firewall refuses the second ("Hash is full") every time.
    let config = env.config(&ipset(&lab, 1), "", "");
    let agent = AgentProcess::start(&config, &[]);
    let m = env.message(
        Action::Block,
        &["198.51.100.2", "198.51.100.3", "198.51.100.4"],
        Span::hours(1),
        "1",
    );
    env.send(&m).await;
    let poisoned = env.poisoned(1, Duration::from_secs(120)).await;
    assert_eq!(poisoned.len(), 1, "not poisoned:\n{}", agent.log());
    let text = &poisoned[0];
    assert!(text.contains("reason: failed"), "{text}");
    assert!(text.contains("dequeue-count: 5"), "{text}");
    assert!(
        text.to_lowercase().contains("full"),
        "the error must be carried: {text}"
    );
    assert!(text.ends_with(&m.encode(&env.key)));
    assert_eq!(audit_count(&config, "failed"), 5);
    assert_eq!(audit_count(&config, "poisoned"), 1);
    assert!(
        listed_targets(&config).is_empty(),
        "nothing recorded as blocked"
    );
    assert!(eventually_async(WAIT, || async { env.queued().await == 0 }).await);
    // Reconcile takes the stray entry the half-applied restore left behind back out.
    assert!(eventually(WAIT, || !lab
        .in_fw_ok(&["ipset", "list", "portcullis4"])
        .contains("198.51.100.")));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ipset_backend_blocks_through_the_whole_agent_too() {
    queue_message::require!(queue_message::testing::azurite_available());
    queue_message::require!(crate::netns::available());
    let lab = Lab::new();
    let env = Env::new().await;
    let config = env.config(&ipset(&lab, 65536), "", "");
    let _agent = AgentProcess::start(&config, &[]);
    env.send(&env.message(
        Action::Block,
        &["198.51.100.2", "2001:db8::2"],
        Span::hours(1),
        "1",
    ))
    .await;
    assert!(wait_for(WAIT, false, || lab.peer_v4_connects()));
    assert!(!lab.peer_v6_connects());
    let out = cli_ok(&config, &["unblock", "198.51.100.2"]);
    assert!(out.contains("unblocked"), "{out}");
    assert!(lab.peer_v4_connects());
    assert!(!lab.peer_v6_connects());
    check_passes(&config);
}

fn check_passes(config: &Path) {
    let out = cli_ok(config, &["check"]);
    assert!(out.contains("All checks passed"), "{out}");
    assert!(out.contains("ok    firewall"), "{out}");
}
