//! The CLI without a running daemon, as a new user meets it in the first hour (issue 12): commands that would
//! change the host say so first, refused ones and read-only ones change nothing. Dry-run backend, no root.

use std::path::{Path, PathBuf};

use crate::util::{cli, LAB_RANGES};

const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// A config whose allowlist names a DNS server, the way host protection would.
fn config(dir: &Path) -> (PathBuf, PathBuf) {
    let state = dir.join("state").join("state.db");
    let path = dir.join("agent.toml");
    std::fs::write(
        &path,
        format!(
            "[queue]\nconnection = \"UseDevelopmentStorage=true\"\nsigning_key = \"{KEY}\"\n\n\
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
