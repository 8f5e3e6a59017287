//! The contract suite for the local backends, nftables and ipset, inside a network-namespace lab (root).
//! The device probe is a twin backend instance on the same namespace ([`contract::Twin`]): its `list`
//! reads the kernel, and its removals are changes behind the tested instance's back.

use std::future::Future;
use std::pin::Pin;

use portcullis_agent::backends::ipset::{Ipset, IpsetConfig};
use portcullis_agent::backends::nftables::{Nftables, NftablesConfig};
use portcullis_agent::backends::Backend;

use crate::contract::{self, Options, Twin};
use crate::netns::Lab;

type Made = Pin<Box<dyn Future<Output = Box<dyn Backend>> + Send>>;

#[tokio::test]
async fn nftables_passes_the_contract() {
    queue_message::require!(crate::netns::available());
    let lab = Lab::new();
    let ns = lab.fw.clone();
    let make = move || -> Made {
        let ns = ns.clone();
        Box::pin(async move {
            let mut b: Box<dyn Backend> = Box::new(Nftables::new(NftablesConfig {
                netns: Some(ns),
                ..NftablesConfig::default()
            }));
            b.init().await.unwrap();
            b
        })
    };
    contract::run(&make, &Twin { make: &make }, Options::default()).await;
}

#[tokio::test]
async fn ipset_passes_the_contract() {
    queue_message::require!(crate::netns::available());
    let lab = Lab::new();
    let ns = lab.fw.clone();
    let make = move || -> Made {
        let ns = ns.clone();
        Box::pin(async move {
            let mut b: Box<dyn Backend> = Box::new(Ipset::new(IpsetConfig {
                netns: Some(ns),
                ..IpsetConfig::default()
            }));
            b.init().await.unwrap();
            b
        })
    };
    contract::run(&make, &Twin { make: &make }, Options::default()).await;
}
