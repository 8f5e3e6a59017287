//! One nft transaction for a commit, written as JSON (`nft -j -f -`) or plain text (`nft -f -`).
//!
//! Both forms come from the same list of operations and only ever contain parsed addresses and networks,
//! so nothing from a queue message can inject nft syntax. Removals come first, then additions, so a
//! network can be swapped for the networks it hid within one transaction.

use std::borrow::Cow;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use nftables::expr::{Elem, Expression, NamedExpression, Prefix};
use nftables::schema::{Element, FlushObject, NfCmd, NfListObject, NfObject, Nftables, Set};
use nftables::types::NfFamily;
use queue_message::Target;

/// Longest kernel timeout written (10 years); longer blocks are refreshed by reconcile.
pub const MAX_TIMEOUT_SECS: u32 = 3650 * 86_400;

/// Elements per `add element` statement in the text form (keeps lines reasonable; one transaction anyway).
const TEXT_CHUNK: usize = 2000;

/// The agent's four sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SetName {
    /// Single IPv4 addresses.
    Addr4,
    /// Single IPv6 addresses.
    Addr6,
    /// IPv4 networks.
    Net4,
    /// IPv6 networks.
    Net6,
}

impl SetName {
    /// All sets.
    pub const ALL: [Self; 4] = [Self::Addr4, Self::Addr6, Self::Net4, Self::Net6];

    /// The set's name in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Addr4 => "addr4",
            Self::Addr6 => "addr6",
            Self::Net4 => "net4",
            Self::Net6 => "net6",
        }
    }
}

/// Seconds from `now` until `expires_at`, rounded up, within 1 s and [`MAX_TIMEOUT_SECS`].
pub fn ttl(now: DateTime<Utc>, expires_at: DateTime<Utc>) -> u32 {
    let ms = (expires_at - now).num_milliseconds().max(0);
    let secs = (ms + 999) / 1000;
    u32::try_from(secs)
        .unwrap_or(MAX_TIMEOUT_SECS)
        .clamp(1, MAX_TIMEOUT_SECS)
}

/// A duration in nft's text syntax, largest units first (`2000d`, `1d2h3m4s`, `5s`).
///
/// nft 1.0.6 refuses a plain second count of 100,000,000 or more ("value too large"), which a block longer
/// than 1157 days needs; in days it accepts anything up to [`MAX_TIMEOUT_SECS`]. Used for `timeout` (and
/// would be for `expires`) in the text form; the JSON form takes plain seconds.
pub fn nft_duration(secs: u32) -> String {
    let (d, rest) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rest / 3600, rest % 3600 / 60, rest % 60);
    let mut out = String::new();
    for (n, unit) in [(d, 'd'), (h, 'h'), (m, 'm'), (s, 's')] {
        if n > 0 {
            let _ = write!(out, "{n}{unit}");
        }
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    out
}

#[derive(Debug, Default)]
struct SetOps {
    /// Flush the set first and write `upserts` as its whole content.
    replace: bool,
    removes: Vec<Target>,
    upserts: Vec<(Target, u32)>,
}

/// The operations of one commit, grouped per set.
#[derive(Debug)]
pub struct Batch {
    table: String,
    timeout_update: bool,
    sets: [SetOps; 4],
}

/// One statement of the transaction, in order.
enum Stmt<'a> {
    Flush(SetName),
    Add(SetName, &'a [Target]),
    Delete(SetName, &'a [Target]),
    AddTimeout(SetName, &'a [(Target, u32)]),
}

impl Batch {
    /// An empty batch for `table`; `timeout_update` says whether re-adding refreshes a timeout.
    pub fn new(table: &str, timeout_update: bool) -> Self {
        Self {
            table: table.to_owned(),
            timeout_update,
            sets: Default::default(),
        }
    }

    fn index(set: SetName) -> usize {
        set as usize
    }

    /// Adds `target` with a timeout, or refreshes its timeout if present.
    pub fn upsert(&mut self, set: SetName, target: Target, ttl_secs: u32) {
        self.sets[Self::index(set)].upserts.push((target, ttl_secs));
    }

    /// Removes `target` whether or not it is present.
    pub fn remove(&mut self, set: SetName, target: Target) {
        self.sets[Self::index(set)].removes.push(target);
    }

    /// Replaces the whole content of `set` with `entries` (flush, then add), in this transaction.
    pub fn replace(&mut self, set: SetName, entries: Vec<(Target, u32)>) {
        let ops = &mut self.sets[Self::index(set)];
        ops.replace = true;
        ops.removes.clear();
        ops.upserts = entries;
    }

    /// Number of elements touched.
    pub fn len(&self) -> usize {
        self.sets
            .iter()
            .map(|s| s.removes.len() + s.upserts.len())
            .sum()
    }

    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.len() == 0 && !self.sets.iter().any(|s| s.replace)
    }

    fn statements(&self) -> Vec<(Stmt<'_>, Vec<Target>)> {
        let mut out = Vec::new();
        for set in SetName::ALL {
            let ops = &self.sets[Self::index(set)];
            if ops.replace {
                out.push((Stmt::Flush(set), Vec::new()));
            }
            if !ops.removes.is_empty() {
                // `add; delete` removes whether or not the element is there (no `destroy` in nft 1.0.6).
                out.push((Stmt::Add(set, &ops.removes), Vec::new()));
                out.push((Stmt::Delete(set, &ops.removes), Vec::new()));
            }
        }
        for set in SetName::ALL {
            let ops = &self.sets[Self::index(set)];
            if ops.upserts.is_empty() {
                continue;
            }
            if !self.timeout_update && !ops.replace {
                // Older kernels keep the old expiry on re-add: `add; delete; add timeout T` resets it.
                let plain: Vec<Target> = ops.upserts.iter().map(|(t, _)| *t).collect();
                out.push((Stmt::Add(set, &[]), plain.clone()));
                out.push((Stmt::Delete(set, &[]), plain));
            }
            out.push((Stmt::AddTimeout(set, &ops.upserts), Vec::new()));
        }
        out
    }

    /// The plain-text transaction.
    pub fn to_text(&self) -> String {
        let mut s = String::with_capacity(self.len() * 36 + 256);
        let t = &self.table;
        for (stmt, owned) in self.statements() {
            match stmt {
                Stmt::Flush(set) => {
                    let _ = writeln!(s, "flush set inet {t} {}", set.as_str());
                }
                Stmt::Add(set, targets) | Stmt::Delete(set, targets) => {
                    let verb = if matches!(stmt, Stmt::Add(..)) {
                        "add"
                    } else {
                        "delete"
                    };
                    let targets = if targets.is_empty() {
                        &owned[..]
                    } else {
                        targets
                    };
                    for chunk in targets.chunks(TEXT_CHUNK) {
                        let _ = write!(s, "{verb} element inet {t} {} {{ ", set.as_str());
                        for (i, target) in chunk.iter().enumerate() {
                            if i > 0 {
                                s.push_str(", ");
                            }
                            let _ = write!(s, "{target}");
                        }
                        s.push_str(" }\n");
                    }
                }
                Stmt::AddTimeout(set, entries) => {
                    for chunk in entries.chunks(TEXT_CHUNK) {
                        let _ = write!(s, "add element inet {t} {} {{ ", set.as_str());
                        for (i, (target, ttl)) in chunk.iter().enumerate() {
                            if i > 0 {
                                s.push_str(", ");
                            }
                            let _ = write!(s, "{target} timeout {}", nft_duration(*ttl));
                        }
                        s.push_str(" }\n");
                    }
                }
            }
        }
        s
    }

    /// The JSON transaction (libnftables-json schema, through the `nftables` crate's types).
    pub fn to_json(&self) -> Vec<u8> {
        let mut objects = Vec::new();
        let element = |set: SetName, elem: Vec<Expression<'static>>| Element {
            family: NfFamily::INet,
            table: Cow::Owned(self.table.clone()),
            name: Cow::Borrowed(set.as_str()),
            elem: Cow::Owned(elem),
        };
        for (stmt, owned) in self.statements() {
            match stmt {
                Stmt::Flush(set) => {
                    objects.push(NfObject::CmdObject(NfCmd::Flush(FlushObject::Set(
                        Box::new(Set {
                            family: NfFamily::INet,
                            table: Cow::Owned(self.table.clone()),
                            name: Cow::Borrowed(set.as_str()),
                            ..Set::default()
                        }),
                    ))));
                }
                Stmt::Add(set, targets) | Stmt::Delete(set, targets) => {
                    let targets = if targets.is_empty() {
                        &owned[..]
                    } else {
                        targets
                    };
                    let elem = targets.iter().map(|t| value(*t)).collect();
                    let object = NfListObject::Element(element(set, elem));
                    objects.push(NfObject::CmdObject(if matches!(stmt, Stmt::Add(..)) {
                        NfCmd::Add(object)
                    } else {
                        NfCmd::Delete(object)
                    }));
                }
                Stmt::AddTimeout(set, entries) => {
                    let elem = entries
                        .iter()
                        .map(|(t, ttl)| {
                            Expression::Named(NamedExpression::Elem(Elem {
                                val: Box::new(value(*t)),
                                timeout: Some(*ttl),
                                expires: None,
                                comment: None,
                                counter: None,
                            }))
                        })
                        .collect();
                    objects.push(NfObject::CmdObject(NfCmd::Add(NfListObject::Element(
                        element(set, elem),
                    ))));
                }
            }
        }
        serde_json::to_vec(&Nftables {
            objects: Cow::Owned(objects),
        })
        .expect("nft JSON always serialises")
    }
}

fn value(target: Target) -> Expression<'static> {
    let net = target.net();
    if target.is_host() {
        Expression::String(Cow::Owned(net.addr().to_string()))
    } else {
        Expression::Named(NamedExpression::Prefix(Prefix {
            addr: Box::new(Expression::String(Cow::Owned(net.addr().to_string()))),
            len: u32::from(net.prefix_len()),
        }))
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
    fn ttl_rounds_up_and_clamps() {
        let now = Utc::now();
        assert_eq!(ttl(now, now + Duration::milliseconds(1500)), 2);
        assert_eq!(ttl(now, now - Duration::seconds(5)), 1);
        assert_eq!(ttl(now, now + Duration::days(20_000)), MAX_TIMEOUT_SECS);
    }

    #[test]
    fn text_removes_first_and_refreshes_by_re_adding() {
        let mut b = Batch::new("portcullis", true);
        b.upsert(SetName::Addr4, t("198.51.100.7"), 60);
        b.remove(SetName::Net4, t("198.51.100.0/24"));
        b.upsert(SetName::Net6, t("2001:db8::/48"), 30);
        assert_eq!(
            b.to_text(),
            "add element inet portcullis net4 { 198.51.100.0/24 }\n\
             delete element inet portcullis net4 { 198.51.100.0/24 }\n\
             add element inet portcullis addr4 { 198.51.100.7 timeout 1m }\n\
             add element inet portcullis net6 { 2001:db8::/48 timeout 30s }\n"
        );
    }

    #[test]
    fn replace_flushes_then_adds_in_both_forms() {
        let mut b = Batch::new("p", false);
        b.replace(SetName::Net4, vec![(t("198.51.100.0/25"), 9)]);
        b.replace(SetName::Net6, Vec::new());
        assert!(!b.is_empty());
        assert_eq!(
            b.to_text(),
            "flush set inet p net4\n\
             flush set inet p net6\n\
             add element inet p net4 { 198.51.100.0/25 timeout 9s }\n"
        );
        let json: serde_json::Value = serde_json::from_slice(&b.to_json()).unwrap();
        assert_eq!(json["nftables"][0]["flush"]["set"]["name"], "net4");
        assert_eq!(json["nftables"][2]["add"]["element"]["name"], "net4");
    }

    #[test]
    fn old_kernels_get_add_delete_add() {
        let mut b = Batch::new("p", false);
        b.upsert(SetName::Addr6, t("2001:db8::1"), 5);
        assert_eq!(
            b.to_text(),
            "add element inet p addr6 { 2001:db8::1 }\n\
             delete element inet p addr6 { 2001:db8::1 }\n\
             add element inet p addr6 { 2001:db8::1 timeout 5s }\n"
        );
    }

    #[test]
    fn text_timeouts_use_days_so_nft_accepts_long_blocks() {
        assert_eq!(nft_duration(0), "0s");
        assert_eq!(nft_duration(5), "5s");
        assert_eq!(nft_duration(60), "1m");
        assert_eq!(nft_duration(90_061), "1d1h1m1s");
        assert_eq!(nft_duration(2000 * 86_400), "2000d");
        assert_eq!(nft_duration(MAX_TIMEOUT_SECS), "3650d");
        // nft refuses a second count of 100,000,000 or more: no written number may get there.
        for secs in [
            99_999_999,
            100_000_000,
            2000 * 86_400 + 3599,
            MAX_TIMEOUT_SECS,
        ] {
            let text = nft_duration(secs);
            assert!(
                text.split(|c: char| c.is_ascii_alphabetic())
                    .filter(|n| !n.is_empty())
                    .all(|n| n.parse::<u32>().unwrap() < 100_000_000),
                "{text}"
            );
        }
        let mut b = Batch::new("p", true);
        b.upsert(SetName::Addr4, t("198.51.100.7"), 2000 * 86_400 + 1);
        assert_eq!(
            b.to_text(),
            "add element inet p addr4 { 198.51.100.7 timeout 2000d1s }\n"
        );
    }

    #[test]
    fn json_has_the_same_operations() {
        let mut b = Batch::new("p", true);
        b.upsert(SetName::Addr4, t("198.51.100.7"), 60);
        b.remove(SetName::Net4, t("198.51.100.0/24"));
        let json: serde_json::Value = serde_json::from_slice(&b.to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"nftables": [
                {"add": {"element": {"family": "inet", "table": "p", "name": "net4",
                    "elem": [{"prefix": {"addr": "198.51.100.0", "len": 24}}]}}},
                {"delete": {"element": {"family": "inet", "table": "p", "name": "net4",
                    "elem": [{"prefix": {"addr": "198.51.100.0", "len": 24}}]}}},
                {"add": {"element": {"family": "inet", "table": "p", "name": "addr4",
                    "elem": [{"elem": {"val": "198.51.100.7", "timeout": 60,
                        "expires": null, "comment": null, "counter": null}}]}}}
            ]})
        );
    }
}
