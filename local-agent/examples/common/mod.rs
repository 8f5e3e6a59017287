//! What the agent's by-hand harnesses share (`bench_agent`, `soak_agent`): running a command, a network
//! namespace removed on drop, a child process killed on drop, the workspace binaries next to the example.
#![allow(dead_code)] // each example uses a part

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use anyhow::{bail, Context};

/// Runs a command; its stdout, or an error with its stderr.
pub(crate) fn run(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(args[0]).args(&args[1..]).output()?;
    if !out.status.success() {
        bail!("{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace removed on drop (with whatever still runs in it).
pub(crate) struct Ns(pub(crate) String);

impl Ns {
    /// A fresh namespace named after this process and `tag`, loopback up.
    pub(crate) fn new(tag: &str) -> anyhow::Result<Self> {
        let name = format!("pcb-{}-{tag}", std::process::id());
        run(&["ip", "netns", "add", &name])?;
        run(&["ip", "-n", &name, "link", "set", "lo", "up"])?;
        Ok(Self(name))
    }

    /// Runs a command inside the namespace.
    pub(crate) fn exec(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["ip", "netns", "exec", &self.0];
        all.extend_from_slice(args);
        run(&all)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        if let Ok(pids) = run(&["ip", "netns", "pids", &self.0]) {
            for pid in pids.split_whitespace() {
                let _ = run(&["kill", "-9", pid]);
            }
        }
        let _ = run(&["ip", "netns", "del", &self.0]);
    }
}

/// A child process, killed (SIGKILL) and reaped on drop.
pub(crate) struct Killed(pub(crate) Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A workspace binary built with the same profile as this example (`<target>/<profile>/examples/x` →
/// `<target>/<profile>/<name>`).
pub(crate) fn sibling_bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().and_then(Path::parent).context("exe dir")?;
    let bin = dir.join(name);
    if !bin.exists() {
        bail!(
            "{} missing: build the workspace binaries with the same profile first",
            bin.display()
        );
    }
    Ok(bin)
}
