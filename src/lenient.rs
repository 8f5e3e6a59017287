//! Lenient serde building blocks for vendor payloads.
//!
//! Alert payloads are other people's JSON: a field we care about may be missing, `null`, or of an unexpected
//! type, and none of that should fail the whole request. These wrappers deserialize *any* JSON value and keep
//! only the shape they expect ([`LStr`]: a string or number, [`LObj`]: an object, [`LList`]: an array of
//! objects); everything else becomes empty and is skipped without being built. Fields that are not named in
//! a struct are skipped by serde without allocating, which is what keeps extraction cheaper than parsing the
//! whole document into a `serde_json::Value` (benchmark P2).

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A string (numbers are kept as their text); anything else is `None`. Empty strings are `None` too.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct LStr(pub(crate) Option<String>);

impl LStr {
    /// The text, if any.
    pub(crate) fn as_deref(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// Moves the text out.
    pub(crate) fn take(self) -> Option<String> {
        self.0
    }
}

/// An object deserialized as `T`; anything else is `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LObj<T>(pub(crate) Option<T>);

impl<T> Default for LObj<T> {
    fn default() -> Self {
        Self(None)
    }
}

/// The objects of an array, each deserialized as `T`; other elements, and non-arrays, are dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LList<T>(pub(crate) Vec<T>);

impl<T> Default for LList<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

/// Drains a sequence without building anything.
fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Drains a map without building anything.
fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

struct StrVisitor;

impl<'de> Visitor<'de> for StrVisitor {
    type Value = LStr;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E>(self, v: &str) -> Result<LStr, E> {
        Ok(LStr((!v.is_empty()).then(|| v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<LStr, E> {
        Ok(LStr((!v.is_empty()).then_some(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<LStr, E> {
        Ok(LStr(Some(v.to_string())))
    }

    fn visit_u64<E>(self, v: u64) -> Result<LStr, E> {
        Ok(LStr(Some(v.to_string())))
    }

    fn visit_f64<E>(self, v: f64) -> Result<LStr, E> {
        Ok(LStr(Some(v.to_string())))
    }

    fn visit_bool<E>(self, _: bool) -> Result<LStr, E> {
        Ok(LStr(None))
    }

    fn visit_unit<E>(self) -> Result<LStr, E> {
        Ok(LStr(None))
    }

    fn visit_none<E>(self) -> Result<LStr, E> {
        Ok(LStr(None))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<LStr, A::Error> {
        drain_seq(seq).map(|()| LStr(None))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<LStr, A::Error> {
        drain_map(map).map(|()| LStr(None))
    }
}

impl<'de> Deserialize<'de> for LStr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrVisitor)
    }
}

struct ObjVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjVisitor<T> {
    type Value = LObj<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<LObj<T>, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(|t| LObj(Some(t)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<LObj<T>, A::Error> {
        drain_seq(seq).map(|()| LObj(None))
    }

    fn visit_str<E>(self, _: &str) -> Result<LObj<T>, E> {
        Ok(LObj(None))
    }

    fn visit_i64<E>(self, _: i64) -> Result<LObj<T>, E> {
        Ok(LObj(None))
    }

    fn visit_u64<E>(self, _: u64) -> Result<LObj<T>, E> {
        Ok(LObj(None))
    }

    fn visit_f64<E>(self, _: f64) -> Result<LObj<T>, E> {
        Ok(LObj(None))
    }

    fn visit_bool<E>(self, _: bool) -> Result<LObj<T>, E> {
        Ok(LObj(None))
    }

    fn visit_unit<E>(self) -> Result<LObj<T>, E> {
        Ok(LObj(None))
    }

    fn visit_none<E>(self) -> Result<LObj<T>, E> {
        Ok(LObj(None))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for LObj<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ObjVisitor(PhantomData))
    }
}

struct ListVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ListVisitor<T> {
    type Value = LList<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<LList<T>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element::<LObj<T>>()? {
            if let Some(item) = item.0 {
                items.push(item);
            }
        }
        Ok(LList(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<LList<T>, A::Error> {
        drain_map(map).map(|()| LList(Vec::new()))
    }

    fn visit_str<E>(self, _: &str) -> Result<LList<T>, E> {
        Ok(LList(Vec::new()))
    }

    fn visit_i64<E>(self, _: i64) -> Result<LList<T>, E> {
        Ok(LList(Vec::new()))
    }

    fn visit_u64<E>(self, _: u64) -> Result<LList<T>, E> {
        Ok(LList(Vec::new()))
    }

    fn visit_f64<E>(self, _: f64) -> Result<LList<T>, E> {
        Ok(LList(Vec::new()))
    }

    fn visit_bool<E>(self, _: bool) -> Result<LList<T>, E> {
        Ok(LList(Vec::new()))
    }

    fn visit_unit<E>(self) -> Result<LList<T>, E> {
        Ok(LList(Vec::new()))
    }

    fn visit_none<E>(self) -> Result<LList<T>, E> {
        Ok(LList(Vec::new()))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for LList<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ListVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    struct Probe {
        name: LStr,
        inner: LObj<Inner>,
        items: LList<Inner>,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default)]
    struct Inner {
        a: LStr,
    }

    fn probe(text: &str) -> Probe {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn expected_shapes_are_kept() {
        let p = probe(
            r#"{"name":"x","inner":{"a":"1"},"items":[{"a":"2"},3,{"a":4}],"other":[1,{"b":2}]}"#,
        );
        assert_eq!(p.name.as_deref(), Some("x"));
        assert_eq!(p.inner.0.unwrap().a.as_deref(), Some("1"));
        let items: Vec<_> = p.items.0.iter().map(|i| i.a.as_deref()).collect();
        assert_eq!(items, [Some("2"), Some("4")]);
    }

    #[test]
    fn wrong_shapes_become_empty() {
        for text in [
            r#"{"name":{"x":1},"inner":[1,2],"items":{"a":"1"}}"#,
            r#"{"name":[],"inner":"s","items":"s"}"#,
            r#"{"name":null,"inner":null,"items":null}"#,
            r#"{"name":true,"inner":false,"items":1.5}"#,
            r#"{"name":""}"#,
        ] {
            let p = probe(text);
            assert_eq!(p.name.as_deref(), None, "{text}");
            assert!(p.inner.0.is_none(), "{text}");
            assert!(p.items.0.is_empty(), "{text}");
        }
    }

    #[test]
    fn syntax_errors_still_fail() {
        assert!(serde_json::from_str::<Probe>(r#"{"name":"x",}"#).is_err());
        assert!(serde_json::from_str::<Probe>(r#"{"other":[1,}"#).is_err());
    }
}
