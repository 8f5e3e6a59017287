//! The contract suite for the local backends, nftables and ipset, inside a network-namespace lab (root).
//! The device probe is a twin backend instance on the same namespace ([`contract::Twin`]): its `list`
//! reads the kernel, and its removals are changes behind the tested instance's back. Writes are made to
//! fail through a wrapper around the real tool ([`FailingTool`]), so the failing-write step runs too.

use std::collections::BTreeSet;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::pin::Pin;

use async_trait::async_trait;
use portcullis_agent::backends::ipset::{Ipset, IpsetConfig};
use portcullis_agent::backends::nftables::{Nftables, NftablesConfig};
use portcullis_agent::backends::Backend;
use queue_message::Target;

use crate::contract::{self, Device, Options, Twin};
use crate::netns::Lab;

type Made = Pin<Box<dyn Future<Output = Box<dyn Backend>> + Send>>;

/// A wrapper script standing in for `nft` or `ipset`: while its failure counter is above zero, a write
/// (a call whose arguments include `write_arg`) decrements it and exits 1 without running the tool;
/// everything else runs the real tool.
struct FailingTool {
    dir: tempfile::TempDir,
}

impl FailingTool {
    fn new(tool: &str, write_arg: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let counter = dir.path().join("failures");
        std::fs::write(&counter, "0").unwrap();
        let script = format!(
            "#!/bin/sh\n\
             n=$(cat '{counter}')\n\
             for a in \"$@\"; do\n\
               if [ \"$a\" = '{write_arg}' ] && [ \"$n\" -gt 0 ]; then\n\
                 echo $((n - 1)) > '{counter}'\n\
                 cat > /dev/null\n\
                 echo 'simulated write failure' >&2\n\
                 exit 1\n\
               fi\n\
             done\n\
             exec {tool} \"$@\"\n",
            counter = counter.display(),
        );
        let path = dir.path().join(tool);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self { dir }
    }

    fn program(&self, tool: &str) -> String {
        self.dir.path().join(tool).display().to_string()
    }

    fn counter(&self) -> PathBuf {
        self.dir.path().join("failures")
    }
}

/// The twin probe plus the wrapper's failure counter.
struct Probe<'a> {
    twin: Twin<'a>,
    tool: &'a FailingTool,
}

#[async_trait]
impl Device for Probe<'_> {
    async fn entries(&self, backend: &mut dyn Backend) -> BTreeSet<Target> {
        self.twin.entries(backend).await
    }

    async fn lose(&self, targets: &[Target]) -> bool {
        self.twin.lose(targets).await
    }

    async fn fail_writes(&self, n: usize) -> bool {
        std::fs::write(self.tool.counter(), n.to_string()).unwrap();
        true
    }
}

#[tokio::test]
async fn nftables_passes_the_contract() {
    queue_message::require!(crate::netns::available());
    let lab = Lab::new();
    let tool = FailingTool::new("nft", "-f");
    let (ns, nft) = (lab.fw.clone(), tool.program("nft"));
    let make = move || -> Made {
        let (ns, nft) = (ns.clone(), nft.clone());
        Box::pin(async move {
            let mut b: Box<dyn Backend> = Box::new(Nftables::new(NftablesConfig {
                netns: Some(ns),
                nft,
                ..NftablesConfig::default()
            }));
            b.init().await.unwrap();
            b
        })
    };
    let probe = Probe {
        twin: Twin { make: &make },
        tool: &tool,
    };
    let report = contract::run(&make, &probe, Options::default()).await;
    assert!(
        report.failure_checked,
        "the failing write was not exercised"
    );
}

#[tokio::test]
async fn ipset_passes_the_contract() {
    queue_message::require!(crate::netns::available());
    let lab = Lab::new();
    let tool = FailingTool::new("ipset", "restore");
    let (ns, ipset) = (lab.fw.clone(), tool.program("ipset"));
    let make = move || -> Made {
        let (ns, ipset) = (ns.clone(), ipset.clone());
        Box::pin(async move {
            let mut b: Box<dyn Backend> = Box::new(Ipset::new(IpsetConfig {
                netns: Some(ns),
                ipset,
                ..IpsetConfig::default()
            }));
            b.init().await.unwrap();
            b
        })
    };
    let probe = Probe {
        twin: Twin { make: &make },
        tool: &tool,
    };
    let report = contract::run(&make, &probe, Options::default()).await;
    assert!(
        report.failure_checked,
        "the failing write was not exercised"
    );
}
