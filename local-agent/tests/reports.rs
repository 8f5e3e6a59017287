//! The return path's agent side against Azurite: a block through the agent (dry-run backend) produces a
//! signed commit report in the reports queue, and an outage of that queue plus a restart lose nothing.

use std::sync::Arc;
use std::time::Duration;

use chrono::Duration as Span;
use portcullis_agent::reports::outbox;
use portcullis_agent::store::Store;
use queue_message::report::{EventKind, Report, ReportBody};
use queue_message::{Action, Queue, QueueConnection, Target};

use crate::util::{cli_ok, eventually, listed_targets, AgentProcess, Env};

const DRY_RUN: &str = "[firewall]\nbackend = \"dry-run\"\nreconcile_interval = \"5s\"\n";
const WAIT: Duration = Duration::from_secs(60);

fn reports_queue(env: &Env) -> Queue {
    Arc::new(QueueConnection::parse(&env.azurite.connection_string()).unwrap())
        .queue("portcullis-reports")
}

/// Every report in the queue, verified with the handler's key.
async fn reports(queue: &Queue, env: &Env) -> Vec<Report> {
    let mut out = Vec::new();
    loop {
        let got = queue.receive(32, 60).await.unwrap();
        if got.is_empty() {
            return out;
        }
        out.extend(got.iter().map(|r| {
            Report::decode(&r.text, std::slice::from_ref(&env.key)).expect("a verifiable report")
        }));
    }
}

/// Commit reports waiting in the outbox (heartbeats, one at every start, not counted).
fn outbox_depth(env: &Env) -> u64 {
    let store = Store::open_read_only(&env.state()).unwrap();
    store
        .connection()
        .query_row(
            "SELECT COUNT(*) FROM outbox WHERE kind = 'report'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
        .try_into()
        .unwrap()
}

fn total_outbox_depth(env: &Env) -> u64 {
    let store = Store::open_read_only(&env.state()).unwrap();
    outbox::depth(store.connection()).unwrap()
}

/// The commit reports among `reports` (heartbeats left out).
fn commits(reports: Vec<Report>) -> Vec<Report> {
    reports
        .into_iter()
        .filter(|r| matches!(r.body, ReportBody::Commit(_)))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_block_produces_a_commit_report_and_an_outage_with_a_restart_loses_nothing() {
    queue_message::require!(queue_message::testing::azurite_available());
    let env = Env::new().await;
    let config = env.config(DRY_RUN, "", "");
    let queue = reports_queue(&env);
    let mut agent = AgentProcess::start(&config, &[]);

    // The reports queue does not exist yet: the block is enforced regardless, the report waits.
    let m = env.message(Action::Block, &["198.51.100.7"], Span::hours(1), "1");
    env.send(&m).await;
    assert!(
        eventually(WAIT, || listed_targets(&config) == ["198.51.100.7"]),
        "the block was not applied while the reports queue was missing"
    );
    assert!(
        eventually(WAIT, || outbox_depth(&env) == 1),
        "the commit report is not in the outbox"
    );

    let status: serde_json::Value =
        serde_json::from_str(&cli_ok(&config, &["status", "--json"])).unwrap();
    assert_eq!(status["outbox_depth"], total_outbox_depth(&env), "{status}");

    // Restart while the queue is still missing: the report is still there.
    assert!(agent.terminate(), "the agent did not stop");
    assert_eq!(outbox_depth(&env), 1);

    // The queue comes back and the agent restarts: the report is delivered and leaves the outbox.
    queue.create_if_missing().await.unwrap();
    let _agent = AgentProcess::start(&config, &[]);
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + WAIT;
    while got.is_empty() && std::time::Instant::now() < deadline {
        got.extend(commits(reports(&queue, &env).await));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !got.is_empty(),
        "no report arrived after the queue came back"
    );
    assert!(eventually(WAIT, || outbox_depth(&env) == 0));
    assert_eq!(got.len(), 1, "{got:?}");
    let report = &got[0];
    assert_eq!(report.site, env.name);
    let ReportBody::Commit(commit) = &report.body else {
        panic!("not a commit report: {report:?}");
    };
    assert_eq!((commit.part, commit.parts), (1, 1));
    let block = commit
        .events
        .iter()
        .find(|e| e.event == EventKind::Block)
        .expect("a block event");
    assert_eq!(block.targets, [Target::parse("198.51.100.7").unwrap()]);
    assert_eq!(block.message_id.as_deref(), Some(m.id.to_string().as_str()));
    assert_eq!(
        block.source.as_ref().map(|s| s.kind.as_str()),
        Some(m.source.kind.as_str())
    );
    assert!(block.expires_at.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poisoned_message_is_reported_with_its_queue_message_id() {
    queue_message::require!(queue_message::testing::azurite_available());
    let env = Env::new().await;
    let config = env.config(DRY_RUN, "", "");
    let queue = reports_queue(&env);
    queue.create_if_missing().await.unwrap();
    let _agent = AgentProcess::start(&config, &[]);
    env.send_text("not a portcullis message").await;

    // Heartbeats arrive too; wait for the commit report.
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + WAIT;
    while got.is_empty() && std::time::Instant::now() < deadline {
        got.extend(commits(reports(&queue, &env).await));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let poisoned: Vec<_> = got
        .iter()
        .filter_map(|r| match &r.body {
            ReportBody::Commit(c) => Some(c.events.iter()),
            _ => None,
        })
        .flatten()
        .filter(|e| e.event == EventKind::Poisoned)
        .collect();
    assert_eq!(poisoned.len(), 1, "{got:?}");
    assert!(poisoned[0].message_id.is_some());
    assert!(poisoned[0].reason.is_some());
}

/// Heartbeats: one at start, then every `[reports] heartbeat`, each with the site, the backend, the
/// active blocks and the messages poisoned since the previous one.
#[tokio::test(flavor = "multi_thread")]
async fn heartbeats_carry_the_status_and_the_poisoned_count() {
    queue_message::require!(queue_message::testing::azurite_available());
    let env = Env::new().await;
    let firewall = format!("{DRY_RUN}\n[reports]\nheartbeat = \"10s\"\n");
    let config = env.config(&firewall, "", "");
    let queue = reports_queue(&env);
    queue.create_if_missing().await.unwrap();
    let _agent = AgentProcess::start(&config, &[]);

    let mut beats = Vec::new();
    let mut sent = false;
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline {
        for report in reports(&queue, &env).await {
            if let ReportBody::Heartbeat(h) = &report.body {
                assert_eq!(report.site, env.name);
                beats.push(h.clone());
            }
        }
        if !beats.is_empty() && !sent {
            // A message that is not a Portcullis message is poisoned at once.
            env.send_text("not a portcullis message").await;
            sent = true;
        }
        if beats.iter().any(|h| h.poisoned_since_last > 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let first = beats.first().expect("no heartbeat at start");
    assert_eq!(first.backend, "dry-run");
    assert_eq!(first.active_blocks, 0);
    assert_eq!(first.poisoned_since_last, 0);
    assert_eq!(first.healthy, first.problems.is_empty());
    let later = beats
        .iter()
        .find(|h| h.poisoned_since_last > 0)
        .expect("no heartbeat counted the poisoned message");
    assert_eq!(later.poisoned_since_last, 1, "{beats:?}");
}
