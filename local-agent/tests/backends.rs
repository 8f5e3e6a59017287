//! The local backends against the real kernel: each test builds a lab and points the backend's `netns`
//! setting at the lab's firewall namespace, then checks what the peer's TCP connections do.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use chrono::Utc;
use portcullis_agent::backends::ipset::{Ipset, IpsetConfig};
use portcullis_agent::backends::nftables::{Format, Nftables, NftablesConfig};
use portcullis_agent::backends::{Backend, BlockEntry};
use queue_message::Target;

use crate::netns::{wait_for, Lab, FW_V4, FW_V6, PEER_V4, PEER_V6};

fn t(s: &str) -> Target {
    Target::parse(s).unwrap()
}

fn entry(target: &str, secs: i64) -> BlockEntry {
    BlockEntry {
        target: t(target),
        expires_at: Utc::now() + chrono::Duration::seconds(secs),
    }
}

fn nft(lab: &Lab, format: Format) -> Nftables {
    Nftables::new(NftablesConfig {
        netns: Some(lab.fw.clone()),
        format,
        ..NftablesConfig::default()
    })
}

fn ipset(lab: &Lab) -> Ipset {
    Ipset::new(IpsetConfig {
        netns: Some(lab.fw.clone()),
        ..IpsetConfig::default()
    })
}

async fn sorted(backend: &mut dyn Backend) -> Vec<Target> {
    let mut v = backend.list().await.unwrap();
    v.sort();
    v
}

/// Block → dropped, unblock → allowed again, for IPv4 and IPv6, through any backend.
async fn block_and_unblock(lab: &Lab, backend: &mut dyn Backend) {
    backend.init().await.unwrap();
    backend.healthcheck().await.unwrap();
    assert!(
        lab.peer_v4_connects() && lab.peer_v6_connects(),
        "open before any block"
    );

    backend.stage_add(entry("198.51.100.2", 600));
    backend.stage_add(entry("2001:db8::2", 600));
    let stats = backend.commit().await.unwrap();
    assert_eq!(stats.added, 2);
    assert!(!lab.peer_v4_connects(), "IPv4 peer must be dropped");
    assert!(!lab.peer_v6_connects(), "IPv6 peer must be dropped");
    assert_eq!(sorted(backend).await, [t("198.51.100.2"), t("2001:db8::2")]);

    // Applying the same batch again changes nothing visible.
    backend.stage_add(entry("198.51.100.2", 600));
    backend.stage_add(entry("2001:db8::2", 600));
    backend.commit().await.unwrap();
    assert_eq!(sorted(backend).await, [t("198.51.100.2"), t("2001:db8::2")]);

    // Removing twice, and removing what was never there, is not an error.
    backend.stage_remove(t("198.51.100.2"));
    backend.stage_remove(t("2001:db8::2"));
    backend.stage_remove(t("198.51.100.99"));
    backend.commit().await.unwrap();
    backend.stage_remove(t("198.51.100.2"));
    backend.commit().await.unwrap();
    assert!(
        lab.peer_v4_connects() && lab.peer_v6_connects(),
        "open again after unblock"
    );
    assert!(backend.list().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn nftables_blocks_and_unblocks_v4_and_v6() {
    queue_message::require!(crate::netns::available());
    let lab = Lab::new();
    let mut b = nft(&lab, Format::Auto);
    block_and_unblock(&lab, &mut b).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nftables_text_format_works_too() {
    queue_message::require!(crate::netns::available());
    let lab = Lab::new();
    let mut b = nft(&lab, Format::Text);
    block_and_unblock(&lab, &mut b).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ipset_blocks_and_unblocks_v4_and_v6() {
    queue_message::require!(crate::netns::available());
    let lab = Lab::new();
    let mut b = ipset(&lab);
    block_and_unblock(&lab, &mut b).await;
}

/// A CIDR blocks every address inside it, also when a smaller network inside it is blocked too, and the
/// inner network keeps blocking when the outer one goes.
async fn cidr_covers_its_range(lab: &Lab, backend: &mut dyn Backend) {
    let inner = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 5));
    let outside = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 130));
    let inner6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x77));
    for addr in [inner, outside, inner6] {
        lab.add_peer_address(addr);
    }
    backend.init().await.unwrap();
    backend.stage_add(entry("198.51.100.0/25", 600));
    backend.stage_add(entry("198.51.100.0/28", 600));
    backend.stage_add(entry("2001:db8::/64", 600));
    backend.commit().await.unwrap();
    assert!(!lab.connects_from(IpAddr::V4(PEER_V4), IpAddr::V4(FW_V4)));
    assert!(!lab.connects_from(inner, IpAddr::V4(FW_V4)));
    assert!(
        lab.connects_from(outside, IpAddr::V4(FW_V4)),
        "outside the /25"
    );
    assert!(!lab.connects_from(inner6, IpAddr::V6(FW_V6)));
    assert!(!lab.connects_from(IpAddr::V6(PEER_V6), IpAddr::V6(FW_V6)));
    assert_eq!(
        sorted(backend).await,
        [
            t("198.51.100.0/25"),
            t("198.51.100.0/28"),
            t("2001:db8::/64")
        ]
    );

    backend.stage_remove(t("198.51.100.0/25"));
    backend.commit().await.unwrap();
    assert!(
        !lab.connects_from(inner, IpAddr::V4(FW_V4)),
        ".5 is inside the /28"
    );
    assert!(!lab.peer_v4_connects(), ".2 is inside the /28 too");
    assert_eq!(
        sorted(backend).await,
        [t("198.51.100.0/28"), t("2001:db8::/64")]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nftables_cidr_covers_its_range() {
    queue_message::require!(crate::netns::available());
    let lab = Lab::new();
    let mut b = nft(&lab, Format::Auto);
    cidr_covers_its_range(&lab, &mut b).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ipset_cidr_covers_its_range() {
    queue_message::require!(crate::netns::available());
    let lab = Lab::new();
    let mut b = ipset(&lab);
    cidr_covers_its_range(&lab, &mut b).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nftables_kernel_timeout_lifts_a_block_without_the_agent() {
    queue_message::require!(crate::netns::available());
    let lab = Lab::new();
    let mut b = nft(&lab, Format::Auto);
    b.init().await.unwrap();
    b.stage_add(entry("198.51.100.2", 2));
    b.commit().await.unwrap();
    assert!(!lab.peer_v4_connects());
    drop(b);
    assert!(
        wait_for(Duration::from_secs(15), true, || lab.peer_v4_connects()),
        "the kernel timeout must lift the block"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nftables_survives_an_external_flush_and_init_is_idempotent() {
    queue_message::require!(crate::netns::available());
    let lab = Lab::new();
    let mut b = nft(&lab, Format::Auto);
    b.init().await.unwrap();
    b.init().await.unwrap();
    b.stage_add(entry("198.51.100.2", 600));
    b.stage_add(entry("198.51.100.0/24", 600));
    b.commit().await.unwrap();
    // Someone else's table must survive our init.
    lab.in_fw_ok(&["nft", "add", "table", "inet", "other"]);
    b.init().await.unwrap();
    assert!(lab
        .in_fw_ok(&["nft", "list", "tables"])
        .contains("inet other"));
    assert_eq!(
        sorted(&mut b).await,
        [t("198.51.100.0/24"), t("198.51.100.2")]
    );

    lab.in_fw_ok(&["nft", "flush", "ruleset"]);
    assert!(lab.peer_v4_connects());
    assert!(b.healthcheck().await.is_err(), "the table is gone");
    b.init().await.unwrap();
    assert!(b.list().await.unwrap().is_empty());
    b.stage_add(entry("198.51.100.2", 600));
    b.stage_add(entry("198.51.100.0/24", 600));
    b.commit().await.unwrap();
    assert!(!lab.peer_v4_connects());
}

/// The kernel's `timeout` of `target` in the lab's nftables set `set`, in seconds.
fn nft_timeout(lab: &Lab, set: &str, target: &str) -> Option<u64> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.fw, "nft", "-j", "list", "set", "inet"])
        .args(["portcullis", set])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json["nftables"]
        .as_array()?
        .iter()
        .find_map(|o| o["set"]["elem"].as_array())?
        .iter()
        .find(|e| e["elem"]["val"] == target)
        .and_then(|e| e["elem"]["timeout"].as_u64())
}

#[tokio::test(flavor = "multi_thread")]
async fn nftables_text_format_takes_blocks_longer_than_1157_days() {
    queue_message::require!(crate::netns::available());
    let lab = Lab::new();
    let mut b = nft(&lab, Format::Text);
    b.init().await.unwrap();
    b.stage_add(entry("198.51.100.2", 2000 * 86_400));
    b.commit().await.unwrap();
    assert!(!lab.peer_v4_connects(), "IPv4 peer must be dropped");
    let timeout = nft_timeout(&lab, "addr4", "198.51.100.2").expect("element listed");
    assert!(
        (2000 * 86_400 - 60..=2000 * 86_400 + 1).contains(&timeout),
        "timeout {timeout}"
    );
}

/// Extending a block refreshes the kernel's timeout of the element (read back with `nft -j list set`),
/// in both transaction forms.
#[tokio::test(flavor = "multi_thread")]
async fn nftables_extending_a_block_refreshes_the_kernel_timeout() {
    queue_message::require!(crate::netns::available());
    for format in [Format::Json, Format::Text] {
        let lab = Lab::new();
        let mut b = nft(&lab, format);
        b.init().await.unwrap();
        b.stage_add(entry("198.51.100.2", 60));
        b.commit().await.unwrap();
        let short = nft_timeout(&lab, "addr4", "198.51.100.2").expect("element listed");
        assert!(short <= 60, "{format:?}: timeout {short}");
        b.stage_add(entry("198.51.100.2", 7200));
        b.commit().await.unwrap();
        let long = nft_timeout(&lab, "addr4", "198.51.100.2").expect("element listed");
        assert!(
            (7100..=7200).contains(&long),
            "{format:?}: extend left the timeout at {long}"
        );
        let expires = nft_expires(&lab, "addr4", "198.51.100.2").expect("expires listed");
        assert!(expires > 3600, "{format:?}: expires in {expires}s");
    }
}

/// The kernel's remaining `expires` of `target` in set `set`, in seconds.
fn nft_expires(lab: &Lab, set: &str, target: &str) -> Option<u64> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.fw, "nft", "-j", "list", "set", "inet"])
        .args(["portcullis", set])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    json["nftables"]
        .as_array()?
        .iter()
        .find_map(|o| o["set"]["elem"].as_array())?
        .iter()
        .find(|e| e["elem"]["val"] == target)
        .and_then(|e| e["elem"]["expires"].as_u64())
}
