//! Which blocked networks go into the kernel's interval sets.
//!
//! nft interval sets refuse overlapping elements ("interval overlaps with an existing one"), but two alerts
//! may well block `198.51.100.0/24` and `198.51.100.0/25`. The backend therefore remembers every network it
//! was asked to block ([`NetMirror`]) and writes only the *cover*: the networks not inside another blocked
//! network. nft 1.0.6 checks overlaps in user space against the set as it was before the transaction, so
//! even `delete /24; add /25` in one batch is refused; a commit that touches a family's networks therefore
//! rewrites that family's set whole (`flush set` + `add element`, one transaction, measured to work).
//! Networks are rare next to single addresses, so the rewrite stays small.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use queue_message::Target;

/// The networks the backend was asked to block and the subset written to the kernel.
#[derive(Debug, Default, Clone)]
pub struct NetMirror {
    wanted: BTreeMap<Target, DateTime<Utc>>,
    written: BTreeMap<Target, DateTime<Utc>>,
}

/// The outcome of a planned change: the sets to rewrite and the state to keep once committed.
#[derive(Debug, Default)]
pub struct NetPlan {
    wanted: Option<BTreeMap<Target, DateTime<Utc>>>,
    cover: BTreeMap<Target, DateTime<Utc>>,
    /// The IPv4 set must be rewritten.
    pub rewrite_v4: bool,
    /// The IPv6 set must be rewritten.
    pub rewrite_v6: bool,
}

impl NetPlan {
    /// The cover entries of one family, to write after flushing its set.
    pub fn entries(&self, ipv4: bool) -> impl Iterator<Item = (Target, DateTime<Utc>)> + '_ {
        self.cover
            .iter()
            .filter(move |(t, _)| t.is_ipv4() == ipv4)
            .map(|(t, e)| (*t, *e))
    }
}

/// The networks of `wanted` that no other network of `wanted` contains.
pub fn cover(wanted: &BTreeMap<Target, DateTime<Utc>>) -> BTreeMap<Target, DateTime<Utc>> {
    let nets: HashSet<IpNet> = wanted.keys().map(Target::net).collect();
    wanted
        .iter()
        .filter(|(target, _)| !inside_any(target.net(), &nets))
        .map(|(t, e)| (*t, *e))
        .collect()
}

fn inside_any(net: IpNet, others: &HashSet<IpNet>) -> bool {
    (0..net.prefix_len()).any(|len| {
        IpNet::new(net.addr(), len)
            .map(|n| others.contains(&n.trunc()))
            .unwrap_or(false)
    })
}

impl NetMirror {
    /// Plans `changes` (target → new expiry, or `None` to remove). Nothing changes until [`accept`].
    ///
    /// [`accept`]: Self::accept
    pub fn plan(&self, changes: &BTreeMap<Target, Option<DateTime<Utc>>>) -> NetPlan {
        if changes.is_empty() {
            return NetPlan::default();
        }
        let mut wanted = self.wanted.clone();
        for (target, change) in changes {
            match change {
                Some(expires_at) => wanted.insert(*target, *expires_at),
                None => wanted.remove(target),
            };
        }
        NetPlan {
            cover: cover(&wanted),
            wanted: Some(wanted),
            rewrite_v4: changes.keys().any(Target::is_ipv4),
            rewrite_v6: changes.keys().any(|t| !t.is_ipv4()),
        }
    }

    /// Keeps the state of a committed plan.
    pub fn accept(&mut self, plan: NetPlan) {
        if let Some(wanted) = plan.wanted {
            self.wanted = wanted;
            self.written = plan.cover;
        }
    }

    /// Start-up: what the kernel holds is both wanted and written (the agent decides at reconcile).
    pub fn load_from_kernel(&mut self, kernel: impl IntoIterator<Item = (Target, DateTime<Utc>)>) {
        for (target, expires_at) in kernel {
            self.wanted.insert(target, expires_at);
            self.written.insert(target, expires_at);
        }
    }

    /// Reconcile: the kernel's listing becomes the written state. Returns the networks that are blocked:
    /// those in the kernel, plus wanted ones that lie inside one of them.
    pub fn reconcile_with_kernel(
        &mut self,
        kernel: impl IntoIterator<Item = (Target, DateTime<Utc>)>,
    ) -> Vec<Target> {
        self.written = kernel.into_iter().collect();
        let held: HashSet<IpNet> = self.written.keys().map(Target::net).collect();
        let mut blocked: Vec<Target> = self.written.keys().copied().collect();
        blocked.extend(
            self.wanted
                .keys()
                .filter(|t| !self.written.contains_key(t) && inside_any(t.net(), &held)),
        );
        blocked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn t(s: &str) -> Target {
        Target::parse(s).unwrap()
    }

    #[test]
    fn the_cover_drops_networks_inside_others() {
        let e = Utc::now();
        let wanted: BTreeMap<_, _> = [
            (t("198.51.100.0/24"), e),
            (t("198.51.100.0/25"), e),
            (t("198.51.100.128/26"), e),
            (t("203.0.113.0/24"), e),
            (t("2001:db8::/32"), e),
            (t("2001:db8:1::/48"), e),
        ]
        .into();
        let c: Vec<Target> = cover(&wanted).into_keys().collect();
        assert_eq!(
            c,
            [
                t("198.51.100.0/24"),
                t("203.0.113.0/24"),
                t("2001:db8::/32")
            ]
        );
    }

    #[test]
    fn removing_an_outer_network_rewrites_with_the_inner_ones() {
        let e1 = Utc::now() + Duration::hours(1);
        let e2 = e1 + Duration::hours(1);
        let mut m = NetMirror::default();
        let p = m.plan(
            &[
                (t("198.51.100.0/24"), Some(e1)),
                (t("198.51.100.0/25"), Some(e2)),
            ]
            .into(),
        );
        assert!(p.rewrite_v4 && !p.rewrite_v6);
        assert_eq!(
            p.entries(true).collect::<Vec<_>>(),
            [(t("198.51.100.0/24"), e1)]
        );
        m.accept(p);

        let p = m.plan(&[(t("198.51.100.0/24"), None)].into());
        assert_eq!(
            p.entries(true).collect::<Vec<_>>(),
            [(t("198.51.100.0/25"), e2)]
        );
        m.accept(p);

        let p = m.plan(&[(t("2001:db8::/48"), Some(e1))].into());
        assert!(!p.rewrite_v4 && p.rewrite_v6);
        assert_eq!(
            p.entries(false).collect::<Vec<_>>(),
            [(t("2001:db8::/48"), e1)]
        );
    }

    #[test]
    fn a_plan_that_is_not_accepted_changes_nothing() {
        let mut m = NetMirror::default();
        let e = Utc::now();
        let _ = m.plan(&[(t("198.51.100.0/24"), Some(e))].into());
        let p = m.plan(&[(t("198.51.100.0/25"), Some(e))].into());
        assert_eq!(
            p.entries(true).collect::<Vec<_>>(),
            [(t("198.51.100.0/25"), e)]
        );
        m.accept(p);
        let p = m.plan(&BTreeMap::new());
        assert!(!p.rewrite_v4 && !p.rewrite_v6);
    }

    #[test]
    fn reconcile_lists_networks_hidden_inside_held_ones() {
        let e = Utc::now();
        let mut m = NetMirror::default();
        m.accept(
            m.plan(
                &[
                    (t("198.51.100.0/24"), Some(e)),
                    (t("198.51.100.0/25"), Some(e)),
                ]
                .into(),
            ),
        );
        let mut listed = m.reconcile_with_kernel([(t("198.51.100.0/24"), e)]);
        listed.sort();
        assert_eq!(listed, [t("198.51.100.0/24"), t("198.51.100.0/25")]);
        // After an external flush nothing is blocked.
        assert!(m.reconcile_with_kernel([]).is_empty());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use std::net::{IpAddr, Ipv4Addr};

        proptest! {
            /// The cover has no overlapping networks (so nft accepts it) and still covers every wanted one.
            #[test]
            fn the_cover_is_disjoint_and_covers_everything(
                nets in prop::collection::vec((0u32..4096, 20u8..=30), 0..40),
            ) {
                let e = Utc::now();
                let wanted: BTreeMap<Target, DateTime<Utc>> = nets
                    .into_iter()
                    .map(|(a, len)| {
                        let addr = Ipv4Addr::from((0xc633_6400u32 & !0xfff) | a);
                        let net = IpNet::new(IpAddr::V4(addr), len).unwrap().trunc();
                        (Target::from_net(net).unwrap(), e)
                    })
                    .collect();
                let c: Vec<Target> = cover(&wanted).into_keys().collect();
                for (i, a) in c.iter().enumerate() {
                    for b in &c[i + 1..] {
                        prop_assert!(!a.overlaps(&b.net()), "{} overlaps {}", a, b);
                    }
                }
                for w in wanted.keys() {
                    prop_assert!(c.iter().any(|x| x.contains(w)), "{} is not covered", w);
                }
            }
        }
    }
}
