//! The CLI without a running daemon, as a new user meets it in the first hour (issue 12): commands that would
//! change the host say so first, refused ones and read-only ones change nothing. Dry-run backend, no root.

use std::path::{Path, PathBuf};

use queue_message::testing::Azurite;

use crate::util::{cli, free_port, LAB_RANGES};

const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// A config whose allowlist names a DNS server, the way host protection would.
fn config(dir: &Path) -> (PathBuf, PathBuf) {
    config_with(dir, "connection = \"UseDevelopmentStorage=true\"")
}

fn config_with(dir: &Path, queue: &str) -> (PathBuf, PathBuf) {
    let state = dir.join("state").join("state.db");
    let path = dir.join("agent.toml");
    std::fs::write(
        &path,
        format!(
            "[queue]\n{queue}\nsigning_key = \"{KEY}\"\n\n\
             [state]\npath = \"{}\"\n\n\
             [policy]\nallowlist = [\"10.255.255.53/32\"]\nlab_ranges = {LAB_RANGES}\nprotect_host_addresses = false\n\n\
             [firewall]\nbackend = \"dry-run\"\n",
            state.display()
        ),
    )
    .unwrap();
    (path, state)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

// Defects 5 and 6: `block 0.0.0.0/0` with no daemon was refused as "overlaps allowlisted 10.255.255.53/32" after
// creating the state database; now the reason is that it is too broad, and nothing is created.
#[test]
fn a_refused_block_without_a_daemon_changes_nothing_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let (config, state) = config(dir.path());
    let out = cli(&config, &["block", "0.0.0.0/0"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("too broad (/0; minimum prefix /16)"), "{err}");
    assert!(!err.contains("allowlisted"), "{err}");
    assert!(!err.contains("note: no agent answers"), "{err}");
    assert!(
        !state.exists(),
        "a refused block created {}",
        state.display()
    );
    assert!(!state.parent().unwrap().exists());
}

#[test]
fn read_only_commands_create_no_state() {
    let dir = tempfile::tempdir().unwrap();
    let (config, state) = config(dir.path());
    for args in [&["list"][..], &["list", "--json"], &["audit"]] {
        let out = cli(&config, args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert!(!state.exists(), "{args:?} created {}", state.display());
    }
}

#[test]
fn a_block_without_a_daemon_says_what_it_does_here_first() {
    let dir = tempfile::tempdir().unwrap();
    let (config, state) = config(dir.path());
    let out = cli(&config, &["block", "198.51.100.7", "--for", "1h"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("note: no agent answers on")
            && err.contains("(created if missing)")
            && err.contains("dry-run firewall objects"),
        "{err}"
    );
    assert!(state.exists());
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// Defect 3: `check` with no queue service waited 30 s and blamed "network, DNS or proxy"; the connection had
// been refused at once.
#[test]
fn check_names_a_refused_connection_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (config, _) = config_with(
        dir.path(),
        &format!(
            "connection = \"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={};QueueEndpoint=http://127.0.0.1:{port}/devstoreaccount1;\"",
            queue_message::connection::DEV_ACCOUNT_KEY
        ),
    );
    let out = cli(&config, &["check"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "FAIL  queue            connection refused at 127.0.0.1:{port} — is Azurite running?"
        )),
        "{text}"
    );
    assert!(!text.contains("network, DNS or proxy"), "{text}");
}

// Defect 4: with `create_queues = true`, `check` still advised "set create_queues = true".
#[tokio::test]
async fn check_with_create_queues_says_run_creates_them() {
    let azurite = Azurite::start();
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = config_with(
        dir.path(),
        &format!(
            "connection = \"{}\"\ncreate_queues = true",
            azurite.connection_string()
        ),
    );
    let out = cli(&config, &["check"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(
        text.contains("warn  queue            queue `portcullis` does not exist yet; `run` creates it (create_queues = true)"),
        "{text}"
    );
    assert!(
        text.contains("warn  poison queue     queue `portcullis-poison` does not exist yet"),
        "{text}"
    );
    // The reports queue is probed too (issue 10); without it reports wait in the outbox.
    assert!(
        text.contains("warn  reports queue    queue `portcullis-reports` does not exist yet"),
        "{text}"
    );
    assert!(!text.contains("set create_queues = true"), "{text}");
}
