//! Sentinel entity graphs: finds every IP entity, however it is nested or referenced.
//!
//! Entities arrive as Json.NET object graphs: the first occurrence of an object carries `"$id"`, later ones
//! are `{"$ref": "<id>"}`, and entities nest (a host's `IpInterfaces`, a network connection's
//! `SourceAddress`). Two spellings exist: the alert form (`"Type": "ip"`, `"Address"`) and the ARM entity
//! form (`"kind": "Ip"`, `"properties": {"address"}`). Keys and type names are matched case-insensitively.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::{get_ci, Collector};

/// Deeper than any entity graph; serde_json already refuses documents nested deeper than 128.
const MAX_DEPTH: usize = 160;

/// Entities given as an array, or as a string holding a JSON array (the `SecurityAlert` table form).
/// Returns a note when a string is not valid JSON.
pub(crate) fn collect_field(
    entities: &Value,
    origin: &'static str,
    out: &mut Collector,
) -> Option<String> {
    match entities {
        Value::String(text) => match serde_json::from_str::<Value>(text) {
            Ok(parsed) => {
                collect(&parsed, origin, out);
                None
            }
            Err(err) => Some(format!(
                "{origin} is a string but not valid JSON ({err}); ignored"
            )),
        },
        other => {
            collect(other, origin, out);
            None
        }
    }
}

/// Walks `root` and hands the address of every IP entity to `out`, resolving `$ref` objects.
///
/// Each object is walked at most once, whether it is reached where it is defined or through any number of
/// references, so the work is linear in the size of the document (issue 9 item 10: re-walking a referenced
/// subtree for every reference made nested `$id` chains quadratic). The walk stops as soon as `out` is full.
pub(crate) fn collect(root: &Value, origin: &'static str, out: &mut Collector) {
    let mut ids = HashMap::new();
    index_ids(root, &mut ids, 0);
    let mut walker = Walker {
        ids,
        visited: HashSet::new(),
        origin,
        out,
    };
    walker.walk(root, 0);
}

fn index_ids<'a>(value: &'a Value, ids: &mut HashMap<&'a str, &'a Value>, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    match value {
        Value::Object(map) => {
            if let Some(Value::String(id)) = map.get("$id") {
                ids.entry(id.as_str()).or_insert(value);
            }
            for child in map.values() {
                index_ids(child, ids, depth + 1);
            }
        }
        Value::Array(items) => {
            for item in items {
                index_ids(item, ids, depth + 1);
            }
        }
        _ => {}
    }
}

struct Walker<'a, 'o> {
    ids: HashMap<&'a str, &'a Value>,
    /// Objects with an `$id` already walked, by address: only they can be reached a second time.
    visited: HashSet<*const Value>,
    origin: &'static str,
    out: &'o mut Collector,
}

impl<'a> Walker<'a, '_> {
    fn walk(&mut self, value: &'a Value, depth: usize) {
        if depth > MAX_DEPTH || self.out.is_full() {
            return;
        }
        match value {
            Value::Object(map) => {
                if let Some(Value::String(reference)) = map.get("$ref") {
                    // The target is walked here if it has not been yet; a cycle ends at the visited check.
                    if let Some(target) = self.ids.get(reference.as_str()).copied() {
                        self.walk(target, depth + 1);
                    }
                    return;
                }
                if map.contains_key("$id") && !self.visited.insert(std::ptr::from_ref(value)) {
                    return;
                }
                if let Some(address) = ip_entity_address(map) {
                    self.out.push(address, self.origin);
                }
                for child in map.values() {
                    self.walk(child, depth + 1);
                }
            }
            Value::Array(items) => {
                for item in items {
                    self.walk(item, depth + 1);
                }
            }
            _ => {}
        }
    }
}

/// The address of an IP entity in either spelling, or `None` for anything else.
fn ip_entity_address(map: &Map<String, Value>) -> Option<&str> {
    let kind = get_ci(map, "Type")
        .or_else(|| get_ci(map, "kind"))
        .and_then(Value::as_str)?;
    if !kind.eq_ignore_ascii_case("ip") {
        return None;
    }
    if let Some(address) = get_ci(map, "Address").and_then(Value::as_str) {
        return Some(address);
    }
    match get_ci(map, "properties") {
        Some(Value::Object(props)) => get_ci(props, "address").and_then(Value::as_str),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(value: &Value, cap: usize) -> (Vec<String>, bool) {
        let mut out = Collector::new(cap);
        collect(value, "test", &mut out);
        let (found, capped) = out.finish();
        (found.into_iter().map(|c| c.text).collect(), capped)
    }

    fn texts(value: &Value) -> Vec<String> {
        run(value, usize::MAX).0
    }

    #[test]
    fn both_spellings_and_any_case() {
        let value = json!([
            {"Type": "ip", "Address": "23.97.60.214"},
            {"type": "IP", "address": "2001:4860::8888"},
            {"kind": "Ip", "properties": {"address": "8.8.8.8", "friendlyName": "x"}},
            {"Type": "host", "HostName": "vm"},
            {"Type": "ip"}
        ]);
        assert_eq!(
            texts(&value),
            ["23.97.60.214", "2001:4860::8888", "8.8.8.8"]
        );
    }

    #[test]
    fn nested_and_referenced_entities() {
        // A host defines its interface inline; a later entity refers to it; a $ref cycle ends.
        let value = json!([
            {"$id": "4", "Type": "network-connection", "SourceAddress": {"$ref": "3"},
             "DestinationAddress": {"$id": "5", "Type": "ip", "Address": "40.1.2.3"}},
            {"$id": "2", "Type": "host", "HostName": "vm",
             "IpInterfaces": [{"$id": "3", "Type": "ip", "Address": "52.1.2.3"}]},
            {"$id": "6", "Type": "x", "Self": {"$ref": "6"}},
            {"$ref": "99"}
        ]);
        // serde_json objects iterate in key order: DestinationAddress before SourceAddress; the reference
        // to "3" is met before its definition and walks it there.
        assert_eq!(texts(&value), ["40.1.2.3", "52.1.2.3"]);
    }

    #[test]
    fn a_ref_to_an_entity_defined_only_elsewhere_is_followed() {
        // The referenced IP entity sits outside the walked part of the document.
        let defs = json!({"defs": [{"$id": "7", "Type": "ip", "Address": "20.0.0.1"}],
                          "Entities": [{"$ref": "7"}]});
        assert_eq!(texts(&defs), ["20.0.0.1"]);
    }

    /// Issue 9 item 10: a chain of nested `$id` objects with a reference to each one. Before the fix every
    /// reference re-walked the rest of the chain, so the walk handed over n + n(n+1)/2 addresses (and
    /// grew quadratically in time and memory); now each object is visited once.
    #[test]
    fn nested_id_chains_with_a_reference_to_each_are_walked_once() {
        let n = 120;
        let mut chain =
            json!({"$id": format!("{n}"), "Type": "ip", "Address": format!("20.0.{n}.1")});
        for i in (0..n).rev() {
            chain = json!({"$id": format!("{i}"), "Type": "ip", "Address": format!("20.0.{i}.1"), "Inner": chain});
        }
        let mut items = vec![chain];
        items.extend((0..=n).map(|i| json!({"$ref": format!("{i}")})));
        let mut out = Collector::new(usize::MAX);
        collect(&Value::Array(items), "test", &mut out);
        let (found, capped) = out.finish();
        assert_eq!(found.len(), n + 1, "one address per IP object");
        assert!(!capped);
    }

    /// Issue 9 item 10: the walk stops at the cap instead of collecting everything first.
    #[test]
    fn the_walk_stops_at_the_cap_and_says_so() {
        let items: Vec<Value> = (0..500)
            .map(|i| json!({"Type": "ip", "Address": format!("20.1.{}.{}", i / 250, i % 250)}))
            .collect();
        let (found, capped) = run(&Value::Array(items.clone()), 10);
        assert_eq!(found.len(), 10);
        assert!(capped);
        let (found, capped) = run(&Value::Array(items), 500);
        assert_eq!(found.len(), 500);
        assert!(!capped, "exactly at the cap is not over it");
    }

    #[test]
    fn entities_as_a_string() {
        let mut out = Collector::new(usize::MAX);
        let note = collect_field(
            &Value::String(
                "[\r\n {\"$id\":\"3\",\"Address\":\"23.97.60.214\",\"Type\":\"ip\"}]".into(),
            ),
            "Entities",
            &mut out,
        );
        assert!(note.is_none());
        let note = collect_field(&Value::String("[{".into()), "Entities", &mut out);
        assert!(note.unwrap().contains("not valid JSON"));
        assert_eq!(out.finish().0[0].text, "23.97.60.214");
    }
}
