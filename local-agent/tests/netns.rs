//! A two-namespace network lab for firewall tests: `fw` (where the firewall and listeners live) and `peer`
//! (the "attacker"), joined by a veth pair, with documentation-range addresses (198.51.100.0/24 and
//! 2001:db8::/64, declared as `lab_ranges` in the agent configs the tests write).
//!
//! Names are unique per lab (`pc-<pid>-<n>-fw`), so tests run in parallel. Everything is removed on drop,
//! also while a failing test unwinds; labs left behind by a killed test process (its pid is gone) are
//! removed the next time a lab is created. Needs root (CI and `make test` run as root); tests call
//! [`Lab::available`] first and fail with a clear message otherwise.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The firewall side's IPv4 address.
pub const FW_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The peer's first IPv4 address.
pub const PEER_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// The firewall side's IPv6 address.
pub const FW_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
/// The peer's first IPv6 address.
pub const PEER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
/// The TCP port the firewall side listens on.
pub const PORT: u16 = 8080;

/// Two namespaces joined by a veth pair, with TCP listeners on the firewall side.
#[derive(Debug)]
pub struct Lab {
    /// Namespace holding the firewall and the listeners.
    pub fw: String,
    /// Namespace of the peer that connects in.
    pub peer: String,
    listeners: Vec<Child>,
}

fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"))
}

fn must(args: &[&str]) {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether this process can build labs (root, `ip` and `nc` present). Tests that need a lab start with
/// `queue_message::require!(crate::netns::available())`: skipped with the printed reason under a plain
/// `cargo test`, a failure under `make test` (`PORTCULLIS_TEST_REQUIRE_ALL`).
pub fn available() -> Result<(), String> {
    let uid = run(&["id", "-u"]);
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Err("network-namespace tests need root (CI runs `make test` as root)".to_owned());
    }
    for tool in ["ip", "nc", "nft", "ipset", "iptables"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !found {
            return Err(format!(
                "`{tool}` is missing: run `bash scripts/tools.sh` as root (or `make test`)"
            ));
        }
    }
    Ok(())
}

fn remove_stale_labs() {
    let list = run(&["ip", "netns", "list"]);
    for line in String::from_utf8_lossy(&list.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix("pc-") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            kill_namespace_processes(name);
            let _ = run(&["ip", "netns", "del", name]);
        }
    }
}

fn kill_namespace_processes(ns: &str) {
    let pids = run(&["ip", "netns", "pids", ns]);
    for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
        let _ = run(&["kill", "-9", pid]);
    }
}

impl Lab {
    /// Builds a fresh lab: both namespaces, the veth pair, addresses, loopback up, listeners on
    /// [`PORT`] (IPv4 and IPv6) in `fw`.
    pub fn new() -> Self {
        if let Err(why) = available() {
            panic!("{why}");
        }
        remove_stale_labs();
        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let fw = format!("pc-{pid}-{n}-fw");
        let peer = format!("pc-{pid}-{n}-peer");
        // Interface names have a 15-byte limit.
        let veth_fw = format!("pc{}x{n}a", pid % 100_000);
        let veth_peer = format!("pc{}x{n}b", pid % 100_000);
        let mut lab = Self {
            fw: fw.clone(),
            peer: peer.clone(),
            listeners: Vec::new(),
        };
        must(&["ip", "netns", "add", &fw]);
        must(&["ip", "netns", "add", &peer]);
        must(&[
            "ip", "link", "add", &veth_fw, "type", "veth", "peer", "name", &veth_peer,
        ]);
        must(&["ip", "link", "set", &veth_fw, "netns", &fw]);
        must(&["ip", "link", "set", &veth_peer, "netns", &peer]);
        for (ns, dev, v4, v6) in [
            (&fw, &veth_fw, FW_V4, FW_V6),
            (&peer, &veth_peer, PEER_V4, PEER_V6),
        ] {
            must(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v4}/24"),
                "dev",
                dev,
            ]);
            must(&[
                "ip",
                "-n",
                ns,
                "-6",
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                dev,
                "nodad",
            ]);
            must(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            must(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        lab.listen(IpAddr::V4(FW_V4));
        lab.listen(IpAddr::V6(FW_V6));
        lab.wait_until_reachable();
        lab
    }

    fn listen(&mut self, addr: IpAddr) {
        let mut args = vec!["ip", "netns", "exec", &self.fw, "nc", "-lk"];
        if addr.is_ipv6() {
            args.push("-6");
        }
        let addr = addr.to_string();
        let port = PORT.to_string();
        args.extend([addr.as_str(), port.as_str()]);
        let child = Command::new(args[0])
            .args(&args[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nc starts");
        self.listeners.push(child);
    }

    fn wait_until_reachable(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for (from, to) in [
            (IpAddr::V4(PEER_V4), IpAddr::V4(FW_V4)),
            (IpAddr::V6(PEER_V6), IpAddr::V6(FW_V6)),
        ] {
            while !self.connects_from(from, to) {
                assert!(
                    Instant::now() < deadline,
                    "lab {} never became reachable",
                    self.fw
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Adds another address to the peer (for CIDR tests); it must lie in 198.51.100.0/24 or 2001:db8::/64.
    pub fn add_peer_address(&self, addr: IpAddr) {
        let dev = self.peer_dev();
        match addr {
            IpAddr::V4(v4) => must(&[
                "ip",
                "-n",
                &self.peer,
                "addr",
                "add",
                &format!("{v4}/24"),
                "dev",
                &dev,
            ]),
            IpAddr::V6(v6) => must(&[
                "ip",
                "-n",
                &self.peer,
                "-6",
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                &dev,
                "nodad",
            ]),
        }
    }

    fn peer_dev(&self) -> String {
        let out = run(&["ip", "-n", &self.peer, "-o", "link", "show", "type", "veth"]);
        let text = String::from_utf8_lossy(&out.stdout);
        let name = text
            .split(':')
            .nth(1)
            .map(|s| s.trim().split('@').next().unwrap_or("").to_owned())
            .expect("the peer has a veth");
        name
    }

    /// Runs a command inside the firewall namespace.
    pub fn in_fw(&self, args: &[&str]) -> Output {
        let mut all = vec!["ip", "netns", "exec", &self.fw];
        all.extend_from_slice(args);
        run(&all)
    }

    /// Runs a command inside the firewall namespace and returns stdout; panics on failure.
    pub fn in_fw_ok(&self, args: &[&str]) -> String {
        let out = self.in_fw(args);
        assert!(
            out.status.success(),
            "{args:?} in {} failed: {}",
            self.fw,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether a TCP connection from `from` (an address of the peer) to `to` (the firewall side) on
    /// [`PORT`] completes within 2 s. A dropped SYN times out; an accepted one succeeds at once.
    pub fn connects_from(&self, from: IpAddr, to: IpAddr) -> bool {
        let from = from.to_string();
        let to = to.to_string();
        let port = PORT.to_string();
        let mut args = vec![
            "ip", "netns", "exec", &self.peer, "nc", "-z", "-w", "2", "-s", &from,
        ];
        if to.contains(':') {
            args.push("-6");
        }
        args.extend([to.as_str(), port.as_str()]);
        run(&args).status.success()
    }

    /// Whether the peer's first IPv4 address gets through.
    pub fn peer_v4_connects(&self) -> bool {
        self.connects_from(IpAddr::V4(PEER_V4), IpAddr::V4(FW_V4))
    }

    /// Whether the peer's first IPv6 address gets through.
    pub fn peer_v6_connects(&self) -> bool {
        self.connects_from(IpAddr::V6(PEER_V6), IpAddr::V6(FW_V6))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.listeners {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in [&self.fw, &self.peer] {
            kill_namespace_processes(ns);
            // Deleting the namespace removes the veth pair with it.
            let _ = run(&["ip", "netns", "del", ns]);
        }
    }
}

/// Polls `check` until it returns `want` or `limit` passes; returns whether it did. For waiting on the
/// agent, never for asserting a duration.
pub fn wait_for(limit: Duration, want: bool, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() == want {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
